"""contracts/slos.yaml on the one contract loader: an unknown field names the allowed ones and the closest, a wrong
type and a typo'd enum value name the field, and a check across sections lands on the field to fix."""

from __future__ import annotations

import pytest
import yaml

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.slo.contract import load_slo_file

SHIPPED = CONTRACTS_DIR_DEFAULT / "slos.yaml"


def _error(tmp_path, edit) -> str:
    body = yaml.safe_load(SHIPPED.read_text())
    edit(body)
    path = tmp_path / "contracts" / "slos.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    with pytest.raises(ContractError) as e:
        load_slo_file(path)
    return str(e.value)


@pytest.mark.parametrize("edit,expected", [
    # unknown fields, at every level, with the closest allowed name
    (lambda b: b.update(slo=b.pop("slos")),
     'contracts/slos.yaml: slo: unknown field; allowed: version, defaults, alerting, prometheus, slos; did you mean '
     '"slos"? (and 1 more problem in this file)'),
    (lambda b: b["defaults"].update(objectve=0.99),
     "contracts/slos.yaml: defaults.objectve: unknown field; allowed: objective, window, evaluation_interval, "
     'resolve_after, report_interval; did you mean "objective"?'),
    (lambda b: b["alerting"][2].update(burnrate=3),
     'contracts/slos.yaml: alerting[2].burnrate: unknown field; allowed: severity, long, short, burn_rate; did you '
     'mean "burn_rate"?'),
    (lambda b: b["slos"][0]["assets"].append({"groups": "clean"}),
     'contracts/slos.yaml: slos[0] (metric_age).assets[1].groups: unknown field; allowed: key, group, prefix; did '
     'you mean "group"?'),
    # wrong types
    (lambda b: b["alerting"][0].update(burn_rate="fast"),
     "contracts/slos.yaml: alerting[0].burn_rate: input should be a valid number (got 'fast')"),
    (lambda b: b["slos"][2].update(assets="metrics/attribution"),
     "contracts/slos.yaml: slos[2] (attribution_age).assets: input should be a valid list (got 'metrics/attribution')"),
    (lambda b: b["defaults"].update(window=28),
     "contracts/slos.yaml: defaults.window: 28 is not a duration; write a positive whole number with one unit (s, m, "
     "h, d, w), e.g. 30s, 5m, 4h, 28d"),
    # typo'd enum values
    (lambda b: b["alerting"][1].update(severity="pgae"),
     'contracts/slos.yaml: alerting[1].severity: \'pgae\' is not allowed; allowed: page, ticket; did you mean "page"?'),
    (lambda b: b.update(version="1"),     # text, not the number 1
     'contracts/slos.yaml: version: \'1\' is not allowed; allowed: 1; did you mean "1"?'),
])
def test_shape_errors_name_the_field(tmp_path, edit, expected):
    assert _error(tmp_path, edit) == expected


@pytest.mark.parametrize("edit,expected", [
    (lambda b: b["prometheus"].update(rule_interval="3m"),
     "contracts/slos.yaml: prometheus.rule_interval: 3m leaves fewer than two rule evaluations in the alerting "
     "window 5m; shorten the interval or lengthen the window"),
    (lambda b: b["defaults"].update(objective=0.99),      # the statements say 0.98: the SLO's own field is blamed
     "contracts/slos.yaml: slos[0] (metric_age).statement: 'P(MetricAge<24h) >= 0.98' disagrees with threshold "
     "1d / objective 0.99; make them match"),
    (lambda b: b["slos"][1].update(warn_after="4h"),
     "contracts/slos.yaml: slos[1] (forecast_age).warn_after: 4h must be shorter than threshold 4h"),
])
def test_checks_across_fields_land_on_the_field_to_fix(tmp_path, edit, expected):
    assert _error(tmp_path, edit) == expected


def test_a_file_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "slos.yaml"
    path.write_text("- name: metric_age\n")
    with pytest.raises(ContractError, match=r"slos\.yaml: expected a mapping with 'version' and 'slos'"):
        load_slo_file(path)
