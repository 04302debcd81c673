"""Alert levels per SLO and the state changes they cause.

Each evaluation gives an SLO a level: ``page`` (fast burn, SEV2), ``ticket`` (slow burn, SEV3) or ``ok``. The stored
level rises at once and steps down only after the lower level has held for ``resolve_after`` (hysteresis), so a
burn rate hovering at a threshold does not flap. Every change of the stored level is one state change: it is stored
with the new level in one transaction (`History.save_state`) and delivered from there exactly once per target
(`gtm_pipeline.slo.notify`). A page mutes the ticket of the same SLO, as the Alertmanager example does.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

from gtm_pipeline.slo.contract import LEVELS, SEVERITIES
from gtm_pipeline.slo.durations import format_duration, human_duration
from gtm_pipeline.slo.evaluate import Evaluation
from gtm_pipeline.slo.history import AlertState, History
from gtm_pipeline.slo.sli import SloFigures


def step(prev: AlertState | None, slo: str, level: str, now: float,
         resolve_after: float) -> tuple[AlertState, bool]:
    """The next stored state for an evaluated ``level``, and whether the stored level changed."""
    if prev is None:
        prev = AlertState(slo, "ok", now, None, None, None)
    cur, new = LEVELS.index(prev.level), LEVELS.index(level)
    if new > cur:
        return AlertState(slo, level, now, None, None, None), True
    if new == cur:
        return replace(prev, lower_level=None, lower_since=None), False
    lower_since = prev.lower_since if prev.lower_since is not None else now
    if now - lower_since >= resolve_after:
        return AlertState(slo, level, now, None, None, None), True
    return replace(prev, lower_level=level, lower_since=lower_since), False


def incident_dedup_key(slo: str, level: str) -> str:
    return f"slo:{slo}:{level}"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _kind(frm: str, to: str) -> str:
    if frm == "ok":
        return "opened"
    if to == "ok":
        return "resolved"
    return "escalated" if LEVELS.index(to) > LEVELS.index(frm) else "de-escalated"


def build_change(figs: SloFigures, frm: str, to: str, now: float, prev_incident: str | None,
                 windows: tuple[int, ...]) -> dict:
    """The state change as stored in the outbox and posted to webhooks (see docs/slo.md for the fields)."""
    slo = figs.slo
    event_id = "slo-" + hashlib.sha256(f"{slo.name}|{frm}|{to}|{now!r}".encode()).hexdigest()[:16]
    incident_id = None
    if to != "ok":
        incident_id = "INC-" + hashlib.sha256(f"{incident_dedup_key(slo.name, to)}|{now!r}".encode()).hexdigest()[:10]
    concerned = [a for a in figs.assets if a.level != "ok" or a.state in ("stale", "unknown")] or list(figs.assets)
    concerned.sort(key=lambda a: (LEVELS.index(a.level), a.state == "stale", a.age or 0.0), reverse=True)
    assets = [{
        "asset": a.asset, "state": a.state, "level": a.level,
        "age_seconds": None if a.age is None else round(a.age, 1),
        "last_published_at": None if a.last_published is None else _iso(a.last_published),
        "data_time": None if a.data_time is None else _iso(a.data_time),
        "blocking_inputs": list(a.blocking),
        "stale_since": None if a.stale_since is None else _iso(a.stale_since),
        "burn_rates": {format_duration(w): round(a.burn[w], 3) for w in windows},
        "budget_remaining": round(a.budget_remaining, 4),
    } for a in concerned]
    kind = _kind(frm, to)
    worst = concerned[0] if concerned else None
    what = {"page": "fast burn", "ticket": "slow burn", "ok": "recovered"}[to]
    detail = ""
    if worst is not None and worst.state == "stale":
        detail = f"; {worst.asset}'s data is {human_duration(worst.age)} old"
        if worst.blocking:
            detail += f", held back by {', '.join(worst.blocking[:2])}"
    elif worst is not None and worst.age is not None:
        detail = f"; {worst.asset}'s data is {human_duration(worst.age)} old"
    sev = SEVERITIES.get(to)
    title = (f"[{sev}] " if sev else "[RESOLVED] ") + f"{slo.name}: {what} ({kind}) - {slo.statement}{detail}"
    return {
        "event_id": event_id, "source": "gtm-pipeline", "type": "slo_state_change", "kind": kind,
        "status": "resolved" if to == "ok" else "firing",
        "slo": slo.name, "statement": slo.statement, "owner": slo.owner, "objective": slo.objective,
        "threshold_seconds": slo.threshold, "window_seconds": slo.window,
        "from": frm, "to": to, "severity": sev, "previous_severity": SEVERITIES.get(frm),
        "at": now, "at_iso": _iso(now), "title": title,
        "incident_id": incident_id, "resolves_incident_id": prev_incident if frm != "ok" else None,
        "dedup_key": incident_dedup_key(slo.name, to) if to != "ok" else None,
        "resolves_dedup_key": incident_dedup_key(slo.name, frm) if frm != "ok" else None,
        "attainment": None if figs.attainment is None else round(figs.attainment, 6),
        "budget_remaining": None if figs.budget_remaining is None else round(figs.budget_remaining, 6),
        "assets": assets,
    }


def advance(history: History, evaluation: Evaluation) -> list[dict]:
    """Step every SLO's stored level for this evaluation; return the state changes (already in the outbox)."""
    changes = []
    f = evaluation.slo_file
    for figs in evaluation.slos:
        name = figs.slo.name
        prev = history.alert_state(name)
        new, changed = step(prev, name, figs.level, evaluation.now, f.resolve_after)
        if not changed:
            if new != prev:
                history.save_state(new)
            continue
        frm = prev.level if prev else "ok"
        change = build_change(figs, frm, new.level, evaluation.now, prev.incident_id if prev else None, f.windows)
        history.save_state(replace(new, incident_id=change["incident_id"]), change)
        changes.append(change)
    return changes
