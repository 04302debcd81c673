"""Clean + contracts stages: per entity, one daily-partitioned multi-asset that publishes ``clean/<entity>`` and
its quarantine (``contracts/quarantine_<entity>``), with the entity contract's rules as asset checks.

The body only reads resources, calls `gtm_pipeline.clean.stage.clean_days` for its days and reports; the logic lives
beside it in this package.
"""


import hashlib
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import MISSING_OWNER, EntityContract, load_entity_contracts
from gtm_pipeline.clean.references import reference_levels
from gtm_pipeline.clean.report import CleanReport
from gtm_pipeline.clean.rules import quote_ident
from gtm_pipeline.clean.stage import clean_days
from gtm_pipeline.clock import to_epoch
from gtm_pipeline.config import load_settings
from gtm_pipeline.datatime import DataTime, blocked_text, partitioned_data_time
from gtm_pipeline.errors import ContractError
from gtm_pipeline.ingest.landing import LandingSpec, load_landing_spec
from gtm_pipeline.orchestration.partitions import daily_partitions
from gtm_pipeline.orchestration.resources import GtmProject
from gtm_pipeline.warehouse import table_exists

# Dagster's documented priority tag: of the steps ready to run, a higher priority runs first (op tags order steps
# inside a run). Parents get MAX_LEVEL, their children one less per level of references.
PRIORITY_TAG = "dagster/priority"
MAX_LEVEL = 10

# rule kind -> (check name, description, severity, blocking)
_CHECKS = {
    "type": (keys.CHECK_TYPES, "Values that do not parse as the column's type are quarantined.",
             dg.AssetCheckSeverity.ERROR, False),
    "required": (keys.CHECK_REQUIRED, "Required values present; rows missing one are quarantined.",
                 dg.AssetCheckSeverity.ERROR, False),
    "enum": (keys.CHECK_ENUMS, "Enum integrity (spec 002 §3): a value outside the allowed set is quarantined and an "
                               "incident opens.", dg.AssetCheckSeverity.ERROR, False),
    "range": (keys.CHECK_RANGES, "Out of range (spec 002 §3): publication of the day is blocked, downstream does not "
                                 "run, the owner is notified.", dg.AssetCheckSeverity.ERROR, True),
    "unique": (keys.CHECK_UNIQUE, "Second copies of a key go to raw.rejects naming the first copy.",
               dg.AssetCheckSeverity.WARN, False),
    "row_check": (keys.CHECK_ROW_CHECKS, "Row checks written as safe boolean expressions in the contract.",
                  dg.AssetCheckSeverity.WARN, False),
    "text": (keys.CHECK_TEXT, "Text hygiene: string values within their max_length and free of control characters "
                              "(NUL and other C0 except tab); a broken value is quarantined.",
             dg.AssetCheckSeverity.ERROR, False),
    "references": (keys.CHECK_REFERENCES, "Foreign keys that resolve to a published row of the referenced entity.",
                   dg.AssetCheckSeverity.WARN, False),
    "late": (keys.CHECK_LATE, "Records delivered after their event day (accepted, flagged _late).",
             dg.AssetCheckSeverity.WARN, False),
    "owner": (keys.CHECK_OWNER, "Missing keys (spec 002 §3): opportunities without owner go to "
                                "quarantine.missing_owner for routing to repair.", dg.AssetCheckSeverity.WARN, False),
}


def _kinds_used(contract: EntityContract) -> list[str]:
    kinds = [k for k in ("type", "required", "enum", "range", "references") if contract.rules_of_kind(k)]
    if contract.rules_of_kind("max_length"):
        kinds.append("text")
    if contract.key:
        kinds.append("unique")
    if contract.row_checks:
        kinds.append("row_check")
    if contract.event_time and contract.late_after_days is not None:
        kinds.append("late")
    if MISSING_OWNER in contract.actions_in_use():
        kinds.append("owner")
    return kinds


def _owner_tag(owner: str) -> str:
    return "team:" + "".join(ch if ch.isalnum() else "_" for ch in owner.lower()).strip("_")


def _reference_misses(con, contract: EntityContract, days: list[str]) -> dict[str, int]:
    out = {}
    for col in contract.rules_of_kind("references"):
        assert col.references is not None   # rules_of_kind("references") keeps only the columns that declare one
        ent, rcol = col.references.split(".")
        exists = table_exists(con, "clean", ent)
        ref = f"(SELECT 1 FROM clean.{ent} r WHERE r.{quote_ident(rcol)} = x.{quote_ident(col.name)})"
        n = con.execute(
            f"SELECT count(*) FROM clean.{contract.entity} x WHERE x._partition BETWEEN ?::DATE AND ?::DATE "
            f"AND x.{quote_ident(col.name)} IS NOT NULL" + (f" AND NOT EXISTS {ref}" if exists else ""),
            [days[0], days[-1]]).fetchone()[0]
        out[col.name] = int(n)
    return out


def _md_samples(samples: list[dict]) -> dg.MetadataValue:
    if not samples:
        return dg.MetadataValue.md("none")
    return dg.MetadataValue.md("\n".join(f"- `{s['file']}:{s['line']}` {s['reason']}" for s in samples))


def _asset_specs(contract: EntityContract, spec: LandingSpec, owns_missing_owner: bool) -> list[dg.AssetSpec]:
    e = contract.entity
    sources = sorted({t.source for t in spec.tables_for_entity(e)})
    deps = [keys.raw_key(s) for s in sources]
    feeds = ", ".join(t.qualified for t in spec.tables_for_entity(e))
    code_version = hashlib.sha256(contract.path.read_bytes()).hexdigest()[:12]
    owner = [_owner_tag(contract.owner)]
    specs = [
        dg.AssetSpec(keys.clean_key(e), group_name=keys.CLEAN, deps=deps, kinds={"duckdb"}, owners=owner,
                     code_version=code_version, tags={"stage": "clean", "entity": e},
                     description=f"{contract.description} Grain: {contract.grain}. Sources: {feeds}. "
                                 f"Contract: contracts/entities/{e}.yaml v{contract.version}. Owner: {contract.owner}. "
                                 f"The current version per key; every version in clean.{e}_history "
                                 "(valid_from, valid_to, file and line).",
                     metadata={"contract_version": contract.version, "grain": contract.grain}),
        dg.AssetSpec(keys.quarantine_key(e), group_name=keys.CONTRACTS, deps=deps, kinds={"duckdb"}, owners=owner,
                     code_version=code_version, tags={"stage": "contracts", "entity": e},
                     description=f"quarantine.{e}: one row per {e} record that broke contract {e}@{contract.version} "
                                 f"(payload, rule, reason, contract version, partition, status). Rows of a day "
                                 f"whose publication is blocked wait here as 'held'. Owner: {contract.owner}."),
    ]
    if owns_missing_owner:
        specs.append(dg.AssetSpec(
            keys.MISSING_OWNER_KEY, group_name=keys.CONTRACTS, deps=deps, kinds={"duckdb"}, owners=owner,
            code_version=code_version, tags={"stage": "contracts"},
            description="quarantine.missing_owner: one row per record without an owner (spec 002 §3 missing keys), "
                        "marked for repair through the routing rules."))
    return specs


def _total(reports: list[CleanReport], attr: str) -> int:
    return sum(getattr(r, attr) for r in reports)


def _merged(reports: list[CleanReport]) -> tuple[dict[str, int], dict[str, list]]:
    """Rule counts and samples summed over the days of one run."""
    counts: dict[str, int] = {}
    samples: dict[str, list] = {}
    for r in reports:
        for k, n in r.counts.items():
            counts[k] = counts.get(k, 0) + n
        for k, s in r.samples.items():
            samples.setdefault(k, []).extend(s)
    return counts, samples


def _clean_metadata(reports: list[CleanReport], blocked: list[str], version: str,
                    table_time: DataTime) -> dict[str, Any]:
    return {
        "dagster/row_count": _total(reports, "clean"), "candidates": _total(reports, "candidates"),
        "quarantined": _total(reports, "quarantined"), "missing_owner": _total(reports, "missing_owner"),
        "held": _total(reports, "held"), "rejected_duplicates": _total(reports, "rejected"),
        "late": _total(reports, "late"), "blocked_days": dg.MetadataValue.json(blocked),
        # Versions written to clean.<entity>_history only: a later delivery holds their key's current version.
        "superseded": _total(reports, "superseded"), "contract_version": version,
        # How far the whole table is complete (docs/slo.md): an earlier blocked day stops it and is named.
        **({"data_time": dg.MetadataValue.timestamp(to_epoch(table_time.at))} if table_time.at else {}),
        "partial": table_time.partial,
        **({"blocked_inputs": dg.MetadataValue.json(list(table_time.blocking))} if table_time.blocking else {}),
    }


def _check_result(k: str, ckey: dg.AssetKey, reports: list[CleanReport], ref_misses: dict[str, int],
                  blocked: list[str], n_days: int) -> dg.AssetCheckResult:
    name, _desc, sev, _blocking = _CHECKS[k]
    counts, samples = _merged(reports)
    if k == "late":
        n, smp = _total(reports, "late"), []
    elif k == "owner":
        n, smp = _total(reports, "missing_owner"), samples.get("required", [])
        smp = [s for s in smp if s.get("column") == "owner_id"]
    elif k == "references":
        n, smp = sum(ref_misses.values()), []
    elif k == "text":
        n = counts.get("max_length", 0) + counts.get("control_chars", 0)
        smp = samples.get("max_length", []) + samples.get("control_chars", [])
    else:
        n, smp = counts.get(k, 0), samples.get(k, [])
    # Any: what dagster accepts as raw metadata (its RawMetadataValue alias is not public).
    meta: dict[str, Any] = {"violations": n, "samples": _md_samples(smp[:10]), "days": n_days}
    if k == "range":
        meta["blocked_days"] = dg.MetadataValue.json(blocked)
    if k == "references":
        meta["unresolved_by_column"] = dg.MetadataValue.json(ref_misses)
    return dg.AssetCheckResult(asset_key=ckey, check_name=name, passed=n == 0, severity=sev, metadata=meta)


def build_clean_asset(contract: EntityContract, spec: LandingSpec, owns_missing_owner: bool,
                      level: int = 0) -> dg.AssetsDefinition:
    """The clean multi-asset of one entity. ``level`` is its depth in the references (`reference_levels`): a
    parent's step runs before its children's in the same run (the step priority), so a child is held for a parent
    this run put in quarantine."""
    e = contract.entity
    ckey, qkey = keys.clean_key(e), keys.quarantine_key(e)
    kinds = _kinds_used(contract)
    check_specs = [dg.AssetCheckSpec(_CHECKS[k][0], asset=ckey, description=_CHECKS[k][1], blocking=_CHECKS[k][3])
                   for k in kinds]

    @dg.multi_asset(name=f"clean_{e}", specs=_asset_specs(contract, spec, owns_missing_owner),
                    check_specs=check_specs, partitions_def=daily_partitions,
                    backfill_policy=dg.BackfillPolicy.single_run(), can_subset=False,
                    op_tags={PRIORITY_TAG: str(MAX_LEVEL - level)})
    def _clean(context: dg.AssetExecutionContext, warehouse: DuckDBResource, project: GtmProject):
        lspec = load_landing_spec(project.contracts_path)
        contract_now = load_entity_contracts(project.contracts_path)[e]
        days = context.partition_keys
        reports: list[CleanReport] = []
        with warehouse.get_connection() as con:
            reports = clean_days(con, lspec, contract_now, list(days), run_id=context.run.run_id)
            ref_misses = _reference_misses(con, contract_now, days) if "references" in kinds else {}
            table_time = partitioned_data_time(con, f"clean/{e}")
        blocked = [r.day for r in reports if r.blocked]
        if blocked:
            context.log.warning(blocked_text(f"clean/{e}", blocked) + "; the previous version of these days is kept")
        yield dg.MaterializeResult(asset_key=ckey,
                                   metadata=_clean_metadata(reports, blocked, contract_now.version, table_time))
        held = _total(reports, "held")
        yield dg.MaterializeResult(asset_key=qkey, metadata={
            "dagster/row_count": _total(reports, "quarantined") + held, "held": held,
            "by_rule": dg.MetadataValue.json(_merged(reports)[0])})
        if owns_missing_owner:
            yield dg.MaterializeResult(asset_key=keys.MISSING_OWNER_KEY,
                                       metadata={"dagster/row_count": _total(reports, "missing_owner")})
        for k in kinds:
            yield _check_result(k, ckey, reports, ref_misses, blocked, len(days))

    return _clean


def clean_assets() -> list[dg.AssetsDefinition]:
    s = load_settings()
    spec = load_landing_spec(s.contracts_dir)
    contracts = load_entity_contracts(s.contracts_dir)
    missing = set(spec.entities()) - set(contracts)
    if missing:
        raise ContractError(f"contracts/entities: no contract for entit{'y' if len(missing) == 1 else 'ies'} "
                            f"{sorted(missing)} named in contracts/sources.yaml; add contracts/entities/<entity>.yaml")
    users = [c.entity for c in contracts.values() if MISSING_OWNER in c.actions_in_use()]
    if len(users) > 1:
        raise ContractError(f"contracts/entities: quarantine_missing_owner is used by {users}; only one entity may "
                            f"route to quarantine.missing_owner")
    levels = reference_levels(contracts)
    return [build_clean_asset(contracts[e], spec, owns_missing_owner=(e in users), level=levels[e])
            for e in spec.entities()]


defs = dg.Definitions(assets=clean_assets())
