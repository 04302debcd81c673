"""The SLO stage: freshness SLOs from contracts/slos.yaml (docs/slo.md).

Everything it adds depends on the whole asset graph -- freshness policies on the covered assets, one ``slo/<name>``
asset per SLO downstream of them, the sensor and its resource -- so `gtm_pipeline.definitions` calls `apply_slos`
after merging the other stages, and ``defs`` here is empty.
"""

from __future__ import annotations

import warnings

import dagster as dg

from gtm_pipeline.config import Settings, load_settings
from gtm_pipeline.defs.slo.assets import freshness_policies, slo_asset_specs
from gtm_pipeline.defs.slo.resources import SloResource, slo_resource
from gtm_pipeline.defs.slo.sensors import build_slo_sensor
from gtm_pipeline.slo.contract import load_slo_file
from gtm_pipeline.slo.evaluate import coverage_for

defs = dg.Definitions()


def apply_slos(stages: dg.Definitions, settings: Settings | None = None) -> dg.Definitions:
    """``stages`` with a freshness policy on every covered asset, plus the SLO assets, sensor and resource.

    Validates contracts/slos.yaml against the assets of ``stages``: an unknown key fails the load (ContractError).
    """
    settings = settings or load_settings()
    slo_file = load_slo_file(settings.slo_file)
    coverage = coverage_for(slo_file, stages)
    policies = freshness_policies(slo_file, coverage)

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = policies.get(spec.key.to_user_string())
        return dg.apply_freshness_policy(spec, policy) if policy else spec

    # The documented way (see dg.apply_freshness_policy's docstring); Definitions.map_asset_specs is marked
    # "preview" in 1.13, which is not deprecation: silence that notice here only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        mapped = stages.map_asset_specs(func=attach)
    return dg.Definitions.merge(
        mapped,
        dg.Definitions(assets=slo_asset_specs(slo_file, coverage),
                       sensors=[build_slo_sensor(slo_file.evaluation_interval)],
                       resources={"slo": slo_resource(settings)}),
    )


__all__ = ["SloResource", "apply_slos", "defs"]
