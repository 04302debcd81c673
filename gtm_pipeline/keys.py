"""Asset keys, group names and check names, defined once and used by both the asset specs and their results.

Keys are ``[stage, name]`` and the group is the stage (STYLE rule 2).
"""

from __future__ import annotations

import dagster as dg

INGEST, CLEAN, CONTRACTS, METRICS, DECISIONS, SLO = "ingest", "clean", "contracts", "metrics", "decisions", "slo"


def raw_key(source: str) -> dg.AssetKey:
    return dg.AssetKey([INGEST, f"raw_{source}"])


def clean_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey([CLEAN, entity])


def quarantine_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey([CONTRACTS, f"quarantine_{entity}"])


MISSING_OWNER_KEY = dg.AssetKey([CONTRACTS, "quarantine_missing_owner"])
CONSERVATION_KEY = dg.AssetKey([CONTRACTS, "conservation"])

# Ingest checks
CHECK_SCHEMA_DRIFT = "schema_drift"
CHECK_PARSE_REJECTS = "parse_rejects"
# Entity contract checks, one per rule kind (only those a contract uses are attached)
CHECK_TYPES = "types_valid"
CHECK_REQUIRED = "required_present"
CHECK_ENUMS = "enum_integrity"
CHECK_RANGES = "ranges_in_bounds"
CHECK_UNIQUE = "keys_unique"
CHECK_ROW_CHECKS = "row_checks_pass"
CHECK_REFERENCES = "references_resolve"
CHECK_LATE = "late_arrivals"
CHECK_OWNER = "owner_present"
# Conservation
CHECK_NOTHING_LOST = "nothing_lost"

# Jobs
DAILY_JOB = "daily_ingest_job"
REFRESH_JOB = "refresh_job"
