import dagster as dg

from gtm_pipeline.quarantine.jobs import repair_backfill_job
from gtm_pipeline.quarantine.sensors import repair_backfill_sensor

defs = dg.Definitions(jobs=[repair_backfill_job], sensors=[repair_backfill_sensor])
