"""Metrics stage (group ``metrics``): fact tables and derived metrics published by write-audit-publish against
``contracts/metrics/*.yaml``, plus the hourly forecast schedule. See docs/metrics.md."""

import dagster as dg

from gtm_pipeline.metrics.assets import metric_assets
from gtm_pipeline.metrics.schedules import forecast_job, forecast_schedule

defs = dg.Definitions(assets=metric_assets(), jobs=[forecast_job], schedules=[forecast_schedule])
