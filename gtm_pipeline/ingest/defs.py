import dagster as dg

from gtm_pipeline.ingest.assets import ingest_assets
from gtm_pipeline.ingest.sensors import landing_sensor

defs = dg.Definitions(assets=ingest_assets(), sensors=[landing_sensor])
