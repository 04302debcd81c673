"""§4.2 channel.invest: shift +20 % to efficient channels, pause expensive or invalidly attributed ones, hold
the ones too small to judge -- and the budget split that keeps the total with money only for shifted channels."""

from __future__ import annotations

import math
from typing import Any

from gtm_pipeline.decisions.rules.common import (
    EPS,
    INSUFFICIENT_DATA,
    UNALLOCATED,
    Outcome,
    finish,
    ge,
    held_note,
    hold,
    le,
    num,
)


def attribution_validity_precheck(validity: float | None, minimum: float) -> tuple[bool, str]:
    """The window-wide pre-check "attribution validity >= 0.995": unknown validity fails (no opportunities, or the
    table was not published), never passes."""
    if validity is None:
        return False, f"attribution validity unknown ({INSUFFICIENT_DATA}; needs >= {minimum})"
    return ge(validity, minimum), f"attribution validity {validity:.4f} (needs >= {minimum})"


def new_budget_split(current: dict[str, float], shift: list[str], pause: list[str], shift_pct: float,
                     held: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, float], dict[str, Any]]:
    """The budget split after shifting +``shift_pct`` % to ``shift`` and pausing ``pause``, total unchanged.

    * paused channels go to 0; held channels keep their budget exactly (money never moves to or from them);
    * the shift is paid first from what the pauses free, then from the other ("keep") channels in proportion to
      their budgets; if even all of that cannot pay +``shift_pct`` %, the shift is scaled down to what can be paid;
    * what the pauses free beyond the shift's cost goes to no channel: it is the ``unallocated`` line of the split
      (returned to the pool for the next cycle's plan), so only shifted channels ever gain.

    Returns (split by channel, plus ``unallocated`` when > 0; notes: shift_pct_applied, unallocated, taken_from_keep,
    total_change). Amounts are rounded to cents and the split sums to the current total exactly."""
    total = round(sum(current.values()), 2)
    p = shift_pct / 100.0
    keep = [c for c in current if c not in shift and c not in pause and c not in held]
    freed = sum(current[c] for c in pause)
    shift_base = sum(current[c] for c in shift)
    keep_base = sum(current[c] for c in keep)
    need = shift_base * p
    take, applied = 0.0, p
    if need > freed:
        take = min(need - freed, keep_base)
        if need - freed > keep_base + EPS:
            applied = (freed + keep_base) / shift_base
    unallocated = max(0.0, freed - shift_base * applied)
    new: dict[str, float] = {}
    for c, v in current.items():
        if c in pause:
            new[c] = 0.0
        elif c in shift:
            new[c] = v * (1 + applied)
        elif c in held or keep_base <= 0:
            new[c] = v
        else:
            new[c] = v * (1 - take / keep_base)
    split = {c: round(v, 2) for c, v in new.items()}
    if unallocated > 0.005:
        split[UNALLOCATED] = round(unallocated, 2)
    # rounding residual (a cent or two): on the unallocated line, else on the largest channel that changed
    residual = round(total - sum(split.values()), 2)
    if residual:
        target = UNALLOCATED if UNALLOCATED in split else max(
            (c for c in (keep if take > 0 else []) + list(shift) if c in split), key=lambda c: split[c], default=None)
        if target is not None:
            split[target] = round(split[target] + residual, 2)
    notes = {"shift_pct_applied": round(applied * 100, 6), "unallocated": split.get(UNALLOCATED, 0.0),
             "taken_from_keep": round(take, 2), "total_change": round(sum(split.values()) - total, 2)}
    return split, notes


def _judge_channel(ch: str, r: dict, b_cac: float, b_s2w: float | None, t: dict) -> tuple[str, str, dict]:
    """(verdict, reason, figures) of one channel; verdict in shift | pause | keep | held. Order: sample minimum,
    budget known, attribution validity (unless the playbook exempts the channel), CAC/SQO, then SQL->Win."""
    sqos, cost = num(r.get("sqos")), num(r.get("marketing_cost"))
    cac, s2w, validity = num(r.get("cac_per_sqo")), num(r.get("sql_to_win")), num(r.get("attribution_validity"))
    ratio = None if cac is None else cac / b_cac
    pp = None if s2w is None or b_s2w is None else (s2w - b_s2w) * 100
    fig = {"cac_per_sqo": cac, "ratio_to_baseline": ratio, "sql_to_win": s2w, "sql_to_win_vs_baseline_pp": pp,
           "sqos": sqos, "marketing_cost": cost, "attribution_validity": validity}
    min_sqos, v_min = t["min_sqos"], t["pause_attribution_validity_min"]
    exempt = (t.get("attribution_validity_exempt") or {}).get(ch)
    if sqos is None:
        return "held", "SQOs unknown", fig
    if sqos < min_sqos:
        return "held", f"{sqos:g} SQOs < min_sqos {min_sqos} (too few to judge CAC/SQO)", fig
    if cost is None:
        return "held", "marketing cost unknown (no budget to split)", fig
    if exempt is None:
        if validity is None:
            return "held", "attribution validity of its opportunities unknown", fig
        if validity < v_min - EPS:
            return "pause", f"attribution validity {validity:.4f} < {v_min}", fig
    if sqos == 0:   # only reachable with min_sqos: 0
        if cost > 0:
            return "pause", f"marketing cost ${cost:,.0f} with 0 SQOs: CAC/SQO is infinite", fig
        return "held", "no marketing cost and no SQOs", fig
    if ratio is None:
        return "held", "CAC/SQO unknown", fig
    if ge(ratio, t["pause_cac_per_sqo_min_ratio"]):
        return "pause", f"CAC/SQO {ratio:.2f}x baseline >= {t['pause_cac_per_sqo_min_ratio']}x", fig
    if not le(ratio, t["shift_cac_per_sqo_max_ratio"]):
        return "keep", f"CAC/SQO {ratio:.2f}x baseline, between the shift and pause thresholds", fig
    if b_s2w is None:
        return "held", f"CAC/SQO {ratio:.2f}x baseline qualifies, but the baseline SQL->Win is unknown", fig
    if s2w is None:
        return "held", f"CAC/SQO {ratio:.2f}x baseline qualifies, but its SQL->Win is unknown (no SQLs)", fig
    assert pp is not None   # computed above whenever s2w and b_s2w are both known, as they are here
    if not ge(pp, t["shift_sql_to_win_min_pp"]):
        return "keep", (f"CAC/SQO {ratio:.2f}x baseline, but SQL->Win {pp:+.2f} pp < "
                        f"+{t['shift_sql_to_win_min_pp']:g} pp"), fig
    why = (f"CAC/SQO {ratio:.2f}x baseline <= {t['shift_cac_per_sqo_max_ratio']}x and SQL->Win {pp:+.2f} pp >= "
           f"+{t['shift_sql_to_win_min_pp']:g} pp")
    if cost <= 0:
        return "keep", f"{why}, but its budget is $0 (+{t['shift_budget_pct']:g}% of $0 is $0)", fig
    return "shift", why, fig


def evaluate_channel(channels: dict[str, dict], baseline: dict, t: dict) -> Outcome:
    """``channels``: {channel: {marketing_cost, sqos, cac_per_sqo, sqls, wins, sql_to_win, attribution_validity}};
    ``baseline``: {cac_per_sqo, sql_to_win} (the blended 'all' rows)."""
    b_cac, b_s2w = num(baseline.get("cac_per_sqo")), num(baseline.get("sql_to_win"))
    figures: dict[str, Any] = {"baseline_cac_per_sqo": b_cac, "baseline_sql_to_win": b_s2w, "channels": {}}
    names = sorted(c for c in channels if c not in ("all", "unattributed", UNALLOCATED))
    reasons: list[str] = []
    held: dict[str, dict[str, str]] = {}
    options = ["hold the budget split"]
    if b_cac is None or b_cac <= 0 or math.isinf(b_cac):
        for ch in names:
            hold(held, reasons, ch, f"baseline CAC/SQO {'unknown' if b_cac is None else f'{b_cac:g}'}: no channel "
                                     f"can be compared with it")
        return finish(Outcome("budget_split", None, "no change: baseline CAC/SQO unknown" + held_note(held),
                               reasons, figures, options, held))
    verdicts: dict[str, list[str]] = {"shift": [], "pause": [], "keep": [], "held": []}
    exempt = t.get("attribution_validity_exempt") or {}
    for ch in names:
        verdict, why, fig = _judge_channel(ch, channels[ch], b_cac, b_s2w, t)
        figures["channels"][ch] = {**fig, "verdict": verdict}
        verdicts[verdict].append(ch)
        if verdict == "held":
            hold(held, reasons, ch, f"{why}; budget unchanged")
        else:
            label = {"shift": f"shift +{t['shift_budget_pct']:g}%", "pause": "pause", "keep": "keep"}[verdict]
            reasons.append(f"{ch}: {label} -- {why}")
        v = fig["attribution_validity"]
        if ch in exempt and verdict != "held" and (v is None or v < t["pause_attribution_validity_min"] - EPS):
            figures.setdefault("attribution_validity_exempt", {})[ch] = {"attribution_validity": v,
                                                                         "reason": exempt[ch]}
            reasons.append(f"{ch}: attribution validity {'unknown' if v is None else f'{v:.4f}'} < "
                           f"{t['pause_attribution_validity_min']} not applied -- exempt by the playbook: {exempt[ch]}")
    shift, pause = verdicts["shift"], verdicts["pause"]
    if not shift and not pause:
        options.append("shift and pause: nothing qualifies")
        return finish(Outcome("budget_split", None, "no change: no channel crosses a shift or pause threshold"
                               + held_note(held), reasons, figures, options, held))
    options.append("shift and pause as the thresholds imply (chosen)")
    current = {c: num(channels[c].get("marketing_cost")) or 0.0 for c in names}
    split, notes = new_budget_split(current, shift, pause, t["shift_budget_pct"], held=verdicts["held"])
    if notes["shift_pct_applied"] + EPS < t["shift_budget_pct"]:
        reasons.append(f"the pauses and the other channels can pay only +{notes['shift_pct_applied']:.2f}% of the "
                       f"+{t['shift_budget_pct']:g}% shift: the total budget is kept")
    if notes["unallocated"]:
        reasons.append(f"${notes['unallocated']:,.2f} freed by the pauses is not needed by the shift: it stays "
                       f"unallocated (no channel that was not shifted gains)")
    action = {"kind": "budget_split", "shift": shift, "pause": pause, "held": verdicts["held"],
              "shift_pct": t["shift_budget_pct"], "split": split, **notes}
    summary = (f"shift +{t['shift_budget_pct']:g}% budget to {', '.join(shift) or 'no channel'}; "
               f"pause {', '.join(pause) or 'no channel'}" + held_note(held)
               + (f"; ${notes['unallocated']:,.0f} unallocated" if notes["unallocated"] else ""))
    figures.update(new_split=split, **notes)
    return finish(Outcome("budget_split", action, summary, reasons, figures, options, held))
