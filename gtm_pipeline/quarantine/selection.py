"""The Dagster side of the repair backfill: which assets a day run and the downstream refresh select, and the
instance lookups `gtm_pipeline.quarantine.backfill.decide` takes (run states, last refresh, a refresh in flight)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.quarantine.backfill import FAILED, IN_FLIGHT, SUCCEEDED, TAG_RUN_KEY, WILL_RETRY_TAG


def _entity_selection(entities: Iterable[str]):
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

