"""Verify the decision log against its key and its checkpoint file; name the first bad entry (issue 14 §5).

What a writer of the data folder can try, and what catches it (the kind reported):

* edit a row -- its hash (keyed: its HMAC) no longer matches its content: ``edited``;
* delete a row -- an id gap, or the next entry's ``prev_hash``: ``deleted``;
* cut the tail -- the checkpoint recorded a later entry (``--expect-head``: the gauge Prometheus kept): ``deleted``;
* move a row -- its hash is valid only at another position: ``reordered``;
* edit, then re-hash the rest without the key -- plain hashes after keyed ones, HMACs that do not reproduce, hashes
  the signed checkpoint did not record: ``rehashed`` / ``edited``;
* rewrite the checkpoint file -- its lines' HMACs: ``checkpoint``;
* delete the checkpoint file and re-hash everything unkeyed -- under a key every entry must be keyed or sealed by a
  signed checkpoint: ``unsigned``.

Without a key only the plain-hash checks run, and the report says so loudly (``warnings``): a forger who re-hashes
the chain and rewrites the checkpoint file is then not caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from gtm_pipeline.config import DECISION_LOG_KEY_ENV
from gtm_pipeline.decisions.anchor import (
    BAD_MAC,
    FOREIGN,
    MALFORMED,
    SIGNED,
    UNSIGNED,
    Anchor,
    Checkpoint,
    append_checkpoint,
    read_checkpoints,
)
from gtm_pipeline.decisions.hashing import equal
from gtm_pipeline.decisions.log import GENESIS, Entry, entries
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import utcnow

SEAL_HINT = "gtm-pipeline decisions verify --seal"


@dataclass
class Problem:
    entry_id: int
    kind: str          # edited | deleted | reordered | duplicated | rehashed | checkpoint | unsigned
    detail: str

    def __str__(self) -> str:
        return f"entry #{self.entry_id}: {self.kind} -- {self.detail}"


@dataclass
class VerifyReport:
    entries: int
    head: dict | None                     # the newest trusted checkpoint line
    key_configured: bool = False
    keyed_entries: int = 0
    unkeyed_entries: int = 0
    unchecked: int = 0                    # keyed entries whose HMAC could not be checked (no key)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def status(self) -> str:
        """tampered | unverified (keyed entries, no key to check them) | unkeyed (no key: plain hashes) | ok."""
        if self.problems:
            return "tampered"
        if not self.key_configured:
            return "unverified" if self.keyed_entries else "unkeyed"
        return "ok"

    def summary(self) -> str:
        head = f", checkpoint head #{self.head['entry_id']} matches" if self.head else ""
        if self.status == "ok":
            return f"ok: {self.entries} entries, HMAC chain intact under key {self.head_key_id or '(configured)'}{head}"
        if self.status == "unkeyed":
            return f"UNKEYED: {self.entries} entries, plain sha256 chain intact{head}"
        if self.status == "unverified":
            return (f"UNVERIFIED: {self.entries} entries; {self.unchecked} keyed entries NOT checked (no key); "
                    f"links and checkpoint consistent{head}")
        return f"TAMPERED: {self.first}"

    @property
    def head_key_id(self) -> str | None:
        return (self.head or {}).get("key_id")


def _position(e: Entry, ids: list[int], key: bytes | None) -> int | None:
    """The position at which ``e``'s stored hash is valid, when it is not its own (a moved entry)."""
    return next((k for k in range(1, max(ids) + 2)
                 if k != e.entry_id and equal(e.compute_hash(k, key), e.entry_hash)), None)


def _chain(report: VerifyReport, es: list[Entry], key: bytes | None) -> None:
    """Entry by entry: content against its hash, the scheme (no plain hash after keyed ones), the links."""
    prev_id, prev_hash, first_keyed = 0, GENESIS, None
    ids = [e.entry_id for e in es]
    by_hash = {e.entry_hash: e.entry_id for e in es}
    for e in es:
        scheme_key = key if e.keyed else None
        if e.keyed:
            report.keyed_entries += 1
            first_keyed = first_keyed or e.entry_id
        else:
            report.unkeyed_entries += 1
        checkable = not e.keyed or key is not None
        if not checkable:
            report.unchecked += 1
        problem = None
        if e.entry_id == prev_id:
            problem = Problem(e.entry_id, "duplicated", "two entries carry this id")
        elif checkable and not equal(e.compute_hash(key=scheme_key), e.entry_hash):
            moved = _position(e, ids, scheme_key)
            if moved is not None:
                problem = Problem(e.entry_id, "reordered", f"this entry was written as #{moved} and now sits at "
                                                           f"#{e.entry_id}")
            elif e.keyed:
                problem = Problem(e.entry_id, "edited", "its HMAC does not match its content under the configured "
                                                        "key: the entry was edited (or re-hashed without the key)")
            else:
                problem = Problem(e.entry_id, "edited", f"its content no longer matches its hash "
                                                        f"({e.entry_hash[:12]}…, recomputed "
                                                        f"{e.compute_hash()[:12]}…)")
        elif not e.keyed and first_keyed is not None:
            problem = Problem(e.entry_id, "rehashed", f"a plain sha256 hash after the chain became keyed at "
                                                      f"#{first_keyed}: written or re-hashed without the key")
        elif e.prev_hash != prev_hash:
            if e.entry_id > prev_id + 1:
                gap = f"#{prev_id + 1}" if e.entry_id == prev_id + 2 else f"#{prev_id + 1}..#{e.entry_id - 1}"
                problem = Problem(e.entry_id, "deleted", f"entry {gap} before it is missing")
            elif e.prev_hash in by_hash:
                problem = Problem(e.entry_id, "reordered", f"it was written after #{by_hash[e.prev_hash]}, "
                                                           f"not after #{prev_id}")
            else:
                problem = Problem(e.entry_id, "edited", f"its prev_hash does not match entry #{prev_id} (a "
                                                        f"predecessor was rewritten)")
        if problem is not None:
            report.problems.append(problem)
        prev_id, prev_hash = e.entry_id, e.entry_hash


def _trusted(report: VerifyReport, cps: list[Checkpoint], key: bytes | None) -> list[Checkpoint]:
    """The checkpoint lines that count; a forged line is a problem. Under a key: signed lines, and unsigned ones
    only before the first signed line (written before the key existed). Without a key: every readable line."""
    out, seen_signed = [], False
    for c in cps:
        where = f"checkpoint line {c.line}" if c.line else "the legacy head file"
        if c.state == MALFORMED:
            report.problems.append(Problem(c.entry_id, "checkpoint", f"{where} is {c.detail}"))
        elif c.state in (BAD_MAC, FOREIGN):
            report.problems.append(Problem(c.entry_id, "checkpoint", f"{where} (head #{c.entry_id}) is not signed "
                                                                     f"by the configured key: {c.detail}"))
        elif c.state == UNSIGNED and key is not None and seen_signed:
            report.problems.append(Problem(c.entry_id, "checkpoint", f"{where} (head #{c.entry_id}) is unsigned "
                                                                     f"after signed lines: written without the key"))
        else:
            seen_signed = seen_signed or c.state == SIGNED
            out.append(c)
    return out


def _anchored(report: VerifyReport, es: list[Entry], cps: list[Checkpoint], key: bytes | None,
              expect_head: int | None) -> None:
    """The log against what was recorded outside it: the checkpoint lines and an externally observed head."""
    last_id = es[-1].entry_id if es else 0
    by_id = {e.entry_id: e for e in es}
    beyond = max((c for c in cps if c.entry_id > last_id), key=lambda c: c.entry_id, default=None)
    if beyond is not None:
        report.problems.append(Problem(last_id + 1, "deleted", f"the log ends at #{last_id} but the checkpoint "
                                                               f"recorded #{beyond.entry_id}: the newest entries are "
                                                               f"gone"))
    if expect_head is not None and expect_head > last_id:
        report.problems.append(Problem(last_id + 1, "deleted", f"the log ends at #{last_id} but #{expect_head} was "
                                                               f"recorded outside the data folder (--expect-head): "
                                                               f"the log and its checkpoint were cut back"))
    seen: set[int] = set()
    for c in cps:
        e = by_id.get(c.entry_id)
        if e is None or e.entry_hash == c.entry_hash or c.entry_id in seen:
            continue
        seen.add(c.entry_id)
        # Under the key we can tell a row whose content is intact but whose hash was recomputed from an edited one.
        if key is not None and c.entry_hash.startswith("hmac") and equal(e.compute_hash(key=key), c.entry_hash):
            report.problems.append(Problem(c.entry_id, "rehashed", "its content is intact but its hash is not the "
                                                                   "one the signed checkpoint recorded: the chain "
                                                                   "was re-hashed without the key"))
        else:
            report.problems.append(Problem(c.entry_id, "edited", "the checkpoint recorded another hash for this "
                                                                 "entry: the chain up to it was rewritten"))
    if key is None or not es:
        return
    signed = [c for c in cps if c.state == SIGNED and c.entry_id in by_id
              and by_id[c.entry_id].entry_hash == c.entry_hash]
    sealed_through = max((c.entry_id for c in signed), default=0)
    if report.keyed_entries and not signed:
        first = next(e.entry_id for e in es if e.keyed)
        report.problems.append(Problem(first, "checkpoint", "the chain is keyed but no checkpoint line is signed by "
                                                            "the configured key: the checkpoint file was removed or "
                                                            "rewritten"))
    if not report.keyed_entries and sealed_through < last_id:
        report.problems.append(Problem(sealed_through + 1, "unsigned", f"entries #{sealed_through + 1}..#{last_id} "
                                                                       f"are neither keyed nor sealed by a signed "
                                                                       f"checkpoint: re-hashed without the key, or a "
                                                                       f"log from before the key -- if you have "
                                                                       f"checked it, seal it with {SEAL_HINT}"))


def _warn(report: VerifyReport, es: list[Entry], cps: list[Checkpoint], key: bytes | None) -> None:
    if key is None:
        report.warnings.append(
            f"NO KEY: {DECISION_LOG_KEY_ENV} is not set. The chain is checked with plain sha256 only"
            + (f" and {report.unchecked} keyed entries could not be checked at all" if report.unchecked else "")
            + ": anyone who can write the data folder can edit an entry, re-hash the rest and rewrite the "
              "checkpoint file without this check noticing. Set the key (docs/decisions.md, \"The decision log\").")
    elif report.unkeyed_entries and report.keyed_entries:
        last_plain = max(e.entry_id for e in es if not e.keyed)
        report.warnings.append(f"entries #1..#{last_plain} predate the key: they are protected by the signed entries "
                               f"that link to them, not by HMACs of their own")
    last_id = es[-1].entry_id if es else 0
    newest = max((c.entry_id for c in cps), default=None)
    if es and newest is None:
        report.warnings.append("no checkpoint file: a cut tail cannot be detected")
    elif newest is not None and newest < last_id:
        report.warnings.append(f"the newest checkpoint records #{newest}, the log ends at #{last_id} (a write "
                               f"interrupted before its checkpoint?)")


def verify(con: duckdb.DuckDBPyConnection, anchor: Anchor | None = None, *,
           expect_head: int | None = None) -> VerifyReport:
    """Recompute the chain in entry order under the anchor's key and compare it with the checkpoint file; every
    problem is listed, the first (lowest entry id) is ``report.first``."""
    es = entries(con)
    key = anchor.key if anchor is not None else None
    report = VerifyReport(entries=len(es), head=None, key_configured=key is not None)
    _chain(report, es, key)
    cps = _trusted(report, read_checkpoints(anchor), key) if anchor is not None else []
    report.head = cps[-1].as_dict() if cps else None
    _anchored(report, es, cps, key, expect_head)
    _warn(report, es, cps, key)
    report.problems.sort(key=lambda p: p.entry_id)
    return report


def seal(con: duckdb.DuckDBPyConnection, anchor: Anchor, *, by: str) -> VerifyReport:
    """Sign the head of a chain written before the key (trust on first use, by a person who checked it): only when
    the key is configured and the chain's only problem is that it is unsigned."""
    if anchor.key is None:
        raise GtmPipelineError(f"--seal signs the log's head with the key: set {DECISION_LOG_KEY_ENV} first")
    report = verify(con, anchor)
    other = [p for p in report.problems if p.kind != "unsigned"]
    if other:
        raise GtmPipelineError(f"not sealed: the log does not verify ({other[0]}); restore it from a backup first")
    if report.ok:
        return report
    es = entries(con)
    last = es[-1]
    append_checkpoint(anchor, last.entry_id, last.entry_hash, last.ts.isoformat(sep=" "), sealed_by=by,
                      sealed_at=utcnow().isoformat(sep=" "))
    return verify(con, anchor)
