"""The SLO sensor: evaluates every SLO on an interval, steps the alert levels, writes incidents, posts webhooks and
refreshes the figures on the ``slo/<name>`` assets. The work is done by plain modules (`gtm_pipeline.slo`)."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.ops.notifications import NotificationDelivery, deliver_pending
from gtm_pipeline.slo import ops_state
from gtm_pipeline.slo.alerts import advance
from gtm_pipeline.slo.assets import freshness_check_evaluations, report_events
from gtm_pipeline.slo.durations import format_duration, human_duration
from gtm_pipeline.slo.evaluate import coverage_for, evaluate
from gtm_pipeline.slo.notify import Delivery, deliver, post_json
from gtm_pipeline.slo.resources import SloResource

_PRUNE_EVERY = 86400.0


def _deliver_owner_notifications(database: str, slo: SloResource) -> NotificationDelivery | str:
    """Deliver queued owner notifications; a write-locked warehouse (a run in progress) waits for the next tick."""
    try:
        con = duckdb.connect(database)
    except duckdb.Error as e:
        return f"warehouse busy ({str(e).splitlines()[0][:160]})"
    try:
        return deliver_pending(con, webhook_url=slo.webhook_url, slack_webhook_url=slo.slack_webhook_url,
                               post=post_json, timeout=slo.timeout_seconds)
    finally:
        con.close()


def build_slo_sensor(evaluation_interval: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=keys.SLO_SENSOR, minimum_interval_seconds=evaluation_interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Evaluates the freshness SLOs of contracts/slos.yaml every "
            f"{format_duration(evaluation_interval)}: age of each covered asset's published version, attainment, "
            "error budget and burn rates from the SLO history. Opens an incident in ops.incidents on a fast burn "
            "(page, SEV2) or slow burn (ticket, SEV3), resolves it on recovery, posts each state change once to "
            "the configured webhooks, delivers queued owner notifications (ops.notifications) with retries, and "
            "reports the figures on the slo/<name> assets and the data_freshness check of every covered asset."),
    )
    def slo_freshness_sensor(context: dg.SensorEvaluationContext, slo: SloResource, warehouse: DuckDBResource):
        slo_file = slo.load()
        # Dagster sets the repository whenever it runs a sensor (a test passes definitions to build_sensor_context).
        assert context.repository_def is not None
        coverage = coverage_for(slo_file, context.repository_def.asset_graph)
        with slo.history() as h:
            ev = evaluate(slo_file, coverage, h, context.instance)
            changes = advance(h, ev)
            delivery = deliver(h, connect=lambda: duckdb.connect(warehouse.database),
                               webhook_url=slo.webhook_url, slack_webhook_url=slo.slack_webhook_url,
                               timeout=slo.timeout_seconds)
            owners = _deliver_owner_notifications(warehouse.database, slo)
            # The exporter serves this snapshot of blocked days, incidents and quarantine while a run holds the
            # write lock; refreshing it here too keeps it recent when scrapes keep colliding with runs.
            try:
                ops_state.refresh(warehouse.database, h, now=ev.now)
            except ops_state.WarehouseUnavailable as e:
                context.log.debug(f"warehouse snapshot for the exporter waits for the next tick: {e}")
            h.set_meta("sensor_last_evaluation", repr(ev.now))
            last_report = float(h.meta("sensor_last_report") or 0)
            # The UI's data_freshness verdicts follow every change of an asset's state at once, not at the next
            # report interval.
            verdicts = json.dumps({e.asset_key.to_user_string(): e.metadata["state"].value
                                   for e in freshness_check_evaluations(ev)}, sort_keys=True)
            due = (bool(changes) or ev.now - last_report >= slo_file.report_interval
                   or verdicts != h.meta("sensor_check_states"))
            h.set_meta("sensor_check_states", verdicts)
            levels = {}
            for f in ev.slos:
                state = h.alert_state(f.slo.name)
                levels[f.slo.name] = (state.level, state.incident_id) if state else ("ok", None)
            if due:
                h.set_meta("sensor_last_report", repr(ev.now))
            if ev.now - float(h.meta("last_prune") or 0) >= _PRUNE_EVERY:
                h.prune(ev.now - max(s.window for s in slo_file.slos) - max(slo_file.windows) - 86400)
                h.set_meta("last_prune", repr(ev.now))
        _log_deliveries(context, changes, owners, delivery)
        summary = "; ".join(
            f"{f.slo.name} {f.state}/{levels[f.slo.name][0]}"
            + (f" budget {f.budget_remaining:.1%}" if f.budget_remaining is not None else "") for f in ev.slos)
        if due:
            context.log.info(f"SLOs: {summary}")
            return dg.SensorResult(asset_events=[*report_events(ev, levels), *freshness_check_evaluations(ev)])
        pending = f"; {len(delivery.waiting)} delivery target(s) waiting" if delivery.pending else ""
        return dg.SkipReason(f"No SLO state change ({summary}){pending}; next report on the slo assets in "
                             f"{human_duration(slo_file.report_interval - (ev.now - last_report))}")

    return slo_freshness_sensor


def _log_deliveries(context: dg.SensorEvaluationContext, changes: list[dict], owners: NotificationDelivery | str,
                    delivery: Delivery) -> None:
    """What the tick changed and what it could not deliver yet (retried at the next tick)."""
    for c in changes:
        context.log.warning(f"SLO state change: {c['title']} ({c['incident_id'] or c['resolves_incident_id']})")
    if isinstance(owners, str):
        context.log.warning(f"owner notifications wait for the next tick: {owners}")
    elif owners.failed:
        context.log.warning(f"owner notifications: {owners.failed} failed ({owners.errors}); retried with backoff")
    for target, why in delivery.waiting.items():
        context.log.warning(f"{target} delivery waits for the next tick: {why}")
