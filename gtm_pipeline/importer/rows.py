"""Landing or rejecting the rows of one input: a row lands in its primary output and in each further output whose
filter it passes, completely or not at all; otherwise it is one reject with every reason."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from gtm_pipeline.importer.apply import Lookups, apply, day
from gtm_pipeline.importer.read import InputData, Record
from gtm_pipeline.importer.spec import Mapping, OutputSpec


@dataclass
class Landed:
    output: OutputSpec
    day: str
    line: int
    input_file: str
    values: list[str]


@dataclass
class Reject:
    input_file: str
    line: int
    raw: str
    reason: str
    output: str = ""


@dataclass
class Run:
    landed: list[Landed] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # (output index, landing column, note kind) -> how often each value was noted
    notes: dict[tuple[int, str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


@dataclass
class _RowResult:
    pending: list[Landed] = field(default_factory=list)
    notes: list[tuple[int, str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_outputs: list[str] = field(default_factory=list)


def process_input(mapping: Mapping, data: InputData, lookups: Lookups, run: Run) -> tuple[int, int]:
    """Land or reject every row of one input; returns (rows landed, rows rejected)."""
    outputs = mapping.outputs_for(data.spec.name)
    primary = outputs[0]
    landed_rows = rejected_rows = 0
    for rec in data.records:
        if rec.values is None:
            run.rejects.append(Reject(data.spec.file, rec.line, rec.raw, rec.problem))
            rejected_rows += 1
            continue
        excluded = next((why for why in (c.failure(rec.values) for c in primary.filter) if why), None)
        if excluded:
            reason = f"excluded by the filter of its primary output {primary.label}: {excluded}"
            run.rejects.append(Reject(data.spec.file, rec.line, rec.raw, reason, primary.label))
            rejected_rows += 1
            continue
        result = _row(outputs, data, rec, rec.values, lookups)
        if result.errors:
            run.rejects.append(Reject(data.spec.file, rec.line, rec.raw, "; ".join(result.errors),
                                      "; ".join(result.failed_outputs)))
            rejected_rows += 1
            continue
        run.landed += result.pending
        for index, target, kind, value in result.notes:
            run.notes[(index, target, kind)][value] += 1
        landed_rows += 1
    return landed_rows, rejected_rows


def _row(outputs: list[OutputSpec], data: InputData, rec: Record, row: dict[str, str], lookups: Lookups) -> _RowResult:
    """One row through every output it feeds (the primary first; a further one only when its filter passes)."""
    result = _RowResult()
    for out in outputs:
        if out is not outputs[0] and any(c.failure(row) for c in out.filter):
            continue
        out_errors: list[str] = []
        landing_day, day_error = day(out, row)
        if day_error:
            out_errors.append(day_error)
        values: list[str] = []
        for target in out.table.columns:
            col = out.columns.get(target)
            if col is None:
                values.append("")
                continue
            value, error, note = apply(col, row, lookups)
            if error:
                out_errors.append(error)
            if note:
                result.notes.append((out.index, target, note[0], note[1]))
            values.append(value)
        if out_errors:
            result.errors += [e for e in out_errors if e not in result.errors]
            result.failed_outputs.append(out.label)
        else:
            result.pending.append(Landed(out, landing_day or "", rec.line, data.spec.file, values))
    return result
