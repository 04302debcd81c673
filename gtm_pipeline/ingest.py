"""Ingestion: landing files of one source and one delivery day into ``raw.<source>_<table>`` as text.

Every record of a landing file ends in exactly one of two places: its raw table (as text, typed later by the clean
stage) or ``raw.rejects`` with the file, the line, the raw text and a reason. Re-ingesting a day first deletes that
day's rows, rejects and drift reports, inside one transaction, so a re-run replaces the day exactly.

Row work stays in DuckDB (its CSV reader and JSON functions); Python only reads headers and, for the rare files with
rejected lines, maps good records back to their physical line numbers.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.errors import IngestError
from gtm_pipeline.landing import LandingSpec, Table
from gtm_pipeline.datatime import PUBLISHED, delivery_cutoff, record_partitions
from gtm_pipeline.warehouse import ensure_base, utcnow

LINEAGE_COLUMNS = ("_source", "_table", "_file", "_line", "_partition", "_ingested_at", "_extra")

_CSV_REASONS = {
    "MISSING COLUMNS": "missing field(s)",
    "TOO MANY COLUMNS": "extra field(s)",
    "UNQUOTED VALUE": "unterminated or misplaced quote",
    "INVALID ENCODING": "not valid UTF-8 (re-export the file as UTF-8; latin-1/cp1252 bytes found)",
    "LINE SIZE OVER MAXIMUM": "line too long",
}


@dataclass
class Drift:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)  # "alias->column"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.renamed)

    def describe(self) -> str:
        parts = []
        if self.missing:
            parts.append("missing columns: " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected columns: " + ", ".join(self.unexpected))
        if self.renamed:
            parts.append("renamed (known alias): " + ", ".join(self.renamed))
        return "; ".join(parts)


@dataclass
class TableReport:
    table: str
    file: str | None
    rows: int = 0
    rejected: int = 0
    drift: Drift | None = None
    note: str = ""


@dataclass
class IngestReport:
    source: str
    day: str
    tables: list[TableReport] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def rejected(self) -> int:
        return sum(t.rejected for t in self.tables)

    @property
    def drifts(self) -> list[TableReport]:
        return [t for t in self.tables if t.drift]


def ensure_raw_table(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    cols = ", ".join(f'"{c}" VARCHAR' for c in table.columns)
    con.execute(f"""CREATE TABLE IF NOT EXISTS raw.{table.raw_table} ({cols},
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT, _partition DATE,
        _ingested_at TIMESTAMP, _extra VARCHAR)""")


def _resolve_columns(table: Table, found: list[str]) -> tuple[dict[str, str], list[str], Drift]:
    """Map canonical column -> found column name; return unexpected names and the drift report."""
    alias_of = {alt: col for col, alts in table.aliases.items() for alt in alts}
    resolved: dict[str, str] = {}
    unexpected: list[str] = []
    drift = Drift()
    for name in found:
        if name in table.columns and name not in resolved:
            resolved[name] = name
        elif name in alias_of and alias_of[name] not in resolved:
            resolved[alias_of[name]] = name
            drift.renamed.append(f"{name}->{alias_of[name]}")
        else:
            unexpected.append(name)
    drift.missing = [c for c in table.columns if c not in resolved]
    drift.unexpected = unexpected
    return resolved, unexpected, drift


def _count_lines(path: Path) -> int:
    n = 0
    last = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (1 if last not in (b"", b"\n") else 0)


def _line_bytes(path: Path, byte_pos: int | None) -> str | None:
    """The exact bytes of a rejected line (DuckDB shows undecodable bytes as '?'); backslash-escaped if not UTF-8."""
    if byte_pos is None:
        return None
    with path.open("rb") as f:
        f.seek(byte_pos)
        raw = f.readline().rstrip(b"\r\n")
    return raw.decode("utf-8", errors="backslashreplace")


def _good_lines(path: Path, header_lines: int, rejected_spans: list[tuple[int, int]], n_good: int,
                csv_quoting: bool) -> list[int]:
    # CSV: DuckDB skips blank lines, so they are not candidates. JSONL is read line by line (blank lines come back
    # as NULL rows and are dropped later), so every physical line is a candidate.
    """Physical line of each good record, in order, given the rejected records' (first line, line count)."""
    covered = set(range(1, header_lines + 1))
    for start, span in rejected_spans:
        covered.update(range(start, start + max(span, 1)))
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    candidates = [i + 1 for i, ln in enumerate(lines)
                  if (i + 1) not in covered and (not csv_quoting or ln.strip(b"\r") != b"")]
    if len(candidates) == n_good:
        return candidates
    if csv_quoting:
        # A quoted field spans lines: walk records with the csv module to find where each starts.
        text = b"\n".join(lines).decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text))
        starts, prev_end = [], 0
        # An unterminated quote can swallow the rest of a large file into one field: lift the csv module's 128 KiB
        # field limit for this walk (found by `gtm-pipeline bench` at 5M rows: the whole crm day failed).
        limit = csv.field_size_limit()
        csv.field_size_limit(max(limit, len(text) + 1))
        try:
            for _ in reader:
                starts.append(prev_end + 1)
                prev_end = reader.line_num
        finally:
            csv.field_size_limit(limit)
        starts = [s for s in starts if s not in covered]
        if len(starts) == n_good:
            return starts
    # Cannot align exactly: number by order and say so in the report (never drop rows over a line number).
    return list(range(header_lines + 1, header_lines + 1 + n_good))


def _insert_rejects(con, table: Table, rel: str, day: str, now: datetime, rows: list[tuple[int | None, str, str, str]]) -> None:
    if rows:
        con.executemany(
            "INSERT INTO raw.rejects VALUES (?, ?, ?, ?, ?, 'ingest', ?, ?, ?, ?)",
            [(table.source, table.name, rel, line, day, rule, reason, raw, now) for line, rule, reason, raw in rows])


def _load_positions(con, n: int, lines: list[int]) -> str:
    name = f"pos_{uuid.uuid4().hex[:8]}"
    con.execute(f"CREATE TEMP TABLE {name} (k BIGINT, line BIGINT)")
    import pyarrow as pa  # local: only needed on the rare path with rejected lines

    arrow = pa.table({"k": pa.array(range(1, n + 1), pa.int64()), "line": pa.array(lines, pa.int64())})
    con.register(f"{name}_src", arrow)
    con.execute(f"INSERT INTO {name} SELECT * FROM {name}_src")
    con.unregister(f"{name}_src")
    return name


def _select_list(table: Table, resolved: dict[str, str], expr_for) -> str:
    parts = []
    for col in table.columns:
        parts.append(f'{expr_for(resolved[col])} AS "{col}"' if col in resolved else f'NULL::VARCHAR AS "{col}"')
    return ", ".join(parts)


def _ingest_csv(con, table: Table, path: Path, rel: str, day: str, now: datetime) -> TableReport:
    rep = TableReport(table=table.qualified, file=rel)
    with path.open("rb") as f:
        head = f.readline()
    if not head.strip():
        rep.note = "empty file"
        return rep
    try:
        header_text = head.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as e:
        _insert_rejects(con, table, rel, day, now, [(1, "encoding", f"header is not valid UTF-8 ({e}); re-export as UTF-8",
                                                     head.decode("utf-8", errors="backslashreplace"))])
        rep.rejected = 1
        rep.note = "header not UTF-8: whole file rejected"
        return rep
    header = next(csv.reader([header_text]))
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        _insert_rejects(con, table, rel, day, now, [(1, "schema", f"duplicate column names in header: {dups}", header_text)])
        rep.rejected = 1
        rep.note = "duplicate header columns: whole file rejected"
        return rep
    resolved, unexpected, drift = _resolve_columns(table, header)
    rep.drift = drift or None
    pos = {name: i for i, name in enumerate(header)}
    rj, rs = f"rj_{uuid.uuid4().hex[:8]}", f"rs_{uuid.uuid4().hex[:8]}"
    cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(header))) + "}"
    src = (f"read_csv('{_sql_path(path)}', header=true, columns={cols}, auto_detect=false, delim=',', quote='\"', "
           f"escape='\"', store_rejects=true, rejects_table='{rj}', rejects_scan='{rs}', max_line_size=10000000)")
    staged = f"stg_{uuid.uuid4().hex[:8]}"
    try:
        con.execute(f"CREATE TEMP TABLE {staged} AS SELECT row_number() OVER () AS _k, * FROM {src}")
    except duckdb.Error as e:
        raise IngestError(f"{rel}: cannot read CSV: {str(e).splitlines()[0]}") from e
    n_good = con.execute(f"SELECT count(*) FROM {staged}").fetchone()[0]
    rej = con.execute(f"SELECT line, min(line_byte_position), min(error_type), min(error_message), min(csv_line) "
                      f"FROM {rj} GROUP BY line ORDER BY line").fetchall()
    reject_rows, spans = [], []
    for line, bpos, etype, emsg, csv_line in rej:
        text = _line_bytes(path, bpos) if etype == "INVALID ENCODING" else (csv_line or "").rstrip("\n")
        reason = _reject_reason(etype, emsg)
        # A quote left open swallows the following lines into one rejected record: reject each physical line on its
        # own, so every line of the file is accounted for once and can be found by its number.
        parts = text.split("\n") if text else [text]
        start = int(line)
        reject_rows.append((start, "parse", reason, parts[0]))
        for k, part in enumerate(parts[1:], start=1):
            reject_rows.append((start + k, "parse", f"read as part of the record that starts on line {start} "
                                                    f"({reason})", part))
        spans.append((start, len(parts)))
    con.execute(f"DROP TABLE IF EXISTS {rj}; DROP TABLE IF EXISTS {rs}")
    _insert_rejects(con, table, rel, day, now, reject_rows)
    total_lines = _count_lines(path)
    if not reject_rows and total_lines == n_good + 1:
        line_expr, join = "_k + 1", ""
    else:
        lines = _good_lines(path, 1, spans, n_good, csv_quoting=True)
        pos_table = _load_positions(con, n_good, lines)
        line_expr, join = "p.line", f"JOIN {pos_table} p ON p.k = s._k"
    extra = ("json_object(" + ", ".join(f"'{u}', s.c{pos[u]}" for u in unexpected) + ")") if unexpected else "NULL"
    select = _select_list(table, resolved, lambda found: f"s.c{pos[found]}")
    con.execute(f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', ?, {line_expr}, ?::DATE, ?, {extra}
        FROM {staged} s {join}""", [rel, day, now])
    con.execute(f"DROP TABLE {staged}")
    rep.rows, rep.rejected = int(n_good), len(reject_rows)
    return rep


# Not a blank line: NULL or trim(_raw) = '' is blank. Written so trim() (a copy of every line) runs only on lines that
# start with a space: five times faster on large files, same rows.
_NOT_BLANK = "_raw IS NOT NULL AND _raw <> '' AND (NOT starts_with(_raw, ' ') OR trim(_raw) <> '')"


def _ingest_jsonl(con, table: Table, path: Path, rel: str, day: str, now: datetime) -> TableReport:
    rep = TableReport(table=table.qualified, file=rel)
    rj, rs = f"rj_{uuid.uuid4().hex[:8]}", f"rs_{uuid.uuid4().hex[:8]}"
    # One column per physical line: no quoting, a delimiter that never occurs in JSON text.
    src = (f"read_csv('{_sql_path(path)}', columns={{'_raw': 'VARCHAR'}}, header=false, delim='\\x01', quote='', "
           f"escape='', auto_detect=false, strict_mode=false, store_rejects=true, rejects_table='{rj}', "
           f"rejects_scan='{rs}', max_line_size=10000000)")
    staged = f"stg_{uuid.uuid4().hex[:8]}"
    try:
        con.execute(f"CREATE TEMP TABLE {staged} AS SELECT row_number() OVER () AS _k, _raw FROM {src}")
    except duckdb.Error as e:
        raise IngestError(f"{rel}: cannot read JSONL: {str(e).splitlines()[0]}") from e
    rej = con.execute(f"SELECT line, min(line_byte_position), min(error_type), min(error_message) FROM {rj} "
                      f"GROUP BY line ORDER BY line").fetchall()
    con.execute(f"DROP TABLE IF EXISTS {rj}; DROP TABLE IF EXISTS {rs}")
    reject_rows = [(int(line), "parse", _reject_reason(et, em), _line_bytes(path, bp)) for line, bp, et, em in rej]
    _insert_rejects(con, table, rel, day, now, reject_rows)
    n_read = con.execute(f"SELECT count(*) FROM {staged}").fetchone()[0]
    if reject_rows:
        lines = _good_lines(path, 0, [(r[0], 1) for r in reject_rows], n_read, csv_quoting=False)
        # blank lines are not records; _good_lines skipped them, so realign on non-blank rows only
        pos_table = _load_positions(con, n_read, lines)
        con.execute(f"CREATE TEMP TABLE {staged}_l AS SELECT s._k, s._raw, p.line AS _line FROM {staged} s "
                    f"JOIN {pos_table} p ON p.k = s._k WHERE {_NOT_BLANK}")
    else:
        con.execute(f"CREATE TEMP TABLE {staged}_l AS SELECT _k, _raw, _k AS _line FROM {staged} WHERE {_NOT_BLANK}")
    con.execute(f"DROP TABLE {staged}")
    staged = f"{staged}_l"
    # Blank lines are not records (filtered above, in the copy: a DELETE would cost a second pass); everything else
    # must be a JSON object or it is rejected with the parser's reason.
    bad = con.execute(f"SELECT _line, _raw FROM {staged} WHERE NOT coalesce(json_valid(_raw), false) "
                      f"OR json_type(_raw) <> 'OBJECT' ORDER BY _line").fetchall()
    bad_rows = []
    for line, raw in bad:
        try:
            json.loads(raw)
            why = "not a JSON object"
        except json.JSONDecodeError as e:
            why = f"invalid JSON: {e.msg} at column {e.colno}"
        bad_rows.append((int(line), "parse", why, raw))
    _insert_rejects(con, table, rel, day, now, bad_rows)
    reject_rows.extend(bad_rows)
    if bad_rows:  # usually none: skip a second parse of every line
        con.execute(f"DELETE FROM {staged} WHERE _line IN (SELECT unnest(?::BIGINT[]))", [[r[0] for r in bad_rows]])
    keys = [r[0] for r in con.execute(f"SELECT DISTINCT unnest(json_keys(_raw)) AS k FROM {staged} ORDER BY k").fetchall()]
    resolved, unexpected, drift = _resolve_columns(table, keys)
    rep.drift = drift or None

    def path_of(key: str) -> str:
        return "'$.\"" + key.replace("'", "''").replace('"', '\\"') + "\"'"

    extra = ("json_object(" + ", ".join(f"'{u}', json_extract(_raw, {path_of(u)})" for u in unexpected) + ")"
             if unexpected else "NULL")
    # One parse per line: json_extract_string with a list of paths returns every value at once (same values as one
    # call per path, at a third of the cost on wide exports).
    found = [resolved[c] for c in table.columns if c in resolved]
    slot = {name: i + 1 for i, name in enumerate(found)}
    paths = "[" + ", ".join(path_of(f) for f in found) + "]"
    select = _select_list(table, resolved, lambda f: f"_v[{slot[f]}]")
    values = f"json_extract_string(_raw, {paths}) AS _v" if found else "NULL AS _v"
    con.execute(f"""INSERT INTO raw.{table.raw_table}
        SELECT {select}, '{table.source}', '{table.name}', ?, _line, ?::DATE, ?, {extra}
        FROM (SELECT _raw, _line, {values} FROM {staged})""", [rel, day, now])
    rep.rows = con.execute(f"SELECT count(*) FROM {staged}").fetchone()[0]
    rep.rejected = len(reject_rows)
    con.execute(f"DROP TABLE {staged}")
    return rep


def _ingest_parquet(con, table: Table, path: Path, rel: str, day: str, now: datetime) -> TableReport:
    rep = TableReport(table=table.qualified, file=rel)
    src = f"read_parquet('{_sql_path(path)}', file_row_number=true)"
    # Probe the footer with pyarrow: a failed DuckDB statement would abort the day's transaction.
    import pyarrow.parquet as pq

    try:
        names = list(pq.read_schema(path).names)
        pq.ParquetFile(path).metadata  # noqa: B018 - raises on a corrupt footer
    except Exception as e:  # pyarrow raises several types for corrupt files; all mean "unreadable"
        reason = f"cannot read Parquet file: {str(e).splitlines()[0]}"
        _insert_rejects(con, table, rel, day, now, [(None, "parse", reason, None)])
        rep.rejected, rep.note = 1, "unreadable file: rejected whole"
        return rep
    resolved, unexpected, drift = _resolve_columns(table, names)
    rep.drift = drift or None
    extra = ("json_object(" + ", ".join(f"'{u}', CAST(\"{u}\" AS VARCHAR)" for u in unexpected) + ")"
             if unexpected else "NULL")
    select = _select_list(table, resolved, lambda found: f'CAST("{found}" AS VARCHAR)')
    try:
        con.execute(f"""INSERT INTO raw.{table.raw_table}
            SELECT {select}, '{table.source}', '{table.name}', ?, file_row_number + 1, ?::DATE, ?, {extra}
            FROM {src}""", [rel, day, now])
    except duckdb.Error as e:
        raise IngestError(f"{rel}: cannot read Parquet rows: {str(e).splitlines()[0]}") from e
    rep.rows = con.execute(f"SELECT count(*) FROM raw.{table.raw_table} WHERE _file = ? AND _partition = ?::DATE",
                           [rel, day]).fetchone()[0]
    return rep


def _reject_reason(error_type: str, message: str) -> str:
    if error_type == "INVALID ENCODING":
        return _CSV_REASONS[error_type]
    return f"{_CSV_REASONS.get(error_type, error_type.lower())}: {message}"


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


_READERS = {"csv": _ingest_csv, "jsonl": _ingest_jsonl, "parquet": _ingest_parquet}


def ingest_day(con: duckdb.DuckDBPyConnection, spec: LandingSpec, landing_dir: Path, source: str, day: str,
               now: datetime | None = None) -> IngestReport:
    """Replace one delivery day of one source in the raw tables, atomically."""
    return ingest_days(con, spec, landing_dir, source, [day], now=now)[0]


def ingest_days(con: duckdb.DuckDBPyConnection, spec: LandingSpec, landing_dir: Path, source: str, days: list[str],
                now: datetime | None = None, progress=None) -> list[IngestReport]:
    """Replace several delivery days of one source in the raw tables, in one transaction (all or nothing).

    ``progress``, if given, is called as ``progress(done_days, total_days)`` after each day.
    """
    if source not in spec.sources:
        raise IngestError(f"unknown source {source!r}; known: {', '.join(spec.sources)}")
    for d in days:
        if not (len(d) == 10 and d[4] == "-" and d[7] == "-" and d.replace("-", "").isdigit()):
            raise IngestError(f"not a delivery day (YYYY-MM-DD): {d!r}")
    ensure_base(con)
    now = now or utcnow()
    tables = spec.sources[source].tables
    for table in tables:
        ensure_raw_table(con, table)
    days = sorted(set(days))
    in_days = "(" + ", ".join(f"DATE '{d}'" for d in days) + ")"
    reports = []
    con.execute("BEGIN TRANSACTION")
    try:
        for table in tables:
            con.execute(f"DELETE FROM raw.{table.raw_table} WHERE _partition IN {in_days}")
            con.execute(f"DELETE FROM raw.rejects WHERE _source = ? AND _table = ? AND _partition IN {in_days} "
                        f"AND stage = 'ingest'", [source, table.name])
            con.execute(f"DELETE FROM raw.schema_drift WHERE _source = ? AND _table = ? AND _partition IN {in_days}",
                        [source, table.name])
        con.execute(f"DELETE FROM ops.partition_status WHERE asset_key = ? AND partition_key IN {in_days}",
                    [f"raw/{source}"])
        for n, day in enumerate(days, 1):
            report = IngestReport(source=source, day=day)
            for table in tables:
                path = table.file_for(landing_dir, day)
                rel = path.relative_to(landing_dir).as_posix()
                if not path.exists():
                    report.tables.append(TableReport(table=table.qualified, file=None, note="no file delivered"))
                    continue
                rep = _READERS[table.format](con, table, path, rel, day, now)
                if rep.drift:
                    con.execute("INSERT INTO raw.schema_drift VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                [source, table.name, rel, day, rep.drift.missing, rep.drift.unexpected,
                                 rep.drift.renamed, now])
                report.tables.append(rep)
            if any(t.file for t in report.tables):  # a day with no file delivered is not a delivery
                record_partitions(con, f"raw/{source}", [(day, PUBLISHED, delivery_cutoff(
                    con, spec.sources[source], day, now))], run_id=None, now=now)
            reports.append(report)
            if progress:
                progress(n, len(days))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return reports
