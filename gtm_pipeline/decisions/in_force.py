"""What the applied decisions put in force: the readers of the flags (issue 14 §4).

Applying a decision flips a versioned flag (`flags`); these views are the outputs that change with it. Each view
reads ``decisions.flags_current`` when it is queried, so an apply or a reverse changes its output in the same
transaction that writes the flag version: nothing to re-run, which is how a price card reverts within the spec's hour
and an audience filter at once.

Each view, what it reads, and what it computes:

- ``decisions.price_book`` (``price_card.<segment>``, fact_bookings, cm_per_seat): list price per seat of the card in
  force (the segment's base list price x the card's multiplier), the expected net price with the held discount
  ladder, and the CM per seat the card implies.
- ``decisions.bookings_outlook`` (the price book, forecast, price_elasticity): the forecast re-priced at the card:
  open pipeline x multiplier x (1 + E x (multiplier - 1)) plus what is booked.
- ``decisions.channel_plan`` (``budget_split``, cac_per_sqo, fact_costs): each channel's budget over the metric
  window, its status (paused / shifted / held / unchanged), the expected spend per day and per week, and the spend
  since the plan took effect.
- ``decisions.lead_icp`` (``icp_audience_filter``, clean.lead): each lead's ICP segment (priority / core / excluded /
  disqualified) and whether routing may assign it.
- ``decisions.lead_score_in_force`` (decisions.lead_icp, metrics.lead_score): the lead score under the audience filter
  in force, so the ICP playbook and the scores never disagree (issue 19 §1): a lead the filter excludes has no fit
  (fit points 0, fit grade C, its total without them), and every row's model version names the filter version it was
  scored under (``icp_v1@1.0.0+icp_audience_filter.v3``). An apply or reverse of ``icp.update`` changes it at once.

Routing reads ``decisions.lead_icp`` (`routing.unassigned_leads` skips leads the filter makes ineligible) and the
pricing monitor compares CM per seat with the CM per seat the card in force implies. ``FF_ROUTING_V1`` has its own
reader, `flags.routing_rule_set_in_force`.

A view needs its sources: `install` creates each one whose tables exist and is called by every decision-stage run
and by apply/reverse (DuckDB binds a view when it is created; once created it re-reads its sources on every query,
and the metric layer's publish swap keeps the table names).
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.decisions.flags import ensure_flags
from gtm_pipeline.warehouse import table_exists

# Marketing cost types, as the CAC/SQO metric counts them (metrics/unit_economics.MARKETING).
_MARKETING = "('ad_spend', 'vendor')"
PRICE_BOOK, BOOKINGS_OUTLOOK, CHANNEL_PLAN, LEAD_ICP = (keys.PRICE_BOOK_VIEW, keys.BOOKINGS_OUTLOOK_VIEW,
                                                       keys.CHANNEL_PLAN_VIEW, keys.LEAD_ICP_VIEW)
LEAD_SCORE_IN_FORCE = keys.LEAD_SCORE_IN_FORCE_VIEW


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _exists(con, dotted: str) -> bool:
    schema, table = dotted.split(".")
    return table_exists(con, schema, table)


def price_book_sql(card_flag: str) -> str:
    """``card_flag``: the pricing playbook's flag pattern, e.g. ``price_card.{segment}``."""
    head, _, tail = card_flag.partition("{segment}")
    like = head.replace("%", r"\%").replace("_", r"\_") + "%" + tail.replace("%", r"\%").replace("_", r"\_")
    return f"""
        WITH cards AS (
            SELECT substr(flag, {len(head) + 1}, length(flag) - {len(head) + len(tail)}) AS segment, version,
                   json_extract_string(value, '$.card') AS card,
                   CAST(json_extract_string(value, '$.list_price_multiplier') AS DOUBLE) AS multiplier,
                   decision_id, set_at
            FROM decisions.flags_current WHERE flag LIKE {_lit(like)} ESCAPE '\\'),
        first_card AS (
            SELECT substr(flag, {len(head) + 1}, length(flag) - {len(head) + len(tail)}) AS segment,
                   min(set_at) AS since
            FROM decisions.flags WHERE flag LIKE {_lit(like)} ESCAPE '\\' GROUP BY 1),
        -- The base list price: what bookings paid before any card of the segment was set (all bookings if none).
        base AS (
            SELECT b.segment, median(b.list_price) AS base_list_price,
                   sum(b.discount * b.seats) / nullif(sum(b.seats), 0) AS avg_discount, count(*) AS bookings
            FROM metrics.fact_bookings b LEFT JOIN first_card f ON f.segment = b.segment
            WHERE f.since IS NULL OR b.booked_at < f.since
            GROUP BY 1)
        SELECT s.segment,
               coalesce(c.card, s.segment || '-base') AS card,
               coalesce(c.version, 0) AS card_version,
               coalesce(c.multiplier, 1.0) AS list_price_multiplier,
               c.decision_id, c.set_at AS card_since,
               b.base_list_price,
               b.base_list_price * coalesce(c.multiplier, 1.0) AS list_price_per_seat,
               b.avg_discount,  -- seat-weighted, the ladder the card holds
               b.base_list_price * coalesce(c.multiplier, 1.0) * (1 - coalesce(b.avg_discount, 0))
                   AS net_price_per_seat,
               s.cost_per_seat,
               s.cm_per_seat AS observed_cm_per_seat,
               b.base_list_price * coalesce(c.multiplier, 1.0) * (1 - coalesce(b.avg_discount, 0)) - s.cost_per_seat
                   AS card_cm_per_seat
        FROM metrics.cm_per_seat s
        LEFT JOIN cards c ON c.segment = s.segment
        LEFT JOIN base b ON b.segment = s.segment
        WHERE s.segment <> 'all'"""


BOOKINGS_OUTLOOK_SQL = f"""
    SELECT f.segment, f.horizon, f.as_of_date, p.card, p.list_price_multiplier, e.elasticity,
           f.forecast_bookings AS forecast_at_current_prices,
           -- An unknown elasticity gives no volume response: the outlook then re-prices the pipeline only, and says
           -- so in volume_response.
           f.booked_to_date + f.weighted_open * p.list_price_multiplier
               * greatest(0.0, 1 + coalesce(e.elasticity, 0.0) * (p.list_price_multiplier - 1)) AS forecast_at_card,
           CASE WHEN p.list_price_multiplier = 1.0 THEN 'none (base card)'
                WHEN e.elasticity IS NULL THEN 'unknown (no elasticity estimate): price effect only'
                ELSE 'elasticity ' || round(e.elasticity, 3) END AS volume_response
    FROM metrics.forecast f
    JOIN {PRICE_BOOK} p ON p.segment = f.segment
    LEFT JOIN metrics.price_elasticity e ON e.segment = f.segment"""


def channel_plan_sql(budget_flag: str) -> str:
    flag = _lit(budget_flag)
    return f"""
        WITH plan AS (SELECT value, version, decision_id, set_at FROM decisions.flags_current WHERE flag = {flag}),
        costs AS (
            SELECT channel, sum(amount) AS spent, min(day) AS first_day, max(day) AS last_day
            FROM metrics.fact_costs WHERE cost_type IN {_MARKETING} GROUP BY 1),
        span AS (SELECT date_diff('day', min(first_day), max(last_day)) + 1 AS days FROM costs),
        channels AS (
            SELECT k AS channel, CAST(json_extract(p.value, '$.split."' || k || '"') AS DOUBLE) AS budget
            FROM plan p, unnest(json_keys(p.value, '$.split')) AS t(k)
            UNION ALL
            -- No plan applied yet: the plan in force is what was spent, stated as the channel node states the split
            -- a first decision starts from (marketing cost by channel over the metric window, metrics.cac_per_sqo).
            SELECT channel, marketing_cost FROM metrics.cac_per_sqo
            WHERE channel NOT IN ('all', 'unattributed') AND NOT EXISTS (SELECT 1 FROM plan)),
        since AS (
            SELECT c.channel, sum(c.amount) AS spent_since_plan
            FROM metrics.fact_costs c, plan p
            WHERE c.cost_type IN {_MARKETING} AND c.day >= p.set_at::DATE GROUP BY 1)
        SELECT ch.channel,
               CASE WHEN ch.channel = 'unallocated' THEN 'unallocated'
                    WHEN p.value IS NULL THEN 'baseline (no plan applied)'
                    WHEN list_contains(json_extract_string(p.value, '$.paused[*]'), ch.channel) THEN 'paused'
                    WHEN list_contains(json_extract_string(p.value, '$.shifted[*]'), ch.channel) THEN 'shifted'
                    WHEN list_contains(coalesce(json_extract_string(p.value, '$.held[*]'), []), ch.channel)
                        THEN 'held'
                    ELSE 'unchanged' END AS status,
               ch.budget AS budget_over_window,
               s.days AS window_days,
               ch.budget / s.days AS expected_spend_per_day,
               ch.budget / s.days * 7 AS expected_spend_per_week,
               coalesce(p.version, 0) AS plan_version, p.decision_id, p.set_at AS plan_since,
               CASE WHEN p.value IS NULL THEN NULL ELSE coalesce(x.spent_since_plan, 0.0) END AS spent_since_plan
        FROM channels ch CROSS JOIN span s
        LEFT JOIN plan p ON TRUE
        LEFT JOIN since x ON x.channel = ch.channel"""


def lead_icp_sql(audience_flag: str) -> str:
    flag = _lit(audience_flag)
    return f"""
        WITH f AS (SELECT value, version, decision_id FROM decisions.flags_current WHERE flag = {flag}),
        rules AS (
            SELECT coalesce(json_extract_string(value, '$.include[*]'), []) AS include,
                   coalesce(json_extract_string(value, '$.exclude[*]'), []) AS exclude,
                   coalesce(CAST(json_extract(value, '$.dq_gates') AS BOOLEAN), FALSE) AS dq_gates,
                   version, decision_id
            FROM f
            UNION ALL
            SELECT [], [], FALSE, 0, NULL WHERE NOT EXISTS (SELECT 1 FROM f)),
        tagged AS (
            SELECT l.lead_id, l.industry, l.size_band, l.segment, l.status, l.dq_reason,
                   ['industry=' || coalesce(l.industry, ''), 'size_band=' || coalesce(l.size_band, '')] AS items,
                   r.*
            FROM clean.lead l CROSS JOIN rules r)
        SELECT lead_id, industry, size_band, segment, status, dq_reason,
               CASE WHEN dq_gates AND (status = 'disqualified' OR dq_reason IS NOT NULL) THEN 'disqualified'
                    WHEN len(list_intersect(items, exclude)) > 0 THEN 'excluded'
                    WHEN len(list_intersect(items, include)) > 0 THEN 'priority'
                    ELSE 'core' END AS icp_segment,
               NOT (dq_gates AND (status = 'disqualified' OR dq_reason IS NOT NULL))
                   AND len(list_intersect(items, exclude)) = 0 AS routing_eligible,
               version AS filter_version, decision_id AS filter_decision_id
        FROM tagged"""


def lead_score_in_force_sql(audience_flag: str) -> str:
    """The lead score re-graded by the audience filter in force (read through ``decisions.lead_icp``, the same
    classification routing uses, so the two cannot disagree)."""
    excluded = "coalesce(i.icp_segment = 'excluded', FALSE)"
    fit = f"CASE WHEN {excluded} THEN 0.0 ELSE s.fit_score END"
    fit_grade = f"CASE WHEN {excluded} THEN 'C' ELSE s.fit_grade END"
    return f"""
        SELECT s.* REPLACE (
                   s.model_version || '+{audience_flag}.v' || CAST(coalesce(i.filter_version, 0) AS VARCHAR)
                       AS model_version,
                   {fit} AS fit_score, {fit_grade} AS fit_grade, ({fit_grade}) || s.engagement_grade AS grade,
                   least({fit} + s.engagement_score, s.total_cap) AS total_score),
               {excluded} AS icp_excluded
        FROM metrics.lead_score s LEFT JOIN {LEAD_ICP} i ON i.lead_id = s.lead_id"""


def install(con: duckdb.DuckDBPyConnection, action_flags: Mapping[str, str]) -> list[str]:
    """Create (or replace) every reader view whose sources exist. ``action_flags``: node -> the flag its playbook
    flips (``Playbook.action_flag``). Returns the views in place."""
    ensure_flags(con)
    made = []
    views = [
        (PRICE_BOOK, ("metrics.cm_per_seat", "metrics.fact_bookings"), "pricing.change", price_book_sql),
        (BOOKINGS_OUTLOOK, ("metrics.forecast", "metrics.price_elasticity", "metrics.cm_per_seat",
                            "metrics.fact_bookings"), "pricing.change", lambda _f: BOOKINGS_OUTLOOK_SQL),
        (CHANNEL_PLAN, ("metrics.fact_costs", "metrics.cac_per_sqo"), "channel.invest", channel_plan_sql),
        (LEAD_ICP, ("clean.lead",), "icp.update", lead_icp_sql),
        (LEAD_SCORE_IN_FORCE, ("metrics.lead_score",), "icp.update", lead_score_in_force_sql),
    ]
    for view, sources, node, sql in views:
        flag = action_flags.get(node)
        if flag is None or not all(_exists(con, s) for s in sources):
            continue
        if (view == BOOKINGS_OUTLOOK and PRICE_BOOK not in made) or (view == LEAD_SCORE_IN_FORCE
                                                                      and LEAD_ICP not in made):
            continue
        con.execute(f"CREATE OR REPLACE VIEW {view} AS {sql(flag)}")
        made.append(view)
    return made


def action_flags(playbooks: Mapping) -> dict[str, str]:
    """node -> flag, from the loaded playbooks."""
    return {node: pb.action_flag for node, pb in playbooks.items()}
