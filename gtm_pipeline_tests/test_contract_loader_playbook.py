"""Playbooks (contracts/decisions/<node>.yaml) and the roster on the one contract loader: an unknown field names the
allowed ones and the closest, a wrong type and a typo'd enum value name the field, and each node's model holds only
its own thresholds, pre-checks and watchable metrics."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import REPO

from gtm_pipeline.decisions.playbook import load_roster, parse_playbook
from gtm_pipeline.errors import ContractError

CONTRACTS = REPO / "contracts"


def _error(tmp_path, edit, file: str = "pricing_change.yaml") -> str:
    root = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, root)
    path = root / "decisions" / file
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ContractError) as e:
        load_roster(root) if file == "roster.yaml" else parse_playbook(path)
    return str(e.value)


W = "contracts/decisions/pricing_change.yaml: "


@pytest.mark.parametrize("edit,expected", [
    # unknown fields, with the closest allowed name
    (lambda d: d.update(reviw_after_days=7),
     W + "reviw_after_days: unknown field; allowed: node, version, title, description, spec, taxonomy, approvers, "
         "inputs, prechecks, thresholds, action, risk, reversal, monitoring, review_after_days; did you mean "
         '"review_after_days"?'),
    (lambda d: d["reversal"].update(automatic_on_breech=True),
     W + "reversal.automatic_on_breech: unknown field; allowed: plan, within_minutes, automatic_on_breach; did you "
         'mean "automatic_on_breach"?'),
    (lambda d: d["monitoring"]["watch"][0].update(limt=0.05),
     W + 'monitoring.watch[0].limt: unknown field; allowed: metric, rule, limit; did you mean "limit"?'),
    # wrong types
    (lambda d: d.update(approvers="Finance"), W + "approvers: input should be a valid list (got 'Finance')"),
    (lambda d: d["monitoring"].update(window_days="two weeks"),
     W + "monitoring.window_days: must be a number, got 'two weeks'"),
    (lambda d: d["thresholds"].update(min_closed=20.5),
     W + "thresholds.min_closed: input should be a valid integer, got a number with a fractional part (got 20.5)"),
    (lambda d: d["reversal"].update(automatic_on_breach="no"),
     W + "reversal.automatic_on_breach: input should be a valid boolean (got 'no')"),
    # typo'd enum values
    (lambda d: d["taxonomy"].update(cadence="weekly_op"),
     W + "taxonomy.cadence: 'weekly_op' is not allowed; allowed: weekly_ops, monthly_business_review, quarterly_plan; "
         'did you mean "weekly_ops"?'),
    (lambda d: d["monitoring"]["watch"][0].update(rule="bnd"),
     W + "monitoring.watch[0].rule: 'bnd' is not allowed; allowed: band, max_drop, max_drop_abs, max_increase, max, "
         'min, report; did you mean "band"?'),
    (lambda d: d["prechecks"].update(incident_scope="dependency"),
     W + "prechecks.incident_scope: 'dependency' is not allowed; allowed: dependencies, any; did you mean "
         '"dependencies"?'),
    (lambda d: d.update(node="pricing.chnage"),
     W + "node: 'pricing.chnage' is not allowed; allowed: pricing.change, channel.invest, icp.update, routing.policy, "
         'experiment.ship; did you mean "pricing.change"?'),
])
def test_shape_errors_name_the_field(tmp_path, edit, expected):
    assert _error(tmp_path, edit) == expected


@pytest.mark.parametrize("edit,expected", [
    # the thresholds and pre-checks of another node are unknown here
    (lambda d: d["thresholds"].update(min_sqos=10),
     W + "thresholds.min_sqos: unknown field; allowed: elasticity_min, elasticity_max, cm_per_seat_uplift_min, "
         "payback_worsening_max_months, raise_pct_min, raise_pct_max, raise_pct_step, variable_cost_rate, min_closed, "
         'elasticity_se_max; did you mean "min_closed"?'),
    (lambda d: d["prechecks"].update(attribution_validity_min=0.995),
     W + "prechecks.attribution_validity_min: unknown field; allowed: slo_health_green, max_open_incident, "
         "incident_scope"),
    # a check across two thresholds sees the default of the one left out (raise_pct_max 10)
    (lambda d: (d["thresholds"].pop("raise_pct_max"), d["thresholds"].update(raise_pct_min=12)),
     W + "thresholds.raise_pct_min: 12.0 is above raise_pct_max 10"),
    (lambda d: d["monitoring"]["watch"].append({"metric": "booking_rate", "rule": "max"}),
     W + "monitoring.watch[3].limit: is required: give a number"),
])
def test_each_node_has_its_own_model(tmp_path, edit, expected):
    assert _error(tmp_path, edit) == expected


def test_an_unknown_threshold_of_the_channel_node(tmp_path):
    assert _error(tmp_path, lambda d: d["thresholds"].update(min_sqo=5), "channel_invest.yaml") == (
        "contracts/decisions/channel_invest.yaml: thresholds.min_sqo: unknown field; allowed: "
        "shift_cac_per_sqo_max_ratio, shift_sql_to_win_min_pp, shift_budget_pct, pause_cac_per_sqo_min_ratio, "
        'pause_attribution_validity_min, attribution_validity_exempt, min_sqos; did you mean "min_sqos"?')


R = "contracts/decisions/roster.yaml: "


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d.update(role=d.pop("roles")),
     R + 'role: unknown field; allowed: roles; did you mean "roles"? (and 1 more problem in this file)'),
    (lambda d: d["roles"].update(CRO="dana@example.com"),
     R + "roles.CRO: input should be a valid list (got 'dana@example.com')"),
    (lambda d: d["roles"].update(CRO=[]), R + "roles.CRO: list should have at least 1 item after validation, not 0 "
                                              "(got [])"),
])
def test_roster_errors_name_the_field(tmp_path, edit, expected):
    assert _error(tmp_path, edit, "roster.yaml") == expected
