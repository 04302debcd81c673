"""The experiment backlog, ranked by business-weighted learning velocity (research note 001):

    score = P(win) x $ impact per year / weeks of runtime

* **weeks of runtime**: the units still needed (``planned_units`` minus those exposed so far) over the units exposed
  per week in the last 28 days, within the contract's minimum and maximum runtime;
* **$ impact per year**: the lift (the current estimate once the experiment runs and its interval excludes 0,
  otherwise the contract's ``mde``) x units per week x 52 x what +1 of the metric is worth in contribution margin,
  from the metric layer (`outcomes.Outcome.dollars_sql`: e.g. one SQL = SQL-to-win x a new customer's monthly CM x
  12);
* **P(win)**: before any data, ``prior`` (the share of experiments that win; 1 in 3 by default) x the power to see
  the mde at the planned size; once running, the probability that the true lift clears the decision threshold
  under a normal approximation of the current estimate, Phi((estimate - threshold) / se).

Every figure is shown with where it came from, so a ranking can be argued with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from gtm_pipeline.experiments.contract import Experiment
from gtm_pipeline.experiments.outcomes import outcome_for
from gtm_pipeline.experiments.readout import _ts, default_table, readout
from gtm_pipeline.experiments.stats import normal_quantile

PRIOR_WIN_RATE = 1 / 3
TRAFFIC_DAYS = 28


@dataclass(frozen=True)
class BacklogItem:
    experiment: str
    status: str                  # planned | running | <the last look's verdict>
    units_per_week: float
    weeks: float
    lift: float
    dollars_per_unit: float | None
    impact_per_year: float | None
    p_win: float
    score: float | None
    why: str


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def backlog(con: duckdb.DuckDBPyConnection, experiments: dict[str, Experiment], now: datetime,
            prior: float = PRIOR_WIN_RATE) -> list[BacklogItem]:
    items = [_item(con, e, now, prior) for e in experiments.values()]
    return sorted(items, key=lambda i: (i.score is None, -(i.score or 0.0), i.experiment))


def _item(con, exp: Experiment, now: datetime, prior: float) -> BacklogItem:
    o = outcome_for(exp.unit, exp.primary_metric.metric, exp.primary_metric.column)
    assert o is not None  # checked at load
    since = now - timedelta(days=TRAFFIC_DAYS)
    recent = con.execute(f"SELECT count(*) FROM ({o.sql(o.units_sql, default_table)}) u "
                         f"WHERE exposed_at >= {_ts(since)} AND exposed_at < {_ts(now)}").fetchone()[0]
    per_week = recent / (TRAFFIC_DAYS / 7) * (1 - exp.holdout_share)
    dollars = None
    if o.dollars_sql is not None:
        try:
            dollars = con.execute(o.dollars_sql).fetchone()[0]
        except duckdb.Error:
            dollars = None  # the metric layer has not published what the value rests on yet
    looks = readout(con, exp, now.date()) if now.date() > exp.starts else []
    last = looks[-1] if looks else None
    exposed = last.units if last else 0
    left = max(0, exp.planned_units - exposed)
    weeks = left / per_week if per_week > 0 else math.inf
    weeks = min(max(weeks, exp.min_runtime_days / 7), exp.max_runtime_days / 7)
    if last is None or not last.comparisons:
        status, lift = "planned", exp.mde
        z = normal_quantile(1 - exp.alpha / 2)
        var = 2 * exp.baseline * (1 - exp.baseline) if o.binary else None
        power = _phi(exp.mde / math.sqrt(var / (exp.planned_units / 2)) - z) if var else 0.5
        p_win = prior * power
        why = (f"not started: prior {prior:.2f} x power {power:.2f} to see +{exp.mde:g} with {exp.planned_units:,} "
               f"units")
    else:
        c = max(last.comparisons, key=lambda c: c.estimate.estimate)
        status = last.verdict
        se = c.estimate.se
        p_win = _phi((c.estimate.estimate - exp.decision_threshold) / se) if 0 < se < math.inf else 0.5
        lift = c.estimate.estimate if c.estimate.significant else exp.mde
        why = (f"look {last.look}: lift {c.estimate.estimate:+.4g} (se {se:.3g}); P(lift >= "
               f"{exp.decision_threshold:g}) = {p_win:.2f}")
    impact = None if dollars is None else lift * per_week * 52 * float(dollars)
    score = None if impact is None or weeks <= 0 else p_win * impact / weeks
    if dollars is None:
        why += f"; $ value of {exp.primary_metric.label} unknown ({o.dollars_text or 'not a revenue metric'})"
    else:
        why += f"; +1 {exp.primary_metric.column} = ${float(dollars):,.0f} ({o.dollars_text})"
    return BacklogItem(exp.experiment, status, per_week, weeks, lift, None if dollars is None else float(dollars),
                       impact, p_win, score, why)
