"""The arithmetic of the scoring model, as plain functions: learned fit points, decay, caps and the grade grid.

Learned points (issue 19 §1.2): a value's observed win rate is noisy in proportion to its standard error, so it is
shrunk toward the overall rate by precision weighting (normal-normal empirical Bayes): with between-value variance
tau^2 and the value's sampling variance v_i, the shrunk rate is ``p0 + w_i (p_i - p0)`` with ``w_i = tau^2 / (tau^2
+ v_i)``. A segment of 3 deals gets a small w and stays near the overall rate, so it cannot dominate. The relative
lift of the shrunk rate over the overall rate becomes points: the overall rate earns half the cap, a lift of
``lift_for_cap`` the whole cap, a lift of ``-lift_for_cap`` nothing (clipped to [0, cap]).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from gtm_pipeline.scoring.contract import FitGroup, ScoringModel


@dataclass(frozen=True)
class Rate:
    """Closed and won opportunities of one value (a row of metrics.win_rate_by_segment)."""

    value: str
    won: int
    closed: int
    se: float | None = None           # the metric's win_rate_se; None: computed from won / closed


@dataclass(frozen=True)
class Learned:
    value: str
    won: int
    closed: int
    rate: float | None                # observed win rate (None without a closed deal)
    weight: float                     # w_i: how much of the value's own rate survives shrinkage (0..1)
    shrunk: float
    lift: float                       # shrunk / overall - 1
    points: float


def _variance(r: Rate, p0: float) -> float:
    """Sampling variance of a value's rate. The binomial se of the value's own rate is 0 at 0-of-n or n-of-n,
    which would make three lost deals a certainty; the variance under the overall rate is its floor."""
    if r.closed <= 0:
        return math.inf
    own = r.se ** 2 if r.se is not None else (r.won / r.closed) * (1 - r.won / r.closed) / r.closed
    return max(own, p0 * (1 - p0) / r.closed)


def tau_squared(rates: list[Rate], p0: float) -> float:
    """Between-value variance of the true rates (method of moments): the closed-weighted spread of the observed
    rates around p0, less the part sampling noise explains; 0 when noise explains all of it."""
    seen = [r for r in rates if r.closed > 0]
    n = sum(r.closed for r in seen)
    if n == 0:
        return 0.0
    spread = sum(r.closed * (r.won / r.closed - p0) ** 2 for r in seen) / n
    noise = sum(r.closed * _variance(r, p0) for r in seen) / n
    return max(0.0, spread - noise)


def points_for_lift(lift: float, cap: float, lift_for_cap: float) -> float:
    return round(cap * min(1.0, max(0.0, 0.5 + lift / (2 * lift_for_cap))), 2)


def learn_points(rates: Iterable[Rate], overall: Rate, cap: float, lift_for_cap: float) -> dict[str, Learned]:
    """Points per value of one fit group from its win rates and the overall rate (see the module docstring)."""
    rates = list(rates)
    if overall.closed <= 0 or overall.won <= 0:
        # no wins to compare with: every value is at the (unknown) baseline
        return {r.value: Learned(r.value, r.won, r.closed, None, 0.0, 0.0, 0.0, points_for_lift(0.0, cap, 1.0))
                for r in rates}
    p0 = overall.won / overall.closed
    tau2 = tau_squared(rates, p0)
    out = {}
    for r in rates:
        v = _variance(r, p0)
        w = 0.0 if math.isinf(v) or tau2 == 0 else tau2 / (tau2 + v)
        rate = r.won / r.closed if r.closed > 0 else None
        shrunk = p0 + w * ((rate if rate is not None else p0) - p0)
        lift = shrunk / p0 - 1
        out[r.value] = Learned(r.value, r.won, r.closed, rate, w, shrunk, lift,
                               points_for_lift(lift, cap, lift_for_cap))
    return out


@dataclass(frozen=True)
class ValuePoints:
    """The points one value of a fit group earns, and why (learned, override, or manual without an override)."""

    points: float
    source: str                       # "learned" | "override" | "baseline" (learned group, value never seen)
    learned: Learned | None = None
    by: str = ""
    why: str = ""


def group_points(group: FitGroup, learned: dict[str, Learned], cap: float, lift_for_cap: float
                 ) -> tuple[dict[str, ValuePoints], ValuePoints | None]:
    """Every value's points in one group, and what a value missing from the table gets (None: 0 points)."""
    out: dict[str, ValuePoints] = {}
    if group.points == "learned":
        out = {v: ValuePoints(lr.points, "learned", lr) for v, lr in learned.items()}
    for v, o in group.overrides.items():
        out[v] = ValuePoints(o.points, "override", learned.get(v), o.by, o.why)
    # a learned group's unseen value has no evidence either way: the overall rate, half the cap
    unseen = ValuePoints(points_for_lift(0.0, cap, lift_for_cap), "baseline") if group.points == "learned" else None
    return out, unseen


def decayed(points: float, age_days: float, half_life_days: float) -> float:
    """Points of one touch ``age_days`` old: halved every ``half_life_days``."""
    return points * 0.5 ** (max(age_days, 0.0) / half_life_days)


def fit_grade(fit_score: float, model: ScoringModel) -> str:
    g = model.grades.fit
    return "A" if fit_score >= g.A else "B" if fit_score >= g.B else "C"


def engagement_grade(engagement_score: float, model: ScoringModel) -> str:
    g = model.grades.engagement
    return "1" if engagement_score >= g.one else "2" if engagement_score >= g.two else "3"


def grade_sql(fit: str, engagement: str, model: ScoringModel) -> tuple[str, str]:
    """The same grid as `fit_grade` / `engagement_grade`, as DuckDB expressions over two SQL expressions."""
    f, e = model.grades.fit, model.grades.engagement
    return (f"CASE WHEN {fit} >= {f.A!r} THEN 'A' WHEN {fit} >= {f.B!r} THEN 'B' ELSE 'C' END",
            f"CASE WHEN {engagement} >= {e.one!r} THEN '1' WHEN {engagement} >= {e.two!r} THEN '2' ELSE '3' END")


def intent_strength_sql(intent: str, now: str) -> str:
    """Each intent signal up to ``now`` with its strength: its percentile among the same vendor's signals on the same
    topic (cume_dist: the share at or below it), because vendors score on scales of their own -- 70 from one is not
    70 from another. The strongest signal of a vendor and topic counts 1.0, a lone signal too."""
    return (f"SELECT account_id, observed_at, cume_dist() OVER (PARTITION BY vendor, topic ORDER BY intent_score) "
            f"AS strength FROM {intent} WHERE observed_at IS NOT NULL AND observed_at <= {now}")


def touches_sql(activity: str, intent: str, lead: str, now: str, groups: Iterable[str]) -> str:
    """Every touch of a lead up to ``now`` that engagement counts: (lead_id, grp, ts, strength). Activities of the
    ``groups`` types count 1.0; an intent signal of the lead's account counts its vendor/topic percentile. The one
    definition both the score (``metrics.lead_score``) and the lifecycle's MQL replay read, so they cannot drift."""
    types = ", ".join(f"'{g}'" for g in groups)
    return (f"SELECT lead_id, activity_type AS grp, occurred_at AS ts, 1.0 AS strength FROM {activity} "
            f"WHERE activity_type IN ({types}) AND lead_id IS NOT NULL AND occurred_at <= {now} "
            f"UNION ALL SELECT l.lead_id, 'intent', i.observed_at, i.strength "
            f"FROM ({intent_strength_sql(intent, now)}) i JOIN {lead} l ON l.account_id = i.account_id")
