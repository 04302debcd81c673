"""Unit economics: CAC (by channel, daily, per SQO), contribution margin (per line, per account and month), GM%,
CM per seat, LTV and payback.

Definitions shared by these tables (the contracts state them too):

* marketing cost = ad spend + vendor costs of the channel (what the generator's truth calls spend); sales cost is
  the reps' cost allocated to channels in ``fact_costs``;
* a win is a closed-won opportunity (``fact_bookings``); a new customer is an account's first win;
* CAC = marketing cost / wins (a fully loaded variant adds sales cost);
* revenue per line is its MRR = booked annual amount / 12. Cost of goods and commission are contract parameters
  (``contracts/metrics/cm_by_line.yaml``) because the exports carry no COGS.

Rollup rows carry ``'all'`` in the rolled-up dimension; their ratios are ratios of sums, never averages of ratios.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation

MARKETING = "('ad_spend', 'vendor')"


def label(col: str) -> str:
    """A dimension of a GROUPING SETS query, with 'all' on its rollup rows."""
    return f"CASE WHEN grouping({col}) = 1 THEN 'all' ELSE {col} END AS {col}"


@computation(
    "cac_by_channel_daily", reads=("fact_costs", "fact_bookings", "clean.lead"),
    order_by="day DESC, channel, segment",
    columns=("day", "channel", "segment", "leads", "wins", "new_customers", "marketing_cost", "sales_cost",
             "marketing_cost_30d", "sales_cost_30d", "wins_30d"),
)
def cac_by_channel_daily(con, ctx: BuildContext) -> str:
    costs, bookings, lead = ctx.table("fact_costs"), ctx.table("fact_bookings"), ctx.table("clean.lead")
    return f"""
        WITH costs AS (
            SELECT day, channel,
                   coalesce(sum(amount) FILTER (WHERE cost_type IN {MARKETING}), 0) AS marketing_cost,
                   coalesce(sum(amount) FILTER (WHERE cost_type = 'sales'), 0) AS sales_cost
            FROM {costs} GROUP BY ALL),
        leads AS (
            SELECT created_at::DATE AS day, channel, coalesce(segment, 'unknown') AS segment, count(*) AS n
            FROM {lead} GROUP BY ALL),
        mix_month AS (
            SELECT date_trunc('month', day) AS m, channel, segment,
                   sum(n) / sum(sum(n)) OVER (PARTITION BY date_trunc('month', day), channel) AS share
            FROM leads GROUP BY date_trunc('month', day), channel, segment),
        mix_all AS (
            SELECT channel, segment, sum(n) / sum(sum(n)) OVER (PARTITION BY channel) AS share
            FROM leads GROUP BY channel, segment),
        by_month AS (
            SELECT c.day, c.channel, m.segment, m.share FROM costs c
            JOIN mix_month m ON m.m = date_trunc('month', c.day) AND m.channel = c.channel),
        no_month AS (
            SELECT c.* FROM costs c WHERE NOT EXISTS (
                SELECT 1 FROM mix_month m WHERE m.m = date_trunc('month', c.day) AND m.channel = c.channel)),
        by_all AS (
            SELECT c.day, c.channel, a.segment, a.share FROM no_month c JOIN mix_all a ON a.channel = c.channel),
        none AS (
            SELECT c.day, c.channel, 'unallocated' AS segment, 1.0 AS share FROM no_month c
            WHERE NOT EXISTS (SELECT 1 FROM mix_all a WHERE a.channel = c.channel)),
        shares AS (SELECT * FROM by_month UNION ALL SELECT * FROM by_all UNION ALL SELECT * FROM none),
        alloc AS (
            SELECT s.day, s.channel, s.segment, c.marketing_cost * s.share AS marketing_cost,
                   c.sales_cost * s.share AS sales_cost
            FROM shares s JOIN costs c USING (day, channel)),
        wins AS (
            SELECT booked_on AS day, channel, segment, count(*) AS wins,
                   count(*) FILTER (WHERE is_new_customer) AS new_customers
            FROM {bookings} GROUP BY ALL),
        keys AS (SELECT day, channel, segment FROM alloc UNION SELECT day, channel, segment FROM leads
                 UNION SELECT day, channel, segment FROM wins),
        j AS (
            SELECT k.day, k.channel, k.segment, CAST(coalesce(l.n, 0) AS BIGINT) AS leads,
                   CAST(coalesce(w.wins, 0) AS BIGINT) AS wins,
                   CAST(coalesce(w.new_customers, 0) AS BIGINT) AS new_customers,
                   CAST(coalesce(a.marketing_cost, 0) AS DOUBLE) AS marketing_cost,
                   CAST(coalesce(a.sales_cost, 0) AS DOUBLE) AS sales_cost
            FROM keys k
            LEFT JOIN alloc a USING (day, channel, segment)
            LEFT JOIN leads l USING (day, channel, segment)
            LEFT JOIN wins w USING (day, channel, segment))
        SELECT *,
               sum(marketing_cost) OVER w30 AS marketing_cost_30d, sum(sales_cost) OVER w30 AS sales_cost_30d,
               CAST(sum(wins) OVER w30 AS BIGINT) AS wins_30d
        FROM j
        WINDOW w30 AS (PARTITION BY channel, segment ORDER BY day RANGE BETWEEN INTERVAL 29 DAYS PRECEDING
                       AND CURRENT ROW)"""


@computation(
    "cac_by_channel", reads=("fact_costs", "fact_bookings"), order_by="channel = 'all' DESC, channel",
    columns=("channel", "marketing_cost", "sales_cost", "wins", "new_customers", "bookings"),
)
def cac_by_channel(con, ctx: BuildContext) -> str:
    costs, bookings = ctx.table("fact_costs"), ctx.table("fact_bookings")
    return f"""
        WITH c AS (
            SELECT channel, coalesce(sum(amount) FILTER (WHERE cost_type IN {MARKETING}), 0) AS marketing_cost,
                   coalesce(sum(amount) FILTER (WHERE cost_type = 'sales'), 0) AS sales_cost
            FROM {costs} GROUP BY 1),
        w AS (
            SELECT channel, count(*) AS wins, count(*) FILTER (WHERE is_new_customer) AS new_customers,
                   sum(amount) AS bookings
            FROM {bookings} GROUP BY 1),
        j AS (
            SELECT coalesce(c.channel, w.channel) AS channel, coalesce(marketing_cost, 0) AS marketing_cost,
                   coalesce(sales_cost, 0) AS sales_cost, coalesce(wins, 0) AS wins,
                   coalesce(new_customers, 0) AS new_customers, coalesce(bookings, 0) AS bookings
            FROM c FULL JOIN w ON w.channel = c.channel)
        SELECT {label('channel')}, CAST(sum(marketing_cost) AS DOUBLE) AS marketing_cost,
               CAST(sum(sales_cost) AS DOUBLE) AS sales_cost, CAST(sum(wins) AS BIGINT) AS wins,
               CAST(sum(new_customers) AS BIGINT) AS new_customers, CAST(sum(bookings) AS DOUBLE) AS bookings
        FROM j GROUP BY ROLLUP (channel)"""


@computation(
    "cac_per_sqo", reads=("fact_costs", "fact_pipeline"), order_by="channel = 'all' DESC, channel",
    columns=("channel", "marketing_cost", "sales_cost", "sqos", "overall_marketing_cost", "overall_sqos"),
)
def cac_per_sqo(con, ctx: BuildContext) -> str:
    costs, pipe = ctx.table("fact_costs"), ctx.table("fact_pipeline")
    return f"""
        WITH c AS (
            SELECT channel, coalesce(sum(amount) FILTER (WHERE cost_type IN {MARKETING}), 0) AS marketing_cost,
                   coalesce(sum(amount) FILTER (WHERE cost_type = 'sales'), 0) AS sales_cost
            FROM {costs} GROUP BY 1),
        s AS (SELECT channel, count(*) AS sqos FROM {pipe} WHERE is_created GROUP BY 1),
        j AS (
            SELECT coalesce(c.channel, s.channel) AS channel, coalesce(marketing_cost, 0) AS marketing_cost,
                   coalesce(sales_cost, 0) AS sales_cost, coalesce(sqos, 0) AS sqos
            FROM c FULL JOIN s ON s.channel = c.channel),
        g AS (
            SELECT {label('channel')}, CAST(sum(marketing_cost) AS DOUBLE) AS marketing_cost,
                   CAST(sum(sales_cost) AS DOUBLE) AS sales_cost, CAST(sum(sqos) AS BIGINT) AS sqos
            FROM j GROUP BY ROLLUP (channel))
        SELECT *, sum(marketing_cost) FILTER (WHERE channel = 'all') OVER () AS overall_marketing_cost,
               CAST(sum(sqos) FILTER (WHERE channel = 'all') OVER () AS BIGINT) AS overall_sqos
        FROM g"""


@computation(
    "cm_by_line", reads=("fact_bookings",), order_by="booked_on DESC, opportunity_id",
    columns=("opportunity_id", "account_id", "segment", "channel", "booked_on", "cohort_month", "seats",
             "net_price", "mrr"),
)
def cm_by_line(con, ctx: BuildContext) -> str:
    return f"""
        SELECT opportunity_id, account_id, segment, channel, booked_on, cohort_month,
               CAST(coalesce(seats, 0) AS BIGINT) AS seats, net_price, mrr
        FROM {ctx.table('fact_bookings')}"""


@computation(
    "cm_by_account_monthly", reads=("cm_by_line",), order_by="month DESC, account_id",
    columns=("account_id", "month", "segment", "channel", "cohort_month", "lines", "seats", "mrr", "cogs",
             "commission"),
)
def cm_by_account_monthly(con, ctx: BuildContext) -> str:
    lines = ctx.table("cm_by_line")
    return f"""
        WITH acct AS (
            SELECT account_id, first(segment ORDER BY booked_on, opportunity_id) AS segment,
                   first(channel ORDER BY booked_on, opportunity_id) AS channel,
                   min(booked_on) AS first_booked
            FROM {lines} GROUP BY 1),
        last AS (SELECT date_trunc('month', max(booked_on)) AS m FROM {lines}),
        months AS (
            SELECT a.*, unnest(generate_series(date_trunc('month', a.first_booked), last.m, INTERVAL 1 MONTH)) AS m
            FROM acct a, last)
        SELECT x.account_id, strftime(x.m, '%Y-%m') AS month, x.segment, x.channel,
               strftime(x.first_booked, '%Y-%m') AS cohort_month, CAST(count(*) AS BIGINT) AS lines,
               CAST(sum(l.seats) AS BIGINT) AS seats, sum(l.mrr) AS mrr, sum(l.cogs) AS cogs,
               sum(l.commission) AS commission
        FROM months x JOIN {lines} l ON l.account_id = x.account_id AND l.booked_on < x.m + INTERVAL 1 MONTH
        GROUP BY ALL"""


@computation(
    "gm_pct", reads=("cm_by_line",), order_by="segment = 'all' DESC, segment",
    columns=("segment", "lines", "seats", "mrr", "cogs"),
)
def gm_pct(con, ctx: BuildContext) -> str:
    return f"""
        SELECT {label('segment')}, CAST(count(*) AS BIGINT) AS lines, CAST(sum(seats) AS BIGINT) AS seats,
               sum(mrr) AS mrr, sum(cogs) AS cogs
        FROM {ctx.table('cm_by_line')} GROUP BY ROLLUP (segment)"""


@computation(
    "cm_per_seat", reads=("cm_by_line",), order_by="segment = 'all' DESC, segment",
    columns=("segment", "lines", "seats", "mrr", "cogs", "commission", "monthly_cm"),
)
def cm_per_seat(con, ctx: BuildContext) -> str:
    return f"""
        SELECT {label('segment')}, CAST(count(*) AS BIGINT) AS lines, CAST(sum(seats) AS BIGINT) AS seats,
               sum(mrr) AS mrr, sum(cogs) AS cogs, sum(commission) AS commission, sum(monthly_cm) AS monthly_cm
        FROM {ctx.table('cm_by_line')} GROUP BY ROLLUP (segment)"""


@computation(
    "ltv", reads=("cm_by_account_monthly",), order_by="segment",
    columns=("segment", "month", "accounts", "mrr", "monthly_cm"),
)
def ltv(con, ctx: BuildContext) -> str:
    t = ctx.table("cm_by_account_monthly")
    return f"""
        SELECT segment, month, CAST(count(*) AS BIGINT) AS accounts, sum(mrr) AS mrr, sum(monthly_cm) AS monthly_cm
        FROM {t} WHERE month = (SELECT max(month) FROM {t}) GROUP BY ALL"""


# A payback needs a cohort, not an anecdote: a cell with one or two new customers divides a whole month of spend by
# one early win (deals close weeks after the spend), which says nothing about the channel and would trip the spec's
# 36-month bound on noise. Such cohort-month cells get no row of their own; their cost and customers still count in
# the segment and channel rollups ('all'), which are reported from one customer up.
MIN_COHORT_CUSTOMERS = 3


def _payback_sql(ctx: BuildContext, dims: tuple[str, ...], grouping_sets: str) -> str:
    daily, cm = ctx.table("cac_by_channel_daily"), ctx.table("cm_by_account_monthly")
    min_customers = (f"CASE WHEN GROUPING(cohort_month) = 0 THEN {MIN_COHORT_CUSTOMERS} ELSE 1 END"
                     if "cohort_month" in dims else "1")
    return f"""
        WITH cost AS (
            SELECT segment, channel, strftime(day, '%Y-%m') AS cohort_month, sum(marketing_cost) AS cost
            FROM {daily} GROUP BY ALL),
        cohort AS (
            SELECT segment, channel, cohort_month, count(*) AS customers, sum(monthly_cm) AS cm
            FROM {cm} WHERE month = cohort_month GROUP BY ALL),
        j AS (
            SELECT coalesce(k.segment, c.segment) AS segment, coalesce(k.channel, c.channel) AS channel,
                   coalesce(k.cohort_month, c.cohort_month) AS cohort_month, coalesce(c.cost, 0) AS cost,
                   coalesce(k.customers, 0) AS customers, coalesce(k.cm, 0) AS cm
            FROM cohort k FULL JOIN cost c
              ON c.segment = k.segment AND c.channel = k.channel AND c.cohort_month = k.cohort_month),
        g AS (
            SELECT {', '.join(label(d) for d in dims)}, sum(cost) AS cost, sum(customers) AS customers,
                   sum(cm) AS cm
            FROM j GROUP BY GROUPING SETS {grouping_sets}
            HAVING sum(customers) >= {min_customers})
        SELECT {', '.join(dims)}, CAST(cost / customers AS DOUBLE) AS cac,
               CAST(cm / customers AS DOUBLE) AS monthly_cm, CAST(cost AS DOUBLE) AS marketing_cost,
               CAST(customers AS BIGINT) AS customers, CAST(cm AS DOUBLE) AS cohort_cm
        FROM g"""


@computation(
    "payback", reads=("cac_by_channel_daily", "cm_by_account_monthly"),
    order_by="segment = 'all' DESC, segment, channel = 'all' DESC, channel, cohort_month = 'all' DESC, cohort_month",
    columns=("segment", "channel", "cohort_month", "cac", "monthly_cm", "marketing_cost", "customers",
             "cohort_cm"),
)
def payback(con, ctx: BuildContext) -> str:
    """Payback per acquisition cohort: (segment, channel, cohort month), with rollups to 'all'."""
    return _payback_sql(ctx, ("segment", "channel", "cohort_month"),
                        "((segment, channel, cohort_month), (segment, channel), (segment), ())")


@computation(
    "payback_by_segment", reads=("cac_by_channel_daily", "cm_by_account_monthly"),
    order_by="segment = 'all' DESC, segment",
    columns=("segment", "cac", "monthly_cm", "marketing_cost", "customers", "cohort_cm"),
)
def payback_by_segment(con, ctx: BuildContext) -> str:
    """Payback per segment over every cohort (the pricing and ICP playbooks' input), published on its own."""
    return _payback_sql(ctx, ("segment",), "((segment), ())")
