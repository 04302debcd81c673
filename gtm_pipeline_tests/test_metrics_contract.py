"""Metric contracts: the spec's Payback contract loads verbatim, bad contracts fail with file, field and fix, and
the Payback formula's max() is the scalar greatest."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from gtm_pipeline.errors import ContractError, ExpressionError
from gtm_pipeline.expressions import compile_formula
from gtm_pipeline.metrics.contract import (
    CHECK_DENOMINATOR,
    CHECK_GRAIN_UNIQUE,
    known_inputs,
    load_metric_contracts,
    parse_metric_contract,
)
from gtm_pipeline.metrics.registry import computations

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"

# Spec 002 §3 "Example Contract (YAML)", as printed there. The spec shows the document flattened; the only change is
# the two spaces YAML needs before each test's "assert" (the spec's doubled quotes are its text export's escaping).
SPEC_PAYBACK = '''metric: "Payback"
definition: "CAC divided by Monthly_CM for the acquisition cohort"
grain: ["segment","channel","cohort_month"]
inputs:
- "cac_by_channel_daily"
- "cm_by_account_monthly"
formula: "payback_months = CAC / max(Monthly_CM, 1e-6)"
qa_tests:
- name: positive_values
  assert: "CAC >= 0 and Monthly_CM >= 0"
- name: bounds
  assert: "payback_months < 36"
break_action: "block_publish_and_page_owner"
owner: "FP&A"
'''


def _parse(tmp_path: Path, text: str, name: str = "payback"):
    folder = tmp_path / "metrics"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    comps = computations()
    return parse_metric_contract(path, comps, known_inputs(CONTRACTS, comps))


def test_spec_payback_contract_loads_verbatim(tmp_path):
    c = _parse(tmp_path, SPEC_PAYBACK)
    assert (c.metric, c.owner, c.break_action) == ("Payback", "FP&A", "block_publish_and_page_owner")
    assert c.definition == "CAC divided by Monthly_CM for the acquisition cohort"
    assert c.grain == ("segment", "channel", "cohort_month")
    assert c.inputs == ("cac_by_channel_daily", "cm_by_account_monthly")
    assert [(f.target, f.text) for f in c.formulas] == [
        ("payback_months", "payback_months = CAC / max(Monthly_CM, 1e-6)")]
    assert [(t.name, t.text, t.severity) for t in c.qa_tests] == [
        ("positive_values", "CAC >= 0 and Monthly_CM >= 0", "error"), ("bounds", "payback_months < 36", "error")]
    # Names resolve case-insensitively to the computation's columns.
    assert '"monthly_cm"' in c.formulas[0].expression.to_sql() and '"cac"' in c.formulas[0].expression.to_sql()
    assert c.check_names() == ("positive_values", "bounds", CHECK_GRAIN_UNIQUE, CHECK_DENOMINATOR)


def test_shipped_payback_contract_is_the_spec_one():
    text = (CONTRACTS / "metrics" / "payback.yaml").read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    assert body == SPEC_PAYBACK


def test_payback_max_is_the_scalar_greatest_not_an_aggregate():
    _, expr = compile_formula("payback_months = CAC / max(Monthly_CM, 1e-6)", ["cac", "monthly_cm"], where="w")
    df = pd.DataFrame({"cac": [100.0, 100.0, 100.0, 100.0], "monthly_cm": [50.0, 0.0, -5.0, None]})
    con = duckdb.connect()
    con.register("df", df)
    sql_values = [r[0] for r in con.execute(f"SELECT {expr.to_sql()} FROM df").fetchall()]
    # Row by row: 100/50, 100/1e-6 (guarded zero), 100/1e-6 (negative), missing stays missing. An aggregate max over
    # the rows would have given 100/50 = 2 everywhere.
    assert sql_values[:3] == pytest.approx([2.0, 1e8, 1e8])
    assert sql_values[3] is None
    pandas_values = expr.evaluate(df).tolist()
    assert pandas_values[:3] == pytest.approx([2.0, 1e8, 1e8]) and pd.isna(pandas_values[3])


@pytest.mark.parametrize("formula, expected", [
    ("r = CAC / max(Monthly_CM, 1e-6)", [("monthly_cm", True)]),
    ("r = a / (b + c)", [("(b + c)", False)]),
    ("r = a / max(b, 0)", [("max(b, 0)", False)]),          # a zero floor is no guard: b <= 0 still divides by 0
    ("r = a / max(b, c)", [("max(b, c)", False)]),
    ("r = a / b + a % c", [("b", False), ("c", False)]),
    ("r = a * b", []),
])
def test_denominators_of_a_formula(formula, expected):
    _, expr = compile_formula(formula, ["a", "b", "c", "cac", "monthly_cm"], where="w")
    assert [(d.text, d.guarded) for d in expr.denominators()] == expected


def _mutate(**changes) -> str:
    doc = yaml.safe_load(SPEC_PAYBACK)
    for k, v in changes.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    return yaml.safe_dump(doc, sort_keys=False)


_TESTS = yaml.safe_load(SPEC_PAYBACK)["qa_tests"]


@pytest.mark.parametrize("text, message", [
    (_mutate(colour="red"), "contracts/metrics/payback.yaml: colour: unknown field; allowed: metric, definition, "
                            "grain, inputs, formula, qa_tests, break_action, owner, kind,"),
    (_mutate(owner=None), "contracts/metrics/payback.yaml: owner: is required"),
    (_mutate(inputs=["cac_by_channel_daly", "cm_by_account_monthly"]),
     'contracts/metrics/payback.yaml: inputs[0]: unknown input "cac_by_channel_daly"; known: metric-layer tables'),
    (_mutate(inputs=["cac_by_channel_daily"]),
     "contracts/metrics/payback.yaml: inputs: the computation of payback reads ['cm_by_account_monthly'], which "
     "the contract does not list; add them to inputs"),
    (_mutate(inputs=["cac_by_channel_daily", "cm_by_account_monthly", "fact_costs"]),
     "contracts/metrics/payback.yaml: inputs: ['fact_costs'] are not read by the computation of payback"),
    (_mutate(grain=["segment", "channel", "cohort"]),
     'contracts/metrics/payback.yaml: grain[2]: unknown column "cohort"; the computation of payback has: segment,'),
    (_mutate(qa_tests=[_TESTS[0], {"name": "bounds", "assert": "paybak_months < 36"}]),
     'contracts/metrics/payback.yaml: qa_tests[1].assert: unknown column "paybak_months"; known: cac, channel,'),
    (_mutate(formula="payback_months = CAC / max(Monthly_CMM, 1e-6)"),
     'contracts/metrics/payback.yaml: formula: unknown column "Monthly_CMM"'),
    (_mutate(formula="cac = Monthly_CM * 2"),
     'contracts/metrics/payback.yaml: formula: the target "cac" is already a column or parameter of payback'),
    (_mutate(qa_tests=[{"name": "x", "assert": "__import__('os').system('id') == 0"}]),
     "contracts/metrics/payback.yaml: qa_tests[0].assert: attribute access"),
    (_mutate(qa_tests=[{"name": "x", "assert": "CAC.real > 0"}]),
     "contracts/metrics/payback.yaml: qa_tests[0].assert: attribute access"),
    (_mutate(break_action="page_everyone"),
     "contracts/metrics/payback.yaml: break_action: 'page_everyone' is not allowed; allowed: "
     "block_publish_and_page_owner, block_publish_and_notify_owner"),
    (_mutate(qa_tests=[{"name": "grain_unique", "assert": "CAC >= 0"}]),
     "contracts/metrics/payback.yaml: qa_tests[0].name: 'grain_unique' is reserved for the automatic check"),
    (_mutate(qa_tests=[_TESTS[0], _TESTS[0]]),
     "contracts/metrics/payback.yaml: qa_tests[1].name: 'positive_values' is used by another test of this contract"),
    (_mutate(qa_tests=[{"name": "x", "assert": "CAC >= 0", "severity": "fatal"}]),
     "contracts/metrics/payback.yaml: qa_tests[0].severity: 'fatal' is not allowed; allowed: error, warn"),
    (_mutate(qa_tests=[{"name": "x", "asert": "CAC >= 0"}]),
     'contracts/metrics/payback.yaml: qa_tests[0].asert: unknown field; allowed: name, assert, severity, '
     'description; did you mean "assert"?'),
    (_mutate(qa_tests=[]), "contracts/metrics/payback.yaml: qa_tests: list should have at least 1 item"),
    (_mutate(null_policy="ignore"), "contracts/metrics/payback.yaml: null_policy: 'ignore' is not allowed"),
    (_mutate(formula=None), 'contracts/metrics/payback.yaml: formula: is required ("target = expression"); only '
                            "kind: fact may omit it"),
    (_mutate(parameters={"churn": {"by": "region", "values": {"na": 0.1}}}),
     'contracts/metrics/payback.yaml: parameters.churn.by: unknown column "region"; the computation of payback '
     "has: segment,"),
    (_mutate(parameters={"cac": 3}),
     'contracts/metrics/payback.yaml: parameters.cac: "cac" is already a column of payback; rename it'),
    (_mutate(parameters={"rate": "high"}), "contracts/metrics/payback.yaml: parameters.rate: must be a number"),
    ("metric: [unclosed", "contracts/metrics/payback.yaml: not valid YAML"),
])
def test_bad_contracts_name_file_field_and_fix(tmp_path, text, message):
    with pytest.raises(ContractError) as e:
        _parse(tmp_path, text)
    assert message in str(e.value)


def test_expression_errors_are_contract_errors(tmp_path):
    with pytest.raises(ExpressionError, match=r'qa_tests\[1\]\.assert: unknown column "paybak_months".*did you mean '
                                              r'"payback_months"'):
        _parse(tmp_path, _mutate(qa_tests=[_TESTS[0], {"name": "bounds", "assert": "paybak_months < 36"}]))


def test_a_contract_without_computation_is_rejected(tmp_path):
    with pytest.raises(ContractError, match=r'contracts/metrics/paybak\.yaml: no computation is registered for '
                                            r'"paybak" \(the file name is the table name\); known: .*payback'):
        _parse(tmp_path, SPEC_PAYBACK, name="paybak")


def test_every_shipped_contract_loads_in_dependency_order():
    contracts = load_metric_contracts(CONTRACTS)
    assert set(contracts) == set(computations())
    seen: set[str] = set()
    for name, c in contracts.items():
        assert c.owner and c.definition and c.grain and c.qa_tests
        assert all(i.startswith("clean.") or i in seen for i in c.inputs), name
        if c.kind == "metric":
            assert c.formulas, name
        seen.add(name)


def test_a_missing_contract_is_reported(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (tmp_path / "entities").symlink_to(CONTRACTS / "entities")
    (folder / "payback.yaml").write_text(SPEC_PAYBACK)
    with pytest.raises(ContractError, match=r"no contract for metric table\(s\) \[.*'cm_by_line'.*\]; add "
                                            r"contracts/metrics/<name>\.yaml"):
        load_metric_contracts(tmp_path)


def test_parameters_become_constants_per_level():
    c = load_metric_contracts(CONTRACTS)["cm_by_line"]
    p = {x.name: x for x in c.parameters}
    assert p["cost_to_serve_per_seat_month"].by == "segment"
    con = duckdb.connect()
    got = con.execute(f"SELECT {p['cost_to_serve_per_seat_month'].sql()} FROM (VALUES ('smb'), ('enterprise'), "
                      f"('other')) t(segment)").fetchall()
    assert [g[0] for g in got] == [6.0, 9.0, 7.0]
    assert con.execute(f"SELECT {p['commission_rate'].sql()}").fetchone()[0] == 0.10
