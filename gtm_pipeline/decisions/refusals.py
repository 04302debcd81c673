"""Who may act, and whether the gates still hold, at approve and at apply (issue 14 §1 and §5).

``approve`` accepts only a person the roster lists for the role, never a holder of the owner role, and one person per
role of a decision; ``apply`` only by the owner, with every approval still valid. Both re-run every gate (`gates`,
`nodes.recheck`): an incident opened since the proposal, an input that went stale or SLO health that turned red
refuses the step, and inputs that changed supersede the proposal (the log names the input). Every refusal is a
``refused`` entry in the decision log with the gate, its value, the limit and the fix, then a `GateRefused`.
"""

from __future__ import annotations

from gtm_pipeline.decisions import log, nodes
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.gates import GateRefused, Precheck
from gtm_pipeline.decisions.memo import rerender
from gtm_pipeline.decisions.record import Decision, get

ROSTER = "contracts/decisions/roster.yaml"


def _gate(name: str, value: str, limit: str, fix: str = "") -> Precheck:
    return Precheck(name, False, value, value, limit, fix)


def refuse(dc: DecisionContext, d: Decision, step: str, gate: Precheck, *, actor: str, role: str | None = None,
           message: str | None = None, failed: list[Precheck] | None = None) -> GateRefused:
    """Log a ``refused`` entry (the decision's status unchanged) and return the exception to raise."""
    message = message or gate.refusal(d.node)
    with log.writing(dc.con, dc.head) as w:
        w.append(decision_id=d.decision_id, event=log.REFUSED, status=d.status, base=d.proposal, actor=actor,
                 ts=dc.clock(), details={"step": step, "role": role, **gate.as_dict(), "message": message,
                                         "failed": [p.as_dict() for p in (failed or [gate])]})
    rerender(dc, d.decision_id)
    return GateRefused(message, gate)


def _status_fix(dc: DecisionContext, d: Decision) -> str:
    if d.status == "superseded":
        by = d.entry(log.SUPERSEDED).details_dict.get("superseded_by")
        return (f"act on the newer proposal {by}" if by else
                f"re-evaluate the node for a fresh proposal: gtm-pipeline decisions evaluate --node {d.node}")
    if d.status == "approved":
        return f"every approver approved; the owner applies it: gtm-pipeline decisions apply {d.decision_id} --by ..."
    if d.status in log.IN_FLIGHT_STATUSES:
        return "it is applied; reverse it with gtm-pipeline decisions reverse"
    return "it is closed; a new proposal comes from new inputs"


def _log_intact(dc: DecisionContext) -> Precheck | None:
    report = log.verify(dc.con, dc.head)
    if report.ok:
        return None
    return _gate("decision_log_intact", f"decisions.log does not verify ({report.first})", "an intact chain",
                 "restore decisions.log and the checkpoint file from a backup; run gtm-pipeline decisions verify")


def _gates(dc: DecisionContext, d: Decision, step: str, actor: str, role: str | None) -> None:
    """The log's integrity, then every gate again and the inputs hash: superseded or refused, both logged."""
    broken = _log_intact(dc)
    if broken is not None:
        raise refuse(dc, d, step, broken, actor=actor, role=role)
    rc = nodes.recheck(dc, d, dc.health_fn)
    if rc.superseded:
        names = ", ".join(c["input"] for c in rc.changed)
        with log.writing(dc.con, dc.head) as w:
            w.append(decision_id=d.decision_id, event=log.SUPERSEDED, status="superseded", base=d.proposal,
                     actor=actor, ts=dc.clock(),
                     details={"reason": f"inputs changed since the proposal: {names}", "changed": rc.changed,
                              "step": step, "inputs_hash_now": rc.inputs_hash,
                              "inputs_hash_proposed": d.proposal.inputs_hash})
        d = get(dc, d.decision_id)
        gate = _gate("inputs_unchanged", f"inputs changed since the proposal ({names})",
                     f"the inputs hashed at the proposal ({d.proposal.inputs_hash[:19]}…)",
                     f"re-evaluate the node for a fresh proposal: gtm-pipeline decisions evaluate --node {d.node}")
        raise refuse(dc, d, step, gate, actor=actor, role=role, failed=[gate, *rc.failed],
                     message=f"refused: {d.decision_id} is superseded -- its inputs changed since the proposal "
                             f"({names}); it can be neither approved nor applied; {gate.fix}")
    if rc.failed:
        first = rc.failed[0]
        also = "; ".join(f"also {p.name}: {p.value or p.detail}" for p in rc.failed[1:])
        raise refuse(dc, d, step, first, actor=actor, role=role, failed=rc.failed,
                     message=first.refusal(d.node) + (f" ({also})" if also else ""))


def check_approve(dc: DecisionContext, d: Decision, *, role: str, person: str) -> None:
    """Every reason ``person`` may not approve ``d`` as ``role`` now (the first one found is refused)."""
    pb = dc.playbooks[d.node]
    did, owner, approvers = d.decision_id, d.proposal.owner, d.proposal.approvers
    listed = dc.roster.people(role)

    def no(gate: Precheck, message: str) -> GateRefused:
        return refuse(dc, d, "approve", gate, actor=person, role=role, message=f"refused: {did}: {message}")

    if d.status not in ("proposed", "pending_approval"):
        fix = _status_fix(dc, d)
        raise no(_gate("status", d.status, "proposed or pending_approval", fix),
                 f"{did} is {d.status}; only a proposed decision can be approved ({fix})")
    if role not in approvers:
        hint = " -- the owner cannot approve their own decision" if role == owner else ""
        raise no(_gate("approver_role", role, f"one of {', '.join(approvers)}", "approve with --as one of them"),
                 f"{role!r} is not an approver of {d.node}{hint}; approvers: {', '.join(approvers)} "
                 f"({pb.where}: approvers)")
    if person not in listed:
        raise no(_gate("roster", person, f"a person listed for {role!r} in {ROSTER}: {', '.join(listed)}",
                       f"ask {', '.join(listed)}, or add the person to {ROSTER} (a reviewed change)"),
                 f"{person!r} may not act as {role!r}; {ROSTER} lists {', '.join(listed) or 'nobody'} for that "
                 f"role; ask one of them, or add the person to the roster")
    others = [p for p in listed if p != person]
    if person in dc.roster.people(owner):
        raise no(_gate("owner_cannot_approve", f"{person} holds the owner role {owner}",
                       "an approver who does not hold the owner role", f"ask {', '.join(others) or 'another person'}"),
                 f"{person!r} holds the owner role {owner!r} and cannot approve on {role!r}'s behalf (the "
                 f"proposal's owner cannot approve it); ask {', '.join(others) or 'another person listed for ' + role}")
    done = d.approvals
    if role in done:
        raise no(_gate("already_approved", f"{role} approved by {done[role]}", "one approval per role"),
                 f"{role} already approved (by {done[role]})")
    if person in done.values():
        other = next(r for r, p in done.items() if p == person)
        raise no(_gate("one_person_one_role", f"{person} already approved as {other}",
                       "a different person for each role of a decision",
                       f"ask {', '.join(others) or 'another person listed for ' + role}"),
                 f"{person!r} already approved as {other!r}; one person cannot fill two roles of one decision -- "
                 f"ask {', '.join(others) or 'another person listed for ' + role}")
    _gates(dc, d, "approve", person, role)


def check_apply(dc: DecisionContext, d: Decision, *, person: str) -> None:
    """Every reason ``person`` may not apply ``d`` now (the first one found is refused)."""
    did, owner = d.decision_id, d.proposal.owner
    owners = dc.roster.people(owner)

    def no(gate: Precheck, message: str) -> GateRefused:
        return refuse(dc, d, "apply", gate, actor=person, role=owner, message=f"refused: {did}: {message}")

    if d.status != "approved":
        missing = [r for r in d.proposal.approvers if r not in d.approvals]
        still = (f" (still missing: {', '.join(missing)})" if missing and d.status in ("proposed", "pending_approval")
                 else "")
        raise no(_gate("status", d.status + still, "approved by every approver",
                       "get the missing approvals first" if still else _status_fix(dc, d)),
                 f"{did} is {d.status}; it applies only after every approver approved{still}")
    if person not in owners:
        raise no(_gate("owner_applies", person, f"a person listed for the owner role {owner!r} in {ROSTER}",
                       f"ask {', '.join(owners)}"),
                 f"the owner ({owner}) applies a decision; {person!r} is not listed for {owner!r} in {ROSTER} "
                 f"(listed: {', '.join(owners)})")
    for r, who in d.approvals.items():
        bad = ("is no longer listed for it" if who not in dc.roster.people(r) else
               f"holds the owner role {owner!r}" if who in owners else
               "also approved another role" if list(d.approvals.values()).count(who) > 1 else "")
        if bad:
            raise no(_gate("approvals_valid", f"the {r} approval by {who}", f"every approval by a person {ROSTER} "
                                                                            f"lists for its role, none an owner",
                           "reject this decision and approve a fresh proposal"),
                     f"the {r} approval by {who!r} {bad}; an approval only counts from the roster")
    if person in d.approvals.values():
        raise no(_gate("one_person_one_role", f"{person} approved this decision", "an owner who did not approve it",
                       f"ask {', '.join(p for p in owners if p != person) or 'another owner'}"),
                 f"{person!r} approved this decision and cannot also apply it")
    _gates(dc, d, "apply", person, owner)
