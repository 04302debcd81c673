"""Declarative column mappings: turn a user's own CRM and marketing exports into landing files.

A mapping file (``contracts/mappings/<name>.yaml``) names the original export files (``inputs``) and, for every
landing table it feeds (``outputs``), how each landing column is computed from one input row. ``run_mapping``
writes ``<out>/<source>/<YYYY-MM-DD>/<table>.<format>`` with exactly the columns ``contracts/sources.yaml`` lists,
in order, so the normal ingest reads the result like any other delivery. Pure Python: no Dagster here.

The mapping grammar and its validation are in `gtm_pipeline.importer.spec`.

Guarantees
- Nothing is lost. The first output listed for an input is its *primary* output. Every data row of an input that
  feeds outputs is either landed (in the primary output, and in each further output whose filter it passes) or
  written to ``<out>/_import/rejects.csv`` with input file, line, raw text and a reason naming the column and the
  rule. A row lands completely or not at all, so per input: rows read = rows in the primary output + rows rejected.
  A row that the primary output's filter excludes is a reject too (reason: the filter), never silently dropped.
- Lineage. ``<out>/_import/lineage.csv`` maps each landed row (landing file, line) to its input file and line.
  Lines are 1-based physical lines: a CSV's header is line 1, so its first data row is line 2; a JSONL file has no
  header; for Parquet the line is the 1-based row number. A quoted value that spans lines counts from its first line.
- Deterministic. One file per target and day; rows inside by output order, then input line. Re-running writes
  the same bytes. An existing landing file with different content is an error unless ``overwrite=True``.
- Inputs may be CRLF or LF, with or without a UTF-8 byte order mark. Blank lines are not rows and are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from gtm_pipeline.errors import ContractError, GtmPipelineError

# The mapping contract lives in its own module; its names stay importable from here (mappings.load_mapping, ...).
from gtm_pipeline.importer.spec import (  # noqa: F401 - re-exported
    LANDING_TIMESTAMP_FORMAT,
    ColumnSpec,
    Condition,
    InputSpec,
    LookupSpec,
    Mapping,
    OutputSpec,
    did_you_mean,
    load_mapping,
)
from gtm_pipeline.ingest.landing import Table

IMPORT_DIR = "_import"
REJECTS_FILE = "rejects.csv"
LINEAGE_FILE = "lineage.csv"
REJECTS_COLUMNS = ("input_file", "input_line", "raw", "reason", "output")
LINEAGE_COLUMNS = ("landing_file", "landing_line", "input_file", "input_line")
_ISO_DAY_HINT = "ISO 8601 such as 2017-03-01 or 2017-03-01 10:00:00; set day_format for other layouts"


# --------------------------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Record:
    line: int
    raw: str
    values: dict[str, str] | None  # None when the row could not be split into the header's columns
    problem: str = ""


@dataclass
class _InputData:
    spec: InputSpec
    header: list[str]
    records: list[_Record]


def _physical_lines(text: str) -> list[str]:
    if "\n" not in text and "\r" in text:  # old Mac line endings
        text = text.replace("\r", "\n")
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _read_input(mapping: Mapping, spec: InputSpec, input_dir: Path) -> _InputData:
    path = input_dir / spec.file
    if not path.is_file():
        present = sorted(p.name for p in input_dir.iterdir()) if input_dir.is_dir() else []
        raise ContractError(
            f"{mapping.display}: inputs.{spec.name}.file: {spec.file} not found in {input_dir}; "
            + (f"files there: {', '.join(present[:20])}" if present else "that folder is missing or empty")
        )
    data = path.read_bytes()
    encoding = "utf-8-sig" if codecs.lookup(spec.encoding).name == "utf-8" else spec.encoding
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise GtmPipelineError(
            f"{spec.file}: line {line}: bytes are not valid {spec.encoding} ({e.reason}); "
            f"set inputs.{spec.name}.encoding in {mapping.display} to the export's encoding (e.g. cp1252)"
        ) from e
    text = text.removeprefix("\ufeff")
    lines = _physical_lines(text)
    # strict: a quote that is never closed is an error (a reject) instead of silently swallowing later rows
    reader = csv.reader(lines, delimiter=spec.delimiter, strict=True)
    header: list[str] | None = None
    records: list[_Record] = []
    consumed = 0
    while True:
        try:
            fields = next(reader)
            problem = ""
        except StopIteration:
            break
        except csv.Error as e:
            fields, problem = None, f"unreadable CSV row ({e}); check the quoting"
        start, consumed = consumed + 1, max(reader.line_num, consumed + 1)
        raw = "".join(lines[start - 1 : consumed]).rstrip("\r\n")
        if fields == []:
            continue  # a blank line is not a row
        if header is None:
            if fields is None:
                raise GtmPipelineError(f"{spec.file}: line {start}: the header cannot be read ({problem})")
            header = fields
            dupes = sorted(c for c, n in Counter(header).items() if n > 1)
            if dupes:
                raise GtmPipelineError(f"{spec.file}: line {start}: duplicate header columns {', '.join(dupes)}")
            continue
        if fields is not None and len(fields) != len(header):
            problem = f"row has {len(fields)} fields; the header has {len(header)}"
        if problem:
            records.append(_Record(start, raw, None, problem))
        else:
            records.append(_Record(start, raw, dict(zip(header, fields))))
    if header is None:
        raise GtmPipelineError(f"{spec.file}: the file is empty; expected a header line with column names")
    return _InputData(spec, header, records)


def _check_columns(mapping: Mapping, data: dict[str, _InputData]) -> None:
    """Every raw column the mapping reads must be in the header of the input it reads from."""
    for out in mapping.outputs:
        for where, input_name, column in out.reads():
            header = data[input_name].header
            if column not in header:
                raise ContractError(
                    f'{mapping.display}: {where}: unknown column "{column}" in input {input_name} '
                    f"({data[input_name].spec.file}); its columns: {', '.join(header)}{did_you_mean(column, header)}"
                )


def check_inputs(mapping: Mapping, input_dir: Path | str) -> None:
    """Check that the input files exist, decode and have every column the mapping reads (ContractError if not)."""
    input_dir = Path(input_dir)
    _check_columns(mapping, {n: _read_input(mapping, s, input_dir) for n, s in mapping.inputs.items()})


# --------------------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------------------
_Lookups = dict[tuple[str, str, str], dict[str, str]]


def _build_lookups(mapping: Mapping, data: dict[str, _InputData]) -> _Lookups:
    lookups: _Lookups = {}
    for out in mapping.outputs:
        for col in out.columns.values():
            lk = col.lookup
            if lk is None or (lk.input, lk.key, lk.value) in lookups:
                continue
            index: dict[str, str] = {}
            first_line: dict[str, int] = {}
            for rec in data[lk.input].records:
                if rec.values is None or rec.values[lk.key] == "":
                    continue
                key, value = rec.values[lk.key], rec.values[lk.value]
                if key in index and index[key] != value:
                    raise GtmPipelineError(
                        f"{data[lk.input].spec.file}: lookup key {lk.key} \"{key}\" appears on lines "
                        f"{first_line[key]} and {rec.line} with different {lk.value} (\"{index[key]}\", \"{value}\"); "
                        f"a lookup needs one value per key (used by {out.where}.columns.{col.target})"
                    )
                index[key], first_line[key] = value, first_line.get(key, rec.line)
            lookups[(lk.input, lk.key, lk.value)] = index
    return lookups


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _format_decimal(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _apply(col: ColumnSpec, row: dict[str, str], lookups: _Lookups) -> tuple[str, str | None, tuple[str, str] | None]:
    """Compute one landing value: (value, error, note). A note counts a value kept under unmapped: warn or a
    lookup miss under missing: warn; the import report lists them."""
    note: tuple[str, str] | None = None
    if col.source == "const":
        return col.const, None, None
    if col.source == "from":
        value = row[col.column]  # type: ignore[index]
    elif col.source == "template":
        value = "".join(lit if name is None else row[name] for lit, name in col.template)
    else:
        lk = col.lookup
        assert lk is not None
        key = row[lk.on]
        if lk.on_map is not None:
            key = lk.on_map.get(key, key)
        if key == "":
            value = ""
        elif key in lookups[(lk.input, lk.key, lk.value)]:
            value = lookups[(lk.input, lk.key, lk.value)][key]
        elif lk.missing == "reject":
            return "", f'{col.label}: "{key}" not found in {lk.input}.{lk.key} (lookup)', None
        else:
            value = ""
            if lk.missing == "warn":
                note = ("without a lookup match, left empty", key)

    if col.value_map is not None:
        if value in col.value_map:
            value = col.value_map[value]
        elif col.default is not None:
            value = col.default
        elif col.unmapped == "reject":
            known = ", ".join(f'"{k}"' for k in col.value_map)
            return "", f'{col.label}: "{value}" is not in the value map (known: {known})', None
        elif col.unmapped == "warn" and value != "":  # an empty value is missing data, not an unknown code
            note = ("not in the value map, kept as-is", value)
    elif col.default is not None and value == "":
        value = col.default

    if value != "" and col.converter == "date_format":
        parsed = None
        for fmt in col.date_format:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            shown = col.date_format[0] if len(col.date_format) == 1 else "any of " + ", ".join(col.date_format)
            return "", f'{col.label}: "{value}" does not match {shown}', None
        if parsed.tzinfo is not None:  # an offset in the format: land the UTC wall time
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        value = parsed.strftime(LANDING_TIMESTAMP_FORMAT)
    elif value != "" and col.converter == "bucket":
        number = _number(value)
        if number is None:
            return "", f'{col.label}: "{value}" is not a number (bucket)', None
        for bound, label in col.bucket:
            if bound is None or number <= Decimal(str(bound)):
                value = label
                break
        else:
            return "", f'{col.label}: {value} is above the last bucket bound {col.bucket[-1][0]:g} (bucket)', None
    elif value != "" and col.converter == "multiply":
        number = _number(value)
        if number is None:
            return "", f'{col.label}: "{value}" is not a number (multiply)', None
        value = _format_decimal(number * col.multiply)  # type: ignore[operator]

    if col.required and value == "":
        return "", f"{col.label}: empty, but required", None
    return value, None, note


def _day(out: OutputSpec, row: dict[str, str]) -> tuple[str | None, str | None]:
    """The landing day of a row: the first non-empty day_from column, else default_day."""
    for column in out.day_from:
        raw = row[column].strip()
        if not raw:
            continue
        parsed: datetime | None = None
        if out.day_format:
            for fmt in out.day_format:
                try:
                    parsed = datetime.strptime(raw, fmt)
                    break
                except ValueError:
                    continue
            hint = ", ".join(out.day_format)
        else:
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                parsed = None
            hint = _ISO_DAY_HINT
        if parsed is None:
            return None, f'day (from {column}): "{raw}" is not a date ({hint})'
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC)
        return parsed.date().isoformat(), None
    if out.default_day is not None:
        return out.default_day, None
    return None, f"day: {', '.join(out.day_from)} all empty and no default_day"


# --------------------------------------------------------------------------------------------------------------
# Running a mapping
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputReport:
    name: str
    file: str
    role: str  # "rows" (feeds outputs) or "lookup" (only read by lookups)
    rows_read: int
    rows_landed: int
    rows_rejected: int


@dataclass(frozen=True)
class OutputReport:
    target: str
    input: str
    primary: bool
    rows_written: int
    files: tuple[str, ...]
    first_day: str | None
    last_day: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportReport:
    mapping: str
    out_dir: Path
    inputs: tuple[InputReport, ...]
    outputs: tuple[OutputReport, ...]
    rows_rejected: int
    files_written: tuple[str, ...]  # relative to out_dir, POSIX separators
    rejects_file: str
    lineage_file: str

    def output(self, target: str) -> OutputReport:
        matches = [o for o in self.outputs if o.target == target]
        if len(matches) != 1:
            raise KeyError(f"{target}: {len(matches)} outputs of mapping {self.mapping} target it")
        return matches[0]

    def summary(self) -> str:
        lines = [f"Imported mapping {self.mapping} into {self.out_dir}: {self.rows_rejected} rows rejected"]
        for i in self.inputs:
            if i.role == "lookup":
                lines.append(f"  input  {i.name} ({i.file}): {i.rows_read} rows read, used for lookups only")
            else:
                lines.append(
                    f"  input  {i.name} ({i.file}): {i.rows_read} rows read, {i.rows_landed} landed, "
                    f"{i.rows_rejected} rejected"
                )
        for o in self.outputs:
            days = f", days {o.first_day}..{o.last_day}" if o.first_day else ""
            primary = " (primary)" if o.primary else ""
            lines.append(
                f"  output {o.target} <- {o.input}{primary}: {o.rows_written} rows in {len(o.files)} files{days}"
            )
            lines += [f"         note: {n}" for n in o.notes]
        lines.append(
            f"  landing files under {self.out_dir}/<source>/<day>/; rejects: {self.rejects_file}; "
            f"lineage: {self.lineage_file}"
        )
        first_days = [o.first_day for o in self.outputs if o.first_day]
        if first_days:
            lines.append(
                f"  earliest landing day {min(first_days)}: set GTM_PIPELINE_START_DATE to it (or earlier) "
                "before loading the pipeline"
            )
        return "\n".join(lines)


@dataclass
class _Landed:
    output: OutputSpec
    day: str
    line: int
    input_file: str
    values: list[str]


@dataclass
class _Reject:
    input_file: str
    line: int
    raw: str
    reason: str
    output: str = ""


@dataclass
class _Run:
    landed: list[_Landed] = field(default_factory=list)
    rejects: list[_Reject] = field(default_factory=list)
    notes: dict[tuple[int, str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))


def _process_input(mapping: Mapping, data: _InputData, lookups: _Lookups, run: _Run) -> tuple[int, int]:
    """Land or reject every row of one input; returns (rows landed, rows rejected)."""
    outputs = mapping.outputs_for(data.spec.name)
    primary = outputs[0]
    landed_rows = rejected_rows = 0
    for rec in data.records:
        if rec.values is None:
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, rec.problem))
            rejected_rows += 1
            continue
        row = rec.values
        excluded = next((why for why in (c.failure(row) for c in primary.filter) if why), None)
        if excluded:
            reason = f"excluded by the filter of its primary output {primary.label}: {excluded}"
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, reason, primary.label))
            rejected_rows += 1
            continue
        pending: list[_Landed] = []
        notes: list[tuple[int, str, str, str]] = []
        errors: list[str] = []
        failed_outputs: list[str] = []
        for out in outputs:
            if out is not primary and any(c.failure(row) for c in out.filter):
                continue
            out_errors: list[str] = []
            day, day_error = _day(out, row)
            if day_error:
                out_errors.append(day_error)
            values: list[str] = []
            for target in out.table.columns:
                col = out.columns.get(target)
                if col is None:
                    values.append("")
                    continue
                value, error, note = _apply(col, row, lookups)
                if error:
                    out_errors.append(error)
                if note:
                    notes.append((out.index, target, note[0], note[1]))
                values.append(value)
            if out_errors:
                errors += [e for e in out_errors if e not in errors]
                failed_outputs.append(out.label)
            else:
                pending.append(_Landed(out, day or "", rec.line, data.spec.file, values))
        if errors:
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, "; ".join(errors), "; ".join(failed_outputs)))
            rejected_rows += 1
            continue
        run.landed += pending
        for index, target, kind, value in notes:
            run.notes[(index, target, kind)][value] += 1
        landed_rows += 1
    return landed_rows, rejected_rows


def _render(table: Table, rows: list[list[str]]) -> tuple[bytes, list[int]]:
    """File bytes and the 1-based line (row number for Parquet) at which each row starts."""
    if table.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        starts, line = [], 2
        for values in rows:
            writer.writerow(values)
            starts.append(line)
            line += 1 + sum(v.count("\n") for v in values)  # a quoted value keeps its line breaks
        return buf.getvalue().encode("utf-8"), starts
    if table.format == "jsonl":
        text = "".join(
            json.dumps({c: (v if v != "" else None) for c, v in zip(table.columns, values)}, ensure_ascii=False) + "\n"
            for values in rows
        )
        return text.encode("utf-8"), list(range(1, len(rows) + 1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {c: [values[i] if values[i] != "" else None for values in rows] for i, c in enumerate(table.columns)}
    arrow = pa.table(columns, schema=pa.schema([(c, pa.string()) for c in table.columns]))
    sink = io.BytesIO()
    pq.write_table(arrow, sink)
    return sink.getvalue(), list(range(1, len(rows) + 1))


def _csv_bytes(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def run_mapping(
    mapping: Mapping, input_dir: Path | str, out_dir: Path | str, *, overwrite: bool = False
) -> ImportReport:
    """Convert the original files in ``input_dir`` into landing files under ``out_dir``.

    Writes ``<out>/<source>/<day>/<table>.<format>`` per output and day, plus ``<out>/_import/rejects.csv`` and
    ``<out>/_import/lineage.csv`` (both rewritten on each run). Raises ``ContractError`` when an input file is
    missing or lacks a column the mapping reads, ``GtmPipelineError`` for undecodable input or a landing file that
    already exists with different content (pass ``overwrite=True`` to replace it).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    data = {name: _read_input(mapping, spec, input_dir) for name, spec in mapping.inputs.items()}
    _check_columns(mapping, data)
    lookups = _build_lookups(mapping, data)

    run = _Run()
    input_reports: list[InputReport] = []
    for name, spec in mapping.inputs.items():
        if mapping.outputs_for(name):
            landed, rejected = _process_input(mapping, data[name], lookups, run)
            input_reports.append(InputReport(name, spec.file, "rows", len(data[name].records), landed, rejected))
        else:
            bad = [r for r in data[name].records if r.values is None]
            run.rejects += [_Reject(spec.file, r.line, r.raw, f"{r.problem} (lookup input)") for r in bad]
            input_reports.append(InputReport(name, spec.file, "lookup", len(data[name].records), 0, len(bad)))

    # Group landed rows into files: one per (target, day); inside, by output order then input line.
    by_file: dict[str, list[_Landed]] = defaultdict(list)
    for item in run.landed:
        t = item.output.table
        by_file[f"{t.source}/{item.day}/{t.name}.{t.format}"].append(item)
    contents: dict[str, bytes] = {}
    lineage: list[tuple[str, int, str, int]] = []
    for rel in sorted(by_file):
        items = sorted(by_file[rel], key=lambda x: (x.output.index, x.line))
        content, starts = _render(items[0].output.table, [x.values for x in items])
        contents[rel] = content
        lineage += [(rel, start, x.input_file, x.line) for start, x in zip(starts, items)]

    conflicts = [
        rel for rel, content in contents.items()
        if (out_dir / rel).exists() and (out_dir / rel).read_bytes() != content
    ]
    if conflicts and not overwrite:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise GtmPipelineError(
            f"{out_dir}: {len(conflicts)} landing files already exist with different content ({shown}); "
            "import into an empty folder, or pass overwrite=True to replace them"
        )

    for rel, content in contents.items():
        _write_atomic(out_dir / rel, content)
    input_order = {spec.file: i for i, spec in enumerate(mapping.inputs.values())}
    rejects = sorted(run.rejects, key=lambda r: (input_order[r.input_file], r.line))
    # One folder per mapping, so two imports into the same landing folder keep their own rejects and lineage.
    rejects_rel = f"{IMPORT_DIR}/{mapping.name}/{REJECTS_FILE}"
    lineage_rel = f"{IMPORT_DIR}/{mapping.name}/{LINEAGE_FILE}"
    _write_atomic(
        out_dir / rejects_rel,
        _csv_bytes(REJECTS_COLUMNS, [(r.input_file, r.line, r.raw, r.reason, r.output) for r in rejects]),
    )
    _write_atomic(out_dir / lineage_rel, _csv_bytes(LINEAGE_COLUMNS, lineage))

    output_reports = []
    for out in mapping.outputs:
        files = tuple(sorted({rel for rel, items in by_file.items() if any(x.output is out for x in items)}))
        days = sorted({x.day for x in run.landed if x.output is out})
        notes = []
        for (index, target, kind), counter in sorted(run.notes.items()):
            if index == out.index:
                top = ", ".join(f'"{v}" x{n}' for v, n in counter.most_common(5))
                notes.append(f"{target}: {sum(counter.values())} values {kind} ({top})")
        output_reports.append(OutputReport(
            target=out.target,
            input=out.input,
            primary=mapping.outputs_for(out.input)[0] is out,
            rows_written=sum(1 for x in run.landed if x.output is out),
            files=files,
            first_day=days[0] if days else None,
            last_day=days[-1] if days else None,
            notes=tuple(notes),
        ))

    # The conservation invariant: every row read is in its primary output or in the rejects file.
    for rep in input_reports:
        if rep.role == "rows":
            primary = next(o for o in output_reports if o.input == rep.name and o.primary)
            if rep.rows_read != primary.rows_written + rep.rows_rejected:
                raise RuntimeError(f"bug: {rep.file}: {rep.rows_read} rows read but {primary.rows_written} landed "
                                   f"in {primary.target} and {rep.rows_rejected} rejected")
    return ImportReport(
        mapping=mapping.name,
        out_dir=out_dir,
        inputs=tuple(input_reports),
        outputs=tuple(output_reports),
        rows_rejected=len(rejects),
        files_written=tuple(sorted(contents)) + (rejects_rel, lineage_rel),
        rejects_file=(out_dir / rejects_rel).as_posix(),
        lineage_file=(out_dir / lineage_rel).as_posix(),
    )


def import_cli(
    mapping_path: Path | str, input_dir: Path | str, out_dir: Path | str, *, overwrite: bool = False
) -> str:
    """Load a mapping, run it and return a short human summary (rows in/out/rejected per output, where files went)."""
    report = run_mapping(load_mapping(mapping_path), input_dir, out_dir, overwrite=overwrite)
    return report.summary()
