"""What an import did: rows read, landed and rejected per input, rows, files and days per output, the notes
(values kept under ``unmapped: warn``, lookup misses under ``missing: warn``), and the conservation check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gtm_pipeline.importer.rows import Landed, Run
from gtm_pipeline.importer.spec import Mapping


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




def output_reports(mapping: Mapping, run: Run, by_file: dict[str, list[Landed]]) -> list[OutputReport]:
    """One report per output: rows written, its landing files and days, and its notes (the five most common
    values of each)."""
    reports = []
    for out in mapping.outputs:
        files = tuple(sorted({rel for rel, items in by_file.items() if any(x.output is out for x in items)}))
        days = sorted({x.day for x in run.landed if x.output is out})
        notes = []
        for (index, target, kind), counter in sorted(run.notes.items()):
            if index == out.index:
                top = ", ".join(f'"{v}" x{n}' for v, n in counter.most_common(5))
                notes.append(f"{target}: {sum(counter.values())} values {kind} ({top})")
        reports.append(OutputReport(
            target=out.target,
            input=out.input,
            primary=mapping.outputs_for(out.input)[0] is out,
            rows_written=sum(1 for x in run.landed if x.output is out),
            files=files,
            first_day=days[0] if days else None,
            last_day=days[-1] if days else None,
            notes=tuple(notes),
        ))
    return reports


def check_conservation(inputs: list[InputReport], outputs: list[OutputReport]) -> None:
    """Every row read is in its primary output or in the rejects file; anything else is a bug in the importer."""
    for rep in inputs:
        if rep.role == "rows":
            primary = next(o for o in outputs if o.input == rep.name and o.primary)
            if rep.rows_read != primary.rows_written + rep.rows_rejected:
                raise RuntimeError(f"bug: {rep.file}: {rep.rows_read} rows read but {primary.rows_written} landed "
                                   f"in {primary.target} and {rep.rows_rejected} rejected")
