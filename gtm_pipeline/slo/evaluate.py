"""One evaluation of every SLO: sync publication times from the event log into the history, then compute figures.

Used alike by the sensor, the exporter, `gtm-pipeline slo report` and the decision nodes' pre-check, so they all
show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from gtm_pipeline.clock import now_epoch
from gtm_pipeline.slo.contract import Coverage, SloFile, resolve_coverage
from gtm_pipeline.slo.history import History
from gtm_pipeline.slo.sli import SloFigures, asset_figures
from gtm_pipeline.slo.source import sync_asset


def asset_index_of(defs_or_graph) -> dict[str, str | None]:
    """{'metrics/forecast': 'metrics', ...} from a Definitions object (unresolved) or a resolved asset graph."""
    if hasattr(defs_or_graph, "get_all_asset_keys"):
        graph = defs_or_graph
        return {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    out: dict[str, str | None] = {}
    for a in defs_or_graph.assets or []:
        specs = a.specs if isinstance(a, dg.AssetsDefinition) else [a] if isinstance(a, dg.AssetSpec) else []
        for spec in specs:
            out[spec.key.to_user_string()] = spec.group_name
    return out


def coverage_for(slo_file: SloFile, defs_or_graph) -> Coverage:
    return resolve_coverage(slo_file, asset_index_of(defs_or_graph))


@dataclass(frozen=True)
class Evaluation:
    slo_file: SloFile
    coverage: Coverage
    now: float
    slos: tuple[SloFigures, ...]
    observed: dict[str, float]          # slo -> seconds of its window in which something evaluated live
    reconstructed: dict[str, float]     # slo -> seconds of its (known) window computed from the timeline alone
    blocked: dict[str, float]           # asset -> time of a blocked publish newer than its published version

    def get(self, slo: str) -> SloFigures:
        return next(f for f in self.slos if f.slo.name == slo)


def evaluate(slo_file: SloFile, coverage: Coverage, history: History, instance: dg.DagsterInstance | None = None,
             *, now: float | None = None, observe: bool = True) -> Evaluation:
    """Figures for every SLO at ``now`` (default: the current time).

    With ``instance``, new publications are first copied from its event log. With ``observe``, this evaluation is
    recorded as live observation (so the report can tell observed time from reconstructed time).
    """
    now = now_epoch() if now is None else now
    keys = sorted({k for ks in coverage.assets.values() for k in ks})
    if instance is not None:
        for k in keys:
            sync_asset(history, instance, k)
    if observe:
        history.record_observation(now, max_gap=3 * slo_file.evaluation_interval)
    longest = max(slo_file.windows)
    figures, observed, reconstructed, blocked = [], {}, {}, {}
    for slo in slo_file.slos:
        since = now - max(slo.window, longest)
        per_asset = []
        first = None
        for asset in coverage.assets.get(slo.name, ()):
            pubs = history.versions(asset, since=since)
            fig = asset_figures(slo, asset, pubs, now, slo_file.alerting, slo_file.windows)
            per_asset.append(fig)
            if pubs:
                first = pubs[0].published_at if first is None else min(first, pubs[0].published_at)
            b = history.last_blocked(asset)
            if b is not None and (fig.last_published is None or b > fig.last_published):
                blocked[asset] = b
        figures.append(SloFigures(slo=slo, now=now, assets=tuple(per_asset),
                                  pending=coverage.pending.get(slo.name, ())))
        start = max(now - slo.window, first if first is not None else now)
        observed[slo.name] = history.observed_seconds(start, now)
        reconstructed[slo.name] = max(0.0, (now - start) - observed[slo.name])
    return Evaluation(slo_file=slo_file, coverage=coverage, now=now, slos=tuple(figures), observed=observed,
                      reconstructed=reconstructed, blocked=blocked)
