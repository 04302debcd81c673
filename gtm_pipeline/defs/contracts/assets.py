"""Contracts stage, cross-entity: the conservation ledger (every raw record is in exactly one place)."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.clean import conservation as conservation_table
from gtm_pipeline.config import load_settings
from gtm_pipeline.defs.resources import GtmProject
from gtm_pipeline.landing import load_landing_spec

_spec = load_landing_spec(load_settings().contracts_dir)


@dg.asset(
    key=keys.CONSERVATION_KEY,
    group_name=keys.CONTRACTS,
    deps=[keys.clean_key(e) for e in _spec.entities()],
    kinds={"duckdb"},
    owners=["team:data_platform"],
    tags={"stage": "contracts"},
    code_version="1",
    description=(
        "ops.conservation: one row per source table and delivery day with the records read and where each ended "
        "(clean, quarantined, rejected at ingest or as a duplicate). Invariant: records = clean + quarantined + "
        "rejected, nothing lost. Owner: Data Platform."
    ),
    check_specs=[dg.AssetCheckSpec(keys.CHECK_NOTHING_LOST, asset=keys.CONSERVATION_KEY,
                                   description="No raw record is missing from every destination.")],
)
def conservation(context: dg.AssetExecutionContext, warehouse: DuckDBResource, project: GtmProject):
    spec = load_landing_spec(project.contracts_path)
    with warehouse.get_connection() as con:
        df = conservation_table(con, spec)
        con.execute("CREATE OR REPLACE TABLE ops.conservation AS SELECT * FROM df")
    totals = df[["records", "clean", "quarantined", "rejected_ingest", "rejected_clean", "lost", "in_two_places"]].sum()
    by_table = df.groupby("table")[["records", "clean", "quarantined", "rejected_ingest", "rejected_clean", "lost"]].sum()
    lost = int(totals["lost"])
    yield dg.MaterializeResult(metadata={
        "dagster/row_count": len(df),
        **{k: int(v) for k, v in totals.items()},
        "by_table": dg.MetadataValue.md(by_table.reset_index().to_markdown(index=False)
                                        if hasattr(by_table, "to_markdown") else str(by_table)),
    })
    yield dg.AssetCheckResult(check_name=keys.CHECK_NOTHING_LOST, passed=lost == 0,
                              severity=dg.AssetCheckSeverity.ERROR,
                              metadata={"lost": lost, "records": int(totals["records"])})
