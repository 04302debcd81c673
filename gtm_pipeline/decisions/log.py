"""The decision log: append-only, hash-chained, in DuckDB table ``decisions.log`` (spec 002 §4 "every action writes a
decision log", §5 minimum fields).

* Every entry carries the spec's minimum fields -- timestamp (``ts``), node, inputs_version, inputs_hash,
  selected_thresholds, chosen_action, owner, approvers[], risk_notes, reversal_plan, reversal_outcome, review_date --
  plus ``status``, the ``event`` that wrote it, the ``decision_id`` it belongs to, the ``actor`` and ``details``.
* Status changes are new entries that reference the proposal's ``decision_id``; this module never UPDATEs or
  DELETEs a row. A refused step (a gate that did not hold, a person the roster does not allow) is an entry too.
* ``entry_hash`` covers the canonical JSON of every other field, ``prev_hash`` (the previous entry's hash) included,
  so changing, removing or moving any entry breaks the chain at that entry. Under a key (``GTM_PIPELINE_DECISION_LOG_
  KEY``, see `anchor`) it is ``hmac-sha256:<HMAC of that JSON>``, which nobody without the key can recompute;
  without one it is the plain sha256 hex of the chain's first version. After every commit a checkpoint line outside
  the database records the newest (id, hash) (`anchor`), which catches a cut tail and a chain rewritten from the
  start.
* `verify` (module `verify`) recomputes the chain and names the first bad entry and why.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from gtm_pipeline.config import DECISION_LOG_KEY_ENV
from gtm_pipeline.decisions.anchor import SIGNED, Anchor, append_checkpoint, read_checkpoints
from gtm_pipeline.decisions.hashing import canonical_json, equal, hmac_sha256_hex, sha256_hex
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import ensure_base, transaction, utcnow

GENESIS = "0" * 64
HMAC_PREFIX = "hmac-sha256:"    # a keyed entry's hash; an unkeyed one is 64 bare hex digits

# The hashed fields, in table order (entry_hash excluded). Changing this list changes every hash: don't.
FIELDS = ("entry_id", "decision_id", "event", "status", "ts", "node", "subject", "playbook_version",
          "inputs_version", "inputs_hash", "selected_thresholds", "chosen_action", "action", "owner", "approvers",
          "risk_notes", "reversal_plan", "reversal_outcome", "review_date", "actor", "details", "prev_hash")

_DDL = [
    """CREATE TABLE IF NOT EXISTS decisions.log (
        entry_id BIGINT, decision_id VARCHAR, event VARCHAR, status VARCHAR, ts TIMESTAMP, node VARCHAR,
        subject VARCHAR, playbook_version VARCHAR, inputs_version VARCHAR, inputs_hash VARCHAR,
        selected_thresholds VARCHAR, chosen_action VARCHAR, action VARCHAR, owner VARCHAR, approvers VARCHAR[],
        risk_notes VARCHAR, reversal_plan VARCHAR, reversal_outcome VARCHAR, review_date DATE, actor VARCHAR,
        details VARCHAR, prev_hash VARCHAR, entry_hash VARCHAR)""",
    # The exact input rows of each proposal, so that its inputs_hash can be recomputed later (append-only too).
    """CREATE TABLE IF NOT EXISTS decisions.inputs (
        decision_id VARCHAR, inputs_hash VARCHAR, inputs_version VARCHAR, rows_json VARCHAR, recorded_at TIMESTAMP)""",
]

# Events and the status a decision has after each.
PROPOSED, APPROVAL, REJECTED, SUPERSEDED, REFUSED = "proposed", "approval", "rejected", "superseded", "refused"
APPLIED, MONITORED, REVERSAL_PROPOSED, REVERSED, CONFIRMED = ("applied", "monitored", "reversal_proposed",
                                                              "reversed", "confirmed")
OPEN_STATUSES = ("proposed", "pending_approval", "approved")           # awaiting approval or apply
IN_FLIGHT_STATUSES = ("applied", "reversal_proposed")                  # changed something, not closed
CLOSED_STATUSES = ("rejected", "superseded", "reversed", "confirmed")


def ensure_log(con: duckdb.DuckDBPyConnection) -> None:
    ensure_base(con)
    for stmt in _DDL:
        con.execute(stmt)


@dataclass
class Entry:
    entry_id: int
    decision_id: str
    event: str
    status: str
    ts: datetime
    node: str
    subject: str
    playbook_version: str
    inputs_version: str
    inputs_hash: str
    selected_thresholds: str          # canonical JSON
    chosen_action: str
    action: str                       # canonical JSON of the structured action
    owner: str
    approvers: list[str]
    risk_notes: str
    reversal_plan: str
    reversal_outcome: str | None
    review_date: date | None
    actor: str | None
    details: str                      # canonical JSON
    prev_hash: str
    entry_hash: str = ""

    def content(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}

    @property
    def keyed(self) -> bool:
        return (self.entry_hash or "").startswith(HMAC_PREFIX)

    def compute_hash(self, entry_id: int | None = None, key: bytes | None = None) -> str:
        """The hash this entry should carry (at position ``entry_id``, default its own): the keyed form under
        ``key``, the plain sha256 hex without."""
        c = self.content()
        if entry_id is not None:
            c["entry_id"] = entry_id
        c["ts"] = self.ts.isoformat(sep=" ", timespec="microseconds")
        c["review_date"] = self.review_date.isoformat() if self.review_date else None
        c["approvers"] = list(self.approvers or [])
        text = canonical_json(c)
        return HMAC_PREFIX + hmac_sha256_hex(key, text) if key else sha256_hex(text)

    @property
    def details_dict(self) -> dict:
        return json.loads(self.details or "{}")

    @property
    def action_dict(self) -> dict:
        return json.loads(self.action or "{}")

    @property
    def thresholds_dict(self) -> dict:
        return json.loads(self.selected_thresholds or "{}")

    def as_dict(self) -> dict:
        d = self.content()
        d["entry_hash"] = self.entry_hash
        d["selected_thresholds"] = self.thresholds_dict
        d["action"] = self.action_dict
        d["details"] = self.details_dict
        return d


def _entry(row: tuple) -> Entry:
    # FIELDS in order, then entry_hash when the query selected it (the dataclass's last field, default "").
    return Entry(*row)


def entries(con: duckdb.DuckDBPyConnection, decision_id: str | None = None) -> list[Entry]:
    """Log entries in chain order (all, or one decision's)."""
    ensure_log(con)
    sql = f"SELECT {', '.join(FIELDS)}, entry_hash FROM decisions.log"
    params: list = []
    if decision_id:
        sql += " WHERE decision_id = ?"
        params.append(decision_id)
    rows = con.execute(sql + " ORDER BY entry_id", params).fetchall()
    return [_entry(r) for r in rows]


def head_path(data_dir: Path) -> Path:
    """The legacy head file (read as an unsigned checkpoint when no checkpoint file exists; no longer written)."""
    return Path(data_dir) / "decisions" / "log_head.json"


def as_anchor(head: Anchor | Path | None) -> Anchor | None:
    """Callers pass the context's `Anchor` (``dc.head``); a bare path (the old head file) means its folder, no key."""
    if head is None or isinstance(head, Anchor):
        return head
    return Anchor(Path(head).parent)


def check_writable(con: duckdb.DuckDBPyConnection, anchor: Anchor | None) -> None:
    """Refuse to extend a chain this process cannot extend honestly: a keyed chain without the key (the new entry
    could not be told from a forgery), a keyed chain under another key, or an unsealed unkeyed chain under a key
    (signing on top of it would vouch for whatever it holds)."""
    last = latest_entry(con)
    key = anchor.key if anchor is not None else None
    if last is None:
        return
    if last.keyed and key is None:
        raise GtmPipelineError(f"decisions.log is keyed (entry #{last.entry_id} carries an HMAC) but "
                               f"{DECISION_LOG_KEY_ENV} is not set in this process; set it to the log's key to "
                               f"write decisions (docs/decisions.md, \"The decision log\")")
    if last.keyed and not equal(last.compute_hash(key=key), last.entry_hash):
        raise GtmPipelineError(f"decisions.log entry #{last.entry_id} does not verify under the configured "
                               f"{DECISION_LOG_KEY_ENV}: a wrong key, or the entry was edited; nothing is written -- "
                               f"run 'gtm-pipeline decisions verify'")
    if not last.keyed and key is not None and anchor is not None:
        sealed = any(c.state == SIGNED and c.entry_id == last.entry_id and c.entry_hash == last.entry_hash
                     for c in read_checkpoints(anchor))
        if not sealed:
            raise GtmPipelineError(f"decisions.log entries up to #{last.entry_id} were written without a key and are "
                                   f"not sealed yet; check them and sign their head once with 'gtm-pipeline "
                                   f"decisions verify --seal' (docs/decisions.md, \"Keying an existing log\")")


def append(con: duckdb.DuckDBPyConnection, *, decision_id: str, event: str, status: str, base: Entry | dict,
           actor: str | None = None, details: dict | None = None, reversal_outcome: str | None = None,
           ts: datetime | None = None, key: bytes | None = None) -> Entry:
    """Append one entry. ``base`` supplies the decision's fields (node, thresholds, action, owner, ...): the proposal
    entry for follow-up events, a dict for a new proposal. Call it inside `writing(...)` so the entry lands together
    with the other writes of the same step (the flag flip of an apply) and the checkpoint follows the commit; `Writer`
    passes the chain ``key``."""
    ensure_log(con)
    b = base.content() if isinstance(base, Entry) else base
    last = con.execute("SELECT entry_id, entry_hash FROM decisions.log ORDER BY entry_id DESC LIMIT 1").fetchone()
    entry_id, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    e = Entry(
        entry_id=entry_id, decision_id=decision_id, event=event, status=status, ts=ts or utcnow(),
        node=b["node"], subject=b["subject"], playbook_version=b["playbook_version"],
        inputs_version=b["inputs_version"], inputs_hash=b["inputs_hash"],
        selected_thresholds=b["selected_thresholds"] if isinstance(b["selected_thresholds"], str)
        else canonical_json(b["selected_thresholds"]),
        chosen_action=b["chosen_action"],
        action=b["action"] if isinstance(b["action"], str) else canonical_json(b["action"]),
        owner=b["owner"], approvers=list(b["approvers"]), risk_notes=b["risk_notes"],
        reversal_plan=b["reversal_plan"],
        reversal_outcome=reversal_outcome if reversal_outcome is not None else b.get("reversal_outcome"),
        review_date=b["review_date"], actor=actor, details=canonical_json(details or {}), prev_hash=prev)
    e.entry_hash = e.compute_hash(key=key)
    con.execute(f"INSERT INTO decisions.log ({', '.join(FIELDS)}, entry_hash) VALUES "
                f"({', '.join('?' for _ in FIELDS)}, ?)", [*e.content().values(), e.entry_hash])
    return e


class Writer:
    """What `writing` yields: appends entries under the anchor's key."""

    def __init__(self, con: duckdb.DuckDBPyConnection, anchor: Anchor | None):
        self.con, self.anchor = con, anchor

    def append(self, **kw) -> Entry:
        return append(self.con, key=self.anchor.key if self.anchor is not None else None, **kw)


@contextmanager
def writing(con: duckdb.DuckDBPyConnection, head: Anchor | Path | None):
    """One transaction for a lifecycle step (``with writing(con, dc.head) as w: w.append(...)``); after the commit,
    a checkpoint line records the newest entry outside the database."""
    ensure_log(con)
    anchor = as_anchor(head)
    check_writable(con, anchor)
    with transaction(con):
        yield Writer(con, anchor)
    if anchor is not None:
        e = latest_entry(con)
        if e is not None:
            append_checkpoint(anchor, e.entry_id, e.entry_hash, e.ts.isoformat(sep=" "))


def latest_entry(con: duckdb.DuckDBPyConnection) -> Entry | None:
    rows = con.execute(f"SELECT {', '.join(FIELDS)}, entry_hash FROM decisions.log ORDER BY entry_id DESC LIMIT 1") \
        .fetchall()
    return _entry(rows[0]) if rows else None




def verify(con: duckdb.DuckDBPyConnection, head: Anchor | Path | None = None, *, expect_head: int | None = None):
    """Recompute the chain against its anchor; see `gtm_pipeline.decisions.verify.verify`."""
    # Local: verify reads the chain through this module (entries, GENESIS); importing it at the top is a cycle.
    from gtm_pipeline.decisions.verify import verify as _verify

    return _verify(con, as_anchor(head), expect_head=expect_head)
