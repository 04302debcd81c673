"""What Dagster loads: one sub-package per pipeline stage, each exposing ``defs`` (see gtm_pipeline.definitions)."""
