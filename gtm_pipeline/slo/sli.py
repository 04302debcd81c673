"""Freshness SLI, error budget and burn rates: pure functions of the version timeline (epoch seconds, UTC).

Each published version of an asset has a publication time p (when readers started to see it) and a **data time**
d (how far its inputs are complete; docs/design.md §6). At time t the version in force is the latest one published at or
before t, and the asset's age is ``t - d`` of that version -- data age, not time since the last recompute: a
recompute over unchanged inputs publishes a new version with the same d and so leaves the age where it was. The
asset is *good* while that age is below the SLO's threshold, *bad* after, and *unknown* before its first
publication (never "fresh"). Because age is a function of the timeline alone, any stretch of time can be
reconstructed exactly from it -- a period in which nothing evaluated is computed, not assumed good.

Budget and burn rates follow the SRE Workbook (ch. 5): the budget is ``(1 - objective) x window`` of stale time; the
burn rate over a window W is ``stale time in W / (W x (1 - objective))``, so 1 spends the budget exactly over the
SLO window and 14.4 spends 2% of a 30-day budget in an hour. An alert fires when the burn rate over both the long and
the short window of a pair exceeds the pair's rate.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gtm_pipeline.slo.contract import LEVELS, BurnWindow, Slo


@dataclass(frozen=True)
class TimeSplit:
    good: float = 0.0
    bad: float = 0.0
    unknown: float = 0.0

    @property
    def known(self) -> float:
        return self.good + self.bad


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class Version(NamedTuple):
    """One published version: when readers started to see it, how far its data is complete, and the blocked inputs
    that stopped its data time (empty when it is complete)."""

    published_at: float
    data_time: float
    blocking: tuple[str, ...] = ()


def versions_of(items: Iterable[Version | tuple | float]) -> list[Version]:
    """Ascending by publication time, one per publication time (the last given wins). A bare number is a version
    whose data time is its publication time (an asset that computes from nothing older than itself)."""
    out: dict[float, Version] = {}
    for it in items:
        if isinstance(it, Version):
            v = it
        elif isinstance(it, tuple):
            v = Version(float(it[0]), float(it[1]), tuple(it[2]) if len(it) > 2 and it[2] else ())
        else:
            v = Version(float(it), float(it))
        out[v.published_at] = v
    return [out[k] for k in sorted(out)]


def split(pubs: Sequence[Version | tuple | float], threshold: float, start: float, end: float) -> TimeSplit:
    """Seconds of [start, end) in which the asset was fresh, stale, or not yet published."""
    vs = versions_of(pubs)
    if end <= start:
        return TimeSplit()
    if not vs or vs[0].published_at >= end:
        return TimeSplit(unknown=end - start)
    unknown = max(0.0, min(end, vs[0].published_at) - start)
    good = bad = 0.0
    times = [v.published_at for v in vs]
    i = max(0, bisect.bisect_right(times, start) - 1)  # the version in force at `start`
    while i < len(vs) and vs[i].published_at < end:
        p, d = vs[i].published_at, vs[i].data_time
        nxt = times[i + 1] if i + 1 < len(vs) else float("inf")
        stale_at = max(p, d + threshold)  # a version may already be stale when it is published
        good += _overlap(p, min(nxt, stale_at), start, end)
        bad += _overlap(stale_at, nxt, start, end)
        i += 1
    return TimeSplit(good=good, bad=bad, unknown=unknown)


def latest_at(pubs: Sequence[Version | tuple | float], t: float) -> Version | None:
    vs = versions_of(pubs)
    i = bisect.bisect_right([v.published_at for v in vs], t)
    return vs[i - 1] if i else None


def burn_rate(pubs: Sequence[Version | tuple | float], threshold: float, objective: float, window: float,
              now: float) -> float:
    """Stale share of the last ``window`` seconds divided by the allowed share (1 - objective)."""
    bad = split(pubs, threshold, now - window, now).bad
    return bad / (window * (1.0 - objective))


def level_for(burns: dict[int, float], alerting: Sequence[BurnWindow]) -> str:
    """'page', 'ticket' or 'ok': the highest severity whose long AND short burn rates both exceed the pair's rate."""
    level = "ok"
    for b in alerting:
        if burns[b.long] > b.burn_rate and burns[b.short] > b.burn_rate and LEVELS.index(b.severity) > LEVELS.index(
                level):
            level = b.severity
    return level


@dataclass(frozen=True)
class AssetFigures:
    """One asset under one SLO at one instant."""

    slo: str
    asset: str
    now: float
    last_published: float | None      # epoch seconds of the published version in force, None = never published
    age: float | None                 # seconds: now - data_time
    state: str                        # fresh | warn | stale | unknown
    window: TimeSplit                 # over the SLO window
    attainment: float | None          # good / known over the window; None when nothing is known yet
    budget_remaining: float           # 1 - stale time / budget; negative once overspent
    burn: dict[int, float]            # window seconds -> burn rate
    level: str                        # ok | ticket | page
    stale_since: float | None         # start of the current stale stretch
    data_time: float | None = None    # how far the version in force is complete
    blocking: tuple[str, ...] = ()    # blocked inputs that stop its data time ("clean/opportunity@2026-08-16")


def asset_figures(slo: Slo, asset: str, pubs: Sequence[Version | tuple | float], now: float,
                  alerting: Sequence[BurnWindow], windows: Sequence[int]) -> AssetFigures:
    pubs = [v for v in versions_of(pubs) if v.published_at <= now]
    version = latest_at(pubs, now)
    last = None if version is None else version.published_at
    age = None if version is None else now - version.data_time
    if age is None:
        state = "unknown"
    elif age >= slo.threshold:
        state = "stale"
    elif slo.warn_after is not None and age >= slo.warn_after:
        state = "warn"
    else:
        state = "fresh"
    win = split(pubs, slo.threshold, now - slo.window, now)
    burns = {w: burn_rate(pubs, slo.threshold, slo.objective, w, now) for w in windows}
    return AssetFigures(
        slo=slo.name, asset=asset, now=now, last_published=last, age=age, state=state, window=win,
        attainment=(win.good / win.known) if win.known > 0 else None,
        budget_remaining=1.0 - win.bad / slo.budget_seconds,
        burn=burns, level=level_for(burns, alerting),
        stale_since=(max(version.published_at, version.data_time + slo.threshold)
                     if version is not None and state == "stale" else None),
        data_time=None if version is None else version.data_time,
        blocking=() if version is None else version.blocking,
    )


_STATE_ORDER = ("fresh", "warn", "unknown", "stale")


@dataclass(frozen=True)
class SloFigures:
    """An SLO holds only if each covered asset holds it: its figures are those of its worst asset."""

    slo: Slo
    now: float
    assets: tuple[AssetFigures, ...]
    pending: tuple[str, ...] = ()     # keys named in the file whose stage is not deployed yet (unknown)

    @property
    def level(self) -> str:
        return max((a.level for a in self.assets), key=LEVELS.index, default="ok")

    @property
    def state(self) -> str:
        states = [a.state for a in self.assets] + ["unknown"] * len(self.pending)
        return max(states, key=_STATE_ORDER.index, default="unknown")

    @property
    def attainment(self) -> float | None:
        vals = [a.attainment for a in self.assets if a.attainment is not None]
        return min(vals) if vals else None

    @property
    def budget_remaining(self) -> float | None:
        return min((a.budget_remaining for a in self.assets), default=None)

    def worst_burn(self, window: int) -> float:
        return max((a.burn[window] for a in self.assets), default=0.0)

    def burning(self, level: str) -> list[AssetFigures]:
        return [a for a in self.assets if a.level == level]
