"""What keeps the pipeline fresh with no human (docs/operations.md, "What runs by itself").

- The daily partitions (ingest, clean, contracts) come in through `landing_sensor`: new or changed files in the
  landing folder request a `daily_ingest_job` run for those days.
- Everything built over all days (the conservation ledger, the metric layer, the decisions) carries
  `refresh_condition()`, evaluated by one automation sensor that runs by default: once a delivery day is in, the
  next tick requests every such asset together, and Dagster launches one run per tick for all of them (they share
  one partitioning: none), in dependency order.
- Assets with a cadence of their own are left to their schedules (`OWN_CADENCE`).

Why not ``AutomationCondition.eager()``: its ``~any_deps_missing()`` maps an unpartitioned asset onto *every*
partition of a daily parent, and the daily partitions always hold empty days (before the first delivery, today
before its files land), so eager never fires below a daily asset. `refresh_condition` keeps the rest of eager and
asks instead that every input has some data.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from functools import reduce

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.config import Settings, load_settings

# Assets that keep their own cadence rather than following every refresh: a review packet is built for a review
# meeting, on the schedules of gtm_pipeline/decisions/schedules.py.
OWN_CADENCE = {keys.REVIEW_PACKET_KEY: "the review cadence schedules (weekly, monthly, quarterly)"}

# Sensors that launch runs when new data arrives (as opposed to repairs or SLO reports): what they target is kept
# fresh by them.
DATA_SENSORS = (keys.LANDING_SENSOR,)

DEFAULT_INTERVAL_SECONDS = 30


def refresh_condition(daily_keys: Sequence[dg.AssetKey]) -> dg.AutomationCondition:
    """Request the asset once an input has new data (or it is new itself), when every input has some data, no run
    that writes delivery days (an asset of ``daily_keys``) is queued or running, and neither the asset nor an input
    is being written.

    Waiting for *every* daily asset, not only the asset's own inputs, coalesces a new day into one refresh: a daily
    run publishes its entities one by one, and without it the metrics over the first entities done would start in
    a run of their own while the others are still being cleaned.

    Nothing refreshes over unchanged inputs: a refresh run's own writes do not trigger the assets it also ran
    (``any_deps_updated`` ignores updates by runs that targeted the asset), so one new day causes one refresh.
    A failed step leaves its downstream as it was until the next day (no retry loop)."""
    ac = dg.AutomationCondition
    condition: dg.AutomationCondition = (
        (ac.any_deps_updated() | ac.newly_missing()).since_last_handled()
        & ac.all_deps_match(~ac.missing() | ac.will_be_requested()).with_label("every input has data"))
    if daily_keys:
        writing = reduce(operator.or_, [ac.asset_matches(k, ac.in_progress()) for k in daily_keys])
        condition = condition & ~writing.with_label("a delivery day is being written")
    return (condition & ~ac.any_deps_in_progress() & ~ac.in_progress()).with_label("refresh after new inputs")


def automated_keys(assets: Iterable) -> list[dg.AssetKey]:
    """The unpartitioned, materializable assets that follow new data: all of them except `OWN_CADENCE`."""
    out = []
    for a in assets:
        if isinstance(a, dg.AssetsDefinition) and a.is_materializable and a.partitions_def is None:
            out += [k for k in a.keys if k not in OWN_CADENCE]
    return sorted(out, key=lambda k: k.to_user_string())


def apply_automation(stages: dg.Definitions, settings: Settings | None = None) -> dg.Definitions:
    """``stages`` with `refresh_condition` on every automated asset and the automation sensor that evaluates it."""
    settings = settings or load_settings()
    assets = [a for a in stages.assets or [] if isinstance(a, dg.AssetsDefinition)]
    automated = set(automated_keys(assets))
    daily = sorted((k for a in assets if a.partitions_def is not None for k in a.keys), key=lambda k: tuple(k.path))
    condition = refresh_condition(daily)
    mapped = stages.map_asset_specs(
        func=lambda spec: spec.replace_attributes(automation_condition=condition) if spec.key in automated else spec)
    sensor = dg.AutomationConditionSensorDefinition(
        keys.AUTOMATION_SENSOR,
        target=dg.AssetSelection.assets(*sorted(automated, key=lambda k: k.to_user_string())),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds or DEFAULT_INTERVAL_SECONDS,
        run_tags={"gtm/trigger": keys.AUTOMATION_SENSOR},
        description=(
            "Refreshes everything built over all days (conservation ledger, metric layer with write-audit-publish, "
            "decisions) once new delivery days are in: one run per tick for every asset whose inputs have new "
            "data, none while an input is still being written, none over unchanged inputs. Review packets keep "
            "their own schedules. Turn it off here to pause the automatic refresh ('gtm-pipeline refresh' still "
            "works by hand)."),
    )
    return dg.Definitions.merge(mapped, dg.Definitions(sensors=[sensor]))


def uncovered_assets(defs: dg.Definitions, data_sensors: Iterable[str] = DATA_SENSORS) -> list[str]:
    """Materializable assets that nothing keeps fresh by default: no automation condition evaluated by an automation
    sensor that runs by default, and not in the job of a running-by-default schedule or data sensor
    (``data_sensors``). Empty when every asset refreshes by itself."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    running = dg.DefaultSensorStatus.RUNNING
    covered: set[dg.AssetKey] = set()

    def job_keys(job_name: str) -> set[dg.AssetKey]:
        return set(repo.get_job(job_name).asset_layer.selected_asset_keys)

    for sensor in repo.sensor_defs:
        if sensor.default_status != running:
            continue
        if isinstance(sensor, dg.AutomationConditionSensorDefinition):
            covered |= {k for k in sensor.asset_selection.resolve(graph)
                        if graph.has(k) and graph.get(k).automation_condition is not None}
        elif sensor.name in set(data_sensors):
            for target in sensor.targets:
                covered |= job_keys(target.job_name)
    for schedule in repo.schedule_defs:
        if schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.job_name:
            covered |= job_keys(schedule.job_name)
    return sorted(k.to_user_string() for k in graph.materializable_asset_keys - covered)
