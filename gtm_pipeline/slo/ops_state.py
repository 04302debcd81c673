"""The warehouse's operational state, for the exporter: blocked publications, open incidents, quarantined rows,
rejected lines and landing files not read.

The exporter promises to answer while a pipeline run holds DuckDB's write lock, and DuckDB's file lock keeps even a
read-only opener out while a writer holds it. So these figures are a *snapshot*: read on a short read-only
connection whenever the file is free -- by the exporter at a scrape (at most every ``min_interval``) and by the SLO
sensor on each tick (it opens the warehouse anyway) -- and stored in the SLO history (SQLite), from which the
exporter serves it while the warehouse is locked. The snapshot's time is exported as well, so stale figures are
visible (and alerted on: ``GtmOpsStateStale``) rather than silently old.

A read lasts milliseconds. A run that wants the write lock meanwhile does not fail: the pipeline's warehouse
resource (dagster-duckdb's ``DuckDBResource``) retries its connection on a lock conflict with backoff.

What is read (docs/slo.md, "Operational series"):
- blocked publications: every (asset, day) whose current status in ``ops.partition_status`` is ``blocked`` (the
  table has one row per asset and day, so a day re-run and published is no longer there);
- open incidents: every incident of ``ops.incidents`` that is open or acknowledged (both gate the decisions);
- quarantined rows: rows of the quarantine tables still out of the clean tables (open, held, repaired, released),
  per entity, table and status; applied and rejected rows are done;
- rejected lines: lines of ``raw.rejects`` per source, table and stage (files rejected whole are not lines);
- landing files not read: every file of ``raw.landing_files`` that was rejected whole (0 bytes, unreadable) or that
  no table reads (unclaimed, with the closest table as a hint). Re-ingesting the day with the file fixed or renamed
  (or removed) drops it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from gtm_pipeline.clock import now_epoch, to_epoch
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.quarantine.overlay import QUARANTINED_SQL
from gtm_pipeline.quarantine.snapshot import read_when_free
from gtm_pipeline.slo.history import History
from gtm_pipeline.warehouse import OPEN_SQL, table_exists

SNAPSHOT_KEY = "ops_snapshot"


class WarehouseUnavailable(GtmPipelineError):
    """The warehouse could not be read now (locked by a run, or not created yet); the last snapshot stays."""


@dataclass(frozen=True)
class OpsSnapshot:
    at: float                      # epoch seconds at which the warehouse was read
    blocked: tuple[dict, ...]      # {asset, partition, since}
    incidents: tuple[dict, ...]    # {incident_id, sev, origin, rule, owner, asset, opened_at}
    quarantine: tuple[dict, ...]   # {entity, table, status, rows}
    rejects: tuple[dict, ...] = ()         # {source, table, stage, lines}
    files_not_read: tuple[dict, ...] = ()  # {source, partition, file, table, status, hint}

    def as_dict(self) -> dict:
        return {"at": self.at, "blocked": list(self.blocked), "incidents": list(self.incidents),
                "quarantine": list(self.quarantine), "rejects": list(self.rejects),
                "files_not_read": list(self.files_not_read)}

    @classmethod
    def from_dict(cls, d: dict) -> OpsSnapshot:
        # Snapshots stored before rejects and files were read have neither: served as none.
        return cls(at=float(d["at"]), blocked=tuple(d.get("blocked", ())), incidents=tuple(d.get("incidents", ())),
                   quarantine=tuple(d.get("quarantine", ())), rejects=tuple(d.get("rejects", ())),
                   files_not_read=tuple(d.get("files_not_read", ())))


def _epoch(v) -> float | None:
    return None if v is None else to_epoch(v)


def _quarantine_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Tables of schema quarantine shaped like a quarantine table (entity and status columns), not the audit."""
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'quarantine' "
        "AND column_name IN ('entity', 'status') GROUP BY 1 HAVING count(*) = 2 ORDER BY 1").fetchall()]


def read(con: duckdb.DuckDBPyConnection, now: float) -> OpsSnapshot:
    """The figures on an open connection; tables that do not exist yet count as empty."""
    blocked: list[dict] = []
    if table_exists(con, "ops", "partition_status"):
        blocked = [{"asset": a, "partition": p, "since": _epoch(u)} for a, p, u in con.execute(
            "SELECT asset_key, strftime(partition_key, '%Y-%m-%d'), updated_at FROM ops.partition_status "
            "WHERE status = 'blocked' ORDER BY 1, 2").fetchall()]
    incidents: list[dict] = []
    if table_exists(con, "ops", "incidents"):
        incidents = [{"incident_id": i, "sev": s, "origin": o or "", "rule": r or "", "owner": w or "",
                      "asset": a or "", "opened_at": _epoch(t)} for i, s, o, r, w, a, t in con.execute(
            f"SELECT incident_id, severity, origin, rule, owner, asset_key, opened_at FROM ops.incidents "
            f"WHERE {OPEN_SQL} ORDER BY severity, incident_id").fetchall()]
    quarantine: list[dict] = []
    for t in _quarantine_tables(con):
        quarantine += [{"entity": e or "", "table": t, "status": s, "rows": int(n)} for e, s, n in con.execute(
            f'SELECT entity, status, count(*) FROM quarantine."{t}" WHERE status IN {QUARANTINED_SQL} '
            f"GROUP BY ALL ORDER BY 1, 2").fetchall()]
    rejects: list[dict] = []
    if table_exists(con, "raw", "rejects"):
        rejects = [{"source": s or "", "table": t or "", "stage": st or "", "lines": int(n)} for s, t, st, n in
                   con.execute("SELECT _source, _table, stage, count(*) FROM raw.rejects WHERE _line IS NOT NULL "
                               "GROUP BY ALL ORDER BY 1, 2, 3").fetchall()]
    files: list[dict] = []
    if table_exists(con, "raw", "landing_files"):
        files = [{"source": s, "partition": p, "file": f, "table": t or "", "status": st, "hint": h or ""}
                 for s, p, f, t, st, h in con.execute(
                     "SELECT _source, strftime(_partition, '%Y-%m-%d'), _file, _table, status, hint "
                     "FROM raw.landing_files WHERE status <> 'read' ORDER BY 2, 3").fetchall()]
    return OpsSnapshot(at=now, blocked=tuple(blocked), incidents=tuple(incidents), quarantine=tuple(quarantine),
                       rejects=tuple(rejects), files_not_read=tuple(files))


def read_file(database: str | Path, now: float | None = None) -> OpsSnapshot:
    """``read`` on a short read-only connection; raises WarehouseUnavailable while a run holds the write lock."""
    return read_when_free(database, lambda con: read(con, now_epoch() if now is None else now),
                          error=WarehouseUnavailable,
                          missing=f"the warehouse {database} does not exist yet; run the pipeline once "
                                  f"(gtm-pipeline run) or point GTM_PIPELINE_DUCKDB at it")


def refresh(database: str | Path, history: History, now: float | None = None) -> OpsSnapshot:
    """Read the warehouse and store the snapshot in the history (unless a later one is there already)."""
    snap = read_file(database, now)
    history.put_snapshot(SNAPSHOT_KEY, snap.at, snap.as_dict())
    return snap


def stored(history: History) -> OpsSnapshot | None:
    d = history.snapshot(SNAPSHOT_KEY)
    return OpsSnapshot.from_dict(d) if d else None
