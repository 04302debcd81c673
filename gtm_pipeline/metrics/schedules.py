"""The forecast's hourly refresh, from fresh facts only.

The forecast normally refreshes with the rest of the metric layer, in the automatic refresh that follows a new
delivery day (gtm_pipeline/orchestration/automation.py). This schedule is the hourly safety net: it compares the data
time of the forecast's inputs (from their latest materializations) with the data time of the forecast in force, and runs
the forecast only when the inputs have moved on and no queued or running run is about to refresh it already.
Recomputing over unchanged inputs would not make the forecast younger (age is data age, docs/slo.md) and would only
add runs.
"""

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.metrics.assets import input_key
from gtm_pipeline.metrics.registry import computations
from gtm_pipeline.slo.source import parse_published_at

forecast_job = dg.define_asset_job(
    keys.FORECAST_JOB, selection=dg.AssetSelection.assets(keys.metric_key(keys.FORECAST_METRIC)),
    description="Recompute and publish the bookings forecast (write, audit, publish) from the published facts.",
)


def _input_keys() -> list[dg.AssetKey]:
    return [input_key(r) for r in computations()[keys.FORECAST_METRIC].reads]


def _data_time(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    ev = instance.get_latest_materialization_event(key)
    if ev is None or ev.asset_materialization is None:
        return None
    v = ev.asset_materialization.metadata.get("data_time")
    return None if v is None else parse_published_at(getattr(v, "value", v), 0.0)


def _pending_run(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The id of a queued or running run that plans to materialize ``key``, if any."""
    planned = instance.get_latest_planned_materialization_info(key)
    run = instance.get_run_by_id(planned.run_id) if planned is not None else None
    return run.run_id if run is not None and not run.is_finished else None


def forecast_due(instance: dg.DagsterInstance) -> tuple[bool, str]:
    """(run?, why): run when every input has a data time, their oldest is newer than the forecast's, and no run
    that will refresh the forecast (e.g. the automatic refresh, mid-way through the metric layer) is pending."""
    pending = _pending_run(instance, keys.metric_key(keys.FORECAST_METRIC))
    if pending:
        return False, f"run {pending} is queued or running and will refresh the forecast"
    inputs = {k.to_user_string(): _data_time(instance, k) for k in _input_keys()}
    missing = [k for k, t in inputs.items() if t is None]
    if missing:
        return False, f"inputs without a data time yet: {', '.join(missing)}"
    newest_complete = min(t for t in inputs.values() if t is not None)
    current = _data_time(instance, keys.metric_key(keys.FORECAST_METRIC))
    if current is not None and newest_complete <= current:
        return False, "the forecast's inputs have no newer data than the forecast in force"
    return True, "the inputs have newer data than the forecast in force"


@dg.schedule(name=keys.FORECAST_SCHEDULE, job=forecast_job, cron_schedule="0 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Hourly: refresh the forecast when its inputs carry newer data than the forecast in force.")
def forecast_schedule(context: dg.ScheduleEvaluationContext):
    due, why = forecast_due(context.instance)
    if not due:
        return dg.SkipReason(why)
    return dg.RunRequest(run_key=None, tags={"reason": why})
