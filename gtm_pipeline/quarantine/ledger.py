"""The conservation ledger: every file and every line that arrived in the landing folder, and where each ended.

It is built from what arrived -- ``raw.landing_files``, one row per file that ingestion found in a source's day
folder, with the records it delivered -- not from what reached raw. So a day whose lines were all rejected shows
them, a file rejected whole (0 bytes, a corrupt Parquet footer) shows as a file reject, and a file no table reads
shows as ``unclaimed`` with the closest table as a hint.

Per source table and delivery day::

    records = clean + superseded + quarantined + held + rejected
    lost = records - (clean + superseded + quarantined + held + rejected)

A record is located by its lineage (file, line) and counted once, in its strongest place: rejected (at ingest, a
line that could not be parsed; at clean, a second copy of a key) > held (in quarantine because its day's
publication is blocked) > quarantined (waiting for a fix: open, repaired, released) > clean > superseded (a
version in ``clean.<entity>_history`` that a later delivery of its key replaced: `gtm_pipeline.clean.history`).
An applied repair counts once, in clean (see repair_overlay). ``lost`` must be 0: a record that arrived and is in
no place, or a raw row that arrived from no file, moves it. ``in_two_places`` must be 0 except for a blocked day
(its previous clean version stays visible, as the spec requires).

Files whose lines cannot be attributed count as files, not lines: ``files_rejected`` per table and day, and
:func:`unread_files` (rejected and unclaimed files with path, reason and hint). Days ingested before
``raw.landing_files`` existed have no file rows: their records are the raw rows plus rejected lines (re-ingest such a
day to record its files).
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ingest.landing import LandingSpec, Table
from gtm_pipeline.ingest.rawlines import one_line
from gtm_pipeline.quarantine.overlay import QUARANTINED_SQL
from gtm_pipeline.warehouse import existing_tables

COUNTS = ("records", "clean", "superseded", "quarantined", "held", "rejected", "lost")
DETAIL = ("rejected_ingest", "rejected_clean", "raw_rows", "in_two_places")
COLUMNS = ("table", "_partition", "files", "files_rejected", *COUNTS, *DETAIL)
FILE_COLUMNS = ("day", "source", "table", "file", "status", "reason", "hint", "bytes")
_NONE = "SELECT NULL::VARCHAR AS _file, NULL::BIGINT AS _line, NULL::VARCHAR AS status WHERE false"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
SHOWN_REJECTS = 20


def check_day(day: str | None) -> None:
    if day is not None and not _DAY.fullmatch(day):
        raise GtmPipelineError(f"--day {day!r}: not a delivery day; use YYYY-MM-DD, e.g. --day 2026-08-03")


def _existing(con: duckdb.DuckDBPyConnection) -> set[str]:
    """``schema.table`` of every table the ledger reads from."""
    return {f"{s}.{t}" for s in ("raw", "clean", "quarantine") for t in existing_tables(con, s)}


def _fates(con, t: Table, existing: set[str], day: str | None) -> pd.DataFrame:
    """Per day: the raw rows of table ``t`` by their one place (see the module doc)."""
    if f"raw.{t.raw_table}" not in existing:
        return pd.DataFrame(columns=["_partition", "raw_rows", "clean", "superseded", "quarantined", "held",
                                     "rejected_clean", "in_two_places"])
    e, mine = t.entity, f"_table = '{t.name}' AND _source = '{t.source}'"
    q_parts = [f"SELECT _file, _line, status FROM quarantine.{e} WHERE {mine} AND status IN {QUARANTINED_SQL}"
               ] if f"quarantine.{e}" in existing else []
    if "quarantine.missing_owner" in existing:
        q_parts.append(f"SELECT _file, _line, status FROM quarantine.missing_owner WHERE entity = '{e}' AND {mine} "
                       f"AND status IN {QUARANTINED_SQL}")
    c_sql = f"SELECT _file, _line FROM clean.{e} WHERE {mine}" if f"clean.{e}" in existing else _NONE
    s_sql = (f"SELECT _file, _line FROM clean.{e}_history WHERE {mine} AND valid_to IS NOT NULL"
             if f"clean.{e}_history" in existing else _NONE)
    where = "WHERE r._partition = $day" if day else ""
    # q_kind: 2 held, 1 quarantined otherwise, 0 not in quarantine (one correlated look-up for both).
    sql = f"""
        WITH q AS ({" UNION ALL ".join(q_parts) or _NONE}), c AS ({c_sql}), s AS ({s_sql}),
        j AS (SELECT _file, _line FROM raw.rejects WHERE stage = 'clean' AND {mine}),
        fate AS (
          SELECT r._partition,
                 (EXISTS (SELECT 1 FROM c WHERE c._file = r._file AND c._line = r._line))::INT AS in_clean,
                 (EXISTS (SELECT 1 FROM s WHERE s._file = r._file AND s._line = r._line))::INT AS in_sup,
                 coalesce((SELECT max(CASE WHEN q.status = 'held' THEN 2 ELSE 1 END) FROM q
                           WHERE q._file = r._file AND q._line = r._line), 0) AS q_kind,
                 (EXISTS (SELECT 1 FROM j WHERE j._file = r._file AND j._line = r._line))::INT AS in_rej
          FROM raw.{t.raw_table} r {where})
        SELECT _partition, count(*) AS raw_rows,
               count(*) FILTER (WHERE in_rej = 0 AND q_kind = 0 AND in_clean = 1) AS clean,
               count(*) FILTER (WHERE in_rej = 0 AND q_kind = 0 AND in_clean = 0 AND in_sup = 1) AS superseded,
               count(*) FILTER (WHERE in_rej = 0 AND q_kind = 1) AS quarantined,
               count(*) FILTER (WHERE in_rej = 0 AND q_kind = 2) AS held,
               count(*) FILTER (WHERE in_rej = 1) AS rejected_clean,
               count(*) FILTER (WHERE in_clean + in_sup + (q_kind > 0)::INT + in_rej > 1) AS in_two_places
        FROM fate GROUP BY _partition"""
    return con.execute(sql, {"day": day} if day else {}).df()


def conservation(con: duckdb.DuckDBPyConnection, spec: LandingSpec, source: str | None = None,
                 day: str | None = None) -> pd.DataFrame:
    """One row per source table and delivery day that anything arrived for (a file, a raw row or a reject), with
    the columns of :data:`COLUMNS`; see the module doc for what each counts."""
    check_day(day)
    existing = _existing(con)
    on_day = " AND _partition = ?::DATE" if day else ""
    frames = []
    for t in spec.tables():
        if source and t.source != source:
            continue
        args = [t.source, t.name, *([day] if day else [])]
        parts = [_fates(con, t, existing, day)]
        if "raw.rejects" in existing:
            parts.append(con.execute(
                "SELECT _partition, count(*) AS rejected_ingest FROM raw.rejects WHERE stage = 'ingest' "
                f"AND _source = ? AND _table = ? AND _line IS NOT NULL{on_day} GROUP BY 1", args).df())
        if "raw.landing_files" in existing:
            parts.append(con.execute(
                "SELECT _partition, count(*) AS files, count(*) FILTER (WHERE status = 'rejected') AS files_rejected, "
                f"sum(records) AS arrived FROM raw.landing_files WHERE _source = ? AND _table = ?{on_day} GROUP BY 1",
                args).df())
        parts = [p for p in parts if len(p)]
        if not parts:
            continue
        df = parts[0]
        for p in parts[1:]:
            df = df.merge(p, on="_partition", how="outer")
        df.insert(0, "table", t.qualified)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object" if c in ("table", "_partition") else "int64")
                             for c in COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    for c in ("raw_rows", "clean", "superseded", "quarantined", "held", "rejected_clean", "in_two_places",
              "rejected_ingest", "files", "files_rejected"):
        out[c] = (out[c] if c in out else pd.Series(0, index=out.index)).fillna(0).astype("int64")
    arrived = out["arrived"] if "arrived" in out else pd.Series(float("nan"), index=out.index)
    # Days without file records (ingested before they existed) fall back on what reached raw.
    out["records"] = arrived.fillna(out["raw_rows"] + out["rejected_ingest"]).astype("int64")
    out["rejected"] = out["rejected_ingest"] + out["rejected_clean"]
    out["lost"] = out["records"] - (out["clean"] + out["superseded"] + out["quarantined"] + out["held"]
                                    + out["rejected"])
    return out[list(COLUMNS)].sort_values(["table", "_partition"]).reset_index(drop=True)


def unread_files(con: duckdb.DuckDBPyConnection, source: str | None = None, day: str | None = None) -> pd.DataFrame:
    """Files that arrived and were not read line by line: rejected whole (reason) or unclaimed (reason and hint,
    the closest table), one row each with the columns of :data:`FILE_COLUMNS`."""
    check_day(day)
    if "raw.landing_files" not in _existing(con):
        return pd.DataFrame(columns=list(FILE_COLUMNS))
    where, args = ["status <> 'read'"], []
    if source:
        where.append("_source = ?")
        args.append(source)
    if day:
        where.append("_partition = ?::DATE")
        args.append(day)
    return con.execute(
        "SELECT strftime(_partition, '%Y-%m-%d') AS day, _source AS source, _source || '/' || _table AS \"table\", "
        "_file AS file, "
        f"status, reason, hint, bytes FROM raw.landing_files WHERE {' AND '.join(where)} ORDER BY 1, file",
        args).df()


def _day_str(v) -> str:
    return str(v)[:10]


def as_json(con: duckdb.DuckDBPyConnection, spec: LandingSpec, day: str | None = None) -> dict:
    """The ledger for scripts: per table and day, the files not read, and the totals."""
    df = conservation(con, spec, day=day)
    files = unread_files(con, day=day)
    tables = [{"table": r["table"], "day": _day_str(r["_partition"]),
               **{c: int(r[c]) for c in ("files", "files_rejected", *COUNTS, *DETAIL)}} for _, r in df.iterrows()]
    totals = {c: int(df[c].sum()) for c in ("files", "files_rejected", *COUNTS)}
    totals["files_unclaimed"] = int((files["status"] == "unclaimed").sum())
    return {
        "day": day,
        "identity": "records = clean + superseded + quarantined + held + rejected; lost = 0",
        "balanced": bool((df["lost"] == 0).all()),
        "totals": totals,
        "tables": tables,
        "files_not_read": [{k: (None if pd.isna(v) else (int(v) if k == "bytes" else v)) for k, v in r.items()}
                           for r in files.to_dict("records")],
    }


def _table_text(df: pd.DataFrame) -> str:
    return df.to_string(index=False) if len(df) else "  (nothing arrived)"


# The default view lists at most this many unread files and rejected-only days (--detail and --json list all).
SHOWN_IN_SUMMARY = 10


def _summary_lines(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """One line per table over all days, then the days whose every record was rejected."""
    summary = df.groupby("table", as_index=False).agg(
        days=("_partition", "nunique"), **{c: (c, "sum") for c in cols[1:]}) if len(df) else df[cols]
    lines = ["ledger over all delivery days, one line per source table (--day YYYY-MM-DD for one day's detail, "
             "--detail for every day):", _table_text(summary)]
    rejected_only = df[(df["records"] > 0) & (df["rejected"] == df["records"])]
    if len(rejected_only):
        named = [f"{r['table']} {_day_str(r['_partition'])}" for _, r in rejected_only.iterrows()]
        lines.append("days whose every record was rejected: " + ", ".join(named[:SHOWN_IN_SUMMARY])
                     + (f" (+{len(named) - SHOWN_IN_SUMMARY} more: --detail)" if len(named) > SHOWN_IN_SUMMARY else ""))
    return lines


def render(con: duckdb.DuckDBPyConnection, spec: LandingSpec, day: str | None = None, detail: bool = False) -> str:
    """The ledger for people: one line per table over all days; with ``day``, that day's tables and its rejected
    lines (raw text escaped); with ``detail``, one line per table and day. Then the files not read and the verdict."""
    df = conservation(con, spec, day=day)
    files = unread_files(con, day=day)
    cols = ["table", "files", "files_rejected", *COUNTS]
    if day:
        lines = [f"ledger of delivery day {day}, per source table:", _table_text(df[cols])]
        lines += _rejects_text(con, day)
    elif detail:
        per_day = df.assign(day=df["_partition"].map(_day_str))[["table", "day", *cols[1:]]]
        lines = ["ledger per source table and delivery day:", _table_text(per_day)]
    else:
        lines = _summary_lines(df, cols)
    if len(files):
        shown = files if (day or detail) else files.head(SHOWN_IN_SUMMARY)
        lines.append(f"files not read ({len(files)}):")
        for f in shown.to_dict("records"):
            # The reason starts with what happened ("empty file: ...", "unclaimed: ..."); the hint comes first.
            hint = f" [closest table: {f['hint']}]" if isinstance(f["hint"], str) else ""
            lines.append(f"  {f['day']}  {f['file']}{hint}  {f['reason']}")
        if len(shown) < len(files):
            lines.append(f"  ... {len(files) - len(shown)} more: gtm-pipeline ledger --detail")
    lost = df[df["lost"] != 0]
    totals = {c: int(df[c].sum()) for c in COUNTS}
    # "superseded" appears once there is any (upserts, gtm_pipeline.clean.history), so the usual line stays short.
    sup = f"{totals['superseded']:,} superseded + " if totals["superseded"] else ""
    verdict = (f"{totals['records']:,} records = {totals['clean']:,} clean + {sup}"
               f"{totals['quarantined']:,} quarantined + {totals['held']:,} held + {totals['rejected']:,} rejected; "
               f"lost: {totals['lost']}")
    if len(lost):
        verdict += " -- NOT BALANCED: " + ", ".join(f"{r['table']} {_day_str(r['_partition'])} ({int(r['lost'])})"
                                                    for _, r in lost.head(10).iterrows())
    lines.append(verdict)
    return "\n".join(lines)


def _rejects_text(con, day: str) -> list[str]:
    if "raw.rejects" not in _existing(con):
        return []
    rows = con.execute("SELECT _file, _line, stage, reason, raw_text FROM raw.rejects WHERE _partition = ?::DATE "
                       "AND _line IS NOT NULL ORDER BY _file, _line", [day]).fetchall()
    if not rows:
        return []
    out = [f"rejected lines ({len(rows)}; raw text as delivered, bytes that are not UTF-8 as \\xNN):"]
    for file, line, stage, reason, raw in rows[:SHOWN_REJECTS]:
        out.append(f"  {file}:{line} [{stage}] {reason}")
        if raw is not None:
            out.append(f"      raw: {one_line(raw, 160)}")
    if len(rows) > SHOWN_REJECTS:
        out.append(f"  ... {len(rows) - SHOWN_REJECTS} more: SELECT * FROM raw.rejects WHERE _partition = '{day}'")
    return out
