"""Canonical JSON and hashes: the one spelling of a value that the decision log, the inputs hash and the flag store
hash, so that the same rows always give the same digest on every machine."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any

# Floats are written with 10 significant digits: DuckDB's parallel sums may differ in the last bits from one run to
# the next, and the same published figures must hash the same (spec: "the same inputs never produce a duplicate").
FLOAT_DIGITS = 10


def normalize(value: Any) -> Any:
    """A JSON-ready copy: floats rounded to FLOAT_DIGITS significant digits, NaN -> None, dates as ISO text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        x = float(value)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == int(x) and abs(x) < 2 ** 53:
            return int(x)
        return float(f"{x:.{FLOAT_DIGITS}g}")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return normalize(value.item())
    return str(value)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8: the text that is hashed and stored."""
    return json.dumps(normalize(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rows_hash(tables: dict[str, list[dict]]) -> str:
    """``sha256:<hex>`` of the exact input rows, table by table, rows in a stable order."""
    ordered = {name: sorted((normalize(r) for r in rows), key=canonical_json) for name, rows in tables.items()}
    return "sha256:" + sha256_hex(canonical_json(ordered))


def hmac_sha256_hex(key: bytes, text: str) -> str:
    """HMAC-SHA256 of ``text`` under ``key``: what a writer without the key cannot recompute (the keyed log chain)."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key (an HMAC of a fixed text, so it reveals nothing of the key): lets
    `verify` say "the configured key is not the one that signed this log" instead of "every entry was edited"."""
    return hmac_sha256_hex(key, "gtm-pipeline decision log key id")[:12]


def equal(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
