"""Time to value (research notes 001, issue 20 §3): ``metrics.ttfv`` (signup -> first value) and ``metrics.ttpv``
(first value -> proven value), by segment, channel and cohort month (the month the clock started) with rollups
``'all'``, as Kaplan–Meier p50/p90 in days and the share reached by 14, 30 and 90 days.

The events are declared in ``contracts/value_events.yaml`` (`gtm_pipeline.metrics.ttv_events`). A subject who has
not reached the end event by the as-of time is censored there, not dropped: the median over converters only
(``converters_p50_days``, kept beside KM's to show it) is biased low, because only the fast ones have converted
yet. The as-of time is the inputs' data time (docs/slo.md: a metric is as old as its inputs), so a recomputation
over unchanged inputs gives the same figures, and events after it are not counted; it is the evaluation time only
when an input has no recorded data time (tables loaded outside the pipeline).

An end event before the start (a meeting logged before the lead was created) counts as reached at the start, day 0,
and is counted in ``clamped``. Row work is SQL; the estimator (`gtm_pipeline.metrics.survival`) runs per cell.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd

from gtm_pipeline.clean.rules import quote_ident
from gtm_pipeline.datatime import inputs_data_time
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.metrics.registry import CLEAN_PREFIX, BuildContext, computation
from gtm_pipeline.metrics.survival import converters_quantile, kaplan_meier
from gtm_pipeline.metrics.ttv_events import DIMENSIONS, WHERE, ValueEvents, event_sql, load_value_events

DAY_S = 86400.0
SHARE_DAYS = (14, 30, 90)
GRAIN = (*DIMENSIONS, "cohort_month")
ALL = "all"
COLUMNS = (*GRAIN, "as_of", "subjects", "reached", "censored", "clamped", "max_followup_days", "p50_days",
           "p90_days", *(f"reached_{d}d" for d in SHARE_DAYS), "converters_p50_days")
_TYPES = {**{c: "string" for c in GRAIN}, "as_of": "datetime64[us]",
          **{c: "int64" for c in ("subjects", "reached", "censored", "clamped")},
          **{c: "float64" for c in COLUMNS[len(GRAIN) + 5:]}}
ORDER = ", ".join(f"{c} = 'all' DESC" for c in GRAIN) + ", segment, channel, cohort_month DESC"
TTFV_READS = ("clean.lead", "clean.activity")
TTPV_READS = ("clean.lead", "clean.activity", "clean.opportunity", "clean.opportunity_stage")


def as_of(con: duckdb.DuckDBPyConnection, ctx: BuildContext) -> datetime:
    """The inputs' data time (never later than the evaluation time); the evaluation time when it is unknown."""
    dt = inputs_data_time(con, [ctx.table(r) for r in ctx.reads])
    return ctx.now if dt.at is None else min(dt.at, ctx.now)


def _events(ctx: BuildContext, start: str, end: str) -> ValueEvents:
    if ctx.contracts_dir is None:
        raise GtmPipelineError(f"metrics/{ctx.name}: no contracts folder given; {WHERE} declares its events")
    events = load_value_events(ctx.contracts_dir)
    needs = set(events.entities(start, end))
    if needs != set(ctx.reads):
        # Lineage must not drift: the asset's deps (its contract's inputs) are what the events read.
        raise GtmPipelineError(
            f"{WHERE}: events {start} and {end} read {sorted(needs)} but metrics/{ctx.name} declares "
            f"{sorted(ctx.reads)}; change reads= of {ctx.name} in gtm_pipeline/metrics/ttv.py and inputs in "
            f"contracts/metrics/{ctx.name}.yaml to match, or the events")
    return events


def durations(con: duckdb.DuckDBPyConnection, ctx: BuildContext, start: str, end: str) -> pd.DataFrame:
    """One row per subject whose clock started by the as-of time: segment, channel, cohort month, days waited,
    whether the end event was reached (False: censored at the as-of time) and whether it was clamped to 0."""
    events = _events(ctx, start, end)
    at = as_of(con, ctx)
    subj = events.subject
    dims = ", ".join(f"coalesce(CAST(u.{quote_ident(d)} AS VARCHAR), 'unknown') AS {d}" for d in DIMENSIONS)
    df = con.execute(f"""
        WITH s AS ({event_sql(events.event(start), ctx.table, at)}),
             e AS ({event_sql(events.event(end), ctx.table, at)})
        SELECT {dims}, strftime(s.event_at, '%Y-%m') AS cohort_month,
               (epoch(coalesce(e.event_at, ?::TIMESTAMP)) - epoch(s.event_at)) / {DAY_S} AS days,
               e.event_at IS NOT NULL AS reached
        FROM s JOIN {ctx.table(CLEAN_PREFIX + subj.entity)} u ON CAST(u.{quote_ident(subj.key)} AS VARCHAR) = s.subject
        LEFT JOIN e USING (subject)
        ORDER BY s.subject""", [at]).df()
    df["clamped"] = df["reached"] & (df["days"] < 0)
    df["days"] = df["days"].clip(lower=0.0)
    df["as_of"] = pd.Timestamp(at)
    return df


def cell(days: np.ndarray, reached: np.ndarray) -> dict:
    """The figures of one (segment, channel, cohort month) cell."""
    km = kaplan_meier(days, reached)
    row = {"subjects": int(days.size), "reached": int(reached.sum()), "censored": int((~reached).sum()),
           "max_followup_days": km.max_time, "p50_days": km.quantile(0.5), "p90_days": km.quantile(0.9)}
    row.update({f"reached_{d}d": km.reached_by(float(d)) for d in SHARE_DAYS})
    row["converters_p50_days"] = converters_quantile(days, reached, 0.5)
    return row


def by_cell(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell of the grain and its rollups (``'all'`` in a rolled-up column: a CUBE over the grain)."""
    if df.empty:   # no clock started by the as-of time: no cell, not a row of zero subjects
        return pd.DataFrame(columns=list(COLUMNS)).astype(_TYPES)
    rows = []
    for keep in itertools.product((True, False), repeat=len(GRAIN)):
        keys = [g for g, k in zip(GRAIN, keep) if k]
        groups = df.groupby(keys, sort=True) if keys else [((), df)]
        for values, g in groups:
            values = values if isinstance(values, tuple) else (values,)
            label = dict(zip(keys, values))
            rows.append({**{c: label.get(c, ALL) for c in GRAIN}, "as_of": g["as_of"].iloc[0],
                         "clamped": int(g["clamped"].sum()),
                         **cell(g["days"].to_numpy(float), g["reached"].to_numpy(bool))})
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(_TYPES)


@computation("ttfv", reads=TTFV_READS, columns=COLUMNS, kinds={"duckdb", "python"}, order_by=ORDER)
def ttfv(con, ctx: BuildContext) -> pd.DataFrame:
    return by_cell(durations(con, ctx, "signup", "first_value"))


@computation("ttpv", reads=TTPV_READS, columns=COLUMNS, kinds={"duckdb", "python"}, order_by=ORDER)
def ttpv(con, ctx: BuildContext) -> pd.DataFrame:
    return by_cell(durations(con, ctx, "first_value", "proven_value"))
