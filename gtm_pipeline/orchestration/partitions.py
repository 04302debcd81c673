"""The daily partitions shared by ingest, clean and contracts: one partition per delivery day (UTC)."""

import dagster as dg

from gtm_pipeline.config import load_settings

# end_offset=1 includes today, so a file delivered today can be ingested today.
daily_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().start_date, end_offset=1)
