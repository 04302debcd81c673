"""Drills for issue 14 §1 and the roster half of §5: every gate holds at approve and at apply, not only at propose.

Each test lets a proposal through, then breaks one promise between propose and approve (or approve and apply) -- an
incident opened by the pipeline or declared by hand, an input gone stale on the frozen clock, SLO health turned red,
inputs changed under the proposal, a person the roster does not allow -- and checks that the step is refused with
the gate, its value, the limit and the fix, and that the refusal is itself a log entry.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace

import duckdb
import pytest
from click.testing import CliRunner
from decision_fixtures import PRICING_TABLES, PUBLISHED_AT, green, open_sev2, pricing_metrics, publish

from gtm_pipeline.cli import main
from gtm_pipeline.decisions import flags, lifecycle, log, nodes, open_context
from gtm_pipeline.decisions.gates import GateRefused
from gtm_pipeline.ops import incidents as incidents


class Clock:
    def __init__(self, start=datetime(2026, 11, 2, 9, 0)):
        self.t = start

    def __call__(self):
        self.t += timedelta(seconds=1)
        return self.t


class Health:
    """An SLO health source a test can turn red (or broken) between steps."""

    def __init__(self):
        self.reasons: list[str] = []
        self.error: Exception | None = None

    def __call__(self, assets):
        if self.error is not None:
            raise self.error
        return SimpleNamespace(green=not self.reasons, reasons=self.reasons)


@pytest.fixture
def health():
    return Health()


@pytest.fixture
def dc(env_settings, tmp_path, health):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    pricing_metrics(con, published_at=PUBLISHED_AT)
    yield open_context(con, env_settings, clock=Clock(), health_fn=health)
    con.close()


def _propose(dc) -> str:
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], dc.health_fn)
    assert r.prechecks_passed, r.note
    return r.new_proposals[0]


def _refused(dc, did) -> log.Entry:
    last = lifecycle.get(dc, did).last
    assert last.event == log.REFUSED
    return last


# ---- incidents ------------------------------------------------------------------------------------------------------

def _pipeline_incident(dc):
    return open_sev2(dc.con, "metrics/cm_per_seat")                    # an input of pricing.change


def _declared_on_metric(dc):
    return incidents.declare(dc.con, severity="SEV2", title="CM per seat looks doubled", by="jane",
                             asset_key="metrics/cm_per_seat")


def _declared_on_entity(dc):
    return incidents.declare(dc.con, severity="SEV2", title="amount out of range", by="jane", entity="opportunity")


def _declared_and_acknowledged(dc):
    iid = _declared_on_entity(dc)
    incidents.acknowledge(dc.con, iid, by="jane")                      # someone is on it: still open
    return iid


def _declared_sev1_everywhere(dc):
    return incidents.declare(dc.con, severity="SEV1", title="warehouse restored from backup", by="sre")


OPENERS = [_pipeline_incident, _declared_on_metric, _declared_on_entity, _declared_and_acknowledged,
           _declared_sev1_everywhere]


@pytest.mark.parametrize("open_incident", OPENERS, ids=lambda f: f.__name__.strip("_"))
def test_an_incident_opened_after_the_proposal_blocks_approve(dc, open_incident):
    did = _propose(dc)
    iid = open_incident(dc)
    with pytest.raises(GateRefused) as e:
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    msg = str(e.value)
    assert msg.startswith("refused: open SEV") and f"incident {iid} (" in msg and "blocks pricing.change" in msg
    assert f"gtm-pipeline incidents resolve {iid}" in msg
    assert e.value.gate.name == "no_open_incident"
    entry = _refused(dc, did)
    det = entry.details_dict
    assert (det["step"], det["gate"], det["message"]) == ("approve", "no_open_incident", msg)
    assert iid in det["value"] and det["limit"].startswith("no open SEV1/SEV2 incident") and det["fix"]
    assert (entry.status, entry.actor, det["role"]) == ("proposed", "farah@example.com", "Finance")
    assert lifecycle.get(dc, did).approvals == {}
    # resolving it clears the gate
    incidents.resolve(dc.con, iid, by="jane", note="false alarm")
    assert lifecycle.approve(dc, did, role="Finance", person="farah@example.com").status == "pending_approval"
    assert log.verify(dc.con, dc.head).ok


def test_an_incident_opened_after_the_approvals_blocks_apply(dc):
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    iid = _declared_on_metric(dc)
    with pytest.raises(GateRefused, match=f"refused: open SEV2 incident {iid} \\(metrics/cm_per_seat: CM per seat "
                                          f"looks doubled\\) blocks pricing.change"):
        lifecycle.apply(dc, did, person="dana@example.com")
    assert flags.current(dc.con, "price_card.smb") is None                 # nothing flipped
    assert _refused(dc, did).details_dict["step"] == "apply" and lifecycle.get(dc, did).status == "approved"
    incidents.resolve(dc.con, iid, by="jane", note="fixed upstream")
    assert lifecycle.apply(dc, did, person="dana@example.com").status == "applied"


def test_an_incident_elsewhere_does_not_block(dc):
    did = _propose(dc)
    open_sev2(dc.con, "metrics/payback")                                   # a metric pricing does not read
    incidents.declare(dc.con, severity="SEV3", title="a ticket, not a page", by="jane", entity="opportunity")
    assert lifecycle.approve(dc, did, role="Finance", person="farah@example.com").status == "pending_approval"


# ---- data time on the frozen clock ----------------------------------------------------------------------------------

@pytest.fixture
def frozen_dc(env_settings, tmp_path, health, monkeypatch):
    """The product's own clock (GTM_PIPELINE_NOW), not a test clock: what the CLI and the assets use."""
    monkeypatch.setenv("GTM_PIPELINE_NOW", "2026-11-02T09:00:00Z")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    pricing_metrics(con)
    yield open_context(con, env_settings, health_fn=health)
    con.close()


@pytest.mark.parametrize("after,blocked", [
    (timedelta(hours=24) - timedelta(seconds=1), False),                   # just inside metric_age's 24h
    (timedelta(hours=24), True),                                           # the threshold itself is stale
    (timedelta(days=3), True),
])
def test_an_input_gone_stale_blocks_approve(frozen_dc, monkeypatch, after, blocked):
    dc = frozen_dc
    did = _propose(dc)
    monkeypatch.setenv("GTM_PIPELINE_NOW", (PUBLISHED_AT + after).isoformat() + "Z")
    if not blocked:
        assert lifecycle.approve(dc, did, role="Finance", person="farah@example.com").status == "pending_approval"
        return
    with pytest.raises(GateRefused) as e:
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    msg = str(e.value)
    assert msg.startswith("refused: data time of metrics/booking_rate is 2026-11-02 06:00 (") and \
        "and 4 more input(s) blocks pricing.change (input_data_time: needs data younger than 1d (SLO " \
        "metric_age))" in msg and "gtm-pipeline metrics refresh booking_rate" in msg, msg
    assert _refused(dc, did).details_dict["gate"] == "input_data_time"


def test_a_stale_input_blocks_apply_and_a_fresh_publication_clears_it(frozen_dc, monkeypatch):
    dc = frozen_dc
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    monkeypatch.setenv("GTM_PIPELINE_NOW", "2026-11-04T09:00:00Z")
    with pytest.raises(GateRefused, match="input_data_time"):
        lifecycle.apply(dc, did, person="dana@example.com")
    # the same figures published again with a newer data time: same inputs hash, the gate holds again
    publish(dc.con, PRICING_TABLES, datetime(2026, 11, 4, 8, 0))
    assert lifecycle.apply(dc, did, person="dana@example.com").status == "applied"


def test_an_input_never_published_fails_closed(dc):
    did = _propose(dc)
    dc.con.execute("DELETE FROM ops.publications WHERE asset_key = 'metrics/gm_pct'")
    with pytest.raises(GateRefused, match="metrics/gm_pct was never published"):
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")


# ---- SLO health -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["approve", "apply"])
@pytest.mark.parametrize("breakage,expected", [
    ("red", "refused: SLO health red (metric_age: metrics/cm_per_seat is stale"),
    ("error", "refused: SLO health unknown (RuntimeError: history locked)"),
    ("none", "refused: SLO health unknown (no SLO health source)"),
])
def test_slo_health_not_green_blocks(dc, health, step, breakage, expected):
    did = _propose(dc)
    if step == "apply":
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
        lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    if breakage == "red":
        health.reasons = ["metric_age: metrics/cm_per_seat is stale: its data is 2d old (threshold 1d)"]
    elif breakage == "error":
        health.error = RuntimeError("history locked")
    else:
        dc.health_fn = None
    with pytest.raises(GateRefused) as e:
        if step == "approve":
            lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
        else:
            lifecycle.apply(dc, did, person="dana@example.com")
    assert str(e.value).startswith(expected) and "blocks pricing.change (slo_health: needs SLO health green" in \
        str(e.value) and "gtm-pipeline slo report" in str(e.value)
    assert _refused(dc, did).details_dict["gate"] == "slo_health"


def test_every_failed_gate_is_logged_the_first_is_named(dc, health):
    did = _propose(dc)
    iid = _declared_on_metric(dc)
    health.reasons = ["metric_age: stale"]
    with pytest.raises(GateRefused) as e:
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    assert iid in str(e.value) and "(also slo_health: SLO health red (metric_age: stale))" in str(e.value)
    assert [f["gate"] for f in _refused(dc, did).details_dict["failed"]] == ["no_open_incident", "slo_health"]


# ---- inputs changed: superseded -------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", ["approve", "apply"])
def test_changed_inputs_supersede_the_proposal(dc, step):
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    if step == "apply":
        lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    dc.con.execute("UPDATE metrics.cm_per_seat SET cm_per_seat = 31.0 WHERE segment = 'smb'")
    with pytest.raises(GateRefused) as e:
        if step == "approve":
            lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
        else:
            lifecycle.apply(dc, did, person="dana@example.com")
    assert str(e.value) == (f"refused: {did} is superseded -- its inputs changed since the proposal (cm_per_seat); "
                            f"it can be neither approved nor applied; re-evaluate the node for a fresh proposal: "
                            f"gtm-pipeline decisions evaluate --node pricing.change")
    d = lifecycle.get(dc, did)
    superseded, refused = d.entries[-2:]
    assert (superseded.event, superseded.status, refused.event, refused.status) == \
        ("superseded", "superseded", "refused", "superseded")
    [change] = superseded.details_dict["changed"]
    assert change["input"] == "cm_per_seat" and change["was"]["cm_per_seat"] == 30.0 and \
        change["now"]["cm_per_seat"] == 31.0
    assert superseded.details_dict["inputs_hash_now"] != d.proposal.inputs_hash
    # and it stays that way: neither approvable nor applicable, even once the figure is back
    dc.con.execute("UPDATE metrics.cm_per_seat SET cm_per_seat = 30.0 WHERE segment = 'smb'")
    with pytest.raises(GateRefused, match=f"{did} is superseded; only a proposed decision can be approved"):
        lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    with pytest.raises(GateRefused, match=f"{did} is superseded; it applies only after every approver approved"):
        lifecycle.apply(dc, did, person="dana@example.com")
    assert flags.current(dc.con, "price_card.smb") is None
    assert log.verify(dc.con, dc.head).ok


def test_an_edited_playbook_supersedes_the_proposal(dc):
    did = _propose(dc)
    pb = dc.playbooks["pricing.change"]
    dc.playbooks["pricing.change"] = replace(pb, thresholds={**pb.thresholds, "cm_per_seat_uplift_min": 2.0})
    with pytest.raises(GateRefused, match="inputs changed since the proposal \\(playbook contracts/decisions/"
                                          "pricing_change.yaml\\)"):
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")


# ---- the roster -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role,person,roster,gate,message", [
    ("Finance", "mallory@example.com", {}, "roster",
     "'mallory@example.com' may not act as 'Finance'; contracts/decisions/roster.yaml lists farah@example.com"),
    ("Finance", "sam@example.com", {}, "roster", "'sam@example.com' may not act as 'Finance'"),
    ("CRO", "dana@example.com", {}, "approver_role",
     "'CRO' is not an approver of pricing.change -- the owner cannot approve their own decision"),
    ("Finance", "dana@example.com", {"Finance": ("farah@example.com", "dana@example.com")}, "owner_cannot_approve",
     "'dana@example.com' holds the owner role 'CRO' and cannot approve on 'Finance''s behalf (the proposal's owner "
     "cannot approve it); ask farah@example.com"),
])
def test_the_roster_refuses_and_logs(dc, role, person, roster, gate, message):
    dc.roster.roles.update(roster)
    did = _propose(dc)
    with pytest.raises(GateRefused) as e:
        lifecycle.approve(dc, did, role=role, person=person)
    assert message in str(e.value) and str(e.value).startswith(f"refused: {did}: ")
    entry = _refused(dc, did)
    assert (entry.details_dict["gate"], entry.actor, entry.details_dict["role"]) == (gate, person, role)


def test_one_person_cannot_fill_two_roles(dc):
    dc.roster.roles["Sales Ops"] = ("sam@example.com", "farah@example.com")
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    with pytest.raises(GateRefused, match="'farah@example.com' already approved as 'Finance'; one person cannot fill "
                                          "two roles of one decision -- ask sam@example.com"):
        lifecycle.approve(dc, did, role="Sales Ops", person="farah@example.com")
    assert _refused(dc, did).details_dict["gate"] == "one_person_one_role"
    with pytest.raises(GateRefused, match="Finance already approved \\(by farah@example.com\\)"):
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")


def test_apply_refuses_an_approval_the_roster_no_longer_backs(dc):
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    dc.roster.roles["Sales Ops"] = ("sol@example.com",)                     # sam left the team
    with pytest.raises(GateRefused, match="the Sales Ops approval by 'sam@example.com' is no longer listed for it"):
        lifecycle.apply(dc, did, person="dana@example.com")
    assert _refused(dc, did).details_dict["gate"] == "approvals_valid"


def test_only_the_owner_applies(dc):
    did = _propose(dc)
    lifecycle.approve(dc, did, role="Finance", person="farah@example.com")
    lifecycle.approve(dc, did, role="Sales Ops", person="sam@example.com")
    with pytest.raises(GateRefused, match="the owner \\(CRO\\) applies a decision; 'sam@example.com' is not listed"):
        lifecycle.apply(dc, did, person="sam@example.com")
    assert _refused(dc, did).details_dict["gate"] == "owner_applies"


def test_an_approval_on_a_tampered_log_is_refused(dc):
    did = _propose(dc)
    dc.con.execute("UPDATE decisions.log SET chosen_action = '+1% list price for smb' WHERE entry_id = 1")
    with pytest.raises(GateRefused, match="refused: decisions.log does not verify \\(entry #1: edited"):
        lifecycle.approve(dc, did, role="Finance", person="farah@example.com")


# ---- the CLI --------------------------------------------------------------------------------------------------------

def _cli(*args):
    return CliRunner().invoke(main, ["decisions", *args])


@pytest.fixture
def cli_proposal(env_settings, monkeypatch):
    monkeypatch.setenv("GTM_PIPELINE_NOW", "2026-11-02T09:00:00Z")
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(env_settings.duckdb_path)) as con:
        pricing_metrics(con)
        dc = open_context(con, env_settings)
        did = _propose_with(dc, green)
    return did


def _propose_with(dc, health_fn) -> str:
    r = nodes.evaluate_node(dc, dc.playbooks["pricing.change"], health_fn)
    assert r.prechecks_passed, r.note
    return r.new_proposals[0]


def test_cli_refusal_exits_non_zero_with_gate_value_limit_and_fix(env_settings, cli_proposal, monkeypatch):
    from gtm_pipeline.cli import decision_context

    monkeypatch.setattr(decision_context, "health_fn", lambda settings: green)
    res = CliRunner().invoke(main, ["incidents", "open", "--severity", "SEV2", "--title", "amount out of range",
                                    "--entity", "opportunity"])
    assert res.exit_code == 0, res.output
    with duckdb.connect(str(env_settings.duckdb_path)) as con:
        [iid] = [i["incident_id"] for i in incidents.list_incidents(con)]
    res = _cli("approve", cli_proposal, "--as", "Finance", "--by", "farah@example.com")
    assert res.exit_code == 2
    assert (f"error: refused: open SEV2 incident {iid} (opportunity: amount out of range) blocks pricing.change "
            f"(no_open_incident: needs no open SEV1/SEV2 incident on what it reads); resolve it with gtm-pipeline "
            f"incidents resolve {iid} --by NAME --note TEXT") in res.output, res.output
    res = _cli("show", cli_proposal)
    assert "refused" in res.output and "farah@example.com" in res.output


def test_cli_gates_use_a_real_slo_health_source(cli_proposal):
    """No monkeypatch: the CLI judges SLO health on the Dagster instance, where nothing was ever materialized --
    so health is not green and the approval is refused (it fails closed, never open)."""
    res = _cli("approve", cli_proposal, "--as", "Finance", "--by", "farah@example.com")
    assert res.exit_code == 2 and "refused: SLO health red (" in res.output and "slo_health" in res.output, \
        res.output
