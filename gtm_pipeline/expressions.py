"""Contract expressions: a small, safe language compiled to DuckDB SQL and to vectorised pandas.

Contracts carry boolean assertions (``"CAC >= 0 and Monthly_CM >= 0"``) and formulas with a target
(``"payback_months = CAC / max(Monthly_CM, 1e-6)"``). The text is parsed with ``ast.parse(text, mode="eval")`` and the
tree is translated through an allow-list of node types into a small immutable tree of our own; nothing is ever run as
Python. Everything outside the allow-list raises ``ExpressionError`` whose message starts with the ``where`` location.

Grammar (everything else is rejected with a message naming the construct):

* ``and`` / ``or`` / ``not``; comparisons ``== != < <= > >=``, chained (``0 <= x <= 1`` means ``0 <= x and x <= 1``);
  ``x in (...)`` / ``x not in [...]`` against a non-empty tuple or list of constants; ``x is None`` / ``x is not None``.
* arithmetic ``+ - * / %`` and unary ``-`` / ``+``. ``**``, ``//``, ``@`` and the bitwise operators are rejected.
* constants: int, float, str (at most 200 characters), True, False, None.
* names: column names, matched case-insensitively against the ``known`` columns; the SQL uses the known spelling.
* functions (names matched case-insensitively): ``max(a, b, ...)`` and ``min(a, b, ...)`` are the *scalar*
  GREATEST / LEAST of their arguments, row by row -- they are never aggregates over rows; ``abs(x)``,
  ``coalesce(a, b, ...)``, ``round(x)`` / ``round(x, n)`` with an integer constant ``n`` in [-15, 15], ``sqrt(x)``,
  ``ln(x)``, ``exp(x)``, ``if_else(cond, a, b)`` (a ``CASE WHEN``; Python's ``a if c else b`` is rejected).
* limits: 2,000 characters of text, nesting depth 50. Line breaks count as spaces (so YAML block scalars work).

Semantics, identical in SQL and in pandas (the tests run both on the same rows):

* Missing values: SQL NULL is pandas NA / NaN / None / NaT. Comparisons, arithmetic and functions with a missing
  operand give missing; ``and`` / ``or`` / ``not`` use SQL three-valued logic (``False and NULL`` is False,
  ``True or NULL`` is True). ``Expression.evaluate`` keeps missing (nullable ``boolean`` / ``Float64`` dtypes);
  ``evaluate_assertion`` and ``assertion_sql`` fail closed: missing counts as False.
* ``None`` inside an ``in`` list and ``x == None`` are rejected (in SQL they never match); use ``x is None``.
* Arithmetic is done in DOUBLE (float64) in both engines; ``/`` is true division, also for integers.
* Division and modulo by zero give NULL. (DuckDB 2.0 itself returns IEEE results for ``/``: ``1/0`` is ``inf``,
  ``-1/0`` is ``-inf``, ``0/0`` is ``NaN``, and it raises "Division by zero" for ``%``; the SQL therefore divides by
  ``NULLIF(divisor, 0)``.) ``%`` is SQL's truncated remainder (sign of the dividend, like C ``fmod``), not Python's
  floored one: ``-7 % 3`` is ``-1``.
* ``max`` / ``min`` propagate NULL: any missing argument makes the result missing. DuckDB's GREATEST / LEAST ignore
  NULLs, which would turn ``CAC / max(Monthly_CM, 1e-6)`` with a missing ``Monthly_CM`` into ``CAC / 1e-6``; a
  missing input must give a missing metric instead. They take numbers only.
* ``sqrt`` of a negative number and ``ln`` of a number <= 0 give NULL (DuckDB would give NaN / -inf).
* ``round`` rounds halves away from zero (DuckDB's rule for DOUBLE; Python and numpy round halves to even).
* ``if_else(cond, a, b)`` follows ``CASE WHEN``: a missing ``cond`` picks ``b``. ``coalesce`` returns its first
  non-missing argument.
* Known difference: infinities only arise from infinite inputs or ``exp`` overflow; arithmetic on them that yields
  NaN (``inf - inf``) is NaN in DuckDB but missing in pandas. Integers beyond 2**53 lose precision in both engines.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import math
import operator
import tokenize
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from gtm_pipeline.errors import ExpressionError

__all__ = [
    "ALLOWED_FUNCTIONS", "MAX_DEPTH", "MAX_STRING_CHARS", "MAX_TEXT_CHARS", "Denominator", "Expression",
    "assertion_sql", "compile_assertion", "compile_formula",
]

MAX_TEXT_CHARS = 2000
MAX_STRING_CHARS = 200
MAX_DEPTH = 50
MAX_ROUND_DIGITS = 15
ALLOWED_FUNCTIONS = ("abs", "coalesce", "exp", "if_else", "ln", "max", "min", "round", "sqrt")

# name -> (minimum, maximum) number of arguments; None means no maximum.
_ARITY: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1), "coalesce": (2, None), "exp": (1, 1), "if_else": (3, 3), "ln": (1, 1), "max": (2, None),
    "min": (2, None), "round": (1, 2), "sqrt": (1, 1),
}
_NUMERIC_FUNCTIONS = {"abs", "exp", "ln", "max", "min", "round", "sqrt"}

# Kinds known at compile time. "any" is a column (its type is only known to the data) or a mix of such.
_NUM, _BOOL, _STR, _NULL, _ANY = "number", "true/false", "text", "None", "any"
_KIND_NOUN = {_NUM: "a number", _STR: "text", _NULL: "None"}

_ARITH_SQL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_CMP_SQL = {ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_CMP_PY = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_CMP_OP: dict[str, Callable] = {
    "=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_REJECTED_BINOPS = {
    ast.Pow: ('"**"', "use exp() and ln(), or multiply"),
    ast.FloorDiv: ('"//"', "use round(a / b) or a / b"),
    ast.MatMult: ('"@"', "allowed arithmetic operators: + - * / %"),
    ast.BitAnd: ('bitwise "&"', 'use "and"'),
    ast.BitOr: ('bitwise "|"', 'use "or"'),
    ast.BitXor: ('bitwise "^"', 'allowed arithmetic operators: + - * / %'),
    ast.LShift: ('bitwise "<<"', "allowed arithmetic operators: + - * / %"),
    ast.RShift: ('bitwise ">>"', "allowed arithmetic operators: + - * / %"),
}
_REJECTED_NODES = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript access",
    ast.Slice: "slicing",
    ast.Lambda: "a lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a generator expression",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.Starred: "a starred argument",
    ast.Dict: "a dict literal",
    ast.Set: "a set literal",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}
_WALRUS_MESSAGE = 'assignment with ":=" is not allowed in contract expressions'
_SQL_NAN = "CAST('NaN' AS DOUBLE)"
_SQL_NEG_INF = "CAST('-inf' AS DOUBLE)"


# --------------------------------------------------------------------------------------------------------------------
# The compiled tree. Immutable; produced only by _Compiler, which has checked kinds and arities.
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Const:
    value: object  # int, float, str, bool or None


@dataclass(frozen=True, slots=True)
class _Col:
    name: str  # canonical spelling, as in the known columns


@dataclass(frozen=True, slots=True)
class _Neg:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Arith:
    op: str  # + - * / %
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Cmp:
    op: str  # SQL spelling: = <> < <= > >=
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Logic:
    op: str  # AND / OR
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _IsNull:
    operand: _Node
    negated: bool


@dataclass(frozen=True, slots=True)
class _In:
    operand: _Node
    values: tuple[object, ...]
    negated: bool


@dataclass(frozen=True, slots=True)
class _Call:
    func: str
    args: tuple[_Node, ...]
    digits: int = 0  # round() only


_Node: TypeAlias = _Const | _Col | _Neg | _Arith | _Cmp | _Logic | _Not | _IsNull | _In | _Call


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """A compiled contract expression. Build it with `compile_assertion` or `compile_formula`, not directly."""

    text: str
    names: frozenset[str]
    _node: _Node = field(repr=False)
    _kind: str = field(repr=False, compare=False)
    _where: str = field(repr=False, compare=False)
    _sql: str = field(repr=False, compare=False)

    def to_sql(self) -> str:
        """DuckDB SQL for the expression; identifiers are double-quoted in the known columns' spelling."""
        return self._sql

    def evaluate(self, df: pd.DataFrame) -> pd.Series:
        """Evaluate row by row on ``df``; index-aligned with it. Missing stays missing (nullable dtypes)."""
        columns = _resolve_frame_columns(df, self.names, self._where)
        result = _Evaluator(columns, len(df), self._where).run(self._node)
        if result.dtype == np.float64:
            result = result.astype("Float64")
        result.index = df.index
        return result

    def evaluate_assertion(self, df: pd.DataFrame) -> pd.Series:
        """Evaluate as an assertion: a plain ``bool`` Series where missing counts as False (fails closed)."""
        columns = _resolve_frame_columns(df, self.names, self._where)
        evaluator = _Evaluator(columns, len(df), self._where)
        result = evaluator.as_bool(evaluator.run(self._node), self._node)
        out = pd.Series(result.fillna(False).to_numpy(dtype=bool), index=df.index)
        return out

    def denominators(self) -> tuple[Denominator, ...]:
        """Every divisor of ``/`` and ``%`` in the expression, outermost first, without repeats.

        A divisor written as a guard, ``max(x, c)`` with a positive constant ``c`` (as in the spec's
        ``CAC / max(Monthly_CM, 1e-6)``), is reported as ``x`` with ``guarded=True``: the guard keeps the result
        finite, so a zero or negative ``x`` would otherwise hide inside a huge quotient. Metric audits use this to
        test "denominator > 0" on its own.
        """
        found: list[Denominator] = []
        stack: list[_Node] = [self._node]
        while stack:
            node = stack.pop()
            if isinstance(node, _Arith) and node.op in ("/", "%"):
                divisor, guarded = _unguard(node.right)
                item = Denominator(text=_render(divisor), sql=_sql(divisor), guarded=guarded)
                if item not in found:
                    found.append(item)
            for child in reversed(_children(node)):
                stack.append(child)
        return tuple(found)


@dataclass(frozen=True)
class Denominator:
    """A divisor found in a compiled expression: readable text, DuckDB SQL, and whether a max(x, c) guard hid it."""

    text: str
    sql: str
    guarded: bool


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Neg | _Not):
        return (node.operand,)
    if isinstance(node, _Arith | _Cmp):
        return (node.left, node.right)
    if isinstance(node, _Logic):
        return node.operands
    if isinstance(node, _IsNull | _In):
        return (node.operand,)
    if isinstance(node, _Call):
        return node.args
    return ()


def _unguard(node: _Node) -> tuple[_Node, bool]:
    """``max(x, c)`` with positive constants ``c`` and exactly one non-constant ``x`` -> (x, True)."""
    if isinstance(node, _Call) and node.func == "max":
        consts = [a for a in node.args if isinstance(a, _Const)]
        others = [a for a in node.args if not isinstance(a, _Const)]
        if len(others) == 1 and consts and all(
                isinstance(c.value, (int, float)) and not isinstance(c.value, bool) and c.value > 0 for c in consts):
            return others[0], True
    return node, False


def _render(node: _Node) -> str:
    """Readable text of a compiled sub-expression (for messages; column names in their known spelling)."""
    if isinstance(node, _Const):
        return repr(node.value)
    if isinstance(node, _Col):
        return node.name
    if isinstance(node, _Neg):
        return f"-{_render(node.operand)}"
    if isinstance(node, _Arith):
        return f"({_render(node.left)} {node.op} {_render(node.right)})"
    if isinstance(node, _Call):
        return f"{node.func}({', '.join(_render(a) for a in node.args)})"
    return _sql(node)


def compile_assertion(text: str, known: Iterable[str], *, where: str) -> Expression:
    """Compile a boolean assertion such as ``"CAC >= 0 and Monthly_CM >= 0"`` against the ``known`` columns."""
    text = _check_text(text, where)
    expr = _compile(text, known, where, top_level_equals_hint=True)
    if expr._kind not in (_BOOL, _ANY):
        raise ExpressionError(
            f"{where}: an assertion must be true/false (a comparison, and/or/not, in, is None), "
            f'but "{_clip(text)}" is {_KIND_NOUN.get(expr._kind, expr._kind)}'
        )
    return expr


def compile_formula(text: str, known: Iterable[str], *, where: str) -> tuple[str, Expression]:
    """Compile ``"target = expression"``; returns ``(target, expression)``. The target need not be a known column."""
    text = _check_text(text, where)
    split = _find_assignment(text)
    if split is None and any(tok.type == tokenize.OP and tok.string == ":=" for tok in _tokens(text)):
        raise ExpressionError(f"{where}: {_WALRUS_MESSAGE}")
    if split is None:
        raise ExpressionError(f'{where}: a formula must have the form "target = expression"; got "{_clip(text)}"')
    target, rhs = text[:split].strip(), text[split + 1:].strip()
    if not target.isidentifier() or keyword.iskeyword(target):
        raise ExpressionError(
            f'{where}: the target of a formula must be a plain column name (letters, digits, _); got "{_clip(target)}"'
        )
    if not rhs:
        raise ExpressionError(f'{where}: the formula for "{target}" has nothing after "="')
    expr = _compile(rhs, known, where, top_level_equals_hint=False)
    target_key = _key(target)
    if any(_key(name) == target_key for name in expr.names):
        raise ExpressionError(f'{where}: the formula for "{target}" refers to "{target}" itself')
    return target, expr


def assertion_sql(expr: Expression) -> str:
    """Boolean SQL for an assertion that fails closed: a NULL result counts as FALSE."""
    return f"COALESCE(({expr.to_sql()}), FALSE)"


# --------------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------------


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key(name: str) -> str:
    """Matching key for names: Python normalises identifiers with NFKC, and names match case-insensitively."""
    return unicodedata.normalize("NFKC", name).casefold()


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ExpressionError(f"{where}: expected an expression as text, got {type(text).__name__} ({text!r})")
    if len(text) > MAX_TEXT_CHARS:
        raise ExpressionError(
            f"{where}: expression is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}"
        )
    # YAML block scalars keep line breaks; Python would need brackets to continue a line, so treat them as spaces.
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").strip()
    if not text:
        raise ExpressionError(f"{where}: expression is empty")
    return text


def _tokens(text: str) -> list[tokenize.TokenInfo]:
    """The tokens of ``text`` as far as they can be read (a broken tail is simply not returned)."""
    out: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            out.append(tok)
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def _find_assignment(text: str) -> int | None:
    """Offset of the first top-level "=" (not part of ==, <=, >=, !=, :=), or None. ``text`` is one line."""
    depth = 0
    for tok in _tokens(text):
        if tok.type != tokenize.OP:
            continue
        if tok.string in "([{":
            depth += 1
        elif tok.string in ")]}":
            depth -= 1
        elif tok.string == "=" and depth == 0:
            return tok.start[1]
    return None


def _compile(text: str, known: Iterable[str], where: str, *, top_level_equals_hint: bool) -> Expression:
    known_map = _known_map(known)
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        if any(tok.type == tokenize.OP and tok.string == ":=" for tok in _tokens(text)):
            raise ExpressionError(f"{where}: {_WALRUS_MESSAGE}") from e
        reason = getattr(e, "msg", None) or str(e) or type(e).__name__
        offset = getattr(e, "offset", None)
        column = offset if isinstance(offset, int) and 0 < offset <= len(text) else len(text) + 1
        message = f'{where}: cannot parse "{_clip(text)}": {reason} at column {column}'
        if top_level_equals_hint and _find_assignment(text) is not None:
            message += '; to compare use "==" (a single "=" only appears in formulas, as "target = expression")'
        raise ExpressionError(message) from e
    depth = _depth(tree)
    if depth > MAX_DEPTH:
        raise ExpressionError(f"{where}: expression is nested {depth}+ levels deep; the limit is {MAX_DEPTH}")
    compiler = _Compiler(text, known_map, where)
    node, kind = compiler.translate(tree.body)
    return Expression(
        text=text, names=frozenset(compiler.names), _node=node, _kind=kind, _where=where, _sql=_sql(node),
    )


def _known_map(known: Iterable[str]) -> dict[str, list[str]]:
    if isinstance(known, str):
        raise TypeError("known must be an iterable of column names, not a single string")
    out: dict[str, list[str]] = {}
    for name in known:
        name = str(name)
        spellings = out.setdefault(_key(name), [])
        if name not in spellings:
            spellings.append(name)
    return out


def _depth(tree: ast.Expression) -> int:
    """Nesting depth of expression nodes; stops counting once past the limit. Iterative, so it cannot overflow."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        for child in ast.iter_child_nodes(node):
            stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))
    return deepest


class _Compiler:
    """Translates an ``ast`` tree into `_Node`s, checking every node against the allow-list."""

    def __init__(self, text: str, known: dict[str, list[str]], where: str):
        self.text = text
        self.known = known
        self.where = where
        self.names: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------------------------

    def fail(self, message: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: {message}")

    def source(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node)
        if segment is None:
            try:
                segment = ast.unparse(node)
            except Exception:  # unparse of an odd tree is only for the message; never let it hide the real error
                segment = type(node).__name__
        return _clip(segment, 60)

    def expect(self, node: ast.expr, allowed: tuple[str, ...], what: str) -> _Node:
        ir, kind = self.translate(node)
        if kind not in allowed and kind != _ANY:
            raise self.fail(f'{what} needs {" or ".join(allowed)}, but "{self.source(node)}" is {kind}')
        return ir

    # -- dispatch -----------------------------------------------------------------------------------------------

    def translate(self, node: ast.expr) -> tuple[_Node, str]:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BoolOp):
            op = "AND" if isinstance(node.op, ast.And) else "OR"
            operands = tuple(self.expect(v, (_BOOL,), f'"{op.lower()}"') for v in node.values)
            return _Logic(op, operands), _BOOL
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.IfExp):
            raise self.fail(
                f'conditional expressions ("{self.source(node)}") are not allowed; '
                "use if_else(condition, value_if_true, value_if_false)"
            )
        if isinstance(node, ast.NamedExpr):
            raise self.fail(_WALRUS_MESSAGE)
        if isinstance(node, (ast.Tuple, ast.List)):
            raise self.fail(
                f'a tuple or list ("{self.source(node)}") is only allowed on the right of "in" / "not in"'
            )
        description = _REJECTED_NODES.get(type(node), f"{type(node).__name__} syntax")
        raise self.fail(f'{description} ("{self.source(node)}") is not allowed in contract expressions')

    def constant(self, node: ast.Constant) -> tuple[_Node, str]:
        value = node.value
        if value is None:
            return _Const(None), _NULL
        if isinstance(value, bool):
            return _Const(value), _BOOL
        if isinstance(value, int):
            if not -(2**63) < value < 2**63:
                raise self.fail(f"integer constant {self.source(node)} is out of range")
            return _Const(value), _NUM
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.fail(f"number constant {self.source(node)} is not finite")
            return _Const(value), _NUM
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise self.fail(
                    f"a string constant is {len(value):,} characters long; the limit is {MAX_STRING_CHARS}"
                )
            if "\x00" in value:
                raise self.fail("string constants may not contain NUL characters")
            return _Const(value), _STR
        raise self.fail(
            f'constant "{self.source(node)}" is not allowed; use numbers, strings, True, False or None'
        )

    def name(self, node: ast.Name) -> tuple[_Node, str]:
        spellings = self.known.get(_key(node.id), [])
        if len(spellings) > 1:
            exact = [s for s in spellings if s == node.id]
            if not exact:
                raise self.fail(
                    f'column "{node.id}" is ambiguous; it matches {", ".join(sorted(spellings))} '
                    "(names are case-insensitive)"
                )
            spellings = exact
        if not spellings:
            known = sorted({_key(k) for k in self.known})
            listing = ", ".join(known[:50]) + (f", … ({len(known) - 50} more)" if len(known) > 50 else "")
            message = f'unknown column "{node.id}"; known: {listing or "(none)"}'
            if node.id.casefold() in ("null", "true", "false", "none"):
                message += "; write None, True or False"
            else:
                close = difflib.get_close_matches(_key(node.id), known, n=1)
                if close:
                    message += f'; did you mean "{close[0]}"?'
            raise self.fail(message)
        canonical = spellings[0]
        self.names.add(canonical)
        return _Col(canonical), _ANY

    def unary(self, node: ast.UnaryOp) -> tuple[_Node, str]:
        if isinstance(node.op, ast.Not):
            return _Not(self.expect(node.operand, (_BOOL,), '"not"')), _BOOL
        if isinstance(node.op, ast.Invert):
            raise self.fail('bitwise "~" is not allowed; use "not"')
        operand = self.expect(node.operand, (_NUM,), f'unary "{"-" if isinstance(node.op, ast.USub) else "+"}"')
        if isinstance(node.op, ast.UAdd):
            return operand, _NUM
        if isinstance(operand, _Const) and isinstance(operand.value, int | float):  # fold -1 into a constant
            return _Const(-operand.value), _NUM
        return _Neg(operand), _NUM

    def binop(self, node: ast.BinOp) -> tuple[_Node, str]:
        op = _ARITH_SQL.get(type(node.op))
        if op is None:
            symbol, hint = _REJECTED_BINOPS.get(type(node.op), (type(node.op).__name__, ""))
            raise self.fail(f"operator {symbol} is not allowed in contract expressions; {hint}")
        left = self.expect(node.left, (_NUM,), f'"{op}"')
        right = self.expect(node.right, (_NUM,), f'"{op}"')
        return _Arith(op, left, right), _NUM

    def compare(self, node: ast.Compare) -> tuple[_Node, str]:
        parts: list[_Node] = []
        left_ast = node.left
        for op, right_ast in zip(node.ops, node.comparators):
            parts.append(self.comparison(left_ast, op, right_ast))
            left_ast = right_ast
        return (parts[0] if len(parts) == 1 else _Logic("AND", tuple(parts))), _BOOL

    def comparison(self, left_ast: ast.expr, op: ast.cmpop, right_ast: ast.expr) -> _Node:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not (isinstance(right_ast, ast.Constant) and right_ast.value is None):
                raise self.fail('"is" can only be used as "is None" / "is not None"; use "==" to compare values')
            operand, _ = self.translate(left_ast)
            return _IsNull(operand, negated=isinstance(op, ast.IsNot))
        if isinstance(op, (ast.In, ast.NotIn)):
            return self.membership(left_ast, right_ast, negated=isinstance(op, ast.NotIn))
        sql_op, py_op = _CMP_SQL[type(op)], _CMP_PY[type(op)]
        left, left_kind = self.translate(left_ast)
        right, right_kind = self.translate(right_ast)
        if _NULL in (left_kind, right_kind):
            raise self.fail(f'"{py_op} None" is never true in SQL; use "is None" / "is not None"')
        if _ANY not in (left_kind, right_kind) and left_kind != right_kind:
            raise self.fail(
                f'cannot compare {left_kind} "{self.source(left_ast)}" with {right_kind} "{self.source(right_ast)}"'
            )
        return _Cmp(sql_op, left, right)

    def membership(self, left_ast: ast.expr, right_ast: ast.expr, *, negated: bool) -> _Node:
        word = "not in" if negated else "in"
        if not isinstance(right_ast, (ast.Tuple, ast.List)):
            raise self.fail(
                f'the right side of "{word}" must be a tuple or list of constants, e.g. {word} (\'a\', \'b\'); '
                f'got "{self.source(right_ast)}"'
            )
        if not right_ast.elts:
            raise self.fail(f'the list after "{word}" is empty')
        values: list[object] = []
        kinds: set[str] = set()
        for element in right_ast.elts:
            if not isinstance(element, (ast.Constant, ast.UnaryOp)):
                raise self.fail(
                    f'"{word}" lists may only contain constants (numbers, strings, True, False); '
                    f'found "{self.source(element)}"'
                )
            ir, kind = self.translate(element)
            if not isinstance(ir, _Const):
                raise self.fail(f'"{word}" lists may only contain constants; found "{self.source(element)}"')
            if kind == _NULL:
                raise self.fail(
                    f'None inside an "{word}" list never matches in SQL; write "x is None or x {word} (...)" instead'
                )
            values.append(ir.value)
            kinds.add(kind)
        if len(kinds) > 1:
            raise self.fail(f'the "{word}" list mixes {" and ".join(sorted(kinds))} values')
        operand, operand_kind = self.translate(left_ast)
        if operand_kind not in (_ANY, *kinds):
            raise self.fail(f'cannot test {operand_kind} "{self.source(left_ast)}" against a list of '
                            f'{kinds.pop()} values')
        return _In(operand, tuple(values), negated)

    def call(self, node: ast.Call) -> tuple[_Node, str]:
        if isinstance(node.func, ast.Attribute):
            return self.translate(node.func)  # rejected as attribute access
        if not isinstance(node.func, ast.Name):
            raise self.fail(f'only allowed functions may be called, by name; got "{self.source(node)}"')
        func = node.func.id.casefold()
        if func not in ALLOWED_FUNCTIONS:
            raise self.fail(
                f'function "{node.func.id}" is not allowed; allowed functions: {", ".join(ALLOWED_FUNCTIONS)}'
            )
        if node.keywords:
            raise self.fail(f'keyword arguments ("{self.source(node.keywords[0])}") are not allowed; '
                            "pass arguments by position")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(f'a starred argument ("{self.source(arg)}") is not allowed in contract expressions')
        low, high = _ARITY[func]
        count = len(node.args)
        if count < low or (high is not None and count > high):
            expected = f"{low}" if low == high else (f"{low} or {high}" if high else f"at least {low}")
            message = f"{func}() takes {expected} argument{'s' if expected != '1' else ''}, got {count}"
            if func in ("max", "min"):
                word = "GREATEST" if func == "max" else "LEAST"
                message += f"; {func}() is the scalar {word} of its arguments per row, not an aggregate over rows"
            raise self.fail(message)
        if func in _NUMERIC_FUNCTIONS:
            if func == "round":
                digits = self.round_digits(node.args[1]) if count == 2 else 0
                return _Call(func, (self.expect(node.args[0], (_NUM,), "round()"),), digits), _NUM
            args = tuple(self.expect(a, (_NUM,), f"{func}()") for a in node.args)
            return _Call(func, args), _NUM
        if func == "if_else":
            cond = self.expect(node.args[0], (_BOOL,), "the condition of if_else()")
            (a, a_kind), (b, b_kind) = self.translate(node.args[1]), self.translate(node.args[2])
            return _Call(func, (cond, a, b)), self.common_kind([a_kind, b_kind], node.args[1:], "if_else()")
        translated = [self.translate(a) for a in node.args]  # coalesce
        kind = self.common_kind([k for _, k in translated], node.args, "coalesce()")
        return _Call(func, tuple(ir for ir, _ in translated)), kind

    def round_digits(self, node: ast.expr) -> int:
        ir, kind = self.translate(node)
        if not (isinstance(ir, _Const) and kind == _NUM and isinstance(ir.value, int)
                and -MAX_ROUND_DIGITS <= ir.value <= MAX_ROUND_DIGITS):
            raise self.fail(
                f"the digits of round() must be an integer constant from {-MAX_ROUND_DIGITS} to {MAX_ROUND_DIGITS}; "
                f'got "{self.source(node)}"'
            )
        return int(ir.value)

    def common_kind(self, kinds: list[str], nodes: list[ast.expr], what: str) -> str:
        concrete = {k for k in kinds if k not in (_NULL, _ANY)}
        if len(concrete) > 1:
            shown = ", ".join(f'"{self.source(n)}" ({k})' for n, k in zip(nodes, kinds) if k in concrete)
            raise self.fail(f"the values of {what} must be of one kind; got {shown}")
        if _ANY in kinds:
            return _ANY
        return concrete.pop() if concrete else _NULL


# --------------------------------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------------------------------


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_const(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if value >= 0 else f"({value})"  # parenthesised: "x - -1" must never become a comment
    if isinstance(value, float):
        return f"CAST({value!r} AS DOUBLE)"
    return "'" + str(value).replace("'", "''") + "'"


def _is_double(node: _Node) -> bool:
    if isinstance(node, _Const):
        return isinstance(node.value, float)
    return isinstance(node, (_Neg, _Arith)) or (isinstance(node, _Call) and node.func in _NUMERIC_FUNCTIONS)


def _double(node: _Node) -> str:
    """SQL for a numeric operand, in DOUBLE (so integer columns neither divide as integers nor overflow)."""
    sql = _sql(node)
    return sql if _is_double(node) else f"CAST({sql} AS DOUBLE)"


def _sql(node: _Node) -> str:
    if isinstance(node, _Const):
        return _sql_const(node.value)
    if isinstance(node, _Col):
        return _quote_ident(node.name)
    if isinstance(node, _Neg):
        return f"(-{_double(node.operand)})"
    if isinstance(node, _Arith):
        left, right = _double(node.left), _double(node.right)
        if node.op in ("/", "%"):
            right = f"NULLIF({right}, 0)"  # x / 0 and x % 0 are NULL (see the module docstring)
        return f"({left} {node.op} {right})"
    if isinstance(node, _Cmp):
        return f"({_sql(node.left)} {node.op} {_sql(node.right)})"
    if isinstance(node, _Logic):
        return "(" + f" {node.op} ".join(_sql(o) for o in node.operands) + ")"
    if isinstance(node, _Not):
        return f"(NOT {_sql(node.operand)})"
    if isinstance(node, _IsNull):
        return f"({_sql(node.operand)} IS {'NOT ' if node.negated else ''}NULL)"
    if isinstance(node, _In):
        values = ", ".join(_sql_const(v) for v in node.values)
        return f"({_sql(node.operand)} {'NOT IN' if node.negated else 'IN'} ({values}))"
    return _sql_call(node)


def _sql_call(node: _Call) -> str:
    func = node.func
    if func in ("max", "min"):
        # NULL-propagating GREATEST / LEAST. Each argument appears once, so nesting does not blow up the SQL.
        word = "greatest" if func == "max" else "least"
        items = ", ".join(_double(a) for a in node.args)
        return (f"list_reduce([{items}], lambda a, b: CASE WHEN a IS NULL OR b IS NULL THEN NULL "
                f"ELSE {word}(a, b) END)")
    if func == "abs":
        return f"abs({_double(node.args[0])})"
    if func == "exp":
        return f"exp({_double(node.args[0])})"
    if func == "round":
        return f"round({_double(node.args[0])}, {node.digits})"
    if func == "sqrt":
        return f"NULLIF(sqrt({_double(node.args[0])}), {_SQL_NAN})"
    if func == "ln":
        return f"NULLIF(NULLIF(ln({_double(node.args[0])}), {_SQL_NEG_INF}), {_SQL_NAN})"
    if func == "coalesce":
        return "COALESCE(" + ", ".join(_sql(a) for a in node.args) + ")"
    cond, a, b = node.args  # if_else
    return f"CASE WHEN {_sql(cond)} THEN {_sql(a)} ELSE {_sql(b)} END"


# --------------------------------------------------------------------------------------------------------------------
# pandas
# --------------------------------------------------------------------------------------------------------------------


def _resolve_frame_columns(df: pd.DataFrame, names: frozenset[str], where: str) -> dict[str, pd.Series]:
    """Each referenced column of ``df`` (exact name first, then case-insensitively), with a 0..n-1 index."""
    out: dict[str, pd.Series] = {}
    for name in names:
        if name in df.columns:
            label = name
        else:
            matches = [c for c in df.columns if isinstance(c, str) and _key(c) == _key(name)]
            if len(matches) != 1:
                problem = "is not in the data" if not matches else f"matches several columns: {matches}"
                raise ExpressionError(f'{where}: column "{name}" {problem}')
            label = matches[0]
        column = df[label]
        if isinstance(column, pd.DataFrame):
            raise ExpressionError(f'{where}: column "{name}" appears more than once in the data')
        out[name] = column.reset_index(drop=True)
    return out


def _is_num(series: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(series.dtype) and not ptypes.is_bool_dtype(series.dtype)


def _is_boolish(series: pd.Series) -> bool:
    return ptypes.is_bool_dtype(series.dtype)


def _all_missing(series: pd.Series) -> bool:
    return series.dtype == object and bool(series.isna().all())


def _describe(node: _Node) -> str:
    return f'column "{node.name}"' if isinstance(node, _Col) else "a value"


class _Evaluator:
    """Vectorised evaluation of a `_Node` tree. Numbers are float64 with NaN as missing; booleans are ``boolean``."""

    def __init__(self, columns: dict[str, pd.Series], n: int, where: str):
        self.columns = columns
        self.n = n
        self.where = where

    def fail(self, message: str) -> ExpressionError:
        return ExpressionError(f"{self.where}: {message}")

    # -- conversions --------------------------------------------------------------------------------------------

    def as_float(self, series: pd.Series, node: _Node) -> np.ndarray:
        if series.dtype == np.float64:
            return series.to_numpy()
        if ptypes.is_datetime64_any_dtype(series.dtype) or ptypes.is_timedelta64_dtype(series.dtype):
            raise self.fail(f"{_describe(node)} holds dates or times, not numbers")
        if ptypes.is_numeric_dtype(series.dtype) or ptypes.is_bool_dtype(series.dtype):
            return series.to_numpy(dtype=float, na_value=np.nan)
        try:
            return pd.to_numeric(series, errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (ValueError, TypeError) as e:
            raise self.fail(f"{_describe(node)} is used as a number but holds non-numeric values") from e

    def as_bool(self, series: pd.Series, node: _Node) -> pd.Series:
        if series.dtype == "boolean":
            return series
        if _is_boolish(series) or series.dtype == object or bool(series.isna().all()):
            try:
                return series.astype("boolean")
            except (ValueError, TypeError) as e:
                raise self.fail(f"{_describe(node)} is used as true/false but holds other values") from e
        raise self.fail(f"{_describe(node)} is used as true/false but holds {series.dtype} values")

    def number(self, values: np.ndarray) -> pd.Series:
        return pd.Series(values, dtype=np.float64)

    def boolean(self, values: np.ndarray, missing: np.ndarray) -> pd.Series:
        array = pd.array(values.astype(bool), dtype="boolean")
        array[missing] = pd.NA
        return pd.Series(array)

    # -- nodes --------------------------------------------------------------------------------------------------

    def run(self, node: _Node) -> pd.Series:
        if isinstance(node, _Const):
            return self.const(node.value)
        if isinstance(node, _Col):
            return self.columns[node.name]
        if isinstance(node, _Neg):
            return self.number(-self.as_float(self.run(node.operand), node.operand))
        if isinstance(node, _Arith):
            return self.arith(node)
        if isinstance(node, _Cmp):
            return self.cmp(node)
        if isinstance(node, _Logic):
            values = [self.as_bool(self.run(o), o) for o in node.operands]
            result = values[0]
            for value in values[1:]:
                result = (result & value) if node.op == "AND" else (result | value)  # three-valued (Kleene)
            return result
        if isinstance(node, _Not):
            return ~self.as_bool(self.run(node.operand), node.operand)
        if isinstance(node, _IsNull):
            missing = self.run(node.operand).isna().to_numpy()
            return self.boolean(~missing if node.negated else missing, np.zeros(self.n, dtype=bool))
        if isinstance(node, _In):
            return self.membership(node)
        return self.call(node)

    def const(self, value: object) -> pd.Series:
        if value is None:
            return pd.Series([None] * self.n, dtype=object)
        if isinstance(value, bool):
            return pd.Series(pd.array([value] * self.n, dtype="boolean"))
        if isinstance(value, (int, float)):
            return self.number(np.full(self.n, float(value)))
        return pd.Series([value] * self.n, dtype=object)

    def arith(self, node: _Arith) -> pd.Series:
        a = self.as_float(self.run(node.left), node.left)
        b = self.as_float(self.run(node.right), node.right)
        with np.errstate(all="ignore"):
            if node.op == "+":
                out = a + b
            elif node.op == "-":
                out = a - b
            elif node.op == "*":
                out = a * b
            elif node.op == "/":
                out = np.where(b == 0, np.nan, a / b)
            else:
                out = np.where(b == 0, np.nan, np.fmod(a, b))
        return self.number(out)

    def cmp(self, node: _Cmp) -> pd.Series:
        left, right = self.run(node.left), self.run(node.right)
        op = _CMP_OP[node.op]
        if _is_num(left) and _is_num(right):
            a, b = self.as_float(left, node.left), self.as_float(right, node.right)
            missing = np.isnan(a) | np.isnan(b)
            with np.errstate(invalid="ignore"):
                return self.boolean(op(a, b), missing)
        missing = (left.isna() | right.isna()).to_numpy()
        values = np.zeros(self.n, dtype=bool)
        valid = ~missing
        if valid.any():
            try:
                values[valid] = np.asarray(op(left[valid], right[valid]), dtype=bool)
            except TypeError as e:
                raise self.fail(
                    f"cannot compare {_describe(node.left)} with {_describe(node.right)}: {e}"
                ) from e
        return self.boolean(values, missing)

    def membership(self, node: _In) -> pd.Series:
        series = self.run(node.operand)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node.values)
        if numbers and _is_num(series):
            a = self.as_float(series, node.operand)
            found, missing = np.isin(a, np.array(node.values, dtype=float)), np.isnan(a)
        else:
            found, missing = series.isin(list(node.values)).to_numpy(dtype=bool), series.isna().to_numpy()
        return self.boolean(~found if node.negated else found, missing)

    def pick(self, mask: np.ndarray, a: pd.Series, b: pd.Series, nodes: tuple[_Node, _Node]) -> pd.Series:
        """``a`` where ``mask`` else ``b``, elementwise, in a dtype both fit (a missing-only side adapts)."""
        a_none, b_none = _all_missing(a), _all_missing(b)
        if a_none and b_none:
            return pd.Series([None] * self.n, dtype=object)
        if (a_none or _is_num(a)) and (b_none or _is_num(b)):
            a_f = np.full(self.n, np.nan) if a_none else self.as_float(a, nodes[0])
            b_f = np.full(self.n, np.nan) if b_none else self.as_float(b, nodes[1])
            return self.number(np.where(mask, a_f, b_f))
        if (a_none or _is_boolish(a)) and (b_none or _is_boolish(b)):
            return self.as_bool(a, nodes[0]).where(mask, self.as_bool(b, nodes[1]))
        if a.dtype == b.dtype:
            return a.where(mask, b)
        return pd.Series(np.where(mask, a.astype(object), b.astype(object)), dtype=object)

    def call(self, node: _Call) -> pd.Series:
        func = node.func
        if func == "coalesce":
            result, first = self.run(node.args[0]), node.args[0]
            for arg in node.args[1:]:
                result = self.pick(result.notna().to_numpy(), result, self.run(arg), (first, arg))
            return result
        if func == "if_else":
            cond, a, b = node.args
            mask = self.as_bool(self.run(cond), cond).fillna(False).to_numpy(dtype=bool)
            return self.pick(mask, self.run(a), self.run(b), (a, b))
        args = [self.as_float(self.run(a), a) for a in node.args]
        x = args[0]
        with np.errstate(all="ignore"):
            if func == "max":
                out = np.maximum.reduce(args)  # np.maximum propagates NaN, i.e. missing
            elif func == "min":
                out = np.minimum.reduce(args)
            elif func == "abs":
                out = np.abs(x)
            elif func == "exp":
                out = np.exp(x)
            elif func == "sqrt":
                out = np.where(x >= 0, np.sqrt(x), np.nan)
            elif func == "ln":
                out = np.where(x > 0, np.log(x), np.nan)
            else:
                out = _round_half_away(x, node.digits)
        return self.number(out)


def _round_half_away(values: np.ndarray, digits: int) -> np.ndarray:
    """Round halves away from zero the way DuckDB rounds a DOUBLE: scale, round, unscale; non-finite keeps input."""
    scale = 10.0 ** abs(digits)
    scaled = np.abs(values * scale) if digits >= 0 else np.abs(values / scale)
    floor = np.floor(scaled)
    rounded = np.copysign(floor + (scaled - floor >= 0.5), values)
    out = rounded / scale if digits >= 0 else rounded * scale
    return np.where(np.isfinite(out), out, values)
