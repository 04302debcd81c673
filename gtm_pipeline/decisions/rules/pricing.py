"""§4.1 pricing.change: raise the list price of a segment when E is in [-1.0, -0.3], the projected CM/seat
uplift is >= $3 and payback worsens by <= 0.5 months; hold a segment whose figures cannot be judged."""

from __future__ import annotations

from gtm_pipeline.decisions.rules.common import EPS, INSUFFICIENT_DATA, Outcome, ge, hold, le, num


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


def pricing_data_gap(row: dict, t: dict) -> str | None:
    """Why a segment's figures cannot be judged (None: they can). In order: no elasticity estimate, fewer closed
    opportunities than ``min_closed``, an estimate too imprecise to say whether E is in the range
    (``elasticity_se_max``), a missing price / CM per seat / payback, a price or CM per seat <= 0 (no price to raise
    by a percentage; the payback projection divides by CM per seat), a negative payback."""
    e, se, closed = num(row.get("elasticity")), num(row.get("e_se")), num(row.get("closed"))
    if e is None:
        return f"elasticity not estimated ({row.get('note') or 'no estimate'})"
    if closed is None:
        return "number of closed opportunities behind E unknown"
    if closed < t["min_closed"]:
        return f"{closed:g} closed opportunities < min_closed {t['min_closed']}"
    se_max = t.get("elasticity_se_max")
    if se_max is not None:
        if se is None:
            return "standard error of the elasticity unknown"
        if not le(se, se_max):
            return (f"elasticity {e:.2f} ± {1.96 * se:.2f} (95 %) is too imprecise to place in the range: standard "
                    f"error {se:.3f} > elasticity_se_max {se_max:g}")
    price, cm, payback = num(row.get("price_per_seat")), num(row.get("cm_per_seat")), num(row.get("payback_months"))
    if price is None:
        return "price_per_seat unknown"
    if cm is None:
        return "cm_per_seat unknown"
    if payback is None:
        return "payback_months unknown"
    if price <= 0:
        return f"price_per_seat {price:g} <= 0: no list price to raise"
    if cm <= 0:
        return f"cm_per_seat {cm:g} <= 0: the payback projection needs a positive CM/seat"
    if payback < 0:
        return f"payback_months {payback:g} < 0"
    return None


def _pricing_segment(seg: str, row: dict, t: dict) -> Outcome:
    e, price = num(row.get("elasticity")), num(row.get("price_per_seat"))
    cm, payback = num(row.get("cm_per_seat")), num(row.get("payback_months"))
    figures = {"elasticity": e, "e_se": num(row.get("e_se")), "closed": num(row.get("closed")),
               "price_per_seat": price, "cm_per_seat": cm, "gm_pct": num(row.get("gm_pct")),
               "payback_months": payback}
    lo, hi = t["elasticity_min"], t["elasticity_max"]
    options = ["hold the price card (no change)"]
    reasons: list[str] = []
    held: dict[str, dict[str, str]] = {}
    gap = pricing_data_gap(row, t)
    if gap:
        hold(held, reasons, seg, gap)
        return Outcome(seg, None, f"no change for {seg}: held ({INSUFFICIENT_DATA}: {gap})", reasons, figures,
                       options, held)
    # pricing_data_gap returned None: it found each of these four figures present (a number, not None).
    assert e is not None and price is not None and cm is not None and payback is not None
    in_range = ge(e, lo) and le(e, hi)
    reasons.append(f"E = {e:.3f} {'in' if in_range else 'outside'} [{lo}, {hi}]")
    if not in_range:
        return Outcome(seg, None, f"no change for {seg}: elasticity {e:.3f} outside [{lo}, {hi}]", reasons,
                       figures, options)
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
        return Outcome(seg, None, f"no change for {seg}: thresholds not met", reasons, figures, options)
    p, uplift, worse = chosen
    reasons += [f"projected CM/seat uplift ${uplift:.2f} >= ${t['cm_per_seat_uplift_min']:g}",
                f"payback change {worse:+.2f} months <= +{t['payback_worsening_max_months']:g}",
                f"+{p:g}% is the smallest raise in [{t['raise_pct_min']:g}%, {t['raise_pct_max']:g}%] "
                f"that clears both (least demand risk)"]
    figures.update(raise_pct=p, projected_cm_per_seat_uplift=uplift, projected_payback_change_months=worse)
    action = {"kind": "raise_list_price", "segment": seg, "raise_pct": p, "discount_ladders": "hold",
              "list_price_multiplier": round(1 + p / 100.0, 6)}
    return Outcome(seg, action, f"+{p:g}% list price for {seg}; hold discount ladders", reasons, figures, options)


def evaluate_pricing(segments: dict[str, dict], t: dict) -> list[Outcome]:
    """One outcome per segment. ``segments``: {segment: {elasticity, e_se, closed, price_per_seat, cm_per_seat,
    gm_pct, payback_months}} (the 'all' row is not a segment and is ignored). Every outcome's figures also list the
    segments held in this evaluation, so a proposal's memo shows what was not judged."""
    out = [_pricing_segment(seg, segments[seg], t) for seg in sorted(s for s in segments if s != "all")]
    held = {k: v for o in out for k, v in o.held.items()}
    for o in out:
        if held:
            o.figures["held"] = dict(held)
    return out
