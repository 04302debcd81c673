"""The decision node ``launch.gate`` (spec 000 §6 "no major launch proceeds without eval + instrumentation + rollback
plan"; issue 20 §2): a launch applies -- its flag flips -- only when every item of its contract has evidence.

* `check` judges every item (`evidence.judge`) on the one clock and writes one entry to the decision log: ``proposed``
  with status ``gate_passed`` and every item's evidence hash, or ``refused`` (status ``blocked``) naming the file and
  the field of the first missing item, with every failed item in its details.
* `apply` judges every item again (gates are re-checked at every step in this product), then compares each stable
  item's hash with the one the passing check recorded: an evidence file changed since refuses the apply, naming the
  field and both hashes. Only then does it flip ``rollback.flag`` and log ``applied`` (status ``launched``).

The entries share `decisions.log` (hash chain, key, checkpoints) with the playbook nodes; their statuses
(gate_passed, blocked, launched) are not the playbook ones, so monitoring and the pending list leave them alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.decisions.lifecycle import DecisionContext
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.launches.contract import Launch, load_launch, load_regimes
from gtm_pipeline.launches.evidence import Item, content_digest, file_digest, judge

NODE = "launch.gate"
PASSED, BLOCKED, LAUNCHED = "gate_passed", "blocked", "launched"


class LaunchBlocked(GtmPipelineError):
    """A launch gate said no (exit 2 from the CLI); the message names the file, the field and the fix."""


@dataclass
class GateResult:
    launch: Launch
    items: list[Item]
    decision_id: str
    state: str                      # gate_passed | blocked | duplicate

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if not i.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def refusal(self) -> str:
        first = self.failed[0]
        more = f" (and {len(self.failed) - 1} more missing item(s))" if len(self.failed) > 1 else ""
        return f"refused: launch {self.launch.id} blocked: {self.launch.where}: {first.field}: {first.detail}{more}"


def _launch(dc: DecisionContext, launch_id: str) -> Launch:
    """The contract as it is now. Its regions are judged by the gate (`evidence.region_items`), not at load, so that
    a region the regimes file no longer holds is a logged refusal like any other missing item."""
    path = Path(dc.contracts_dir) / "launches" / f"{launch_id}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise GtmPipelineError(f"no launch {launch_id!r} in contracts/launches; known: {', '.join(known) or 'none'}")
    return load_launch(path, regions=None)


def _base(launch: Launch, items: list[Item]) -> dict:
    s = launch.spec
    thresholds = {**s.eval_suite.thresholds.model_dump(), "min_cases": s.eval_suite.min_cases,
                  "event_window_days": s.instrumentation.window_days,
                  "max_rehearsal_age_days": s.rollback.max_rehearsal_age_days}
    return {"node": NODE, "subject": launch.id,
            "playbook_version": f"{file_digest(launch.path)[:19]} ({launch.where})",
            "inputs_version": "evidence sha256", "inputs_hash": content_digest({i.field: i.digest for i in items}),
            "selected_thresholds": thresholds, "chosen_action": f"launch {launch.id}: {s.title}",
            "action": {"kind": "launch", "flag": s.rollback.flag, "new_value": {"state": "launched"}},
            "owner": s.owner, "approvers": [], "risk_notes": f"regions {', '.join(s.regions)}",
            "reversal_plan": f"flip {s.rollback.flag} back within {s.rollback.time_limit_minutes:g} minutes "
                             f"(escalation: {s.escalation[0].role})",
            "reversal_outcome": None, "review_date": None}


def check(dc: DecisionContext, launch_id: str, *, actor: str = f"{NODE} check") -> GateResult:
    """Judge every item now and log the verdict (a refusal is an entry too)."""
    launch = _launch(dc, launch_id)
    items = judge(dc.con, launch, load_regimes(dc.contracts_dir), dc.clock())
    base = _base(launch, items)
    did = lifecycle.decision_id_for(NODE, launch.id, base["inputs_hash"], base["selected_thresholds"],
                                    base["playbook_version"])
    result = GateResult(launch, items, did, PASSED if not any(not i.passed for i in items) else BLOCKED)
    if result.passed and any(e.status == PASSED for e in log.entries(dc.con, did)):
        result.state = "duplicate"            # the same evidence passed before: nothing new to log
        return result
    details: dict = {"items": [i.as_dict() for i in items], "step": "check"}
    if not result.passed:
        details |= {"gate": result.failed[0].field, "message": result.refusal(),
                    "failed": [f"{i.field}: {i.detail}" for i in result.failed]}
    with log.writing(dc.con, dc.head) as w:
        w.append(decision_id=did, event=log.PROPOSED if result.passed else log.REFUSED, status=result.state,
                 base=base, actor=actor, ts=dc.clock(), details=details)
    return result


def _passed_check(dc: DecisionContext, launch_id: str) -> lifecycle.Decision | None:
    """The launch's latest passing check that has not launched yet."""
    found = [d for d in lifecycle.all_decisions(dc) if d.node == NODE and d.proposal.subject == launch_id
             and d.latest(log.PROPOSED) is not None]
    return max(found, key=lambda d: d.last.entry_id) if found else None


def _refuse(dc: DecisionContext, d: lifecycle.Decision | None, launch: Launch, person: str, gate: str,
            message: str, items: list[Item]) -> LaunchBlocked:
    with log.writing(dc.con, dc.head) as w:
        base = d.proposal if d is not None else _base(launch, items)
        w.append(decision_id=d.decision_id if d is not None else "LAUNCH-" + launch.id, event=log.REFUSED,
                 status=d.status if d is not None else BLOCKED, base=base, actor=person, ts=dc.clock(),
                 details={"step": "apply", "gate": gate, "message": message,
                          "items": [i.as_dict() for i in items]})
    return LaunchBlocked(message)


def changed_items(recorded: list[dict], now: list[Item]) -> list[str]:
    """Stable items whose evidence hash differs from (or is absent in) the passing check's record."""
    before = {r["field"]: r["digest"] for r in recorded if r.get("stable")}
    return [f"{i.field} ({i.evidence}): {before.get(i.field) or 'not recorded'} at the check, {i.digest} now"
            for i in now if i.stable and before.get(i.field) != i.digest]


def apply(dc: DecisionContext, launch_id: str, *, person: str) -> flagstore.FlagVersion:
    """Launch: judge every item again, compare the evidence hashes with the passing check's, flip the flag."""
    launch = _launch(dc, launch_id)
    d = _passed_check(dc, launch_id)
    items = judge(dc.con, launch, load_regimes(dc.contracts_dir), dc.clock())
    if d is None:
        raise _refuse(dc, None, launch, person, "gate_checked",
                      f"refused: launch {launch_id} has no passing gate check in decisions.log; run "
                      f"gtm-pipeline launches check {launch_id} first", items)
    if d.status == LAUNCHED:
        raise GtmPipelineError(f"launch {launch_id} was already launched by {d.decision_id} "
                               f"({d.entry(log.APPLIED).actor}); nothing to do")
    failed = [i for i in items if not i.passed]
    if failed:
        msg = GateResult(launch, items, d.decision_id, BLOCKED).refusal()
        raise _refuse(dc, d, launch, person, failed[0].field, msg + " (re-checked at apply)", items)
    changed = changed_items(d.entry(log.PROPOSED).details_dict.get("items", []), items)
    if changed:
        raise _refuse(dc, d, launch, person, "evidence_hash",
                      f"refused: launch {launch_id}: evidence changed since the check {d.decision_id}: "
                      f"{'; '.join(changed)}; re-run gtm-pipeline launches check {launch_id} and review the new "
                      f"evidence before applying", items)
    flag = launch.spec.rollback.flag
    with log.writing(dc.con, dc.head) as w:
        before = flagstore.current(dc.con, flag)
        new = flagstore.set_flag(dc.con, flag, {"state": "launched", "launch": launch_id}, set_by=person,
                                 reason=f"launch {launch_id} ({d.decision_id})", decision_id=d.decision_id,
                                 at=dc.clock())
        w.append(decision_id=d.decision_id, event=log.APPLIED, status=LAUNCHED, base=d.proposal, actor=person,
                 ts=dc.clock(), details={"flag": flag, "from_version": before.version if before else 0,
                                         "to_version": new.version, "items": [i.as_dict() for i in items]})
    return new
