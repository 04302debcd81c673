"""Playbooks: the shipped files carry the spec's numbers, a bad file fails with file/field/fix, and each node's rules
give the action the thresholds imply -- table-style, with every threshold's boundary on both sides."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import REPO

from gtm_pipeline.decisions import known_metric_tables, rules
from gtm_pipeline.decisions.monitoring import judge
from gtm_pipeline.decisions.playbook import Watch, load_playbooks, load_roster
from gtm_pipeline.errors import ContractError

CONTRACTS = REPO / "contracts"


@pytest.fixture(scope="module")
def playbooks():
    return load_playbooks(CONTRACTS, known_metric_tables(CONTRACTS))


def test_shipped_playbooks_carry_the_spec(playbooks):
    p, c, i, r = (playbooks[n] for n in ("pricing.change", "channel.invest", "icp.update", "routing.policy"))
    assert (p.owner, p.approvers) == ("CRO", ("Finance", "Sales Ops"))
    assert (c.owner, c.approvers) == ("Demand Gen", ("FP&A", "Analytics"))
    assert (i.owner, i.approvers) == ("Marketing Ops", ("Sales Ops", "CRO"))
    assert (r.owner, r.approvers) == ("RevOps", ("CRM Admin", "SRE"))
    spec = {"elasticity_min": -1.0, "elasticity_max": -0.3, "cm_per_seat_uplift_min": 3.0,
            "payback_worsening_max_months": 0.5, "raise_pct_min": 5, "raise_pct_max": 10}
    assert {k: p.thresholds[k] for k in spec} == spec
    assert c.thresholds["shift_cac_per_sqo_max_ratio"] == 0.9 and c.thresholds["shift_sql_to_win_min_pp"] == 2.0
    assert c.thresholds["shift_budget_pct"] == 20 and c.thresholds["pause_cac_per_sqo_min_ratio"] == 1.2
    assert c.prechecks["attribution_validity_min"] == 0.995
    # per channel as well, on by default (issue 14 §3); exemptions are explicit, each with its reason
    assert c.thresholds["pause_attribution_validity_min"] == 0.995 and c.thresholds["min_sqos"] == 10
    assert set(c.thresholds["attribution_validity_exempt"]) == {"partner", "referral", "events"}
    assert all("without a web session" in why for why in c.thresholds["attribution_validity_exempt"].values())
    assert (i.thresholds["win_rate_diff_pp"], i.thresholds["months"], i.thresholds["payback_improvement_months"],
            i.thresholds["dq_reason_coverage_min"]) == (5.0, 2, 1.0, 0.98)
    assert (r.thresholds["shadow_match_min_pct"], r.thresholds["gini_max"]) == (99.5, 0.2)
    assert (r.thresholds["unassigned_max"], r.thresholds["min_shadow_records"]) == (0.005, 200)
    assert (p.thresholds["min_closed"], p.thresholds["elasticity_se_max"]) == (20, 0.5)
    assert i.thresholds["min_disqualified"] == 50
    assert (p.reversal_within_minutes, r.reversal_within_minutes) == (60, 5)
    assert (p.window_days, i.window_days) == (14, 28)
    assert r.auto_reverse and not p.auto_reverse
    assert {pb.max_open_incident for pb in playbooks.values()} == {"SEV2"}
    for pb in playbooks.values():
        assert pb.reversibility in ("High", "Medium", "Low") and pb.risk_class in ("High", "Medium", "Low")
        assert pb.cadence in ("weekly_ops", "monthly_business_review", "quarterly_plan")
    load_roster(CONTRACTS, playbooks)


def test_variable_cost_rate_matches_the_cm_contract(playbooks):
    params = yaml.safe_load((CONTRACTS / "metrics" / "cm_by_line.yaml").read_text())["parameters"]
    expected = params["payment_fee_rate"]["value"] + params["commission_rate"]["value"]
    assert playbooks["pricing.change"].thresholds["variable_cost_rate"] == pytest.approx(expected)


def test_elasticity_precision_matches_the_elasticity_contract(playbooks):
    """The playbook holds a segment whose E is as imprecise as the metric contract's warning says."""
    tests = yaml.safe_load((CONTRACTS / "metrics" / "price_elasticity.yaml").read_text())["qa_tests"]
    [precise] = [t for t in tests if t["name"] == "precise_enough"]
    limit = playbooks["pricing.change"].thresholds["elasticity_se_max"]
    assert precise["assert"] == f"e_se is not None and e_se <= {limit:g}"


def _broken(tmp_path, edit, file: str = "pricing_change.yaml") -> ContractError:
    root = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, root)
    path = root / "decisions" / file
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ContractError) as e:
        pbs = load_playbooks(root, known_metric_tables(root))
        load_roster(root, pbs)
    return e.value


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d["thresholds"].update(elastcity_min=-1), "pricing_change.yaml: thresholds.elastcity_min: unknown "
                                                         "field; allowed: elasticity_min, elasticity_max, "
                                                         "cm_per_seat_uplift_min"),
    (lambda d: d["thresholds"].update(cm_per_seat_uplift_min="three"), "thresholds.cm_per_seat_uplift_min: must be a "
                                                                      "number, got 'three'; e.g. 3.0"),
    (lambda d: d["thresholds"].update(elasticity_min=-0.1), "thresholds.elasticity_min: -0.1 is above "
                                                            "elasticity_max -0.3; swap them"),
    (lambda d: d["taxonomy"].update(reversibility="Fast"), "taxonomy.reversibility: 'Fast' is not allowed; allowed: "
                                                           "High, Medium, Low"),
    (lambda d: d.update(approvers=["Finance", "CRO"]), "approvers: the owner 'CRO' cannot also approve"),
    (lambda d: d.update(inputs=["price_elasticity"]), "inputs: must include booking_rate, cm_per_seat, gm_pct"),
    (lambda d: d.update(inputs=[*d["inputs"], "churn"]), "inputs: 'churn' is not a metric table"),
    (lambda d: d["monitoring"]["watch"].append({"metric": "sql_volume", "rule": "max_drop", "limit": 0.1}),
     "monitoring.watch[3].metric: 'sql_volume' is not allowed; allowed: booking_rate, cm_per_seat, list_price"),
    (lambda d: d["reversal"].pop("within_minutes"), "reversal.within_minutes: is required"),
    (lambda d: d["reversal"].update(within_minutes=None), "reversal.within_minutes: is required: give a number"),
    (lambda d: d["prechecks"].update(max_open_incident="SEV5"), "prechecks.max_open_incident: 'SEV5'"),
    (lambda d: d["taxonomy"].update(owner="Chief Pricing"), "roster.yaml: roles: contracts/decisions/"
                                                            "pricing_change.yaml names the role 'Chief Pricing'"),
])
def test_bad_playbook_names_file_field_and_fix(tmp_path, edit, expected):
    assert expected in str(_broken(tmp_path, edit))


@pytest.mark.parametrize("edit,expected", [
    (lambda d: d["thresholds"].update(pause_attribution_validity_min=None),
     "thresholds.pause_attribution_validity_min: must be a number (remove the line to use the spec's default 0.995); "
     "the spec pauses every channel below 0.995 -- to exempt a channel whose leads structurally lack web touches, "
     "list it under attribution_validity_exempt"),
    (lambda d: d["thresholds"].update(attribution_validity_exempt={"partners": "CRM-entered"}),
     "thresholds.attribution_validity_exempt: 'partners' is not a channel; known (contracts/entities/lead.yaml): "
     "paid_search, paid_social"),
    (lambda d: d["thresholds"].update(attribution_validity_exempt=["partner"]),
     "thresholds.attribution_validity_exempt: must map each name to the reason in words"),
    (lambda d: d["thresholds"].update(attribution_validity_exempt={"partner": ""}),
     "thresholds.attribution_validity_exempt: must map each name to the reason in words"),
])
def test_bad_channel_playbook_names_file_field_and_fix(tmp_path, edit, expected):
    assert expected in str(_broken(tmp_path, edit, "channel_invest.yaml"))


def test_missing_playbook_is_named(tmp_path):
    root = tmp_path / "contracts"
    shutil.copytree(CONTRACTS, root)
    (root / "decisions" / "icp_update.yaml").unlink()
    with pytest.raises(ContractError, match="no playbook for icp.update; add contracts/decisions/icp_update.yaml"):
        load_playbooks(root)


# ---- pricing.change ---------------------------------------------------------------------------------------------

T_PRICE = {"elasticity_min": -1.0, "elasticity_max": -0.3, "cm_per_seat_uplift_min": 3.0,
           "payback_worsening_max_months": 0.5, "raise_pct_min": 5, "raise_pct_max": 10, "raise_pct_step": 1,
           "variable_cost_rate": 0.129, "min_closed": 20, "elasticity_se_max": 0.5}
# price 50/seat: +5% adds 50 x 0.05 x 0.871 = 2.1775, +7% 3.0485 (the first >= $3)
SEG = {"price_per_seat": 50.0, "cm_per_seat": 30.0, "payback_months": 2.0, "gm_pct": 0.8, "e_se": 0.1,
       "closed": 400}


@pytest.mark.parametrize("elasticity,expected_pct", [
    (-1.0, 7), (-0.3, 7), (-0.6, 7),            # on and inside both bounds: the smallest raise with >= $3 uplift
    (-1.0001, None), (-0.2999, None), (-1.4, None), (None, None),
])
def test_pricing_elasticity_range(elasticity, expected_pct):
    [o] = rules.evaluate_pricing({"smb": {**SEG, "elasticity": elasticity}}, T_PRICE)
    assert (o.action or {}).get("raise_pct") == expected_pct, o.summary


@pytest.mark.parametrize("price,expected_pct", [
    (3.0 / (0.10 * 0.871), 10),            # uplift exactly $3 at +10%: meets the threshold
    (3.0 / (0.10 * 0.871) - 0.01, None),   # a cent less per seat: no raise in range reaches $3
    (3.0 / (0.05 * 0.871), 5),             # exactly $3 at +5% already
])
def test_pricing_uplift_boundary(price, expected_pct):
    [o] = rules.evaluate_pricing({"smb": {**SEG, "price_per_seat": price, "elasticity": -0.5}}, T_PRICE)
    assert (o.action or {}).get("raise_pct") == expected_pct, o.summary


@pytest.mark.parametrize("slack,proposes", [(0.0, True), (1e-6, False)])
def test_pricing_payback_boundary(slack, proposes):
    t = {**T_PRICE, "raise_pct_min": 10}
    seg = {"price_per_seat": 40.0, "cm_per_seat": 100.0, "payback_months": 20.0, "elasticity": -1.0, "e_se": 0.1,
           "closed": 400}
    uplift, worse = rules.project_raise(40.0, 100.0, 20.0, -1.0, 10, 0.129)
    assert uplift >= 3 and worse > 0  # the demand dip lengthens payback more than the margin shortens it
    [o] = rules.evaluate_pricing({"smb": seg}, {**t, "payback_worsening_max_months": worse - slack})
    assert o.proposes is proposes


def test_pricing_one_outcome_per_segment_and_all_ignored():
    out = rules.evaluate_pricing({"all": {**SEG, "elasticity": -0.5}, "smb": {**SEG, "elasticity": -0.5},
                                  "enterprise": {**SEG, "elasticity": -1.4}}, T_PRICE)
    assert [(o.subject, o.proposes) for o in out] == [("enterprise", False), ("smb", True)]
    assert out[1].action["list_price_multiplier"] == 1.07 and out[1].action["discount_ladders"] == "hold"


# ---- channel.invest ---------------------------------------------------------------------------------------------

T_CH = {"shift_cac_per_sqo_max_ratio": 0.9, "shift_sql_to_win_min_pp": 2.0, "shift_budget_pct": 20,
        "pause_cac_per_sqo_min_ratio": 1.2, "pause_attribution_validity_min": 0.995,
        "attribution_validity_exempt": {}, "min_sqos": 10}
BASE = {"cac_per_sqo": 100.0, "sql_to_win": 0.10}


def _ch(cac, s2w, sqos=50, cost=1000.0, validity=1.0):
    return {"cac_per_sqo": cac, "sql_to_win": s2w, "sqos": sqos, "marketing_cost": cost,
            "attribution_validity": validity}


@pytest.mark.parametrize("row,t,verdict", [
    (_ch(90.0, 0.12), T_CH, "shift"),              # CAC/SQO = 0.9x and SQL->Win +2 pp: both on the boundary
    (_ch(90.0, 0.1199), T_CH, "keep"),             # +1.99 pp
    (_ch(90.01, 0.20), T_CH, "keep"),              # 0.9001x
    (_ch(120.0, 0.30), T_CH, "pause"),             # 1.2x: pause even with a great SQL->Win
    (_ch(119.99, 0.10), T_CH, "keep"),
    (_ch(300.0, 0.10, sqos=9), T_CH, "held"),      # below min_sqos: held (insufficient data), not judged
    (_ch(300.0, 0.10, sqos=10), T_CH, "pause"),
    (_ch(50.0, 0.2, validity=0.99), T_CH, "pause"),                                  # per-channel validity: on
    (_ch(50.0, 0.2, validity=0.99), {**T_CH, "attribution_validity_exempt": {"x": "CRM-entered"}}, "shift"),
    (_ch(50.0, 0.2, validity=0.995), T_CH, "shift"),
])
def test_channel_thresholds(row, t, verdict):
    o = rules.evaluate_channel({"x": row, "y": _ch(100.0, 0.10)}, BASE, t)
    assert o.figures["channels"]["x"]["verdict"] == verdict, o.reasons
    assert ("x" in o.held) is (verdict == "held")


def test_channel_budget_split_keeps_the_total():
    # the pause frees 400, the shift needs 200: the other 200 goes to no channel (only shifted channels gain)
    o = rules.evaluate_channel({"good": _ch(50.0, 0.2, cost=1000.0), "bad": _ch(500.0, 0.1, cost=400.0),
                                "mid": _ch(100.0, 0.1, cost=1600.0)}, BASE, T_CH)
    split = o.action["split"]
    assert split == {"good": 1200.0, "bad": 0.0, "mid": 1600.0, "unallocated": 200.0}
    assert sum(split.values()) == pytest.approx(3000.0) and o.action["total_change"] == 0
    # with nothing paused the shift is paid by the other channels, in proportion to their budgets
    o = rules.evaluate_channel({"good": _ch(50.0, 0.2, cost=1000.0), "mid": _ch(100.0, 0.1, cost=1600.0),
                                "other": _ch(110.0, 0.1, cost=400.0)}, BASE, T_CH)
    assert o.action["split"] == {"good": 1200.0, "mid": 1440.0, "other": 360.0}


def test_channel_no_action_when_nothing_crosses():
    o = rules.evaluate_channel({"a": _ch(100.0, 0.1), "b": _ch(110.0, 0.11)}, BASE, T_CH)
    assert not o.proposes and "no channel crosses" in o.summary


# ---- icp.update -------------------------------------------------------------------------------------------------

T_ICP = {"win_rate_diff_pp": 5.0, "months": 2, "min_closed_per_month": 5, "payback_improvement_months": 1.0,
         "dq_reason_coverage_min": 0.98, "min_disqualified": 50, "dimensions": ["industry", "size_band"]}
NO_FILTER = {"include": [], "exclude": [], "dq_gates": False}


def _wr(value_rates, closed=100, months=("2026-09", "2026-10")):
    rows = []
    for m in months:
        rows.append({"dimension": "all", "value": "all", "month": m, "closed": 1000, "won": 300})  # 30 %
        for v, rate in value_rates.items():
            rows.append({"dimension": "industry", "value": v, "month": m, "closed": closed,
                         "won": round(rate * closed)})
    return rows


@pytest.mark.parametrize("rate,payback,closed,expected", [
    (0.35, 2.0, 100, ("add", "industry=fintech")),      # +5 pp both months, payback exactly 1 month better
    (0.34, 2.0, 100, None),                             # +4 pp
    (0.35, 2.01, 100, None),                            # payback 0.99 month better
    (0.25, 4.0, 100, ("remove", "industry=fintech")),   # -5 pp, payback exactly 1 month worse
    (0.25, 3.99, 100, None),
    (0.40, 1.0, 4, None),                               # fewer closes than min_closed_per_month
    (0.40, 1.0, 5, ("add", "industry=fintech")),
])
def test_icp_win_rate_and_payback(rate, payback, closed, expected):
    o = rules.evaluate_icp(_wr({"fintech": rate}, closed), {("industry", "fintech"): payback}, 3.0, 0.5,
                           NO_FILTER, T_ICP)
    got = None
    if o.action and o.action["add"]:
        got = ("add", o.action["add"][0])
    if o.action and o.action["remove"]:
        got = ("remove", o.action["remove"][0])
    assert got == expected, o.reasons


def test_icp_needs_two_months():
    o = rules.evaluate_icp(_wr({"fintech": 0.6}, months=("2026-10",)), {("industry", "fintech"): 0.5}, 3.0, 0.5,
                           NO_FILTER, T_ICP)
    assert not o.proposes and any("only 1 month" in r for r in o.reasons)
    assert o.held["segments"]["reason"] == "insufficient data"


@pytest.mark.parametrize("coverage,current,enforce", [(0.98, False, True), (0.9799, False, False),
                                                      (0.99, True, False), (None, False, False)])
def test_icp_dq_gates(coverage, current, enforce):
    o = rules.evaluate_icp(_wr({}), {}, 3.0, coverage, {**NO_FILTER, "dq_gates": current}, T_ICP)
    assert bool(o.action and o.action["enforce_dq_gates"]) is enforce


# ---- routing.policy ---------------------------------------------------------------------------------------------

T_RT = {"shadow_match_min_pct": 99.5, "gini_max": 0.2, "min_gini_improvement": 0.01,
        "min_latency_improvement_pct": None, "unassigned_max": 0.005, "shadow_days": 14, "seed": 0,
        "min_shadow_records": 200}


def _shadow(match=99.5, ua_cur=0, ua_cand=0, g_cur=0.15, g_cand=0.15, n=1000):
    return {"current": "v1@1", "candidate": "v2@2", "records": n, "match_pct": match, "unassigned_current": ua_cur,
            "unassigned_candidate": ua_cand, "gini_current": g_cur, "gini_candidate": g_cand}


@pytest.mark.parametrize("shadow,t,promotes", [
    (_shadow(99.5), T_RT, True),
    (_shadow(99.49), T_RT, False),
    (_shadow(90.0, g_cur=0.16, g_cand=0.15), T_RT, True),          # fairness improvement of exactly 0.01
    (_shadow(90.0, g_cur=0.159, g_cand=0.15), T_RT, False),
    (_shadow(99.9, ua_cand=6), T_RT, False),                       # 0.6 % unassigned > 0.5 %: SLO regression
    (_shadow(99.9, ua_cand=5), T_RT, True),                        # 0.5 %: on the limit
    (_shadow(99.9, g_cur=0.15, g_cand=0.21), T_RT, False),         # Gini above 0.2 and worse than current
    (_shadow(99.9, g_cur=0.25, g_cand=0.24), T_RT, False),         # above 0.2: a hard gate, however bad current is
    (_shadow(90.0, g_cur=0.60, g_cand=0.53), T_RT, False),         # issue 14: 0.53 must not pass
    (_shadow(99.9, ua_cur=8, ua_cand=7), T_RT, False),             # 0.7 % > 0.5 % even though current is worse
    ({**_shadow(90.0), "p95_ms_current": 1.0, "p95_ms_candidate": 0.8},
     {**T_RT, "min_latency_improvement_pct": 20}, True),           # latency criterion, when enabled
    (None, T_RT, False),
])
def test_routing_promotion(shadow, t, promotes):
    assert rules.evaluate_routing(shadow, t).proposes is promotes


# ---- monitoring and cadences ------------------------------------------------------------------------------------

@pytest.mark.parametrize("watch,baseline,observed,breach", [
    (Watch("booking_rate", "band", 0.05), 0.30, 0.315, False),
    (Watch("booking_rate", "band", 0.05), 0.30, 0.2849, True),
    (Watch("booking_rate", "band", 0.05), 0.30, 0.3151, True),
    (Watch("sql_volume", "max_drop", 0.10), 100, 90, False),
    (Watch("sql_volume", "max_drop", 0.10), 100, 89.9, True),
    (Watch("unassigned_rate", "max", 0.005), None, 0.005, False),
    (Watch("unassigned_rate", "max", 0.005), None, 0.0051, True),
    (Watch("availability", "min", 0.995), None, 0.995, False),
    (Watch("availability", "min", 0.995), None, 0.9949, True),
    (Watch("win_rate", "max_drop_abs", 0.05), 0.3, 0.25, False),
    (Watch("win_rate", "max_drop_abs", 0.05), 0.3, 0.249, True),
    (Watch("payback", "max_increase", 0.5), 2.0, 2.5, False),
    (Watch("payback", "max_increase", 0.5), 2.0, 2.51, True),
    (Watch("cm_per_seat", "report", None), 30, 10, False),
    (Watch("booking_rate", "band", 0.05), 0.30, None, False),
])
def test_monitoring_rules(watch, baseline, observed, breach):
    assert judge(watch, baseline, observed)[0] is breach
