"""Kaplan–Meier estimation in numpy, for time-to-value metrics (`gtm_pipeline.metrics.ttv`).

Subjects who have not reached the event by the as-of time are *censored*: they are known to have waited at least
that long. Dropping them, or taking the median over converters only, is biased low (only the fast ones have
converted yet); Kaplan–Meier keeps them in the risk set until their censoring time.

Conventions (Kaplan & Meier 1958; the usual textbook tables, e.g. Kleinbaum & Klein, *Survival Analysis*, ch. 2):

* at a time t with both events and censorings, the events come first: a subject censored at t is still at risk at
  t, so S(t) = prod over event times u <= t of (1 - d_u / n_u), with n_u the subjects whose time is >= u;
* the q-quantile of the time to event is the smallest t with S(t) <= 1 - q (p50: S <= 0.5; p90: S <= 0.1), and
  None (never 0) when the curve does not get that low;
* the share reached by day d is 1 - S(d), and None when no subject was followed up to d while the curve is still
  above 0 (beyond the longest follow-up the curve is not identified).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# S(t) is a product of ratios; with no censoring it equals (n - events so far) / n only up to rounding, so a
# quantile's "S(t) <= 1 - q" allows this much, lest the empirical 0.5 be read as 0.5000000000000001.
_EPS = 1e-12


@dataclass(frozen=True)
class KaplanMeier:
    times: np.ndarray      # distinct event times, ascending
    survival: np.ndarray   # S(t) just after each of those times
    at_risk: np.ndarray    # n_t: subjects whose time is >= t
    events: np.ndarray     # d_t: events at t
    subjects: int
    max_time: float        # longest follow-up (event or censoring); nan with no subjects

    def s(self, t: float) -> float:
        """S(t): the share not yet reached at time t (1.0 before the first event)."""
        i = int(np.searchsorted(self.times, t, side="right"))
        return 1.0 if i == 0 else float(self.survival[i - 1])

    def quantile(self, q: float) -> float | None:
        """Smallest t with S(t) <= 1 - q; None when the curve never gets there."""
        hit = np.flatnonzero(self.survival <= 1.0 - q + _EPS)
        return float(self.times[hit[0]]) if hit.size else None

    def reached_by(self, d: float) -> float | None:
        """1 - S(d); None when d lies beyond the longest follow-up and the curve has not reached 0."""
        if self.subjects == 0:
            return None
        s = self.s(d)
        if d > self.max_time and s > 0.0:
            return None
        return 1.0 - s


def kaplan_meier(durations: np.ndarray | list[float], observed: np.ndarray | list[bool]) -> KaplanMeier:
    """The Kaplan–Meier curve of ``durations`` (>= 0), where ``observed`` is False for a censored subject."""
    t = np.asarray(durations, dtype=float)
    e = np.asarray(observed, dtype=bool)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError(f"durations {t.shape} and observed {e.shape} must be 1-d arrays of one length")
    if t.size and (np.isnan(t).any() or t.min() < 0):
        raise ValueError("durations must be >= 0 and not NaN (clamp an end before the start to 0 first)")
    if t.size == 0:
        empty = np.array([], dtype=float)
        return KaplanMeier(empty, empty, empty.astype(int), empty.astype(int), 0, float("nan"))
    times = np.unique(t[e])
    sorted_t = np.sort(t)
    # n_t = subjects with time >= t (events and censorings at t included: events before censorings).
    at_risk = t.size - np.searchsorted(sorted_t, times, side="left")
    events = np.searchsorted(np.sort(t[e]), times, side="right") - np.searchsorted(np.sort(t[e]), times,
                                                                                    side="left")
    survival = np.cumprod(1.0 - events / at_risk)
    return KaplanMeier(times, survival, at_risk.astype(int), events.astype(int), int(t.size), float(t.max()))


def converters_quantile(durations: np.ndarray | list[float], observed: np.ndarray | list[bool],
                        q: float) -> float | None:
    """The q-quantile over converters only (censored subjects dropped): the biased figure KM replaces, kept to
    show the bias beside it. Same quantile rule (smallest t with a share >= q reached)."""
    t = np.asarray(durations, dtype=float)[np.asarray(observed, dtype=bool)]
    return float(np.quantile(t, q, method="inverted_cdf")) if t.size else None
