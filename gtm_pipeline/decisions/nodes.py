"""Evaluate a decision node: pre-checks, inputs from the metric layer, the playbook's rules, and -- when every
pre-check passes and the rules imply an action -- a proposal in the decision log with its memo.

The shared pre-checks are in `gates` (SLO health, no open incident in scope, every input's data time within its
SLO); node pre-checks: attribution validity >= 0.995 (channel.invest), routing capacity (icp.update). `recheck`
runs them all again at approve and at apply, and recomputes the proposal's inputs hash (issue 14 §1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import inputs as adapter
from gtm_pipeline.decisions import propose, rules
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.gates import (
    HealthFn,
    Precheck,
    incident_precheck,
    metric_dependencies,
    shared_prechecks,
    slo_precheck,
)
from gtm_pipeline.decisions.hashing import canonical_json, normalize, rows_hash
from gtm_pipeline.decisions.playbook import Playbook
from gtm_pipeline.decisions.record import Decision
from gtm_pipeline.experiments.contract import load_experiments
from gtm_pipeline.routing import engine as routing
from gtm_pipeline.warehouse import table_exists

# The pre-checks lived here before gates.py; callers still import them from nodes.
__all__ = ["HealthFn", "NodeResult", "Precheck", "Recheck", "evaluate_node", "incident_precheck",
           "metric_dependencies", "recheck", "shadow_figures", "slo_precheck"]

# (outcome, hashed tables, flag, initial value, new value) of one proposing outcome
Item = tuple[rules.Outcome, dict, str, dict, dict]


@dataclass
class NodeResult:
    node: str
    prechecks: list[Precheck]
    outcomes: list[rules.Outcome] = field(default_factory=list)
    proposals: list[propose.ProposeResult] = field(default_factory=list)
    inputs_version: str = ""
    note: str = ""

    @property
    def prechecks_passed(self) -> bool:
        return all(p.passed for p in self.prechecks)

    @property
    def new_proposals(self) -> list[str]:
        return [p.decision_id for p in self.proposals if p.state == "new"]


@dataclass
class Reading:
    """What a node reads and concludes, before anything is logged."""

    prechecks: list[Precheck]                      # the node's own pre-checks
    inputs_version: str
    outcomes: list[rules.Outcome]
    items: list[Item]                              # the proposing outcomes
    subjects: dict[str, dict]                      # subject -> the exact tables its proposal hashes (every subject)


def _flag_state(con, flag: str, initial: dict) -> tuple[flagstore.FlagVersion | None, dict]:
    cur = flagstore.current(con, flag)
    return cur, (cur.value if cur else initial)


def evaluate_node(dc: DecisionContext, pb: Playbook, health_fn: HealthFn | None) -> NodeResult:
    """Run the pre-checks and rules of ``pb``; log a proposal for every action they imply (pre-checks passing)."""
    pre = shared_prechecks(dc, pb, health_fn)
    try:
        reading = _READERS[pb.node](dc, pb)
    except adapter.InputsNotPublished as e:
        # Not enough published inputs to decide (a young warehouse, or a metric blocked since it first ran): the
        # node proposes nothing and says why, like any failed pre-check, instead of failing the run.
        result = NodeResult(pb.node, [*pre, _unpublished(e)])
        result.note = f"pre-check failed: no proposal (inputs_published: FAIL -- {e})"
        return result
    result = NodeResult(pb.node, pre + reading.prechecks, reading.outcomes, inputs_version=reading.inputs_version)
    return _finish(dc, pb, result, reading.items)


def _unpublished(e: Exception) -> Precheck:
    return Precheck("inputs_published", False, str(e), "inputs not published", "every input published",
                    "run the metric layer: gtm-pipeline refresh")


def _finish(dc, pb, result: NodeResult, items: list[Item]) -> NodeResult:
    summary = [str(p) for p in result.prechecks]
    if not result.prechecks_passed:
        result.note = "pre-check failed: no proposal (" + "; ".join(str(p) for p in result.prechecks
                                                                   if not p.passed) + ")"
        return result
    for outcome, tables, flag, initial, new in items:
        cur = flagstore.current(dc.con, flag)
        result.proposals.append(propose.propose(
            dc, pb, outcome, tables=tables, inputs_hash=rows_hash(tables), inputs_version=result.inputs_version,
            flag=flag, flag_before=cur, initial_value=initial, new_value=new, precheck_summary=summary))
    return result


# ---- re-checks at approve and apply ---------------------------------------------------------------------------------

@dataclass
class Recheck:
    prechecks: list[Precheck]                      # every gate, as it stands now
    inputs_hash: str | None = None                 # of the subject's inputs now (None: not readable / gone)
    changed: list[dict] = field(default_factory=list)   # which inputs differ from the proposal's, and how

    @property
    def superseded(self) -> bool:
        return bool(self.changed)

    @property
    def failed(self) -> list[Precheck]:
        return [p for p in self.prechecks if not p.passed]


def recheck(dc: DecisionContext, d: Decision, health_fn: HealthFn | None) -> Recheck:
    """Every gate of ``d``'s node again, and its inputs read again and hashed as at the proposal."""
    pb = dc.playbooks[d.node]
    pre = shared_prechecks(dc, pb, health_fn)
    try:
        reading = _READERS[pb.node](dc, pb)
    except adapter.InputsNotPublished as e:
        return Recheck([*pre, _unpublished(e)])
    tables = reading.subjects.get(d.proposal.subject)
    now_hash = rows_hash(tables) if tables is not None else None
    out = Recheck(pre + reading.prechecks, now_hash)
    if now_hash != d.proposal.inputs_hash:
        out.changed = changed_inputs(dc, d, tables)
    if pb.selected_thresholds() != d.proposal.thresholds_dict:
        out.changed.append({"input": f"playbook {pb.where}", "change": "thresholds or pre-checks edited since the "
                                                                      "proposal"})
    return out


def changed_inputs(dc, d: Decision, tables: dict | None) -> list[dict]:
    """Which of the proposal's hashed tables differ now, with the row counts and the first differing row."""
    if tables is None:
        return [{"input": d.proposal.subject, "change": f"{d.node} no longer evaluates {d.proposal.subject!r} "
                                                        f"(its inputs are gone)"}]
    row = dc.con.execute("SELECT rows_json FROM decisions.inputs WHERE decision_id = ? LIMIT 1",
                         [d.decision_id]).fetchone()
    before = json.loads(row[0]) if row else {}
    out = []
    for name in sorted(set(before) | set(tables)):
        old = sorted((normalize(r) for r in before.get(name, [])), key=canonical_json)
        new = sorted((normalize(r) for r in tables.get(name, [])), key=canonical_json)
        if canonical_json(old) == canonical_json(new):
            continue
        gone = [r for r in old if r not in new]
        came = [r for r in new if r not in old]
        # The flag table holds the flag's value the proposal was made against: name the flag itself.
        label = f"flag {(old or new)[0].get('flag')}" if name == "flag" and (old or new) else name
        out.append({"input": label, "rows_before": len(old), "rows_now": len(new),
                    "change": f"{len(gone)} row(s) changed or removed, {len(came)} changed or added",
                    "was": gone[0] if gone else None, "now": came[0] if came else None})
    return out or [{"input": "(unknown)", "change": "the inputs hash differs but the stored rows match"}]


def _pricing(dc, pb: Playbook) -> Reading:
    inp = adapter.read_pricing(dc.con)
    outcomes = rules.evaluate_pricing(inp.figures["segments"], pb.thresholds)
    items, subjects = [], {}
    for o in outcomes:
        seg = o.subject
        flag = pb.action_flag.replace("{segment}", seg)
        initial = {"segment": seg, "card": f"{seg}-base", "list_price_multiplier": 1.0, "discount_ladders": "current"}
        cur, before = _flag_state(dc.con, flag, initial)
        subjects[seg] = tables = {**inp.subset("segment", seg), "flag": [{"flag": flag, "value": before}]}
        if o.action is None:
            continue
        mult = round(float(before.get("list_price_multiplier", 1.0)) * (1 + o.action["raise_pct"] / 100.0), 6)
        new = {"segment": seg, "card": f"{seg}-v{(cur.version if cur else 1) + 1}", "list_price_multiplier": mult,
               "raise_pct": o.action["raise_pct"], "discount_ladders": "hold"}
        items.append((o, tables, flag, initial, new))
    return Reading([], inp.version, outcomes, items, subjects)


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.4f}"


def _channel(dc, pb: Playbook) -> Reading:
    inp = adapter.read_channel(dc.con)
    validity = inp.figures["attribution_validity"]
    need = pb.prechecks["attribution_validity_min"]
    pre = [Precheck("attribution_validity", validity is not None and rules.ge(validity, need),
                    f"attribution validity {_fmt(validity)} (needs >= {need})",
                    f"attribution validity {_fmt(validity)}", f">= {need} ({pb.where}: prechecks."
                                                              f"attribution_validity_min)",
                    "repair the opportunities without a valid touch path, then gtm-pipeline metrics refresh "
                    "attribution_validity")]
    o = rules.evaluate_channel(inp.figures["channels"], inp.figures["baseline"], pb.thresholds)
    o.figures["payback_all"] = inp.figures["payback_all"]
    o.figures["attribution_validity"] = validity
    flag = pb.action_flag
    current = {c: float(v.get("marketing_cost") or 0.0) for c, v in inp.figures["channels"].items()
               if c not in ("all", "unattributed")}
    initial = {"split": {c: round(v, 2) for c, v in current.items()}, "paused": [], "shifted": [],
               "basis": "marketing cost by channel over the metric window (metrics.cac_per_sqo)"}
    _, before = _flag_state(dc.con, flag, initial)
    tables = {**inp.tables, "flag": [{"flag": flag, "value": before}]}
    items = []
    if o.action is not None:
        new = {"split": o.action["split"], "paused": o.action["pause"], "shifted": o.action["shift"],
               "total_change": o.action["total_change"], "held": o.action["held"],
               "unallocated": o.action["unallocated"], "basis": initial["basis"]}
        items.append((o, tables, flag, initial, new))
    return Reading(pre, inp.version, [o], items, {o.subject: tables})


def _icp(dc, pb: Playbook) -> Reading:
    inp = adapter.read_icp(dc.con, pb.thresholds["dimensions"])
    r = inp.figures["routing"] or {}
    av, ua = r.get("availability"), r.get("unassigned_rate")
    p = pb.prechecks
    ok = av is not None and ua is not None and rules.ge(av, p["routing_availability_min"]) and \
        rules.le(ua, p["routing_unassigned_max"])
    pre = [Precheck("routing_capacity", ok,
                    f"routing availability {av if av is None else f'{av:.4f}'} (>= "
                    f"{p['routing_availability_min']}), unassigned {ua if ua is None else f'{ua:.4f}'} "
                    f"(<= {p['routing_unassigned_max']})",
                    f"routing availability {_fmt(av)}, unassigned rate {_fmt(ua)}",
                    f"availability >= {p['routing_availability_min']} and unassigned <= "
                    f"{p['routing_unassigned_max']} ({pb.where}: prechecks)",
                    "add routing capacity (owners, contracts/routing) and gtm-pipeline metrics refresh routing_health")]
    flag = pb.action_flag
    initial = {"include": [], "exclude": [], "dq_gates": False}
    _, before = _flag_state(dc.con, flag, initial)
    o = rules.evaluate_icp(inp.figures["win_rows"], inp.figures["payback"], inp.figures["baseline_payback"],
                           inp.figures["dq_coverage"], before, pb.thresholds,
                           dq_disqualified=inp.figures["dq_disqualified"])
    tables = {**inp.tables, "flag": [{"flag": flag, "value": before}]}
    items = [(o, tables, flag, initial, o.action["filter"])] if o.action is not None else []
    return Reading(pre, inp.version, [o], items, {o.subject: tables})


def shadow_figures(con, contracts_dir, t: dict) -> tuple[dict | None, dict]:
    """Shadow-compare the candidate rule set with the one in force on the latest ``shadow_days`` delivery days.
    Returns (figures for `rules.evaluate_routing`, extra figures for the memo)."""
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


def _routing(dc, pb: Playbook) -> Reading:
    inp = adapter.read_routing_health(dc.con)
    shadow, extra = shadow_figures(dc.con, dc.contracts_dir, pb.thresholds)
    t = dict(pb.thresholds)
    judged = dict(shadow or {})
    if shadow and t.get("min_latency_improvement_pct") is not None:
        judged.update(p95_ms_current=extra["latency_current"]["p95_ms"],
                      p95_ms_candidate=extra["latency_candidate"]["p95_ms"])
    o = rules.evaluate_routing(judged or None, t)
    o.figures.update(health=inp.figures["health"], **extra)
    items, subjects = [], {}
    if shadow:
        flag = pb.action_flag
        initial = {"enabled": True, "rule_set": shadow["current_name"], "label": extra["in_force"]}
        _, before = _flag_state(dc.con, flag, initial)
        # Latency figures are timing measurements and stay out of the hash (same inputs, same hash).
        subjects[o.subject] = tables = {**inp.tables, "shadow": [shadow], "flag": [{"flag": flag, "value": before}]}
        if o.action is not None:
            new = {"enabled": False, "rule_set": shadow["candidate_name"], "label": shadow["candidate"]}
            o.action["current"] = shadow["current"]
            items.append((o, tables, flag, initial, new))
    return Reading([], inp.version, [o], items, subjects)


def _experiment(dc, pb: Playbook) -> Reading:
    """One outcome per experiment contract: its latest look, decided by the rule; the flag is the contract's own."""
    inp = adapter.read_experiments(dc.con)
    exps = load_experiments(dc.contracts_dir)
    outcomes, items, subjects = [], [], {}
    for name, exp in sorted(exps.items()):
        rows = inp.figures["experiments"].get(name, [])
        o = rules.evaluate_experiment(name, rows, pb.thresholds)
        o.figures.update(planned_units=exp.planned_units, alpha=exp.alpha, decision_threshold=exp.decision_threshold,
                         primary_metric=exp.primary_metric.label, experiment_owner=exp.owner)
        outcomes.append(o)
        initial = {"experiment": name, "state": "running", "arm": None}
        _, before = _flag_state(dc.con, exp.flag, initial)
        subjects[name] = tables = {"experiment_readout": rows, "flag": [{"flag": exp.flag, "value": before}]}
        if o.action is not None:
            state = {"ship": "shipped", "roll back": "rolled_back", "stop": "stopped"}[o.action["decision"]]
            items.append((o, tables, exp.flag, initial, {"experiment": name, "state": state, "arm": o.action["arm"]}))
    return Reading([], inp.version, outcomes, items, subjects)


_READERS = {"pricing.change": _pricing, "channel.invest": _channel, "icp.update": _icp, "routing.policy": _routing,
            "experiment.ship": _experiment}
