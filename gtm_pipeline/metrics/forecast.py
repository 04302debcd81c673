"""Bookings forecast: stage-weighted open pipeline with historical stage-to-win rates.

As of the latest pipeline snapshot (the last day with data; the forecast is recomputed every hour so that its age,
which the 4 h ForecastAge SLO measures, reflects the refresh and not the data's calendar):

* stage-to-win rate, per segment and stage = won / closed among the opportunities closed so far that ever reached
  that stage (from the stage history); when a segment has fewer than ``MIN_CLOSED`` such closes the rate of all
  segments for that stage is used, and failing that the overall win rate;
* each open opportunity is expected to book amount x rate(segment, current stage), in the period of its expected
  close date (an overdue close date counts in the current period);
* per segment and horizon (``month``, ``quarter`` and ``open_pipeline`` = everything open, whenever it closes):
  forecast bookings = booked so far in the period + weighted open pipeline expected to close in it.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.metrics.unit_economics import label

MIN_CLOSED = 10
STAGES = ("prospecting", "discovery", "proposal", "negotiation")


@computation(
    "forecast", reads=("fact_pipeline", "fact_bookings", "clean.opportunity_stage"),
    order_by="horizon, segment = 'all' DESC, segment",
    columns=("segment", "horizon", "as_of_date", "period_start", "period_end", "open_count", "open_amount",
             "weighted_open", "expected_wins", "booked_to_date"),
)
def forecast(con, ctx: BuildContext) -> str:
    pipe, book, ev = ctx.table("fact_pipeline"), ctx.table("fact_bookings"), ctx.table("clean.opportunity_stage")
    return f"""
        WITH as_of AS (SELECT max(snapshot_date) AS d FROM {pipe}),
        final AS (SELECT p.* FROM {pipe} p, as_of WHERE p.snapshot_date <= as_of.d),
        outcome AS (
            SELECT opportunity_id, any_value(segment) AS segment, bool_or(is_won) AS won,
                   bool_or(is_won OR is_lost) AS closed
            FROM final GROUP BY 1),
        reached AS (
            SELECT DISTINCT e.opportunity_id, e.to_stage AS stage FROM {ev} e, as_of
            WHERE e.changed_at < as_of.d + INTERVAL 1 DAY AND e.to_stage IN {STAGES}
            UNION SELECT DISTINCT opportunity_id, stage FROM final WHERE stage IN {STAGES}),
        hist AS (
            SELECT o.segment, r.stage, count(*) AS closed, count(*) FILTER (WHERE o.won) AS won
            FROM outcome o JOIN reached r USING (opportunity_id) WHERE o.closed GROUP BY ALL),
        stage_all AS (SELECT stage, sum(closed) AS closed, sum(won) AS won FROM hist GROUP BY 1),
        overall AS (SELECT count(*) FILTER (WHERE won) / nullif(count(*), 0) AS rate FROM outcome WHERE closed),
        open_now AS (
            SELECT p.segment, p.stage, p.amount, p.close_date FROM {pipe} p, as_of
            WHERE p.snapshot_date = as_of.d AND p.is_open),
        weighted AS (
            SELECT o.*, coalesce(CASE WHEN h.closed >= {MIN_CLOSED} THEN h.won / h.closed END,
                                 CASE WHEN s.closed >= {MIN_CLOSED} THEN s.won / s.closed END,
                                 (SELECT rate FROM overall), 0) AS p_win
            FROM open_now o LEFT JOIN hist h ON h.segment = o.segment AND h.stage = o.stage
            LEFT JOIN stage_all s ON s.stage = o.stage),
        horizons AS (
            SELECT 'month' AS horizon, date_trunc('month', d)::DATE AS period_start,
                   last_day(d) AS period_end, d AS as_of_date FROM as_of
            UNION ALL SELECT 'quarter', date_trunc('quarter', d)::DATE,
                   (date_trunc('quarter', d) + INTERVAL 3 MONTH - INTERVAL 1 DAY)::DATE, d FROM as_of
            UNION ALL SELECT 'open_pipeline', NULL, NULL, d FROM as_of),
        segs AS (SELECT DISTINCT segment FROM final),
        opens AS (
            SELECT h.horizon, w.segment, count(*) AS open_count, sum(w.amount) AS open_amount,
                   sum(w.amount * w.p_win) AS weighted_open, sum(w.p_win) AS expected_wins
            FROM horizons h JOIN weighted w
              ON h.horizon = 'open_pipeline' OR coalesce(w.close_date, h.as_of_date) <= h.period_end
            GROUP BY ALL),
        booked AS (
            SELECT h.horizon, b.segment, sum(b.amount) AS booked
            FROM horizons h JOIN {book} b ON h.horizon <> 'open_pipeline'
              AND b.booked_on BETWEEN h.period_start AND h.as_of_date
            GROUP BY ALL),
        grid AS (
            SELECT h.*, s.segment, coalesce(o.open_count, 0) AS open_count, coalesce(o.open_amount, 0) AS open_amount,
                   coalesce(o.weighted_open, 0) AS weighted_open, coalesce(o.expected_wins, 0) AS expected_wins,
                   coalesce(b.booked, 0) AS booked_to_date
            FROM horizons h CROSS JOIN segs s
            LEFT JOIN opens o ON o.horizon = h.horizon AND o.segment = s.segment
            LEFT JOIN booked b ON b.horizon = h.horizon AND b.segment = s.segment)
        SELECT {label('segment')}, horizon, any_value(as_of_date) AS as_of_date,
               any_value(period_start) AS period_start, any_value(period_end) AS period_end,
               CAST(sum(open_count) AS BIGINT) AS open_count, CAST(sum(open_amount) AS DOUBLE) AS open_amount,
               CAST(sum(weighted_open) AS DOUBLE) AS weighted_open, CAST(sum(expected_wins) AS DOUBLE) AS expected_wins,
               CAST(sum(booked_to_date) AS DOUBLE) AS booked_to_date
        FROM grid GROUP BY GROUPING SETS ((horizon, segment), (horizon))"""
