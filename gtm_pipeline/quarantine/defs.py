"""Dagster wiring of the quarantine stage: the conservation ledger asset and the repair backfill job and sensor."""

import dagster as dg

from gtm_pipeline.quarantine.assets import conservation
from gtm_pipeline.quarantine.jobs import repair_backfill_job
from gtm_pipeline.quarantine.sensors import repair_backfill_sensor

defs = dg.Definitions(assets=[conservation], jobs=[repair_backfill_job], sensors=[repair_backfill_sensor])
