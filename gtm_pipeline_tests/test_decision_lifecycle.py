"""Decision nodes on a temporary DuckDB: pre-checks block (and fail closed), proposals are never duplicated,
approvals follow the roster, apply flips a versioned flag, monitoring proposes or performs the reversal, and the
reversal restores the previous version within the playbook's limit -- all in a verifying hash chain."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import duckdb
import pytest
from conftest import REPO
from decision_fixtures import CHANGE_DAY, PUBLISHED_AT, green, open_sev2, pricing_metrics

from gtm_pipeline.decisions import flags, lifecycle, log, monitoring, nodes, open_context
from gtm_pipeline.errors import GtmPipelineError


class Clock:
    """A clock that moves on by ``step`` at every reading (no wall-clock in the assertions)."""

    def __init__(self, start=datetime(2026, 11, 2, 9, 0), step=timedelta(seconds=1)):
        self.t, self.step = start, step

    def __call__(self):
        self.t += self.step
        return self.t


@pytest.fixture
def dc(env_settings, tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    pricing_metrics(con, rate_before=0.30, rate_after=0.20, published_at=PUBLISHED_AT)
    yield open_context(con, env_settings, clock=Clock(), health_fn=green)
    con.close()


def _propose_smb(dc) -> str:
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green)
    assert r.prechecks_passed, r.prechecks
    [p] = r.proposals
    assert p.state == "new"
    return p.decision_id


def test_pricing_node_proposes_what_the_thresholds_imply(dc):
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green)
    assert {o.subject: o.proposes for o in r.outcomes} == {"enterprise": False, "smb": True}
    d = lifecycle.get(dc, r.new_proposals[0])
    p = d.proposal
    assert p.chosen_action == "+7% list price for smb; hold discount ladders"
    assert (p.owner, p.approvers, p.status) == ("CRO", ["Finance", "Sales Ops"], "proposed")
    assert p.inputs_hash.startswith("sha256:") and "price_elasticity 1.0.0@2026-11-02T06:00:00" in p.inputs_version
    assert p.thresholds_dict["elasticity_min"] == -1.0 and p.review_date is not None
    assert "within the 1-hour limit" in p.reversal_plan and "Demand dip" in p.risk_notes
    assert p.reversal_outcome is None
    # the exact input rows are kept and hash to inputs_hash
    from gtm_pipeline.decisions.hashing import rows_hash
    rows = json.loads(dc.con.execute("SELECT rows_json FROM decisions.inputs WHERE decision_id = ?",
                                     [d.decision_id]).fetchone()[0])
    assert rows_hash(rows) == p.inputs_hash
    assert (dc.memo_dir / f"{d.decision_id}.md").exists()


def test_same_inputs_never_duplicate_and_new_inputs_supersede(dc):
    first = _propose_smb(dc)
    again = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green)
    assert [(p.decision_id, p.state) for p in again.proposals] == [(first, "duplicate")]
    dc.con.execute("UPDATE metrics.price_elasticity SET elasticity = -0.5 WHERE segment = 'smb'")
    newer = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green)
    [p] = newer.proposals
    assert p.state == "new" and p.superseded == [first]
    assert lifecycle.get(dc, first).status == "superseded"
    assert log.verify(dc.con, dc.head).ok


@pytest.mark.parametrize("health,incident,reason", [
    (green, None, None),
    (None, None, "SLO health unknown: no SLO health source"),
    (lambda a: (_ for _ in ()).throw(RuntimeError("history locked")), None, "SLO health unknown: RuntimeError"),
    (lambda a: type("H", (), {"green": False, "reasons": ["metric_age: stale"]})(), None, "metric_age: stale"),
    (green, "metrics/cm_per_seat", "1 open SEV1/SEV2 incident"),       # an input of the node
    (green, "clean/opportunity", "1 open SEV1/SEV2 incident"),          # upstream of price_elasticity
    (green, "ingest/raw_crm", "1 open SEV1/SEV2 incident"),             # not a metric: always counts
    (green, "metrics/payback", None),                                   # a metric the node does not depend on
])
def test_prechecks_block_and_fail_closed(dc, health, incident, reason):
    if incident:
        open_sev2(dc.con, incident)
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], health)
    if reason is None:
        assert r.prechecks_passed and r.new_proposals
    else:
        assert not r.prechecks_passed and not r.proposals
        assert reason in r.note
        assert log.entries(dc.con) == []


def test_incident_scope_any_blocks_on_every_incident(dc):
    open_sev2(dc.con, "metrics/payback")
    pb = dc.playbooks["pricing.change"]
    dc.playbooks["pricing.change"] = type(pb)(**{**pb.__dict__, "incident_scope": "any"})
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green)
    assert not r.prechecks_passed and "test incident" in r.note


def test_approvals_follow_the_roster(dc):
    did = _propose_smb(dc)
    with pytest.raises(GtmPipelineError, match="'CRO' is not an approver of pricing.change -- the owner cannot "
                                               "approve their own decision; approvers: Finance, Sales Ops"):
        lifecycle.approve(dc, did, role="CRO", person="dana@example.com")
    with pytest.raises(GtmPipelineError, match="'dana@example.com' may not act as 'Finance'"):
        lifecycle.approve(dc, did, role="Finance", person="dana@example.com")
    with pytest.raises(GtmPipelineError, match="still missing: Finance, Sales Ops"):
        lifecycle.apply(dc, did, person="dana@example.com")
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    with pytest.raises(GtmPipelineError, match="Finance already approved"):
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    with pytest.raises(GtmPipelineError, match="still missing: Sales Ops"):
        lifecycle.apply(dc, did, person="dana@example.com")
    d = lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    assert d.status == "approved" and d.approvals == {"Finance": "farah@example.com", "Sales Ops": "sam@example.com"}
    with pytest.raises(GtmPipelineError, match="the owner \\(CRO\\) applies a decision"):
        lifecycle.apply(dc, did, person="sam@example.com")


def test_owner_cannot_approve_on_someone_elses_behalf(dc):
    # The CRO's person also listed for Finance: still refused, because she owns the decision.
    dc.roster.roles["Finance"] = ("farah@example.com", "dana@example.com")
    did = _propose_smb(dc)
    with pytest.raises(GtmPipelineError, match="holds the owner role 'CRO' and cannot approve on 'Finance'"):
        lifecycle.approve(dc, did, role="Finance", person="dana@example.com")


def _approve_all(dc, did):
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")


def test_apply_monitor_breach_reverse(dc):
    did = _propose_smb(dc)
    _approve_all(dc, did)
    d = lifecycle.apply(dc, did, person="dana@example.com", effective=CHANGE_DAY)
    cur = flags.current(dc.con, "price_card.smb")
    assert (cur.version, cur.value["list_price_multiplier"], cur.value["discount_ladders"]) == (2, 1.07, "hold")
    assert flags.version(dc.con, "price_card.smb", 1).value["list_price_multiplier"] == 1.0
    assert d.status == "applied"
    # monitoring: smb booking rate fell from 0.30 to 0.20 (-33 %, outside the ±5 % band) -> reversal proposed
    [out] = monitoring.evaluate_all(dc)
    assert out.event == "reversal_proposed"
    assert out.results[0].breached and "-33.3%" in out.results[0].text
    assert lifecycle.get(dc, did).status == "reversal_proposed"
    assert monitoring.evaluate_all(dc)[0].event is None          # same figures: nothing new logged
    with pytest.raises(GtmPipelineError, match="neither the owner"):
        lifecycle.reverse(dc, did, person="rex@example.com", reason="x")
    d = lifecycle.reverse(dc, did, person="farah@example.com", reason="booking rate out of band")
    assert d.status == "reversed"
    det = d.last.details_dict
    # the clock moved 1 s per reading between the breach entry and the end of the reversal
    assert det["within_limit"] and 0 < det["duration_seconds"] < 60 and det["limit_seconds"] == 3600
    assert "restored price_card.smb v1 (as v3)" in d.last.reversal_outcome
    cur = flags.current(dc.con, "price_card.smb")
    assert (cur.version, cur.value["list_price_multiplier"], cur.restores_version) == (3, 1.0, 1)
    events = [e.event for e in d.entries]
    # the refused reverse by someone off the roster is logged too
    assert events == ["proposed", "approval", "approval", "applied", "monitored", "reversal_proposed", "refused",
                      "reversed"]
    assert log.verify(dc.con, dc.head).ok
    memo = (dc.memo_dir / f"{did}.md").read_text()
    for section in ("# Decision:", "## Context", "## Options considered", "## Metrics & contracts referenced",
                    "## Decision & thresholds", "## Risk & reversal", "## Owners & approvals",
                    "## Monitoring plan (dashboards)"):
        assert section in memo
    assert "within the 1-hour limit" in memo and "reversal_proposed" in memo


def test_slow_reversal_is_recorded_outside_the_limit(env_settings, tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    pricing_metrics(con, rate_after=0.20, published_at=PUBLISHED_AT)
    dc = open_context(con, env_settings, clock=Clock(step=timedelta(minutes=45)), health_fn=green)
    did = _propose_smb(dc)
    _approve_all(dc, did)
    lifecycle.apply(dc, did, person="dana@example.com", effective=CHANGE_DAY)
    monitoring.evaluate_all(dc)
    d = lifecycle.reverse(dc, did, person="dana@example.com", reason="late")
    assert not d.last.details_dict["within_limit"] and "OUTSIDE the 1-hour limit" in d.last.reversal_outcome


def test_quiet_window_confirms(dc):
    dc.con.execute("UPDATE metrics.booking_rate SET won = 30")   # 0.30 before and after: inside the band
    did = _propose_smb(dc)
    _approve_all(dc, did)
    lifecycle.apply(dc, did, person="dana@example.com", effective=CHANGE_DAY)
    [out] = monitoring.evaluate_all(dc)
    assert out.complete and out.event == "confirmed"
    assert lifecycle.get(dc, did).status == "confirmed"


def test_a_flag_changed_since_the_proposal_supersedes_it(dc):
    did = _propose_smb(dc)
    _approve_all(dc, did)
    flags.set_flag(dc.con, "price_card.smb", {"list_price_multiplier": 1.2}, set_by="someone", reason="manual")
    # the flag's value is one of the hashed inputs: the proposal was made against another price card
    with pytest.raises(GtmPipelineError, match=f"refused: {did} is superseded -- its inputs changed since the "
                                               f"proposal \\(flag price_card.smb\\)"):
        lifecycle.apply(dc, did, person="dana@example.com")
    assert lifecycle.get(dc, did).status == "superseded"


def test_reject_closes(dc):
    did = _propose_smb(dc)
    with pytest.raises(GtmPipelineError, match="give a reason"):
        lifecycle.reject(dc, did, role="Finance", person="farah@example.com", reason=" ")
    d = lifecycle.reject(dc, did, role="Finance", person="farah@example.com", reason="Q4 price freeze")
    assert d.status == "rejected"
    with pytest.raises(GtmPipelineError, match="is rejected; only a proposed decision can be approved"):
        lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    # the same inputs do not bring it back
    assert nodes.evaluate_node(dc, dc.playbooks["pricing.change"], green).proposals[0].state == "duplicate"


# ---- routing.policy on the routing engine ------------------------------------------------------------------------

@pytest.fixture
def routing_dc(env_settings, warehouse_copy, tmp_path, monkeypatch):
    """The small generated warehouse, its routing_health published, and a contracts folder whose candidate rule set
    is v1 under another name (so the shadow match is 100 %)."""
    from gtm_pipeline.config import load_settings
    from gtm_pipeline.metrics import run_layer

    root = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", root)
    (root / "routing" / "rules_v2.yaml").unlink()
    text = (root / "routing" / "rules_v1.yaml").read_text()
    (root / "routing" / "rules_v1b.yaml").write_text(
        text.replace("rule_set: v1", "rule_set: v1b").replace("status: current", "status: candidate")
        .replace("flag: FF_ROUTING_V1\n", ""))
    monkeypatch.setenv("GTM_PIPELINE_CONTRACTS_DIR", str(root))
    con = duckdb.connect(str(warehouse_copy))
    run_layer(con, root, only=["routing_health"])
    # The small warehouse's data is from August 2026: the clock starts an hour after its data time.
    from gtm_pipeline.datatime import published_data_time
    start = published_data_time(con, "metrics/routing_health").at + timedelta(hours=1)
    dc = open_context(con, load_settings(), clock=Clock(start=start), health_fn=green)
    yield dc
    con.close()


def test_routing_promotes_then_auto_reverses_on_breach(routing_dc):
    from gtm_pipeline.routing import engine as routing

    dc = routing_dc
    # The small warehouse routes to few owners, so both rule sets score a Gini above the 0.2 hard gate (the gate
    # itself is tested in test_decision_playbooks.py); here it is opened to drive the lifecycle.
    pb = dc.playbooks["routing.policy"]
    dc.playbooks["routing.policy"] = type(pb)(**{**pb.__dict__, "thresholds": {**pb.thresholds, "gini_max": 1.0}})
    r = nodes.evaluate_node(dc, dc.playbooks["routing.policy"], green)
    [o] = r.outcomes
    assert o.proposes and o.figures["match_pct"] == 100.0 and o.action["candidate"] == "v1b@1.0.0"
    did = r.new_proposals[0]
    with pytest.raises(GtmPipelineError, match="'SRE' is not|may not act as 'SRE'"):
        lifecycle.approve(dc, did, role="SRE", person="rex@example.com")
    lifecycle.approve(dc, did, role="CRM Admin", person="cara@example.com")
    lifecycle.approve(dc, did, role="SRE", person="sree@example.com")
    first_day = dc.con.execute("SELECT min(day) FROM metrics.routing_health WHERE day <> 'all'").fetchone()[0]
    lifecycle.apply(dc, did, person="rex@example.com", effective=datetime.fromisoformat(first_day).date())
    assert flags.current(dc.con, "FF_ROUTING_V1").value == {"enabled": False, "label": "v1b@1.0.0",
                                                            "rule_set": "v1b"}
    assert flags.routing_rule_set_in_force(dc.con, dc.contracts_dir).name == "v1b"
    # a lead nobody could place waits in the DLQ
    rec = routing.records_from_clean(dc.con, "lead", [first_day])[0]
    routing.dead_letter(dc.con, [routing.Unrouted(rec, "test: all SDRs at capacity")], "v1b@1.0.0")
    # the data that arrives shows leads left unassigned: unassigned rate > 0.5 % -> the flag flips back at once
    dc.con.execute("UPDATE metrics.routing_health SET unassigned = leads WHERE day <> 'all'")
    [out] = monitoring.evaluate_all(dc)
    assert out.event == "reversed"
    d = lifecycle.get(dc, did)
    assert d.status == "reversed" and d.last.actor == lifecycle.SYSTEM_ACTOR
    det = d.last.details_dict
    assert det["within_limit"] and det["limit_seconds"] == 300
    assert det["dlq_replay"]["replayed"] == [routing.dlq_id("lead", rec.record_id)]
    assert flags.current(dc.con, "FF_ROUTING_V1").value["enabled"] is True
    assert flags.routing_rule_set_in_force(dc.con, dc.contracts_dir).name == "v1"
    assert dc.con.execute("SELECT status FROM ops.routing_dlq").fetchone()[0] == "replayed"
    assert [e.event for e in d.entries][-2:] == ["monitored", "reversed"]
    assert log.verify(dc.con, dc.head).ok


def test_a_node_whose_inputs_were_never_published_proposes_nothing_and_says_why(env_settings, tmp_path):
    con = duckdb.connect(str(tmp_path / "empty.duckdb"))
    try:
        dc = open_context(con, env_settings, clock=Clock())
        for name, pb in dc.playbooks.items():
            r = nodes.evaluate_node(dc, pb, green)
            assert not r.proposals and not r.prechecks_passed, name
            failed = [p for p in r.prechecks if not p.passed]
            assert failed[-1].name == "inputs_published" and "not published yet" in failed[-1].detail, name
    finally:
        con.close()
