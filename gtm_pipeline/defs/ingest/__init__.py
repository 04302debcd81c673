import dagster as dg

from gtm_pipeline.defs.ingest.assets import ingest_assets

defs = dg.Definitions(assets=ingest_assets())
