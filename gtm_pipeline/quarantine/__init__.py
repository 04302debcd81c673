"""Quarantine stage: what happens to rows the contracts held back. `repair` (states, precedence, fixes and release),
`overlay` (repaired values laid over quarantined payloads), `backfill` (which days a release re-runs), `ledger`
(the conservation ledger: every file and line in exactly one place); the Dagster wiring (ledger asset, repair
backfill job and sensor) is in `assets`, `jobs`, `sensors` and `defs`. See docs/quarantine-repair.md."""
