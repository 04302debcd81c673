"""§4.4 routing.policy: promote the candidate rule set on shadow match >= 99.5 % or a documented improvement,
behind the hard gates Gini <= 0.2 and unassigned <= 0.5 % (no SLO regression)."""

from __future__ import annotations

from typing import Any

from gtm_pipeline.decisions.rules.common import INSUFFICIENT_DATA, Outcome, finish, ge, hold, le, num


def shadow_report(shadow: dict) -> dict[str, Any]:
    """The shadow comparison report a promotion is "documented" by (spec 002 §4.4 "documented improvement"): both rule
    sets' figures on the same records, stored with the proposal (its figures and action in the decision log; the
    shadow rows in decisions.inputs under its inputs hash)."""
    n = num(shadow.get("records"))

    def rate(k: str) -> float | None:
        v = num(shadow.get(k))
        return None if not n or v is None else v / n

    g_cur, g_cand = num(shadow.get("gini_current")), num(shadow.get("gini_candidate"))
    p95_cur, p95_cand = num(shadow.get("p95_ms_current")), num(shadow.get("p95_ms_candidate"))
    return {"current": shadow.get("current"), "candidate": shadow.get("candidate"), "days": shadow.get("days"),
            "records": None if n is None else int(n), "match_pct": num(shadow.get("match_pct")),
            "unassigned_rate_current": rate("unassigned_current"),
            "unassigned_rate_candidate": rate("unassigned_candidate"),
            "gini_current": g_cur, "gini_candidate": g_cand,
            "gini_improvement": None if g_cur is None or g_cand is None else g_cur - g_cand,
            "p95_ms_current": p95_cur, "p95_ms_candidate": p95_cand,
            "p95_improvement_pct": (None if not p95_cur or p95_cand is None
                                    else 100 * (p95_cur - p95_cand) / p95_cur)}


def _routing_gap(rep: dict, t: dict) -> str | None:
    n = rep["records"]
    if not n:
        return "no records were routed in the shadow window"
    if n < t["min_shadow_records"]:
        return (f"{n} records < min_shadow_records {t['min_shadow_records']}: one differing record moves the match "
                f"by {100 / n:.2f} pp")
    for k in ("match_pct", "gini_candidate", "unassigned_rate_candidate"):
        if rep[k] is None:
            return f"{k} unknown"
    return None


def _improvements(rep: dict, t: dict, reasons: list[str]) -> tuple[bool, bool, list[str]]:
    """Whether the candidate is documented fairer and (when enabled) faster, adding the reasons; and what could not
    be judged for want of a figure."""
    unjudged = []
    fairer = rep["gini_improvement"] is not None and ge(rep["gini_improvement"], t["min_gini_improvement"])
    if rep["gini_improvement"] is None:
        unjudged.append("fairness (current Gini unknown)")
    else:
        reasons.append(f"fairness improvement {rep['gini_improvement']:+.3f} Gini "
                       f"({'>=' if fairer else '<'} {t['min_gini_improvement']})")
    faster = False
    if t.get("min_latency_improvement_pct") is not None:
        gain = rep["p95_improvement_pct"]
        if gain is None:
            unjudged.append("latency (p95 not measured)")
        else:
            faster = ge(gain, t["min_latency_improvement_pct"])
            reasons.append(f"p95 latency improvement {gain:.1f}% ({'>=' if faster else '<'} "
                           f"{t['min_latency_improvement_pct']}%)")
    return fairer, faster, unjudged


def evaluate_routing(shadow: dict | None, t: dict) -> Outcome:
    """``shadow``: figures of `routing.ShadowReport` {current, candidate, records, match_pct, unassigned_current,
    unassigned_candidate, gini_current, gini_candidate, p95_ms_current, p95_ms_candidate}; None: no candidate.

    Hard gates, whatever the current rule set scores: the candidate's Gini <= ``gini_max`` and its unassigned share
    <= ``unassigned_max`` (the routing SLO: no SLO regression). Then promote on shadow match >= 99.5 %, or on a
    documented improvement: Gini better by >= ``min_gini_improvement``, or (when enabled) p95 latency better by >=
    ``min_latency_improvement_pct`` -- documented = the shadow comparison report in the proposal."""
    subject = "FF_ROUTING_V1"
    if not shadow:
        return Outcome(subject, None, "no change: no candidate rule set (status: candidate) to evaluate",
                       ["no candidate"], {})
    rep = shadow_report(shadow)
    figures = {**shadow, "unassigned_rate_current": rep["unassigned_rate_current"],
               "unassigned_rate_candidate": rep["unassigned_rate_candidate"], "shadow_report": rep}
    options = [f"keep {shadow.get('current')}", f"promote {shadow.get('candidate')}"]
    reasons: list[str] = []
    held: dict[str, dict[str, str]] = {}
    cand = str(shadow.get("candidate"))
    gap = _routing_gap(rep, t)
    if gap:
        hold(held, reasons, cand, gap)
        return finish(Outcome(subject, None, f"no change: {cand} held ({INSUFFICIENT_DATA}: {gap})", reasons,
                               figures, options, held))
    match, g_cand, ua_cand = rep["match_pct"], rep["gini_candidate"], rep["unassigned_rate_candidate"]
    gini_ok, ua_ok = le(g_cand, t["gini_max"]), le(ua_cand, t["unassigned_max"])
    g_cur = "unknown" if rep["gini_current"] is None else f"{rep['gini_current']:.3f}"
    reasons.append(f"Gini {g_cand:.3f} {'<=' if gini_ok else '>'} {t['gini_max']} (hard gate, whatever the "
                   f"current rule set scores: {g_cur})")
    reasons.append(f"unassigned {ua_cand:.4f} {'<=' if ua_ok else '>'} {t['unassigned_max']} (hard gate: no SLO "
                   f"regression)")
    if not (gini_ok and ua_ok):
        failed = " and ".join(n for n, ok in (("fairness Gini", gini_ok), ("unassigned", ua_ok)) if not ok)
        return finish(Outcome(subject, None, f"no change: {cand} fails the {failed} gate", reasons, figures,
                               options))
    match_ok = ge(match, t["shadow_match_min_pct"])
    reasons.append(f"shadow match {match:.2f}% {'>=' if match_ok else '<'} {t['shadow_match_min_pct']}%")
    fairer, faster, unjudged = _improvements(rep, t, reasons)
    if not (match_ok or fairer or faster):
        if unjudged:
            hold(held, reasons, cand, f"match {match:.2f}% < {t['shadow_match_min_pct']}% and the improvement "
                                       f"cannot be documented: {', '.join(unjudged)}")
            return finish(Outcome(subject, None, f"no change: {cand} held ({INSUFFICIENT_DATA})", reasons,
                                   figures, options, held))
        return Outcome(subject, None, f"no change: {cand} matches {match:.2f}% < {t['shadow_match_min_pct']}% "
                       f"and shows no documented improvement", reasons, figures, options)
    why = "shadow match" if match_ok else ("fairness improvement" if fairer else "latency improvement")
    action = {"kind": "promote_rule_set", "candidate": shadow.get("candidate"), "current": shadow.get("current"),
              "basis": why, "shadow_report": rep}
    return Outcome(subject, action, f"promote routing rule set {cand} (FF_ROUTING_V1 off) on {why}", reasons,
                   figures, options)
