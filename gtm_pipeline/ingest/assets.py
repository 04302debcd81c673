"""Ingest stage: one daily-partitioned asset per source (web, ads, crm, calendar, vendors)."""


import hashlib
from collections.abc import Iterator

import dagster as dg
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.config import load_settings
from gtm_pipeline.ingest.landing import Source, load_landing_spec
from gtm_pipeline.ingest.stage import IngestReport, ingest_days
from gtm_pipeline.orchestration.partitions import daily_partitions
from gtm_pipeline.orchestration.resources import GtmProject


def _code_version(source: Source) -> str:
    text = repr([(t.name, t.format, t.columns, sorted(t.aliases.items())) for t in source.tables])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _owner_tag(owner: str) -> str:
    return "team:" + "".join(ch if ch.isalnum() else "_" for ch in owner.lower()).strip("_")


def _progress_every(n_days: int) -> int:
    """Log about ten progress lines per run, at most one per day."""
    return max(1, n_days // 10)


def build_ingest_asset(source: Source) -> dg.AssetsDefinition:
    key = keys.raw_key(source.name)
    tables = ", ".join(f"{t.name} ({t.format})" for t in source.tables)

    @dg.asset(
        key=key,
        group_name=keys.INGEST,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"duckdb", "python"},
        owners=[_owner_tag(source.owner)],
        tags={"stage": "ingest", "source": source.name},
        code_version=_code_version(source),
        description=(
            f"Raw {source.name} exports as text, one partition per delivery day: {source.description} "
            f"Grain: one row per record of {tables}, in raw.{source.name}_<table> with lineage columns "
            f"(_source, _file, _line, _ingested_at). Unparseable records go to raw.rejects with the reason. "
            f"Owner: {source.owner}."
        ),
        check_specs=[
            dg.AssetCheckSpec(keys.CHECK_SCHEMA_DRIFT, asset=key,
                              description="Files whose columns differ from contracts/sources.yaml (names given)."),
            dg.AssetCheckSpec(keys.CHECK_PARSE_REJECTS, asset=key,
                              description="Records that could not be parsed (malformed line, bad encoding)."),
        ],
    )
    def _ingest(context: dg.AssetExecutionContext, warehouse: DuckDBResource, project: GtmProject):
        spec = load_landing_spec(project.contracts_path)
        reports = []
        with warehouse.get_connection() as con:
            days = context.partition_keys
            every = _progress_every(len(days))

            def progress(i: int, total: int) -> None:
                # Progress for long ranges (a backfill of months): visible live in the run's log in the UI.
                if i % every == 0 or i == total:
                    context.log.info(f"{source.name}: {i}/{total} day(s) read (through {days[i - 1]})")

            reports = ingest_days(con, spec, project.landing_path, source.name, list(days), progress=progress)
            samples = con.execute(
                "SELECT _file, _line, reason FROM raw.rejects WHERE stage = 'ingest' AND _source = ? "
                "AND _table IS NOT NULL AND _partition BETWEEN ?::DATE AND ?::DATE ORDER BY _file, _line LIMIT 10",
                [source.name, context.partition_keys[0], context.partition_keys[-1]]).fetchall()
        yield from _results(context, key, source.name, reports, samples)

    return _ingest


def _results(context: dg.AssetExecutionContext, key: dg.AssetKey, source: str, reports: list[IngestReport],
             samples: list) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The materialization and the two checks of one run of a source's ingest, with what they found logged."""
    rows = sum(r.rows for r in reports)
    rejected = sum(r.rejected for r in reports)
    per_table: dict[str, int] = {}
    for r in reports:
        for t in r.tables:
            per_table[t.table] = per_table.get(t.table, 0) + t.rows
    drifts = [(r.day, t) for r in reports for t in r.drifts]
    missing_days = [r.day for r in reports if all(t.file is None for t in r.tables)]
    unclaimed = [(f, hint) for r in reports for f, _, hint in r.unclaimed]
    context.log.info(f"{source}: {rows} rows, {rejected} rejected over {len(reports)} day(s)")
    for f, hint in unclaimed[:10]:  # listed in full by the ledger (gtm-pipeline ledger, contracts/conservation)
        context.log.warning(f"{f}: no table of {source} reads this file"
                            + (f"; closest table: {hint}" if hint else ""))
    yield dg.MaterializeResult(
        asset_key=key,
        metadata={
            "dagster/row_count": rows,
            "rejected": rejected,
            "days": len(reports),
            "days_without_files": len(missing_days),
            "files_unclaimed": len(unclaimed),
            "rows_per_table": dg.MetadataValue.json(per_table),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=key, check_name=keys.CHECK_SCHEMA_DRIFT, passed=not drifts,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"files_with_drift": len(drifts),
                  "details": dg.MetadataValue.md("\n".join(
                      f"- `{t.file}`: {t.drift.describe()}" for _, t in drifts[:20] if t.drift) or "none")},
    )
    yield dg.AssetCheckResult(
        asset_key=key, check_name=keys.CHECK_PARSE_REJECTS, passed=rejected == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"rejected": rejected,
                  "samples": dg.MetadataValue.md("\n".join(
                      f"- `{f}:{ln}` {why}" for f, ln, why in samples) or "none")},
    )


def ingest_assets() -> list[dg.AssetsDefinition]:
    spec = load_landing_spec(load_settings().contracts_dir)
    return [build_ingest_asset(s) for s in spec.sources.values()]
