"""Ingestion: landing files of one source and a run's delivery days into ``raw.<source>_<table>`` as text.

Every record of a landing file ends in exactly one of two places: its raw table (as text, typed later by the clean
stage) or ``raw.rejects`` with the file, the physical line, the line's exact bytes (``raw_bytes``; ``raw_text`` shows
them with undecodable bytes escaped) and a reason. Every file found in the source's day folders is recorded in
``raw.landing_files`` with its size and record count, so the conservation ledger starts from what arrived, not from
what reached raw: a file that cannot be read line by line (0 bytes, a corrupt Parquet footer) is a file reject, and
a file no table reads is ``unclaimed``, with the closest table as a hint (``gtm_pipeline.ingest.landing.day_files``).
Re-ingesting days first deletes their rows, rejects, file records and drift reports, inside one transaction, so a
re-run replaces them exactly (and a killed run leaves the previous state).

Ingestion works in sets (issue 17 §2): per source table, one DuckDB read over the files of every day of the run
(``gtm_pipeline.ingest.read``), then one insert each for the run's rejects, file records and drift reports. Python
only reads headers, counts newlines, and, for the rare files with rejected lines, maps good records back to their
physical line numbers.
"""

from __future__ import annotations

import csv
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from gtm_pipeline.datatime import PUBLISHED, delivery_cutoff, record_partitions
from gtm_pipeline.errors import IngestError
from gtm_pipeline.ingest.landing import LandingSpec, Source, Table, day_files, unclaimed_reason
from gtm_pipeline.ingest.rawlines import PhysicalLines, normalized_copy, scan_lines, shown
from gtm_pipeline.ingest.read import LandingFile, ReadFailed, csv_source, probe, read_table, with_arrow
from gtm_pipeline.warehouse import ensure_base, transaction, utcnow

__all__ = ["LINEAGE_COLUMNS", "Drift", "IngestReport", "TableReport", "ensure_raw_table", "ingest_day",
           "ingest_days"]

LINEAGE_COLUMNS = ("_source", "_table", "_file", "_line", "_partition", "_ingested_at", "_extra")


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


# -- which files can be read, and how (the set reads themselves are in gtm_pipeline.ingest.read) -------------------
def _readable(table: Table, files: list[LandingFile], scratch: Path, careful: dict[Path, str]) -> list[LandingFile]:
    """The files a set read can take; the others are rejected here, whole or line by line."""
    out = []
    for f in files:
        if f.size == 0 and table.format != "jsonl":
            # A 0-byte CSV has lost even its header and a 0-byte Parquet file its footer: a failed export, not an
            # empty day. A 0-byte JSONL file is an empty day (JSONL has no header; the generator writes such files
            # for days without events): it is read, as 0 records.
            _reject_file(f, "file", f"empty file: {f.rel} has 0 bytes (a {table.format.upper()} export has at least "
                                    f"its {'header line' if table.format == 'csv' else 'footer'}); re-export it")
        elif table.format == "parquet":
            if _parquet_schema(f, careful):
                out.append(f)
        else:
            f.scan = scan_lines(f.path)
            if table.format == "jsonl" or (_csv_header(f) and (
                    (f.path not in careful and f.scan.regular) or _csv_on_its_own(f, scratch))):
                out.append(f)
    return out


def _reject_file(f: LandingFile, rule: str, reason: str) -> None:
    """The file cannot be read line by line (no lines, or not a text format): one reject for the file, no line."""
    f.rejects, f.file_reject, f.note = [(None, rule, reason, None)], reason, f"{reason.split(':')[0]}: file rejected"


def _reject_every_line(f: LandingFile, rule: str, reason: str) -> None:
    """A file that cannot be read as records: every line is rejected, line 1 with the reason and the others naming
    it, so each line of the file is still accounted for once (blank lines are not records)."""
    phys = PhysicalLines(f.path)
    f.rejects = [(n, rule, reason if n == 1 else f"not read: the whole file is rejected ({reason})", phys.line(n))
                 for n in phys.non_blank()]
    f.note = f"{reason.split(':')[0]}: whole file rejected"


def _parquet_schema(f: LandingFile, careful: dict[Path, str]) -> bool:
    """Probe the footer with pyarrow (a failed DuckDB statement would abort the day's transaction); the row count
    comes from it too."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(f.path)
        rows = pq.ParquetFile(f.path).metadata.num_rows
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for corrupt files; all mean "unreadable"
        _reject_file(f, "parse", f"cannot read Parquet file: {str(e).splitlines()[0]}; re-export {f.rel}")
        return False
    if f.path in careful:   # the footer reads but DuckDB cannot read the rows
        _reject_file(f, "parse", f"cannot read Parquet rows: {careful[f.path]}; re-export {f.rel}")
        return False
    f.rows, f.columns = rows, tuple((x.name, str(x.type)) for x in schema)
    return True


def _csv_header(f: LandingFile) -> bool:
    """Read the file's header into ``f.columns``; False when the file was rejected for it."""
    with f.path.open("rb") as fh:
        head = fh.readline()
    if not head.strip():
        if not PhysicalLines(f.path).non_blank():
            _reject_file(f, "file", f"empty file: {f.rel} holds only blank lines (a CSV export has at least its "
                                    f"header line); re-export it")
        else:
            _reject_every_line(f, "schema", "line 1 is blank: a CSV export starts with its header; re-export with "
                                            "the header on line 1")
        return False
    try:
        text = head.decode("utf-8").lstrip("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as e:
        _reject_every_line(f, "encoding", f"header is not valid UTF-8 ({e}); re-export as UTF-8")
        return False
    header = next(csv.reader([text]))
    if len(set(header)) != len(header):
        dups = sorted({h for h in header if header.count(h) > 1})
        _reject_every_line(f, "schema", f"duplicate column names in header: {dups}; re-export with one column per "
                                        f"name")
        return False
    f.columns = tuple(header)
    return True


def _csv_on_its_own(f: LandingFile, scratch: Path) -> bool:
    """A file DuckDB may not read in a batch (mixed line endings, or it failed one): read as is if it reads alone,
    else from a copy with CRLF as LF, else also with the lines holding a lone CR rejected; when nothing reads, every
    line is rejected with DuckDB's reason. Returns whether the file joins a read."""
    error = _probe_csv(f.path, len(f.columns))
    if error is None:
        return True
    for blank in (False, True) if f.scan is not None and f.scan.cr else ():
        copy = scratch / f"{uuid.uuid4().hex}.csv"
        blanked = normalized_copy(f.path, copy, blank_lone_cr=blank)
        if _probe_csv(copy, len(f.columns)) is None:
            f.read_path, f.pre_rejects = copy, blanked
            f.note = "mixed LF and CRLF line endings, read as LF" + (
                f"; {len(blanked)} line(s) with a lone CR rejected" if blanked else "")
            return True
    _reject_every_line(f, "parse", f"cannot be read as CSV ({error}); re-export {f.rel} as UTF-8 CSV with one "
                                   f"kind of line ending")
    return False


def _probe_csv(path: Path, ncols: int) -> str | None:
    return probe(csv_source([path], ncols, f"rj_{uuid.uuid4().hex[:8]}", f"rs_{uuid.uuid4().hex[:8]}"))


class _Bookkeeping:
    """The run's rejects, file records and drift reports, written with one insert each at the end."""

    def __init__(self, source: str):
        self.source = source
        self.rejects: dict[str, list] = {k: [] for k in ("_table", "_file", "_partition", "_line", "rule", "reason",
                                                          "raw_bytes")}
        self.files: dict[str, list] = {k: [] for k in ("_table", "_file", "_partition", "bytes", "records", "status",
                                                        "reason", "hint")}
        self.drift: dict[str, list] = {k: [] for k in ("_table", "_file", "_partition", "missing_columns",
                                                        "unexpected_columns", "renamed")}

    def reject(self, table: str | None, rel: str, day: str, line: int | None, rule: str, reason: str,
               raw: bytes | None) -> None:
        for k, v in zip(self.rejects, (table, rel, date.fromisoformat(day), line, rule, reason, raw)):
            self.rejects[k].append(v)

    def file(self, table: str | None, rel: str, day: str, size: int, records: int | None, status: str,
             reason: str | None, hint: str | None) -> None:
        for k, v in zip(self.files, (table, rel, date.fromisoformat(day), size, records, status, reason, hint)):
            self.files[k].append(v)

    def read(self, table: Table, f: LandingFile) -> TableReport:
        """Book one file a table read and return its report."""
        rep = TableReport(table=table.qualified, file=f.rel, rows=f.rows, rejected=len(f.rejects),
                          drift=Drift(*f.drift) if f.drift else None, note=f.note, bytes=f.size,
                          file_reject=f.file_reject)
        for line, rule, reason, raw in f.rejects:
            self.reject(table.name, f.rel, f.day, line, rule, reason, raw)
        self.file(table.name, f.rel, f.day, f.size, rep.records, "rejected" if f.file_reject else "read",
                  f.file_reject, None)
        if f.drift:
            for k, v in zip(self.drift, (table.name, f.rel, date.fromisoformat(f.day), *f.drift)):
                self.drift[k].append(v)
        return rep

    def write(self, con, now: datetime) -> None:
        rejects = dict(self.rejects, raw_text=[None if b is None else shown(b) for b in self.rejects["raw_bytes"]])
        names = pa.list_(pa.string())
        types = {"_line": pa.int64(), "raw_bytes": pa.binary(), "_partition": pa.date32(), "bytes": pa.int64(),
                 "records": pa.int64(), "missing_columns": names, "unexpected_columns": names, "renamed": names}
        for target, columns, stamp, fixed in (("raw.rejects", rejects, "_ingested_at", ", 'ingest' AS stage"),
                                              ("raw.landing_files", self.files, "_ingested_at", ""),
                                              ("raw.schema_drift", self.drift, "detected_at", "")):
            if not columns["_file"]:
                continue
            # Through Arrow, one statement each: a file rejected whole can have millions of lines.
            with_arrow(con, pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in columns.items()}),
                       f"INSERT INTO {target} BY NAME SELECT *, ? AS _source, ?::TIMESTAMP AS {stamp}{fixed} "
                       f"FROM {{arrow}}", [self.source, now])


def ingest_day(con: duckdb.DuckDBPyConnection, spec: LandingSpec, landing_dir: Path, source: str, day: str,
               now: datetime | None = None) -> IngestReport:
    """Replace one delivery day of one source in the raw tables, atomically."""
    return ingest_days(con, spec, landing_dir, source, [day], now=now)[0]


def ingest_days(con: duckdb.DuckDBPyConnection, spec: LandingSpec, landing_dir: Path, source: str, days: list[str],
                now: datetime | None = None, progress=None) -> list[IngestReport]:
    """Replace several delivery days of one source in the raw tables, in one transaction (all or nothing).

    ``progress``, if given, is called as ``progress(done_days, total_days)`` for each day once the run is written
    (every table is read over all days at once, so days do not finish one by one).
    """
    if source not in spec.sources:
        raise IngestError(f"unknown source {source!r}; known: {', '.join(spec.sources)}")
    for d in days:
        if not (len(d) == 10 and d[4] == "-" and d[7] == "-" and d.replace("-", "").isdigit()):
            raise IngestError(f"not a delivery day (YYYY-MM-DD): {d!r}")
    ensure_base(con)
    now = now or utcnow()
    for table in spec.sources[source].tables:
        ensure_raw_table(con, table)
    days = sorted(set(days))
    careful: dict[Path, str] = {}   # files DuckDB failed to read in a batch -> its error
    with tempfile.TemporaryDirectory(prefix="gtm-ingest-") as scratch:
        while True:
            try:
                with transaction(con):
                    reports = _replace_days(con, spec, landing_dir, spec.sources[source], days, now,
                                            Path(scratch), careful)
                break
            except ReadFailed as e:   # rolled back: nothing of this attempt was written
                if not e.culprits or e.culprits.keys() <= careful.keys():
                    raise IngestError(f"{e} (no file of the read fails on its own, so none can be set aside; "
                                      f"re-export the files named, or read fewer days at a time)") from e
                careful.update(e.culprits)   # read again, these on their own (each retry sets a new file aside)
    for n in range(1, len(days) + 1):
        if progress:
            progress(n, len(days))
    return reports


def _replace_days(con, spec: LandingSpec, landing_dir: Path, source: Source, days: list[str], now: datetime,
                  scratch: Path, careful: dict[Path, str]) -> list[IngestReport]:
    in_days = "(" + ", ".join(f"DATE '{d}'" for d in days) + ")"
    for table in source.tables:
        con.execute(f"DELETE FROM raw.{table.raw_table} WHERE _partition IN {in_days}")
    # Every ingest reject, file record and drift report of the source's days, unclaimed files (no table) included.
    for target in ("raw.schema_drift", "raw.landing_files"):
        con.execute(f"DELETE FROM {target} WHERE _source = ? AND _partition IN {in_days}", [source.name])
    con.execute(f"DELETE FROM raw.rejects WHERE _source = ? AND _partition IN {in_days} AND stage = 'ingest'",
                [source.name])
    con.execute(f"DELETE FROM ops.partition_status WHERE asset_key = ? AND partition_key IN {in_days}",
                [f"raw/{source.name}"])
    found = {day: day_files(landing_dir, source, day) for day in days}
    read: dict[tuple[str, str], LandingFile] = {}
    for table in source.tables:
        files = [LandingFile(path=p, rel=p.relative_to(landing_dir).as_posix(), day=day, size=p.stat().st_size)
                 for day in days if (p := found[day].claimed.get(table.name)) is not None]
        read_table(con, table, _readable(table, files, scratch, careful), now, careful)
        read.update({(table.name, f.day): f for f in files})
    book, reports, states = _Bookkeeping(source.name), [], []
    for day in days:
        report = IngestReport(source=source.name, day=day)
        for table in source.tables:
            f = read.get((table.name, day))
            report.tables.append(book.read(table, f) if f else TableReport(table=table.qualified, file=None,
                                                                            note="no file delivered"))
        for path in found[day].unclaimed:
            rel = path.relative_to(landing_dir).as_posix()
            reason, hint = unclaimed_reason(spec, landing_dir, path)
            book.reject(None, rel, day, None, "unclaimed", reason, None)
            book.file(None, rel, day, path.stat().st_size, None, "unclaimed", reason, hint)
            report.unclaimed.append((rel, reason, hint))
        if any(t.file for t in report.tables):  # a day with no file delivered is not a delivery
            states.append((day, PUBLISHED, delivery_cutoff(con, source, day, now)))
        reports.append(report)
    book.write(con, now)
    record_partitions(con, f"raw/{source.name}", states, run_id=None, now=now)
    return reports
