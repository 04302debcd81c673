"""Evaluate a decision node: pre-checks, inputs from the metric layer, the playbook's rules, and -- when every
pre-check passes and the rules imply an action -- a proposal in the decision log with its memo.

Pre-checks every node shares (spec §4, DESIGN §5): SLO health green (``health_fn``, injected: the Dagster asset
passes the SLO resource's check; it fails closed -- "SLO health unknown" -- when there is no source or it errors)
and no open incident at the playbook's severity or worse (``ops.incidents``, read here directly). Node pre-checks:
attribution validity >= 0.995 (channel.invest), routing capacity (icp.update).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import inputs as adapter
from gtm_pipeline.decisions import lifecycle, rules
from gtm_pipeline.decisions.hashing import rows_hash
from gtm_pipeline.decisions.playbook import SEVERITIES, Playbook
from gtm_pipeline.warehouse import table_exists

# health_fn(asset keys like "metrics/cm_per_seat") -> an object with .green (bool) and .reasons (list of text)
HealthFn = Callable[[list[str]], Any]


@dataclass(frozen=True)
class Precheck:
    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {'pass' if self.passed else 'FAIL'} -- {self.detail}"


@dataclass
class NodeResult:
    node: str
    prechecks: list[Precheck]
    outcomes: list[rules.Outcome] = field(default_factory=list)
    proposals: list[lifecycle.ProposeResult] = field(default_factory=list)
    inputs_version: str = ""
    note: str = ""

    @property
    def prechecks_passed(self) -> bool:
        return all(p.passed for p in self.prechecks)

    @property
    def new_proposals(self) -> list[str]:
        return [p.decision_id for p in self.proposals if p.state == "new"]


def slo_precheck(health_fn: HealthFn | None, assets: list[str]) -> Precheck:
    if health_fn is None:
        return Precheck("slo_health", False, "SLO health unknown: no SLO health source is wired (fails closed)")
    try:
        h = health_fn(assets)
    except Exception as e:  # any failure to judge health must block, never pass
        return Precheck("slo_health", False, f"SLO health unknown: {type(e).__name__}: {str(e)[:300]}")
    green = bool(getattr(h, "green", False))
    reasons = list(getattr(h, "reasons", ()) or ())
    return Precheck("slo_health", green, "SLO health green" if green else
                    "SLO health not green: " + ("; ".join(reasons[:5]) or "no reason given"))


def metric_dependencies(contracts_dir: Path, inputs: tuple[str, ...] | list[str]) -> set[str]:
    """The metric tables and clean entities ``inputs`` read, directly or through other metrics (from the metric
    contracts' ``inputs``): e.g. {"metrics/cm_per_seat", "metrics/cm_by_line", "clean/opportunity", ...}."""
    from gtm_pipeline.metrics.contract import load_metric_contracts

    contracts = load_metric_contracts(Path(contracts_dir))
    seen: set[str] = set()
    stack = list(inputs)
    while stack:
        name = stack.pop()
        key = name.replace("clean.", "clean/") if name.startswith("clean.") else f"metrics/{name}"
        if key in seen:
            continue
        seen.add(key)
        if name in contracts:
            stack.extend(contracts[name].inputs)
    return seen


def _concerns(asset_key: str | None, deps: set[str]) -> bool:
    """Does an incident on ``asset_key`` bear on a node reading ``deps``? Only an incident about metric tables or
    clean entities that are all outside ``deps`` does not; anything else (ingest, contracts, platform) does."""
    parts = [p.strip() for p in (asset_key or "").split(",") if p.strip()]
    if not parts:
        return True
    return any(not (p.startswith("metrics/") or p.startswith("clean/")) or p in deps for p in parts)


def incident_precheck(con, max_severity: str, deps: set[str] | None = None) -> Precheck:
    """No open incident at ``max_severity`` or worse (SEV1 is the worst) in ops.incidents. With ``deps`` (scope
    ``dependencies``), incidents about metric tables or entities the node does not depend on are ignored."""
    blocking = list(SEVERITIES[: SEVERITIES.index(max_severity) + 1])
    if not table_exists(con, "ops", "incidents"):
        return Precheck("no_open_incident", True, "no incidents table: nothing open")
    # An acknowledged incident is still open: someone is on it, the decision still waits.
    rows = con.execute(f"SELECT incident_id, severity, title, asset_key FROM ops.incidents "
                       f"WHERE status IN ('open', 'acknowledged') AND "
                       f"severity IN ({', '.join('?' for _ in blocking)}) ORDER BY severity, opened_at",
                       blocking).fetchall()
    ignored = [r for r in rows if deps is not None and not _concerns(r[3], deps)]
    rows = [r[:3] for r in rows if r not in ignored]
    if rows:
        listed = "; ".join(f"{i} {s} {t}" for i, s, t in rows[:3])
        return Precheck("no_open_incident", False, f"{len(rows)} open {'/'.join(blocking)} incident(s): {listed}")
    return Precheck("no_open_incident", True, f"no open {'/'.join(blocking)} incident"
                    + (f" on what this node reads ({len(ignored)} elsewhere: "
                       f"{', '.join(r[0] + ' ' + str(r[3]) for r in ignored[:3])})" if ignored else ""))


def _flag_state(con, flag: str, initial: dict) -> tuple[flagstore.FlagVersion | None, dict]:
    cur = flagstore.current(con, flag)
    return cur, (cur.value if cur else initial)


def evaluate_node(dc: lifecycle.DecisionContext, pb: Playbook, health_fn: HealthFn | None) -> NodeResult:
    """Run the pre-checks and rules of ``pb``; log a proposal for every action they imply (pre-checks passing)."""
    deps = metric_dependencies(dc.contracts_dir, pb.inputs) if pb.incident_scope == "dependencies" else None
    pre = [slo_precheck(health_fn, [f"metrics/{t}" for t in pb.inputs]),
           incident_precheck(dc.con, pb.max_open_incident, deps)]
    fn = {"pricing.change": _pricing, "channel.invest": _channel, "icp.update": _icp,
          "routing.policy": _routing}[pb.node]
    try:
        return fn(dc, pb, pre)
    except adapter.InputsNotPublished as e:
        # Not enough published inputs to decide (a young warehouse, or a metric blocked since it first ran): the
        # node proposes nothing and says why, like any failed pre-check, instead of failing the run.
        result = NodeResult(pb.node, [*pre, Precheck("inputs_published", False, str(e))])
        result.note = f"pre-check failed: no proposal (inputs_published: FAIL -- {e})"
        return result


def _finish(dc, pb, result: NodeResult, items: list[tuple[rules.Outcome, dict, str, dict, dict]]) -> NodeResult:
    """``items``: (outcome, hashed tables, flag, initial value, new value) for each proposing outcome."""
    summary = [str(p) for p in result.prechecks]
    if not result.prechecks_passed:
        result.note = "pre-check failed: no proposal (" + "; ".join(str(p) for p in result.prechecks
                                                                   if not p.passed) + ")"
        return result
    for outcome, tables, flag, initial, new in items:
        cur = flagstore.current(dc.con, flag)
        result.proposals.append(lifecycle.propose(
            dc, pb, outcome, tables=tables, inputs_hash=rows_hash(tables), inputs_version=result.inputs_version,
            flag=flag, flag_before=cur, initial_value=initial, new_value=new, precheck_summary=summary))
    return result


def _pricing(dc, pb: Playbook, pre: list[Precheck]) -> NodeResult:
    inp = adapter.read_pricing(dc.con)
    result = NodeResult(pb.node, pre, inputs_version=inp.version)
    result.outcomes = rules.evaluate_pricing(inp.figures["segments"], pb.thresholds)
    items = []
    for o in result.outcomes:
        if not o.proposes:
            continue
        seg = o.subject
        flag = pb.action_flag.replace("{segment}", seg)
        initial = {"segment": seg, "card": f"{seg}-base", "list_price_multiplier": 1.0, "discount_ladders": "current"}
        cur, before = _flag_state(dc.con, flag, initial)
        mult = round(float(before.get("list_price_multiplier", 1.0)) * (1 + o.action["raise_pct"] / 100.0), 6)
        new = {"segment": seg, "card": f"{seg}-v{(cur.version if cur else 1) + 1}", "list_price_multiplier": mult,
               "raise_pct": o.action["raise_pct"], "discount_ladders": "hold"}
        tables = {**inp.subset("segment", seg), "flag": [{"flag": flag, "value": before}]}
        items.append((o, tables, flag, initial, new))
    return _finish(dc, pb, result, items)


def _channel(dc, pb: Playbook, pre: list[Precheck]) -> NodeResult:
    inp = adapter.read_channel(dc.con)
    validity = inp.figures["attribution_validity"]
    need = pb.prechecks["attribution_validity_min"]
    pre = pre + [Precheck("attribution_validity", validity is not None and rules.ge(validity, need),
                          f"attribution validity {'unknown' if validity is None else f'{validity:.4f}'} "
                          f"(needs >= {need})")]
    result = NodeResult(pb.node, pre, inputs_version=inp.version)
    o = rules.evaluate_channel(inp.figures["channels"], inp.figures["baseline"], pb.thresholds)
    o.figures["payback_all"] = inp.figures["payback_all"]
    o.figures["attribution_validity"] = validity
    result.outcomes = [o]
    items = []
    if o.proposes:
        flag = pb.action_flag
        current = {c: float(v.get("marketing_cost") or 0.0) for c, v in inp.figures["channels"].items()
                   if c not in ("all", "unattributed")}
        initial = {"split": {c: round(v, 2) for c, v in current.items()}, "paused": [], "shifted": [],
                   "basis": "marketing cost by channel over the metric window (metrics.cac_per_sqo)"}
        _, before = _flag_state(dc.con, flag, initial)
        new = {"split": o.action["split"], "paused": o.action["pause"], "shifted": o.action["shift"],
               "total_change": o.action["total_change"], "basis": initial["basis"]}
        items.append((o, {**inp.tables, "flag": [{"flag": flag, "value": before}]}, flag, initial, new))
    return _finish(dc, pb, result, items)


def _icp(dc, pb: Playbook, pre: list[Precheck]) -> NodeResult:
    inp = adapter.read_icp(dc.con, pb.thresholds["dimensions"])
    r = inp.figures["routing"] or {}
    av, ua = r.get("availability"), r.get("unassigned_rate")
    p = pb.prechecks
    ok = av is not None and ua is not None and rules.ge(av, p["routing_availability_min"]) and \
        rules.le(ua, p["routing_unassigned_max"])
    pre = pre + [Precheck("routing_capacity", ok,
                          f"routing availability {av if av is None else f'{av:.4f}'} (>= "
                          f"{p['routing_availability_min']}), unassigned {ua if ua is None else f'{ua:.4f}'} "
                          f"(<= {p['routing_unassigned_max']})")]
    result = NodeResult(pb.node, pre, inputs_version=inp.version)
    flag = pb.action_flag
    initial = {"include": [], "exclude": [], "dq_gates": False}
    _, before = _flag_state(dc.con, flag, initial)
    o = rules.evaluate_icp(inp.figures["win_rows"], inp.figures["payback"], inp.figures["baseline_payback"],
                           inp.figures["dq_coverage"], before, pb.thresholds)
    result.outcomes = [o]
    items = []
    if o.proposes:
        items.append((o, {**inp.tables, "flag": [{"flag": flag, "value": before}]}, flag, initial,
                      o.action["filter"]))
    return _finish(dc, pb, result, items)


def shadow_figures(con, contracts_dir, t: dict) -> tuple[dict | None, dict]:
    """Shadow-compare the candidate rule set with the one in force on the latest ``shadow_days`` delivery days.
    Returns (figures for `rules.evaluate_routing`, extra figures for the memo)."""
    from gtm_pipeline import routing

    in_force = flagstore.routing_rule_set_in_force(con, contracts_dir)
    cands = [rs for rs in routing.load_rule_sets(contracts_dir).values()
             if rs.status == "candidate" and rs.name != in_force.name]
    extra: dict[str, Any] = {"in_force": in_force.label}
    if not cands or not table_exists(con, "clean", "lead"):
        return None, extra
    cand = sorted(cands, key=lambda rs: rs.name)[0]
    days = [str(d[0]) for d in con.execute("SELECT DISTINCT _partition FROM clean.lead WHERE _partition IS NOT NULL "
                                           "ORDER BY 1 DESC LIMIT ?", [int(t["shadow_days"])]).fetchall()]
    records = routing.records_from_clean(con, "lead", days) + routing.records_from_clean(con, "opportunity", days)
    if not records:
        return None, extra
    owners = routing.load_owners(con, {r.day for r in records})
    rep = routing.shadow_evaluate(records, in_force, cand, owners, seed=int(t["seed"]))
    shadow = {"current": rep.current, "candidate": rep.candidate, "candidate_name": cand.name,
              "current_name": in_force.name, "records": rep.records, "identical": rep.identical,
              "match_pct": round(rep.match_pct, 6), "unassigned_current": rep.unassigned_current,
              "unassigned_candidate": rep.unassigned_candidate, "gini_current": round(rep.gini_current, 6),
              "gini_candidate": round(rep.gini_candidate, 6), "days": sorted(days)}
    extra.update(latency_current=rep.latency_current.as_dict(), latency_candidate=rep.latency_candidate.as_dict(),
                 differences=rep.differences[:5])
    return shadow, extra


def _routing(dc, pb: Playbook, pre: list[Precheck]) -> NodeResult:
    inp = adapter.read_routing_health(dc.con)
    result = NodeResult(pb.node, pre, inputs_version=inp.version)
    shadow, extra = shadow_figures(dc.con, dc.contracts_dir, pb.thresholds)
    t = dict(pb.thresholds)
    judged = dict(shadow or {})
    if shadow and t.get("min_latency_improvement_pct") is not None:
        judged.update(p95_ms_current=extra["latency_current"]["p95_ms"],
                      p95_ms_candidate=extra["latency_candidate"]["p95_ms"])
    o = rules.evaluate_routing(judged or None, t)
    o.figures.update(health=inp.figures["health"], **extra)
    result.outcomes = [o]
    items = []
    if o.proposes:
        flag = pb.action_flag
        in_force = extra["in_force"]
        initial = {"enabled": True, "rule_set": shadow["current_name"], "label": in_force}
        _, before = _flag_state(dc.con, flag, initial)
        new = {"enabled": False, "rule_set": shadow["candidate_name"], "label": shadow["candidate"]}
        # Latency figures are timing measurements and stay out of the hash (same inputs, same hash).
        tables = {**inp.tables, "shadow": [shadow], "flag": [{"flag": flag, "value": before}]}
        o.action["current"] = shadow["current"]
        items.append((o, tables, flag, initial, new))
    return _finish(dc, pb, result, items)

