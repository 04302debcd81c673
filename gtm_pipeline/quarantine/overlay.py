"""The repair overlay: what the clean stage does with repaired quarantine rows (docs/design.md §7; spec 002 §3).

A quarantine row (``quarantine.<entity>`` or ``quarantine.missing_owner``) moves through these statuses:

    open --repair--> repaired --release--> released --(clean run of its day)--> applied
      ^                 |                     |
      +-- still fails --+                     +--> open again if the current contract rejects it when applied

``held`` (a valid row of a day whose publication is blocked) and ``rejected`` (a released row that turned out to
be a second copy of a key; it sits in ``raw.rejects``) complete the set.

Exactly once: a released repair is an *overlay* keyed by the record's lineage (``_file``, ``_line``). Whenever the
clean stage (re)builds a day, it replaces the raw text values of those records with the released values before
typing and validation, so the record lands in the clean table with corrected values. The clean table of a day is
always rebuilt from raw + overlay (delete, then insert), so running the same day again, from a backfill, the
sensor, the daily job or the CLI, yields the same single row; it never appends a second copy. The quarantine row is
kept (status ``applied``, with the run that first took the record in), so the audit trail survives; and because
``conservation()`` counts only :data:`QUARANTINED_STATUSES` as quarantined, an applied record counts once, in
clean.

This module has no Dagster or clean-stage imports, so ``gtm_pipeline.clean`` can use it without a cycle.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

OPEN, HELD, REPAIRED, RELEASED, APPLIED, REJECTED = "open", "held", "repaired", "released", "applied", "rejected"
STATUSES = (OPEN, HELD, REPAIRED, RELEASED, APPLIED, REJECTED)
# A record in one of these is still waiting in quarantine (not in clean); the ledger counts it as quarantined.
QUARANTINED_STATUSES = (OPEN, HELD, REPAIRED, RELEASED)
MISSING_OWNER_TABLE = "missing_owner"

# Columns a repair adds to every quarantine table (added in place to warehouses created before repairs existed).
REPAIR_COLUMNS = (
    ("repaired_payload", "VARCHAR"),   # corrected raw text values (JSON, same shape as payload); the working copy
    ("repaired_at", "TIMESTAMP"),
    ("released_payload", "VARCHAR"),   # what the clean stage overlays on the raw record; set by `release`
    ("released_at", "TIMESTAMP"),
    ("release_id", "VARCHAR"),         # one id per `release` command: the batch the backfill sensor reacts to
    ("applied_run_id", "VARCHAR"),     # the Dagster run that first took the released record into clean
    ("applied_at", "TIMESTAMP"),
)
REPAIR_COLUMN_NAMES = tuple(c for c, _ in REPAIR_COLUMNS)


def sql_list(values) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


QUARANTINED_SQL = sql_list(QUARANTINED_STATUSES)


def ensure_repair_columns(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Add the repair columns to ``quarantine.<table>`` if it predates them (idempotent)."""
    for name, typ in REPAIR_COLUMNS:
        con.execute(f"ALTER TABLE quarantine.{table} ADD COLUMN IF NOT EXISTS {name} {typ}")


def overlay_sql(entity: str, days_sql: str) -> str:
    """Released repairs of one entity on the delivery days of ``days_sql`` (a SQL list of DATE literals, built by
    the clean stage from checked partition keys): lineage -> released payload.

    At most one row per record (the latest release), so joining it can never duplicate a candidate row.
    """
    parts = [f"SELECT _file, _line, released_payload, released_at FROM quarantine.{entity} "
             f"WHERE _partition IN {days_sql} AND released_payload IS NOT NULL"]
    if entity != MISSING_OWNER_TABLE:
        parts.append(f"SELECT _file, _line, released_payload, released_at FROM quarantine.{MISSING_OWNER_TABLE} "
                     f"WHERE entity = '{entity}' AND _partition IN {days_sql} AND released_payload IS NOT NULL")
    union = " UNION ALL ".join(parts)
    return (f"SELECT _file, _line, released_payload FROM ({union}) "
            f"QUALIFY row_number() OVER (PARTITION BY _file, _line ORDER BY released_at DESC) = 1")


def load_state(con: duckdb.DuckDBPyConnection, entity: str, day: str) -> dict[str, dict]:
    """Quarantine rows of one entity and day that carry repair state, by quarantine_id (with ``_dest``: the table)."""
    out: dict[str, dict] = {}
    stateful = (f"(status NOT IN ('{OPEN}', '{HELD}') OR repaired_payload IS NOT NULL "
                f"OR released_payload IS NOT NULL)")
    for table, extra in ((entity, ""), (MISSING_OWNER_TABLE, f" AND entity = '{entity}'")):
        cur = con.execute(f"SELECT * FROM quarantine.{table} WHERE _partition = ?::DATE{extra} AND {stateful}", [day])
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            rec = dict(zip(names, row))
            rec["_dest"] = table
            out[rec["quarantine_id"]] = rec
    return out


def merge_state(state: dict[str, dict], fates: dict[str, str], new_rows: dict[str, dict], *, run_id: str | None,
                now: datetime) -> tuple[list[dict], set[str]]:
    """Combine this run's outcome with the repair state of earlier rows of the same records.

    ``fates``: quarantine_id -> where this run puts the record (clean, quarantine, missing_owner, blocking, held,
    duplicate), for every candidate record; ``new_rows``: the quarantine rows this run would write, by id.
    Returns the rows to write for records with state (each with ``_dest``) and the ids whose old rows to delete.
    Records without state are not touched: they keep the clean stage's plain delete-and-rewrite behaviour.
    """
    write: list[dict] = []
    delete: set[str] = set()
    for qid, old in state.items():
        fate = fates.get(qid)
        if fate is None:
            continue  # the raw record is not in this run's candidates (re-delivered file): leave its row as it is
        delete.add(qid)
        released = old.get("released_payload") is not None
        carry = {k: old.get(k) for k in REPAIR_COLUMN_NAMES}
        if fate == "clean":
            if released:  # taken in: keep the row as the audit trail, linked to the first run that applied it
                write.append({**old, "status": APPLIED, "applied_run_id": old.get("applied_run_id") or run_id,
                              "applied_at": old.get("applied_at") or now})
            # without a release the record is clean on its own (e.g. a relaxed contract): nothing to keep
        elif fate == "duplicate":
            if released:
                write.append({**old, "status": REJECTED,
                              "reason": "after release: a second copy of the key (see raw.rejects)",
                              "run_id": run_id})
        elif released or fate == "held":
            # The released values (or a held day) decide: the new outcome with the original payload and the repair.
            row = dict(new_rows[qid])
            row.update(carry)
            row["payload"] = old["payload"]
            write.append(row)
        else:
            # Unreleased work in progress (repaired, or open with a partial repair): the raw record is unchanged,
            # so keep the row, and the user's repair, exactly as it is.
            write.append(dict(old))
    return write, delete
