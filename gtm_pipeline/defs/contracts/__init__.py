import dagster as dg

from gtm_pipeline.defs.contracts.assets import conservation

defs = dg.Definitions(assets=[conservation])
