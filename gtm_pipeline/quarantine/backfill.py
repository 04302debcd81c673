"""Targeted backfill of released repairs: which day partitions to re-clean, then which downstream assets to refresh.

Both the ``repair_backfill_sensor`` and ``gtm-pipeline quarantine backfill`` use this module, so the UI, the sensor
1. *Partition runs*: one run per affected delivery day, selecting only the clean multi-assets of the entities with
   released rows that day (plus any daily-partitioned assets downstream of them). Raw ingest is not re-run: the raw
   rows are unchanged; the released values are overlaid on them by the clean stage (`gtm_pipeline.quarantine.overlay`).
2. *Refresh*: once no partition run of a batch is in flight, one run of everything downstream of the affected
   entities, if repairs were applied after its last materialization: the daily-partitioned metric assets (e.g.
   ``metrics/fact_pipeline``, a daily snapshot in which an opportunity stays from its creation day on) from the first
   affected day through their latest materialized day, then the unpartitioned ledger, metrics and decision nodes.
   Earlier days and the raw ingest assets are not touched.

A *batch* is the set of releases (``release_id``) the sensor has not requested before; each run gets a run key
derived from the batch, the day and the attempt (so a restarted sensor never launches the same run twice), and
a failed run is retried up to :data:`MAX_ATTEMPTS` times before the sensor stops and says why.

A released row of a day whose publication a blocking rule holds back (an out-of-range row of the same day and entity)
is not taken in: the re-clean keeps it ``held`` with its released values, and it enters clean with the day once
the day publishes. The sensor's skip reason and the CLI name that day, entity and check until then.

This module only decides (plain functions of a `Snapshot` and lookups); it runs nothing. What it reads is
`gtm_pipeline.quarantine.snapshot`, the Dagster selections and lookups are `gtm_pipeline.quarantine.selection`, and
the callers run the requests: the sensor returns them, `gtm_pipeline.quarantine.backfill_now` executes them with the
runner its caller (the CLI) passes in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gtm_pipeline.quarantine.snapshot import Pending, Snapshot

MAX_ATTEMPTS = 3
TAG_RUN_KEY = "gtm_pipeline/run_key"
TAG_BATCH = "gtm_pipeline/repair_batch"
TAG_TRIGGER = "gtm_pipeline/trigger"
# Lets an operator serialise these runs on the one-writer DuckDB with run_queue.tag_concurrency_limits.
TAG_WAREHOUSE = "gtm_pipeline/warehouse"
# Set by Dagster on a failed run it will re-execute automatically (dagster._core.storage.tags.WILL_RETRY_TAG).
WILL_RETRY_TAG = "dagster/will_retry"


def _sha(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def batch_id(release_ids: Iterable[str]) -> str:
    return "B-" + _sha(*sorted(set(release_ids)))


def run_key(batch: str, day: str, attempt: int = 0) -> str:
    return f"repair-{batch}-{day}-a{attempt}"


def refresh_key(applied_ids: Iterable[str]) -> str:
    return "repair-refresh-" + _sha(*sorted(set(applied_ids)))


@dataclass(frozen=True)
class Request:
    """What to run: a day partition of some entities (``day`` set) or the downstream refresh (``day`` None)."""

    run_key: str
    batch: str
    entities: tuple[str, ...]
    day: str | None = None
    attempt: int = 0
    since_day: str | None = None   # refresh: the first delivery day whose clean rows changed

    @property
    def tags(self) -> dict[str, str]:
        return {TAG_RUN_KEY: self.run_key, TAG_BATCH: self.batch, TAG_WAREHOUSE: "duckdb"}


@dataclass
class Decision:
    requests: list[Request] = field(default_factory=list)
    cursor: dict = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)   # what is in flight / blocked, for the skip reason

    def skip_reason(self) -> str:
        return "; ".join(self.waiting) if self.waiting else "no released repairs waiting and nothing to refresh"


IN_FLIGHT = "in_flight"
SUCCEEDED = "succeeded"
FAILED = "failed"



def decide(snap: Snapshot, cursor: Mapping | None, run_state: Callable[[str], str | None],
           refreshed_at: Callable[[Sequence[str]], float | None], *,
           refresh_busy: Callable[[Sequence[str]], str | None] | None = None, now: float | None = None,
           grace: float = 0.0) -> Decision:
    """One sensor tick, as a plain function.

    ``cursor``: ``{"batches": {batch_id: {"releases": [...], "attempt": n}}, "refresh_wait": {key: since}}`` from
    the previous tick.
    ``run_state(run_key)``: None (no such run), IN_FLIGHT, SUCCEEDED or FAILED.
    ``refreshed_at(entities)``: epoch seconds of the oldest latest materialization among the materialized assets
    downstream of the entities (None if none was ever materialized; see `selection.refreshed_at_lookup`).
    ``refresh_busy(entities)``: a run (of any job) queued or running that rebuilds the downstream, described; None
    if there is none. ``grace``: seconds to leave the downstream refresh to the automation sensor, which refreshes
    after new clean data on its own (``now`` required when > 0): the repair's own refresh is requested only if no
    other run has rebuilt the downstream by then, so one repair causes one refresh.
    """
    batches: dict[str, dict] = {k: dict(v) for k, v in dict((cursor or {}).get("batches", {})).items()}
    waits: dict[str, float] = {k: float(v) for k, v in dict((cursor or {}).get("refresh_wait", {})).items()}
    pending_by_release: dict[str, list[Pending]] = {}
    for p in snap.pending:
        pending_by_release.setdefault(p.release_id, []).append(p)
    out = Decision()
    in_flight = _follow_batches(batches, pending_by_release, run_state, out)
    in_flight = _new_batch(batches, pending_by_release, run_state, out) or in_flight
    kept_waits: dict[str, float] = {}
    if not in_flight and snap.applied:
        kept_waits = _decide_refresh(snap, run_state, refreshed_at, refresh_busy, waits, now, grace, out)
    # 4. Released rows a blocked day holds back: no run takes them in before the day publishes, so say which day and
    # check (a re-clean would hold them again; the fix is the blocking rows' repair, whose release re-cleans the day).
    out.waiting += snap.held_lines()
    out.cursor = {"batches": batches, **({"refresh_wait": kept_waits} if kept_waits else {})}
    return out


def _follow_batches(batches: dict[str, dict], pending_by_release: Mapping[str, list[Pending]],
                    run_state: Callable[[str], str | None], out: Decision) -> bool:
    """1. Batches requested earlier: done (dropped from ``batches``), waiting, or to be retried. True while one is
    in flight."""
    in_flight = False
    for b, info in sorted(batches.items()):
        rows = [p for r in info["releases"] for p in pending_by_release.get(r, [])]
        if not rows:
            del batches[b]  # every row of the batch is applied (or re-opened): done
            continue
        in_flight = _follow_batch(b, info, rows, run_state, out) or in_flight
    return in_flight


def _follow_batch(b: str, info: dict, rows: list[Pending], run_state: Callable[[str], str | None],
                  out: Decision) -> bool:
    """One earlier batch with rows still released: request its missing runs, retry its failed ones (``info`` keeps
    the attempt), or say why it stopped. True while it is in flight."""
    attempt = int(info.get("attempt", 0))
    days = _days(rows)
    states = {d: run_state(run_key(b, d, attempt)) for d in days}
    missing = [d for d, s in states.items() if s is None]
    if any(s == IN_FLIGHT for s in states.values()) or missing:
        out.requests += [Request(run_key(b, d, attempt), b, tuple(days[d]), d, attempt) for d in missing]
        if len(missing) < len(days):
            out.waiting.append(f"batch {b}: waiting for {len(days) - len(missing)} run(s) to take in "
                               f"{len(rows)} released row(s)")
        return True
    failed = [d for d, s in states.items() if s == FAILED]
    if failed and attempt + 1 < MAX_ATTEMPTS:
        info["attempt"] = attempt + 1
        out.requests += [Request(run_key(b, d, attempt + 1), b, tuple(days[d]), d, attempt + 1) for d in days]
        return True
    if failed:
        out.waiting.append(f"batch {b}: the run for {', '.join(sorted(failed))} failed {MAX_ATTEMPTS} times; "
                           f"fix the cause (see the run in the UI), then run 'gtm-pipeline quarantine backfill'")
    else:
        out.waiting.append(f"batch {b}: runs succeeded but {len(rows)} row(s) are still released (their raw "
                           f"records were not found); see 'gtm-pipeline quarantine list --status released'")
    return False


def _new_batch(batches: dict[str, dict], pending_by_release: Mapping[str, list[Pending]],
               run_state: Callable[[str], str | None], out: Decision) -> bool:
    """2. Releases not requested yet: one new batch (added to ``batches``), one run per affected day. True if any."""
    known = {r for info in batches.values() for r in info["releases"]}
    fresh = sorted(r for r in pending_by_release if r not in known)
    if not fresh:
        return False
    b = batch_id(fresh)
    rows = [p for r in fresh for p in pending_by_release[r]]
    batches[b] = {"releases": fresh, "attempt": 0}
    days = _days(rows)
    # A lost cursor re-derives the same batch id, hence the same run keys: skip runs that exist already.
    out.requests += [Request(run_key(b, d), b, tuple(days[d]), d) for d in sorted(days)
                     if run_state(run_key(b, d)) is None]
    return True


def _decide_refresh(snap: Snapshot, run_state: Callable[[str], str | None],
                    refreshed_at: Callable[[Sequence[str]], float | None],
                    refresh_busy: Callable[[Sequence[str]], str | None] | None, waits: Mapping[str, float],
                    now: float | None, grace: float, out: Decision) -> dict[str, float]:
    """3. Refresh downstream (nothing is in flight) if repairs were applied after the last refresh. Returns the
    refresh waits to keep in the cursor."""
    entities = sorted({a.entity for a in snap.applied})
    since = refreshed_at(entities)
    newer = [a for a in snap.applied if since is None or _epoch(a.applied_at) > since]
    if not newer:
        return {}
    base = refresh_key(a.quarantine_id for a in newer)
    busy = refresh_busy(entities) if refresh_busy is not None else None
    kept_waits: dict[str, float] = {}
    # Someone else's refresh counts: a run already rebuilding the downstream, or the automation sensor's within the
    # grace period. Only the repair's own earlier attempts (run keys) skip the wait.
    if (busy is not None or grace > 0) and not any(run_state(f"{base}-a{i}") is not None
                                                   for i in range(MAX_ATTEMPTS)):
        if now is None:
            raise ValueError("decide(grace > 0) needs now")
        started = kept_waits[base] = waits.get(base, now)
        if busy is not None:
            out.waiting.append(f"refresh {base}: {busy} rebuilds the downstream; waiting for it")
            return kept_waits
        if now - started < grace:
            out.waiting.append(f"refresh {base}: leaving the downstream refresh to the automation sensor "
                               f"for {grace - (now - started):.0f}s more")
            return kept_waits
    ents = tuple(sorted({a.entity for a in newer}))
    for attempt in range(MAX_ATTEMPTS):  # a failed refresh is retried under the next attempt's key
        key = f"{base}-a{attempt}"
        state = run_state(key)
        if state is None:
            out.requests.append(Request(key, "refresh", ents, attempt=attempt, since_day=min(a.day for a in newer)))
        elif state == IN_FLIGHT:
            out.waiting.append(f"refresh {key}: waiting for the downstream refresh run")
        elif state == SUCCEEDED:
            out.waiting.append(f"refresh {key}: succeeded, but an asset downstream has no newer "
                               f"materialization; see the run in the UI")
        if state != FAILED:
            break
    else:
        out.waiting.append(f"refresh {base}: the downstream refresh failed {MAX_ATTEMPTS} times; fix the "
                           f"failing asset (see the runs in the UI), then run 'gtm-pipeline refresh'")
    return kept_waits


def cli_day_requests(snap: Snapshot, stamp: str) -> list[Request]:
    """The day runs ``gtm-pipeline quarantine backfill`` runs now: one per delivery day with released rows, under a
    batch of its own (``-cli``) and run keys made unique by ``stamp``, so they never collide with the sensor's."""
    if not snap.pending:
        return []
    b = batch_id(sorted({p.release_id for p in snap.pending})) + "-cli"
    return [Request(run_key(b, day) + "-" + stamp, b, tuple(ents), day) for day, ents in _days(snap.pending).items()]


def cli_refresh_request(snap: Snapshot, refreshed_at: Callable[[Sequence[str]], float | None]) -> Request | None:
    """The downstream refresh the CLI runs after its day runs: of the entities with rows applied after their own
    downstream was last rebuilt (``refreshed_at`` per entity); None if every downstream is newer."""
    since = {e: refreshed_at([e]) for e in {a.entity for a in snap.applied}}
    newer = [a for a in snap.applied if (t := since[a.entity]) is None or _epoch(a.applied_at) > t]
    if not newer:
        return None
    return Request(refresh_key(a.quarantine_id for a in newer) + "-cli", "refresh",
                   tuple(sorted({a.entity for a in newer})), since_day=min(a.day for a in newer))


def _days(rows: Iterable[Pending]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in rows:
        ents = out.setdefault(p.day, [])
        if p.entity not in ents:
            ents.append(p.entity)
    return {d: sorted(e) for d, e in sorted(out.items())}


def _epoch(ts: datetime) -> float:
    """Naive-UTC warehouse timestamp -> epoch seconds (Dagster's event timestamps)."""
    return ts.replace(tzinfo=UTC).timestamp()


def encode_cursor(cursor: Mapping) -> str:
    return json.dumps(cursor, sort_keys=True)


def decode_cursor(text: str | None) -> dict:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}  # an unreadable cursor only means batches are re-derived; run keys still prevent duplicates
    return doc if isinstance(doc, dict) else {}

