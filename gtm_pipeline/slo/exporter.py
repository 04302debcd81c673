"""Prometheus exporter (`gtm-pipeline slo exporter`): reads state at scrape time, keeps none of its own.

At each scrape it copies new publications from Dagster's event log into the SLO history and exports
- ``gtm_asset_data_time_seconds{slo,asset}``: the data time of the published version in force (how far its inputs
  are complete), present once the asset has published. A timestamp, not an age, so it keeps ageing in
  ``time() - ts`` even if this exporter dies; the generated rules compute the Prometheus-side SLI from it;
- ``gtm_asset_last_success_timestamp_seconds{slo,asset}``: when that version was published (0 = never: unknown);
- the SLO's objective, threshold and window, and the figures of the persistent history: good/total/unknown seconds
  in the window, attainment, error budget remaining, burn rate per alerting window, the sensor's alert level;
- the warehouse's operational figures (`gtm_pipeline.slo.ops_state`): ``gtm_publication_blocked``,
  ``gtm_incidents_open``, ``gtm_incident_open_timestamp_seconds``, ``gtm_quarantine_rows``, ``gtm_rejected_lines``
  and ``gtm_landing_file_not_read`` (files rejected whole or unclaimed), with owner labels, plus
  ``gtm_warehouse_snapshot_timestamp_seconds``: when they were read;
- ``gtm_exporter_scrape_errors_total``: scrapes in which reading the event log or the history failed (the static
  SLO figures are still served, the per-asset ones are left out, and the rules treat them as absent).
It never waits for the DuckDB warehouse, so it answers while a pipeline run holds the write lock: the operational
figures come from a short read-only connection when the file is free and from the last snapshot (stored in the SLO
history, also refreshed by the SLO sensor) when it is not.
Names follow https://prometheus.io/docs/practices/naming/: one prefix, base units, ``_seconds``, ``_total``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gtm_pipeline.slo import ops_state
from gtm_pipeline.slo.contract import LEVELS, Coverage, SloFile
from gtm_pipeline.slo.durations import format_duration
from gtm_pipeline.slo.evaluate import evaluate
from gtm_pipeline.slo.history import History

log = logging.getLogger(__name__)
PREFIX = "gtm"


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class SloCollector(Collector):
    """``database``: the DuckDB warehouse whose operational figures are exported (None: none are);
    ``owners``: entity -> owner (from contracts/entities), for the labels of blocked days and quarantined rows;
    ``source_owners``: source -> owner (from contracts/sources.yaml), for rejected lines and files not read;
    ``warehouse_min_interval``: read the warehouse at most this often (seconds), else serve the stored snapshot."""

    def __init__(self, slo_file: SloFile, coverage: Coverage, history: History, instance_factory: Callable, *,
                 database: str | Path | None = None, owners: Mapping[str, str] | None = None,
                 source_owners: Mapping[str, str] | None = None, warehouse_min_interval: float = 5.0):
        self.slo_file = slo_file
        self.coverage = coverage
        self.history = history
        self._instance_factory = instance_factory
        self._instance = None
        self._lock = threading.Lock()
        self.errors = 0
        self.database = database
        self.owners = dict(owners or {})
        self.source_owners = dict(source_owners or {})
        self.warehouse_min_interval = warehouse_min_interval
        self.warehouse_failures = 0
        self._last_read: float | None = None  # monotonic time of the last attempt to read the warehouse

    def _static(self) -> Iterator[GaugeMetricFamily]:
        objective = GaugeMetricFamily(f"{PREFIX}_slo_objective_ratio", "Target share of time an asset is fresh.",
                                      labels=["slo"])
        threshold = GaugeMetricFamily(f"{PREFIX}_slo_freshness_threshold_seconds",
                                      "Age of the published version beyond which an asset is stale.", labels=["slo"])
        window = GaugeMetricFamily(f"{PREFIX}_slo_window_seconds", "Rolling window of attainment and error budget.",
                                   labels=["slo"])
        for s in self.slo_file.slos:
            objective.add_metric([s.name], s.objective)
            threshold.add_metric([s.name], s.threshold)
            window.add_metric([s.name], s.window)
        yield from (objective, threshold, window)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        t0 = time.perf_counter()
        with self._lock:
            yield from self._static()
            failed = False
            try:
                if self._instance is None:
                    self._instance = self._instance_factory()
                ev = evaluate(self.slo_file, self.coverage, self.history, self._instance)
                families: list[GaugeMetricFamily | CounterMetricFamily] = list(self._dynamic(ev))
            except Exception:  # noqa: BLE001 - a scrape must answer; the error is counted and logged
                failed = True
                log.exception("slo exporter: reading state failed")
                families = []
            yield from families
            try:
                families = list(self._ops()) if self.database is not None else []
            except Exception:  # noqa: BLE001 - a scrape must answer; the error is counted and logged
                failed = True
                log.exception("slo exporter: reading the warehouse figures failed")
                families = []
            yield from families
            self.errors += failed
            errors = CounterMetricFamily(f"{PREFIX}_exporter_scrape_errors",
                                         "Scrapes in which reading the event log, the SLO history or the "
                                         "warehouse figures failed (a locked warehouse is not an error).")
            errors.add_metric([], self.errors)
            yield errors
            duration = GaugeMetricFamily(f"{PREFIX}_exporter_scrape_duration_seconds",
                                         "Time this exporter took to read the state for the last scrape.")
            duration.add_metric([], time.perf_counter() - t0)
            yield duration

    def _dynamic(self, ev) -> Iterator[GaugeMetricFamily]:
        g = _gauge
        last = g("asset_last_success_timestamp_seconds",
                 "Unix time the published version in force was published (0 = never published).", ["slo", "asset"])
        data_time = g("asset_data_time_seconds",
                      "Unix time through which the published version's inputs are complete (its data time; age is "
                      "now minus this).", ["slo", "asset"])
        age = g("asset_data_age_seconds", "Seconds since the data time of the published version in force.",
                ["slo", "asset"])
        partial = g("asset_partial", "1 if blocked input partitions hold the version in force back (named in the "
                                     "slo report).", ["slo", "asset"])
        blocked = g("asset_publish_blocked",
                    "1 if the newest materialization was a blocked publish (previous version still in force).",
                    ["slo", "asset"])
        good = g("slo_sli_good_seconds", "Seconds of the SLO window in which the asset was fresh.", ["slo", "asset"])
        total = g("slo_sli_total_seconds", "Seconds of the SLO window with a known state (fresh or stale).",
                  ["slo", "asset"])
        unknown = g("slo_sli_unknown_seconds", "Seconds of the SLO window before the asset's first publication.",
                    ["slo", "asset"])
        attain = g("slo_attainment_ratio", "Fresh share of the known time in the SLO window.", ["slo", "asset"])
        budget = g("slo_error_budget_remaining_ratio",
                   "Share of the window's error budget left (negative once overspent).", ["slo", "asset"])
        burn = g("slo_burn_rate", "Error budget burn rate over a window (1 spends the budget exactly).",
                 ["slo", "asset", "window"])
        level = g("slo_alert_level", "Alert level the SLO sensor holds: 0 ok, 1 ticket (SEV3), 2 page (SEV2).",
                  ["slo"])
        recon = g("slo_reconstructed_seconds",
                  "Seconds of the window computed from publication times because nothing evaluated live.", ["slo"])
        for figs in ev.slos:
            name = figs.slo.name
            for a in figs.assets:
                lbl = [name, a.asset]
                last.add_metric(lbl, a.last_published or 0.0)
                if a.data_time is not None and a.age is not None:
                    data_time.add_metric(lbl, a.data_time)
                    age.add_metric(lbl, a.age)
                partial.add_metric(lbl, 1.0 if a.blocking else 0.0)
                blocked.add_metric(lbl, 1.0 if a.asset in ev.blocked else 0.0)
                good.add_metric(lbl, a.window.good)
                total.add_metric(lbl, a.window.known)
                unknown.add_metric(lbl, a.window.unknown)
                if a.attainment is not None:
                    attain.add_metric(lbl, a.attainment)
                budget.add_metric(lbl, a.budget_remaining)
                for w, rate in a.burn.items():
                    burn.add_metric([*lbl, format_duration(w)], rate)
            for k in figs.pending:  # named in the file, not deployed yet: never published
                last.add_metric([name, k], 0.0)
            state = self.history.alert_state(name)
            level.add_metric([name], LEVELS.index(state.level) if state else 0)
            recon.add_metric([name], ev.reconstructed[name])
        yield from (last, data_time, age, partial, blocked, good, total, unknown, attain, budget, burn, level, recon)
        yield from self._sensor_families()

    def _sensor_families(self) -> Iterator[GaugeMetricFamily]:
        """The sensor's own health: undelivered state changes and when it last evaluated."""
        pending = _gauge("slo_pending_notifications", "State changes not yet delivered to every target.", [])
        pending.add_metric([], len(self.history.outbox(pending_only=True)))
        yield pending
        sensor = self.history.meta("sensor_last_evaluation")
        if sensor:
            last_eval = _gauge("slo_sensor_last_evaluation_timestamp_seconds",
                               "Unix time the Dagster SLO sensor last evaluated.", [])
            last_eval.add_metric([], float(sensor))
            yield last_eval

    def _snapshot(self) -> ops_state.OpsSnapshot | None:
        """A fresh read of the warehouse if it is free (and not read within ``warehouse_min_interval``), else the
        last stored snapshot (None before the first successful read by anyone)."""
        due = self._last_read is None or time.monotonic() - self._last_read >= self.warehouse_min_interval
        if due and self.database is not None:   # always set when this runs: _ops is skipped without a warehouse
            self._last_read = time.monotonic()
            try:
                return ops_state.refresh(self.database, self.history)
            except ops_state.WarehouseUnavailable as e:
                self.warehouse_failures += 1
                log.info("slo exporter: serving the last warehouse snapshot: %s", e)
        return ops_state.stored(self.history)

    def _ops(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        g = _gauge
        snap = self._snapshot()
        failures = CounterMetricFamily(f"{PREFIX}_exporter_warehouse_read_failures",
                                       "Attempts to read the warehouse that failed (locked by a run, or missing); "
                                       "the last snapshot was served instead.")
        failures.add_metric([], self.warehouse_failures)
        yield failures
        if snap is None:
            return  # never read: the series are absent (GtmOpsStateStale fires), not "nothing blocked"
        at = g("warehouse_snapshot_timestamp_seconds",
               "Unix time the blocked, incident, quarantine, reject and landing file figures were read from the "
               "warehouse.", [])
        at.add_metric([], snap.at)
        blocked = g("publication_blocked", "1 per asset and day whose publication is currently blocked "
                                           "(ops.partition_status).", ["asset", "entity", "partition", "owner"])
        for b in snap.blocked:
            entity = b["asset"].split("/", 1)[-1]
            blocked.add_metric([b["asset"], entity, b["partition"], self.owners.get(entity, "unknown")], 1.0)
        counts = g("incidents_open", "Open or acknowledged incidents (ops.incidents); sev is SEV1 (worst) to SEV4.",
                   ["sev", "origin", "rule", "owner"])
        per: dict[tuple, int] = {}
        for i in snap.incidents:
            k = (i["sev"], i["origin"], i["rule"], i["owner"])
            per[k] = per.get(k, 0) + 1
        for k, n in sorted(per.items()):
            counts.add_metric(list(k), float(n))
        opened = g("incident_open_timestamp_seconds", "Unix time an incident that is still open (or acknowledged) "
                                                      "was opened; one series per incident.",
                   ["incident_id", "sev", "origin", "rule", "owner", "asset"])
        for i in snap.incidents:
            opened.add_metric([i["incident_id"], i["sev"], i["origin"], i["rule"], i["owner"], i["asset"]],
                              i["opened_at"] or 0.0)
        quarantine = g("quarantine_rows", "Rows waiting in quarantine, out of the clean tables (open, held, "
                                          "repaired, released).", ["entity", "table", "status", "owner"])
        for q in snap.quarantine:
            quarantine.add_metric([q["entity"], q["table"], q["status"], self.owners.get(q["entity"], "unknown")],
                                  float(q["rows"]))
        rejected = g("rejected_lines", "Lines of landing files in raw.rejects: stage ingest (could not be parsed) or "
                                       "clean (a second copy of a key).", ["source", "table", "stage", "owner"])
        for r in snap.rejects:
            rejected.add_metric([r["source"], r["table"], r["stage"], self.source_owners.get(r["source"], "unknown")],
                                float(r["lines"]))
        not_read = g("landing_file_not_read", "1 per landing file not read line by line (raw.landing_files): status "
                                              "rejected (rejected whole: 0 bytes, unreadable) or unclaimed (no table "
                                              "reads it; hint is the closest table).",
                     ["source", "partition", "file", "table", "status", "hint", "owner"])
        for f in snap.files_not_read:
            not_read.add_metric([f["source"], f["partition"], f["file"], f["table"], f["status"], f["hint"],
                                 self.source_owners.get(f["source"], "unknown")], 1.0)
        yield from (at, blocked, counts, opened, quarantine, rejected, not_read)


def make_registry(collector: SloCollector, *extra: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    for c in extra:
        registry.register(c)
    return registry


def serve(collector: SloCollector, host: str, port: int, *extra: Collector):
    """Start serving /metrics in a background thread; returns the server (``.shutdown()`` stops it). ``extra``
    collectors are served beside the SLO figures (the decision log's anchored head)."""
    server, _thread = start_http_server(port, addr=host, registry=make_registry(collector, *extra))
    return server
