"""An experiment's readout: one look per day from its start, each computed from the warehouse as it stands.

Per look (the look ends at the start of day ``starts + k``): the units exposed so far and their arm (deterministic,
`assignment`), each unit's value of the primary metric and of every guardrail as of the look's end (`outcomes`),
one SQL aggregate per arm (n, sum, sum of squares), then `stats`: the treatment-vs-control estimate with its
always-valid interval (or the fixed-horizon one, which is only meaningful at the planned size), the running minimum of
the always-valid p-value, the sample-ratio-mismatch p-value, and each guardrail tested against its tolerance with
Benjamini-Hochberg across the guardrails.

The verdict of a look, in this order:
1. ``invalid: sample ratio mismatch`` when SRM p < 0.001 (the split is broken; no estimate is trusted);
2. ``keep running: minimum runtime not reached`` before ``min_runtime_days``;
3. ``roll back: guardrail <metric.column>`` when a guardrail is credibly worse than its tolerance;
4. ``ship`` when the interval's lower bound is at least the decision threshold (every treatment arm must clear it
   for a multi-arm experiment to ship its best arm);
5. ``stop: no effect of the threshold's size`` when the interval's upper bound is below the threshold, or the
   maximum runtime is reached without a ship;
6. ``keep running`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb

from gtm_pipeline.experiments import stats
from gtm_pipeline.experiments.assignment import HOLDOUT, arm_sql
from gtm_pipeline.experiments.contract import Experiment, MetricRef
from gtm_pipeline.experiments.outcomes import Outcome, outcome_for

SRM_MIN_P = 0.001


@dataclass(frozen=True)
class ArmFigures:
    arm: str
    n: int
    total: float
    total_sq: float

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None


@dataclass(frozen=True)
class Comparison:
    arm: str                     # the treatment arm compared with the control
    estimate: stats.Estimate
    p_min: float                 # running minimum of the always-valid p-value up to this look


@dataclass(frozen=True)
class GuardrailFigures:
    metric: str
    arm: str
    direction: str
    tolerance: float
    estimate: stats.Estimate     # p tests "worse by exactly the tolerance"
    p_adjusted: float            # Benjamini-Hochberg across the look's guardrails
    breached: bool


@dataclass
class Look:
    experiment: str
    look: int
    as_of: datetime              # end of the look (exclusive)
    days_run: int
    arms: list[ArmFigures]
    holdout: int
    comparisons: list[Comparison]
    srm_p: float
    guardrails: list[GuardrailFigures] = field(default_factory=list)
    verdict: str = ""

    @property
    def units(self) -> int:
        return sum(a.n for a in self.arms)


def _ts(t: datetime) -> str:
    return f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S}'"


def default_table(name: str) -> str:
    """Input name -> table: ``clean.lead`` as is, a metric ``fact_bookings`` in schema metrics."""
    return name if name.startswith("clean.") else f"metrics.{name}"


def arm_figures(con: duckdb.DuckDBPyConnection, exp: Experiment, outcome: Outcome, as_of: datetime,
                table=default_table) -> tuple[list[ArmFigures], int]:
    """(each arm's n, sum and sum of squares of the outcome as of ``as_of``, units held out)."""
    start = datetime.combine(exp.starts, datetime.min.time())
    sql = f"""
        WITH u AS (SELECT unit_id FROM ({outcome.sql(outcome.units_sql, table)}) x
                   WHERE exposed_at >= {_ts(start)} AND exposed_at < {_ts(as_of)}),
             a AS (SELECT unit_id, {arm_sql(exp, 'unit_id')} AS arm FROM u),
             v AS ({outcome.sql(outcome.value_sql, table, _ts(as_of))})
        SELECT a.arm, count(*), coalesce(sum(coalesce(v.value, 0)), 0), coalesce(sum(coalesce(v.value, 0) ^ 2), 0)
        FROM a LEFT JOIN v ON v.unit_id = a.unit_id GROUP BY 1"""
    rows = {r[0]: r for r in con.execute(sql).fetchall()}
    arms = [ArmFigures(a.name, int(rows[a.name][1]) if a.name in rows else 0,
                       float(rows[a.name][2]) if a.name in rows else 0.0,
                       float(rows[a.name][3]) if a.name in rows else 0.0) for a in exp.arms]
    return arms, int(rows[HOLDOUT][1]) if HOLDOUT in rows else 0


def _arm(f: ArmFigures, binary: bool) -> stats.Arm:
    return stats.Arm(f.n, f.total, f.total_sq, binary=binary)


def _compare(exp: Experiment, control: stats.Arm, treatment: stats.Arm, test_value: float = 0.0) -> stats.Estimate:
    if exp.method == "fixed_horizon":
        return stats.fixed_z(control, treatment, alpha=exp.alpha, test_value=test_value)
    return stats.always_valid(control, treatment, planned_n=exp.planned_units, alpha=exp.alpha,
                              test_value=test_value)


def _outcome(exp: Experiment, ref: MetricRef) -> Outcome:
    o = outcome_for(exp.unit, ref.metric, ref.column)
    assert o is not None, ref  # the contract loader checked it
    return o


def readout(con: duckdb.DuckDBPyConnection, exp: Experiment, through: date, table=default_table) -> list[Look]:
    """Every daily look from the experiment's start through ``through`` (at most ``max_runtime_days``); ``table``
    resolves input names (`outcomes`) to tables."""
    last = min((through - exp.starts).days, exp.max_runtime_days)
    looks: list[Look] = []
    p_min: dict[str, float] = {}
    primary = _outcome(exp, exp.primary_metric)
    weights = [a.weight for a in exp.arms]
    for k in range(1, last + 1):
        as_of = datetime.combine(exp.starts + timedelta(days=k), datetime.min.time())
        arms, held = arm_figures(con, exp, primary, as_of, table)
        ctrl = _arm(arms[0], primary.binary)
        comps = []
        for f in arms[1:]:
            e = _compare(exp, ctrl, _arm(f, primary.binary))
            p_min[f.arm] = min(p_min.get(f.arm, 1.0), e.p_value) if exp.method == "always_valid" else e.p_value
            comps.append(Comparison(f.arm, e, p_min[f.arm]))
        srm = stats.srm_p_value([a.n for a in arms], weights) if sum(a.n for a in arms) else 1.0
        look = Look(exp.experiment, k, as_of, k, arms, held, comps, srm)
        look.guardrails = _guardrails(con, exp, as_of, table)
        look.verdict = verdict(exp, look)
        looks.append(look)
    return looks


def _guardrails(con, exp: Experiment, as_of: datetime, table) -> list[GuardrailFigures]:
    raw = []
    for g in exp.guardrails:
        o = _outcome(exp, g)
        arms, _ = arm_figures(con, exp, o, as_of, table)
        ctrl = _arm(arms[0], o.binary)
        for f in arms[1:]:
            # H0 "worse by exactly the tolerance": a small p with the estimate beyond it means credible harm.
            bound = g.tolerance if g.direction == "no_rise" else -g.tolerance
            e = _compare(exp, ctrl, _arm(f, o.binary), test_value=bound)
            raw.append((g, f.arm, e, bound))
    adjusted, rejected = stats.benjamini_hochberg([e.p_value for _, _, e, _ in raw], q=exp.alpha)
    out = []
    for (g, arm, e, bound), p_adj, rej in zip(raw, adjusted, rejected):
        worse = e.estimate > bound if g.direction == "no_rise" else e.estimate < bound
        out.append(GuardrailFigures(g.label, arm, g.direction, g.tolerance, e, p_adj, bool(rej and worse)))
    return out


def verdict(exp: Experiment, look: Look) -> str:
    if look.srm_p < SRM_MIN_P:
        return f"invalid: sample ratio mismatch (p = {look.srm_p:.2g} < {SRM_MIN_P})"
    if look.days_run < exp.min_runtime_days:
        return f"keep running: minimum runtime not reached ({look.days_run} of {exp.min_runtime_days} days)"
    bad = [g for g in look.guardrails if g.breached]
    if bad:
        return "roll back: guardrail " + ", ".join(f"{g.metric} ({g.arm} {g.estimate.estimate:+.4g}, tolerance "
                                                  f"{g.tolerance:g})" for g in bad)
    if look.comparisons and all(c.estimate.ci_low >= exp.decision_threshold for c in look.comparisons):
        best = max(look.comparisons, key=lambda c: c.estimate.estimate)
        return f"ship {best.arm}: lift {best.estimate.estimate:+.4g}, interval lower bound " \
               f"{best.estimate.ci_low:+.4g} >= threshold {exp.decision_threshold:g}"
    if look.comparisons and all(c.estimate.ci_high < exp.decision_threshold for c in look.comparisons):
        return f"stop: no effect of the threshold's size (interval upper bound < {exp.decision_threshold:g})"
    if look.days_run >= exp.max_runtime_days:
        return f"stop: maximum runtime ({exp.max_runtime_days} days) reached without a ship"
    return "keep running"
