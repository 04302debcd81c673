"""Reading a mapping's input files: CSV rows with their physical line and raw text, the header checked against every
column the mapping reads. A row that cannot be split into the header's columns is kept with its problem (it becomes
a reject); a file that cannot be read at all is an error naming the file and the fix."""

from __future__ import annotations

import codecs
import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from gtm_pipeline.errors import ContractError, GtmPipelineError
from gtm_pipeline.importer.spec import InputSpec, Mapping
from gtm_pipeline.importer.values import did_you_mean


@dataclass
class Record:
    line: int
    raw: str
    values: dict[str, str] | None  # None when the row could not be split into the header's columns
    problem: str = ""


@dataclass
class InputData:
    spec: InputSpec
    header: list[str]
    records: list[Record]


def _physical_lines(text: str) -> list[str]:
    if "\n" not in text and "\r" in text:  # old Mac line endings
        text = text.replace("\r", "\n")
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def read_input(mapping: Mapping, spec: InputSpec, input_dir: Path) -> InputData:
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
    records: list[Record] = []
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
        if problem or fields is None:  # fields is None only with a problem
            records.append(Record(start, raw, None, problem))
        else:
            records.append(Record(start, raw, dict(zip(header, fields))))
    if header is None:
        raise GtmPipelineError(f"{spec.file}: the file is empty; expected a header line with column names")
    return InputData(spec, header, records)


def check_columns(mapping: Mapping, data: dict[str, InputData]) -> None:
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
    check_columns(mapping, {n: read_input(mapping, s, input_dir) for n, s in mapping.inputs.items()})
