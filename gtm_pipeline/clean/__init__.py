"""The clean stage: entity contracts (`contract`), compiled to SQL (`rules`), applied in one pass per entity and
batch of days (`stage`), reported (`report`), and reused to check repaired payloads (`payloads`). `defs` is its
Dagster wiring: one daily-partitioned multi-asset per entity with the contract's rules as asset checks."""

from gtm_pipeline.clean.contract import (
    BLOCK_PUBLISH,
    BREAK_ACTIONS,
    DEFAULT_ACTIONS,
    DEFAULT_MAX_LENGTH,
    MISSING_OWNER,
    PRECEDENCE,
    QUARANTINE,
    REJECT_DUPLICATE,
    RULE_KINDS,
    TYPES,
    WARN,
    Column,
    EntityContract,
    RowCheck,
    load_entity_contracts,
    parse_entity_contract,
    slug,
)
from gtm_pipeline.clean.payloads import Violation, validate_payloads
from gtm_pipeline.clean.report import SAMPLE_SIZE, CleanReport
from gtm_pipeline.clean.rules import late_sql, quote_ident, type_label, typed_select, typed_sql, violations_sql
from gtm_pipeline.clean.stage import (
    LINEAGE,
    MAX_BATCH_ROWS,
    QUARANTINE_DDL,
    clean_days,
    clean_partition,
    ensure_entity_tables,
    quarantine_id,
    rule_kind,
)

__all__ = [
    "BLOCK_PUBLISH", "BREAK_ACTIONS", "DEFAULT_ACTIONS", "DEFAULT_MAX_LENGTH", "LINEAGE", "MAX_BATCH_ROWS",
    "MISSING_OWNER", "PRECEDENCE", "QUARANTINE", "QUARANTINE_DDL", "REJECT_DUPLICATE", "RULE_KINDS", "SAMPLE_SIZE",
    "TYPES", "WARN", "CleanReport",
    "Column", "EntityContract", "RowCheck", "Violation", "clean_days", "clean_partition", "ensure_entity_tables",
    "late_sql", "load_entity_contracts", "parse_entity_contract", "quarantine_id", "quote_ident", "rule_kind", "slug",
    "type_label", "typed_select", "typed_sql", "validate_payloads", "violations_sql",
]
