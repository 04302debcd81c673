"""The targeted backfill job of released quarantine repairs (docs/design.md §7).

It holds the clean stage's daily-partitioned multi-assets and everything downstream of them; every run selects a
subset: one day of the affected entities' clean assets, or the unpartitioned downstream refresh (ledger, metrics,
decisions). Raw ingest assets are not in it: a repair never needs the landing files read again.
"""

import dagster as dg

from gtm_pipeline import keys

repair_backfill_job = dg.define_asset_job(
    keys.REPAIR_BACKFILL_JOB,
    # Only executable assets: external ones downstream (e.g. the SLO assets) are reported, not materialized.
    selection=dg.AssetSelection.groups(keys.CLEAN).required_multi_asset_neighbors().downstream().materializable(),
    description=(
        "Re-clean only the day partitions that hold released quarantine repairs, then refresh what is built over "
        "all days. Launched by repair_backfill_sensor (or 'gtm-pipeline quarantine backfill'); each run selects "
        "one day of the affected entities' clean assets, or the downstream refresh."
    ),
    tags={"stage": "clean", "purpose": "quarantine_repair"},
)
