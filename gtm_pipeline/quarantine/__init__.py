"""Quarantine stage: what happens to rows the contracts held back. `rows` (the quarantine tables: select, show,
export), `repair` (the three fixes), `validation` (re-validating a fix), `release`, `overlay` (repaired values laid
over quarantined payloads), `backfill` (which days a release re-runs: a plain decision over a `snapshot`; its Dagster
selections and lookups in `selection`; the CLI's in-process run in `backfill_now`), `ledger` (the conservation
ledger: every file and line in exactly one place); the Dagster wiring (ledger asset, repair backfill job and sensor)
is in `assets`, `jobs`, `sensors` and `defs`. See docs/quarantine-repair.md."""
