import dagster as dg

from gtm_pipeline.defs.repair.jobs import repair_backfill_job
from gtm_pipeline.defs.repair.sensors import repair_backfill_sensor

defs = dg.Definitions(jobs=[repair_backfill_job], sensors=[repair_backfill_sensor])
