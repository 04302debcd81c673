"""Writing an import: landed rows grouped into one landing file per target and day (rows by output order, then
input line), rendered as the table's format with the line each row starts at, and written atomically. Re-running
writes the same bytes; a landing file that exists with other content is an error unless overwriting."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.importer.rows import Landed
from gtm_pipeline.ingest.landing import Table

Lineage = list[tuple[str, int, str, int]]   # (landing file, landing line, input file, input line)


def group_files(landed: list[Landed]) -> tuple[dict[str, list[Landed]], dict[str, bytes], Lineage]:
    """(rows per landing file, bytes per landing file, lineage rows) for the landed rows; paths relative to the
    landing folder, POSIX separators."""
    by_file: dict[str, list[Landed]] = defaultdict(list)
    for item in landed:
        t = item.output.table
        by_file[f"{t.source}/{item.day}/{t.name}.{t.format}"].append(item)
    contents: dict[str, bytes] = {}
    lineage: Lineage = []
    for rel in sorted(by_file):
        items = sorted(by_file[rel], key=lambda x: (x.output.index, x.line))
        content, starts = render(items[0].output.table, [x.values for x in items])
        contents[rel] = content
        lineage += [(rel, start, x.input_file, x.line) for start, x in zip(starts, items)]
    return by_file, contents, lineage


def write_landing(out_dir: Path, contents: dict[str, bytes], *, overwrite: bool) -> None:
    """Write every landing file, after checking that none exists with other content (unless ``overwrite``)."""
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
        write_atomic(out_dir / rel, content)


def render(table: Table, rows: list[list[str]]) -> tuple[bytes, list[int]]:
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
    # pyarrow is imported only when a mapping writes Parquet: it is slow to import and most mappings write CSV
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {c: [values[i] if values[i] != "" else None for values in rows] for i, c in enumerate(table.columns)}
    arrow = pa.table(columns, schema=pa.schema([(c, pa.string()) for c in table.columns]))
    sink = io.BytesIO()
    pq.write_table(arrow, sink)
    return sink.getvalue(), list(range(1, len(rows) + 1))


def csv_bytes(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
