"""The adapter between the metric layer and the playbook rules: every SQL that reads ``metrics.*`` for a decision
lives here, so a change of column names is fixed in one place.

Each ``read_<node>`` returns `NodeInputs`: the exact rows read (hashed into the decision log's ``inputs_hash``;
publication stamps are left out so a re-publication of the same figures hashes the same), the parsed figures the
rule functions take, and ``inputs_version`` (the contract version and publication time of every table read).
The ``series_*`` functions give the monitoring plans their before/after figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import scalar, table_exists


@dataclass
class NodeInputs:
    tables: dict[str, list[dict]]                  # table -> exact rows read (no publication stamps)
    version: str                                   # e.g. "price_elasticity 1.0.0@2026-11-22T17:26:54; ..."
    figures: dict[str, Any] = field(default_factory=dict)

    def subset(self, key: str, value: str) -> dict[str, list[dict]]:
        """The rows of every table whose ``key`` column equals ``value`` (tables without the column: all rows)."""
        return {t: [r for r in rows if key not in r or r[key] == value] for t, rows in self.tables.items()}


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


class InputsNotPublished(GtmPipelineError):
    """A metric table a node reads has never been published (e.g. too little history yet): no decision, not a crash."""


def require_tables(con: duckdb.DuckDBPyConnection, names: list[str] | tuple[str, ...], node: str) -> None:
    missing = [n for n in names if not table_exists(con, "metrics", n)]
    if missing:
        raise InputsNotPublished(
            f"{node}: metric table(s) {', '.join('metrics.' + m for m in missing)} not published yet; run the metric "
            f"layer first ('gtm-pipeline refresh', or the refresh_job in Dagster)")


def inputs_version(con: duckdb.DuckDBPyConnection, names: list[str] | tuple[str, ...]) -> str:
    """Contract version and latest publication time of each metric table read."""
    parts = []
    for n in sorted(set(names)):
        row = None
        if table_exists(con, "ops", "publications"):
            row = con.execute("SELECT version, max(published_at) FROM ops.publications WHERE asset_key = ? "
                              "GROUP BY version ORDER BY 2 DESC LIMIT 1", [f"metrics/{n}"]).fetchone()
        parts.append(f"{n} {row[0]}@{row[1].isoformat(timespec='seconds')}" if row and row[1] else f"{n} unpublished")
    return "; ".join(parts)


# ---- pricing.change -------------------------------------------------------------------------------------------------

PRICING_TABLES = ("price_elasticity", "cm_per_seat", "gm_pct", "payback_by_segment")


def read_pricing(con: duckdb.DuckDBPyConnection) -> NodeInputs:
    require_tables(con, PRICING_TABLES, "pricing.change")
    tables = {
        "price_elasticity": _rows(con, "SELECT segment, closed, won, elasticity, e_se, note "
                                       "FROM metrics.price_elasticity ORDER BY segment"),
        "cm_per_seat": _rows(con, "SELECT segment, seats, price_per_seat, cost_per_seat, cm_per_seat "
                                  "FROM metrics.cm_per_seat ORDER BY segment"),
        "gm_pct": _rows(con, "SELECT segment, gm_pct FROM metrics.gm_pct ORDER BY segment"),
        "payback_by_segment": _rows(con, "SELECT segment, cac, monthly_cm, payback_months "
                                         "FROM metrics.payback_by_segment ORDER BY segment"),
    }
    segments: dict[str, dict] = {}
    for rows in tables.values():
        for r in rows:
            segments.setdefault(r["segment"], {}).update({k: v for k, v in r.items() if k != "segment"})
    return NodeInputs(tables, inputs_version(con, PRICING_TABLES), {"segments": segments})


# ---- channel.invest -------------------------------------------------------------------------------------------------

CHANNEL_TABLES = ("cac_per_sqo", "sql_funnel", "attribution_validity", "attribution", "fact_pipeline")


def read_channel(con: duckdb.DuckDBPyConnection) -> NodeInputs:
    require_tables(con, CHANNEL_TABLES, "channel.invest")
    cac = _rows(con, "SELECT channel, marketing_cost, sqos, cac_per_sqo, baseline_cac_per_sqo "
                     "FROM metrics.cac_per_sqo ORDER BY channel")
    funnel = _rows(con, "SELECT channel, leads, sqls, wins, closed, sql_rate, sql_to_win "
                        "FROM metrics.sql_funnel WHERE week = 'all' ORDER BY channel")
    validity = _rows(con, "SELECT month, opportunities, valid_opportunities, validity "
                          "FROM metrics.attribution_validity WHERE month = 'all'")
    # Attribution validity of each channel's own pipeline: the share of the opportunities it sourced (channel of the
    # opportunity in fact_pipeline) whose attribution is valid in every model (metrics.attribution.valid).
    by_channel = _rows(con, """
        WITH opp AS (SELECT DISTINCT opportunity_id, channel FROM metrics.fact_pipeline WHERE is_created),
             val AS (SELECT opportunity_id, bool_and(valid) AS valid FROM metrics.attribution GROUP BY 1)
        SELECT opp.channel, CAST(count(*) AS BIGINT) AS opportunities,
               CAST(count(*) FILTER (WHERE coalesce(val.valid, false)) AS BIGINT) AS valid_opportunities
        FROM opp LEFT JOIN val USING (opportunity_id) GROUP BY 1 ORDER BY 1""")
    payback = _rows(con, "SELECT segment, payback_months FROM metrics.payback_by_segment WHERE segment = 'all'") \
        if table_exists(con, "metrics", "payback_by_segment") else []
    tables = {"cac_per_sqo": cac, "sql_funnel": funnel, "attribution_validity": validity,
              "attribution_validity_by_channel": by_channel, "payback_by_segment": payback}
    channels: dict[str, dict] = {}
    for r in cac:
        channels.setdefault(r["channel"], {}).update(marketing_cost=r["marketing_cost"], sqos=r["sqos"],
                                                     cac_per_sqo=r["cac_per_sqo"])
    for r in funnel:
        channels.setdefault(r["channel"], {}).update(sqls=r["sqls"], wins=r["wins"], sql_to_win=r["sql_to_win"],
                                                     sql_rate=r["sql_rate"])
    for r in by_channel:
        if r["channel"] in channels and r["opportunities"]:
            channels[r["channel"]]["attribution_validity"] = r["valid_opportunities"] / r["opportunities"]
    all_cac = next((r for r in cac if r["channel"] == "all"), {})
    all_funnel = next((r for r in funnel if r["channel"] == "all"), {})
    baseline = {"cac_per_sqo": all_cac.get("cac_per_sqo"), "sql_to_win": all_funnel.get("sql_to_win")}
    overall = validity[0]["validity"] if validity else None
    return NodeInputs(tables, inputs_version(con, CHANNEL_TABLES),
                      {"channels": channels, "baseline": baseline, "attribution_validity": overall,
                       "payback_all": payback[0]["payback_months"] if payback else None})


# ---- icp.update -----------------------------------------------------------------------------------------------------

ICP_TABLES = ("win_rate_by_segment", "dq_reason_coverage", "cac_per_sqo", "cm_by_line", "fact_bookings",
              "routing_health")


def read_icp(con: duckdb.DuckDBPyConnection, dimensions: list[str]) -> NodeInputs:
    require_tables(con, ICP_TABLES, "icp.update")
    dims = ["all", *dimensions]
    marks = ", ".join("?" for _ in dims)
    win = _rows(con, f"SELECT dimension, value, month, closed, won, leads, sqls FROM metrics.win_rate_by_segment "
                     f"WHERE dimension IN ({marks}) ORDER BY dimension, value, month", dims)
    dq = _rows(con, "SELECT month, disqualified, with_reason, coverage FROM metrics.dq_reason_coverage "
                    "WHERE month = 'all'")
    routing = _rows(con, "SELECT day, leads, assigned, unassigned, available_assignments, availability, "
                         "unassigned_rate FROM metrics.routing_health WHERE day = 'all'")
    cost = _rows(con, "SELECT overall_marketing_cost FROM metrics.cac_per_sqo WHERE channel = 'all'")
    # Payback of a segment value (documented in contracts/decisions/icp_update.yaml): marketing cost allocated by
    # its share of leads / the monthly CM of the lines it booked. Baseline: total cost / total monthly CM.
    unions = " UNION ALL ".join(
        f"SELECT '{d}' AS dimension, coalesce(b.{d}, 'unknown') AS value, c.monthly_cm FROM metrics.cm_by_line c "
        f"JOIN metrics.fact_bookings b USING (opportunity_id)" for d in dimensions)
    cm = _rows(con, f"SELECT dimension, value, sum(monthly_cm) AS monthly_cm, CAST(count(*) AS BIGINT) AS lines "
                    f"FROM ({unions}) GROUP BY ALL ORDER BY 1, 2") if dimensions else []
    cm_total = scalar(con, "SELECT sum(monthly_cm) FROM metrics.cm_by_line")
    tables = {"win_rate_by_segment": win, "dq_reason_coverage": dq, "routing_health": routing,
              "marketing_cost": cost, "monthly_cm_by_value": cm,
              "monthly_cm_total": [{"monthly_cm": cm_total}]}
    total_cost = cost[0]["overall_marketing_cost"] if cost else None
    leads = {(r["dimension"], r["value"]): r["leads"] for r in win if r["month"] == "all"}
    all_leads = leads.get(("all", "all"))
    payback: dict[tuple[str, str], float | None] = {}
    for r in cm:
        key = (r["dimension"], r["value"])
        share = (leads.get(key) or 0) / all_leads if all_leads else None
        payback[key] = (total_cost * share / r["monthly_cm"]
                        if total_cost is not None and share is not None and r["monthly_cm"] and r["monthly_cm"] > 0
                        else None)
    baseline = total_cost / cm_total if total_cost is not None and cm_total and cm_total > 0 else None
    return NodeInputs(tables, inputs_version(con, ICP_TABLES), {
        "win_rows": win, "payback": payback, "baseline_payback": baseline,
        "dq_coverage": dq[0]["coverage"] if dq else None, "dq_disqualified": dq[0]["disqualified"] if dq else None,
        "routing": routing[0] if routing else None})


# ---- routing.policy -------------------------------------------------------------------------------------------------

def read_routing_health(con: duckdb.DuckDBPyConnection) -> NodeInputs:
    require_tables(con, ("routing_health",), "routing.policy")
    rows = _rows(con, "SELECT day, leads, assigned, unassigned, routed_under_2m, available_assignments, "
                      "p_route_lt_2m, availability, unassigned_rate, gini FROM metrics.routing_health "
                      "WHERE day = 'all'")
    return NodeInputs({"routing_health": rows}, inputs_version(con, ("routing_health",)),
                      {"health": rows[0] if rows else None})


def read_experiments(con: duckdb.DuckDBPyConnection) -> NodeInputs:
    """The latest look of every experiment in metrics.experiment_readout (one row per arm)."""
    require_tables(con, ("experiment_readout",), "experiment.ship")
    rows = _rows(con, "SELECT experiment, look, strftime(as_of, '%Y-%m-%d %H:%M:%S') AS as_of, arm, is_control, units, "
                      "mean, estimate, ci_low, ci_high, p_value, p_min, srm_p, method, guardrails, verdict "
                      "FROM metrics.experiment_readout r "
                      "WHERE look = (SELECT max(look) FROM metrics.experiment_readout x "
                      "WHERE x.experiment = r.experiment) ORDER BY experiment, is_control DESC, arm")
    by_exp: dict[str, list[dict]] = {}
    for r in rows:
        by_exp.setdefault(r["experiment"], []).append(r)
    return NodeInputs({"experiment_readout": rows}, inputs_version(con, ("experiment_readout",)),
                      {"experiments": by_exp})


def series_experiment_lift(con, experiment: str, arm: str | None) -> tuple[float | None, int]:
    """(the latest published lift of ``arm`` in ``experiment``, the look it comes from)."""
    if arm is None or not table_exists(con, "metrics", "experiment_readout"):
        return None, 0
    row = con.execute("SELECT estimate, look FROM metrics.experiment_readout WHERE experiment = ? AND arm = ? "
                      "ORDER BY look DESC LIMIT 1", [experiment, arm]).fetchall()
    return (None, 0) if not row or row[0][0] is None else (float(row[0][0]), int(row[0][1]))


# ---- monitoring series ----------------------------------------------------------------------------------------------
# Each returns (baseline, observed, days_observed) for the window [start, start + window_days) against the same
# length of time before ``start``; None when there is no data yet.

def _ratio(a, b):
    return None if a is None or not b else float(a) / float(b)


def series_booking_rate(con, segment: str, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    """Won / closed of the segment: the 14 days before the change vs the days since."""
    if not table_exists(con, "metrics", "booking_rate"):
        return None, None, 0
    end = start + timedelta(days=window_days)
    before = con.execute("SELECT sum(won), sum(closed) FROM metrics.booking_rate WHERE segment = ? AND day <> 'all' "
                         "AND day::DATE >= ? AND day::DATE < ?",
                         [segment, start - timedelta(days=window_days), start]).fetchone()
    after = con.execute("SELECT sum(won), sum(closed), count(DISTINCT day) FROM metrics.booking_rate "
                        "WHERE segment = ? AND day <> 'all' AND day::DATE >= ? AND day::DATE < ?",
                        [segment, start, end]).fetchone()
    return _ratio(*before), _ratio(after[0], after[1]), int(after[2] or 0)


def series_bookings(con, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    """Bookings per week (all segments): the same number of weeks before the change vs since."""
    if not table_exists(con, "metrics", "booking_rate"):
        return None, None, 0
    end = start + timedelta(days=window_days)
    before = con.execute("SELECT sum(bookings), count(DISTINCT day) FROM metrics.booking_rate WHERE segment = 'all' "
                         "AND day <> 'all' AND day::DATE >= ? AND day::DATE < ?",
                         [start - timedelta(days=window_days), start]).fetchone()
    after = con.execute("SELECT sum(bookings), count(DISTINCT day) FROM metrics.booking_rate WHERE segment = 'all' "
                        "AND day <> 'all' AND day::DATE >= ? AND day::DATE < ?", [start, end]).fetchone()
    b = None if not before[1] else float(before[0] or 0) / before[1] * 7
    a = None if not after[1] else float(after[0] or 0) / after[1] * 7
    return b, a, int(after[1] or 0)


def _weekly(con, column_sql: str, start: date, window_days: int):
    end = start + timedelta(days=window_days)
    q = (f"SELECT {column_sql}, count(*) FROM metrics.sql_funnel WHERE channel = 'all' AND week <> 'all' "
         f"AND week::DATE >= ? AND week::DATE < ?")
    before = con.execute(q, [start - timedelta(days=window_days), start]).fetchone()
    after = con.execute(q, [start, end]).fetchone()
    return before, after


def series_sql_volume(con, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    """SQLs per week (all channels), weeks starting on or after the change vs the weeks before."""
    if not table_exists(con, "metrics", "sql_funnel"):
        return None, None, 0
    before, after = _weekly(con, "sum(sqls)", start, window_days)
    b = None if not before[1] else float(before[0] or 0) / before[1]
    a = None if not after[1] else float(after[0] or 0) / after[1]
    return b, a, int(after[1] or 0) * 7


def series_win_rate(con, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    if not table_exists(con, "metrics", "sql_funnel"):
        return None, None, 0
    before, after = _weekly(con, "sum(wins), sum(closed)", start, window_days)
    return _ratio(before[0], before[1]), _ratio(after[0], after[1]), int(after[2] or 0) * 7


def series_routing(con, start: date, window_days: int) -> dict[str, tuple[float | None, float | None, int]]:
    """Unassigned rate and availability over the days since the change (and the same length before)."""
    if not table_exists(con, "metrics", "routing_health"):
        return {"unassigned_rate": (None, None, 0), "availability": (None, None, 0)}
    end = start + timedelta(days=window_days)
    q = ("SELECT sum(unassigned), sum(leads), sum(available_assignments), sum(assigned), count(*) "
         "FROM metrics.routing_health WHERE day <> 'all' AND day::DATE >= ? AND day::DATE < ?")
    b = con.execute(q, [start - timedelta(days=window_days), start]).fetchone()
    a = con.execute(q, [start, end]).fetchone()
    return {"unassigned_rate": (_ratio(b[0], b[1]), _ratio(a[0], a[1]), int(a[4] or 0)),
            "availability": (_ratio(b[2], b[3]), _ratio(a[2], a[3]), int(a[4] or 0))}


def series_list_price(con, segment: str, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    """The price card in force vs what the deals paid: the card's list price per seat (decisions.price_book) and the
    seat-weighted list price per seat of the segment's bookings booked since the change."""
    schema, view = keys.PRICE_BOOK_VIEW.split(".")
    if not table_exists(con, schema, view) or not table_exists(con, "metrics", "fact_bookings"):
        return None, None, 0
    row = con.execute(f"SELECT list_price_per_seat FROM {keys.PRICE_BOOK_VIEW} WHERE segment = ?", [segment]).fetchone()
    card = None if row is None or row[0] is None else float(row[0])
    after = con.execute("SELECT sum(list_price * seats) / nullif(sum(seats), 0), count(DISTINCT booked_on) "
                        "FROM metrics.fact_bookings WHERE segment = ? AND booked_on >= ? AND booked_on < ?",
                        [segment, start, start + timedelta(days=window_days)]).fetchone()
    return card, (None if after[0] is None else float(after[0])), int(after[1] or 0)


def series_marketing_spend(con, start: date, window_days: int) -> tuple[float | None, float | None, int]:
    """The budget split in force vs what was spent: the plan's expected marketing spend per week (paused channels at
    0; decisions.channel_plan) and the marketing spend per week since the change (metrics.fact_costs)."""
    schema, view = keys.CHANNEL_PLAN_VIEW.split(".")
    if not table_exists(con, schema, view) or not table_exists(con, "metrics", "fact_costs"):
        return None, None, 0
    planned = con.execute(f"SELECT sum(CASE WHEN status IN ('paused', 'unallocated') THEN 0 "
                          f"ELSE expected_spend_per_week END) FROM {keys.CHANNEL_PLAN_VIEW}").fetchone()[0]
    after = con.execute("SELECT sum(amount), count(DISTINCT day) FROM metrics.fact_costs "
                        "WHERE cost_type IN ('ad_spend', 'vendor') AND day >= ? AND day < ?",
                        [start, start + timedelta(days=window_days)]).fetchone()
    spent = None if not after[1] else float(after[0] or 0) / after[1] * 7
    return (None if planned is None else float(planned)), spent, int(after[1] or 0)


def current_figure(con, table: str, column: str, key: str, value: str) -> float | None:
    """One published figure, e.g. cm_per_seat of a segment, payback of 'all' (None if absent)."""
    if not table_exists(con, "metrics", table):
        return None
    row = con.execute(f'SELECT "{column}" FROM metrics."{table}" WHERE "{key}" = ?', [value]).fetchone()
    return None if row is None or row[0] is None else float(row[0])
