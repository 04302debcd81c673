"""The SLO history: a small SQLite file (``GTM_PIPELINE_SLO_HISTORY``, default ``data/slo/history.sqlite``).

It survives restarts of every process and is deliberately not the DuckDB warehouse, so the sensor, the exporter and
`slo report` never wait for a pipeline run's write lock. It holds
- ``publications``: the version timeline of every covered asset (publication time, data time, blocked inputs),
  copied incrementally from Dagster's event log (so the SLO window outlives event-log purges and instance moves);
  the SLI is computed from it;
- ``blocked``: materializations whose publish was blocked (``published: false``), for the report;
- ``observed``: the stretches of time in which something evaluated live, to tell observed from reconstructed time;
- ``alert_state`` and ``outbox``: the alert level of each SLO and every state change not yet fully delivered
  (incident row in DuckDB, generic webhook, Slack webhook), so a change is neither lost nor sent twice;
- ``meta``: small named values, among them the last snapshot of the warehouse's operational figures
  (`gtm_pipeline.slo.ops_state`), which the exporter serves while a run holds DuckDB's write lock.
Times are epoch seconds (UTC).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gtm_pipeline.slo.sli import Version, versions_of

_DDL = """
CREATE TABLE IF NOT EXISTS publications (
    asset_key TEXT NOT NULL, published_at REAL NOT NULL, materialized_at REAL, run_id TEXT NOT NULL DEFAULT '',
    storage_id INTEGER, data_time REAL, blocking TEXT, PRIMARY KEY (asset_key, published_at, run_id));
CREATE TABLE IF NOT EXISTS blocked (
    asset_key TEXT NOT NULL, materialized_at REAL NOT NULL, run_id TEXT NOT NULL DEFAULT '', storage_id INTEGER,
    PRIMARY KEY (asset_key, materialized_at, run_id));
CREATE TABLE IF NOT EXISTS sync_cursor (asset_key TEXT PRIMARY KEY, storage_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS observed (start REAL NOT NULL, end REAL NOT NULL);
CREATE INDEX IF NOT EXISTS observed_end ON observed (end);
CREATE TABLE IF NOT EXISTS alert_state (
    slo TEXT PRIMARY KEY, level TEXT NOT NULL, since REAL NOT NULL, lower_level TEXT, lower_since REAL,
    incident_id TEXT);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL, slo TEXT NOT NULL, created_at REAL NOT NULL,
    from_level TEXT NOT NULL, to_level TEXT NOT NULL, payload TEXT NOT NULL,
    incident_done INTEGER NOT NULL DEFAULT 0, webhook_done INTEGER NOT NULL DEFAULT 0,
    slack_done INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

TARGETS = ("incident", "webhook", "slack")


@dataclass(frozen=True)
class AlertState:
    slo: str
    level: str                 # ok | ticket | page
    since: float
    lower_level: str | None    # a lower level seen since lower_since (hysteresis before stepping down)
    lower_since: float | None
    incident_id: str | None


@dataclass(frozen=True)
class OutboxItem:
    seq: int
    event_id: str
    slo: str
    created_at: float
    from_level: str
    to_level: str
    payload: dict
    done: dict[str, bool]
    attempts: int
    last_error: str | None


class History:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit; multi-statement changes use `transaction()` (BEGIN IMMEDIATE) so that the sensor, the
        # exporter and the CLI can share the file. WAL lets readers proceed while one writes.
        self._con = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA busy_timeout=30000")
        self._con.executescript(_DDL)
        cols = {r[1] for r in self._con.execute("PRAGMA table_info(publications)").fetchall()}
        for col, ctype in (("data_time", "REAL"), ("blocking", "TEXT")):  # files written before data time existed
            if col not in cols:
                self._con.execute(f"ALTER TABLE publications ADD COLUMN {col} {ctype}")

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- publication timeline ---------------------------------------------------------------------------------
    def cursor(self, asset_key: str) -> int:
        row = self._con.execute("SELECT storage_id FROM sync_cursor WHERE asset_key = ?", [asset_key]).fetchone()
        return int(row[0]) if row else 0

    def add_events(self, asset_key: str, published: Iterable[tuple], blocked: Iterable[tuple[float, str, int]],
                   cursor: int) -> int:
        """Store published (published_at, materialized_at, run_id, storage_id[, data_time[, blocking]]) and blocked
        (materialized_at, run_id, storage_id) rows and advance the cursor, atomically. Idempotent: a row seen twice
        is stored once. A version without a data time is as old as its publication."""
        rows = []
        for p in published:
            data_time = p[4] if len(p) > 4 and p[4] is not None else p[0]
            blocking = json.dumps(list(p[5])) if len(p) > 5 and p[5] else None
            rows.append((asset_key, p[0], p[1], p[2] or "", p[3], data_time, blocking))
        with self.transaction() as con:
            before = con.total_changes
            con.executemany("INSERT OR IGNORE INTO publications (asset_key, published_at, materialized_at, run_id, "
                            "storage_id, data_time, blocking) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            con.executemany("INSERT OR IGNORE INTO blocked VALUES (?, ?, ?, ?)",
                            [(asset_key, m, r or "", s) for m, r, s in blocked])
            added = con.total_changes - before
            con.execute("INSERT INTO sync_cursor VALUES (?, ?) ON CONFLICT (asset_key) DO UPDATE SET "
                        "storage_id = excluded.storage_id", [asset_key, cursor])
        return added

    def publications(self, asset_key: str, since: float | None = None) -> list[float]:
        """Ascending publication times; with ``since``, those after it plus the one in force at ``since``."""
        if since is None:
            rows = self._con.execute("SELECT published_at FROM publications WHERE asset_key = ? ORDER BY 1",
                                     [asset_key]).fetchall()
        else:
            rows = self._con.execute(
                "SELECT published_at FROM publications WHERE asset_key = ? AND published_at >= ? UNION "
                "SELECT max(published_at) FROM publications WHERE asset_key = ? AND published_at < ? ORDER BY 1",
                [asset_key, since, asset_key, since]).fetchall()
        return [r[0] for r in rows if r[0] is not None]

    def versions(self, asset_key: str, since: float | None = None) -> list[Version]:
        """Ascending versions; with ``since``, those published after it plus the one in force at ``since``."""
        sql = ("SELECT published_at, coalesce(data_time, published_at), blocking FROM publications "
               "WHERE asset_key = ?")
        args: list = [asset_key]
        if since is not None:
            sql += (" AND published_at >= (SELECT coalesce(max(published_at), ?) FROM publications "
                    "WHERE asset_key = ? AND published_at < ?)")
            args += [since, asset_key, since]
        rows = self._con.execute(sql + " ORDER BY published_at, storage_id", args).fetchall()
        return versions_of(Version(p, d, tuple(json.loads(b)) if b else ()) for p, d, b in rows)

    def last_blocked(self, asset_key: str) -> float | None:
        row = self._con.execute("SELECT max(materialized_at) FROM blocked WHERE asset_key = ?", [asset_key]).fetchone()
        return row[0] if row else None

    # -- observed time ----------------------------------------------------------------------------------------
    def record_observation(self, t: float, max_gap: float) -> None:
        """Extend the last observed stretch to ``t`` if it ended at most ``max_gap`` ago, else start a new one."""
        with self.transaction() as con:
            row = con.execute("SELECT rowid, end FROM observed ORDER BY end DESC LIMIT 1").fetchone()
            if row and row[1] <= t <= row[1] + max_gap:
                con.execute("UPDATE observed SET end = ? WHERE rowid = ?", [t, row[0]])
            elif not row or t > row[1]:
                con.execute("INSERT INTO observed VALUES (?, ?)", [t, t])

    def observed_seconds(self, start: float, end: float) -> float:
        row = self._con.execute(
            "SELECT coalesce(sum(min(end, ?) - max(start, ?)), 0) FROM observed WHERE end > ? AND start < ?",
            [end, start, start, end]).fetchone()
        return float(row[0])

    def first_observation(self) -> float | None:
        return self._con.execute("SELECT min(start) FROM observed").fetchone()[0]

    # -- alert state and outbox -------------------------------------------------------------------------------
    def alert_state(self, slo: str) -> AlertState | None:
        row = self._con.execute("SELECT * FROM alert_state WHERE slo = ?", [slo]).fetchone()
        return AlertState(*row) if row else None

    def save_state(self, state: AlertState, change: dict | None = None) -> None:
        """Store the new state and (if the level changed) its outbox entry in one transaction."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO alert_state VALUES (?, ?, ?, ?, ?, ?)",
                        [state.slo, state.level, state.since, state.lower_level, state.lower_since,
                         state.incident_id])
            if change is not None:
                con.execute("INSERT INTO outbox (event_id, slo, created_at, from_level, to_level, payload) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            [change["event_id"], state.slo, change["at"], change["from"], change["to"],
                             json.dumps(change, default=str)])

    def outbox(self, pending_only: bool = True) -> list[OutboxItem]:
        rows = self._con.execute(
            "SELECT seq, event_id, slo, created_at, from_level, to_level, payload, incident_done, webhook_done, "
            "slack_done, attempts, last_error FROM outbox"
            + (" WHERE incident_done = 0 OR webhook_done = 0 OR slack_done = 0" if pending_only else "")
            + " ORDER BY seq").fetchall()
        return [OutboxItem(seq=r[0], event_id=r[1], slo=r[2], created_at=r[3], from_level=r[4], to_level=r[5],
                           payload=json.loads(r[6]), done=dict(zip(TARGETS, (bool(r[7]), bool(r[8]), bool(r[9])))),
                           attempts=r[10], last_error=r[11]) for r in rows]

    def mark_done(self, seq: int, target: str) -> None:
        assert target in TARGETS
        self._con.execute(f"UPDATE outbox SET {target}_done = 1 WHERE seq = ?", [seq])

    def mark_failed(self, seq: int, error: str) -> None:
        self._con.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", [error, seq])

    def meta(self, key: str) -> str | None:
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    def put_snapshot(self, key: str, at: float, payload: dict) -> bool:
        """Store ``payload`` (taken at ``at``) under meta ``key``, unless one taken later is stored already (the
        sensor and the exporter both refresh it; the newer read wins whatever the order of the writes). Returns
        whether it was stored."""
        with self.transaction() as con:
            row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
            if row and float(json.loads(row[0]).get("at", 0)) > at:
                return False
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [key, json.dumps({**payload, "at": at}, default=str)])
        return True

    def snapshot(self, key: str) -> dict | None:
        """The payload stored by ``put_snapshot`` (with its ``at``), or None."""
        value = self.meta(key)
        return json.loads(value) if value else None

    def prune(self, keep_after: float) -> None:
        """Drop what no window can reach any more, keeping each asset's publication in force at ``keep_after``."""
        with self.transaction() as con:
            con.execute("DELETE FROM publications WHERE published_at < ? AND published_at < "
                        "(SELECT max(p2.published_at) FROM publications p2 WHERE p2.asset_key = publications.asset_key "
                        "AND p2.published_at <= ?)", [keep_after, keep_after])
            con.execute("DELETE FROM blocked WHERE materialized_at < ?", [keep_after])
            con.execute("DELETE FROM observed WHERE end < ?", [keep_after])
            con.execute("DELETE FROM outbox WHERE created_at < ? AND incident_done = 1 AND webhook_done = 1 "
                        "AND slack_done = 1", [keep_after])
