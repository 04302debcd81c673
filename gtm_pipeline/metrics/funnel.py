"""Funnel metrics: SQL volume / rate and SQL-to-win by channel and week, win rate by segment, industry and size
band (per month, so "for >= 2 months" can be evaluated), booking rate, and DQ-reason coverage.

Counts are flows in a period, each by its own event time: leads and SQLs by the lead's creation, SQOs by the
opportunity's creation, wins and losses by the close. An SQL is a lead whose current status is ``sql`` or
``converted``. Periods are text (``YYYY-MM``, or the Monday ``YYYY-MM-DD`` of a week, or the day) so that the rollup
over the whole window can be the row ``'all'``.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.metrics.unit_economics import label

SQL_STATUSES = "('sql', 'converted')"


def week(expr: str) -> str:
    return f"strftime(date_trunc('week', {expr}), '%Y-%m-%d')"


@computation(
    "sql_funnel", reads=("clean.lead", "fact_pipeline"), order_by="week = 'all' DESC, week DESC, channel",
    columns=("channel", "week", "leads", "sqls", "sqos", "wins", "closed"),
)
def sql_funnel(con, ctx: BuildContext) -> str:
    lead, pipe = ctx.table("clean.lead"), ctx.table("fact_pipeline")
    return f"""
        WITH flows AS (
            SELECT channel, {week('created_at')} AS week, 1 AS leads,
                   CASE WHEN status IN {SQL_STATUSES} THEN 1 ELSE 0 END AS sqls, 0 AS sqos, 0 AS wins, 0 AS closed
            FROM {lead}
            UNION ALL
            SELECT channel, {week('snapshot_date')}, 0, 0, CASE WHEN is_created THEN 1 ELSE 0 END,
                   CASE WHEN is_won THEN 1 ELSE 0 END, CASE WHEN is_won OR is_lost THEN 1 ELSE 0 END
            FROM {pipe} WHERE is_created OR is_won OR is_lost)
        SELECT {label('channel')}, {label('week')}, CAST(sum(leads) AS BIGINT) AS leads,
               CAST(sum(sqls) AS BIGINT) AS sqls, CAST(sum(sqos) AS BIGINT) AS sqos,
               CAST(sum(wins) AS BIGINT) AS wins, CAST(sum(closed) AS BIGINT) AS closed
        FROM flows GROUP BY CUBE (channel, week)"""


@computation(
    "win_rate_by_segment", reads=("clean.lead", "fact_pipeline"),
    order_by="dimension, value = 'all' DESC, value, month = 'all' DESC, month DESC",
    columns=("dimension", "value", "month", "closed", "won", "leads", "sqls"),
)
def win_rate_by_segment(con, ctx: BuildContext) -> str:
    lead, pipe = ctx.table("clean.lead"), ctx.table("fact_pipeline")
    dims = ("segment", "industry", "size_band")
    parts = []
    for d in dims:
        parts.append(f"""
            SELECT '{d}' AS dimension, coalesce({d}, 'unknown') AS value, strftime(snapshot_date, '%Y-%m') AS month,
                   1 AS closed, CASE WHEN is_won THEN 1 ELSE 0 END AS won, 0 AS leads, 0 AS sqls
            FROM {pipe} WHERE is_won OR is_lost
            UNION ALL
            SELECT '{d}', coalesce({d}, 'unknown'), strftime(created_at, '%Y-%m'), 0, 0, 1,
                   CASE WHEN status IN {SQL_STATUSES} THEN 1 ELSE 0 END
            FROM {lead}""")
    flows = " UNION ALL ".join(parts)
    return f"""
        WITH flows AS ({flows}),
        by_value AS (
            SELECT dimension, value, {label('month')}, sum(closed) AS closed, sum(won) AS won, sum(leads) AS leads,
                   sum(sqls) AS sqls
            FROM flows GROUP BY GROUPING SETS ((dimension, value, month), (dimension, value))),
        overall AS (   -- the baseline every segment is compared with: all opportunities, once
            SELECT 'all' AS dimension, 'all' AS value, {label('month')}, sum(closed), sum(won), sum(leads), sum(sqls)
            FROM flows WHERE dimension = 'segment' GROUP BY ROLLUP (month))
        SELECT dimension, value, month, CAST(closed AS BIGINT) AS closed, CAST(won AS BIGINT) AS won,
               CAST(leads AS BIGINT) AS leads, CAST(sqls AS BIGINT) AS sqls
        FROM (SELECT * FROM by_value UNION ALL SELECT * FROM overall)"""


@computation(
    "booking_rate", reads=("fact_pipeline",), order_by="day = 'all' DESC, day DESC, segment",
    columns=("segment", "day", "won", "closed", "bookings", "won_14d", "closed_14d", "bookings_14d"),
)
def booking_rate(con, ctx: BuildContext) -> str:
    pipe = ctx.table("fact_pipeline")
    return f"""
        WITH daily AS (
            SELECT snapshot_date AS day, segment, count(*) FILTER (WHERE is_won) AS won,
                   count(*) FILTER (WHERE is_won OR is_lost) AS closed,
                   coalesce(sum(amount) FILTER (WHERE is_won), 0) AS bookings
            FROM {pipe} GROUP BY ALL),
        both_ AS (
            SELECT {label('segment')}, day, sum(won) AS won, sum(closed) AS closed, sum(bookings) AS bookings
            FROM daily GROUP BY GROUPING SETS ((segment, day), (day))),
        rolled AS (
            SELECT segment, strftime(day, '%Y-%m-%d') AS day, won, closed, bookings,
                   sum(won) OVER w AS won_14d, sum(closed) OVER w AS closed_14d, sum(bookings) OVER w AS bookings_14d
            FROM both_
            WINDOW w AS (PARTITION BY segment ORDER BY day RANGE BETWEEN INTERVAL 13 DAYS PRECEDING AND CURRENT ROW)),
        total AS (
            SELECT segment, 'all' AS day, sum(won), sum(closed), sum(bookings), sum(won), sum(closed), sum(bookings)
            FROM both_ GROUP BY segment)
        SELECT segment, day, CAST(won AS BIGINT) AS won, CAST(closed AS BIGINT) AS closed,
               CAST(bookings AS DOUBLE) AS bookings, CAST(won_14d AS BIGINT) AS won_14d,
               CAST(closed_14d AS BIGINT) AS closed_14d, CAST(bookings_14d AS DOUBLE) AS bookings_14d
        FROM (SELECT * FROM rolled UNION ALL SELECT * FROM total)"""


@computation(
    "dq_reason_coverage", reads=("clean.lead",), order_by="month = 'all' DESC, month DESC",
    columns=("month", "disqualified", "with_reason"),
)
def dq_reason_coverage(con, ctx: BuildContext) -> str:
    return f"""
        SELECT {label('month')}, CAST(count(*) AS BIGINT) AS disqualified,
               CAST(count(dq_reason) AS BIGINT) AS with_reason
        FROM (SELECT strftime(coalesce(status_changed_at, created_at), '%Y-%m') AS month, dq_reason
              FROM {ctx.table('clean.lead')} WHERE status = 'disqualified')
        GROUP BY ROLLUP (month)"""
