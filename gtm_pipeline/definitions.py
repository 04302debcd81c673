"""The one entry point: every stage package ``gtm_pipeline/<stage>/`` with a ``defs.py`` contributes its ``defs``;
this module adds what cuts across stages (resources and jobs). Nothing is listed by hand (docs/style.md rule 1)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import dagster as dg

import gtm_pipeline as _root_pkg
from gtm_pipeline import keys
from gtm_pipeline.config import Settings, load_settings
from gtm_pipeline.orchestration.automation import apply_automation
from gtm_pipeline.orchestration.resources import default_resources
from gtm_pipeline.slo.defs import apply_slos


def _stage_definitions() -> list[dg.Definitions]:
    """Each stage's ``defs``: every package ``gtm_pipeline/<stage>/`` whose Dagster wiring is in ``defs.py``."""
    out = []
    for mod in sorted(pkgutil.iter_modules(_root_pkg.__path__), key=lambda m: m.name):
        if mod.ispkg and (Path(_root_pkg.__path__[0]) / mod.name / "defs.py").is_file():
            out.append(importlib.import_module(f"{_root_pkg.__name__}.{mod.name}.defs").defs)
    return out


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """All definitions, with resources bound to ``settings`` (default: from the environment)."""
    settings = settings or load_settings()
    stages = dg.Definitions.merge(*_stage_definitions())
    # Freshness SLOs (contracts/slos.yaml, docs/slo.md) need the whole graph: policies on the covered assets, the
    # slo/<name> assets, the SLO sensor and its resource are applied here, after the stages are merged.
    stages = apply_slos(stages, settings)
    # So does the refresh automation: every asset built over all days follows new delivery days by itself
    # (gtm_pipeline/orchestration/automation.py, docs/operations.md).
    stages = apply_automation(stages, settings)
    assets = [a for a in (stages.assets or []) if isinstance(a, dg.AssetsDefinition)]
    partitioned = [k for a in assets if a.partitions_def is not None for k in a.keys]
    unpartitioned = [k for a in assets if a.partitions_def is None for k in a.keys]
    jobs = [
        dg.define_asset_job(
            keys.DAILY_JOB, selection=dg.AssetSelection.assets(*partitioned),
            description="Ingest, clean and contract-check delivery days: pick one day, a range, or backfill.",
        ),
        dg.define_asset_job(
            keys.REFRESH_JOB, selection=dg.AssetSelection.assets(*unpartitioned),
            description="Recompute everything built over all days (conservation ledger, metric layer, decisions) "
                        "by hand; refresh_automation_sensor does the same by itself after new delivery days.",
        ),
    ]
    # Every step writes the same DuckDB file, which takes one writing process at a time: running a run's steps in
    # one process (also for runs launched from the UI) avoids lock waits and per-step start-up cost.
    cross_cutting = dg.Definitions(jobs=jobs, resources=default_resources(settings), executor=dg.in_process_executor)
    return dg.Definitions.merge(stages, cross_cutting)

defs = build_definitions()
