"""Declarative column mappings: turn a user's own CRM and marketing exports into landing files.

A mapping file (``contracts/mappings/<name>.yaml``) names the original export files (``inputs``) and, for every
landing table it feeds (``outputs``), how each landing column is computed from one input row. ``run_mapping``
writes ``<out>/<source>/<YYYY-MM-DD>/<table>.<format>`` with exactly the columns ``contracts/sources.yaml`` lists,
in order, so the normal ingest reads the result like any other delivery. Pure Python: no Dagster here.

The mapping grammar and its validation are in `gtm_pipeline.importer.spec`; the steps in `read` (inputs),
`apply` (one value), `rows` (one row), `write` (landing files) and `report`.

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

from pathlib import Path

from gtm_pipeline.importer.apply import build_lookups
from gtm_pipeline.importer.loader import load_mapping
from gtm_pipeline.importer.read import check_columns, check_inputs, read_input
from gtm_pipeline.importer.report import ImportReport, InputReport, OutputReport, check_conservation, output_reports
from gtm_pipeline.importer.rows import Reject, Run, process_input
from gtm_pipeline.importer.spec import Mapping
from gtm_pipeline.importer.values import LANDING_TIMESTAMP_FORMAT
from gtm_pipeline.importer.write import csv_bytes, group_files, write_atomic, write_landing

# The public names of the importer, importable from this one module (the CLI and tests use them).
__all__ = ["IMPORT_DIR", "LANDING_TIMESTAMP_FORMAT", "LINEAGE_COLUMNS", "REJECTS_COLUMNS", "ImportReport",
           "InputReport", "OutputReport", "check_inputs", "import_cli", "load_mapping", "run_mapping"]

IMPORT_DIR = "_import"
REJECTS_FILE = "rejects.csv"
LINEAGE_FILE = "lineage.csv"
REJECTS_COLUMNS = ("input_file", "input_line", "raw", "reason", "output")
LINEAGE_COLUMNS = ("landing_file", "landing_line", "input_file", "input_line")


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
    data = {name: read_input(mapping, spec, input_dir) for name, spec in mapping.inputs.items()}
    check_columns(mapping, data)
    lookups = build_lookups(mapping, data)

    run = Run()
    input_reports: list[InputReport] = []
    for name, spec in mapping.inputs.items():
        if mapping.outputs_for(name):
            landed, rejected = process_input(mapping, data[name], lookups, run)
            input_reports.append(InputReport(name, spec.file, "rows", len(data[name].records), landed, rejected))
        else:
            bad = [r for r in data[name].records if r.values is None]
            run.rejects += [Reject(spec.file, r.line, r.raw, f"{r.problem} (lookup input)") for r in bad]
            input_reports.append(InputReport(name, spec.file, "lookup", len(data[name].records), 0, len(bad)))

    by_file, contents, lineage = group_files(run.landed)
    write_landing(out_dir, contents, overwrite=overwrite)
    input_order = {spec.file: i for i, spec in enumerate(mapping.inputs.values())}
    rejects = sorted(run.rejects, key=lambda r: (input_order[r.input_file], r.line))
    # One folder per mapping, so two imports into the same landing folder keep their own rejects and lineage.
    rejects_rel = f"{IMPORT_DIR}/{mapping.name}/{REJECTS_FILE}"
    lineage_rel = f"{IMPORT_DIR}/{mapping.name}/{LINEAGE_FILE}"
    write_atomic(
        out_dir / rejects_rel,
        csv_bytes(REJECTS_COLUMNS, [(r.input_file, r.line, r.raw, r.reason, r.output) for r in rejects]),
    )
    write_atomic(out_dir / lineage_rel, csv_bytes(LINEAGE_COLUMNS, lineage))

    outputs = output_reports(mapping, run, by_file)
    check_conservation(input_reports, outputs)
    return ImportReport(
        mapping=mapping.name,
        out_dir=out_dir,
        inputs=tuple(input_reports),
        outputs=tuple(outputs),
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
