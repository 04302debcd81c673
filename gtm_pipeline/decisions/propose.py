"""Proposing a decision (docs/design.md §5): one ``proposed`` log entry with every spec field, unless the same inputs
were proposed before or a decision on the same subject is still in flight; older open proposals are superseded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import log
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.hashing import canonical_json
from gtm_pipeline.decisions.memo import rerender
from gtm_pipeline.decisions.playbook import Playbook
from gtm_pipeline.decisions.record import all_decisions, decision_id_for
from gtm_pipeline.decisions.rules import Outcome
from gtm_pipeline.errors import GtmPipelineError


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
        + f" (within the {limit_label(pb.reversal_within_minutes)} limit)",
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
        rerender(dc, old)
    rerender(dc, did)
    return ProposeResult(did, "new", outcome.summary, superseded)


def limit_label(m: float) -> str:
    """A reversal limit in minutes as words: 1440 -> "1-day", 120 -> "2-hour", 45 -> "45-minute"."""
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
