"""Playbooks (`contracts/decisions/<node>.yaml`) and the roster of who may act for each role.

A playbook carries what spec 002 §4 says about one decision node -- inputs, pre-checks, thresholds, action,
owner/approvers, risk, reversal and monitoring -- plus the §1 taxonomy (owner, reversibility, risk class, cadence).
Everything is structured YAML: thresholds are named numbers checked against a per-node schema whose defaults are the
spec's numbers; nothing in a playbook is ever run as code. A problem raises ContractError naming file, field and fix.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gtm_pipeline.errors import ContractError

NODES = ("pricing.change", "channel.invest", "icp.update", "routing.policy", "experiment.ship")
LEVELS = ("High", "Medium", "Low")
CADENCES = ("weekly_ops", "monthly_business_review", "quarterly_plan")
SEVERITIES = ("SEV1", "SEV2", "SEV3", "SEV4")
INCIDENT_SCOPES = ("dependencies", "any")
WATCH_RULES = ("band", "max_drop", "max_drop_abs", "max_increase", "max", "min", "report")

_TOP = {"node", "version", "title", "description", "spec", "taxonomy", "approvers", "inputs", "prechecks",
        "thresholds", "action", "risk", "reversal", "monitoring", "review_after_days"}
_REQUIRED = ("node", "version", "title", "taxonomy", "approvers", "inputs", "action", "risk", "reversal",
             "monitoring")


@dataclass(frozen=True)
class _Num:
    """A threshold: its spec default and allowed range (None = open)."""

    default: Any
    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    nullable: bool = False
    choices: tuple[str, ...] | None = None   # for list-valued thresholds: allowed members
    reasons: bool = False                    # a mapping {name: why} (e.g. channels exempt from a rule), default {}
    hint: str = ""                           # added to the error when the value is missing or null


# Per node: thresholds (spec defaults), node-specific pre-checks, the metric tables it must read, and what its
# monitoring may watch. The spec's numbers live here only as defaults for a playbook that omits one.
_SCHEMA: dict[str, dict[str, dict[str, _Num] | set[str]]] = {
    "pricing.change": {
        "thresholds": {
            "elasticity_min": _Num(-1.0, -20, 0), "elasticity_max": _Num(-0.3, -20, 0),
            "cm_per_seat_uplift_min": _Num(3.0, 0), "payback_worsening_max_months": _Num(0.5, 0),
            "raise_pct_min": _Num(5, 0.1, 100), "raise_pct_max": _Num(10, 0.1, 100),
            "raise_pct_step": _Num(1, 0.1, 100), "variable_cost_rate": _Num(0.129, 0, 0.99),
            # sample minimums (issue 14 §2): below them a segment is held, "insufficient data"
            "min_closed": _Num(20, 0, integer=True), "elasticity_se_max": _Num(0.5, 0, nullable=True),
        },
        "prechecks": {},
        "inputs": {"price_elasticity", "cm_per_seat", "gm_pct", "payback_by_segment", "booking_rate"},
        "watch": {"booking_rate", "cm_per_seat", "list_price"},
    },
    "channel.invest": {
        "thresholds": {
            "shift_cac_per_sqo_max_ratio": _Num(0.9, 0), "shift_sql_to_win_min_pp": _Num(2.0, -100, 100),
            "shift_budget_pct": _Num(20, 0, 1000), "pause_cac_per_sqo_min_ratio": _Num(1.2, 0),
            "pause_attribution_validity_min": _Num(
                0.995, 0, 1, hint="; the spec pauses every channel below 0.995 -- to exempt a channel whose leads "
                                  "structurally lack web touches, list it under attribution_validity_exempt"),
            "attribution_validity_exempt": _Num({}, reasons=True),
            "min_sqos": _Num(10, 0, integer=True),
        },
        "prechecks": {"attribution_validity_min": _Num(0.995, 0, 1)},
        "inputs": {"cac_per_sqo", "sql_funnel", "attribution_validity", "attribution", "fact_pipeline",
                   "payback_by_segment", "booking_rate"},
        "watch": {"bookings", "payback", "marketing_spend"},
    },
    "icp.update": {
        "thresholds": {
            "win_rate_diff_pp": _Num(5.0, 0, 100), "months": _Num(2, 1, 36, integer=True),
            "min_closed_per_month": _Num(5, 0, integer=True), "payback_improvement_months": _Num(1.0, 0),
            "dq_reason_coverage_min": _Num(0.98, 0, 1), "min_disqualified": _Num(50, 0, integer=True),
            "dimensions": _Num(["industry", "size_band"], choices=("industry", "size_band", "segment")),
        },
        "prechecks": {"routing_availability_min": _Num(0.995, 0, 1), "routing_unassigned_max": _Num(0.005, 0, 1)},
        "inputs": {"win_rate_by_segment", "dq_reason_coverage", "cac_per_sqo", "cm_by_line", "fact_bookings",
                   "routing_health", "sql_funnel"},
        "watch": {"sql_volume", "win_rate"},
    },
    "routing.policy": {
        "thresholds": {
            "shadow_match_min_pct": _Num(99.5, 0, 100), "gini_max": _Num(0.2, 0, 1),
            "min_gini_improvement": _Num(0.01, 0, 1), "min_latency_improvement_pct": _Num(None, 0, 100, nullable=True),
            "unassigned_max": _Num(0.005, 0, 1), "shadow_days": _Num(14, 1, 366, integer=True),
            "min_shadow_records": _Num(200, 1, integer=True),
            "seed": _Num(0, 0, integer=True),
        },
        "prechecks": {},
        "inputs": {"routing_health"},
        "watch": {"unassigned_rate", "availability"},
    },
    "experiment.ship": {
        "thresholds": {"srm_min_p": _Num(0.001, 0, 0.1)},
        "prechecks": {},
        "inputs": {"experiment_readout"},
        "watch": {"experiment_lift"},
    },
}


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


def _err(where: str, msg: str) -> ContractError:
    return ContractError(f"{where}: {msg}")


def _number(where: str, raw: Any, spec: _Num) -> Any:
    if spec.reasons:
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                                for k, v in raw.items()):
            raise _err(where, f"must map each name to the reason in words, e.g. {{partner: \"partner-registered "
                              f"leads enter the CRM without a web session\"}}; got {raw!r}")
        return {k: v.strip() for k, v in raw.items()}
    if spec.choices is not None:
        if not isinstance(raw, list) or not raw or any(v not in spec.choices for v in raw):
            raise _err(where, f"must be a non-empty list of {', '.join(spec.choices)}; got {raw!r}")
        return list(raw)
    if raw is None:
        if spec.nullable:
            return None
        if spec.default is None:
            raise _err(where, "is required: give a number")
        raise _err(where, f"must be a number (remove the line to use the spec's default {spec.default!r})"
                          f"{spec.hint}")
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise _err(where, f"must be a number, got {raw!r}; e.g. {spec.default!r}")
    if spec.integer and float(raw) != int(raw):
        raise _err(where, f"must be a whole number, got {raw!r}")
    if (spec.lo is not None and raw < spec.lo) or (spec.hi is not None and raw > spec.hi):
        rng = f"[{spec.lo if spec.lo is not None else '-inf'}, {spec.hi if spec.hi is not None else 'inf'}]"
        raise _err(where, f"{raw!r} is outside the allowed range {rng}")
    return int(raw) if spec.integer else float(raw)


def _numbers(where: str, raw: Any, schema: dict[str, _Num], what: str) -> dict[str, Any]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise _err(where, f"{what} must be a mapping of name: number")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown {what[:-1]}; allowed: {', '.join(sorted(schema)) or 'none'}")
    return {k: (_number(f"{where}.{k}", raw[k], s) if k in raw else copy.deepcopy(s.default))
            for k, s in schema.items()}


def _text(where: str, raw: Any, required: bool = True) -> str:
    if raw is None and not required:
        return ""
    if not isinstance(raw, str) or not raw.strip():
        raise _err(where, "must be a non-empty text")
    return raw.strip()


def _mapping(where: str, raw: Any, allowed: set[str]) -> dict:
    if not isinstance(raw, dict):
        raise _err(where, f"must be a mapping with {', '.join(sorted(allowed))}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _err(f"{where}.{unknown[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
    return raw


def parse_playbook(path: Path, known_metrics: set[str] | None = None) -> Playbook:
    """Load and validate one playbook file. ``known_metrics``: table names of contracts/metrics (checked if given)."""
    where = f"contracts/decisions/{path.name}"
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
    except OSError as e:
        raise _err(where, f"cannot be read ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise _err(where, f"not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise _err(where, "must be a mapping with node, version, taxonomy, approvers, inputs, thresholds, ...")
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise _err(f"{where}: {unknown[0]}", f"unknown field; allowed: {', '.join(sorted(_TOP))}")
    for req in _REQUIRED:
        if doc.get(req) in (None, "", [], {}):
            raise _err(f"{where}: {req}", "missing; every playbook needs " + ", ".join(_REQUIRED))
    node = doc["node"]
    if node not in NODES:
        raise _err(f"{where}: node", f"{node!r} is not a decision node; allowed: {', '.join(NODES)}")
    schema = _SCHEMA[node]
    tax = _mapping(f"{where}: taxonomy", doc["taxonomy"], {"owner", "reversibility", "risk_class", "cadence"})
    owner = _text(f"{where}: taxonomy.owner", tax.get("owner"))
    for k, allowed in (("reversibility", LEVELS), ("risk_class", LEVELS), ("cadence", CADENCES)):
        if tax.get(k) not in allowed:
            raise _err(f"{where}: taxonomy.{k}", f"{tax.get(k)!r} is not allowed; use one of {', '.join(allowed)}")
    approvers = doc["approvers"]
    if not isinstance(approvers, list) or not all(isinstance(a, str) and a.strip() for a in approvers):
        raise _err(f"{where}: approvers", "must be a list of roles, e.g. [Finance, Sales Ops]")
    if owner in approvers:
        raise _err(f"{where}: approvers", f"the owner {owner!r} cannot also approve; list other roles")
    if len(set(approvers)) != len(approvers):
        raise _err(f"{where}: approvers", "lists a role twice")
    inputs = doc["inputs"]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise _err(f"{where}: inputs", "must be a list of metric tables, e.g. [price_elasticity, cm_per_seat]")
    missing = sorted(schema["inputs"] - set(inputs))
    if missing:
        raise _err(f"{where}: inputs", f"must include {', '.join(missing)} (the node's rules read them)")
    if known_metrics is not None:
        bad = [i for i in inputs if i not in known_metrics]
        if bad:
            raise _err(f"{where}: inputs", f"{bad[0]!r} is not a metric table; known: {', '.join(sorted(known_metrics))}")
    pre = _mapping(f"{where}: prechecks", doc.get("prechecks") or {},
                   {"slo_health_green", "max_open_incident", "incident_scope", *schema["prechecks"]})
    if pre.get("slo_health_green", True) is not True:
        raise _err(f"{where}: prechecks.slo_health_green", "the spec requires SLO health green for every node; "
                                                           "it can only be true")
    max_inc = pre.get("max_open_incident", "SEV2")
    if max_inc not in SEVERITIES:
        raise _err(f"{where}: prechecks.max_open_incident", f"{max_inc!r}; use one of {', '.join(SEVERITIES)}")
    scope = pre.get("incident_scope", "dependencies")
    if scope not in INCIDENT_SCOPES:
        raise _err(f"{where}: prechecks.incident_scope", f"{scope!r}; use one of {', '.join(INCIDENT_SCOPES)}")
    node_pre = _numbers(f"{where}: prechecks", {k: v for k, v in pre.items()
                                                if k not in ("slo_health_green", "max_open_incident",
                                                             "incident_scope")},
                        schema["prechecks"], "prechecks")
    thresholds = _numbers(f"{where}: thresholds", doc.get("thresholds"), schema["thresholds"], "thresholds")
    _cross_check(where, node, thresholds)
    if node == "channel.invest":
        _check_channels(f"{where}: thresholds.attribution_validity_exempt", thresholds["attribution_validity_exempt"],
                        path.parent.parent)
    action = _mapping(f"{where}: action", doc["action"], {"flag", "summary"})
    reversal = _mapping(f"{where}: reversal", doc["reversal"], {"plan", "within_minutes", "automatic_on_breach"})
    within = _number(f"{where}: reversal.within_minutes", reversal.get("within_minutes"), _Num(None, 0.01))
    auto = reversal.get("automatic_on_breach", False)
    if not isinstance(auto, bool):
        raise _err(f"{where}: reversal.automatic_on_breach", "must be true or false")
    mon = _mapping(f"{where}: monitoring", doc["monitoring"], {"window_days", "watch"})
    window = _number(f"{where}: monitoring.window_days", mon.get("window_days"), _Num(None, 1, 366, integer=True))
    watch_raw = mon.get("watch")
    if not isinstance(watch_raw, list) or not watch_raw:
        raise _err(f"{where}: monitoring.watch", "must list what to watch, e.g. [{metric: booking_rate, rule: band, "
                                                 "limit: 0.05}]")
    watch = []
    for i, w in enumerate(watch_raw):
        wh = f"{where}: monitoring.watch[{i}]"
        w = _mapping(wh, w, {"metric", "rule", "limit"})
        if w.get("metric") not in schema["watch"]:
            raise _err(f"{wh}.metric", f"{w.get('metric')!r}; this node can watch {', '.join(sorted(schema['watch']))}")
        if w.get("rule") not in WATCH_RULES:
            raise _err(f"{wh}.rule", f"{w.get('rule')!r}; allowed: {', '.join(WATCH_RULES)}")
        limit = None
        if w["rule"] != "report":
            limit = _number(f"{wh}.limit", w.get("limit"), _Num(None, 0))
        watch.append(Watch(w["metric"], w["rule"], limit))
    review = _number(f"{where}: review_after_days", doc.get("review_after_days", window), _Num(None, 1, 366,
                                                                                               integer=True))
    return Playbook(
        path=path, node=node, version=str(doc["version"]), title=_text(f"{where}: title", doc["title"]),
        description=_text(f"{where}: description", doc.get("description"), required=False),
        spec=str(doc.get("spec") or ""), owner=owner, reversibility=tax["reversibility"],
        risk_class=tax["risk_class"], cadence=tax["cadence"], approvers=tuple(a.strip() for a in approvers),
        inputs=tuple(inputs), slo_health_green=True, max_open_incident=max_inc, incident_scope=scope,
        prechecks=node_pre,
        thresholds=thresholds, action_flag=_text(f"{where}: action.flag", action.get("flag")),
        action_summary=_text(f"{where}: action.summary", action.get("summary")),
        risk=_text(f"{where}: risk", doc["risk"]), reversal_plan=_text(f"{where}: reversal.plan", reversal.get("plan")),
        reversal_within_minutes=float(within), auto_reverse=auto, window_days=int(window), watch=tuple(watch),
        review_after_days=int(review), digest=hashlib.sha256(text.encode()).hexdigest()[:12],
    )


def _cross_check(where: str, node: str, t: dict) -> None:
    if node == "pricing.change":
        if t["elasticity_min"] > t["elasticity_max"]:
            raise _err(f"{where}: thresholds.elasticity_min", f"{t['elasticity_min']} is above elasticity_max "
                                                              f"{t['elasticity_max']}; swap them")
        if t["raise_pct_min"] > t["raise_pct_max"]:
            raise _err(f"{where}: thresholds.raise_pct_min", f"{t['raise_pct_min']} is above raise_pct_max "
                                                             f"{t['raise_pct_max']}")
    if node == "channel.invest" and t["shift_cac_per_sqo_max_ratio"] >= t["pause_cac_per_sqo_min_ratio"]:
        raise _err(f"{where}: thresholds.shift_cac_per_sqo_max_ratio",
                   "must be below pause_cac_per_sqo_min_ratio, or a channel could be shifted and paused at once")


def _check_channels(where: str, names: dict, contracts_dir: Path) -> None:
    """Exempt channels must be channels: the values of the lead contract's channel enum (when it is there)."""
    lead = contracts_dir / "entities" / "lead.yaml"
    try:
        known = yaml.safe_load(lead.read_text(encoding="utf-8"))["columns"]["channel"]["values"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return
    bad = sorted(set(names) - set(known))
    if bad:
        raise _err(where, f"{bad[0]!r} is not a channel; known (contracts/entities/lead.yaml): {', '.join(known)}")


def load_playbooks(contracts_dir: Path, known_metrics: set[str] | None = None) -> dict[str, Playbook]:
    """Every playbook of ``contracts/decisions``, by node; each of the four nodes must have exactly one."""
    folder = Path(contracts_dir) / "decisions"
    out: dict[str, Playbook] = {}
    for f in sorted(folder.glob("*.yaml")):
        if f.name == "roster.yaml":
            continue
        pb = parse_playbook(f, known_metrics)
        if pb.node in out:
            raise _err(pb.where, f"node {pb.node!r} is also defined in {out[pb.node].where}; keep one playbook per node")
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


def load_roster(contracts_dir: Path, playbooks: dict[str, Playbook] | None = None) -> Roster:
    path = Path(contracts_dir) / "decisions" / "roster.yaml"
    where = "contracts/decisions/roster.yaml"
    if not path.exists():
        raise ContractError(f"{where}: missing; list who may act for each owner and approver role "
                            "(roles: {{CRO: [dana@example.com], ...}})")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise _err(where, f"not valid YAML: {e}") from e
    doc = _mapping(where, doc, {"roles"})
    roles = doc.get("roles")
    if not isinstance(roles, dict) or not roles:
        raise _err(f"{where}: roles", "must map each role to a list of people")
    out = {}
    for role, people in roles.items():
        if not isinstance(people, list) or not people or not all(isinstance(p, str) and p.strip() for p in people):
            raise _err(f"{where}: roles.{role}", "must be a non-empty list of people (e.g. e-mail addresses)")
        out[str(role)] = tuple(p.strip() for p in people)
    for pb in (playbooks or {}).values():
        for role in (pb.owner, *pb.approvers):
            if role not in out:
                raise _err(f"{where}: roles", f"{pb.where} names the role {role!r}, which has nobody; add "
                                              f"'{role}: [someone@example.com]'")
    return Roster(out)

