"""Playbooks (`contracts/decisions/<node>.yaml`) as the decision nodes use them, and the roster of who may act
for each role. The files' schema is `gtm_pipeline.decisions.playbook_spec`; this module loads and checks them
across files (one playbook per node, every role a playbook names has somebody).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field

from gtm_pipeline.contract_loader import Strict, load
from gtm_pipeline.decisions.playbook_spec import NODES, SPECS, Node, Text
from gtm_pipeline.errors import ContractError


class _Node(BaseModel, extra="ignore"):   # read first, to pick the node's model
    node: Node


@dataclass(frozen=True)
class Watch:
    metric: str
    rule: str
    limit: float | None

    def describe(self) -> str:
        text = {"band": "within ±{:.0%} of its baseline", "max_drop": "drops at most {:.0%} below its baseline",
                "max_drop_abs": "drops at most {:g} below its baseline", "max_increase": "rises at most {:g}",
                "max": "stays <= {:g}", "min": "stays >= {:g}", "report": "reported"}[self.rule]
        return f"{self.metric} " + (text.format(self.limit) if self.limit is not None else text)


@dataclass(frozen=True)
class Playbook:
    path: Path
    node: str
    version: str
    title: str
    description: str
    spec: str
    owner: str
    reversibility: str
    risk_class: str
    cadence: str
    approvers: tuple[str, ...]
    inputs: tuple[str, ...]
    slo_health_green: bool
    max_open_incident: str
    incident_scope: str
    prechecks: dict[str, Any]
    thresholds: dict[str, Any]
    action_flag: str
    action_summary: str
    risk: str
    reversal_plan: str
    reversal_within_minutes: float
    auto_reverse: bool
    window_days: int
    watch: tuple[Watch, ...]
    review_after_days: int
    digest: str = field(default="", compare=False)

    @property
    def where(self) -> str:
        return f"contracts/decisions/{self.path.name}"

    @property
    def asset_name(self) -> str:
        """``pricing.change`` -> ``pricing_change`` (the asset key's name)."""
        return self.node.replace(".", "_")

    def selected_thresholds(self) -> dict[str, Any]:
        """The thresholds and node pre-checks as logged with every proposal (spec: selected_thresholds)."""
        return {**self.thresholds, **{f"precheck.{k}": v for k, v in self.prechecks.items()},
                "precheck.max_open_incident": self.max_open_incident, "precheck.incident_scope": self.incident_scope}


def parse_playbook(path: Path, known_metrics: set[str] | None = None) -> Playbook:
    """Load and validate one playbook file. ``known_metrics``: table names of contracts/metrics (checked if given)."""
    where = f"contracts/decisions/{path.name}"
    model = SPECS[load(_Node, path, where).node]
    s = load(model, path, where, {"known_metrics": known_metrics, "channels": _channels(path.parent.parent)})
    return Playbook(
        path=path, node=s.node, version=s.version, title=s.title, description=(s.description or "").strip(),
        spec=s.spec or "", owner=s.taxonomy.owner, reversibility=s.taxonomy.reversibility,
        risk_class=s.taxonomy.risk_class, cadence=s.taxonomy.cadence, approvers=tuple(s.approvers),
        inputs=tuple(s.inputs), slo_health_green=True, max_open_incident=s.prechecks.max_open_incident,
        incident_scope=s.prechecks.incident_scope, prechecks=s.prechecks.node_specific(),
        thresholds=s.thresholds.model_dump(), action_flag=s.action.flag, action_summary=s.action.summary,
        risk=s.risk, reversal_plan=s.reversal.plan, reversal_within_minutes=float(s.reversal.within_minutes),
        auto_reverse=s.reversal.automatic_on_breach, window_days=s.monitoring.window_days,
        watch=tuple(Watch(w.metric, w.rule, None if w.rule == "report" else w.limit) for w in s.monitoring.watch),
        review_after_days=s.review_after_days or s.monitoring.window_days,
        digest=hashlib.sha256(path.read_text(encoding="utf-8").encode()).hexdigest()[:12],
    )


def _channels(contracts_dir: Path) -> list[str] | None:
    """The channels an exemption may name: the values of the lead contract's channel enum (None when it is not
    there to check against)."""
    lead = contracts_dir / "entities" / "lead.yaml"
    try:
        return list(yaml.safe_load(lead.read_text(encoding="utf-8"))["columns"]["channel"]["values"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def load_playbooks(contracts_dir: Path, known_metrics: set[str] | None = None) -> dict[str, Playbook]:
    """Every playbook of ``contracts/decisions``, by node; each of the four nodes must have exactly one."""
    folder = Path(contracts_dir) / "decisions"
    out: dict[str, Playbook] = {}
    for f in sorted(folder.glob("*.yaml")):
        if f.name == "roster.yaml":
            continue
        pb = parse_playbook(f, known_metrics)
        if pb.node in out:
            raise ContractError(f"{pb.where}: node {pb.node!r} is also defined in {out[pb.node].where}; keep one "
                                f"playbook per node")
        out[pb.node] = pb
    missing = [n for n in NODES if n not in out]
    if missing:
        raise ContractError(f"contracts/decisions: no playbook for {', '.join(missing)}; add "
                            f"contracts/decisions/{missing[0].replace('.', '_')}.yaml")
    return out


@dataclass(frozen=True)
class Roster:
    roles: dict[str, tuple[str, ...]]

    def people(self, role: str) -> tuple[str, ...]:
        return self.roles.get(role, ())

    def roles_of(self, person: str) -> tuple[str, ...]:
        return tuple(r for r, ps in self.roles.items() if person in ps)


class RosterSpec(Strict):
    roles: Annotated[dict[str, Annotated[list[Text], Field(min_length=1)]], Field(min_length=1)]


def load_roster(contracts_dir: Path, playbooks: dict[str, Playbook] | None = None) -> Roster:
    path = Path(contracts_dir) / "decisions" / "roster.yaml"
    where = "contracts/decisions/roster.yaml"
    if not path.exists():
        raise ContractError(f"{where}: missing; list who may act for each owner and approver role "
                            "(roles: {CRO: [dana@example.com], ...})")
    out = {role: tuple(people) for role, people in load(RosterSpec, path, where).roles.items()}
    # Across files: every role a playbook names must have somebody.
    for pb in (playbooks or {}).values():
        for role in (pb.owner, *pb.approvers):
            if role not in out:
                raise ContractError(f"{where}: roles: {pb.where} names the role {role!r}, which has nobody; add "
                                    f"'{role}: [someone@example.com]'")
    return Roster(out)
