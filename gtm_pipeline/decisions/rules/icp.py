"""§4.3 icp.update: add or remove industries and size bands on +-5 pp win rate for >= 2 months and a payback
>= 1 month better (or worse); enforce disqualification gates at DQ reason coverage >= 98 %."""

from __future__ import annotations

from typing import Any

from gtm_pipeline.decisions.rules.common import Outcome, finish, ge, held_note, hold, le, num


def _icp_months(win_rows: list[dict], months_n: int) -> tuple[dict[str, dict], list[str]]:
    base = {r["month"]: r for r in win_rows if r["dimension"] == "all" and r["month"] != "all"}
    usable = [m for m, r in base.items() if (num(r.get("closed")) or 0) > 0 and num(r.get("won")) is not None]
    return base, sorted(usable, reverse=True)[:months_n]


def _icp_value(item: str, rows: dict[str, dict], base: dict[str, dict], months: list[str], pb: float | None,
               baseline_payback: float | None, current: dict, t: dict) -> tuple[str, str, list[float]]:
    """(verdict, reason, win-rate differences in pp) of one industry or size band; verdict in add | remove |
    none | held."""
    diffs: list[float] = []
    for m in months:
        r = rows.get(m) or {}
        closed = num(r.get("closed"))
        if closed is None or closed == 0:
            return "held", f"no closed opportunities in {m}", diffs
        if closed < t["min_closed_per_month"]:
            return "held", f"{m}: {closed:g} closed < min_closed_per_month {t['min_closed_per_month']}", diffs
        won = num(r.get("won"))
        if won is None:
            return "held", f"{m}: wins unknown", diffs
        diffs.append((won / closed - base[m]["won"] / base[m]["closed"]) * 100)
    text = ", ".join(f"{d:+.1f}" for d in diffs)
    diff_pp, step = float(t["win_rate_diff_pp"]), t["payback_improvement_months"]
    up, down = all(ge(d, diff_pp) for d in diffs), all(le(d, -diff_pp) for d in diffs)
    if not (up or down):
        return "none", f"win rate {text} pp vs all: not beyond ±{diff_pp:g} pp in every month", diffs
    if pb is None or baseline_payback is None:
        what = "its payback" if pb is None else "the baseline payback"
        return "held", f"win rate {text} pp vs all, but {what} is unknown", diffs
    if up:
        if not le(pb, baseline_payback - step):
            return "none", (f"wins more ({text} pp) but payback {pb:.2f} is not >= {step:g} month better than "
                            f"{baseline_payback:.2f}"), diffs
        if item in current.get("include", []):
            return "none", f"wins more ({text} pp), pays back faster, already included", diffs
        return "add", (f"win rate {text} pp vs all in {', '.join(months)}; payback {pb:.2f} <= "
                       f"{baseline_payback:.2f} - {step:g} months"), diffs
    if not ge(pb, baseline_payback + step):
        return "none", (f"wins less ({text} pp) but payback {pb:.2f} is not >= {step:g} month worse than "
                        f"{baseline_payback:.2f}"), diffs
    if item in current.get("exclude", []):
        return "none", f"wins less ({text} pp), pays back slower, already excluded", diffs
    return "remove", (f"win rate {text} pp vs all in {', '.join(months)}; payback {pb:.2f} >= "
                      f"{baseline_payback:.2f} + {step:g} months"), diffs


def _dq_gates(dq_coverage: float | None, dq_disqualified: float | None, gates_now: bool, t: dict,
              held: dict, reasons: list[str]) -> bool:
    """Whether to switch the disqualification gates on now (coverage >= 98 % on a large enough sample)."""
    cov_min, n_min = t["dq_reason_coverage_min"], t["min_disqualified"]
    if dq_coverage is None:
        hold(held, reasons, "dq_gates", "DQ reason coverage unknown: gates unchanged")
        return False
    if dq_disqualified is not None and dq_disqualified < n_min:
        hold(held, reasons, "dq_gates", f"{dq_disqualified:g} disqualified leads < min_disqualified {n_min}: "
                                         f"coverage {dq_coverage:.4f} cannot be read to the 98 % line; gates unchanged")
        return False
    if dq_disqualified is None:
        reasons.append("DQ sample size not given: min_disqualified not checked")
    enforce = ge(dq_coverage, cov_min)
    reasons.append(f"DQ reason coverage {dq_coverage:.4f} {'>=' if enforce else '<'} {cov_min}: "
                   + ("enforce disqualification gates" if enforce else "gates not enforced"))
    return enforce and not gates_now


def evaluate_icp(win_rows: list[dict], payback: dict[tuple[str, str], float | None], baseline_payback: float | None,
                 dq_coverage: float | None, current_filter: dict, t: dict, *,
                 dq_disqualified: float | None = None) -> Outcome:
    """``win_rows``: rows of win_rate_by_segment {dimension, value, month, closed, won} (monthly rows only are used;
    dimension 'all' is the baseline); ``payback``: {(dimension, value): months}; ``current_filter``: the audience
    filter in force {include: [...], exclude: [...], dq_gates: bool}, items as "dimension=value";
    ``dq_disqualified``: the number of disqualified leads behind ``dq_coverage`` (its sample)."""
    months_n = int(t["months"])
    base, months = _icp_months(win_rows, months_n)
    baseline_payback = num(baseline_payback)
    reasons: list[str] = []
    held: dict[str, dict[str, str]] = {}
    figures: dict[str, Any] = {"months": months, "baseline_payback_months": baseline_payback,
                               "dq_reason_coverage": dq_coverage, "dq_disqualified": dq_disqualified, "values": {}}
    include, exclude = list(current_filter.get("include", [])), list(current_filter.get("exclude", []))
    add: list[str] = []
    remove: list[str] = []
    by_value: dict[tuple[str, str], dict[str, dict]] = {}
    for r in win_rows:
        if r["dimension"] in t["dimensions"] and r["month"] != "all" and r["value"] not in ("all", "unknown"):
            by_value.setdefault((r["dimension"], r["value"]), {})[r["month"]] = r
    if len(months) < months_n:
        hold(held, reasons, "segments", f"only {len(months)} month(s) with closes; months: {months_n} needed for "
                                         f"an add/remove ({len(by_value)} industries and size bands not judged)")
    else:
        for key in sorted(by_value):
            item = f"{key[0]}={key[1]}"
            pb = num(payback.get(key))
            verdict, why, diffs = _icp_value(item, by_value[key], base, months, pb, baseline_payback,
                                             current_filter, t)
            figures["values"][item] = {"win_rate_diff_pp": diffs or None, "payback_months": pb, "verdict": verdict}
            if verdict == "held":
                hold(held, reasons, item, why)
            else:
                (add if verdict == "add" else remove if verdict == "remove" else []).append(item)
                reasons.append(f"{item}: {verdict if verdict != 'none' else 'no change'} -- {why}")
    gates_now = bool(current_filter.get("dq_gates", False))
    coverage = num(dq_coverage)
    gates_change = _dq_gates(coverage, num(dq_disqualified), gates_now, t, held, reasons)
    options = ["keep the current audience filter"]
    if not add and not remove and not gates_change:
        enforced = gates_now and "dq_gates" not in held and coverage is not None \
            and ge(coverage, t["dq_reason_coverage_min"])
        return finish(Outcome("audience_filter", None, "no change: no segment crosses the thresholds"
                               + ("; DQ gates already enforced" if enforced else "") + held_note(held),
                               reasons, figures, options, held))
    new_include = sorted(set(include + add) - set(remove))
    new_exclude = sorted(set(exclude + remove) - set(add))
    action = {"kind": "audience_filter", "add": add, "remove": remove, "enforce_dq_gates": gates_change,
              "held": sorted(held), "filter": {"include": new_include, "exclude": new_exclude,
                                               "dq_gates": gates_now or gates_change}}
    parts = ([f"add {', '.join(add)}"] if add else []) + ([f"remove {', '.join(remove)}"] if remove else []) + \
        (["enforce disqualification gates"] if gates_change else [])
    options.append("update the filter as the thresholds imply (chosen)")
    return finish(Outcome("audience_filter", action, "ICP: " + "; ".join(parts) + held_note(held), reasons,
                           figures, options, held))
