"""Multi-touch attribution of opportunities and bookings to channels, and attribution validity (spec 002 §4.2:
"Attribution validity >= 0.995").

A touch is a web session or form fill of the opportunity's lead, with a channel, strictly before the opportunity
was created (a form fill whose own session is already a touch is the same visit and is not counted twice). Per
opportunity and model the weights over its touches are:

* ``first_touch``: 1 to the first touch; ``last_touch``: 1 to the last one;
* ``linear``: 1/n to each of n touches;
* ``position_based`` (U-shaped): 40 % first, 40 % last, 20 % shared by the touches between; 100 % for one touch and
  50/50 for two.

Weights are summed per channel. An opportunity without any touch cannot be attributed: it gets one row per model
with channel ``unattributed`` and is invalid. Valid = at least one touch and weights summing to 1 in every model;
attribution validity = valid opportunities / opportunities.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.metrics.unit_economics import label

MODELS = ("first_touch", "last_touch", "linear", "position_based")


@computation(
    "attribution", reads=("clean.opportunity", "clean.activity", "fact_bookings"),
    order_by="opportunity_id, model, channel",
    columns=("opportunity_id", "model", "channel", "weight", "touches", "opportunity_touches", "weight_sum",
             "valid", "opportunity_created_at", "is_won", "booked_amount"),
)
def attribution(con, ctx: BuildContext) -> str:
    opp, act, book = ctx.table("clean.opportunity"), ctx.table("clean.activity"), ctx.table("fact_bookings")
    return f"""
        WITH o AS (SELECT opportunity_id, lead_id, created_at FROM {opp}),
        raw AS (
            SELECT o.opportunity_id, a.activity_id, a.activity_type, a.session_id, a.channel, a.occurred_at
            FROM o JOIN {act} a ON a.lead_id = o.lead_id AND a.occurred_at < o.created_at
            WHERE a.activity_type IN ('web_session', 'form_fill') AND a.channel IS NOT NULL),
        touch AS (
            SELECT r.* FROM raw r
            WHERE r.activity_type = 'web_session' OR r.session_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM raw s WHERE s.opportunity_id = r.opportunity_id AND s.activity_type = 'web_session'
                  AND s.session_id = r.session_id)),
        pos AS (
            SELECT opportunity_id, channel,
                   row_number() OVER (PARTITION BY opportunity_id ORDER BY occurred_at, activity_id) AS k,
                   count(*) OVER (PARTITION BY opportunity_id) AS n
            FROM touch),
        w AS (
            SELECT opportunity_id, channel, n, 'first_touch' AS model, CASE WHEN k = 1 THEN 1.0 ELSE 0.0 END AS w
            FROM pos
            UNION ALL SELECT opportunity_id, channel, n, 'last_touch', CASE WHEN k = n THEN 1.0 ELSE 0.0 END FROM pos
            UNION ALL SELECT opportunity_id, channel, n, 'linear', 1.0 / n FROM pos
            UNION ALL SELECT opportunity_id, channel, n, 'position_based',
                   CASE WHEN n = 1 THEN 1.0 WHEN n = 2 THEN 0.5 WHEN k = 1 OR k = n THEN 0.4
                        ELSE 0.2 / (n - 2) END FROM pos),
        per_channel AS (
            SELECT opportunity_id, model, channel, sum(w) AS weight, count(*) FILTER (WHERE w > 0) AS touches,
                   max(n) AS opportunity_touches
            FROM w GROUP BY ALL HAVING sum(w) > 0),
        models AS (SELECT unnest({list(MODELS)}) AS model),
        unattributed AS (
            SELECT o.opportunity_id, m.model, 'unattributed' AS channel, 1.0 AS weight, 0 AS touches,
                   0 AS opportunity_touches
            FROM o, models m WHERE NOT EXISTS (SELECT 1 FROM pos p WHERE p.opportunity_id = o.opportunity_id)),
        rows AS (SELECT * FROM per_channel UNION ALL SELECT * FROM unattributed),
        checked AS (
            SELECT r.*, sum(weight) OVER (PARTITION BY opportunity_id, model) AS weight_sum FROM rows r),
        validity AS (
            SELECT opportunity_id,
                   bool_and(channel <> 'unattributed' AND abs(weight_sum - 1.0) < 1e-9) AS valid
            FROM checked GROUP BY 1)
        SELECT c.opportunity_id, c.model, c.channel, CAST(c.weight AS DOUBLE) AS weight,
               CAST(c.touches AS BIGINT) AS touches, CAST(c.opportunity_touches AS BIGINT) AS opportunity_touches,
               CAST(c.weight_sum AS DOUBLE) AS weight_sum, v.valid, o.created_at AS opportunity_created_at,
               b.opportunity_id IS NOT NULL AS is_won, CAST(coalesce(b.amount, 0) AS DOUBLE) AS booked_amount
        FROM checked c JOIN validity v USING (opportunity_id) JOIN o USING (opportunity_id)
        LEFT JOIN {book} b USING (opportunity_id)"""


@computation(
    "attribution_by_channel", reads=("attribution",), order_by="model, channel",
    columns=("model", "channel", "attributed_opportunities", "attributed_wins", "attributed_bookings",
             "model_bookings"),
)
def attribution_by_channel(con, ctx: BuildContext) -> str:
    return f"""
        SELECT model, channel, sum(weight) AS attributed_opportunities,
               sum(weight * CASE WHEN is_won THEN 1 ELSE 0 END) AS attributed_wins,
               sum(weight * booked_amount) AS attributed_bookings,
               sum(sum(weight * booked_amount)) OVER (PARTITION BY model) AS model_bookings
        FROM {ctx.table('attribution')} GROUP BY model, channel"""


@computation(
    "attribution_validity", reads=("attribution",), order_by="month = 'all' DESC, month DESC",
    columns=("month", "opportunities", "valid_opportunities", "unattributed"),
)
def attribution_validity(con, ctx: BuildContext) -> str:
    return f"""
        WITH per_opp AS (
            SELECT opportunity_id, strftime(min(opportunity_created_at), '%Y-%m') AS month, bool_and(valid) AS valid,
                   bool_or(channel = 'unattributed') AS unattributed
            FROM {ctx.table('attribution')} GROUP BY 1)
        SELECT {label('month')}, CAST(count(*) AS BIGINT) AS opportunities,
               CAST(count(*) FILTER (WHERE valid) AS BIGINT) AS valid_opportunities,
               CAST(count(*) FILTER (WHERE unattributed) AS BIGINT) AS unattributed
        FROM per_opp GROUP BY ROLLUP (month)"""
