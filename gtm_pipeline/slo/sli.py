"""Freshness SLI, error budget and burn rates: pure functions of publication times (epoch seconds, UTC).

The SLI is time-based: at time t the published version of an asset has age ``t - p`` where p is the latest
publication at or before t. The asset is *good* while that age is below the SLO's threshold, *bad* after, and
*unknown* before its first publication (never "fresh"). Because age is a function of publication times alone, any
stretch of time can be reconstructed exactly from the publication timeline -- a period in which nothing evaluated
is computed, not assumed good.

Budget and burn rates follow the SRE Workbook (ch. 5): the budget is ``(1 - objective) x window`` of stale time; the
burn rate over a window W is ``stale time in W / (W x (1 - objective))``, so 1 spends the budget exactly over the
SLO window and 14.4 spends 2% of a 30-day budget in an hour. An alert fires when the burn rate over both the long and
the short window of a pair exceeds the pair's rate.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

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


def split(pubs: Sequence[float], threshold: float, start: float, end: float) -> TimeSplit:
    """Seconds of [start, end) in which the asset was fresh, stale, or not yet published. ``pubs`` ascending."""
    if end <= start:
        return TimeSplit()
    if not pubs or pubs[0] >= end:
        return TimeSplit(unknown=end - start)
    unknown = max(0.0, min(end, pubs[0]) - start)
    good = bad = 0.0
    i = max(0, bisect.bisect_right(pubs, start) - 1)  # the publication in force at `start`
    while i < len(pubs) and pubs[i] < end:
        p = pubs[i]
        nxt = pubs[i + 1] if i + 1 < len(pubs) else float("inf")
        good += _overlap(p, min(nxt, p + threshold), start, end)
        if nxt > p + threshold:
            bad += _overlap(p + threshold, nxt, start, end)
        i += 1
    return TimeSplit(good=good, bad=bad, unknown=unknown)


def latest_at(pubs: Sequence[float], t: float) -> float | None:
    i = bisect.bisect_right(pubs, t)
    return pubs[i - 1] if i else None


def burn_rate(pubs: Sequence[float], threshold: float, objective: float, window: float, now: float) -> float:
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
    age: float | None                 # seconds
    state: str                        # fresh | warn | stale | unknown
    window: TimeSplit                 # over the SLO window
    attainment: float | None          # good / known over the window; None when nothing is known yet
    budget_remaining: float           # 1 - stale time / budget; negative once overspent
    burn: dict[int, float]            # window seconds -> burn rate
    level: str                        # ok | ticket | page
    stale_since: float | None         # start of the current stale stretch


def asset_figures(slo: Slo, asset: str, pubs: Sequence[float], now: float,
                  alerting: Sequence[BurnWindow], windows: Sequence[int]) -> AssetFigures:
    pubs = sorted(set(p for p in pubs if p <= now))
    last = latest_at(pubs, now)
    age = None if last is None else now - last
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
        stale_since=(last + slo.threshold) if state == "stale" else None,
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
