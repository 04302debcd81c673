"""The decision log: append-only, hash-chained, in DuckDB table ``decisions.log`` (spec §4 "every action writes a
decision log", §5 minimum fields).

* Every entry carries the spec's minimum fields -- timestamp (``ts``), node, inputs_version, inputs_hash,
  selected_thresholds, chosen_action, owner, approvers[], risk_notes, reversal_plan, reversal_outcome, review_date --
  plus ``status``, the ``event`` that wrote it, the ``decision_id`` it belongs to, the ``actor`` and ``details``.
* Status changes are new entries that reference the proposal's ``decision_id``; this module never UPDATEs or
  DELETEs a row.
* ``entry_hash`` = sha256 of the canonical JSON of every other field, ``prev_hash`` (the previous entry's hash)
  included, so changing, removing or moving any entry breaks the chain at that entry. The newest (id, hash) is also
  written to a head file outside the database (``<data_dir>/decisions/log_head.json``), which catches removal of
  the newest entries and a rewrite of the whole chain.
* `verify` recomputes the chain and names the first bad entry and why: edited, deleted or reordered.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from gtm_pipeline.decisions.hashing import canonical_json, sha256_hex
from gtm_pipeline.warehouse import ensure_base, utcnow

GENESIS = "0" * 64

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
PROPOSED, APPROVAL, REJECTED, SUPERSEDED = "proposed", "approval", "rejected", "superseded"
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

    def compute_hash(self, entry_id: int | None = None) -> str:
        c = self.content()
        if entry_id is not None:
            c["entry_id"] = entry_id
        c["ts"] = self.ts.isoformat(sep=" ", timespec="microseconds")
        c["review_date"] = self.review_date.isoformat() if self.review_date else None
        c["approvers"] = list(self.approvers or [])
        return sha256_hex(canonical_json(c))

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
    return Entry(*row[:-1], entry_hash=row[-1]) if len(row) == len(FIELDS) + 1 else Entry(*row)


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
    return Path(data_dir) / "decisions" / "log_head.json"


def append(con: duckdb.DuckDBPyConnection, *, decision_id: str, event: str, status: str, base: Entry | dict,
           actor: str | None = None, details: dict | None = None, reversal_outcome: str | None = None,
           ts: datetime | None = None) -> Entry:
    """Append one entry. ``base`` supplies the decision's fields (node, thresholds, action, owner, ...): the proposal
    entry for follow-up events, a dict for a new proposal. Call it inside `writing(...)` so the entry lands together
    with the other writes of the same step (the flag flip of an apply) and the head file follows the commit."""
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
    e.entry_hash = e.compute_hash()
    con.execute(f"INSERT INTO decisions.log ({', '.join(FIELDS)}, entry_hash) VALUES "
                f"({', '.join('?' for _ in FIELDS)}, ?)", [*e.content().values(), e.entry_hash])
    return e


@contextmanager
def writing(con: duckdb.DuckDBPyConnection, head: Path | None):
    """One transaction for a lifecycle step; after the commit, the head file records the newest entry."""
    ensure_log(con)
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if head is not None:
        e = latest_entry(con)
        if e is not None:
            write_head(head, e)


def write_head(head: Path, e: Entry) -> None:
    """Record the newest entry outside the database (atomically: write a temp file, then rename)."""
    head.parent.mkdir(parents=True, exist_ok=True)
    tmp = head.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entry_id": e.entry_id, "entry_hash": e.entry_hash,
                               "ts": e.ts.isoformat(sep=" ")}) + "\n")
    tmp.replace(head)


def latest_entry(con: duckdb.DuckDBPyConnection) -> Entry | None:
    rows = con.execute(f"SELECT {', '.join(FIELDS)}, entry_hash FROM decisions.log ORDER BY entry_id DESC LIMIT 1") \
        .fetchall()
    return _entry(rows[0]) if rows else None


# ---- verify --------------------------------------------------------------------------------------------------------

@dataclass
class Problem:
    entry_id: int
    kind: str          # edited | deleted | reordered | duplicated
    detail: str

    def __str__(self) -> str:
        return f"entry #{self.entry_id}: {self.kind} -- {self.detail}"


@dataclass
class VerifyReport:
    entries: int
    head: dict | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


def verify(con: duckdb.DuckDBPyConnection, head: Path | None = None) -> VerifyReport:
    """Recompute the chain in entry order; the first problem found is ``report.first`` (the chain after a break is
    still checked entry by entry, so every edited entry is listed)."""
    es = entries(con)
    head_doc = json.loads(head.read_text()) if head is not None and head.exists() else None
    report = VerifyReport(entries=len(es), head=head_doc)
    prev_id, prev_hash = 0, GENESIS
    ids = [e.entry_id for e in es]
    for e in es:
        recomputed = e.compute_hash()
        if e.entry_id == prev_id:
            report.problems.append(Problem(e.entry_id, "duplicated", "two entries carry this id"))
        elif recomputed != e.entry_hash:
            moved = next((k for k in range(1, max(ids) + 2) if k != e.entry_id and e.compute_hash(k) == e.entry_hash),
                         None)
            if moved is not None:
                report.problems.append(Problem(e.entry_id, "reordered",
                                               f"this entry was written as #{moved} and now sits at #{e.entry_id}"))
            else:
                report.problems.append(Problem(e.entry_id, "edited", "its content no longer matches its hash "
                                                                     f"({e.entry_hash[:12]}…, recomputed "
                                                                     f"{recomputed[:12]}…)"))
        elif e.prev_hash != prev_hash:
            if e.entry_id > prev_id + 1:
                gap = (f"#{prev_id + 1}" if e.entry_id == prev_id + 2 else f"#{prev_id + 1}..#{e.entry_id - 1}")
                report.problems.append(Problem(e.entry_id, "deleted", f"entry {gap} before it is missing"))
            elif any(x.entry_hash == e.prev_hash for x in es):
                orig = next(x.entry_id for x in es if x.entry_hash == e.prev_hash)
                report.problems.append(Problem(e.entry_id, "reordered", f"it was written after #{orig}, "
                                                                        f"not after #{prev_id}"))
            else:
                report.problems.append(Problem(e.entry_id, "edited", f"its prev_hash does not match entry "
                                                                     f"#{prev_id} (a predecessor was rewritten)"))
        prev_id, prev_hash = e.entry_id, e.entry_hash
    if head_doc is not None:
        hid, hhash = int(head_doc["entry_id"]), head_doc["entry_hash"]
        last_id = es[-1].entry_id if es else 0
        at = next((e for e in es if e.entry_id == hid), None)
        if hid > last_id:
            report.problems.append(Problem(last_id + 1, "deleted", f"the log ends at #{last_id} but its head file "
                                                                   f"recorded #{hid}: the newest entries are gone"))
        elif at is not None and at.entry_hash != hhash:
            report.problems.append(Problem(hid, "edited", "the head file recorded another hash for this entry: the "
                                                          "chain up to it was rewritten"))
    report.problems.sort(key=lambda p: p.entry_id)
    return report
