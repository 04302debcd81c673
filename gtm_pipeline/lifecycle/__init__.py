"""Lifecycle stages with receipts (issue 19 §2, Layer C): the stage contract (`contract`) and the audited recycle
log (`recycle`). The history itself is a metric, computed in `gtm_pipeline.metrics.lifecycle`."""
