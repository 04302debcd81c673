"""Serialise one table-day to bytes, exactly as contracts/sources.yaml describes the export.

CSV: header line, UTF-8, "\\n" line endings, minimal RFC-4180 quoting (fields with a comma, quote or line break are
quoted, quotes doubled). JSONL: one JSON object per line, keys in contract order, no spaces. Parquet: pyarrow with a
fixed schema and zstd compression, no timestamps in the metadata, so the bytes only depend on the data.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from gtm_pipeline.errors import ContractError

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "contracts" / "sources.yaml"

# Columns written as JSON numbers (JSONL) or typed Parquet columns; every other column is text.
JSON_NUMBERS = {"web.pageviews": {"time_on_page_s"}}
# Free text that may need JSON escaping; the other JSON strings are generated identifiers, codes and timestamps.
JSON_FREE_TEXT = {"web.form_fills": {"email", "company"}, "calendar.events": {"subject"}}
PARQUET_TYPES = {
    "vendors.firmographics": {"employees": pa.int64(), "observed_at": pa.timestamp("us", tz="UTC")},
    "vendors.intent": {"intent_score": pa.int64()},
    "vendors.costs": {"amount": pa.float64()},
}


def load_contract(path: Path = CONTRACT_PATH) -> dict[str, dict]:
    """'source.table' -> {'source', 'table', 'format', 'columns', 'aliases'} from the landing spec."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContractError(f"cannot read the landing spec {path}: {exc}; restore contracts/sources.yaml") from exc
    out: dict[str, dict] = {}
    for source, s in (spec or {}).get("sources", {}).items():
        for table, t in s.get("tables", {}).items():
            fmt = t.get("format")
            if fmt not in ("csv", "jsonl", "parquet"):
                raise ContractError(f"{path}: sources.{source}.tables.{table}.format is {fmt!r}; "
                                    "allowed: csv, jsonl, parquet")
            out[f"{source}.{table}"] = {"source": source, "table": table, "format": fmt,
                                        "columns": list(t.get("columns") or []), "aliases": t.get("aliases") or {}}
    return out


def csv_lines(columns: list[str], cols: dict[str, np.ndarray]) -> list[str]:
    n = len(cols[columns[0]]) if columns else 0
    if n == 0:
        return []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerows(zip(*[cols[c].tolist() for c in columns]))
    text = buf.getvalue()
    return text[:-1].split("\n")


def csv_header(columns: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(columns)
    return buf.getvalue()[:-1]


def _json_column(key: str, values: list, kind: str) -> list[str]:
    k = json.dumps(key)
    null = f"{k}:null"
    if kind == "number":
        return [null if v is None else f"{k}:{v}" for v in values]
    if kind == "free":
        return [null if v is None else f"{k}:{json.dumps(v, ensure_ascii=False)}" for v in values]
    return [null if v is None else f'{k}:"{v}"' for v in values]


def jsonl_lines(table: str, columns: list[str], cols: dict[str, np.ndarray], quoted: dict[str, set[int]]) -> list[str]:
    """``quoted``: column -> row positions whose (injected) value is always written as a JSON string."""
    n = len(cols[columns[0]]) if columns else 0
    if n == 0:
        return []
    numbers = JSON_NUMBERS.get(table, set())
    free = JSON_FREE_TEXT.get(table, set())
    parts = []
    for c in columns:
        values = cols[c].tolist()
        kind = "number" if c in numbers else "free" if c in free else "plain"
        col = _json_column(c, values, kind)
        for i in quoted.get(c, ()):
            if values[i] is not None:
                col[i] = f"{json.dumps(c)}:{json.dumps(values[i], ensure_ascii=False)}"
        parts.append(col)
    return ["{" + ",".join(row) + "}" for row in zip(*parts)]


def parquet_bytes(table: str, columns: list[str], cols: dict[str, np.ndarray]) -> bytes:
    types = PARQUET_TYPES.get(table, {})
    arrays, fields = [], []
    for c in columns:
        t = types.get(c, pa.string())
        values = cols[c].tolist()
        if pa.types.is_timestamp(t):
            values = [None if v is None else int(v) * 1_000_000 for v in values]
        arrays.append(pa.array(values, type=t))
        fields.append(pa.field(c, t))
    tbl = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    buf = io.BytesIO()
    pq.write_table(tbl, buf, compression="zstd")
    return buf.getvalue()


def text_bytes(header: str | None, lines: list[str], latin1: set[int]) -> bytes:
    """Join lines with '\\n' (a trailing newline after the last one); lines in ``latin1`` are encoded as latin-1."""
    all_lines = ([header] if header is not None else []) + lines
    if not all_lines:
        return b""
    if not latin1:
        return ("\n".join(all_lines) + "\n").encode("utf-8")
    off = 1 if header is not None else 0
    enc = [ln.encode("latin-1" if (i - off) in latin1 else "utf-8") for i, ln in enumerate(all_lines)]
    return b"\n".join(enc) + b"\n"
