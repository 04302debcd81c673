"""Monitoring plans (spec 002 §4, "Reversal & Monitoring"): after a decision is applied, its playbook's watch list is
evaluated on the metric rows dated from the decision's effective day on, every time the metric layer refreshes.

| node | watched | breach |
|---|---|---|
| pricing.change | segment booking rate (won / closed), since the change vs 14 days before | outside ±5 % (relative) |
| pricing.change | CM per seat of the segment, now vs at the proposal | reported (the spec gives no limit) |
| pricing.change | list price per seat of the segment's bookings since vs the price card in force | reported |
| channel.invest | bookings per week (all segments) since vs before | drop > 10 % (project default) |
| channel.invest | payback months (all segments), now vs at the proposal | +0.5 month (project default) |
| channel.invest | marketing spend per week since vs the budget split in force (decisions.channel_plan) | reported |
| icp.update | SQLs per week (all channels) since vs before | drop > 10 % (spec) |
| icp.update | win rate (all channels) since vs before | drop > 5 pp (project default) |
| routing.policy | unassigned rate / availability since the change | > 0.5 % / < 0.995 (spec) |
| experiment.ship | the decided arm's lift in the latest readout vs at the proposal | reported |

A breach logs ``reversal_proposed`` -- or, where the playbook sets ``automatic_on_breach`` (routing: flip
FF_ROUTING_V1), performs the reversal. A window that ends with every check in bounds logs ``confirmed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta

from gtm_pipeline.decisions import inputs as adapter
from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.decisions.hashing import rows_hash
from gtm_pipeline.decisions.playbook import Watch
from gtm_pipeline.decisions.rules import EPS


@dataclass
class WatchResult:
    metric: str
    rule: str
    limit: float | None
    baseline: float | None
    observed: float | None
    days_observed: int
    breached: bool
    text: str

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("metric", "rule", "limit", "baseline", "observed", "days_observed",
                                               "breached", "text")}


def judge(w: Watch, baseline: float | None, observed: float | None) -> tuple[bool, str]:
    """Is ``observed`` a breach of watch ``w`` against ``baseline``? (False while a figure is missing.)"""
    if observed is None:
        return False, f"{w.metric}: no data since the change yet"
    no_baseline = f"{w.metric} {observed:.4f}: no baseline before the change to compare with"
    if w.rule == "report":
        if baseline is None:
            return False, no_baseline
        return False, f"{w.metric} {observed:.4f} (baseline {baseline:.4f}, Δ {observed - baseline:+.4f})"
    # Every rule but report has a limit: the playbook loader requires one (playbook_spec.WatchSpec._needed).
    assert w.limit is not None, f"{w.metric}: rule {w.rule} has no limit"
    limit = w.limit
    if w.rule == "max":
        bad = observed > limit + EPS
        return bad, f"{w.metric} {observed:.4f} {'>' if bad else '<='} {limit}"
    if w.rule == "min":
        bad = observed < limit - EPS
        return bad, f"{w.metric} {observed:.4f} {'<' if bad else '>='} {limit}"
    if baseline is None:
        return False, no_baseline
    if w.rule == "band":
        rel = (observed - baseline) / baseline if baseline else 0.0
        bad = abs(rel) > limit + EPS
        return bad, (f"{w.metric} {observed:.4f} vs baseline {baseline:.4f} ({rel:+.1%}; band ±{limit:.0%})"
                     + (": BREACH" if bad else ""))
    if w.rule == "max_drop":
        rel = (observed - baseline) / baseline if baseline else 0.0
        bad = rel < -limit - EPS
        return bad, (f"{w.metric} {observed:,.2f} vs baseline {baseline:,.2f} ({rel:+.1%}; max drop {limit:.0%})"
                     + (": BREACH" if bad else ""))
    if w.rule == "max_drop_abs":
        delta = observed - baseline
        bad = delta < -limit - EPS
        return bad, (f"{w.metric} {observed:.4f} vs baseline {baseline:.4f} ({delta:+.4f}; max drop {limit:g})"
                     + (": BREACH" if bad else ""))
    if w.rule == "max_increase":
        delta = observed - baseline
        bad = delta > limit + EPS
        return bad, (f"{w.metric} {observed:.3f} vs {baseline:.3f} at the proposal ({delta:+.3f}; max +{limit:g})"
                     + (": BREACH" if bad else ""))
    raise ValueError(w.rule)


def _proposal_figure(d: lifecycle.Decision, key: str) -> float | None:
    v = d.proposal.details_dict.get("figures", {}).get(key)
    return None if v is None else float(v)


def measure(con, d: lifecycle.Decision, w: Watch, start: date, window_days: int) -> tuple[float | None, float | None,
                                                                                        int]:
    """(baseline, observed, days observed) of one watched metric for decision ``d``."""
    subject = d.proposal.subject
    if w.metric == "booking_rate":
        return adapter.series_booking_rate(con, subject, start, window_days)
    if w.metric == "cm_per_seat":
        now = adapter.current_figure(con, "cm_per_seat", "cm_per_seat", "segment", subject)
        return _proposal_figure(d, "cm_per_seat"), now, 0 if now is None else 1
    if w.metric == "list_price":
        return adapter.series_list_price(con, subject, start, window_days)
    if w.metric == "bookings":
        return adapter.series_bookings(con, start, window_days)
    if w.metric == "marketing_spend":
        return adapter.series_marketing_spend(con, start, window_days)
    if w.metric == "payback":
        now = adapter.current_figure(con, "payback_by_segment", "payback_months", "segment", "all")
        at = d.proposal.details_dict.get("figures", {}).get("payback_all")
        return (None if at is None else float(at)), now, 0 if now is None else 1
    if w.metric == "sql_volume":
        return adapter.series_sql_volume(con, start, window_days)
    if w.metric == "win_rate":
        return adapter.series_win_rate(con, start, window_days)
    if w.metric == "experiment_lift":
        arm = d.action.get("arm")
        now, look = adapter.series_experiment_lift(con, subject, arm)
        at = d.proposal.details_dict.get("figures", {}).get("arms", {}).get(arm, {}).get("estimate")
        return (None if at is None else float(at)), now, look
    if w.metric in ("unassigned_rate", "availability"):
        return adapter.series_routing(con, start, window_days)[w.metric]
    raise ValueError(w.metric)


def data_through(con) -> date | None:
    """The newest day the metric layer has data for (booking rate or routing health days)."""
    best = None
    for table in ("booking_rate", "routing_health"):
        if adapter.table_exists(con, "metrics", table):
            v = con.execute(f"SELECT max(day::DATE) FROM metrics.{table} WHERE day <> 'all'").fetchone()[0]
            if v is not None and (best is None or v > best):
                best = v
    return best


@dataclass
class MonitorOutcome:
    decision_id: str
    node: str
    results: list[WatchResult]
    complete: bool
    event: str | None       # what was logged: monitored / reversal_proposed / reversed / confirmed / None


def evaluate_decision(dc: lifecycle.DecisionContext, d: lifecycle.Decision) -> MonitorOutcome:
    pb = dc.playbooks[d.node]
    applied = d.entry(log.APPLIED).details_dict
    start = date.fromisoformat(applied["effective_date"])
    results = []
    for w in pb.watch:
        base, obs, days = measure(dc.con, d, w, start, pb.window_days)
        bad, text = judge(w, base, obs)
        results.append(WatchResult(w.metric, w.rule, w.limit, base, obs, days, bad, text))
    through = data_through(dc.con)
    complete = through is not None and through >= start + timedelta(days=pb.window_days - 1)
    breached = [r.text for r in results if r.breached]
    figures = [r.as_dict() for r in results]
    h = rows_hash({"monitoring": figures + [{"complete": complete}]})
    event = lifecycle.record_monitoring(dc, d, results=figures, breached=breached, complete=complete, inputs_hash=h)
    return MonitorOutcome(d.decision_id, d.node, results, complete, event)


def evaluate_all(dc: lifecycle.DecisionContext) -> list[MonitorOutcome]:
    """Evaluate every applied decision that is not closed yet."""
    return [evaluate_decision(dc, d) for d in lifecycle.all_decisions(dc)
            if d.status in log.IN_FLIGHT_STATUSES and d.latest(log.APPLIED) is not None]


def summary_rows(outcomes: list[MonitorOutcome]) -> list[dict]:
    return [{"decision_id": o.decision_id, "node": o.node, "event": o.event or "unchanged",
             "window_complete": o.complete, "checks": json.dumps([r.text for r in o.results])} for o in outcomes]
