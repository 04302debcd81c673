"""``gtm-pipeline quarantine backfill``: the sensor's plan, executed now in this process.

The runner is the caller's (the CLI passes `gtm_pipeline.orchestration.runner.run_job` and the definitions it
built), so this library module imports neither the runner nor the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.quarantine.backfill import TAG_TRIGGER, Request, cli_day_requests, cli_refresh_request
from gtm_pipeline.quarantine.selection import (
    partition_selection,
    refresh_run_tags,
    refresh_selection,
    refreshed_at_lookup,
)
from gtm_pipeline.quarantine.snapshot import Snapshot, connect_reader, read_snapshot


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

    @property
    def ok(self) -> bool:
        return all(s for _, _, s in self.runs) and not self.held

    def record(self, req: Request, res: RunResult) -> None:
        self.runs.append((req, res.run_id, res.success))
        self.outcomes[res.run_id] = res
        if res.failed_steps:
            self.failed_steps[res.run_id] = res.failed_steps


def _read(database: str | Path) -> Snapshot:
    with connect_reader(database) as con:
        return read_snapshot(con)


def run_backfill_in_process(database: str | Path, *, definitions: dg.Definitions, run: RunJob, instance=None,
                            refresh: bool = True, run_config: dict | None = None) -> BackfillOutcome:
    """The day runs of the released rows, then (``refresh``) the downstream refresh, each through ``run``.

    Runs are recorded in the Dagster instance (``$DAGSTER_HOME``) with the same tags the sensor uses, so the UI
    shows them and the sensor sees the rows applied and requests nothing more. ``definitions`` should be built
    just before, so its resources follow the current settings (environment).
    """
    instance = instance or dg.DagsterInstance.get()
    graph = definitions.resolve_asset_graph()
    snap = _read(database)
    out = BackfillOutcome(pending_before=len(snap.pending))
    # The stamp keeps each invocation's run keys apart from earlier ones' and from the sensor's.
    for req in cli_day_requests(snap, datetime.now(UTC).strftime("%Y%m%dT%H%M%S")):
        out.record(req, run(keys.REPAIR_BACKFILL_JOB, partition_key=req.day, instance=instance, run_config=run_config,
                            asset_selection=partition_selection(graph, req.entities),
                            tags={**req.tags, TAG_TRIGGER: "cli"}, defs=definitions))
    ref = cli_refresh_request(_read(database), refreshed_at_lookup(instance, graph)) if refresh else None
    if ref is not None:
        tags = {**ref.tags, **refresh_run_tags(graph, instance, ref.entities, ref.since_day), TAG_TRIGGER: "cli"}
        out.record(ref, run(keys.REPAIR_BACKFILL_JOB, instance=instance, run_config=run_config,
                            asset_selection=refresh_selection(graph, ref.entities), tags=tags, defs=definitions))
    final = _read(database)
    pend = {p.quarantine_id for p in snap.pending}
    out.applied = sum(1 for a in final.applied if a.quarantine_id in pend)
    out.held = final.held_lines()  # this run's and earlier ones': every released row a blocked day still holds
    out.held_days = {h.day for h in final.held}
    return out
