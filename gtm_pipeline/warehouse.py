"""DuckDB layout shared by every stage: one schema per stage plus the operational tables.

`ops.incidents`, `ops.notifications` and `ops.publications` are written by contracts, metrics and SLO code alike,
so their DDL and the small helpers that write them live here, once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import duckdb

from gtm_pipeline.clock import utcnow as utcnow  # re-exported: the one clock, for modules that write here

SCHEMAS = ("raw", "clean", "quarantine", "metrics", "decisions", "ops")

_DDL = [
    *(f"CREATE SCHEMA IF NOT EXISTS {s}" for s in SCHEMAS),
    """CREATE TABLE IF NOT EXISTS raw.rejects (
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT, _partition DATE,
        stage VARCHAR, rule VARCHAR, reason VARCHAR, raw_text VARCHAR, _ingested_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS raw.schema_drift (
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _partition DATE,
        missing_columns VARCHAR[], unexpected_columns VARCHAR[], renamed VARCHAR[], detected_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS ops.incidents (
        incident_id VARCHAR PRIMARY KEY, opened_at TIMESTAMP, severity VARCHAR, origin VARCHAR,
        asset_key VARCHAR, rule VARCHAR, title VARCHAR, details VARCHAR, owner VARCHAR,
        status VARCHAR, resolved_at TIMESTAMP, dedup_key VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.notifications (
        sent_at TIMESTAMP, recipient VARCHAR, channel VARCHAR, subject VARCHAR, body VARCHAR,
        asset_key VARCHAR, incident_id VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.publications (
        asset_key VARCHAR, partition_key VARCHAR, published_at TIMESTAMP, row_count BIGINT,
        version VARCHAR, run_id VARCHAR)""",
    # Data time (DESIGN §6): how far a published version's inputs are complete, and the blocked input partitions
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


def open_incident(con: duckdb.DuckDBPyConnection, *, severity: str, origin: str, asset_key: str, rule: str,
                  title: str, details: dict, owner: str, dedup_key: str, incident_id: str | None = None,
                  opened_at: datetime | None = None) -> tuple[str, bool]:
    """Open an incident unless one with the same dedup key is still open. Returns (incident_id, newly_opened).

    ``incident_id``/``opened_at`` let a caller that decided earlier (the SLO sensor, which may have to wait for the
    write lock) record its own id and the time of the decision; they default to a fresh id and now."""
    row = con.execute("SELECT incident_id FROM ops.incidents WHERE dedup_key = ? AND status = 'open'",
                      [dedup_key]).fetchone()
    if row:
        return row[0], False
    now = opened_at or utcnow()
    incident_id = incident_id or "INC-" + hashlib.sha256(f"{dedup_key}|{now.isoformat()}".encode()).hexdigest()[:10]
    con.execute("INSERT INTO ops.incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', NULL, ?)",
                [incident_id, now, severity, origin, asset_key, rule, title, json.dumps(details, default=str),
                 owner, dedup_key])
    return incident_id, True


def resolve_incidents(con: duckdb.DuckDBPyConnection, dedup_key_prefix: str,
                      resolved_at: datetime | None = None) -> int:
    n = con.execute("SELECT count(*) FROM ops.incidents WHERE status = 'open' AND starts_with(dedup_key, ?)",
                    [dedup_key_prefix]).fetchone()[0]
    con.execute("UPDATE ops.incidents SET status = 'resolved', resolved_at = ? "
                "WHERE status = 'open' AND starts_with(dedup_key, ?)", [resolved_at or utcnow(), dedup_key_prefix])
    return int(n)


def notify_owner(con: duckdb.DuckDBPyConnection, *, owner: str, subject: str, body: str, asset_key: str,
                 incident_id: str | None = None, channel: str = "owner") -> None:
    """Record a notification to an owner. Delivery to a webhook is done by the alerting sensor from this table."""
    con.execute("INSERT INTO ops.notifications VALUES (?, ?, ?, ?, ?, ?, ?)",
                [utcnow(), owner, channel, subject, body, asset_key, incident_id])


def record_publication(con: duckdb.DuckDBPyConnection, *, asset_key: str, partition_key: str | None,
                       row_count: int, version: str, run_id: str | None, published_at: datetime | None = None,
                       data_time: datetime | None = None, blocked_inputs: list[str] | None = None) -> None:
    """A version of an asset became visible to its readers at ``published_at``, complete through ``data_time``
    (what freshness measures: age = now - data time of the version in force)."""
    con.execute("INSERT INTO ops.publications (asset_key, partition_key, published_at, row_count, version, run_id, "
                "data_time, blocked_inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [asset_key, partition_key, published_at or utcnow(), row_count, version, run_id, data_time,
                 list(blocked_inputs or [])])


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                            [schema, table]).fetchone()[0])
