"""The forecast is refreshed every hour so that the 4 h ForecastAge SLO (spec front matter) measures the refresh."""

import dagster as dg

from gtm_pipeline import keys

forecast_job = dg.define_asset_job(
    keys.FORECAST_JOB, selection=dg.AssetSelection.assets(keys.metric_key(keys.FORECAST_METRIC)),
    description="Recompute and publish the bookings forecast (write, audit, publish) from the published facts.",
)

forecast_schedule = dg.ScheduleDefinition(
    name=keys.FORECAST_SCHEDULE, job=forecast_job, cron_schedule="0 * * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly forecast refresh: keeps the published forecast younger than the 4 h ForecastAge SLO.",
)
