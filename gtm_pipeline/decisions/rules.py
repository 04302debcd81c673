"""The four playbooks' rules as plain functions: metric rows in, proposed action (or the reason for none) out.

No warehouse and no Dagster here: `gtm_pipeline.decisions.inputs` reads the metric tables into the small row
dicts these functions take, and the table-style tests call them directly with boundary values. Thresholds come from
the playbook (`Playbook.thresholds`); every comparison is inclusive ("≥", "≤" as in the spec) with a tolerance of
1e-9 so that a value sitting exactly on a threshold is not lost to floating-point rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EPS = 1e-9


def ge(a: float, b: float) -> bool:
    return a >= b - EPS


def le(a: float, b: float) -> bool:
    return a <= b + EPS


@dataclass
class Outcome:
    """The result of one rule evaluation for one subject (a segment, the budget split, the audience filter...)."""

    subject: str
    action: dict[str, Any] | None          # the structured action (None: no action)
    summary: str                           # the chosen action in words, or why none
    reasons: list[str] = field(default_factory=list)     # each threshold test, passed or not, with its numbers
    figures: dict[str, Any] = field(default_factory=dict)  # the numbers behind the decision (memo, metadata)
    options: list[str] = field(default_factory=list)     # options considered (memo)

    @property
    def proposes(self) -> bool:
        return self.action is not None


def _num(v) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


# ---- 4.1 pricing.change -------------------------------------------------------------------------------------------

def project_raise(price_per_seat: float, cm_per_seat: float, payback_months: float, elasticity: float,
                  raise_pct: float, variable_cost_rate: float) -> tuple[float, float]:
    """(CM/seat uplift, payback change in months) of raising the list price by ``raise_pct`` %.

    * uplift per seat = price x p x (1 - variable_cost_rate): the extra price less what scales with it (payment
      fees, commission); cost to serve per seat does not change;
    * payback = CAC / monthly CM per customer. With P(win) ~ price^E the same spend wins (1+p)^E as many customers,
      so CAC scales by (1+p)^-E, and monthly CM per customer by (cm + uplift) / cm:
      new payback = payback x (1+p)^-E x cm / (cm + uplift).
    """
    p = raise_pct / 100.0
    uplift = price_per_seat * p * (1.0 - variable_cost_rate)
    new_cm = cm_per_seat + uplift
    if cm_per_seat <= 0 or new_cm <= 0:
        return uplift, float("inf")
    new_payback = payback_months * (1.0 + p) ** (-elasticity) * cm_per_seat / new_cm
    return uplift, new_payback - payback_months


def _raise_steps(t: dict) -> list[float]:
    steps, p = [], float(t["raise_pct_min"])
    while p <= t["raise_pct_max"] + EPS:
        steps.append(round(p, 6))
        p += float(t["raise_pct_step"])
    return steps


def evaluate_pricing(segments: dict[str, dict], t: dict) -> list[Outcome]:
    """One outcome per segment. ``segments``: {segment: {elasticity, e_se, price_per_seat, cm_per_seat, gm_pct,
    payback_months}} (the 'all' row is not a segment and is ignored)."""
    out = []
    for seg in sorted(s for s in segments if s != "all"):
        row = segments[seg]
        e, price = _num(row.get("elasticity")), _num(row.get("price_per_seat"))
        cm, payback = _num(row.get("cm_per_seat")), _num(row.get("payback_months"))
        figures = {"elasticity": e, "e_se": _num(row.get("e_se")), "price_per_seat": price, "cm_per_seat": cm,
                   "gm_pct": _num(row.get("gm_pct")), "payback_months": payback}
        lo, hi = t["elasticity_min"], t["elasticity_max"]
        options = [f"hold the price card (no change)"]
        if e is None:
            out.append(Outcome(seg, None, f"no change for {seg}: elasticity not estimated "
                                          f"({row.get('note') or 'no estimate'})", [f"E unknown"], figures, options))
            continue
        in_range = ge(e, lo) and le(e, hi)
        reasons = [f"E = {e:.3f} {'in' if in_range else 'outside'} [{lo}, {hi}]"]
        if not in_range:
            out.append(Outcome(seg, None, f"no change for {seg}: elasticity {e:.3f} outside [{lo}, {hi}]",
                               reasons, figures, options))
            continue
        if price is None or cm is None or payback is None:
            missing = [k for k, v in (("price_per_seat", price), ("cm_per_seat", cm), ("payback_months", payback))
                       if v is None]
            out.append(Outcome(seg, None, f"no change for {seg}: {', '.join(missing)} unknown", reasons, figures,
                               options))
            continue
        chosen = None
        for p in _raise_steps(t):
            uplift, worse = project_raise(price, cm, payback, e, p, t["variable_cost_rate"])
            ok_uplift = ge(uplift, t["cm_per_seat_uplift_min"])
            ok_payback = le(worse, t["payback_worsening_max_months"])
            options.append(f"+{p:g}% list: CM/seat +${uplift:.2f}, payback {worse:+.2f} months"
                           + ("" if ok_uplift and ok_payback else " (fails "
                              + " and ".join(n for n, ok in (("CM/seat uplift", ok_uplift),
                                                             ("payback", ok_payback)) if not ok) + ")"))
            if chosen is None and ok_uplift and ok_payback:
                chosen = (p, uplift, worse)
        if chosen is None:
            reasons.append(f"no raise in [{t['raise_pct_min']:g}%, {t['raise_pct_max']:g}%] projects CM/seat uplift "
                           f">= ${t['cm_per_seat_uplift_min']:g} with payback worse by <= "
                           f"{t['payback_worsening_max_months']:g} months")
            out.append(Outcome(seg, None, f"no change for {seg}: thresholds not met", reasons, figures, options))
            continue
        p, uplift, worse = chosen
        reasons += [f"projected CM/seat uplift ${uplift:.2f} >= ${t['cm_per_seat_uplift_min']:g}",
                    f"payback change {worse:+.2f} months <= +{t['payback_worsening_max_months']:g}",
                    f"+{p:g}% is the smallest raise in [{t['raise_pct_min']:g}%, {t['raise_pct_max']:g}%] "
                    f"that clears both (least demand risk)"]
        figures.update(raise_pct=p, projected_cm_per_seat_uplift=uplift, projected_payback_change_months=worse)
        action = {"kind": "raise_list_price", "segment": seg, "raise_pct": p, "discount_ladders": "hold",
                  "list_price_multiplier": round(1 + p / 100.0, 6)}
        out.append(Outcome(seg, action, f"+{p:g}% list price for {seg}; hold discount ladders", reasons, figures,
                           options))
    return out


# ---- 4.2 channel.invest -------------------------------------------------------------------------------------------

def new_budget_split(current: dict[str, float], shift: list[str], pause: list[str],
                     shift_pct: float) -> tuple[dict[str, float], float]:
    """Shift +``shift_pct`` % to ``shift`` and zero ``pause``, keeping the total: the difference is taken from (or
    given to) the other channels in proportion to their budgets. Returns (new split, change of total) -- the change
    is non-zero only when no other channel can absorb it."""
    total = sum(current.values())
    new = {c: 0.0 if c in pause else (v * (1 + shift_pct / 100.0) if c in shift else v) for c, v in current.items()}
    others = [c for c in current if c not in shift and c not in pause]
    base = sum(current[c] for c in others)
    need = sum(new[c] for c in current if c not in others)
    if base > 0:
        factor = max(0.0, (total - need) / base)
        for c in others:
            new[c] = current[c] * factor
    return {c: round(v, 2) for c, v in new.items()}, round(sum(new.values()) - total, 2)


def evaluate_channel(channels: dict[str, dict], baseline: dict, t: dict) -> Outcome:
    """``channels``: {channel: {marketing_cost, sqos, cac_per_sqo, sqls, wins, sql_to_win, attribution_validity}};
    ``baseline``: {cac_per_sqo, sql_to_win} (the blended 'all' rows)."""
    b_cac, b_s2w = _num(baseline.get("cac_per_sqo")), _num(baseline.get("sql_to_win"))
    figures: dict[str, Any] = {"baseline_cac_per_sqo": b_cac, "baseline_sql_to_win": b_s2w, "channels": {}}
    if not b_cac or b_s2w is None:
        return Outcome("budget_split", None, "no change: baseline CAC/SQO or SQL->Win unknown",
                       ["baseline missing"], figures)
    shift, pause, reasons = [], [], []
    for ch in sorted(c for c in channels if c not in ("all", "unattributed")):
        r = channels[ch]
        cac, s2w, sqos = _num(r.get("cac_per_sqo")), _num(r.get("sql_to_win")), int(r.get("sqos") or 0)
        cost, validity = _num(r.get("marketing_cost")) or 0.0, _num(r.get("attribution_validity"))
        ratio = None if cac is None else cac / b_cac
        figures["channels"][ch] = {"cac_per_sqo": cac, "ratio_to_baseline": ratio, "sql_to_win": s2w,
                                   "sql_to_win_vs_baseline_pp": None if s2w is None else (s2w - b_s2w) * 100,
                                   "sqos": sqos, "marketing_cost": cost, "attribution_validity": validity}
        pause_min = t.get("pause_attribution_validity_min")
        if pause_min is not None and validity is not None and validity < pause_min - EPS:
            pause.append(ch)
            reasons.append(f"{ch}: pause -- attribution validity {validity:.4f} < {pause_min}")
            continue
        if sqos < t["min_sqos"] or ratio is None:
            reasons.append(f"{ch}: left alone -- {sqos} SQOs < {t['min_sqos']} (too few to judge)")
            continue
        if ge(ratio, t["pause_cac_per_sqo_min_ratio"]):
            pause.append(ch)
            reasons.append(f"{ch}: pause -- CAC/SQO {ratio:.2f}x baseline >= {t['pause_cac_per_sqo_min_ratio']}x")
            continue
        s2w_ok = s2w is not None and ge((s2w - b_s2w) * 100, t["shift_sql_to_win_min_pp"])
        if le(ratio, t["shift_cac_per_sqo_max_ratio"]) and s2w_ok:
            if cost <= 0:
                reasons.append(f"{ch}: qualifies for a shift but has no budget to grow (marketing cost 0)")
                continue
            shift.append(ch)
            reasons.append(f"{ch}: shift +{t['shift_budget_pct']:g}% -- CAC/SQO {ratio:.2f}x baseline <= "
                           f"{t['shift_cac_per_sqo_max_ratio']}x and SQL->Win {(s2w - b_s2w) * 100:+.1f} pp >= "
                           f"+{t['shift_sql_to_win_min_pp']:g} pp")
        else:
            reasons.append(f"{ch}: hold -- CAC/SQO {ratio:.2f}x baseline, SQL->Win "
                           + (f"{(s2w - b_s2w) * 100:+.1f} pp" if s2w is not None else "unknown"))
    options = ["hold the budget split", "shift and pause as the thresholds imply (chosen)" if shift or pause
               else "shift and pause: nothing qualifies"]
    if not shift and not pause:
        return Outcome("budget_split", None, "no change: no channel crosses a shift or pause threshold", reasons,
                       figures, options)
    current = {c: _num(channels[c].get("marketing_cost")) or 0.0 for c in channels if c not in ("all", "unattributed")}
    split, delta = new_budget_split(current, shift, pause, t["shift_budget_pct"])
    action = {"kind": "budget_split", "shift": shift, "pause": pause, "shift_pct": t["shift_budget_pct"],
              "split": split, "total_change": delta}
    summary = (f"shift +{t['shift_budget_pct']:g}% budget to {', '.join(shift) or 'no channel'}; "
               f"pause {', '.join(pause) or 'no channel'}")
    figures.update(new_split=split, total_change=delta)
    return Outcome("budget_split", action, summary, reasons, figures, options)


# ---- 4.3 icp.update -----------------------------------------------------------------------------------------------

def evaluate_icp(win_rows: list[dict], payback: dict[tuple[str, str], float | None], baseline_payback: float | None,
                 dq_coverage: float | None, current_filter: dict, t: dict) -> Outcome:
    """``win_rows``: rows of win_rate_by_segment {dimension, value, month, closed, won} (monthly rows only are used;
    dimension 'all' is the baseline); ``payback``: {(dimension, value): months}; ``current_filter``: the audience
    filter in force {include: [...], exclude: [...], dq_gates: bool}, items as "dimension=value"."""
    months_n, diff_pp = int(t["months"]), float(t["win_rate_diff_pp"])
    base = {r["month"]: r for r in win_rows if r["dimension"] == "all" and r["month"] != "all"}
    months = sorted((m for m, r in base.items() if (r.get("closed") or 0) > 0), reverse=True)[:months_n]
    reasons: list[str] = []
    figures: dict[str, Any] = {"months": months, "baseline_payback_months": baseline_payback,
                               "dq_reason_coverage": dq_coverage, "values": {}}
    include, exclude = list(current_filter.get("include", [])), list(current_filter.get("exclude", []))
    add, remove = [], []
    if len(months) < months_n:
        reasons.append(f"only {len(months)} month(s) with closes; {months_n} needed for an add/remove")
    by_value: dict[tuple[str, str], dict[str, dict]] = {}
    for r in win_rows:
        if r["dimension"] in t["dimensions"] and r["month"] != "all" and r["value"] not in ("all", "unknown"):
            by_value.setdefault((r["dimension"], r["value"]), {})[r["month"]] = r
    for key in sorted(by_value):
        item = f"{key[0]}={key[1]}"
        diffs = []
        for m in months if len(months) == months_n else []:
            r, b = by_value[key].get(m), base[m]
            if not r or (r.get("closed") or 0) < t["min_closed_per_month"]:
                diffs = None
                break
            diffs.append((r["won"] / r["closed"] - b["won"] / b["closed"]) * 100)
        pb = payback.get(key)
        figures["values"][item] = {"win_rate_diff_pp": diffs, "payback_months": pb}
        if not diffs:
            continue
        pb_ok_add = pb is not None and baseline_payback is not None and \
            le(pb, baseline_payback - t["payback_improvement_months"])
        pb_ok_remove = pb is not None and baseline_payback is not None and \
            ge(pb, baseline_payback + t["payback_improvement_months"])
        text = ", ".join(f"{d:+.1f}" for d in diffs)
        pbt = "unknown" if pb is None else f"{pb:.2f}"
        if all(ge(d, diff_pp) for d in diffs):
            if pb_ok_add and item not in include:
                add.append(item)
                reasons.append(f"{item}: add -- win rate {text} pp vs all in {', '.join(months)}; payback {pbt} "
                               f"<= {baseline_payback:.2f} - {t['payback_improvement_months']:g} months")
            elif not pb_ok_add:
                reasons.append(f"{item}: wins more ({text} pp) but payback {pbt} is not >= "
                               f"{t['payback_improvement_months']:g} month better than {baseline_payback}")
        elif all(le(d, -diff_pp) for d in diffs):
            if pb_ok_remove and item not in exclude:
                remove.append(item)
                reasons.append(f"{item}: remove -- win rate {text} pp vs all in {', '.join(months)}; payback "
                               f"{pbt} >= {baseline_payback:.2f} + {t['payback_improvement_months']:g} months")
            elif not pb_ok_remove:
                reasons.append(f"{item}: wins less ({text} pp) but payback {pbt} is not >= "
                               f"{t['payback_improvement_months']:g} month worse than {baseline_payback}")
    gates_now = bool(current_filter.get("dq_gates", False))
    enforce = dq_coverage is not None and ge(dq_coverage, t["dq_reason_coverage_min"])
    if dq_coverage is None:
        reasons.append("DQ reason coverage unknown: gates unchanged")
    else:
        reasons.append(f"DQ reason coverage {dq_coverage:.4f} {'>=' if enforce else '<'} "
                       f"{t['dq_reason_coverage_min']}: " + ("enforce disqualification gates" if enforce
                                                            else "gates not enforced"))
    gates_change = enforce and not gates_now
    options = ["keep the current audience filter"]
    if not add and not remove and not gates_change:
        return Outcome("audience_filter", None, "no change: no segment crosses the thresholds"
                       + ("; DQ gates already enforced" if enforce and gates_now else ""), reasons, figures, options)
    new_include = sorted(set(include + add) - set(remove))
    new_exclude = sorted(set(exclude + remove) - set(add))
    action = {"kind": "audience_filter", "add": add, "remove": remove, "enforce_dq_gates": gates_change,
              "filter": {"include": new_include, "exclude": new_exclude, "dq_gates": gates_now or gates_change}}
    parts = ([f"add {', '.join(add)}"] if add else []) + ([f"remove {', '.join(remove)}"] if remove else []) + \
        (["enforce disqualification gates"] if gates_change else [])
    options.append("update the filter as the thresholds imply (chosen)")
    return Outcome("audience_filter", action, "ICP: " + "; ".join(parts), reasons, figures, options)


# ---- 4.4 routing.policy -------------------------------------------------------------------------------------------

def evaluate_routing(shadow: dict | None, t: dict) -> Outcome:
    """``shadow``: figures of `routing.ShadowReport` {current, candidate, records, match_pct, unassigned_current,
    unassigned_candidate, gini_current, gini_candidate, p95_ms_current, p95_ms_candidate}; None: no candidate."""
    if not shadow:
        return Outcome("FF_ROUTING_V1", None, "no change: no candidate rule set (status: candidate) to evaluate",
                       ["no candidate"], {})
    n = max(int(shadow["records"]), 1)
    ua_cur, ua_cand = shadow["unassigned_current"] / n, shadow["unassigned_candidate"] / n
    g_cur, g_cand = float(shadow["gini_current"]), float(shadow["gini_candidate"])
    match = float(shadow["match_pct"])
    figures = {**shadow, "unassigned_rate_current": ua_cur, "unassigned_rate_candidate": ua_cand}
    reasons = []
    ua_ok = le(ua_cand, max(t["unassigned_max"], ua_cur))
    gini_ok = le(g_cand, max(t["gini_max"], g_cur))
    reasons.append(f"unassigned {ua_cand:.4f} (current {ua_cur:.4f}, limit {t['unassigned_max']}): "
                   + ("no regression" if ua_ok else "REGRESSION"))
    reasons.append(f"Gini {g_cand:.3f} (current {g_cur:.3f}, limit {t['gini_max']}): "
                   + ("no regression" if gini_ok else "REGRESSION"))
    match_ok = ge(match, t["shadow_match_min_pct"])
    fairer = ge(g_cur - g_cand, t["min_gini_improvement"])
    reasons.append(f"shadow match {match:.2f}% {'>=' if match_ok else '<'} {t['shadow_match_min_pct']}%")
    reasons.append(f"fairness improvement {g_cur - g_cand:+.3f} Gini "
                   f"({'>=' if fairer else '<'} {t['min_gini_improvement']})")
    faster = False
    if t.get("min_latency_improvement_pct") is not None and shadow.get("p95_ms_current"):
        gain = 100 * (shadow["p95_ms_current"] - shadow["p95_ms_candidate"]) / shadow["p95_ms_current"]
        faster = ge(gain, t["min_latency_improvement_pct"])
        reasons.append(f"p95 latency improvement {gain:.1f}% ({'>=' if faster else '<'} "
                       f"{t['min_latency_improvement_pct']}%)")
    options = [f"keep {shadow['current']}", f"promote {shadow['candidate']}"]
    if not (ua_ok and gini_ok):
        return Outcome("FF_ROUTING_V1", None, f"no change: {shadow['candidate']} would regress a routing SLO",
                       reasons, figures, options)
    if not (match_ok or fairer or faster):
        return Outcome("FF_ROUTING_V1", None, f"no change: {shadow['candidate']} matches {match:.2f}% "
                       f"< {t['shadow_match_min_pct']}% and shows no documented improvement", reasons, figures,
                       options)
    why = "shadow match" if match_ok else ("fairness improvement" if fairer else "latency improvement")
    action = {"kind": "promote_rule_set", "candidate": shadow["candidate"], "current": shadow["current"],
              "basis": why}
    return Outcome("FF_ROUTING_V1", action, f"promote routing rule set {shadow['candidate']} "
                   f"(FF_ROUTING_V1 off) on {why}", reasons, figures, options)
