"""Where the decision log is anchored outside the warehouse, and the key that signs it (issue 14 §5; docs/decisions.md,
"The decision log").

* **The key.** Entries are chained with HMAC-SHA256 under a key from ``GTM_PIPELINE_DECISION_LOG_KEY`` (read by
  `gtm_pipeline.config`, nowhere else). It lives only in the environment of the processes that write or verify the
  log -- never in the repository, the warehouse or the Dagster instance -- so someone who can write the data folder
  can still edit a row, but can no longer re-hash the chain to hide it.
* **The checkpoint file** ``<data_dir>/decisions/log_checkpoints.jsonl``: after every committed write one JSON line
  with the newest entry's id and hash, the time, and -- under a key -- the key's public fingerprint and an HMAC of the
  line. The code only ever opens it to append. It catches a truncated tail of the log (the checkpoint names an entry
  the log no longer has) and a chain rewritten from the start (the checkpoint recorded other hashes).
* **The gauge** `DecisionLogCollector`: the checkpoint's head sequence number for Prometheus. A writer of the data
  folder can roll the log and the checkpoint file back together; the series Prometheus already scraped cannot be
  rolled back, so a decrease of ``gtm_decision_log_head_sequence`` is the alarm for that last attack.

The legacy head file ``log_head.json`` (one JSON object, rewritten on every write, before the checkpoint file existed)
is still read as an unsigned checkpoint when there is no checkpoint file yet; it is no longer written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gtm_pipeline.clock import parse_instant, to_epoch
from gtm_pipeline.config import DECISION_LOG_KEY_ENV
from gtm_pipeline.decisions.hashing import canonical_json, equal, hmac_sha256_hex, key_id
from gtm_pipeline.errors import GtmPipelineError

CHECKPOINTS = "log_checkpoints.jsonl"
LEGACY_HEAD = "log_head.json"
MIN_KEY_LENGTH = 16
METRIC_PREFIX = "gtm"   # the exporter's prefix (gtm_pipeline/slo/exporter.py)

# Checkpoint line states, judged against the configured key.
SIGNED = "signed"           # carries an HMAC that the configured key reproduces
UNSIGNED = "unsigned"       # written without a key (or the legacy head file)
UNCHECKED = "unchecked"     # carries an HMAC, but no key is configured to check it
BAD_MAC = "bad_mac"         # carries an HMAC the configured key does not reproduce: forged, or edited
FOREIGN = "foreign"         # signed under another key (another fingerprint)
MALFORMED = "malformed"     # not a checkpoint line at all


@dataclass(frozen=True)
class Anchor:
    """The folder that holds the checkpoint file, and the chain key (None: the log is written and checked unkeyed)."""

    folder: Path
    key: bytes | None = field(default=None, repr=False)

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def legacy_head(self) -> Path:
        return self.folder / LEGACY_HEAD

    @property
    def key_id(self) -> str | None:
        return key_id(self.key) if self.key else None


def anchor_for(data_dir: Path, key_text: str | None) -> Anchor:
    """The anchor of ``<data_dir>/decisions`` with the configured key (a too short key is refused, not weakened)."""
    if key_text is not None and len(key_text) < MIN_KEY_LENGTH:
        raise GtmPipelineError(f"{DECISION_LOG_KEY_ENV} is {len(key_text)} characters long; use at least "
                               f"{MIN_KEY_LENGTH} random ones, e.g. the output of "
                               f"python -c \"import secrets; print(secrets.token_hex(32))\"")
    return Anchor(Path(data_dir) / "decisions", key_text.encode("utf-8") if key_text else None)


@dataclass(frozen=True)
class Checkpoint:
    line: int                   # 1-based line number in the checkpoint file (0: the legacy head file)
    entry_id: int
    entry_hash: str
    ts: str
    key_id: str | None
    state: str
    detail: str = ""

    def as_dict(self) -> dict:
        return {"line": self.line, "entry_id": self.entry_id, "entry_hash": self.entry_hash, "ts": self.ts,
                "key_id": self.key_id, "state": self.state}


def _body(entry_id: int, entry_hash: str, ts: str, kid: str | None) -> dict:
    return {"entry_id": entry_id, "entry_hash": entry_hash, "ts": ts, "key_id": kid}


def append_checkpoint(anchor: Anchor, entry_id: int, entry_hash: str, ts: str, **extra) -> None:
    """Append one line (and fsync it): the file is only ever appended to, never rewritten."""
    anchor.folder.mkdir(parents=True, exist_ok=True)
    body = {**_body(entry_id, entry_hash, ts, anchor.key_id), **extra}
    body["mac"] = hmac_sha256_hex(anchor.key, canonical_json(body)) if anchor.key else None
    with open(anchor.checkpoints, "a", encoding="utf-8") as f:
        f.write(canonical_json(body) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _judge(anchor: Anchor, line: int, doc: object) -> Checkpoint:
    if not isinstance(doc, dict) or not isinstance(doc.get("entry_id"), int) or not isinstance(
            doc.get("entry_hash"), str):
        return Checkpoint(line, 0, "", "", None, MALFORMED, "not a checkpoint line (entry_id, entry_hash)")
    mac = doc.get("mac")
    kid = doc.get("key_id")
    cp = dict(line=line, entry_id=doc["entry_id"], entry_hash=doc["entry_hash"], ts=str(doc.get("ts") or ""),
              key_id=kid)
    if not mac:
        return Checkpoint(**cp, state=UNSIGNED)
    if anchor.key is None:
        return Checkpoint(**cp, state=UNCHECKED)
    if kid != anchor.key_id:
        return Checkpoint(**cp, state=FOREIGN, detail=f"signed under key id {kid}, the configured key is "
                                                      f"{anchor.key_id}")
    body = {k: v for k, v in doc.items() if k != "mac"}
    ok = equal(hmac_sha256_hex(anchor.key, canonical_json(body)), str(mac))
    return Checkpoint(**cp, state=SIGNED if ok else BAD_MAC,
                      detail="" if ok else "its HMAC does not match its content under the configured key")


def read_checkpoints(anchor: Anchor) -> list[Checkpoint]:
    """Every checkpoint line, judged against the anchor's key; the legacy head file when there is no checkpoint
    file yet; [] when there is neither."""
    if anchor.checkpoints.exists():
        out = []
        for n, text in enumerate(anchor.checkpoints.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            out.append(_judge(anchor, n, doc))
        return out
    if anchor.legacy_head.exists():
        try:
            doc = json.loads(anchor.legacy_head.read_text(encoding="utf-8"))
        except ValueError:
            doc = None
        return [_judge(Anchor(anchor.folder), 0, doc)]
    return []


def last_line(path: Path, chunk: int = 4096) -> dict | None:
    """The last JSON line of ``path`` without reading the whole file (the exporter reads it at every scrape)."""
    if not path.exists():
        return None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - chunk))
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    for raw in reversed(lines):
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("entry_id"), int):
            return doc
    return None


class DecisionLogCollector(Collector):
    """Prometheus collector of the decision log's anchor: reads the checkpoint file at scrape time, keeps no state,
    never touches the warehouse (so it answers while a run holds the DuckDB write lock).

    - ``gtm_decision_log_head_sequence``: entry id of the newest entry the checkpoint file records (0: none yet);
    - ``gtm_decision_log_checkpoint_timestamp_seconds``: when that checkpoint was written;
    - ``gtm_decision_log_checkpoint_signed``: 1 if that line carries an HMAC (the exporter holds no key, so this says
      the writer was keyed, not that the MAC is valid: `gtm-pipeline decisions verify` checks that).
    """

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / "decisions" / CHECKPOINTS

    def collect(self) -> Iterator[GaugeMetricFamily]:
        doc = last_line(self.path)
        seq = GaugeMetricFamily(f"{METRIC_PREFIX}_decision_log_head_sequence",
                                "Entry id of the newest decision-log entry recorded in the checkpoint file; a "
                                "decrease means the log was cut back.")
        seq.add_metric([], float(doc["entry_id"]) if doc else 0.0)
        yield seq
        if doc is None:
            return
        at = GaugeMetricFamily(f"{METRIC_PREFIX}_decision_log_checkpoint_timestamp_seconds",
                               "Unix time the newest decision-log checkpoint was written.")
        try:
            at.add_metric([], to_epoch(parse_instant(str(doc.get("ts")), "checkpoint ts")))
            yield at
        except GtmPipelineError:
            pass  # an unreadable time: the series is absent rather than wrong
        signed = GaugeMetricFamily(f"{METRIC_PREFIX}_decision_log_checkpoint_signed",
                                   "1 if the newest decision-log checkpoint carries an HMAC (the writer had the key).")
        signed.add_metric([], 1.0 if doc.get("mac") else 0.0)
        yield signed


def decision_log_collector(data_dir: str | Path) -> DecisionLogCollector:
    """For the exporter: ``registry.register(decision_log_collector(settings.data_dir))``."""
    return DecisionLogCollector(data_dir)
