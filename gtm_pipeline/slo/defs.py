"""The SLO stage: freshness SLOs from contracts/slos.yaml (docs/slo.md).

Everything it adds depends on the whole asset graph -- a data-age freshness check on the covered assets, one
``slo/<name>`` asset per SLO downstream of them, the sensor and its resource -- so `gtm_pipeline.definitions` calls
`apply_slos` after merging the other stages, and ``defs`` here is empty.
"""

from __future__ import annotations

import dagster as dg

from gtm_pipeline.config import Settings, load_settings
from gtm_pipeline.slo.assets import freshness_checks, slo_asset_specs
from gtm_pipeline.slo.contract import load_slo_file
from gtm_pipeline.slo.evaluate import coverage_for
from gtm_pipeline.slo.resources import SloResource, slo_resource
from gtm_pipeline.slo.sensors import build_slo_sensor

defs = dg.Definitions()


def apply_slos(stages: dg.Definitions, settings: Settings | None = None) -> dg.Definitions:
    """``stages`` plus the SLO stage: a ``data_freshness`` check on every covered asset, the ``slo/<name>`` assets,
    the sensor and its resource.

    Validates contracts/slos.yaml against the assets of ``stages``: an unknown key fails the load (ContractError).
    """
    settings = settings or load_settings()
    slo_file = load_slo_file(settings.slo_file)
    coverage = coverage_for(slo_file, stages)
    checks = freshness_checks(slo_file, coverage)
    return dg.Definitions.merge(
        stages,
        dg.Definitions(assets=slo_asset_specs(slo_file, coverage), asset_checks=[checks] if checks else [],
                       sensors=[build_slo_sensor(slo_file.evaluation_interval)],
                       resources={"slo": slo_resource(settings)}),
    )


__all__ = ["SloResource", "apply_slos", "defs"]
