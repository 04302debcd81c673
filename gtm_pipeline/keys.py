"""Asset keys, group names and check names, defined once and used by both the asset specs and their results.

Keys are ``[stage, name]`` and the group is the stage (docs/style.md rule 2).
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
CHECK_TEXT = "text_clean"
CHECK_LATE = "late_arrivals"
CHECK_OWNER = "owner_present"
# The check that reports each rule kind whose rows go to quarantine (the `rule` column of quarantine rows, and
# `gtm-pipeline quarantine list --rule`): what a blocked day or a failed check points the user to.
RULE_CHECKS = {"type": CHECK_TYPES, "required": CHECK_REQUIRED, "enum": CHECK_ENUMS, "range": CHECK_RANGES,
               "row_check": CHECK_ROW_CHECKS, "max_length": CHECK_TEXT, "control_chars": CHECK_TEXT}
# Conservation
CHECK_NOTHING_LOST = "nothing_lost"
CHECK_EVERY_FILE_READ = "every_file_read"

# Jobs
DAILY_JOB = "daily_ingest_job"
REFRESH_JOB = "refresh_job"
# What keeps the pipeline fresh (gtm_pipeline.orchestration.automation, docs/operations.md): new landing files request
# daily runs; the layers built over all days refresh by declarative automation.
LANDING_SENSOR = "landing_sensor"
AUTOMATION_SENSOR = "refresh_automation_sensor"

# Freshness SLOs (contracts/slos.yaml): one external asset per SLO, downstream of the assets it covers, whose
# materializations (reported by the SLO sensor) carry attainment, error budget and burn rates for the UI.
SLO_SENSOR = "slo_freshness_sensor"
# The freshness verdict the Dagster UI shows on every SLO-covered asset: data age from the SLO engine (docs/slo.md).
CHECK_DATA_FRESHNESS = "data_freshness"
SLO_FRESHNESS_CHECKS = "slo_data_freshness"


def slo_key(slo_name: str) -> dg.AssetKey:
    return dg.AssetKey([SLO, slo_name])


# Quarantine repair: the targeted backfill of released repairs (gtm_pipeline.quarantine.backfill)
REPAIR_BACKFILL_JOB = "repair_backfill_job"
REPAIR_BACKFILL_SENSOR = "repair_backfill_sensor"


# Metric layer (gtm_pipeline.metrics): one asset per table of schema metrics; its checks are the qa_tests of its
# contract plus the automatic ones named in gtm_pipeline.metrics.contract (grain_unique, denominator_positive).
def metric_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([METRICS, name])


FORECAST_METRIC = "forecast"
FORECAST_JOB = "forecast_job"
FORECAST_SCHEDULE = "forecast_hourly"


# Decision nodes (gtm_pipeline.decisions, docs/decisions.md): one asset per playbook node, then monitoring, the
# decision log and the review packet; the packet job runs on the spec's review cadences.
def decision_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([DECISIONS, name])


DECISION_NODE_ASSETS = {"pricing.change": "pricing_change", "channel.invest": "channel_invest",
                        "icp.update": "icp_update", "routing.policy": "routing_policy",
                        "experiment.ship": "experiment_ship"}
DECISION_MONITORING_KEY = decision_key("monitoring")
DECISION_LOG_KEY = decision_key("decision_log")
REVIEW_PACKET_KEY = decision_key("review_packet")
# The readers of the flags that applying a decision flips (decisions/in_force.py): views over decisions.flags_current.
PRICE_BOOK_VIEW = "decisions.price_book"
BOOKINGS_OUTLOOK_VIEW = "decisions.bookings_outlook"
CHANNEL_PLAN_VIEW = "decisions.channel_plan"
LEAD_ICP_VIEW = "decisions.lead_icp"
LEAD_SCORE_IN_FORCE_VIEW = "decisions.lead_score_in_force"
CHECK_LOG_CHAIN = "chain_intact"
REVIEW_PACKET_JOB = "review_packet_job"
WEEKLY_OPS_SCHEDULE = "weekly_ops_review"
MONTHLY_REVIEW_SCHEDULE = "monthly_business_review"
QUARTERLY_PLAN_SCHEDULE = "quarterly_plan_review"
ARCHITECTURE_SYNC_SCHEDULE = "biweekly_architecture_sync"
REVIEW_TIMEZONE = "America/New_York"   # spec front matter: review cadences in ET
