"""A decision's life: proposed -> approved (every listed approver, nobody else) -> applied (a flag flips) ->
confirmed, or reversed within the playbook's limit (DESIGN §5). Every step is one transaction that appends to the
decision log (and, for apply/reverse, to the flag store) and then re-renders the decision's memo. Approve and apply
first pass `refusals` (the roster, then every gate again); a refused step is logged too (issue 14 §1, §5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import log
from gtm_pipeline.decisions.anchor import Anchor, anchor_for
from gtm_pipeline.decisions.gates import HealthFn
from gtm_pipeline.decisions.hashing import canonical_json, sha256_hex
from gtm_pipeline.decisions.playbook import Playbook, Roster
from gtm_pipeline.decisions.rules import Outcome
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import utcnow

SYSTEM_ACTOR = "monitoring (automatic)"


@dataclass
class DecisionContext:
    """What every lifecycle step needs: the warehouse, the playbooks and roster, where files go, a clock, the SLO
    file and health source the gates judge by (no health source: the SLO gate fails closed), and the log's key."""

    con: duckdb.DuckDBPyConnection
    playbooks: dict[str, Playbook]
    roster: Roster
    contracts_dir: Path
    data_dir: Path
    clock: Callable[[], datetime] = utcnow
    slo_file: Path | None = None
    health_fn: HealthFn | None = None
    log_key: str | None = field(default=None, repr=False)

    @property
    def head(self) -> Anchor:
        """The log's anchor: the checkpoint file under the data folder and the chain key."""
        return anchor_for(self.data_dir, self.log_key)

    @property
    def memo_dir(self) -> Path:
        return Path(self.data_dir) / "memos"

    @property
    def packet_dir(self) -> Path:
        return Path(self.data_dir) / "packets"


@dataclass
class Decision:
    """A decision as the log tells it: its proposal and every later entry."""

    entries: list[log.Entry]

    @property
    def proposal(self) -> log.Entry:
        return self.entries[0]

    @property
    def decision_id(self) -> str:
        return self.proposal.decision_id

    @property
    def node(self) -> str:
        return self.proposal.node

    @property
    def status(self) -> str:
        return self.entries[-1].status

    @property
    def last(self) -> log.Entry:
        return self.entries[-1]

    @property
    def approvals(self) -> dict[str, str | None]:
        """{role: person} of the approvals recorded so far."""
        return {e.details_dict["role"]: e.actor for e in self.entries if e.event == log.APPROVAL}

    def latest(self, event: str) -> log.Entry | None:
        return next((e for e in reversed(self.entries) if e.event == event), None)

    def entry(self, event: str) -> log.Entry:
        """The latest ``event`` entry, where the status says there is one (an applied decision has its apply)."""
        found = self.latest(event)
        if found is None:
            raise GtmPipelineError(f"{self.decision_id} is {self.status} but decisions.log has no {event!r} entry "
                                   f"for it; inspect it with gtm-pipeline decisions show {self.decision_id}")
        return found

    @property
    def action(self) -> dict:
        return self.proposal.action_dict


def decision_id_for(node: str, subject: str, inputs_hash: str, thresholds: dict, playbook_version: str) -> str:
    """Deterministic: the same node, subject, inputs and thresholds give the same id (so never a duplicate)."""
    key = canonical_json([node, subject, inputs_hash, thresholds, playbook_version])
    return "DEC-" + sha256_hex(key)[:12]


def get(dc: DecisionContext, decision_id: str) -> Decision:
    es = log.entries(dc.con, decision_id)
    if not es:
        known = [d.decision_id for d in all_decisions(dc)][-5:]
        raise GtmPipelineError(f"decision {decision_id!r} is not in decisions.log; list them with "
                               f"'gtm-pipeline decisions list'" + (f" (latest: {', '.join(known)})" if known else ""))
    return Decision(es)


def all_decisions(dc: DecisionContext) -> list[Decision]:
    by_id: dict[str, list[log.Entry]] = {}
    for e in log.entries(dc.con):
        by_id.setdefault(e.decision_id, []).append(e)
    return [Decision(es) for es in by_id.values()]


def _playbook(dc: DecisionContext, d: Decision) -> Playbook:
    return dc.playbooks[d.node]


def rerender(dc: DecisionContext, decision_id: str) -> None:
    from gtm_pipeline.decisions.memo import write_memo

    d = get(dc, decision_id)
    write_memo(dc, d)


_rerender = rerender


# ---- propose --------------------------------------------------------------------------------------------------------

@dataclass
class ProposeResult:
    decision_id: str
    state: str                         # new | duplicate | in_flight
    detail: str = ""
    superseded: list[str] = field(default_factory=list)


def propose(dc: DecisionContext, pb: Playbook, outcome: Outcome, *, tables: dict[str, list[dict]],
            inputs_hash: str, inputs_version: str, flag: str, flag_before: flagstore.FlagVersion | None,
            initial_value: dict, new_value: dict, precheck_summary: list[str]) -> ProposeResult:
    """Log a proposal for ``outcome`` unless the same inputs were proposed before or a decision on the same subject
    is applied and not closed yet. Older proposals on the same subject that were not applied are superseded."""
    if outcome.action is None:
        raise GtmPipelineError(f"{pb.node}: {outcome.subject} has no action to propose ({outcome.summary})")
    thresholds = pb.selected_thresholds()
    did = decision_id_for(pb.node, outcome.subject, inputs_hash, thresholds, pb.version)
    if log.entries(dc.con, did):
        return ProposeResult(did, "duplicate", f"{did} was already proposed from the same inputs ({inputs_hash[:19]}…)")
    others = [d for d in all_decisions(dc) if d.node == pb.node and d.proposal.subject == outcome.subject]
    flying = [d for d in others if d.status in log.IN_FLIGHT_STATUSES]
    if flying:
        return ProposeResult(did, "in_flight", f"{flying[0].decision_id} on {outcome.subject} is {flying[0].status}; "
                                               f"a new proposal waits until it is confirmed or reversed")
    now = dc.clock()
    action = {**outcome.action, "flag": flag, "based_on_version": flag_before.version if flag_before else 0,
              "initial_value": initial_value, "new_value": new_value}
    base = {
        "node": pb.node, "subject": outcome.subject, "playbook_version": f"{pb.version} ({pb.where})",
        "inputs_version": inputs_version, "inputs_hash": inputs_hash, "selected_thresholds": thresholds,
        "chosen_action": outcome.summary, "action": action, "owner": pb.owner, "approvers": list(pb.approvers),
        "risk_notes": _risk_notes(pb, outcome), "reversal_plan": _fill(pb.reversal_plan, outcome, action)
        + f" (within the {_minutes(pb.reversal_within_minutes)} limit)",
        "reversal_outcome": None, "review_date": (now + timedelta(days=pb.review_after_days)).date(),
    }
    superseded = []
    with log.writing(dc.con, dc.head) as w:
        for d in others:
            if d.status in log.OPEN_STATUSES:
                w.append(decision_id=d.decision_id, event=log.SUPERSEDED, status="superseded",
                         base=d.proposal, actor=f"{pb.node} evaluation", ts=now,
                         details={"superseded_by": did, "reason": "newer inputs"})
                superseded.append(d.decision_id)
        w.append(decision_id=did, event=log.PROPOSED, status="proposed", base=base,
                 actor=f"{pb.node} evaluation", ts=now,
                 details={"reasons": outcome.reasons, "figures": outcome.figures, "options": outcome.options,
                          "prechecks": precheck_summary, "cadence": pb.cadence, "reversibility": pb.reversibility,
                          "risk_class": pb.risk_class, "monitoring": [x.describe() for x in pb.watch],
                          "monitoring_window_days": pb.window_days})
        dc.con.execute("INSERT INTO decisions.inputs VALUES (?, ?, ?, ?, ?)",
                       [did, inputs_hash, inputs_version, canonical_json(tables), now])
    for old in superseded:
        _rerender(dc, old)
    _rerender(dc, did)
    return ProposeResult(did, "new", outcome.summary, superseded)


def _minutes(m: float) -> str:
    if m >= 1440 and m % 1440 == 0:
        return f"{int(m // 1440)}-day"
    if m >= 60 and m % 60 == 0:
        return f"{int(m // 60)}-hour"
    return f"{m:g}-minute"


def _fill(text: str, outcome: Outcome, action: dict) -> str:
    values = {"segment": outcome.subject, **{k: v for k, v in action.items() if isinstance(v, (str, int, float))}}
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def _risk_notes(pb: Playbook, outcome: Outcome) -> str:
    notes = [pb.risk.rstrip("."), f"risk class {pb.risk_class}, reversibility {pb.reversibility}"]
    f = outcome.figures
    if pb.node == "pricing.change" and f.get("e_se") is not None:
        notes.append(f"elasticity {f['elasticity']:.2f} ± {1.96 * f['e_se']:.2f} (95%)")
    return "; ".join(notes)


# ---- approve / reject -----------------------------------------------------------------------------------------------

def approve(dc: DecisionContext, decision_id: str, *, role: str, person: str, note: str = "") -> Decision:
    """Record ``person``'s approval for ``role`` -- after the roster and every gate held again (`refusals`)."""
    from gtm_pipeline.decisions.refusals import check_approve

    d = get(dc, decision_id)
    check_approve(dc, d, role=role, person=person)
    done = d.approvals
    remaining = [r for r in d.proposal.approvers if r not in done and r != role]
    status = "approved" if not remaining else "pending_approval"
    with log.writing(dc.con, dc.head) as w:
        w.append(decision_id=decision_id, event=log.APPROVAL, status=status, base=d.proposal,
                 actor=person, ts=dc.clock(), details={"role": role, "note": note, "remaining": remaining})
    _rerender(dc, decision_id)
    return get(dc, decision_id)


def reject(dc: DecisionContext, decision_id: str, *, role: str, person: str, reason: str) -> Decision:
    from gtm_pipeline.decisions.gates import Precheck
    from gtm_pipeline.decisions.refusals import ROSTER, refuse

    d = get(dc, decision_id)
    if d.status not in ("proposed", "pending_approval", "approved"):
        raise GtmPipelineError(f"{decision_id} is {d.status}; only a decision not yet applied can be rejected")
    # Rejecting needs no gate (stopping is always allowed), but only an approver from the roster may do it.
    if role not in d.proposal.approvers or person not in dc.roster.people(role):
        why = (f"{role!r} is not an approver of {d.node}; approvers: {', '.join(d.proposal.approvers)}"
               if role not in d.proposal.approvers else f"{person!r} may not act as {role!r} ({ROSTER})")
        raise refuse(dc, d, "reject", Precheck("roster", False, why, f"{person} as {role}",
                                               f"an approver role and a person {ROSTER} lists for it"),
                     actor=person, role=role, message=f"refused: {decision_id}: {why}")
    if not reason.strip():
        raise GtmPipelineError(f"{decision_id}: give a reason for the rejection (--reason)")
    with log.writing(dc.con, dc.head) as w:
        w.append(decision_id=decision_id, event=log.REJECTED, status="rejected", base=d.proposal,
                 actor=person, ts=dc.clock(), details={"role": role, "reason": reason})
    _rerender(dc, decision_id)
    return get(dc, decision_id)


# ---- apply ----------------------------------------------------------------------------------------------------------

def apply(dc: DecisionContext, decision_id: str, *, person: str, effective: date | None = None) -> Decision:
    """Flip the decision's flag (after every approver approved). ``effective``: the first day whose data counts as
    after the change for monitoring (default: today, UTC)."""
    from gtm_pipeline.decisions.gates import Precheck
    from gtm_pipeline.decisions.refusals import check_apply, refuse

    d = get(dc, decision_id)
    check_apply(dc, d, person=person)
    a = d.action
    flag = a["flag"]
    cur = flagstore.current(dc.con, flag)
    if (cur.version if cur else 0) != a["based_on_version"]:
        at = f"v{cur.version if cur else 0}"
        raise refuse(dc, d, "apply", Precheck("flag_version", False, f"{flag} is at {at}", f"{flag} at {at}",
                                              f"v{a['based_on_version']}, the version the proposal was made against",
                                              "re-evaluate the node for a fresh proposal"),
                     actor=person, role=d.proposal.owner,
                     message=f"refused: {decision_id}: {flag} is at {at} but the proposal was made against "
                             f"v{a['based_on_version']} ({cur.decision_id if cur else ''} changed it since); "
                             f"re-evaluate the node for a fresh proposal")
    now = dc.clock()
    effective = effective or now.date()
    with log.writing(dc.con, dc.head) as w:
        if cur is None:
            cur = flagstore.set_flag(dc.con, flag, a["initial_value"], set_by=person, reason="initial value "
                                     f"recorded before {decision_id}", decision_id=decision_id, at=now)
        new = flagstore.set_flag(dc.con, flag, a["new_value"], set_by=person, reason=f"apply {decision_id}",
                                 decision_id=decision_id, at=now)
        w.append(decision_id=decision_id, event=log.APPLIED, status="applied", base=d.proposal,
                 actor=person, ts=now,
                 details={"flag": flag, "from_version": cur.version, "to_version": new.version,
                          "value": a["new_value"], "effective_date": effective.isoformat(),
                          "monitoring_until": (effective + timedelta(days=_playbook(dc, d).window_days)).isoformat()})
    _rerender(dc, decision_id)
    return get(dc, decision_id)


# ---- reverse --------------------------------------------------------------------------------------------------------

def reverse(dc: DecisionContext, decision_id: str, *, person: str, reason: str,
            started_at: datetime | None = None) -> Decision:
    """Restore the flag version that was in force before the apply (and, for routing, replay the DLQ under the
    restored rule set); record how long the reversal took against the playbook's limit."""
    d = get(dc, decision_id)
    pb = _playbook(dc, d)
    if d.status not in log.IN_FLIGHT_STATUSES:
        raise GtmPipelineError(f"{decision_id} is {d.status}; only an applied decision can be reversed")
    allowed = {*dc.roster.people(d.proposal.owner), *(p for r in d.proposal.approvers for p in dc.roster.people(r))}
    if person != SYSTEM_ACTOR and person not in allowed:
        # Reversing needs no gate (undoing is always allowed), but only the owner or an approver from the roster.
        from gtm_pipeline.decisions.gates import Precheck
        from gtm_pipeline.decisions.refusals import ROSTER, refuse

        why = (f"{person!r} is neither the owner ({d.proposal.owner}) nor an approver "
               f"({', '.join(d.proposal.approvers)}) in {ROSTER}")
        raise refuse(dc, d, "reverse", Precheck("roster", False, why, person, f"the owner or an approver in {ROSTER}"),
                     actor=person, message=f"refused: {decision_id}: {why}")
    applied = d.entry(log.APPLIED).details_dict
    flag = applied["flag"]
    cur = flagstore.current(dc.con, flag)
    if cur is None or cur.version != applied["to_version"]:
        raise GtmPipelineError(f"{decision_id}: {flag} moved on to v{cur.version if cur else 0} "
                               f"({cur.decision_id if cur else '?'}) after this decision set v{applied['to_version']}; "
                               f"reverse the later decision first")
    proposed = d.latest(log.REVERSAL_PROPOSED)
    # The clock starts when the need to reverse was recorded: the breach that proposed it, else this command.
    start = started_at or (proposed.ts if proposed is not None and d.status == "reversal_proposed" else dc.clock())
    previous = flagstore.version(dc.con, flag, applied["from_version"])
    assert previous is not None   # decisions.flags is append-only: the version the apply started from is still there
    replay = None
    with log.writing(dc.con, dc.head) as w:
        restored = flagstore.set_flag(dc.con, flag, previous.value, set_by=person, reason=f"reverse {decision_id}",
                                      decision_id=decision_id, restores_version=previous.version, at=dc.clock())
        if flag == flagstore.ROUTING_FLAG:
            replay = _replay_dlq(dc, pb)
        done = dc.clock()
        took = max(0.0, (done - start).total_seconds())
        limit = pb.reversal_within_minutes * 60
        within = took <= limit
        outcome = (f"restored {flag} v{previous.version} (as v{restored.version}) in {_duration(took)}; "
                   f"{'within' if within else 'OUTSIDE'} the {_minutes(pb.reversal_within_minutes)} limit"
                   + (f"; DLQ replay: {len(replay['replayed'])} routed, {len(replay['still_unrouted'])} still "
                      f"unrouted" if replay is not None else ""))
        w.append(decision_id=decision_id, event=log.REVERSED, status="reversed", base=d.proposal,
                 actor=person, ts=done, reversal_outcome=outcome,
                 details={"reason": reason, "flag": flag, "restored_version": previous.version,
                          "as_version": restored.version, "reversal_started_at": start.isoformat(sep=" "),
                          "reversal_completed_at": done.isoformat(sep=" "), "duration_seconds": round(took, 3),
                          "limit_seconds": limit, "within_limit": within, "dlq_replay": replay})
    _rerender(dc, decision_id)
    return get(dc, decision_id)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _replay_dlq(dc: DecisionContext, pb: Playbook) -> dict:
    """Spec §4.4 reversal: replay the DLQ under the rule set the restored flag puts back in force."""
    from gtm_pipeline.routing import engine as routing

    rules = flagstore.routing_rule_set_in_force(dc.con, dc.contracts_dir)
    report = routing.replay_dlq(dc.con, rules, seed=int(pb.thresholds["seed"]), now=dc.clock())
    return {"rule_set": report.rule_set, "replayed": [i for i, _ in report.replayed],
            "still_unrouted": [i for i, _ in report.still_unrouted]}


# ---- monitoring entries ---------------------------------------------------------------------------------------------

def record_monitoring(dc: DecisionContext, d: Decision, *, results: list[dict], breached: list[str],
                      complete: bool, inputs_hash: str) -> str | None:
    """Log a monitoring evaluation when its figures changed since the last one; a breach proposes the reversal
    (or performs it where the playbook says so); a window that ends without breach confirms the decision.
    Returns the event written (None when nothing changed)."""
    pb = _playbook(dc, d)
    last = d.latest(log.MONITORED)
    if last is not None and last.details_dict.get("inputs_hash") == inputs_hash and not (complete and not breached):
        return None
    now = dc.clock()
    details = {"results": results, "breached": breached, "window_complete": complete, "inputs_hash": inputs_hash}
    with log.writing(dc.con, dc.head) as w:
        if last is None or last.details_dict.get("inputs_hash") != inputs_hash:
            w.append(decision_id=d.decision_id, event=log.MONITORED, status=d.status, base=d.proposal,
                     actor=SYSTEM_ACTOR, ts=now, details=details)
        if breached and d.status == "applied" and not pb.auto_reverse:
            w.append(decision_id=d.decision_id, event=log.REVERSAL_PROPOSED, status="reversal_proposed",
                     base=d.proposal, actor=SYSTEM_ACTOR, ts=now,
                     details={"breached": breached, "reason": "monitoring breach: " + "; ".join(breached),
                              "limit_minutes": pb.reversal_within_minutes})
        elif complete and not breached and d.status == "applied":
            w.append(decision_id=d.decision_id, event=log.CONFIRMED, status="confirmed", base=d.proposal,
                     actor=SYSTEM_ACTOR, ts=now,
                     details={"reason": f"{pb.window_days}-day monitoring window passed without breach"})
    event = log.MONITORED
    if breached and d.status == "applied":
        if pb.auto_reverse:
            reverse(dc, d.decision_id, person=SYSTEM_ACTOR, reason="monitoring breach: " + "; ".join(breached),
                    started_at=now)
            return log.REVERSED
        event = log.REVERSAL_PROPOSED
    elif complete and not breached and d.status == "applied":
        event = log.CONFIRMED
    _rerender(dc, d.decision_id)
    return event
