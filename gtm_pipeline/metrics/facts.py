"""Fact tables of the metric layer (spec 002 §2: "fact tables (pipeline, bookings, costs)").

* ``fact_pipeline``: one row per opportunity per day it is in the pipeline (from its creation day through its close
  day), with its stage as of the end of that day.
* ``fact_bookings``: one row per closed-won opportunity, with the booked amount and the account's cohort.
* ``fact_costs``: one row per day, channel and cost type (ad spend, vendor, sales).

Why the facts are not day-partitioned: each is rebuilt whole in DuckDB in well under a second at the demo's size
(fact_pipeline, the largest, is opportunities x open days: ~26k rows for 120 days), and a partitioned fact would
have to run in the daily job, where a blocked day's failing range check stops every step downstream of the clean
tables -- the fact would then not refresh at all on such a day. A day's pipeline snapshot also depends on stage
changes delivered on later days. `gtm_pipeline.metrics.publish` supports day-window publication
(``partition_column``) for a fact that outgrows full rebuilds.

Sales costs come from ``owner.monthly_cost`` (the version of the rep valid on the day, inactive reps cost nothing),
spread evenly over the days of the month and allocated to channels by the rep's work that month: the leads
assigned to them (lead channel; SDRs) and the opportunities they own (opportunity channel; AEs). A rep with no work
that month is booked to channel ``unallocated`` so that no cost disappears.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.warehouse import existing_tables

CLOSED = "('closed_won', 'closed_lost')"


def history_table(con, clean_table: str) -> str | None:
    """``clean.<entity>_history`` of a clean table if the warehouse has it (one written before histories existed,
    or a hand-made fixture, may not)."""
    schema, name = clean_table.split(".")
    return f"{schema}.{name}_history" if f"{name}_history" in existing_tables(con, schema) else None


def data_days_sql(ctx: BuildContext, *pairs: tuple[str, str]) -> str:
    """SQL giving (lo, hi): the first and last day seen in the given (input, column) pairs."""
    parts = " UNION ALL ".join(f"SELECT min({col})::DATE AS lo, max({col})::DATE AS hi FROM {ctx.table(inp)}"
                               for inp, col in pairs)
    return f"SELECT min(lo) AS lo, max(hi) AS hi FROM ({parts})"


@computation(
    "fact_pipeline", reads=("clean.opportunity", "clean.opportunity_stage"),
    order_by="snapshot_date DESC, opportunity_id",
    columns=("snapshot_date", "opportunity_id", "account_id", "owner_id", "segment", "industry", "size_band",
             "region", "channel", "stage", "amount", "is_open", "is_created", "is_won", "is_lost", "created_at",
             "close_date", "age_days"),
)
def fact_pipeline(con, ctx: BuildContext) -> str:
    opp, ev = ctx.table("clean.opportunity"), ctx.table("clean.opportunity_stage")
    days = data_days_sql(ctx, ("clean.opportunity", "created_at"), ("clean.opportunity_stage", "changed_at"))
    # The stage of a day with no stage event before it: the version of the opportunity current that day
    # (clean.opportunity_history, written by the same clean asset as clean.opportunity, so it has the same data
    # time), else the first version; a re-export that moved the stage does not paint its stage over earlier days.
    hist = history_table(con, opp)
    versions = (f"""versioned AS (
            SELECT r.snapshot_date, r.opportunity_id, v.stage AS stage_version FROM rows r
            JOIN {hist} v ON v.opportunity_id = r.opportunity_id
                         AND (v.valid_to IS NULL OR v.valid_to > r.snapshot_date)
            QUALIFY row_number() OVER (PARTITION BY r.snapshot_date, r.opportunity_id ORDER BY v.valid_from) = 1),"""
                if hist else "versioned AS (SELECT NULL::DATE AS snapshot_date, NULL AS opportunity_id, "
                             "NULL AS stage_version WHERE false),")
    return f"""
        WITH bounds AS ({days}),
        spine AS (SELECT unnest(generate_series(lo, hi, INTERVAL 1 DAY))::DATE AS snapshot_date FROM bounds
                  WHERE lo IS NOT NULL),
        closing AS (SELECT opportunity_id, min(changed_at) AS closed_at FROM {ev}
                    WHERE to_stage IN {CLOSED} GROUP BY 1),
        rows AS (
            SELECT s.snapshot_date, s.snapshot_date + INTERVAL 1 DAY AS day_end, o.*, c.closed_at
            FROM spine s
            JOIN {opp} o ON o.created_at::DATE <= s.snapshot_date
            LEFT JOIN closing c USING (opportunity_id)
            WHERE c.closed_at IS NULL OR c.closed_at::DATE >= s.snapshot_date),
        -- The stage as of the end of each day: the latest change before day_end. An equi-join on the opportunity
        -- plus a pick of the latest change, not an ASOF join: an opportunity has a few changes, and DuckDB's ASOF join
        -- took 219 s against 1 s for this at 25M raw rows (1.3M snapshot rows; docs/bench.md).
        {versions}
        evented AS (
            SELECT r.*, e.to_stage AS stage_event FROM rows r
            LEFT JOIN {ev} e ON e.opportunity_id = r.opportunity_id AND e.changed_at < r.day_end
            QUALIFY row_number() OVER (PARTITION BY r.snapshot_date, r.opportunity_id
                                       ORDER BY e.changed_at DESC NULLS LAST) = 1),
        staged AS (
            SELECT x.*, coalesce(x.stage_event, v.stage_version) AS stage_then FROM evented x
            LEFT JOIN versioned v ON v.snapshot_date = x.snapshot_date AND v.opportunity_id = x.opportunity_id)
        SELECT snapshot_date, opportunity_id, account_id, owner_id, coalesce(segment, 'unknown') AS segment,
               coalesce(industry, 'unknown') AS industry, coalesce(size_band, 'unknown') AS size_band,
               coalesce(region, 'unknown') AS region, coalesce(channel, 'unknown') AS channel,
               coalesce(stage_then, stage) AS stage, CAST(amount AS DOUBLE) AS amount,
               coalesce(stage_then, stage) NOT IN {CLOSED} AS is_open,
               created_at::DATE = snapshot_date AS is_created,
               coalesce(stage_then = 'closed_won' AND closed_at::DATE = snapshot_date, FALSE) AS is_won,
               coalesce(stage_then = 'closed_lost' AND closed_at::DATE = snapshot_date, FALSE) AS is_lost,
               created_at, close_date, CAST(date_diff('day', created_at::DATE, snapshot_date) AS BIGINT) AS age_days
        FROM staged"""


@computation(
    "fact_bookings", reads=("clean.opportunity", "clean.opportunity_stage", "clean.lead", "clean.account"),
    order_by="booked_on DESC, opportunity_id",
    columns=("opportunity_id", "booked_on", "booked_at", "account_id", "owner_id", "segment", "industry",
             "size_band", "region", "channel", "product", "seats", "list_price", "discount", "net_price", "amount",
             "mrr", "created_at", "cycle_days", "is_new_customer", "cohort_month"),
)
def fact_bookings(con, ctx: BuildContext) -> str:
    opp, ev = ctx.table("clean.opportunity"), ctx.table("clean.opportunity_stage")
    lead, acct = ctx.table("clean.lead"), ctx.table("clean.account")
    return f"""
        WITH won AS (
            SELECT opportunity_id, max(changed_at) AS booked_at, arg_max(amount, changed_at) AS event_amount
            FROM {ev} WHERE to_stage = 'closed_won' GROUP BY 1),
        b AS (
            SELECT w.opportunity_id, w.booked_at, o.account_id, o.owner_id,
                   coalesce(o.segment, a.segment, 'unknown') AS segment,
                   coalesce(o.industry, a.industry, 'unknown') AS industry,
                   coalesce(o.size_band, a.size_band, 'unknown') AS size_band,
                   coalesce(o.region, a.region, 'unknown') AS region,
                   coalesce(o.channel, l.channel, 'unknown') AS channel, o.product, o.seats,
                   CAST(o.list_price AS DOUBLE) AS list_price, CAST(coalesce(o.discount, 0) AS DOUBLE) AS discount,
                   CAST(coalesce(w.event_amount, o.amount) AS DOUBLE) AS amount, o.created_at
            FROM won w
            JOIN {opp} o USING (opportunity_id)
            LEFT JOIN {lead} l ON l.lead_id = o.lead_id
            LEFT JOIN {acct} a ON a.account_id = o.account_id)
        SELECT opportunity_id, booked_at::DATE AS booked_on, booked_at, account_id, owner_id, segment, industry,
               size_band, region, channel, product, seats, list_price, discount,
               list_price * (1 - discount) AS net_price, amount, amount / 12 AS mrr, created_at,
               CAST(date_diff('day', created_at, booked_at) AS BIGINT) AS cycle_days,
               row_number() OVER (PARTITION BY account_id ORDER BY booked_at, opportunity_id) = 1 AS is_new_customer,
               strftime(min(booked_at) OVER (PARTITION BY account_id), '%Y-%m') AS cohort_month
        FROM b"""


@computation(
    "fact_costs", reads=("clean.ad_spend", "clean.vendor_cost", "clean.owner", "clean.lead", "clean.opportunity"),
    order_by="day DESC, channel, cost_type",
    columns=("day", "channel", "cost_type", "amount", "items"),
)
def fact_costs(con, ctx: BuildContext) -> str:
    ads, vendor, owner = ctx.table("clean.ad_spend"), ctx.table("clean.vendor_cost"), ctx.table("clean.owner")
    lead, opp = ctx.table("clean.lead"), ctx.table("clean.opportunity")
    bounds = data_days_sql(ctx, ("clean.ad_spend", "spend_date"), ("clean.vendor_cost", "cost_date"),
                           ("clean.lead", "created_at"), ("clean.opportunity", "created_at"))
    return f"""
        WITH bounds AS ({bounds}),
        spine AS (SELECT unnest(generate_series(lo, hi, INTERVAL 1 DAY))::DATE AS day FROM bounds
                  WHERE lo IS NOT NULL),
        reps AS (SELECT DISTINCT owner_id FROM {owner}),
        rep_days AS (SELECT s.day, s.day + INTERVAL 1 DAY AS day_end, r.owner_id FROM spine s, reps r),
        versions AS (
            SELECT d.day, d.owner_id, o.monthly_cost, o.active FROM rep_days d
            ASOF JOIN {owner} o ON o.owner_id = d.owner_id AND d.day_end > o.updated_at),
        daily AS (
            SELECT day, owner_id,
                   CAST(monthly_cost AS DOUBLE) / day(last_day(day)) AS cost
            FROM versions WHERE coalesce(active, TRUE) AND coalesce(monthly_cost, 0) > 0),
        work AS (
            SELECT owner_id, date_trunc('month', created_at)::DATE AS month, channel, count(*) AS n
            FROM {lead} WHERE owner_id IS NOT NULL GROUP BY ALL
            UNION ALL
            SELECT owner_id, date_trunc('month', created_at)::DATE, coalesce(channel, 'unallocated'), count(*)
            FROM {opp} WHERE owner_id IS NOT NULL GROUP BY ALL),
        share AS (
            SELECT owner_id, month, channel, sum(n) / sum(sum(n)) OVER (PARTITION BY owner_id, month) AS share
            FROM work GROUP BY owner_id, month, channel),
        sales AS (
            SELECT d.day, coalesce(s.channel, 'unallocated') AS channel, 'sales' AS cost_type,
                   sum(d.cost * coalesce(s.share, 1.0)) AS amount, count(DISTINCT d.owner_id) AS items
            FROM daily d
            LEFT JOIN share s ON s.owner_id = d.owner_id AND s.month = date_trunc('month', d.day)::DATE
            GROUP BY ALL)
        SELECT day, channel, cost_type, CAST(amount AS DOUBLE) AS amount, CAST(items AS BIGINT) AS items FROM (
            SELECT spend_date AS day, channel, 'ad_spend' AS cost_type, sum(spend) AS amount, count(*) AS items
            FROM {ads} GROUP BY ALL
            UNION ALL
            SELECT cost_date, coalesce(channel, 'unallocated'), 'vendor', sum(amount), count(*)
            FROM {vendor} GROUP BY ALL
            UNION ALL
            SELECT day, channel, cost_type, amount, items FROM sales)"""
