"""End to end on generated data with known parameters: the real metric layer publishes from a generated clean set,
and each decision node proposes what its thresholds imply on those figures -- and nothing while an open SEV2
incident on its inputs blocks it. Ground truth of the generator (gtm_pipeline.generate): elasticity smb -0.6,
mid_market -0.45, enterprise -1.4; paid_social very inefficient; DQ coverage ~98.5 %; attribution validity ~0.997."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from conftest import REPO
from decision_fixtures import green, open_sev2

from gtm_pipeline.decisions import lifecycle, log, nodes, open_context
from gtm_pipeline.decisions.gates import GateRefused
from gtm_pipeline.decisions.rules import project_raise

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from metrics_fixtures import bulk_load_clean

    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate
    from gtm_pipeline.metrics import run_layer

    root = tmp_path_factory.mktemp("dec_e2e")
    generate(root / "landing", GenerateConfig(days=200, seed=7, start=date(2026, 1, 5), scale=1.0,
                                              defects=DefectRates.none()), progress=False)
    path = root / "gtm.duckdb"
    with duckdb.connect(str(path)) as con:
        bulk_load_clean(root / "landing", con)
        # The bulk loader skips the delivery-day column the clean stage sets; generated rows arrive on the day they
        # are created, which is what the routing node's shadow window selects on.
        for t in ("lead", "opportunity"):
            con.execute(f"UPDATE clean.{t} SET _partition = created_at::DATE")
        run_layer(con, REPO / "contracts")
    return path


@pytest.fixture
def dc(warehouse, env_settings, tmp_path):
    import shutil

    path = tmp_path / "gtm.duckdb"
    shutil.copy(warehouse, path)
    con = duckdb.connect(str(path))
    yield open_context(con, env_settings, health_fn=green)
    con.close()


def q(con, sql):
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_each_node_proposes_what_the_thresholds_imply(dc):
    con = dc.con
    results = {n: nodes.evaluate_node(dc, pb, green) for n, pb in dc.playbooks.items()}
    assert all(r.prechecks_passed for r in results.values()), {n: r.note for n, r in results.items()}

    # pricing.change: recompute each segment's expected raise from the published rows
    t = dc.playbooks["pricing.change"].thresholds
    expected = {}
    for r in q(con, """SELECT e.segment, e.elasticity, e.e_se, e.closed, c.price_per_seat, c.cm_per_seat,
                              p.payback_months
                       FROM metrics.price_elasticity e JOIN metrics.cm_per_seat c USING (segment)
                       JOIN metrics.payback_by_segment p USING (segment)"""):
        pct = None
        # held (insufficient data) unless E rests on >= 20 closes with a standard error <= 0.5
        judged = r["elasticity"] is not None and r["closed"] >= 20 and r["e_se"] is not None and r["e_se"] <= 0.5
        if judged and -1.0 <= r["elasticity"] <= -0.3:
            for p in range(5, 11):
                up, worse = project_raise(r["price_per_seat"], r["cm_per_seat"], r["payback_months"],
                                          r["elasticity"], p, t["variable_cost_rate"])
                if up >= 3.0 and worse <= 0.5:
                    pct = p
                    break
        expected[r["segment"]] = pct
    got = {o.subject: (o.action or {}).get("raise_pct") for o in results["pricing.change"].outcomes}
    assert got == expected
    held = {o.subject for o in results["pricing.change"].outcomes if o.held}
    assert held == {r["segment"] for r in q(con, "SELECT segment, elasticity, e_se, closed FROM "
                                                 "metrics.price_elasticity WHERE segment <> 'all'")
                    if r["elasticity"] is None or r["closed"] < 20 or r["e_se"] is None or r["e_se"] > 0.5}
    # (No ground-truth check on E itself: the metric layer's estimate for enterprise, with few closes, scatters
    # around the generator's -1.4 and may land inside [-1, -0.3]; the node must follow the published figure.)
    assert set(got) == {"smb", "mid_market", "enterprise"}
    assert len(results["pricing.change"].new_proposals) == sum(v is not None for v in expected.values())

    # channel.invest: hold under 10 SQOs; pause at >= 1.2x the blended CAC/SQO or at a channel attribution validity
    # < 0.995 (unless the playbook exempts the channel); shift at <= 0.9x with SQL->Win >= +2 pp
    base = q(con, "SELECT cac_per_sqo FROM metrics.cac_per_sqo WHERE channel = 'all'")[0]["cac_per_sqo"]
    s2w = q(con, "SELECT sql_to_win FROM metrics.sql_funnel WHERE channel = 'all' AND week = 'all'")[0]["sql_to_win"]
    rows = q(con, """WITH opp AS (SELECT DISTINCT opportunity_id, channel FROM metrics.fact_pipeline WHERE is_created),
                          val AS (SELECT opportunity_id, bool_and(valid) AS valid FROM metrics.attribution GROUP BY 1),
                          v AS (SELECT channel, avg(CASE WHEN coalesce(valid, false) THEN 1.0 ELSE 0.0 END) AS validity
                                FROM opp LEFT JOIN val USING (opportunity_id) GROUP BY 1)
                     SELECT c.channel, c.cac_per_sqo, c.sqos, c.marketing_cost, f.sql_to_win, v.validity
                     FROM metrics.cac_per_sqo c JOIN metrics.sql_funnel f ON f.channel = c.channel AND f.week = 'all'
                     LEFT JOIN v ON v.channel = c.channel WHERE c.channel <> 'all'""")
    exempt = dc.playbooks["channel.invest"].thresholds["attribution_validity_exempt"]
    judged = [r for r in rows if r["sqos"] >= 10]
    invalid = {r["channel"] for r in judged if r["channel"] not in exempt and r["validity"] < 0.995}
    pause = sorted(r["channel"] for r in judged if r["cac_per_sqo"] / base >= 1.2 or r["channel"] in invalid)
    shift = sorted(r["channel"] for r in judged if r["cac_per_sqo"] / base <= 0.9 and r["channel"] not in invalid
                   and (r["sql_to_win"] - s2w) * 100 >= 2.0 and r["marketing_cost"] > 0)
    [o] = results["channel.invest"].outcomes
    assert (sorted(o.action["pause"]), sorted(o.action["shift"])) == (pause, shift)
    assert sorted(o.held) == sorted(r["channel"] for r in rows if r["sqos"] < 10)
    assert "paid_social" in pause and not {"partner", "referral"} & set(pause)   # ground truth
    budget = {r["channel"]: r["marketing_cost"] for r in rows}
    assert sum(o.action["split"].values()) == pytest.approx(sum(budget.values()), abs=0.01)
    assert all(o.action["split"][c] <= v + 0.01 for c, v in budget.items() if c not in shift)   # only shifts gain

    # icp.update: DQ reason coverage ~98.5 % >= 98 % -> enforce the gates; fintech/retail stand out on win rate
    [o] = results["icp.update"].outcomes
    assert o.action["enforce_dq_gates"] is True
    assert o.figures["dq_reason_coverage"] >= 0.98
    base_pb = o.figures["baseline_payback_months"]
    for item, fig in o.figures["values"].items():
        diffs, pb = fig["win_rate_diff_pp"], fig["payback_months"]
        should_add = bool(diffs) and all(d >= 5 for d in diffs) and pb is not None and pb <= base_pb - 1
        should_remove = bool(diffs) and all(d <= -5 for d in diffs) and pb is not None and pb >= base_pb + 1
        assert (item in o.action["add"], item in o.action["remove"]) == (should_add, should_remove), item
    wr = {r["value"]: r["won"] / r["closed"] for r in q(con, """SELECT value, won, closed
          FROM metrics.win_rate_by_segment
          WHERE month = 'all' AND value IN ('fintech', 'retail', 'all') AND dimension IN ('industry', 'all')""")}
    assert wr["fintech"] > wr["all"] + 0.05 and wr["retail"] < wr["all"] - 0.05      # ground truth

    # routing.policy: the shipped candidate v2 against v1, promoted only as the thresholds say
    [o] = results["routing.policy"].outcomes
    f = o.figures
    assert f["records"] > 0 and 0 <= f["match_pct"] <= 100
    # hard gates, whatever the current rule set scores: Gini <= 0.2, unassigned <= 0.5 %
    gates = f["unassigned_candidate"] / f["records"] <= 0.005 and f["gini_candidate"] <= 0.2 and f["records"] >= 200
    promote = gates and (f["match_pct"] >= 99.5 or f["gini_current"] - f["gini_candidate"] >= 0.01)
    assert o.proposes is promote and f["shadow_report"]["records"] == f["records"]

    assert log.verify(con, dc.head).ok
    # the same inputs again: nothing new
    again = [p.state for n, pb in dc.playbooks.items() for p in nodes.evaluate_node(dc, pb, green).proposals]
    assert again and set(again) == {"duplicate"}


def test_an_open_sev2_on_the_inputs_blocks_every_node(dc):
    open_sev2(dc.con, "clean/opportunity")     # every node reads something built from opportunities or leads
    open_sev2(dc.con, "clean/lead")
    for pb in dc.playbooks.values():
        r = nodes.evaluate_node(dc, pb, green)
        assert not r.prechecks_passed and not r.proposals, pb.node
        assert "open SEV1/SEV2 incident" in r.note
    assert log.entries(dc.con) == []


def test_a_sev2_declared_after_the_proposal_blocks_approve_and_apply(dc):
    """Issue 14's report: after the demo, a SEV2 on metrics/cac_per_sqo (an input of channel.invest), then approvals
    by FP&A and Analytics and the apply all went through. Now each step is refused and logged."""
    from gtm_pipeline.decisions import flags
    from gtm_pipeline.ops import incidents as incidents

    r = nodes.evaluate_node(dc, dc.playbooks["channel.invest"], green)
    [did] = r.new_proposals
    iid = incidents.declare(dc.con, severity="SEV2", title="CAC per SQO looks doubled", by="jane",
                            asset_key="metrics/cac_per_sqo")
    with pytest.raises(GateRefused, match=f"refused: open SEV2 incident {iid} \\(metrics/cac_per_sqo: CAC per SQO "
                                          f"looks doubled\\) blocks channel.invest"):
        lifecycle.approve(dc, did, role="FP&A", person="paul@example.com")
    incidents.resolve(dc.con, iid, by="jane", note="export fixed")
    lifecycle.approve(dc, did, role="FP&A", person="paul@example.com")
    iid = incidents.declare(dc.con, severity="SEV2", title="attribution double-counts", by="jane",
                            asset_key="metrics/cac_per_sqo")
    with pytest.raises(GateRefused, match=f"incident {iid}"):
        lifecycle.approve(dc, did, role="Analytics", person="ana@example.com")
    incidents.resolve(dc.con, iid, by="jane", note="fixed")
    lifecycle.approve(dc, did, role="Analytics", person="ana@example.com")
    iid = incidents.declare(dc.con, severity="SEV2", title="cost feed late", by="jane", entity="opportunity")
    with pytest.raises(GateRefused, match=f"incident {iid} \\(opportunity: cost feed late\\)"):
        lifecycle.apply(dc, did, person="devi@example.com")
    assert flags.current(dc.con, "budget_split") is None
    events = [e.event for e in lifecycle.get(dc, did).entries]
    assert events == ["proposed", "refused", "approval", "refused", "approval", "refused"]
    assert log.verify(dc.con, dc.head).ok


def test_a_node_precheck_is_evaluated_again_at_approve(dc):
    """Attribution validity falling below 0.995 after the proposal: the inputs changed (superseded), and the logged
    refusal also lists the node's own pre-check that no longer holds."""
    r = nodes.evaluate_node(dc, dc.playbooks["channel.invest"], green)
    [did] = r.new_proposals
    dc.con.execute("UPDATE metrics.attribution_validity SET validity = 0.99 WHERE month = 'all'")
    with pytest.raises(GateRefused, match=f"{did} is superseded -- its inputs changed since the proposal "
                                          f"\\(attribution_validity\\)"):
        lifecycle.approve(dc, did, role="FP&A", person="paul@example.com")
    failed = lifecycle.get(dc, did).last.details_dict["failed"]
    assert [f["gate"] for f in failed] == ["inputs_unchanged", "attribution_validity"]
    assert failed[1]["value"] == "attribution validity 0.9900"


# ---- issue 14 §4: every flag has a reader whose output changes on apply and is restored on reverse -----------------

def _people(dc, d) -> tuple[str, list[tuple[str, str]]]:
    """(the owner's person, [(approver role, person)]) from the roster."""
    owner = dc.roster.people(d.proposal.owner)[0]
    return owner, [(role, dc.roster.people(role)[0]) for role in d.proposal.approvers]


def _loosen(dc, node: str, **thresholds) -> None:
    """The generated data holds every segment on some node (too few closes to trust E, no segment 5 pp apart for
    two months): open the thresholds so the node proposes and the reader has something to follow."""
    pb = dc.playbooks[node]
    dc.playbooks[node] = type(pb)(**{**pb.__dict__, "thresholds": {**pb.thresholds, **thresholds}})


def _apply_new(dc, node: str, at: str, monkeypatch) -> lifecycle.Decision:
    """Propose (the node's first new proposal), approve by every approver and apply, on the frozen clock at ``at``."""
    monkeypatch.setenv("GTM_PIPELINE_NOW", at)
    r = nodes.evaluate_node(dc, dc.playbooks[node], green)
    assert r.prechecks_passed, r.note
    assert r.new_proposals, [o.summary for o in r.outcomes]
    did = r.new_proposals[0]
    d = lifecycle.get(dc, did)
    owner, approvers = _people(dc, d)
    for role, person in approvers:
        lifecycle.approve(dc, did, role=role, person=person)
    return lifecycle.apply(dc, did, person=owner)


def _reverse(dc, d: lifecycle.Decision, at: str, monkeypatch) -> lifecycle.Decision:
    monkeypatch.setenv("GTM_PIPELINE_NOW", at)
    owner, _ = _people(dc, d)
    out = lifecycle.reverse(dc, d.decision_id, person=owner, reason="test: restore")
    det = out.last.details_dict
    # Measured on the frozen clock: the reader's output is restored by the same transaction that writes the flag,
    # so the reversal completes at the instant it was asked for, inside the playbook's limit.
    assert det["within_limit"] and det["duration_seconds"] == 0.0, det
    return out


def _frozen_now(dc) -> str:
    from gtm_pipeline.clock import utcnow

    return utcnow().replace(microsecond=0).isoformat()


def test_the_price_card_feeds_the_price_book_the_bookings_outlook_and_the_monitor(dc, monkeypatch, tmp_path):
    from gtm_pipeline import keys
    from gtm_pipeline.decisions import monitoring

    t0 = _frozen_now(dc)
    book = lambda: {r["segment"]: r for r in q(dc.con, f"SELECT * FROM {keys.PRICE_BOOK_VIEW}")}  # noqa: E731
    outlook = lambda: {(r["segment"], r["horizon"]): r["forecast_at_card"]  # noqa: E731
                       for r in q(dc.con, f"SELECT * FROM {keys.BOOKINGS_OUTLOOK_VIEW}")}
    before_book, before_outlook = book(), outlook()
    assert {r["list_price_multiplier"] for r in before_book.values()} == {1.0}
    _loosen(dc, "pricing.change", elasticity_se_max=None, min_closed=0)
    d = _apply_new(dc, "pricing.change", t0, monkeypatch)
    seg, mult = d.proposal.subject, d.action["new_value"]["list_price_multiplier"]
    after = book()
    assert after[seg]["card"] == d.action["new_value"]["card"] and after[seg]["list_price_multiplier"] == mult
    assert after[seg]["list_price_per_seat"] == pytest.approx(before_book[seg]["base_list_price"] * mult)
    # the held discount ladder: net price and CM per seat rise by the list-price change net of the average discount
    lift = before_book[seg]["base_list_price"] * (mult - 1) * (1 - before_book[seg]["avg_discount"])
    assert after[seg]["card_cm_per_seat"] == pytest.approx(before_book[seg]["card_cm_per_seat"] + lift)
    assert {s: r for s, r in after.items() if s != seg} == {s: r for s, r in before_book.items() if s != seg}
    changed = {k for k, v in outlook().items() if v != pytest.approx(before_outlook[k])}
    assert changed and {s for s, _ in changed} == {seg}
    # what a user sees
    from click.testing import CliRunner

    from gtm_pipeline.cli import main
    monkeypatch.setenv("GTM_PIPELINE_DUCKDB", str(tmp_path / "gtm.duckdb"))
    shown = CliRunner().invoke(main, ["decisions", "in-force", "--view", "price_book"])
    assert shown.exit_code == 0, shown.output
    [line] = [ln for ln in shown.output.splitlines() if ln.split()[:1] == [seg]]
    assert line.split()[1:4] == [d.action["new_value"]["card"], "2", str(mult)], line
    # the monitor compares what deals pay with the card in force
    [out] = monitoring.evaluate_all(dc)
    [lp] = [r for r in out.results if r.metric == "list_price"]
    assert lp.baseline == pytest.approx(after[seg]["list_price_per_seat"])
    _reverse(dc, lifecycle.get(dc, d.decision_id), t0, monkeypatch)
    restored = book()
    assert restored[seg]["list_price_multiplier"] == 1.0
    assert restored[seg]["list_price_per_seat"] == pytest.approx(before_book[seg]["list_price_per_seat"])
    assert outlook() == pytest.approx(before_outlook)


def test_the_budget_split_feeds_the_channel_plan_and_the_expected_spend(dc, monkeypatch):
    from gtm_pipeline import keys

    t0 = _frozen_now(dc)
    plan = lambda: {r["channel"]: r for r in q(dc.con, f"SELECT * FROM {keys.CHANNEL_PLAN_VIEW}")}  # noqa: E731
    before = plan()
    assert {r["status"] for r in before.values()} == {"baseline (no plan applied)"}
    d = _apply_new(dc, "channel.invest", t0, monkeypatch)
    a = d.action["new_value"]
    after = plan()
    for ch, r in after.items():
        assert r["budget_over_window"] == pytest.approx(a["split"][ch]), ch
        want = ("unallocated" if ch == "unallocated" else "paused" if ch in a["paused"]
                else "shifted" if ch in a["shifted"] else "held" if ch in a["held"] else "unchanged")
        assert r["status"] == want, ch
        assert r["expected_spend_per_week"] == pytest.approx(a["split"][ch] / r["window_days"] * 7)
    for ch in a["shifted"]:
        assert after[ch]["expected_spend_per_week"] == pytest.approx(before[ch]["expected_spend_per_week"] * 1.2,
                                                                     rel=1e-3)
    for ch in a["paused"]:
        assert after[ch]["budget_over_window"] == 0.0
    # the total is conserved; nothing moves to a paused or held channel
    assert sum(r["budget_over_window"] for r in after.values()) == pytest.approx(
        sum(r["budget_over_window"] for r in before.values()), abs=0.05)
    for ch in a["held"]:
        assert after[ch]["budget_over_window"] == pytest.approx(before[ch]["budget_over_window"], abs=0.01)
    # "revert budget split next cycle": the weekly cycle ahead plans the old split again
    _reverse(dc, lifecycle.get(dc, d.decision_id), t0, monkeypatch)
    restored = plan()
    assert set(restored) == set(before)
    for ch, r in restored.items():
        assert r["budget_over_window"] == pytest.approx(before[ch]["budget_over_window"], abs=0.01), ch
        assert r["status"] == "unchanged"


def test_the_audience_filter_feeds_the_lead_icp_segment_and_routing_eligibility(dc, monkeypatch):
    from gtm_pipeline import keys
    from gtm_pipeline.routing import engine as routing

    t0 = _frozen_now(dc)
    days = [str(r["d"]) for r in q(dc.con, "SELECT DISTINCT _partition AS d FROM clean.lead ORDER BY 1")]
    seg = lambda: {r["lead_id"]: r for r in q(dc.con, f"SELECT * FROM {keys.LEAD_ICP_VIEW}")}  # noqa: E731
    before, routable = seg(), {r.record_id for r in routing.unassigned_leads(dc.con, days)}
    assert {r["icp_segment"] for r in before.values()} == {"core"} and routable
    _loosen(dc, "icp.update", win_rate_diff_pp=2.0, months=1, payback_improvement_months=0.0)
    d = _apply_new(dc, "icp.update", t0, monkeypatch)
    f = d.action["new_value"]
    after = seg()
    for lid, r in after.items():
        items = {f"industry={r['industry']}", f"size_band={r['size_band']}"}
        disq = f["dq_gates"] and (r["status"] == "disqualified" or r["dq_reason"] is not None)
        want = ("disqualified" if disq else "excluded" if items & set(f["exclude"])
                else "priority" if items & set(f["include"]) else "core")
        assert r["icp_segment"] == want, lid
        assert r["routing_eligible"] is (want not in ("disqualified", "excluded"))
    assert f["exclude"] and f["include"], f      # the loosened thresholds both add and remove a segment
    assert {r["icp_segment"] for r in after.values()} >= {"priority", "excluded", "disqualified", "core"}
    # routing skips exactly the leads the filter makes ineligible
    now_routable = {r.record_id for r in routing.unassigned_leads(dc.con, days)}
    assert now_routable == {i for i in routable if after[i]["routing_eligible"]} and now_routable < routable
    _reverse(dc, lifecycle.get(dc, d.decision_id), t0, monkeypatch)
    assert {r["icp_segment"] for r in seg().values()} == {"core"}
    assert {r.record_id for r in routing.unassigned_leads(dc.con, days)} == routable
