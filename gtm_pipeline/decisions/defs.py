"""Decisions stage (group ``decisions``): decision nodes, monitoring, the decision log, review packets and their
schedules. See docs/decisions.md."""

import dagster as dg

from gtm_pipeline.decisions.assets import decision_log_asset, monitoring_asset, node_assets, review_packet_asset
from gtm_pipeline.decisions.schedules import review_packet_job, schedules

defs = dg.Definitions(assets=[*node_assets(), monitoring_asset, decision_log_asset, review_packet_asset],
                      jobs=[review_packet_job], schedules=schedules)
