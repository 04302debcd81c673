"""DuckDB layout shared by every stage: one schema per stage plus the operational tables.

`ops.incidents`, `ops.notifications` and `ops.publications` are written by contracts, metrics and SLO code alike,
so their DDL and the small helpers that write them live here, once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import duckdb

from gtm_pipeline.clock import utcnow as utcnow  # re-exported: the one clock, for modules that write here
from gtm_pipeline.errors import GtmPipelineError

SCHEMAS = ("raw", "clean", "quarantine", "metrics", "decisions", "ops")

_DDL = [
    *(f"CREATE SCHEMA IF NOT EXISTS {s}" for s in SCHEMAS),
    """CREATE TABLE IF NOT EXISTS raw.rejects (
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT, _partition DATE,
        stage VARCHAR, rule VARCHAR, reason VARCHAR, raw_text VARCHAR, _ingested_at TIMESTAMP)""",
    # The exact bytes of a rejected landing line (raw_text shows them, undecodable bytes as \xNN); NULL for a file
    # rejected whole and for clean-stage rejects (their raw values are in raw_text). Added to tables created before.
    "ALTER TABLE raw.rejects ADD COLUMN IF NOT EXISTS raw_bytes BLOB",
    # Every file found in a source's delivery-day folder, read or not: what the conservation ledger starts from.
    # status: read (its records are raw rows or rejected lines), rejected (rejected whole: reason), or unclaimed
    # (no table reads it: reason, and hint = the closest table). records: NULL when lines cannot be attributed.
    """CREATE TABLE IF NOT EXISTS raw.landing_files (
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _partition DATE, bytes BIGINT, records BIGINT,
        status VARCHAR, reason VARCHAR, hint VARCHAR, _ingested_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS raw.schema_drift (
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _partition DATE,
        missing_columns VARCHAR[], unexpected_columns VARCHAR[], renamed VARCHAR[], detected_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS ops.incidents (
        incident_id VARCHAR PRIMARY KEY, opened_at TIMESTAMP, severity VARCHAR, origin VARCHAR,
        asset_key VARCHAR, rule VARCHAR, title VARCHAR, details VARCHAR, owner VARCHAR,
        status VARCHAR, resolved_at TIMESTAMP, dedup_key VARCHAR)""",
    # Grouped incidents (gtm_pipeline/ops/incidents.py): one incident per cause, with how often and where it was seen,
    # who acknowledged it, and who or what resolved it with which evidence. Added to tables created before.
    *(f"ALTER TABLE ops.incidents ADD COLUMN IF NOT EXISTS {c}" for c in (
        "entity VARCHAR", "occurrences BIGINT DEFAULT 1", "first_seen_at TIMESTAMP", "last_seen_at TIMESTAMP",
        "first_partition VARCHAR", "last_partition VARCHAR", "partitions VARCHAR[]", "samples VARCHAR",
        "acknowledged_at TIMESTAMP", "acknowledged_by VARCHAR", "resolved_by VARCHAR", "resolution VARCHAR",
        "updated_at TIMESTAMP")),
    # What each partition (delivery day) contributes to a partitioned incident; re-running a day replaces its row,
    # and an incident no partition contributes to any more resolves itself.
    """CREATE TABLE IF NOT EXISTS ops.incident_partitions (
        incident_id VARCHAR, partition_key VARCHAR, occurrences BIGINT, first_seen_at TIMESTAMP,
        last_seen_at TIMESTAMP, run_id VARCHAR, samples VARCHAR, details VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.notifications (
        sent_at TIMESTAMP, recipient VARCHAR, channel VARCHAR, subject VARCHAR, body VARCHAR,
        asset_key VARCHAR, incident_id VARCHAR)""",
    # Delivery state of each notification (gtm_pipeline/ops/notifications.py): pending until every configured target
    # accepted it; each attempt is counted with its last error and the time of the next try.
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS notification_id VARCHAR",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS status VARCHAR DEFAULT 'pending'",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS attempts INTEGER DEFAULT 0",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS last_error VARCHAR",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS last_attempt_at TIMESTAMP",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS next_attempt_at TIMESTAMP",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS delivered_at TIMESTAMP",
    "ALTER TABLE ops.notifications ADD COLUMN IF NOT EXISTS sent_to VARCHAR[] DEFAULT []",
    """CREATE TABLE IF NOT EXISTS ops.publications (
        asset_key VARCHAR, partition_key VARCHAR, published_at TIMESTAMP, row_count BIGINT,
        version VARCHAR, run_id VARCHAR)""",
    # Data time (docs/design.md §6): how far a published version's inputs are complete, and the blocked input partitions
    # that stopped it. Added to tables created before data time existed.
    "ALTER TABLE ops.publications ADD COLUMN IF NOT EXISTS data_time TIMESTAMP",
    "ALTER TABLE ops.publications ADD COLUMN IF NOT EXISTS blocked_inputs VARCHAR[]",
    # The current state of every day partition of the raw and clean stages: published (with its data time: the
    # delivery's cut-off) or blocked (its publication refused; the table keeps that day's previous rows).
    """CREATE TABLE IF NOT EXISTS ops.partition_status (
        asset_key VARCHAR, partition_key DATE, status VARCHAR, data_time TIMESTAMP, updated_at TIMESTAMP,
        run_id VARCHAR, PRIMARY KEY (asset_key, partition_key))""",
]


def ensure_base(con: duckdb.DuckDBPyConnection) -> None:
    for stmt in _DDL:
        con.execute(stmt)


# An acknowledged incident is still open: it dedups, gates decisions and resolves like an open one.
OPEN_STATUSES = ("open", "acknowledged")
OPEN_SQL = "status IN ('open', 'acknowledged')"
AUTO_RESOLVER = "auto: condition cleared"


def open_incident(con: duckdb.DuckDBPyConnection, *, severity: str, origin: str, asset_key: str, rule: str,
                  title: str, details: dict, owner: str, dedup_key: str, incident_id: str | None = None,
                  opened_at: datetime | None = None, entity: str | None = None,
                  partition_key: str | None = None) -> tuple[str, bool]:
    """Open an incident unless one with the same dedup key is still open. Returns (incident_id, newly_opened).

    Seeing the cause again while it is open counts one more occurrence on the open incident (and moves its last
    seen time and partition) instead of opening another. ``incident_id``/``opened_at`` let a caller that decided
    earlier (the SLO sensor, which may have to wait for the write lock) record its own id and the time of the
    decision; they default to a fresh id and now."""
    now = opened_at or utcnow()
    row = con.execute(f"SELECT incident_id FROM ops.incidents WHERE dedup_key = ? AND {OPEN_SQL}",
                      [dedup_key]).fetchone()
    if row:
        con.execute("UPDATE ops.incidents SET occurrences = coalesce(occurrences, 1) + 1, last_seen_at = ?, "
                    "last_partition = coalesce(?, last_partition), updated_at = ? WHERE incident_id = ?",
                    [now, partition_key, now, row[0]])
        return row[0], False
    # The count of earlier incidents with this key keeps ids distinct when a cause reopens at the same instant
    # (a fixed GTM_PIPELINE_NOW clock).
    prior = scalar(con, "SELECT count(*) FROM ops.incidents WHERE dedup_key = ?", [dedup_key])
    incident_id = incident_id or "INC-" + hashlib.sha256(
        f"{dedup_key}|{now.isoformat()}|{prior}".encode()).hexdigest()[:10]
    con.execute("INSERT INTO ops.incidents (incident_id, opened_at, severity, origin, asset_key, rule, title, "
                "details, owner, status, resolved_at, dedup_key, entity, occurrences, first_seen_at, last_seen_at, "
                "first_partition, last_partition, partitions, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                [incident_id, now, severity, origin, asset_key, rule, title, json.dumps(details, default=str),
                 owner, dedup_key, entity, now, now, partition_key, partition_key,
                 [partition_key] if partition_key else [], now])
    return incident_id, True


def resolve_incidents(con: duckdb.DuckDBPyConnection, dedup_key_prefix: str,
                      resolved_at: datetime | None = None, *, by: str = AUTO_RESOLVER,
                      evidence: str | None = None) -> int:
    """Resolve the open (or acknowledged) incidents whose dedup key starts with ``dedup_key_prefix``, recording who
    or what resolved them and the evidence; returns how many."""
    n = scalar(con, f"SELECT count(*) FROM ops.incidents WHERE {OPEN_SQL} AND starts_with(dedup_key, ?)",
                    [dedup_key_prefix])
    at = resolved_at or utcnow()
    con.execute(f"UPDATE ops.incidents SET status = 'resolved', resolved_at = ?, resolved_by = ?, "
                f"resolution = ?, updated_at = ? WHERE {OPEN_SQL} AND starts_with(dedup_key, ?)",
                [at, by, evidence or f"the condition behind {dedup_key_prefix} cleared", at, dedup_key_prefix])
    return int(n)


def notify_owner(con: duckdb.DuckDBPyConnection, *, owner: str, subject: str, body: str, asset_key: str,
                 incident_id: str | None = None, channel: str = "owner") -> str:
    """Queue a notification to an owner (in the writer's transaction, so it exists exactly when its cause does).
    Returns its id. The SLO sensor (or `gtm-pipeline notifications deliver`) delivers it to the configured webhooks
    and records every attempt; a failing receiver never blocks the pipeline."""
    now = utcnow()
    nid = "NTF-" + hashlib.sha256(f"{owner}|{subject}|{asset_key}|{incident_id}|{now.isoformat()}|"
                                  f"{scalar(con, 'SELECT count(*) FROM ops.notifications')}"
                                  .encode()).hexdigest()[:12]
    con.execute("INSERT INTO ops.notifications (sent_at, recipient, channel, subject, body, asset_key, incident_id, "
                "notification_id, status, attempts, next_attempt_at, sent_to) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, [])",
                [now, owner, channel, subject, body, asset_key, incident_id, nid, now])
    return nid


def record_publication(con: duckdb.DuckDBPyConnection, *, asset_key: str, partition_key: str | None,
                       row_count: int, version: str, run_id: str | None, published_at: datetime | None = None,
                       data_time: datetime | None = None, blocked_inputs: list[str] | None = None) -> None:
    """A version of an asset became visible to its readers at ``published_at``, complete through ``data_time``
    (what freshness measures: age = now - data time of the version in force)."""
    con.execute("INSERT INTO ops.publications (asset_key, partition_key, published_at, row_count, version, run_id, "
                "data_time, blocked_inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [asset_key, partition_key, published_at or utcnow(), row_count, version, run_id, data_time,
                 list(blocked_inputs or [])])


def one_row(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple[Any, ...]:
    """The row of a query that returns exactly one (an aggregate without GROUP BY, a row just written).

    Read with fetchall, not fetchone: a result left half-read blocks a later ``con.register`` in DuckDB 2.0."""
    rows = con.execute(sql, params).fetchall()
    if len(rows) != 1:
        raise GtmPipelineError(f"expected one row, got {len(rows)}, from: {sql}")
    return rows[0]


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> Any:
    """The one value of a query that returns one row of one column, e.g. ``SELECT count(*) FROM t``."""
    return one_row(con, sql, params)[0]


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return table in existing_tables(con, schema)


def existing_tables(con: duckdb.DuckDBPyConnection, schema: str) -> set[str]:
    """Names of the tables (and views) of ``schema``: the one place that asks the catalog."""
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                                      [schema]).fetchall()}


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All writes inside happen together or not at all (a kill -9 mid-way leaves the previous state)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
