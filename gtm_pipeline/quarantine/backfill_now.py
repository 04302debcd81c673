"""``gtm-pipeline quarantine backfill``: the sensor's plan, executed now in this process.

The runner is the caller's (the CLI passes `gtm_pipeline.orchestration.runner.run_job` and the definitions it
built), so this library module imports neither the runner nor the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import EntityContract, load_entity_contracts
from gtm_pipeline.config import load_settings
from gtm_pipeline.quarantine.backfill import TAG_TRIGGER, Request, cli_day_requests, cli_refresh_request
from gtm_pipeline.quarantine.selection import (
    partition_selection,
    refresh_run_tags,
    refresh_selection,
    refreshed_at_lookup,
)
from gtm_pipeline.quarantine.snapshot import PARENT_READY, Snapshot, connect_reader, read_snapshot


class RunResult(Protocol):
    """What this module reads of a run's outcome (`runner.RunOutcome` has it)."""

    @property
    def run_id(self) -> str: ...

    @property
    def success(self) -> bool: ...

    @property
    def failed_steps(self) -> list[str]: ...


class RunJob(Protocol):
    """Executes a job in-process and returns its outcome: the signature of `runner.run_job` this module uses."""

    def __call__(self, job_name: str, *, partition_key: str | None = None, run_config: dict | None = None,
                 instance: Any = None, defs: Any = None, asset_selection: list | None = None,
                 tags: dict[str, str] | None = None) -> RunResult: ...


@dataclass
class BackfillOutcome:
    runs: list[tuple[Request, str, bool]] = field(default_factory=list)  # (request, run_id, success)
    failed_steps: dict[str, list[str]] = field(default_factory=dict)      # run_id -> steps that failed
    outcomes: dict = field(default_factory=dict)                          # run_id -> what `run` returned
    pending_before: int = 0
    applied: int = 0
    held: list[str] = field(default_factory=list)   # Snapshot.held_lines() after the runs
    held_days: set[str] = field(default_factory=set)
    children: int = 0   # rows held for a parent that the runs published once the parent was in clean

    @property
    def ok(self) -> bool:
        return all(s for _, _, s in self.runs) and not self.held

    def record(self, req: Request, res: RunResult) -> None:
        self.runs.append((req, res.run_id, res.success))
        self.outcomes[res.run_id] = res
        if res.failed_steps:
            self.failed_steps[res.run_id] = res.failed_steps


def _read(database: str | Path, contracts: Mapping[str, EntityContract] | None) -> Snapshot:
    with connect_reader(database) as con:
        return read_snapshot(con, contracts)


# Rounds of day runs: released rows, then rows held for a parent that round put into clean, then their children
# (account -> opportunity -> opportunity_stage is the deepest chain of references in the contracts).
MAX_ROUNDS = 4


def run_backfill_in_process(database: str | Path, *, definitions: dg.Definitions, run: RunJob, instance=None,
                            refresh: bool = True, run_config: dict | None = None,
                            contracts: Mapping[str, EntityContract] | None = None) -> BackfillOutcome:
    """The day runs of the released rows, then of the days whose rows were held for a parent those runs put into
    clean (in rounds), then (``refresh``) the downstream refresh, each through ``run``.

    Runs are recorded in the Dagster instance (``$DAGSTER_HOME``) with the same tags the sensor uses, so the UI
    shows them and the sensor sees the rows applied and requests nothing more. ``definitions`` should be built
    just before, so its resources follow the current settings (environment).
    """
    instance = instance or dg.DagsterInstance.get()
    graph = definitions.resolve_asset_graph()
    contracts = contracts if contracts is not None else load_entity_contracts(load_settings().contracts_dir)
    snap = _read(database, contracts)
    out = BackfillOutcome(pending_before=sum(1 for p in snap.pending if not p.release_id.startswith(PARENT_READY)))
    seen: set[str] = set()
    ready: set[str] = set()   # held-for-parent rows whose day a round re-cleaned
    children: dict[str, str] = {}   # entity -> first day re-cleaned for a parent (the refresh starts there)
    current = snap
    for n in range(MAX_ROUNDS):
        todo = Snapshot(pending=[p for p in current.pending if p.quarantine_id not in seen])
        if not todo.pending:
            break
        seen |= {p.quarantine_id for p in todo.pending}
        for p in todo.pending:
            if p.release_id.startswith(PARENT_READY):
                ready.add(p.quarantine_id)
                children[p.entity] = min(children.get(p.entity, p.day), p.day)
        # The stamp keeps each invocation's run keys apart from earlier ones' and from the sensor's.
        for req in cli_day_requests(todo, datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"r{n}"):
            out.record(req, run(keys.REPAIR_BACKFILL_JOB, partition_key=req.day, instance=instance,
                                run_config=run_config, asset_selection=partition_selection(graph, req.entities),
                                tags={**req.tags, TAG_TRIGGER: "cli"}, defs=definitions))
        current = _read(database, contracts)
    still = {p.quarantine_id for p in current.pending}
    out.children = sum(1 for q in ready if q not in still)
    ref = cli_refresh_request(current, refreshed_at_lookup(instance, graph)) if refresh else None
    if refresh and children:
        ref = _with_children(ref, children)
    if ref is not None:
        tags = {**ref.tags, **refresh_run_tags(graph, instance, ref.entities, ref.since_day), TAG_TRIGGER: "cli"}
        out.record(ref, run(keys.REPAIR_BACKFILL_JOB, instance=instance, run_config=run_config,
                            asset_selection=refresh_selection(graph, ref.entities), tags=tags, defs=definitions))
    final = _read(database, contracts)
    pend = {p.quarantine_id for p in snap.pending if not p.release_id.startswith(PARENT_READY)}
    out.applied = sum(1 for a in final.applied if a.quarantine_id in pend)
    out.held = final.held_lines()  # this run's and earlier ones': every released row a blocked day still holds
    out.held_days = {h.day for h in final.held}
    return out


def _with_children(ref: Request | None, children: Mapping[str, str]) -> Request:
    """The downstream refresh widened to the entities re-cleaned for a parent, from their first such day."""
    entities = tuple(sorted(set(ref.entities if ref else ()) | set(children)))
    first = min([*children.values(), *([ref.since_day] if ref and ref.since_day else [])])
    key = (ref.run_key if ref else "repair-refresh-children-cli") + "-" + "-".join(sorted(children))
    return Request(key, "refresh", entities, since_day=first)
