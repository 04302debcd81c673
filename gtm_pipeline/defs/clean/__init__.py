import dagster as dg

from gtm_pipeline.defs.clean.assets import clean_assets

defs = dg.Definitions(assets=clean_assets())
