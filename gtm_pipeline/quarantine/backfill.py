"""Targeted backfill of released repairs: which day partitions to re-clean, then which downstream assets to refresh.

Both the ``repair_backfill_sensor`` and ``gtm-pipeline quarantine backfill`` use this module, so the UI, the sensor
and the CLI run the same thing:

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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from gtm_pipeline.clean.contract import BLOCK_PUBLISH
from gtm_pipeline.quarantine.overlay import APPLIED, HELD, REJECTED, RELEASED

MAX_ATTEMPTS = 3
TAG_RUN_KEY = "gtm_pipeline/run_key"
TAG_BATCH = "gtm_pipeline/repair_batch"
TAG_TRIGGER = "gtm_pipeline/trigger"
# Lets an operator serialise these runs on the one-writer DuckDB with run_queue.tag_concurrency_limits.
TAG_WAREHOUSE = "gtm_pipeline/warehouse"
# Set by Dagster on a failed run it will re-execute automatically (dagster._core.storage.tags.WILL_RETRY_TAG).
WILL_RETRY_TAG = "dagster/will_retry"


class WarehouseBusy(Exception):
    """The DuckDB file is locked by a writer (a running run) or does not exist yet."""


@dataclass(frozen=True)
class Pending:
    quarantine_id: str
    entity: str
    day: str
    release_id: str


@dataclass(frozen=True)
class Applied:
    quarantine_id: str
    entity: str
    day: str
    applied_at: datetime
    applied_run_id: str | None


@dataclass(frozen=True)
class Block:
    """What holds back the publication of one entity's day: its rows that break a block-publish rule, by rule."""

    entity: str
    day: str
    rules: tuple[tuple[str, int], ...]   # (rule, rows), e.g. (("range", 1),)

    def describe(self) -> str:
        from gtm_pipeline import keys  # imports Dagster: this module stays light for the exporter's reads
        from gtm_pipeline.datatime import blocked_text

        asset = f"{keys.CLEAN}/{self.entity}"
        if not self.rules:
            return blocked_text(asset, (self.day,))
        checks = ", ".join(dict.fromkeys(keys.RULE_CHECKS.get(r.split(":")[0], r) for r, _ in self.rules))
        kinds = {r.split(":")[0] for r, _ in self.rules}
        text = blocked_text(asset, (self.day,), check=checks, rule=kinds.pop() if len(kinds) == 1 else None,
                            rows=sum(n for _, n in self.rules))
        return text + "; repair and release those rows and the held rows are taken in with the day"


@dataclass
class Snapshot:
    pending: list[Pending] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    held: list[Pending] = field(default_factory=list)      # released rows held on a blocked day
    blocks: dict[tuple[str, str], Block] = field(default_factory=dict)   # (entity, day) of held rows -> why

    def held_lines(self) -> list[str]:
        """One line per blocked day that holds released rows: day, entity, the check and rows that block it."""
        by_day: dict[tuple[str, str], int] = {}
        for h in self.held:
            by_day[(h.entity, h.day)] = by_day.get((h.entity, h.day), 0) + 1
        return [f"{n} released row(s) stay held: {self.blocks[k].describe()}" for k, n in sorted(by_day.items())]


def read_snapshot(con: duckdb.DuckDBPyConnection) -> Snapshot:
    """Released-but-not-applied rows, applied rows, and released rows held on a blocked day (with what blocks that
    day), from every quarantine table that has the repair columns."""
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'quarantine' "
        "AND column_name = 'released_payload' ORDER BY 1").fetchall()]
    snap = Snapshot()
    for t in tables:
        for qid, ent, day, status, rid, at, run in con.execute(
                f"SELECT quarantine_id, entity, _partition::VARCHAR, status, release_id, applied_at, applied_run_id "
                f"FROM quarantine.{t} WHERE status IN ('{RELEASED}', '{APPLIED}') "
                f"OR (status = '{HELD}' AND released_payload IS NOT NULL)").fetchall():
            if status == RELEASED:
                snap.pending.append(Pending(qid, ent, day, rid or "unbatched"))
            elif status == HELD:
                snap.held.append(Pending(qid, ent, day, rid or "unbatched"))
            elif at is not None:
                snap.applied.append(Applied(qid, ent, day, at, run))
    for ent, day in sorted({(h.entity, h.day) for h in snap.held}):
        # The rows that hold the day back: those breaking a block-publish rule, still waiting for their repair.
        counts: dict[str, int] = {}
        for t in tables:
            for rule, n in con.execute(
                    f"SELECT rule, count(*) FROM quarantine.{t} WHERE entity = ? AND _partition = ?::DATE "
                    f"AND break_action = ? AND status NOT IN ('{HELD}', '{APPLIED}', '{REJECTED}') GROUP BY 1",
                    [ent, day, BLOCK_PUBLISH]).fetchall():
                counts[rule] = counts.get(rule, 0) + int(n)
        snap.blocks[(ent, day)] = Block(ent, day, tuple(sorted(counts.items())))
    return snap


T = TypeVar("T")


def connect_reader(database: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection; if this process already holds the file open for writing, a connection with that
    configuration (DuckDB refuses a second configuration in one process). That happens after an in-process run whose
    step failed: the warehouse resource does not close its connection when the step raises.
    """
    try:
        return duckdb.connect(str(database), read_only=True)
    except duckdb.ConnectionException:
        pass
    try:
        return duckdb.connect(str(database))
    except duckdb.ConnectionException:
        return duckdb.connect(str(database), config={"custom_user_agent": "dagster"})  # DuckDBResource's config


def read_when_free(database: str | Path, read: Callable[[duckdb.DuckDBPyConnection], T], *,
                   error: type[Exception], missing: str) -> T:
    """``read`` on a short read-only connection. A missing file raises ``error(missing)``; a file whose write lock a
    run holds raises ``error`` saying so (the sensors and the exporter look again at their next tick)."""
    path = Path(database)
    if not path.exists():
        raise error(missing)
    try:
        con = connect_reader(path)
    except duckdb.Error as e:  # IOException "Could not set lock on file" while a run holds the write lock
        raise error(f"the warehouse {path.name} is locked by a running run ({str(e).splitlines()[0][:160]}); "
                    f"will look again on the next tick") from e
    try:
        return read(con)
    finally:
        con.close()


def read_snapshot_file(database: str | Path) -> Snapshot:
    """`read_snapshot` on a read-only connection; a locked or missing file raises WarehouseBusy with the reason."""
    return read_when_free(database, read_snapshot, error=WarehouseBusy,
                          missing=f"the warehouse {Path(database).name} does not exist yet: nothing has been "
                                  f"cleaned or released")


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
    downstream of the entities (None if none was ever materialized; see `refreshed_at_lookup`).
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
    in_flight = False

    # 1. Batches requested earlier: done, waiting, or to be retried.
    for b, info in sorted(batches.items()):
        rows = [p for r in info["releases"] for p in pending_by_release.get(r, [])]
        if not rows:
            del batches[b]  # every row of the batch is applied (or re-opened): done
            continue
        attempt = int(info.get("attempt", 0))
        days = _days(rows)
        states = {d: run_state(run_key(b, d, attempt)) for d in days}
        missing = [d for d, s in states.items() if s is None]
        if any(s == IN_FLIGHT for s in states.values()) or missing:
            in_flight = True
            out.requests += [Request(run_key(b, d, attempt), b, tuple(days[d]), d, attempt) for d in missing]
            if len(missing) < len(days):
                out.waiting.append(f"batch {b}: waiting for {len(days) - len(missing)} run(s) to take in "
                                   f"{len(rows)} released row(s)")
            continue
        failed = [d for d, s in states.items() if s == FAILED]
        if failed and attempt + 1 < MAX_ATTEMPTS:
            info["attempt"] = attempt + 1
            in_flight = True
            out.requests += [Request(run_key(b, d, attempt + 1), b, tuple(days[d]), d, attempt + 1) for d in days]
            continue
        if failed:
            out.waiting.append(f"batch {b}: the run for {', '.join(sorted(failed))} failed {MAX_ATTEMPTS} times; "
                               f"fix the cause (see the run in the UI), then run 'gtm-pipeline quarantine backfill'")
        else:
            out.waiting.append(f"batch {b}: runs succeeded but {len(rows)} row(s) are still released (their raw "
                               f"records were not found); see 'gtm-pipeline quarantine list --status released'")

    # 2. Releases not requested yet: one new batch, one run per affected day.
    known = {r for info in batches.values() for r in info["releases"]}
    fresh = sorted(r for r in pending_by_release if r not in known)
    if fresh:
        b = batch_id(fresh)
        rows = [p for r in fresh for p in pending_by_release[r]]
        batches[b] = {"releases": fresh, "attempt": 0}
        days = _days(rows)
        # A lost cursor re-derives the same batch id, hence the same run keys: skip runs that exist already.
        out.requests += [Request(run_key(b, d), b, tuple(days[d]), d) for d in sorted(days)
                         if run_state(run_key(b, d)) is None]
        in_flight = True

    # 3. Refresh downstream once nothing is in flight, if repairs were applied after the last refresh.
    kept_waits: dict[str, float] = {}
    if not in_flight and snap.applied:
        entities = sorted({a.entity for a in snap.applied})
        since = refreshed_at(entities)
        newer = [a for a in snap.applied if since is None or _epoch(a.applied_at) > since]
        base = refresh_key(a.quarantine_id for a in newer) if newer else ""
        busy = refresh_busy(entities) if newer and refresh_busy is not None else None
        if newer and (busy is not None or grace > 0):
            # Someone else's refresh counts: a run already rebuilding the downstream, or the automation sensor's
            # within the grace period. Only the repair's own earlier attempts (run keys) skip the wait.
            own = any(run_state(f"{base}-a{i}") is not None for i in range(MAX_ATTEMPTS))
            if not own:
                if now is None:
                    raise ValueError("decide(grace > 0) needs now")
                started = kept_waits[base] = waits.get(base, now)
                if busy is not None:
                    out.waiting.append(f"refresh {base}: {busy} rebuilds the downstream; waiting for it")
                    newer = []
                elif now - started < grace:
                    out.waiting.append(f"refresh {base}: leaving the downstream refresh to the automation sensor "
                                       f"for {grace - (now - started):.0f}s more")
                    newer = []
        if newer:
            ents = tuple(sorted({a.entity for a in newer}))
            for attempt in range(MAX_ATTEMPTS):  # a failed refresh is retried under the next attempt's key
                key = f"{base}-a{attempt}"
                state = run_state(key)
                if state is None:
                    out.requests.append(Request(key, "refresh", ents, attempt=attempt,
                                                since_day=min(a.day for a in newer)))
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
    # 4. Released rows a blocked day holds back: no run takes them in before the day publishes, so say which day and
    # check (a re-clean would hold them again; the fix is the blocking rows' repair, whose release re-cleans the day).
    out.waiting += snap.held_lines()
    out.cursor = {"batches": batches, **({"refresh_wait": kept_waits} if kept_waits else {})}
    return out


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


# ---- Dagster side: asset selections, run lookups, in-process execution ------------------------------------------

def _entity_selection(entities: Iterable[str]):
    import dagster as dg

    from gtm_pipeline import keys

    return dg.AssetSelection.assets(*(keys.clean_key(e) for e in entities)).required_multi_asset_neighbors()


def partition_selection(asset_graph, entities: Iterable[str]) -> list:
    """Asset keys of one day's run: the entities' clean multi-assets (clean table and quarantine tables) only."""
    return sorted(_entity_selection(entities).resolve(asset_graph))


def refresh_selection(asset_graph, entities: Iterable[str]) -> list:
    """Executable assets downstream of the entities' clean assets: partitioned metrics, ledger, metrics, decisions."""
    down = _entity_selection(entities).downstream(include_self=False).resolve(asset_graph)
    return sorted(k for k in down if asset_graph.get(k).is_materializable)


def refresh_partition_range(asset_graph, instance, entities: Iterable[str], since_day: str) -> tuple[str, str] | None:
    """Day range for the partitioned assets of the refresh: ``since_day`` through their latest materialized day.

    None when nothing downstream is partitioned. Days after ``since_day`` are included because a daily snapshot
    (fact_pipeline) carries a record forward from the day it was created.
    """
    parts = [k for k in refresh_selection(asset_graph, entities) if asset_graph.get(k).partitions_def is not None]
    if not parts:
        return None
    latest = [max(m) for k in parts if (m := instance.get_materialized_partitions(k))]
    return since_day, max([since_day, *latest])


def refresh_run_tags(asset_graph, instance, entities: Iterable[str], since_day: str | None) -> dict[str, str]:
    rng = refresh_partition_range(asset_graph, instance, entities, since_day) if since_day else None
    if rng is None:
        return {}
    return {"dagster/asset_partition_range_start": rng[0], "dagster/asset_partition_range_end": rng[1]}


def run_state_lookup(instance) -> Callable[[str], str | None]:
    """run_key -> None | IN_FLIGHT | SUCCEEDED | FAILED, from the Dagster instance (latest run with that key)."""
    import dagster as dg

    done_ok = {dg.DagsterRunStatus.SUCCESS}
    done_bad = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}

    def lookup(key: str) -> str | None:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_RUN_KEY: key}), limit=1)
        if not runs:
            return None
        st = runs[0].status
        if st in done_bad and runs[0].tags.get(WILL_RETRY_TAG) == "true":
            # Its worker crashed and the daemon is about to re-execute it (dagster.yaml run_retries; the retry keeps
            # the run key tag): still in flight, so the sensor does not launch a second copy under a new attempt.
            return IN_FLIGHT
        return SUCCEEDED if st in done_ok else FAILED if st in done_bad else IN_FLIGHT

    return lookup


def refresh_busy_lookup(instance, asset_graph) -> Callable[[Sequence[str]], str | None]:
    """entities -> the first run queued or running whose assets include something downstream of them (e.g. the
    automation sensor's refresh after the re-cleaned days), described; None if no such run."""
    import dagster as dg

    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]

    def lookup(entities: Sequence[str]) -> str | None:
        wanted = set(refresh_selection(asset_graph, entities))
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=active), limit=50):
            if wanted & set(run.asset_selection or ()):
                return f"run {run.run_id[:8]} ({run.job_name}, {run.status.value.lower()})"
        return None

    return lookup


def refreshed_at_lookup(instance, asset_graph) -> Callable[[Sequence[str]], float | None]:
    """entities -> when everything downstream of them that exists was last rebuilt (the oldest of their latest
    materializations), None if nothing downstream was ever materialized. An asset never materialized is left to the
    regular pipeline: refreshing means rebuilding what readers already see."""
    def lookup(entities: Sequence[str]) -> float | None:
        keys_ = refresh_selection(asset_graph, entities)
        if not keys_:
            return float("inf")  # nothing downstream: nothing to refresh
        times = [ev.timestamp for k in keys_ if (ev := instance.get_latest_materialization_event(k)) is not None]
        return min(times) if times else None

    return lookup


@dataclass
class BackfillOutcome:
    runs: list[tuple[Request, str, bool]] = field(default_factory=list)  # (request, run_id, success)
    failed_steps: dict[str, list[str]] = field(default_factory=dict)      # run_id -> steps that failed
    outcomes: dict = field(default_factory=dict)                          # run_id -> runner.RunOutcome
    pending_before: int = 0
    applied: int = 0
    held: list[str] = field(default_factory=list)   # Snapshot.held_lines() after the runs
    held_days: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return all(s for _, _, s in self.runs) and not self.held


def run_backfill_in_process(database: str | Path, *, definitions=None, instance=None, refresh: bool = True,
                            run_config: dict | None = None) -> BackfillOutcome:
    """What ``gtm-pipeline quarantine backfill`` does: the sensor's plan, executed now in this process.

    Runs are recorded in the Dagster instance (``$DAGSTER_HOME``) with the same tags the sensor uses, so the UI
    shows them and the sensor sees the rows applied and requests nothing more.
    """
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.runner import run_job

    if definitions is None:  # built now, so its resources follow the current settings (environment)
        from gtm_pipeline.definitions import build_definitions

        definitions = build_definitions()
    instance = instance or dg.DagsterInstance.get()
    graph = definitions.resolve_asset_graph()
    with connect_reader(database) as con:
        snap = read_snapshot(con)
    out = BackfillOutcome(pending_before=len(snap.pending))
    if snap.pending:
        releases = sorted({p.release_id for p in snap.pending})
        b = batch_id(releases) + "-cli"
        for day, ents in _days(snap.pending).items():
            req = Request(run_key(b, day) + "-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S"), b,
                          tuple(ents), day)
            res = run_job(keys.REPAIR_BACKFILL_JOB, partition_key=day, instance=instance, run_config=run_config,
                          asset_selection=partition_selection(graph, ents),
                          tags={**req.tags, TAG_TRIGGER: "cli"}, defs=definitions)
            out.runs.append((req, res.run_id, res.success))
            out.outcomes[res.run_id] = res
            if res.failed_steps:
                out.failed_steps[res.run_id] = res.failed_steps
    if refresh:
        with connect_reader(database) as con:
            after = read_snapshot(con)
        lookup = refreshed_at_lookup(instance, graph)
        since = {e: lookup([e]) for e in {a.entity for a in after.applied}}
        newer = [a for a in after.applied if (t := since[a.entity]) is None or _epoch(a.applied_at) > t]
        if newer:
            refreshed = tuple(sorted({a.entity for a in newer}))
            req = Request(refresh_key(a.quarantine_id for a in newer) + "-cli", "refresh", refreshed,
                          since_day=min(a.day for a in newer))
            tags = {**req.tags, **refresh_run_tags(graph, instance, refreshed, req.since_day), TAG_TRIGGER: "cli"}
            res = run_job(keys.REPAIR_BACKFILL_JOB, instance=instance, run_config=run_config,
                          asset_selection=refresh_selection(graph, refreshed), tags=tags, defs=definitions)
            out.runs.append((req, res.run_id, res.success))
            out.outcomes[res.run_id] = res
            if res.failed_steps:
                out.failed_steps[res.run_id] = res.failed_steps
    with connect_reader(database) as con:
        final = read_snapshot(con)
    pend = {p.quarantine_id for p in snap.pending}
    out.applied = sum(1 for a in final.applied if a.quarantine_id in pend)
    out.held = final.held_lines()  # this run's and earlier ones': every released row a blocked day still holds
    out.held_days = {h.day for h in final.held}
    return out
