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

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from gtm_pipeline.errors import IngestError
from gtm_pipeline.ingest.landing import Table
from gtm_pipeline.ingest.rawlines import LineScan, PhysicalLines, good_record_lines, place_rejected_records

BATCH_BYTES = 512 << 20   # input bytes per read: bounds the staged text (about twice this) at benchmark sizes
MAX_LINE = 10_000_000     # bytes; DuckDB's max_line_size, also applied to lines split in Python
_ENCODING = "not valid UTF-8 (re-export the file as UTF-8; latin-1/cp1252 bytes found)"
_CSV_REASONS = {
    "MISSING COLUMNS": "missing field(s)",
    "TOO MANY COLUMNS": "extra field(s)",
    "UNQUOTED VALUE": "unterminated or misplaced quote",
    "LINE SIZE OVER MAXIMUM": "line too long",
}
_LONE_CR = ("a carriage return (CR) not followed by LF inside the line, in a file that mixes line endings; "
            "re-export with one kind of line ending (LF or CRLF)")
# Not a blank line: NULL or trim(_raw) = '' is blank. Written so trim() (a copy of every line) runs only on lines that
# start with a space: five times faster on large files, same rows.
_NOT_BLANK = "_raw IS NOT NULL AND _raw <> '' AND (NOT starts_with(_raw, ' ') OR trim(_raw) <> '')"

RejectLine = tuple["int | None", str, str, "bytes | None"]  # (line, rule, reason, the line's exact bytes)


@dataclass
class LandingFile:
    """One delivered file of the table and what reading it found (filled in by :func:`read_table`)."""
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


def read_table(con, table: Table, files: list[LandingFile], now, careful: dict[Path, str]) -> None:
    """Read the files of ``table`` (each checked readable by the caller: a CSV file has its header in ``columns``,
    a Parquet file its schema) into ``raw.<table>``, filling in each :class:`LandingFile`."""
    if table.format == "jsonl":
        batches = _batches([f for f in files if f.path not in careful])
        if any(f.path in careful for f in files):   # DuckDB failed on these: split in Python only
            batches.append([f for f in files if f.path in careful])
        for batch in batches:
            _read_jsonl_batch(con, table, batch, now, in_python=batch[0].path in careful)
        return
    groups: dict[tuple, list[LandingFile]] = {}
    for f in files:
        groups.setdefault(f.columns, []).append(f)
    for columns, group in groups.items():
        names = list(columns) if table.format == "csv" else [name for name, _ in columns]
        resolved, unexpected, drift = resolve_columns(table, names)
        for f in group:
            f.drift = drift
        for batch in _batches(group):
            if table.format == "csv":
                _read_csv_batch(con, table, names, resolved, unexpected, batch, now)
            else:
                _read_parquet_batch(con, table, resolved, unexpected, batch, now)


# -- helpers shared by the formats ----------------------------------------------------------------------------------
def _names(*prefixes: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{p}_{tag}" for p in prefixes]


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _batches(files: list[LandingFile]) -> list[list[LandingFile]]:
    out: list[list[LandingFile]] = []
    size = 0
    for f in files:
        if not out or (size + f.size > BATCH_BYTES and out[-1]):
            out.append([])
            size = 0
        out[-1].append(f)
        size += f.size
    return out


def _reject_reason(error_type: str, message: str) -> str:
    if error_type == "INVALID ENCODING":
        return _ENCODING
    return f"{_CSV_REASONS.get(error_type, error_type.lower())}: {message}"


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0]


def probe(source_sql: str) -> str | None:
    """DuckDB's error reading ``source_sql`` on a scratch connection (a failed statement would abort the day's
    transaction), or None when it reads."""
    try:
        with duckdb.connect() as scratch:
            # Every column's values, not count(*): a Parquet count is answered from the footer alone.
            scratch.execute(f"SELECT min(COLUMNS(*)::VARCHAR) FROM {source_sql}").fetchall()
    except duckdb.Error as e:
        return _first_line(e)
    return None


def _stage(con, table: Table, batch: list[LandingFile], sql: str, probe_file, params: list | None = None) -> None:
    """Run the statement that reads the batch's files; on failure, find the files to blame (see ReadFailed), with
    DuckDB's error naming each by its landing path."""
    try:
        con.execute(sql, params)
    except duckdb.Error as e:
        culprits = {f.path: err.replace(str(f.read_path or f.path), f.rel) for f in batch
                    if (err := probe_file(f.read_path or f.path))}
        raise ReadFailed(table, batch, _first_line(e), culprits) from e


def _duckdb_rejects(con, rj: str, rs: str) -> dict[int, list[tuple]]:
    """DuckDB's rejected records of one read, per file index: (line, byte position, type, message, text)."""
    rows = con.execute(f"SELECT file_id, line, min(line_byte_position), min(error_type), min(error_message), "
                       f"min(csv_line) FROM {rj} GROUP BY file_id, line ORDER BY file_id, line").fetchall()
    con.execute(f"DROP TABLE IF EXISTS {rj}; DROP TABLE IF EXISTS {rs}")
    out: dict[int, list[tuple]] = {}
    for file_id, *rest in rows:
        out.setdefault(int(file_id), []).append(tuple(rest))
    return out


def _file_stats(con, stg: str, batch: list[LandingFile]) -> tuple[list[int], list[int]]:
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


def _files_sql(batch: list[LandingFile], first: list[int]) -> str:
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


def _select_list(table: Table, resolved: dict[str, str], expr_for) -> str:
    return ", ".join(f'{expr_for(resolved[c])} AS "{c}"' if c in resolved else f'NULL::VARCHAR AS "{c}"'
                     for c in table.columns)


def _insert(con, table: Table, select: str, extra: str, line: str, from_sql: str, now,
            arrow: pa.Table | None = None) -> None:
    sql = f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', f._rel, {line}, f._day, ?, {extra} FROM {from_sql}"""
    if arrow is None:
        con.execute(sql, [now])
    else:
        with_arrow(con, arrow, sql, [now])


# -- CSV ------------------------------------------------------------------------------------------------------------
def csv_source(paths: list[Path], ncols: int, rj: str, rs: str) -> str:
    cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(ncols)) + "}"
    return (f"read_csv({_sql_list(paths)}, header=true, columns={cols}, auto_detect=false, delim=',', quote='\"', "
            f"escape='\"', store_rejects=true, rejects_table='{rj}', rejects_scan='{rs}', max_line_size={MAX_LINE})")


def _place_csv_rejects(f: LandingFile, rejected: list[tuple], n_good: int) -> list[int]:
    """Slow path: reject rows of one file, placed by byte position and read back from the file (DuckDB's line
    numbers and text are not exact: see gtm_pipeline.ingest.rawlines); returns the physical line of each good record."""
    phys = PhysicalLines(f.path)
    at = PhysicalLines(f.read_path) if f.read_path else phys   # where DuckDB's byte positions point
    f.rejects.extend((n, "parse", _LONE_CR, phys.line(n)) for n in f.pre_rejects)
    lines, spans = place_rejected_records(at, [(line, bpos, _reject_reason(etype, emsg), text)
                                               for line, bpos, etype, emsg, text in rejected], set(f.pre_rejects))
    f.rejects.extend((n, "parse", why, phys.line(n)) for n, why in lines)
    return good_record_lines(at, 1, spans, n_good)


def _read_csv_batch(con, table: Table, header: list[str], resolved: dict[str, str], unexpected: list[str],
                    batch: list[LandingFile], now) -> None:
    stg, rj, rs = _names("stg", "rj", "rs")
    cols = ", ".join(f"c{i}" for i in range(len(header)))
    src = csv_source([f.read_path or f.path for f in batch], len(header), rj, rs)
    _stage(con, table, batch, f"CREATE TEMP TABLE {stg} AS SELECT row_number() OVER () AS _k, file_index AS _f, "
                              f"{cols} FROM {src}",
           lambda p: probe(csv_source([p], len(header), *_names("rj", "rs"))))
    rejected = _duckdb_rejects(con, rj, rs)
    n_good, first = _file_stats(con, stg, batch)
    # Record k of a file is on line k + 1, unless DuckDB rejected something, or its records and physical lines
    # differ (blank lines, quoted line breaks, lines swallowed by an open quote): such a file is read again on its
    # own, because DuckDB 2.0 drops some rejects of a multi-file read (an unterminated quote in a file that is not
    # the last one, measured on the generated crm exports) while a single-file read keeps them.
    again = [i for i, f in enumerate(batch) if rejected.get(i) or f.pre_rejects or _lines(f) != n_good[i] + 1]
    if again:
        con.execute(f"DELETE FROM {stg} WHERE _f IN (SELECT unnest(?::BIGINT[]))", [again])
    slow: dict[str, list] = {"_f": [], "k": [], "line": []}
    base = sum(n_good)
    for i in again:
        f = batch[i]
        rj, rs = _names("rj", "rs")
        inserted = con.execute(f"INSERT INTO {stg} SELECT row_number() OVER () + {base}, {i}, {cols} "
                               f"FROM {csv_source([f.read_path or f.path], len(header), rj, rs)}").fetchall()
        n_good[i], first[i] = int(inserted[0][0]), base + 1
        base += n_good[i]
        lines = _place_csv_rejects(f, _duckdb_rejects(con, rj, rs).get(0, []), n_good[i])
        slow["_f"] += [i] * len(lines)
        slow["k"] += range(1, len(lines) + 1)
        slow["line"] += lines
    for i, f in enumerate(batch):
        f.rows = n_good[i]
    files = _files_sql(batch, first)
    pos_of = {name: i for i, name in enumerate(header)}
    extra = ("json_object(" + ", ".join(f"'{u}', s.c{pos_of[u]}" for u in unexpected) + ")") if unexpected else "NULL"
    select = _select_list(table, resolved, lambda found: f"s.c{pos_of[found]}")
    if not slow["_f"]:
        _insert(con, table, select, extra, "s._k - f._first + 2", f"{stg} s JOIN {files} ON f._f = s._f", now)
    else:
        _insert(con, table, select, extra, "coalesce(p.line, s._k - f._first + 2)",
                f"{stg} s JOIN {files} ON f._f = s._f LEFT JOIN {{arrow}} p ON p._f = s._f "
                f"AND p.k = s._k - f._first + 1", now,
                arrow=pa.table({k: pa.array(v, pa.int64()) for k, v in slow.items()}))
    con.execute(f"DROP TABLE {stg}")


# -- JSONL ----------------------------------------------------------------------------------------------------------
def _lines_source(paths: list[Path], rj: str, rs: str) -> str:
    # One column per physical line: no quoting, a delimiter that never occurs in JSON text.
    return (f"read_csv({_sql_list(paths)}, columns={{'_raw': 'VARCHAR'}}, header=false, delim='\\x01', quote='', "
            f"escape='', auto_detect=false, strict_mode=false, store_rejects=true, rejects_table='{rj}', "
            f"rejects_scan='{rs}', max_line_size={MAX_LINE})")


def _split_lines(f: LandingFile, i: int, k0: int, out: dict[str, list]) -> None:
    """Slow path: the file's lines split in Python, exactly as PhysicalLines numbers them (DuckDB also splits at a
    lone CR and drops a line it rejects), each decoded or rejected; appended to ``out`` from row number ``k0``."""
    phys = PhysicalLines(f.path)
    for n in range(1, len(phys) + 1):
        raw = phys.line(n)
        if len(raw) > MAX_LINE:
            f.rejects.append((n, "parse", f"line too long: {len(raw)} bytes, at most {MAX_LINE}", raw))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            f.rejects.append((n, "parse", _ENCODING, raw))
            continue
        out["_k"].append(k0 + len(out["_k"]))
        out["_f"].append(i)
        out["_line"].append(n)
        out["_raw"].append(text.removeprefix("\ufeff") if n == 1 else text)


def _read_jsonl_batch(con, table: Table, batch: list[LandingFile], now, in_python: bool) -> None:
    stg, rj, rs = _names("stg", "rj", "rs")
    if in_python:
        con.execute(f"CREATE TEMP TABLE {stg} (_k BIGINT, _f BIGINT, _line BIGINT, _raw VARCHAR)")
        rejected, (n_read, first) = {}, ([-1] * len(batch), [0] * len(batch))
    else:
        src = _lines_source([f.path for f in batch], rj, rs)
        _stage(con, table, batch, f"CREATE TEMP TABLE {stg} AS SELECT row_number() OVER () AS _k, file_index AS _f, "
                                  f"NULL::BIGINT AS _line, _raw FROM {src}",
               lambda p: probe(_lines_source([p], *_names("rj", "rs"))))
        rejected = _duckdb_rejects(con, rj, rs)
        n_read, first = _file_stats(con, stg, batch)
    slow = [i for i, f in enumerate(batch) if rejected.get(i) or n_read[i] != _lines(f)]
    if slow:
        split: dict[str, list] = {"_k": [], "_f": [], "_line": [], "_raw": []}
        for i in slow:
            # after every staged row number (1 .. rows read), so each row keeps a unique _k
            _split_lines(batch[i], i, sum(max(n, 0) for n in n_read) + 1, split)
        con.execute(f"DELETE FROM {stg} WHERE _f IN (SELECT unnest(?::BIGINT[]))", [slow])
        with_arrow(con, pa.table(split, schema=pa.schema(
            [("_k", pa.int64()), ("_f", pa.int64()), ("_line", pa.int64()), ("_raw", pa.string())])),
            f"INSERT INTO {stg} SELECT * FROM {{arrow}}")
    lines = (f"SELECT s._k, s._f, f._rel, f._day, coalesce(s._line, s._k - f._first + 1) AS _line, s._raw "
             f"FROM {stg} s JOIN {_files_sql(batch, first)} ON f._f = s._f WHERE {_NOT_BLANK}")
    keys = _json_keys_and_bad_lines(con, stg, lines, batch)
    _insert_jsonl(con, table, batch, keys, lines, now)
    con.execute(f"DROP TABLE {stg}")


def _json_keys_and_bad_lines(con, stg: str, lines: str, batch: list[LandingFile]) -> dict[int, set[str]]:
    """One pass: the keys each file uses and its rows, and every line that is not a JSON object (rejected
    with the parser's reason, and deleted from the staged rows). Rows group by their key list, which rarely varies,
    so the answer is small; each bad line is a group of its own. json_keys raises on invalid JSON (a failed statement
    aborts the day), so json_valid guards it: a third of the cost of try(json_keys(...)) on the web exports."""
    groups = con.execute(f"""SELECT _f, ks, bad_k, count(*), any_value(_line), any_value(_raw) FROM (
        SELECT _f, _line, _raw, ks,
               CASE WHEN ks IS NULL OR (len(ks) = 0 AND json_type(_raw) <> 'OBJECT') THEN _k END AS bad_k
        FROM (SELECT *, CASE WHEN json_valid(_raw) THEN json_keys(_raw) END AS ks FROM ({lines})))
        GROUP BY _f, ks, bad_k""").fetchall()
    keys: dict[int, set[str]] = {i: set() for i in range(len(batch))}
    bad_k, phys = [], {}
    for i, ks, bad, n, line, raw in sorted(groups, key=lambda g: (g[0], g[4])):
        f = batch[i]
        if bad is None:
            keys[i].update(ks)
            f.rows += n
            continue
        bad_k.append(bad)
        try:
            json.loads(raw)
            why = "not a JSON object"
        except json.JSONDecodeError as e:
            why = f"invalid JSON: {e.msg} at column {e.colno}"
        if i not in phys:
            phys[i] = PhysicalLines(f.path)
        f.rejects.append((int(line), "parse", why, phys[i].line(int(line))))  # the file's bytes, not DuckDB's text
    if bad_k:
        con.execute(f"DELETE FROM {stg} WHERE _k IN (SELECT unnest(?::BIGINT[]))", [bad_k])
    return keys


def _insert_jsonl(con, table: Table, batch: list[LandingFile], keys: dict[int, set[str]], lines: str, now) -> None:
    """One insert per distinct column mapping (usually one for the whole batch: files of one export share keys)."""
    by_mapping: dict[tuple, list[int]] = {}
    for i, f in enumerate(batch):
        resolved, unexpected, drift = resolve_columns(table, sorted(keys[i]))
        f.drift = drift
        by_mapping.setdefault((tuple(resolved.items()), tuple(unexpected)), []).append(i)

    def path_of(key: str) -> str:
        return "'$.\"" + key.replace("'", "''").replace('"', '\\"') + "\"'"

    for (resolved_items, unexpected), idx in by_mapping.items():
        resolved = dict(resolved_items)
        extra = ("json_object(" + ", ".join(f"'{u}', json_extract(_raw, {path_of(u)})" for u in unexpected) + ")"
                 if unexpected else "NULL")
        # One parse per line: json_extract_string with a list of paths returns every value at once.
        found = [resolved[c] for c in table.columns if c in resolved]
        slot = {name: n + 1 for n, name in enumerate(found)}
        values = f"json_extract_string(_raw, [{', '.join(path_of(x) for x in found)}])" if found else "NULL"
        where = "" if len(by_mapping) == 1 else f"WHERE _f IN ({', '.join(map(str, idx))})"
        _insert(con, table, _select_list(table, resolved, lambda x, slot=slot: f"_v[{slot[x]}]"), extra, "f._line",
                f"(SELECT *, {values} AS _v FROM ({lines}) {where}) f", now)


# -- Parquet --------------------------------------------------------------------------------------------------------
def _read_parquet_batch(con, table: Table, resolved: dict[str, str], unexpected: list[str], batch: list[LandingFile],
                        now) -> None:
    extra = ("json_object(" + ", ".join(f"'{u}', CAST(p.\"{u}\" AS VARCHAR)" for u in unexpected) + ")"
             if unexpected else "NULL")
    select = _select_list(table, resolved, lambda found: f'CAST(p."{found}" AS VARCHAR)')
    src = f"read_parquet({_sql_list([f.path for f in batch])}, file_row_number=true)"
    _stage(con, table, batch, f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', f._rel, p.file_row_number + 1, f._day, ?, {extra}
        FROM {src} p JOIN {_files_sql(batch, [0] * len(batch))} ON f._f = p.file_index""",
           lambda path: probe(f"read_parquet({_sql_list([path])})"), [now])


def _lines(f) -> int:
    """The file's physical line count from its scan; -1 (never equal to a count) for a file that was not scanned,
    which sends it to the exact per-file path."""
    return f.scan.lines if f.scan is not None else -1
