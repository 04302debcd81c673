"""Routing engine (spec 002 §4.4 Routing Policy): rule sets, owner pools, capped tie-breakers, dead-letter queue.

Rule sets live in ``contracts/routing/<name>.yaml`` (``rules_v1.yaml`` is current, ``rules_v2.yaml`` a candidate);
their models and loaders are in `gtm_pipeline.routing.contract` (importable from here). A rule matches a record (a
lead or an opportunity) by structured conditions on its attributes and names the pool of owners that may take it;
the first rule whose pool has an owner with capacity left wins:

    rules:
      - name: ae_same_segment_same_region
        applies_to: [opportunity]
        when: {segment: [smb, mid_market], region: [na, latam]}   # every listed field must match; {} matches all
        assign: {team: ae, segment: same, region: same}            # "same" = the record's own value

Owners come from ``clean.owner`` (latest version per owner_id, active, ``capacity_per_day`` open assignments a
day). Among the eligible owners the tie-breakers are capped exactly as the playbook says: **age** (longest since
the last assignment) -> **load** (fewest open assignments on the record's day) -> **random UUID**, drawn as
``uuid.UUID(int=random.Random(seed + record_hash).getrandbits(128))`` so a run is reproducible. A record no rule
can place goes to the dead-letter queue ``ops.routing_dlq``; `replay_dlq` re-routes it after a fix (a new rule set,
more capacity), as the playbook's reversal says ("replay DLQ").

The pure API (no warehouse): `parse_rule_set` (`gtm_pipeline.routing.contract`), `route`
(`gtm_pipeline.routing.assign`), `shadow_evaluate`, `gini`, `assignment_gini`, `latency_summary`
(`gtm_pipeline.routing.fairness`). This module is the warehouse side: `load_owners`, `route_in_warehouse`,
`record_assignments`, `dead_letter`, `replay_dlq`, `unassigned_leads`, `route_leads`; the pure names stay importable
from here, so a caller needs one module.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.errors import GtmPipelineError

# The pure routing, its judging and the rule-set contract live in their own modules; their names stay importable
# from here (routing.route, routing.shadow_evaluate, routing.load_rule_set, ...).
from gtm_pipeline.routing.assign import (  # noqa: F401 - re-exported
    TIE_BREAKERS,
    Assignment,
    Owner,
    Record,
    RoutingResult,
    Unrouted,
    record_uuid,
    route,
)
from gtm_pipeline.routing.contract import (  # noqa: F401 - re-exported
    CONDITION_FIELDS,
    KINDS,
    POOL_FIELDS,
    SAME,
    STATUSES,
    TEAM_FOR_KIND,
    Rule,
    RuleSet,
    current_rule_set,
    load_rule_set,
    load_rule_sets,
    parse_rule_set,
    routing_enums,
)
from gtm_pipeline.routing.fairness import (  # noqa: F401 - re-exported
    GINI_MAX,
    ROUTE_SLO_SECONDS,
    SHADOW_MATCH_MIN_PCT,
    LatencySummary,
    ShadowReport,
    assignment_gini,
    gini,
    latency_summary,
    shadow_evaluate,
)
from gtm_pipeline.warehouse import ensure_base, table_exists, transaction, utcnow

_DDL = [
    """CREATE TABLE IF NOT EXISTS ops.routing_assignments (
        assignment_id VARCHAR, kind VARCHAR, record_id VARCHAR, owner_id VARCHAR, rule VARCHAR, rule_set VARCHAR,
        tie_break VARCHAR, random_uuid VARCHAR, routing_day DATE, record_created_at TIMESTAMP, routed_at TIMESTAMP,
        latency_ms DOUBLE, seed BIGINT, source VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.routing_dlq (
        dlq_id VARCHAR, kind VARCHAR, record_id VARCHAR, record VARCHAR, reason VARCHAR, attempts INTEGER,
        status VARCHAR, rule_set VARCHAR, source VARCHAR, first_failed_at TIMESTAMP, last_attempt_at TIMESTAMP,
        replayed_at TIMESTAMP, owner_id VARCHAR, rule VARCHAR)""",
]
DLQ_OPEN, DLQ_REPLAYED = "open", "replayed"


def ensure_routing_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_base(con)
    for stmt in _DDL:
        con.execute(stmt)


def load_owners(con: duckdb.DuckDBPyConnection, days: Iterable[date] = ()) -> list[Owner]:
    """Owners from ``clean.owner`` (latest version per owner_id) with their state for the given routing days.

    ``last_assigned_at``: the latest assignment before the first of ``days`` (opportunities by created_at, leads by
    assigned_at, and this engine's own assignments); ``load``: open assignments (opportunities not closed, leads new
    or working, engine assignments) per day.
    """
    if not table_exists(con, "clean", "owner"):
        raise GtmPipelineError("clean.owner is empty or missing: run the pipeline for a day with crm/owners.csv "
                               "first (gtm-pipeline run --from <day>)")
    ensure_routing_tables(con)
    rows = con.execute("""
        SELECT owner_id, team, segment, region, capacity_per_day, coalesce(active, true)
        FROM clean.owner WHERE owner_id IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY owner_id ORDER BY updated_at DESC, _file DESC, _line DESC) = 1
        ORDER BY owner_id""").fetchall()
    owners = {r[0]: Owner(owner_id=r[0], team=r[1], segment=r[2], region=r[3],
                          capacity_per_day=None if r[4] is None else int(r[4]), active=bool(r[5])) for r in rows}
    days = sorted(set(days))
    if not days or not owners:
        return list(owners.values())
    events = _assignment_events_sql(con)
    start = days[0]
    for oid, last in con.execute(
            f"SELECT owner_id, max(event_at) FROM ({events}) WHERE event_at < ?::TIMESTAMP GROUP BY 1",
            [start]).fetchall():
        if oid in owners:
            owners[oid].last_assigned_at = last
    placeholders = ", ".join("?::DATE" for _ in days)
    for oid, d, n in con.execute(
            f"SELECT owner_id, event_at::DATE, count(DISTINCT kind || ':' || record_id) FROM ({events}) "
            f"WHERE is_open AND event_at::DATE IN ({placeholders}) GROUP BY 1, 2", days).fetchall():
        if oid in owners:
            owners[oid].load[d] = int(n)
    return list(owners.values())


def _assignment_events_sql(con) -> str:
    parts = ["SELECT kind, record_id, owner_id, record_created_at AS event_at, true AS is_open "
             "FROM ops.routing_assignments WHERE record_created_at IS NOT NULL"]
    if table_exists(con, "clean", "opportunity"):
        parts.append("SELECT 'opportunity', opportunity_id, owner_id, created_at, "
                     "coalesce(stage NOT IN ('closed_won', 'closed_lost'), true) "
                     "FROM clean.opportunity WHERE owner_id IS NOT NULL AND created_at IS NOT NULL")
    if table_exists(con, "clean", "lead"):
        parts.append("SELECT 'lead', lead_id, owner_id, assigned_at, coalesce(status IN ('new', 'working'), true) "
                     "FROM clean.lead WHERE owner_id IS NOT NULL AND assigned_at IS NOT NULL")
    return " UNION ".join(parts)


def route_in_warehouse(con: duckdb.DuckDBPyConnection, records: Sequence[Record], rules: RuleSet,
                       seed: int = 0) -> RoutingResult:
    """`route` with owners and their state read from the warehouse for the records' days."""
    owners = load_owners(con, {r.day for r in records})
    return route(records, rules, owners, seed)


def record_assignments(con: duckdb.DuckDBPyConnection, result: RoutingResult, seed: int,
                       now: datetime | None = None) -> None:
    """Append the engine's assignments to ``ops.routing_assignments`` (what the CRM write-back would use)."""
    ensure_routing_tables(con)
    now = now or utcnow()
    rows = [(uuid.uuid4().hex[:16], a.kind, a.record_id, a.owner_id, a.rule, a.rule_set, a.tie_break, a.random_uuid,
             a.day, a.created_at, now, a.latency_ms, seed, a.source) for a in result.assignments]
    if rows:
        con.executemany("INSERT INTO ops.routing_assignments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def dlq_id(kind: str, record_id: str) -> str:
    return "DLQ-" + hashlib.sha256(f"{kind}|{record_id}".encode()).hexdigest()[:10]


def dead_letter(con: duckdb.DuckDBPyConnection, unrouted: Iterable[Unrouted], rule_set: str,
                now: datetime | None = None) -> list[str]:
    """Put unroutable records on the DLQ (one open entry per record; a repeat counts another attempt)."""
    ensure_routing_tables(con)
    now = now or utcnow()
    ids = []
    for u in unrouted:
        r = u.record
        i = dlq_id(r.kind, r.record_id)
        ids.append(i)
        if con.execute("SELECT count(*) FROM ops.routing_dlq WHERE dlq_id = ? AND status = ?",
                       [i, DLQ_OPEN]).fetchall()[0][0]:
            con.execute("UPDATE ops.routing_dlq SET attempts = attempts + 1, reason = ?, rule_set = ?, "
                        "last_attempt_at = ?, record = ? WHERE dlq_id = ? AND status = ?",
                        [u.reason, rule_set, now, r.to_json(), i, DLQ_OPEN])
        else:
            con.execute("DELETE FROM ops.routing_dlq WHERE dlq_id = ?", [i])  # an earlier, replayed entry
            con.execute("INSERT INTO ops.routing_dlq VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                        [i, r.kind, r.record_id, r.to_json(), u.reason, DLQ_OPEN, rule_set, r.source, now, now])
    return ids


def dlq_entries(con: duckdb.DuckDBPyConnection, status: str | None = None, kind: str | None = None):
    """The DLQ as a DataFrame (newest first)."""
    ensure_routing_tables(con)
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if kind:
        where.append("kind = ?")
        params.append(kind)
    sql = ("SELECT dlq_id, kind, record_id, status, attempts, reason, rule_set, source, first_failed_at, "
           "last_attempt_at, replayed_at, owner_id, rule FROM ops.routing_dlq"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY last_attempt_at DESC, dlq_id")
    return con.execute(sql, params).df()


@dataclass
class ReplayReport:
    rule_set: str
    replayed: list[tuple[str, Assignment]] = field(default_factory=list)   # (dlq_id, assignment)
    still_unrouted: list[tuple[str, str]] = field(default_factory=list)   # (dlq_id, reason)


def replay_dlq(con: duckdb.DuckDBPyConnection, rules: RuleSet, seed: int = 0, kind: str | None = None,
               ids: Sequence[str] | None = None, now: datetime | None = None) -> ReplayReport:
    """Re-route the open DLQ entries (after a fix: new rules, more capacity); routed ones are marked replayed.

    Their assignments go to ``ops.routing_assignments``; entries that still fail get another attempt and the new
    reason. Records that came from quarantine (``source`` "quarantine:<id>") are returned so the caller can turn
    them into repairs (see ``gtm_pipeline.quarantine.repair.repair_from_replay``).
    """
    ensure_routing_tables(con)
    now = now or utcnow()
    where, params = ["status = ?"], [DLQ_OPEN]
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if ids:
        where.append(f"dlq_id IN ({', '.join('?' for _ in ids)})")
        params.extend(ids)
    entries = con.execute(f"SELECT dlq_id, record FROM ops.routing_dlq WHERE {' AND '.join(where)} "
                          f"ORDER BY first_failed_at, dlq_id", params).fetchall()
    report = ReplayReport(rule_set=rules.label)
    if not entries:
        return report
    records = {Record.from_json(rec).record_id: (i, Record.from_json(rec)) for i, rec in entries}
    result = route_in_warehouse(con, [r for _, r in records.values()], rules, seed)
    record_assignments(con, result, seed, now)
    for a in result.assignments:
        i = records[a.record_id][0]
        con.execute("UPDATE ops.routing_dlq SET status = ?, replayed_at = ?, last_attempt_at = ?, "
                    "attempts = attempts + 1, owner_id = ?, rule = ?, rule_set = ? WHERE dlq_id = ?",
                    [DLQ_REPLAYED, now, now, a.owner_id, a.rule, rules.label, i])
        report.replayed.append((i, a))
    for u in result.unrouted:
        i = records[u.record.record_id][0]
        con.execute("UPDATE ops.routing_dlq SET attempts = attempts + 1, last_attempt_at = ?, reason = ?, "
                    "rule_set = ? WHERE dlq_id = ?", [now, u.reason, rules.label, i])
        report.still_unrouted.append((i, u.reason))
    return report


def unassigned_leads(con: duckdb.DuckDBPyConnection, days: Sequence[str]) -> list[Record]:
    """Leads of the given delivery days that have no owner, are still workable, and are not routed or queued yet."""
    ensure_routing_tables(con)
    if not table_exists(con, "clean", "lead") or not days:
        return []
    placeholders = ", ".join("?::DATE" for _ in days)
    # The ICP audience filter in force (an applied icp.update) decides which leads sales may be routed.
    schema, view = keys.LEAD_ICP_VIEW.split(".")
    audience = (f"AND NOT EXISTS (SELECT 1 FROM {keys.LEAD_ICP_VIEW} i WHERE i.lead_id = l.lead_id "
                f"AND NOT i.routing_eligible)" if table_exists(con, schema, view) else "")
    rows = con.execute(f"""
        SELECT l.lead_id, l.segment, l.region, l.industry, l.size_band, l.channel, l.created_at, l._partition
        FROM clean.lead l
        WHERE l._partition IN ({placeholders}) AND l.owner_id IS NULL {audience}
          AND coalesce(l.status, 'new') IN ('new', 'working', 'sql')
          AND NOT EXISTS (SELECT 1 FROM ops.routing_assignments a WHERE a.kind = 'lead' AND a.record_id = l.lead_id)
          AND NOT EXISTS (SELECT 1 FROM ops.routing_dlq q WHERE q.kind = 'lead' AND q.record_id = l.lead_id
                          AND q.status = 'open')
        ORDER BY l.created_at, l.lead_id""", list(days)).fetchall()
    return [Record(record_id=r[0], kind="lead", attrs=dict(zip(CONDITION_FIELDS, r[1:6])),
                   day=(r[6].date() if r[6] else r[7]), created_at=r[6], source=f"clean.lead:{r[7]}")
            for r in rows]


def records_from_clean(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> list[Record]:
    """Every lead or opportunity delivered on ``days`` as a routing record (e.g. to shadow-compare rule sets)."""
    table, key = {"lead": ("lead", "lead_id"), "opportunity": ("opportunity", "opportunity_id")}[kind]
    if not table_exists(con, "clean", table) or not days:
        return []
    placeholders = ", ".join("?::DATE" for _ in days)
    rows = con.execute(f"SELECT {key}, segment, region, industry, size_band, channel, created_at, _partition "
                       f"FROM clean.{table} WHERE _partition IN ({placeholders}) ORDER BY created_at, {key}",
                       list(days)).fetchall()
    return [Record(record_id=r[0], kind=kind, attrs=dict(zip(CONDITION_FIELDS, r[1:6])),
                   day=(r[6].date() if r[6] else r[7]), created_at=r[6]) for r in rows]


def route_leads(con: duckdb.DuckDBPyConnection, rules: RuleSet, days: Sequence[str], seed: int = 0) -> RoutingResult:
    """Route the unassigned leads of ``days``: assignments to ``ops.routing_assignments``, failures to the DLQ."""
    records = unassigned_leads(con, days)
    result = route_in_warehouse(con, records, rules, seed) if records else RoutingResult()
    with transaction(con):
        record_assignments(con, result, seed)
        dead_letter(con, result.unrouted, rules.label)
    return result
