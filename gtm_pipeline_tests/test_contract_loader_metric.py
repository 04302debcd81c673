"""Metric contracts (contracts/metrics/<name>.yaml) on the one contract loader: an unknown field names the allowed
ones and the closest, a wrong type and a typo'd enum value name the field, checks that need the computation land
on the entry to fix, and expressions still go through the allow-list compiler."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gtm_pipeline.errors import ContractError, ExpressionError
from gtm_pipeline.metrics.contract import known_inputs, parse_metric_contract
from gtm_pipeline.metrics.registry import computations

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"
W = "contracts/metrics/cm_by_line.yaml: "


def _error(tmp_path, edit, error=ContractError) -> str:
    doc = yaml.safe_load((CONTRACTS / "metrics" / "cm_by_line.yaml").read_text())
    edit(doc)
    path = tmp_path / "cm_by_line.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    comps = computations()
    with pytest.raises(error) as e:
        parse_metric_contract(path, comps, known_inputs(CONTRACTS, comps))
    return str(e.value)


@pytest.mark.parametrize("edit,expected", [
    # unknown fields, with the closest allowed name
    (lambda d: d.update(qa_test=d.pop("qa_tests")),
     W + "qa_test: unknown field; allowed: metric, definition, grain, inputs, formula, qa_tests, break_action, owner, "
         'kind, description, unit, version, parameters, null_policy; did you mean "qa_tests"? (and 1 more problem in '
         "this file)"),
    (lambda d: d["parameters"]["payment_fee_rate"].update(valu=0.03),
     W + "parameters.payment_fee_rate.valu: unknown field; allowed: value, by, values, default, description; did you "
         'mean "value"?'),
    (lambda d: d["qa_tests"][0].update(severty="warn"),
     W + 'qa_tests[0].severty: unknown field; allowed: name, assert, severity, description; did you mean '
         '"severity"?'),
    # wrong types
    (lambda d: d["parameters"]["commission_rate"].update(value="ten percent"),
     W + "parameters.commission_rate.value: must be a number, got 'ten percent'"),
    (lambda d: d.update(qa_tests={"name": "x", "assert": "cm >= 0"}),
     W + "qa_tests: input should be a valid list"),
    (lambda d: d.update(owner=["FP&A"]), W + "owner: input should be a valid string (got ['FP&A'])"),
    # typo'd enum values
    (lambda d: d.update(null_policy="alow"),
     W + "null_policy: 'alow' is not allowed; allowed: fail, allow; did you mean \"allow\"?"),
    (lambda d: d.update(break_action="block_publish_and_page_ownr"),
     W + "break_action: 'block_publish_and_page_ownr' is not allowed; allowed: block_publish_and_page_owner, "
         'block_publish_and_notify_owner; did you mean "block_publish_and_page_owner"?'),
    (lambda d: d["qa_tests"][0].update(severity="warning"),
     W + "qa_tests[0].severity: 'warning' is not allowed; allowed: error, warn; did you mean \"warn\"?"),
    (lambda d: d.update(kind="facts"), W + "kind: 'facts' is not allowed; allowed: metric, fact; did you mean "
                                           '"fact"?'),
])
def test_shape_errors_name_the_field(tmp_path, edit, expected):
    assert _error(tmp_path, edit) == expected


def test_checks_that_need_the_computation_land_on_the_entry(tmp_path):
    assert _error(tmp_path, lambda d: d.update(qa_tests=[d["qa_tests"][0]] * 2)) == (
        W + "qa_tests[1].name: 'cm_in_range' is used by another test of this contract; names must be unique")
    assert _error(tmp_path, lambda d: d["parameters"].update(segment=1.0)) == (
        W + 'parameters.segment: "segment" is already a column of cm_by_line; rename it')
    assert _error(tmp_path, lambda d: d["parameters"]["cost_to_serve_per_seat_month"].update(by="segmnt")).startswith(
        W + 'parameters.cost_to_serve_per_seat_month.by: unknown column "segmnt"; the computation of cm_by_line has: ')
    assert _error(tmp_path, lambda d: d.update(formula=[*d["formula"], 7])) == (
        W + 'formula[4]: must be text "target = expression", got 7')


def test_expressions_still_go_through_the_compiler(tmp_path):
    message = _error(tmp_path, lambda d: d["qa_tests"][0].update({"assert": "__import__('os').system('id') == 0"}),
                     ExpressionError)
    assert message == W + ("qa_tests[0].assert: attribute access (\"__import__('os').system\") is not allowed in "
                           "contract expressions")
