"""repair_backfill_sensor: released quarantine repairs -> runs of exactly the affected day partitions, then the
downstream refresh. The decision is `gtm_pipeline.quarantine.backfill.decide`; this body only gathers its inputs."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.clock import to_epoch, utcnow
from gtm_pipeline.config import load_settings
from gtm_pipeline.orchestration.automation import DEFAULT_INTERVAL_SECONDS
from gtm_pipeline.quarantine import backfill as backfill
from gtm_pipeline.quarantine import selection as selection
from gtm_pipeline.quarantine.jobs import repair_backfill_job
from gtm_pipeline.quarantine.snapshot import WarehouseBusy, read_snapshot_file

# The re-cleaned days are new clean data, which the automation sensor refreshes the downstream after on its own: the
# repair's own refresh waits this many of its ticks for that run first (and is requested only if none came).
REFRESH_GRACE_TICKS = 4


def refresh_grace() -> float:
    return float(REFRESH_GRACE_TICKS * (load_settings().sensor_interval_seconds or DEFAULT_INTERVAL_SECONDS))


@dg.sensor(
    name=keys.REPAIR_BACKFILL_SENSOR,
    jobs=[repair_backfill_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches quarantine tables for released repairs ('gtm-pipeline quarantine release'). Per batch of releases "
        "it requests one run per affected delivery day of only the affected entities' clean assets (run key = "
        "batch + day + attempt, so a restart never launches a run twice; a failed run is retried up to 3 times), "
        "then, once they are in, one refresh of everything downstream (ledger, metrics and decisions): the "
        "automation sensor's, or -- if no run rebuilt the downstream within four of its ticks -- its own. Released "
        "rows that a blocked day holds back are named in the skip reason with the day and the check that blocks it. "
        "Rows held because their parent waited in quarantine get a run of their day once the parent is in clean."
    ),
    tags={"stage": "clean", "purpose": "quarantine_repair"},
)
def repair_backfill_sensor(context: dg.SensorEvaluationContext, warehouse: DuckDBResource):
    try:
        snap = read_snapshot_file(warehouse.database, load_entity_contracts(load_settings().contracts_dir))
    except WarehouseBusy as e:
        return dg.SkipReason(str(e))
    # Dagster sets the repository whenever it runs a sensor (a test passes definitions to build_sensor_context).
    assert context.repository_def is not None
    graph = context.repository_def.asset_graph
    decision = backfill.decide(snap, backfill.decode_cursor(context.cursor),
                               selection.run_state_lookup(context.instance),
                               selection.refreshed_at_lookup(context.instance, graph),
                               refresh_busy=selection.refresh_busy_lookup(context.instance, graph),
                               now=to_epoch(utcnow()), grace=refresh_grace())
    cursor = backfill.encode_cursor(decision.cursor)
    if not decision.requests:
        context.update_cursor(cursor)
        return dg.SkipReason(decision.skip_reason())
    requests = []
    for r in decision.requests:
        tags = {**r.tags, backfill.TAG_TRIGGER: keys.REPAIR_BACKFILL_SENSOR}
        if r.day:  # one delivery day of the affected entities' clean assets
            assets = selection.partition_selection(graph, r.entities)
        else:  # everything downstream; partitioned metrics from the first affected day on
            assets = selection.refresh_selection(graph, r.entities)
            tags.update(selection.refresh_run_tags(graph, context.instance, r.entities, r.since_day))
        requests.append(dg.RunRequest(run_key=r.run_key, job_name=keys.REPAIR_BACKFILL_JOB, partition_key=r.day,
                                      asset_selection=assets, tags=tags))
    return dg.SensorResult(run_requests=requests, cursor=cursor)
