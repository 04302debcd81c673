"""The clean stage's SQL prefilter (`suspect_sql`) and pandera must agree: rows the prefilter does not flag are
published without going through pandas, so a rule pandera enforces but the SQL misses would publish bad rows.

On generated data with every kind of defect, the prefilter flags exactly the rows for which `find_violations`
(pandera plus the type check) reports a rule, entity by entity."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from gtm_pipeline.clean import _typed_sql, find_violations, late_sql, rule_kind, suspect_sql
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.entity_contracts import load_entity_contracts
from gtm_pipeline.landing import landing_days, load_landing_spec

SPEC = load_landing_spec(CONTRACTS_DIR_DEFAULT)
CONTRACTS = load_entity_contracts(CONTRACTS_DIR_DEFAULT)


def _frame(con, entity: str, days: list[str]):
    sql = _typed_sql(con, SPEC, CONTRACTS[entity], days)
    return con.execute(f"SELECT *, {suspect_sql(CONTRACTS[entity])} AS _suspect, {late_sql(CONTRACTS[entity])} "
                       f"AS _late_sql FROM ({sql}) ORDER BY _partition, _file, _line").df()


def test_sql_prefilter_flags_exactly_the_rows_pandera_fails(small_warehouse, small_landing):
    days = landing_days(small_landing)
    kinds_seen: set[str] = set()
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        for entity in SPEC.entities():
            df = _frame(con, entity, days)
            violations = find_violations(CONTRACTS[entity], df.drop(columns=["_suspect", "_late_sql"]))
            failing = {v.row for v in violations}
            kinds_seen |= {rule_kind(v.rule) for v in violations}
            flagged = set(df.index[df["_suspect"]])
            missed = sorted(failing - flagged)[:5]
            extra = sorted(flagged - failing)[:5]
            assert not missed, (f"{entity}: pandera fails rows the SQL prefilter does not flag: "
                                f"{df.loc[missed, ['_file', '_line']].to_dict('records')} "
                                f"({[v.message for v in violations if v.row in missed]})")
            assert not extra, (f"{entity}: the SQL prefilter flags rows pandera passes: "
                               f"{df.loc[extra, ['_file', '_line']].to_dict('records')}")
    # The generated defects exercise every rule kind the prefilter mirrors.
    assert {"type", "required", "enum", "range"} <= kinds_seen, kinds_seen


@pytest.mark.parametrize("entity", ["activity", "lead", "opportunity"])
def test_late_flag_in_sql_matches_the_published_late_column(small_warehouse, small_landing, entity):
    """`_late` of published rows is computed by late_sql; it flags exactly the records delivered after their day."""
    contract = CONTRACTS[entity]
    if not (contract.event_time and contract.late_after_days is not None):
        pytest.skip(f"{entity} has no late rule")
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        df = _frame(con, entity, landing_days(small_landing))
        et = df[contract.event_time].astype("datetime64[ns]")
        cutoff = df["_partition"].astype("datetime64[ns]") - pd.Timedelta(days=contract.late_after_days)
        expected = et.notna() & (et.dt.normalize() < cutoff)
        assert (df["_late_sql"].astype(bool) == expected).all()
