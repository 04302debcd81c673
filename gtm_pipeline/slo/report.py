"""`gtm-pipeline slo report`: the SLO table for people (and as JSON for scripts)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from gtm_pipeline.clock import iso_z
from gtm_pipeline.datatime import blocked_text, split_blocking
from gtm_pipeline.slo.contract import SEVERITIES
from gtm_pipeline.slo.durations import format_duration, human_duration
from gtm_pipeline.slo.evaluate import Evaluation
from gtm_pipeline.slo.history import History


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _ts(t: float | None, short: bool = False) -> str:
    if t is None:
        return "-" if short else "never"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def _blocking_text(blocking: tuple[str, ...], shown: int = 3) -> str:
    more = f" (+{len(blocking) - shown} more)" if len(blocking) > shown else ""
    return ", ".join(" ".join(split_blocking(b)) for b in blocking[:shown]) + more


def _blocked_days_text(ev: Evaluation, described: Mapping[str, str]) -> list[str]:
    """Once per blocked day that holds a version back, in the wording every output uses (datatime.blocked_text)."""
    held = sorted({b for figs in ev.slos for a in figs.assets for b in a.blocking})
    if not held:
        return []
    return ["Blocked days holding versions back:"] + [
        "  " + (described.get(b) or blocked_text(*_asset_days(b))) for b in held] + [""]


def _asset_days(blocking: str) -> tuple[str, tuple[str, ...]]:
    asset, day = split_blocking(blocking)
    return asset, (day,) if day else ()


def render(ev: Evaluation, history: History, blocked: Mapping[str, str] | None = None) -> str:
    """The report for people. ``blocked``: for a blocked partition ("clean/opportunity@2026-08-16"), its sentence
    with the check and rows behind it, when the caller could read them from the warehouse."""
    windows = ev.slo_file.windows
    wcols = "".join(f"{'burn ' + format_duration(w) if i == 0 else format_duration(w):>9}"
                    for i, w in enumerate(windows))
    head = (f"{'SLO / asset':<34}{'state':<9}{'age':>8}{'data time':>18}{'attainment':>12}{'budget left':>13}{wcols}"
            f"  alert")
    lines = [f"Freshness SLOs at {_ts(ev.now)} UTC (history {history.path})", "", head, "-" * len(head)]
    for figs in ev.slos:
        slo = figs.slo
        state = history.alert_state(slo.name)
        level = state.level if state else "ok"
        alert = level if level == "ok" else f"{level} ({SEVERITIES[level]}" + (
            f", {state.incident_id})" if state and state.incident_id else ")")
        ages = [a.age for a in figs.assets if a.age is not None]
        burns = "".join(f"{figs.worst_burn(w):>9.2f}" for w in windows)
        oldest = min((a.data_time for a in figs.assets if a.data_time is not None), default=None)
        lines.append(f"{slo.name:<34}{figs.state:<9}{human_duration(max(ages) if ages else None):>8}"
                     f"{_ts(oldest, short=True):>18}{_pct(figs.attainment):>12}{_pct(figs.budget_remaining):>13}"
                     f"{burns}  {alert}")
        for a in figs.assets:
            note = " publish blocked " + _ts(ev.blocked[a.asset]) if a.asset in ev.blocked else ""
            if a.blocking:
                note += " held back by " + _blocking_text(a.blocking)
            burns = "".join(f"{a.burn[w]:>9.2f}" for w in windows)
            lines.append(f"  {a.asset:<32}{a.state:<9}{human_duration(a.age):>8}{_ts(a.data_time, short=True):>18}"
                         f"{_pct(a.attainment):>12}"
                         f"{_pct(a.budget_remaining):>13}{burns}  {a.level}{note}")
        for k in figs.pending:
            lines.append(f"  {k:<32}{'unknown':<9}{'-':>8}  (not defined in this code location yet)")
        if not figs.assets and not figs.pending:
            lines.append("  (covers no asset yet)")
        lines.append(f"  {slo.statement} over {human_duration(slo.window)} (budget {human_duration(slo.budget_seconds)}"
                     f" of staleness), owner {slo.owner}; {human_duration(ev.reconstructed[slo.name])} of the window "
                     f"reconstructed from publication times (nothing evaluated then)")
        lines.append("")
    lines += _blocked_days_text(ev, blocked or {})
    pending = history.outbox(pending_only=True)
    if pending:
        lines.append(f"{len(pending)} state change(s) not yet delivered to every target "
                     f"(incident / webhook / slack); the sensor retries each tick.")
    sensor = history.meta("sensor_last_evaluation")
    lines.append(f"Sensor {'last evaluated ' + _ts(float(sensor)) + ' UTC' if sensor else 'has not evaluated yet'}.")
    return "\n".join(lines)


def as_json(ev: Evaluation, history: History) -> dict:
    slos: list[dict] = []
    out = {"at": _ts(ev.now), "slos": slos}
    for figs in ev.slos:
        state = history.alert_state(figs.slo.name)
        slos.append({
            "slo": figs.slo.name, "statement": figs.slo.statement, "owner": figs.slo.owner,
            "objective": figs.slo.objective, "threshold_seconds": figs.slo.threshold,
            "window_seconds": figs.slo.window, "state": figs.state,
            "alert_level": state.level if state else "ok", "incident_id": state.incident_id if state else None,
            "attainment": figs.attainment, "budget_remaining": figs.budget_remaining,
            "burn_rates": {format_duration(w): figs.worst_burn(w) for w in ev.slo_file.windows},
            "reconstructed_seconds": ev.reconstructed[figs.slo.name],
            "data_time": iso_z(min((a.data_time for a in figs.assets if a.data_time is not None), default=None)),
            "age_seconds": max((a.age for a in figs.assets if a.age is not None), default=None),
            "status": figs.state,
            "blocking_inputs": sorted({b for a in figs.assets for b in a.blocking}),
            "assets": [{
                "asset": a.asset, "state": a.state, "status": a.state, "age_seconds": a.age,
                "data_time": iso_z(a.data_time), "blocking_inputs": list(a.blocking),
                "last_published": _ts(a.last_published),
                "good_seconds": a.window.good, "bad_seconds": a.window.bad, "unknown_seconds": a.window.unknown,
                "attainment": a.attainment, "budget_remaining": a.budget_remaining, "level": a.level,
                "burn_rates": {format_duration(w): r for w, r in a.burn.items()},
                "publish_blocked_at": _ts(ev.blocked[a.asset]) if a.asset in ev.blocked else None,
            } for a in figs.assets],
            "pending": list(figs.pending),
        })
    return out
