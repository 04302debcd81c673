"""Freshness SLOs as plain modules (no Dagster decorators): contract loading (`contract`), SLI / budget / burn math
(`sli`), the history store (`history`), event-log reading (`source`), evaluation (`evaluate`), alert levels and
state changes (`alerts`), incidents and webhooks (`notify`), the pre-check (`health`), the warehouse snapshot of
blocked days, incidents and quarantine the exporter serves while a run holds the lock (`ops_state`), the Prometheus
exporter (`exporter`) and rule generator (`rules`). The Dagster wiring is in `gtm_pipeline.slo.defs`; see docs/slo.md.

For the decision nodes' pre-check (spec 002 §4)::

    from gtm_pipeline.slo import health, open_incidents
    h = health(context.instance, context.repository_def.asset_graph, assets=["metrics/forecast"])
    if not h.green or open_incidents(con, "SEV2"): ...   # h.reasons says why
"""

from __future__ import annotations

from gtm_pipeline.config import load_settings
from gtm_pipeline.slo.contract import load_slo_file
from gtm_pipeline.slo.evaluate import coverage_for, evaluate
from gtm_pipeline.slo.health import SloHealth, health_of, open_incidents
from gtm_pipeline.slo.history import History


def health(instance, asset_graph, assets=None, *, settings=None, now: float | None = None) -> SloHealth:
    """SLO health now: green only if every covered asset (or each of ``assets``) is published and fresh and no
    SLO burns its budget fast (page). ``asset_graph``: ``context.repository_def.asset_graph`` or a Definitions."""
    settings = settings or load_settings()
    slo_file = load_slo_file(settings.slo_file)
    graph = asset_graph.resolve_asset_graph() if hasattr(asset_graph, "resolve_asset_graph") else asset_graph
    with History(settings.slo_history_path) as h:
        ev = evaluate(slo_file, coverage_for(slo_file, graph), h, instance, now=now)
        return health_of(ev, h, assets=assets)


__all__ = ["SloHealth", "health", "health_of", "open_incidents"]
