"""Ingest stage: landing files (``contracts/sources.yaml``, `landing`) read as set operations (`read`, `rawlines`)
into ``raw.*`` with line-level rejects and lineage (`stage`); the Dagster assets and the landing sensor are in
`assets`, `sensors` and `defs`. See docs/operations.md."""
