"""What the reads of every format share: the file record, the failure the caller retries, the column mapping
and the SQL plumbing of one staged multi-file read (see :mod:`gtm_pipeline.ingest.read`)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from gtm_pipeline.errors import IngestError
from gtm_pipeline.ingest.landing import Table
from gtm_pipeline.ingest.rawlines import LineScan

BATCH_BYTES = 512 << 20   # input bytes per read: bounds the staged text (about twice this) at benchmark sizes
MAX_LINE = 10_000_000     # bytes; DuckDB's max_line_size, also applied to lines split in Python
ENCODING_REASON = "not valid UTF-8 (re-export the file as UTF-8; latin-1/cp1252 bytes found)"
CSV_REASONS = {
    "MISSING COLUMNS": "missing field(s)",
    "TOO MANY COLUMNS": "extra field(s)",
    "UNQUOTED VALUE": "unterminated or misplaced quote",
    "LINE SIZE OVER MAXIMUM": "line too long",
}
# Not a blank line: NULL or trim(_raw) = '' is blank. Written so trim() (a copy of every line) runs only on lines that
# start with a space: five times faster on large files, same rows.
NOT_BLANK = "_raw IS NOT NULL AND _raw <> '' AND (NOT starts_with(_raw, ' ') OR trim(_raw) <> '')"

RejectLine = tuple["int | None", str, str, "bytes | None"]  # (line, rule, reason, the line's exact bytes)


@dataclass
class LandingFile:
    """One delivered file of the table and what reading it found (filled in by
    :func:`gtm_pipeline.ingest.read.read_table`)."""
    path: Path
    rel: str                      # path under the landing folder: the lineage column _file
    day: str
    size: int
    rows: int = 0
    rejects: list[RejectLine] = field(default_factory=list)
    drift: tuple[list[str], list[str], list[str]] | None = None  # (missing, unexpected, renamed "alias->column")
    note: str = ""
    file_reject: str | None = None   # why the file was rejected whole (its lines cannot be read one by one)
    scan: LineScan | None = None     # CSV and JSONL: its lines and line endings
    # What decides the select list: the CSV header, or the Parquet schema's (name, type) pairs. Files with the same
    # are read together (a read over differing Parquet schemas would cast values to a common type).
    columns: tuple = ()
    read_path: Path | None = None    # what DuckDB reads instead of path: a copy with its line endings normalised
    pre_rejects: list[int] = field(default_factory=list)  # lines rejected before the read (blank in the copy)


class ReadFailed(Exception):
    """A read statement failed (the transaction is aborted); ``culprits`` maps each file that fails on its own to
    DuckDB's error. Empty culprits: no single file is to blame."""

    def __init__(self, table: Table, files: list[LandingFile], error: str, culprits: dict[Path, str]):
        named = ", ".join(f.rel for f in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        super().__init__(f"{table.qualified}: cannot read {named}: {error}")
        self.culprits = culprits


def resolve_columns(table: Table, found: list[str]) -> tuple[dict[str, str], list[str], tuple | None]:
    """Canonical column -> found column name, the unexpected names, and the drift (None when there is none):
    (missing, unexpected, renamed as "alias->column")."""
    alias_of = {alt: col for col, alts in table.aliases.items() for alt in alts}
    resolved: dict[str, str] = {}
    unexpected: list[str] = []
    renamed: list[str] = []
    for name in found:
        if name in table.columns and name not in resolved:
            resolved[name] = name
        elif name in alias_of and alias_of[name] not in resolved:
            resolved[alias_of[name]] = name
            renamed.append(f"{name}->{alias_of[name]}")
        else:
            unexpected.append(name)
    missing = [c for c in table.columns if c not in resolved]
    return resolved, unexpected, ((missing, unexpected, renamed) if missing or unexpected or renamed else None)


def temp_names(*prefixes: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{p}_{tag}" for p in prefixes]


def sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def size_batches(files: list[LandingFile]) -> list[list[LandingFile]]:
    out: list[list[LandingFile]] = []
    size = 0
    for f in files:
        if not out or (size + f.size > BATCH_BYTES and out[-1]):
            out.append([])
            size = 0
        out[-1].append(f)
        size += f.size
    return out


def reject_reason(error_type: str, message: str) -> str:
    if error_type == "INVALID ENCODING":
        return ENCODING_REASON
    return f"{CSV_REASONS.get(error_type, error_type.lower())}: {message}"


def first_line(e: Exception) -> str:
    return str(e).splitlines()[0]


def probe(source_sql: str) -> str | None:
    """DuckDB's error reading ``source_sql`` on a scratch connection (a failed statement would abort the day's
    transaction), or None when it reads."""
    try:
        with duckdb.connect() as scratch:
            # Every column's values, not count(*): a Parquet count is answered from the footer alone.
            scratch.execute(f"SELECT min(COLUMNS(*)::VARCHAR) FROM {source_sql}").fetchall()
    except duckdb.Error as e:
        return first_line(e)
    return None


def run_read(con, table: Table, batch: list[LandingFile], sql: str, probe_file, params: list | None = None) -> None:
    """Run the statement that reads the batch's files; on failure, find the files to blame (see ReadFailed), with
    DuckDB's error naming each by its landing path."""
    try:
        con.execute(sql, params)
    except duckdb.Error as e:
        culprits = {f.path: err.replace(str(f.read_path or f.path), f.rel) for f in batch
                    if (err := probe_file(f.read_path or f.path))}
        raise ReadFailed(table, batch, first_line(e), culprits) from e


def duckdb_rejects(con, rj: str, rs: str) -> dict[int, list[tuple]]:
    """DuckDB's rejected records of one read, per file index: (line, byte position, type, message, text)."""
    rows = con.execute(f"SELECT file_id, line, min(line_byte_position), min(error_type), min(error_message), "
                       f"min(csv_line) FROM {rj} GROUP BY file_id, line ORDER BY file_id, line").fetchall()
    con.execute(f"DROP TABLE IF EXISTS {rj}; DROP TABLE IF EXISTS {rs}")
    out: dict[int, list[tuple]] = {}
    for file_id, *rest in rows:
        out.setdefault(int(file_id), []).append(tuple(rest))
    return out


def file_stats(con, stg: str, batch: list[LandingFile]) -> tuple[list[int], list[int]]:
    """Rows and first row number (``_k``) of each file of a staged read, checking that each file's rows are one
    contiguous run in file order (the numbering of lines rests on it)."""
    n, first = [0] * len(batch), [0] * len(batch)
    prev_last = 0
    for f, count, lo, hi in con.execute(f"SELECT _f, count(*), min(_k), max(_k) FROM {stg} GROUP BY _f "
                                        f"ORDER BY _f").fetchall():
        if hi - lo + 1 != count or lo <= prev_last:
            raise IngestError(f"{batch[f].rel}: DuckDB returned the rows of a multi-file read out of file order; "
                              f"ingestion numbers lines by scan order: keep SET preserve_insertion_order = true")
        n[f], first[f], prev_last = int(count), int(lo), int(hi)
    return n, first


def files_sql(batch: list[LandingFile], first: list[int]) -> str:
    """The batch's files as a relation ``f`` (index, first row number, lineage path, day): a literal, so nothing
    outlives a transaction that fails (a registered view cannot be dropped until the caller rolls back)."""
    rows = ", ".join(f"({i}, {first[i]}, '{f.rel.replace(chr(39), chr(39) * 2)}', DATE '{f.day}')"
                     for i, f in enumerate(batch))
    return f"(VALUES {rows}) f(_f, _first, _rel, _day)"


def with_arrow(con, arrow: pa.Table, sql: str, params: list | None = None) -> list:
    """Run ``sql`` with ``{arrow}`` naming the Arrow table; the view is dropped afterwards (if the statement
    failed, the transaction is aborted and so is the drop: the connection keeps the view, a Python reference)."""
    name = f"arrow_{uuid.uuid4().hex[:8]}"
    con.register(name, arrow)
    try:
        return con.execute(sql.replace("{arrow}", name), params).fetchall()
    finally:
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)


def select_list(table: Table, resolved: dict[str, str], expr_for) -> str:
    return ", ".join(f'{expr_for(resolved[c])} AS "{c}"' if c in resolved else f'NULL::VARCHAR AS "{c}"'
                     for c in table.columns)


def insert_raw(con, table: Table, select: str, extra: str, line: str, from_sql: str, now,
            arrow: pa.Table | None = None) -> None:
    sql = f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', f._rel, {line}, f._day, ?, {extra} FROM {from_sql}"""
    if arrow is None:
        con.execute(sql, [now])
    else:
        with_arrow(con, arrow, sql, [now])



def scanned_lines(f) -> int:
    """The file's physical line count from its scan; -1 (never equal to a count) for a file that was not scanned,
    which sends it to the exact per-file path."""
    return f.scan.lines if f.scan is not None else -1
