"""Routing health, the inputs of the routing playbook (spec 002 §4.4): P(route < 2 min), availability, unassigned
rate and the fairness Gini of assignments; per day and over the whole window (``day = 'all'``).

* route latency = ``assigned_at - created_at`` of an assigned lead, in seconds;
* unassigned = a lead without owner;
* availability = the share of assignments that went to a rep who was available: active, and still under the
  ``capacity_per_day`` of the rep's record valid at assignment time (the n-th lead a rep receives in a UTC day is
  available while n <= capacity). It is the routing engine's promise to respect rep availability;
* Gini = sum_i sum_j |x_i - x_j| / (2 n sum x) over the assignment counts x of every SDR (team ``sdr``) known at the
  time, reps with no assignment included (0 = perfectly even, 1 = one rep gets everything).
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation


@computation(
    "routing_health", reads=("clean.lead", "clean.owner"), order_by="day = 'all' DESC, day DESC",
    columns=("day", "leads", "assigned", "unassigned", "routed_under_2m", "median_route_s", "p90_route_s",
             "engine_routed", "available_assignments", "sdr_count", "sdr_assignments", "load_abs_diff"),
)
def routing_health(con, ctx: BuildContext) -> str:
    lead, owner = ctx.table("clean.lead"), ctx.table("clean.owner")
    return f"""
        WITH l AS (
            SELECT lead_id, created_at, created_at::DATE AS d, owner_id, assigned_at, routed_by,
                   CASE WHEN owner_id IS NOT NULL AND assigned_at IS NOT NULL
                        THEN epoch(assigned_at) - epoch(created_at) END AS route_s
            FROM {lead}),
        ranked AS (
            SELECT l.*, row_number() OVER (PARTITION BY owner_id, assigned_at::DATE ORDER BY assigned_at, lead_id)
                   AS nth_of_day
            FROM l WHERE owner_id IS NOT NULL),
        avail AS (
            SELECT r.lead_id, coalesce(o.active, TRUE) AND r.nth_of_day <= coalesce(o.capacity_per_day, 0)
                   AS available
            FROM ranked r ASOF LEFT JOIN {owner} o
              ON o.owner_id = r.owner_id AND coalesce(r.assigned_at, r.created_at) >= o.updated_at),
        sdr_first AS (SELECT owner_id, min(updated_at)::DATE AS since FROM {owner} WHERE team = 'sdr' GROUP BY 1),
        periods AS (SELECT DISTINCT strftime(d, '%Y-%m-%d') AS day, d AS lo, d AS hi FROM l
                    UNION ALL SELECT 'all', min(d), max(d) FROM l),
        loads AS (   -- assignments per SDR per period, zero for SDRs who got none
            SELECT p.day, s.owner_id, count(l.lead_id) AS n
            FROM periods p JOIN sdr_first s ON s.since <= p.hi
            LEFT JOIN l ON l.owner_id = s.owner_id AND l.d BETWEEN p.lo AND p.hi
            GROUP BY ALL),
        fairness AS (
            SELECT a.day, CAST(count(DISTINCT a.owner_id) AS BIGINT) AS sdr_count,
                   CAST(sum(abs(a.n - b.n)) AS DOUBLE) AS load_abs_diff
            FROM loads a JOIN loads b USING (day) GROUP BY 1),
        sdr_assigned AS (SELECT day, CAST(sum(n) AS BIGINT) AS sdr_assignments FROM loads GROUP BY 1),
        per AS (
            SELECT p.day, CAST(count(*) AS BIGINT) AS leads,
                   CAST(count(l.owner_id) AS BIGINT) AS assigned,
                   CAST(count(*) - count(l.owner_id) AS BIGINT) AS unassigned,
                   CAST(count(*) FILTER (WHERE l.route_s < 120) AS BIGINT) AS routed_under_2m,
                   median(l.route_s) AS median_route_s, quantile_cont(l.route_s, 0.9) AS p90_route_s,
                   CAST(count(*) FILTER (WHERE l.routed_by = 'engine') AS BIGINT) AS engine_routed,
                   CAST(count(*) FILTER (WHERE a.available) AS BIGINT) AS available_assignments
            FROM periods p JOIN l ON l.d BETWEEN p.lo AND p.hi
            LEFT JOIN avail a ON a.lead_id = l.lead_id
            GROUP BY 1)
        SELECT per.*, coalesce(f.sdr_count, 0) AS sdr_count, coalesce(s.sdr_assignments, 0) AS sdr_assignments,
               coalesce(f.load_abs_diff, 0) AS load_abs_diff
        FROM per LEFT JOIN fairness f USING (day) LEFT JOIN sdr_assigned s USING (day)"""
