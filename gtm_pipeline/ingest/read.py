"""Reading one source table's landing files of a run as sets: one DuckDB read over all of them.

For a table and the run's days, the files are grouped by what decides their select list (a CSV header; a Parquet
schema; JSONL files share one read and are grouped by their keys only for the insert) and each group is read by one
``read_csv``/``read_parquet`` over its file list, in batches of at most ``BATCH_BYTES`` so the staged text stays
bounded. ``row_number() OVER ()`` numbers the rows in scan order (files in list order, rows in file order: DuckDB
preserves insertion order) and ``file_index`` tells the file, so a file's physical line is its row's offset from its
first row -- when DuckDB rejected nothing in it and its rows match its physical lines (a Python count of the file's
newlines, :func:`gtm_pipeline.ingest.rawlines.scan_lines`). Only the rare file that fails that test takes a per-file
slow path: a CSV file maps its good records to lines with :mod:`gtm_pipeline.ingest.rawlines`; a JSONL file is split
into lines in Python, exactly. A statement that fails aborts the day's transaction, so a file DuckDB cannot read at
all is found by probing the batch's files on a scratch connection and reported as :class:`ReadFailed`; the caller
rolls back and reads again with that file in ``careful`` (read on its own, or its lines rejected), so one bad file
never fails a day.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from gtm_pipeline.ingest.landing import Table
from gtm_pipeline.ingest.rawlines import PhysicalLines, good_record_lines, place_rejected_records
from gtm_pipeline.ingest.read_jsonl import read_jsonl_batch
from gtm_pipeline.ingest.read_sql import (
    MAX_LINE,
    LandingFile,
    ReadFailed,
    duckdb_rejects,
    file_stats,
    files_sql,
    insert_raw,
    probe,
    reject_reason,
    resolve_columns,
    run_read,
    scanned_lines,
    select_list,
    size_batches,
    sql_list,
    temp_names,
    with_arrow,
)

# stage.py reads these from here: the module is the ingest stage's one door to the set reads.
__all__ = ["LandingFile", "ReadFailed", "csv_source", "probe", "read_table", "with_arrow"]

_LONE_CR = ("a carriage return (CR) not followed by LF inside the line, in a file that mixes line endings; "
            "re-export with one kind of line ending (LF or CRLF)")


def read_table(con, table: Table, files: list[LandingFile], now, careful: dict[Path, str]) -> None:
    """Read the files of ``table`` (each checked readable by the caller: a CSV file has its header in ``columns``,
    a Parquet file its schema) into ``raw.<table>``, filling in each :class:`LandingFile`."""
    if table.format == "jsonl":
        batches = size_batches([f for f in files if f.path not in careful])
        if any(f.path in careful for f in files):   # DuckDB failed on these: split in Python only
            batches.append([f for f in files if f.path in careful])
        for batch in batches:
            read_jsonl_batch(con, table, batch, now, in_python=batch[0].path in careful)
        return
    groups: dict[tuple, list[LandingFile]] = {}
    for f in files:
        groups.setdefault(f.columns, []).append(f)
    for columns, group in groups.items():
        names = list(columns) if table.format == "csv" else [name for name, _ in columns]
        resolved, unexpected, drift = resolve_columns(table, names)
        for f in group:
            f.drift = drift
        for batch in size_batches(group):
            if table.format == "csv":
                _read_csv_batch(con, table, names, resolved, unexpected, batch, now)
            else:
                _read_parquet_batch(con, table, resolved, unexpected, batch, now)


# -- CSV ------------------------------------------------------------------------------------------------------------
def csv_source(paths: list[Path], ncols: int, rj: str, rs: str) -> str:
    cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(ncols)) + "}"
    return (f"read_csv({sql_list(paths)}, header=true, columns={cols}, auto_detect=false, delim=',', quote='\"', "
            f"escape='\"', store_rejects=true, rejects_table='{rj}', rejects_scan='{rs}', max_line_size={MAX_LINE})")


def _place_csv_rejects(f: LandingFile, rejected: list[tuple], n_good: int) -> list[int]:
    """Slow path: reject rows of one file, placed by byte position and read back from the file (DuckDB's line
    numbers and text are not exact: see gtm_pipeline.ingest.rawlines); returns the physical line of each good record."""
    phys = PhysicalLines(f.path)
    at = PhysicalLines(f.read_path) if f.read_path else phys   # where DuckDB's byte positions point
    f.rejects.extend((n, "parse", _LONE_CR, phys.line(n)) for n in f.pre_rejects)
    lines, spans = place_rejected_records(at, [(line, bpos, reject_reason(etype, emsg), text)
                                               for line, bpos, etype, emsg, text in rejected], set(f.pre_rejects))
    f.rejects.extend((n, "parse", why, phys.line(n)) for n, why in lines)
    return good_record_lines(at, 1, spans, n_good)


def _read_csv_batch(con, table: Table, header: list[str], resolved: dict[str, str], unexpected: list[str],
                    batch: list[LandingFile], now) -> None:
    stg, rj, rs = temp_names("stg", "rj", "rs")
    cols = ", ".join(f"c{i}" for i in range(len(header)))
    src = csv_source([f.read_path or f.path for f in batch], len(header), rj, rs)
    run_read(con, table, batch, f"CREATE TEMP TABLE {stg} AS SELECT row_number() OVER () AS _k, file_index AS _f, "
                              f"{cols} FROM {src}",
           lambda p: probe(csv_source([p], len(header), *temp_names("rj", "rs"))))
    rejected = duckdb_rejects(con, rj, rs)
    n_good, first = file_stats(con, stg, batch)
    # Record k of a file is on line k + 1, unless DuckDB rejected something, or its records and physical lines
    # differ (blank lines, quoted line breaks, lines swallowed by an open quote): such a file is read again on its
    # own, because DuckDB 2.0 drops some rejects of a multi-file read (an unterminated quote in a file that is not
    # the last one, measured on the generated crm exports) while a single-file read keeps them.
    again = [i for i, f in enumerate(batch) if rejected.get(i) or f.pre_rejects or scanned_lines(f) != n_good[i] + 1]
    if again:
        con.execute(f"DELETE FROM {stg} WHERE _f IN (SELECT unnest(?::BIGINT[]))", [again])
    slow: dict[str, list] = {"_f": [], "k": [], "line": []}
    base = sum(n_good)
    for i in again:
        f = batch[i]
        rj, rs = temp_names("rj", "rs")
        inserted = con.execute(f"INSERT INTO {stg} SELECT row_number() OVER () + {base}, {i}, {cols} "
                               f"FROM {csv_source([f.read_path or f.path], len(header), rj, rs)}").fetchall()
        n_good[i], first[i] = int(inserted[0][0]), base + 1
        base += n_good[i]
        lines = _place_csv_rejects(f, duckdb_rejects(con, rj, rs).get(0, []), n_good[i])
        slow["_f"] += [i] * len(lines)
        slow["k"] += range(1, len(lines) + 1)
        slow["line"] += lines
    for i, f in enumerate(batch):
        f.rows = n_good[i]
    files = files_sql(batch, first)
    pos_of = {name: i for i, name in enumerate(header)}
    extra = ("json_object(" + ", ".join(f"'{u}', s.c{pos_of[u]}" for u in unexpected) + ")") if unexpected else "NULL"
    select = select_list(table, resolved, lambda found: f"s.c{pos_of[found]}")
    if not slow["_f"]:
        insert_raw(con, table, select, extra, "s._k - f._first + 2", f"{stg} s JOIN {files} ON f._f = s._f", now)
    else:
        insert_raw(con, table, select, extra, "coalesce(p.line, s._k - f._first + 2)",
                f"{stg} s JOIN {files} ON f._f = s._f LEFT JOIN {{arrow}} p ON p._f = s._f "
                f"AND p.k = s._k - f._first + 1", now,
                arrow=pa.table({k: pa.array(v, pa.int64()) for k, v in slow.items()}))
    con.execute(f"DROP TABLE {stg}")


# -- Parquet --------------------------------------------------------------------------------------------------------
def _read_parquet_batch(con, table: Table, resolved: dict[str, str], unexpected: list[str], batch: list[LandingFile],
                        now) -> None:
    extra = ("json_object(" + ", ".join(f"'{u}', CAST(p.\"{u}\" AS VARCHAR)" for u in unexpected) + ")"
             if unexpected else "NULL")
    select = select_list(table, resolved, lambda found: f'CAST(p."{found}" AS VARCHAR)')
    src = f"read_parquet({sql_list([f.path for f in batch])}, file_row_number=true)"
    run_read(con, table, batch, f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', f._rel, p.file_row_number + 1, f._day, ?, {extra}
        FROM {src} p JOIN {files_sql(batch, [0] * len(batch))} ON f._f = p.file_index""",
           lambda path: probe(f"read_parquet({sql_list([path])})"), [now])

