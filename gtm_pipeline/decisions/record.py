"""A decision as the decision log tells it: its proposal and every later entry, found by id or listed."""

from __future__ import annotations

from dataclasses import dataclass

from gtm_pipeline.decisions import log
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.hashing import canonical_json, sha256_hex
from gtm_pipeline.errors import GtmPipelineError


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
