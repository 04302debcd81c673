"""Contract expressions: DuckDB SQL and the pandas evaluator agree row by row, and unsafe text is rejected."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from gtm_pipeline import expressions
from gtm_pipeline.errors import ContractError, ExpressionError
from gtm_pipeline.expressions import Expression, assertion_sql, compile_assertion, compile_formula

WHERE = "contracts/metrics/payback.yaml: qa_tests[1].assert"
N = None  # SQL NULL / pandas missing in the tables below
T, F = True, False
DATES = pd.to_datetime(["2025-01-15", None, "2025-03-01"])


def _duckdb_values(sql: str, df: pd.DataFrame) -> list:
    con = duckdb.connect()
    try:
        con.register("df", df)
        return [row[0] for row in con.execute(f"SELECT {sql} FROM df").fetchall()]
    finally:
        con.close()


def _normal(value):
    """One spelling for a value from either engine: None for missing, float for numbers."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) or type(value).__name__ == "Decimal":
        value = float(value)
        return None if math.isnan(value) else value
    return value


def _same(a, b) -> bool:
    a, b = _normal(a), _normal(b)
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return type(a) is type(b) and a == b


def _check(actual: list, expected: list, label: str) -> None:
    assert len(actual) == len(expected), label
    bad = [(i, a, e) for i, (a, e) in enumerate(zip(actual, expected)) if not _same(a, e)]
    assert not bad, f"{label}: (row, got, expected) {bad}"


# (expression, columns, expected per row). Every case runs through DuckDB and through `evaluate`.
CASES = [
    # arithmetic, NULL propagation, true division, division by zero
    ("a + b", {"a": [1, 2, N], "b": [3, N, 4]}, [4.0, N, N]),
    ("a - -1", {"a": [1.5, N]}, [2.5, N]),
    ("-a * 2 + +b", {"a": [1, 2], "b": [10, 20]}, [8.0, 16.0]),
    ("a / b", {"a": [1, 7, 1, 0, -3, N, 5], "b": [2, 2, 0, 0, 0, 0, N]}, [0.5, 3.5, N, N, N, N, N]),
    ("a / b", {"a": [1.0, -2.5], "b": [-0.0, 0.0]}, [N, N]),
    ("a % b", {"a": [7, -7, 7.5, 5, N], "b": [3, 3, 2, 0, 3]}, [1.0, -1.0, 1.5, N, N]),
    ("(a + b) * 2 / 4", {"a": [1, 2], "b": [1, 1]}, [1.0, 1.5]),
    # comparisons and chained comparisons
    ("0 <= x <= 1", {"x": [0, 0.5, 1, 1.5, -1, N]}, [T, T, T, F, F, N]),
    ("1 < x < 3 < y", {"x": [2, 2, 2, N], "y": [4, 3, N, 9]}, [T, F, N, N]),
    ("x == 1.5", {"x": [1.5, 1, N]}, [T, F, N]),
    ("s != 'a'", {"s": ["a", "b", N]}, [F, T, N]),
    ("s == \"it's\"", {"s": ["it's", "its"]}, [T, F]),
    ("d >= '2025-02-01'", {"d": DATES}, [F, N, T]),
    ("flag == True", {"flag": pd.array([T, F, N], dtype="boolean")}, [T, F, N]),
    # in / not in / is None
    ("x in ('a', 'b')", {"x": ["a", "c", N]}, [T, F, N]),
    ("x not in [1, 2]", {"x": [1, 3, N]}, [F, T, N]),
    ("x in (-1, 2.5)", {"x": [-1, 2.5, 0]}, [T, T, F]),
    ("x is None", {"x": [1.0, N, np.nan]}, [F, T, T]),
    ("s is not None", {"s": ["a", N, np.nan]}, [T, F, F]),
    ("d is None", {"d": DATES}, [F, T, F]),
    (
        "stage in ('closed_won', 'closed_lost') or close_date is None",
        {
            "stage": ["closed_won", "open", "open", N],
            "close_date": pd.to_datetime(["2025-01-01", None, "2025-01-02", "2025-01-03"]),
        },
        [T, T, F, N],
    ),
    # three-valued logic
    ("a > 1 and b > 1", {"a": [2, 0, N, 2], "b": [N, N, 0, 2]}, [N, F, F, T]),
    ("a > 1 or b > 1", {"a": [2, 0, N, 0], "b": [N, N, 0, 0]}, [T, N, N, F]),
    ("not (a > 1)", {"a": [2, 0, N]}, [F, T, N]),
    ("flag and x > 0", {"flag": [T, F, N], "x": [1, 1, 1]}, [T, F, N]),
    ("True", {"x": [1, 2]}, [T, T]),
    # functions: max/min are scalar and NULL-propagating
    ("max(a, b)", {"a": [1, 5, N, 2], "b": [2, 3, 4, N]}, [2.0, 5.0, N, N]),
    ("min(a, b, 0)", {"a": [1, -5, N], "b": [2, 3, 4]}, [0.0, -5.0, N]),
    ("MAX(A, 1e-6)", {"a": [0, -1, 2]}, [1e-6, 1e-6, 2.0]),
    ("max(max(a, b), min(a, b))", {"a": [1, N], "b": [2, 1]}, [2.0, N]),
    ("abs(x)", {"x": [-2, 3.5, N]}, [2.0, 3.5, N]),
    ("round(x)", {"x": [2.5, -2.5, 0.5, 1.4999, N]}, [3.0, -3.0, 1.0, 1.0, N]),
    ("round(x, 2)", {"x": [2.675, 1.005, 0.285, -1.555]}, [2.68, 1.0, 0.28, -1.56]),
    ("round(x, -1)", {"x": [15, 25, 1234.5, -15]}, [20.0, 30.0, 1230.0, -20.0]),
    ("sqrt(x)", {"x": [4, -1, 0, N]}, [2.0, N, 0.0, N]),
    ("ln(x)", {"x": [1, 0, -1, N]}, [0.0, N, N, N]),
    ("exp(x)", {"x": [0, 1, N]}, [1.0, math.e, N]),
    ("coalesce(a, b, 0)", {"a": [1, N, N], "b": [2, 3, N]}, [1.0, 3.0, 0.0]),
    ("coalesce(s, 'n/a') == 'n/a'", {"s": ["x", N]}, [F, T]),
    ("if_else(a > 0, a, 0)", {"a": [5, -1, N]}, [5.0, 0.0, 0.0]),
    ("if_else(s is None, 'missing', s)", {"s": ["a", N]}, ["a", "missing"]),
    ("if_else(a > 0, b, None)", {"a": [1, -1], "b": [2.5, 3]}, [2.5, N]),
    ("x % 2 == 0 and sqrt(x) > 1", {"x": [4, 3, 1]}, [T, F, F]),
]


@pytest.mark.parametrize(("text", "columns", "expected"), CASES, ids=[f"{i}:{c[0]}" for i, c in enumerate(CASES)])
def test_duckdb_and_pandas_agree(text, columns, expected):
    df = pd.DataFrame(columns)
    expr = compile_assertion(text, df.columns, where=WHERE) if _is_boolean(expected) else \
        compile_formula(f"out = {text}", df.columns, where=WHERE)[1]
    sql = expr.to_sql()
    assert "--" not in sql
    _check(_duckdb_values(sql, df), expected, f"duckdb {sql}")
    result = expr.evaluate(df)
    assert result.index.equals(df.index)
    _check(list(result), expected, "pandas")


def _is_boolean(expected: list) -> bool:
    return all(v is None or isinstance(v, bool) for v in expected) and any(isinstance(v, bool) for v in expected)


@pytest.mark.parametrize(
    ("text", "columns", "expected"),
    [c for c in CASES if _is_boolean(c[2])],
    ids=[c[0] for c in CASES if _is_boolean(c[2])],
)
def test_assertions_fail_closed_in_both_engines(text, columns, expected):
    df = pd.DataFrame(columns)
    expr = compile_assertion(text, df.columns, where=WHERE)
    closed = [bool(v) for v in expected]  # NULL -> False
    sql_values = _duckdb_values(assertion_sql(expr), df)
    assert sql_values == closed
    result = expr.evaluate_assertion(df)
    assert result.dtype == bool and list(result) == closed


def test_payback_formula_is_scalar_greatest_per_row():
    text = "payback_months = CAC / max(Monthly_CM, 1e-6)"
    target, expr = compile_formula(text, {"CAC", "Monthly_CM"}, where=WHERE)
    assert target == "payback_months"
    assert expr.names == frozenset({"CAC", "Monthly_CM"})
    assert expr.text == "CAC / max(Monthly_CM, 1e-6)"
    df = pd.DataFrame({"CAC": [100.0, 50.0, 30.0], "Monthly_CM": [10.0, 0.0, 2.0]}, index=[7, 8, 9])
    # An aggregate max would divide every row by 10; the scalar GREATEST gives each row its own divisor.
    expected = [10.0, 50.0 / 1e-6, 15.0]
    _check(_duckdb_values(expr.to_sql(), df), expected, "duckdb")
    result = expr.evaluate(df)
    assert list(result.index) == [7, 8, 9]
    _check(list(result), expected, "pandas")


def test_payback_assertions_compile_and_run():
    known = {"CAC", "Monthly_CM", "payback_months"}
    inputs = compile_assertion("CAC >= 0 and Monthly_CM >= 0", known, where=WHERE)
    payback = compile_assertion("payback_months < 36", known, where=WHERE)
    assert inputs.names == frozenset({"CAC", "Monthly_CM"})
    assert payback.names == frozenset({"payback_months"})
    df = pd.DataFrame({"CAC": [100, -1, 5], "Monthly_CM": [10, 1, None], "payback_months": [10.0, 40.0, None]})
    for expr, expected in ((inputs, [True, False, False]), (payback, [True, False, False])):
        assert _duckdb_values(assertion_sql(expr), df) == expected
        assert list(expr.evaluate_assertion(df)) == expected


def test_names_resolve_case_insensitively_to_the_known_spelling():
    expr = compile_assertion("cac >= 0 and MONTHLY_cm > 0", ["CAC", "Monthly_CM"], where=WHERE)
    assert expr.names == frozenset({"CAC", "Monthly_CM"})
    assert '"CAC"' in expr.to_sql() and '"Monthly_CM"' in expr.to_sql()
    assert expr.to_sql() == '(("CAC" >= 0) AND ("Monthly_CM" > 0))'
    assert assertion_sql(expr) == f"COALESCE(({expr.to_sql()}), FALSE)"


def test_expression_is_immutable_and_errors_are_contract_errors():
    expr = compile_assertion("x > 0", ["x"], where=WHERE)
    assert isinstance(expr, Expression)
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.text = "x < 0"  # type: ignore[misc]
    assert issubclass(ExpressionError, ContractError)


REJECTED = [
    (
        "__import__('os').system('x')",
        'attribute access ("__import__(\'os\').system") is not allowed in contract expressions',
    ),
    ("os.system", 'attribute access ("os.system") is not allowed in contract expressions'),
    ("x[0]", 'subscript access ("x[0]") is not allowed'),
    ("lambda: 1", 'a lambda ("lambda: 1") is not allowed'),
    ("[a for a in b]", 'a comprehension ("[a for a in b]") is not allowed'),
    (
        "open('f')",
        'function "open" is not allowed; allowed functions: abs, coalesce, exp, if_else, ln, max, min, round, sqrt',
    ),
    ("__import__('os')", 'function "__import__" is not allowed'),
    ("a if b else c", 'conditional expressions ("a if b else c") are not allowed; use if_else('),
    ("x := 1", 'assignment with ":=" is not allowed'),
    ("(x := 1) > 0", 'assignment with ":=" is not allowed'),
    (
        "paybak_months < 36",
        'unknown column "paybak_months"; known: a, b, c, cac, monthly_cm, payback_months, s, x; '
        'did you mean "payback_months"?',
    ),
    ("x >", 'cannot parse "x >": invalid syntax at column 4'),
    ("x = 1", 'to compare use "=="'),
    ("x " + "+ 1 " * 700, "expression is 2,802 characters long; the limit is 2,000"),
    ("-" * 60 + "x > 0", "levels deep; the limit is 50"),
    ("s == '" + "y" * 201 + "'", "a string constant is 201 characters long; the limit is 200"),
    ("f'{x}' == 'a'", 'an f-string ("f\'{x}\'") is not allowed'),
    ("max(*b) > 0", "a starred argument"),
    ("round(x, ndigits=1) > 0", 'keyword arguments ("ndigits=1") are not allowed'),
    ("round(x, b) > 0", "the digits of round() must be an integer constant"),
    ("max(x) > 0", "max() takes at least 2 arguments, got 1; max() is the scalar GREATEST"),
    ("x ** 2 > 1", 'operator "**" is not allowed'),
    ("x // 2 > 1", 'operator "//" is not allowed'),
    ("x & 1", 'bitwise "&" is not allowed'),
    ("~x", 'bitwise "~" is not allowed'),
    ("x == None", '"== None" is never true in SQL; use "is None"'),
    ("x is 1", '"is" can only be used as "is None"'),
    ("x in 'abc'", 'the right side of "in" must be a tuple or list of constants'),
    ("x in (a, 1)", '"in" lists may only contain constants'),
    ("x in (None, 1)", 'None inside an "in" list never matches'),
    ("x in ('a', 1)", 'the "in" list mixes'),
    ("x + 1", "an assertion must be true/false"),
    ("x + 'a' > 1", '"+" needs number'),
    ("(x > 1) + 1 > 0", '"+" needs number'),
    ("x > 1 and 'yes'", '"and" needs true/false'),
    ("if_else(x > 0, 1, 'a') == 1", "the values of if_else() must be of one kind"),
    ("{'a': 1}", 'a dict literal ("{\'a\': 1}") is not allowed'),
    ("x > b'1'", 'constant "b\'1\'" is not allowed'),
    ("x is null", '"is" can only be used as "is None" / "is not None"'),
    ("x == null", 'unknown column "null"; known: a, b, c, cac, monthly_cm, payback_months, s, x; write None'),
    ("", "expression is empty"),
]


@pytest.mark.parametrize(("text", "fragment"), REJECTED, ids=[r[0][:40] for r in REJECTED])
def test_rejected(text, fragment):
    with pytest.raises(ExpressionError) as info:
        compile_assertion(text, ["x", "a", "b", "c", "cac", "monthly_cm", "payback_months", "s"], where=WHERE)
    message = str(info.value)
    assert message.startswith(WHERE + ": ")
    assert fragment in message


def test_syntax_errors_chain_the_cause():
    with pytest.raises(ExpressionError) as info:
        compile_assertion("x >", ["x"], where=WHERE)
    assert str(info.value) == f'{WHERE}: cannot parse "x >": invalid syntax at column 4'
    assert isinstance(info.value.__cause__, SyntaxError)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x + 1", 'a formula must have the form "target = expression"'),
        ("x == y", 'a formula must have the form "target = expression"'),
        ("a.b = x", 'the target of a formula must be a plain column name'),
        ("1 = x", 'the target of a formula must be a plain column name'),
        ("y = ", 'the formula for "y" has nothing after "="'),
        ("x = x + 1", 'the formula for "x" refers to "x" itself'),
        ("y = z", 'unknown column "z"'),
        ("y = open('f')", 'function "open" is not allowed'),
        ("y := x", 'assignment with ":=" is not allowed'),
    ],
)
def test_rejected_formulas(text, fragment):
    with pytest.raises(ExpressionError) as info:
        compile_formula(text, ["x"], where="contracts/metrics/m.yaml: formula")
    assert str(info.value).startswith("contracts/metrics/m.yaml: formula: ")
    assert fragment in str(info.value)


def test_formula_splits_on_the_first_top_level_single_equals():
    target, expr = compile_formula("flag = if_else(a == 1, a <= 2, a >= 3 or a != 4)", ["a"], where=WHERE)
    assert target == "flag" and expr.text == "if_else(a == 1, a <= 2, a >= 3 or a != 4)"
    target, expr = compile_formula("label = coalesce(s, 'a = b')", ["s"], where=WHERE)
    assert target == "label" and expr.text == "coalesce(s, 'a = b')"


def test_evaluate_reports_missing_and_non_numeric_columns():
    expr = compile_assertion("x > 0", ["x"], where=WHERE)
    with pytest.raises(ExpressionError, match=re.escape(f'{WHERE}: column "x" is not in the data')):
        expr.evaluate(pd.DataFrame({"y": [1]}))
    assert list(expr.evaluate(pd.DataFrame({"X": [1, -1]}))) == [True, False]  # case-insensitive, like DuckDB
    with pytest.raises(ExpressionError, match="non-numeric"):
        compile_formula("y = x + 1", ["x"], where=WHERE)[1].evaluate(pd.DataFrame({"x": ["abc"]}))


def test_evaluate_handles_an_empty_frame():
    expr = compile_assertion("x > 0 and s in ('a',)", ["x", "s"], where=WHERE)
    df = pd.DataFrame({"x": pd.Series([], dtype=float), "s": pd.Series([], dtype=object)})
    assert len(expr.evaluate(df)) == 0 and len(expr.evaluate_assertion(df)) == 0


@pytest.mark.parametrize("module", sorted(Path(expressions.__file__).parent.glob("*.py")), ids=lambda p: p.name)
def test_package_never_calls_eval_or_exec(module):
    source = module.read_text(encoding="utf-8")
    assert not re.search(r"\b(eval|exec)\s*\(", source)
    assert not re.search(r"\bcompile\s*\(", source)
    assert not re.search(r"\.(query|eval)\s*\(", source)
    called = {
        node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
    }
    assert not called & {"eval", "exec", "compile", "__import__", "query"}


def test_the_eval_scan_sees_every_module_of_the_package():
    # The scan above is only as good as the files it reads: the compiler, both back ends and the public face.
    scanned = {p.name for p in Path(expressions.__file__).parent.glob("*.py")}
    assert {"__init__.py", "api.py", "translate.py", "sql.py", "frame.py"} <= scanned


def test_package_exports_the_names_callers_import():
    assert set(expressions.__all__) == {
        "ALLOWED_FUNCTIONS", "MAX_DEPTH", "MAX_STRING_CHARS", "MAX_TEXT_CHARS", "Denominator", "Expression",
        "assertion_sql", "compile_assertion", "compile_formula",
    }
    assert all(hasattr(expressions, name) for name in expressions.__all__)
