"""Ingestion: landing files of one source and one delivery day into ``raw.<source>_<table>`` as text.

Every record of a landing file ends in exactly one of two places: its raw table (as text, typed later by the clean
stage) or ``raw.rejects`` with the file, the physical line, the line's exact bytes (``raw_bytes``; ``raw_text`` shows
them with undecodable bytes escaped) and a reason. Every file found in the source's day folder is recorded in
``raw.landing_files`` with its size and record count, so the conservation ledger starts from what arrived, not from
what reached raw: a file that cannot be read line by line (0 bytes, a corrupt Parquet footer) is a file reject, and
a file no table reads is ``unclaimed``, with the closest table as a hint (``gtm_pipeline.landing.day_files``).
Re-ingesting a day first deletes that day's rows, rejects, file records and drift reports, inside one transaction,
so a re-run replaces the day exactly.

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
from gtm_pipeline.landing import LandingSpec, Table, day_files, unclaimed_reason
from gtm_pipeline.datatime import PUBLISHED, delivery_cutoff, record_partitions
from gtm_pipeline.rawlines import PhysicalLines, shown
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
    rejected: int = 0                # rows written to raw.rejects: rejected lines, or 1 for a file rejected whole
    drift: Drift | None = None
    note: str = ""
    bytes: int = 0
    file_reject: str | None = None   # why the file was rejected whole (its lines cannot be read one by one)

    @property
    def records(self) -> int:
        """Records the file delivered: its raw rows and rejected lines (a file rejected whole delivers none that
        can be told apart; the ledger counts it as a file)."""
        return self.rows + (0 if self.file_reject else self.rejected)


@dataclass
class IngestReport:
    source: str
    day: str
    tables: list[TableReport] = field(default_factory=list)
    unclaimed: list[tuple[str, str, str | None]] = field(default_factory=list)  # (file, reason, closest table)

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


def _record_span(csv_line: str | None) -> int:
    """Physical lines of a rejected record, from DuckDB's text of it: without the blank lines it sometimes puts
    before the record and the terminator after it (a quote left open swallows the lines that follow)."""
    parts = (csv_line or "").split("\n")
    while len(parts) > 1 and not parts[0].strip("\r"):
        parts.pop(0)
    while len(parts) > 1 and not parts[-1].strip("\r"):
        parts.pop()
    return len(parts)


def _good_lines(phys: PhysicalLines, header_lines: int, rejected_spans: list[tuple[int, int]], n_good: int,
                csv_quoting: bool) -> list[int]:
    # CSV: DuckDB skips blank lines, so they are not candidates. JSONL is read line by line (blank lines come back
    # as NULL rows and are dropped later), so every physical line is a candidate.
    """Physical line of each good record, in order, given the rejected records' (first line, line count)."""
    covered = set(range(1, header_lines + 1))
    for start, span in rejected_spans:
        covered.update(range(start, start + max(span, 1)))
    pool = phys.non_blank() if csv_quoting else range(1, len(phys) + 1)
    candidates = [n for n in pool if n not in covered]
    if len(candidates) == n_good:
        return candidates
    if csv_quoting:
        # A quoted field spans lines: walk records with the csv module to find where each starts.
        text = phys.data.decode("utf-8", errors="replace")
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


_REJECT_COLUMNS = "_source, _table, _file, _line, _partition, stage, rule, reason, raw_text, _ingested_at, raw_bytes"


def _insert_rejects(con, source: str, table: str | None, rel: str, day: str, now: datetime,
                    rows: list[tuple[int | None, str, str, bytes | None]]) -> None:
    """Write rejects (line, rule, reason, the line's exact bytes) of one file; ``raw_text`` shows the bytes escaped.
    Through Arrow: a file rejected whole can have millions of lines."""
    if not rows:
        return
    import pyarrow as pa  # local: only needed on the rare path with rejects

    name = f"rejects_{uuid.uuid4().hex[:8]}"
    arrow = pa.table({
        "line": pa.array([r[0] for r in rows], pa.int64()),
        "rule": pa.array([r[1] for r in rows], pa.string()),
        "reason": pa.array([r[2] for r in rows], pa.string()),
        "raw_text": pa.array([None if r[3] is None else shown(r[3]) for r in rows], pa.string()),
        "raw_bytes": pa.array([r[3] for r in rows], pa.binary()),
    })
    con.register(name, arrow)
    try:
        con.execute(f"INSERT INTO raw.rejects ({_REJECT_COLUMNS}) SELECT ?, ?, ?, line, ?::DATE, 'ingest', rule, "
                    f"reason, raw_text, ?, raw_bytes FROM {name}", [source, table, rel, day, now])
    finally:
        con.unregister(name)


def _reject_file(con, table: Table, rep: TableReport, day: str, now: datetime, rule: str, reason: str) -> TableReport:
    """The file cannot be read line by line (no lines, or not a text format): one reject for the file, no line."""
    _insert_rejects(con, table.source, table.name, rep.file, day, now, [(None, rule, reason, None)])
    rep.rejected, rep.file_reject, rep.note = 1, reason, f"{reason.split(':')[0]}: file rejected"
    return rep


def _reject_every_line(con, table: Table, path: Path, rep: TableReport, day: str, now: datetime, rule: str,
                       reason: str) -> TableReport:
    """A CSV file whose header cannot be used: every line is rejected, line 1 with the reason and the others naming
    it, so each line of the file is still accounted for once (blank lines are not records)."""
    phys = PhysicalLines(path)
    rows = [(n, rule, reason if n == 1 else f"not read: the whole file is rejected ({reason})", phys.line(n))
            for n in phys.non_blank()]
    _insert_rejects(con, table.source, table.name, rep.file, day, now, rows)
    rep.rejected, rep.note = len(rows), f"{reason.split(':')[0]}: whole file rejected"
    return rep


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
        if not PhysicalLines(path).non_blank():
            return _reject_file(con, table, rep, day, now, "file", f"empty file: {rel} holds only blank lines (a CSV "
                                                                  f"export has at least its header line); re-export it")
        return _reject_every_line(con, table, path, rep, day, now, "schema",
                                  "line 1 is blank: a CSV export starts with its header; re-export with the header "
                                  "on line 1")
    try:
        header_text = head.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return _reject_every_line(con, table, path, rep, day, now, "encoding",
                                  f"header is not valid UTF-8 ({e}); re-export as UTF-8")
    header = next(csv.reader([header_text]))
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        return _reject_every_line(con, table, path, rep, day, now, "schema",
                                  f"duplicate column names in header: {dups}; re-export with one column per name")
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
    reject_rows, spans, placed = [], [], set()
    phys = PhysicalLines(path) if rej else None
    for line, bpos, etype, emsg, csv_line in rej:
        reason = _reject_reason(etype, emsg)
        # Placed by byte position and read back from the file (DuckDB's line numbers and text are not exact: see
        # gtm_pipeline.rawlines). A quote left open swallows the following lines into one rejected record: reject
        # each physical line on its own, so every line of the file is accounted for once and can be found by its
        # number.
        start = phys.line_of(int(bpos)) if bpos is not None else int(line)
        span = _record_span(csv_line)
        for n in range(start, min(start + span, len(phys) + 1)):
            if n in placed or phys.is_blank(n):
                continue
            placed.add(n)
            why = reason if n == start else f"read as part of the record that starts on line {start} ({reason})"
            reject_rows.append((n, "parse", why, phys.line(n)))
        spans.append((start, span))
    con.execute(f"DROP TABLE IF EXISTS {rj}; DROP TABLE IF EXISTS {rs}")
    _insert_rejects(con, table.source, table.name, rel, day, now, reject_rows)
    total_lines = _count_lines(path)
    if not reject_rows and total_lines == n_good + 1:
        line_expr, join = "_k + 1", ""
    else:
        lines = _good_lines(phys or PhysicalLines(path), 1, spans, n_good, csv_quoting=True)
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
    phys = PhysicalLines(path) if rej else None
    reject_rows, placed = [], set()
    for line, bp, et, em in rej:  # placed by byte position, read back from the file (see gtm_pipeline.rawlines)
        n = phys.line_of(int(bp)) if bp is not None else int(line)
        if n not in placed:
            placed.add(n)
            reject_rows.append((n, "parse", _reject_reason(et, em), phys.line(n)))
    _insert_rejects(con, table.source, table.name, rel, day, now, reject_rows)
    n_read = con.execute(f"SELECT count(*) FROM {staged}").fetchone()[0]
    if reject_rows:
        lines = _good_lines(phys, 0, [(r[0], 1) for r in reject_rows], n_read, csv_quoting=False)
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
    if bad:
        phys = phys or PhysicalLines(path)
    for line, raw in bad:
        try:
            json.loads(raw)
            why = "not a JSON object"
        except json.JSONDecodeError as e:
            why = f"invalid JSON: {e.msg} at column {e.colno}"
        bad_rows.append((int(line), "parse", why, phys.line(int(line))))  # the file's bytes, not DuckDB's text
    _insert_rejects(con, table.source, table.name, rel, day, now, bad_rows)
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
        return _reject_file(con, table, rep, day, now, "parse",
                            f"cannot read Parquet file: {str(e).splitlines()[0]}; re-export {rel}")
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


def _read_file(con, table: Table, path: Path, rel: str, day: str, now: datetime) -> TableReport:
    size = path.stat().st_size
    if size == 0 and table.format != "jsonl":
        # A 0-byte CSV has lost even its header and a 0-byte Parquet file its footer: a failed export, not an empty
        # day. A 0-byte JSONL file is an empty day (JSONL has no header; the generator writes such files for days
        # without events), so it is read, as 0 records, and still listed in the ledger as a file.
        rep = TableReport(table=table.qualified, file=rel)
        rep = _reject_file(con, table, rep, day, now, "file",
                           f"empty file: {rel} has 0 bytes (a {table.format.upper()} export has at least its "
                           f"{'header line' if table.format == 'csv' else 'footer'}); re-export it")
    else:
        rep = _READERS[table.format](con, table, path, rel, day, now)
    rep.bytes = size
    if rep.drift:
        con.execute("INSERT INTO raw.schema_drift VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [table.source, table.name, rel, day, rep.drift.missing, rep.drift.unexpected, rep.drift.renamed,
                     now])
    return rep


def _record_file(con, source: str, table: str | None, rel: str, day: str, now: datetime, size: int,
                 records: int | None, status: str, reason: str | None, hint: str | None) -> None:
    con.execute("INSERT INTO raw.landing_files (_source, _table, _file, _partition, bytes, records, status, reason, "
                "hint, _ingested_at) VALUES (?, ?, ?, ?::DATE, ?, ?, ?, ?, ?, ?)",
                [source, table, rel, day, size, records, status, reason, hint, now])


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
            con.execute(f"DELETE FROM raw.schema_drift WHERE _source = ? AND _table = ? AND _partition IN {in_days}",
                        [source, table.name])
        # Every ingest reject and file record of the source's days, unclaimed files (no table) included.
        con.execute(f"DELETE FROM raw.rejects WHERE _source = ? AND _partition IN {in_days} AND stage = 'ingest'",
                    [source])
        con.execute(f"DELETE FROM raw.landing_files WHERE _source = ? AND _partition IN {in_days}", [source])
        con.execute(f"DELETE FROM ops.partition_status WHERE asset_key = ? AND partition_key IN {in_days}",
                    [f"raw/{source}"])
        for n, day in enumerate(days, 1):
            report = IngestReport(source=source, day=day)
            found = day_files(landing_dir, spec.sources[source], day)
            for table in tables:
                path = found.claimed.get(table.name)
                if path is None:
                    report.tables.append(TableReport(table=table.qualified, file=None, note="no file delivered"))
                    continue
                rep = _read_file(con, table, path, path.relative_to(landing_dir).as_posix(), day, now)
                _record_file(con, source, table.name, rep.file, day, now, rep.bytes, rep.records,
                             "rejected" if rep.file_reject else "read", rep.file_reject, None)
                report.tables.append(rep)
            for path in found.unclaimed:
                rel = path.relative_to(landing_dir).as_posix()
                reason, hint = unclaimed_reason(spec, landing_dir, path)
                _insert_rejects(con, source, None, rel, day, now, [(None, "unclaimed", reason, None)])
                _record_file(con, source, None, rel, day, now, path.stat().st_size, None, "unclaimed", reason, hint)
                report.unclaimed.append((rel, reason, hint))
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
