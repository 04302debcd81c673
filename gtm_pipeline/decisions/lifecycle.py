"""A decision's life: proposed -> approved (every listed approver, nobody else) -> applied (a flag flips) ->
confirmed, or reversed within the playbook's limit (docs/design.md §5). Each step is one transaction that appends to the
decision log (and, for apply/reverse, to the flag store) and then re-renders the decision's memo. Approve and apply
first pass `refusals` (the roster, then every gate again); a refused step is logged too (issue 14 §1, §5).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import log
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.gates import Precheck
from gtm_pipeline.decisions.memo import rerender
from gtm_pipeline.decisions.playbook import Playbook
from gtm_pipeline.decisions.propose import ProposeResult, limit_label, propose
from gtm_pipeline.decisions.record import Decision, all_decisions, decision_id_for, get
from gtm_pipeline.decisions.refusals import ROSTER, check_apply, check_approve, refuse
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.routing import engine as routing

# Callers read a decision's life from here: the context, the record and propose are re-exported.
__all__ = [
    "SYSTEM_ACTOR", "Decision", "DecisionContext", "ProposeResult", "all_decisions", "apply", "approve",
    "decision_id_for", "get", "propose", "record_monitoring", "rerender", "reject", "reverse",
]

SYSTEM_ACTOR = "monitoring (automatic)"


def _playbook(dc: DecisionContext, d: Decision) -> Playbook:
    return dc.playbooks[d.node]


# ---- approve / reject -----------------------------------------------------------------------------------------------

def approve(dc: DecisionContext, decision_id: str, *, role: str, person: str, note: str = "") -> Decision:
    """Record ``person``'s approval for ``role`` -- after the roster and every gate held again (`refusals`)."""
    d = get(dc, decision_id)
    check_approve(dc, d, role=role, person=person)
    done = d.approvals
    remaining = [r for r in d.proposal.approvers if r not in done and r != role]
    status = "approved" if not remaining else "pending_approval"
    with log.writing(dc.con, dc.head) as w:
        w.append(decision_id=decision_id, event=log.APPROVAL, status=status, base=d.proposal,
                 actor=person, ts=dc.clock(), details={"role": role, "note": note, "remaining": remaining})
    rerender(dc, decision_id)
    return get(dc, decision_id)


def reject(dc: DecisionContext, decision_id: str, *, role: str, person: str, reason: str) -> Decision:
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
    rerender(dc, decision_id)
    return get(dc, decision_id)


# ---- apply ----------------------------------------------------------------------------------------------------------

def apply(dc: DecisionContext, decision_id: str, *, person: str, effective: date | None = None) -> Decision:
    """Flip the decision's flag (after every approver approved). ``effective``: the first day whose data counts as
    after the change for monitoring (default: today, UTC)."""
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
    rerender(dc, decision_id)
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
                   f"{'within' if within else 'OUTSIDE'} the {limit_label(pb.reversal_within_minutes)} limit"
                   + (f"; DLQ replay: {len(replay['replayed'])} routed, {len(replay['still_unrouted'])} still "
                      f"unrouted" if replay is not None else ""))
        w.append(decision_id=decision_id, event=log.REVERSED, status="reversed", base=d.proposal,
                 actor=person, ts=done, reversal_outcome=outcome,
                 details={"reason": reason, "flag": flag, "restored_version": previous.version,
                          "as_version": restored.version, "reversal_started_at": start.isoformat(sep=" "),
                          "reversal_completed_at": done.isoformat(sep=" "), "duration_seconds": round(took, 3),
                          "limit_seconds": limit, "within_limit": within, "dlq_replay": replay})
    rerender(dc, decision_id)
    return get(dc, decision_id)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _replay_dlq(dc: DecisionContext, pb: Playbook) -> dict:
    """Spec 002 §4.4 reversal: replay the DLQ under the rule set the restored flag puts back in force."""
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
    rerender(dc, d.decision_id)
    return event
