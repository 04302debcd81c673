"""Checking arbitrary raw-text rows (repaired quarantine payloads) by the clean stage's own SQL: the same typing and
the same compiled rules (`gtm_pipeline.clean.rules`), so a repair is judged exactly as the clean run will judge it."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from gtm_pipeline.clean.contract import EntityContract
from gtm_pipeline.clean.rules import typed_select, violations_sql


@dataclass
class Violation:
    row: int            # position in the checked rows
    rule: str           # type | required | enum | range | max_length | control_chars | unique | row_check:<name>
    column: str | None
    value: object
    action: str
    message: str


def validate_payloads(con: duckdb.DuckDBPyConnection, contract: EntityContract,
                      payloads: list[dict[str, str | None]]) -> tuple[pd.DataFrame, list[list[Violation]]]:
    """Type and check raw-text rows exactly as the clean stage does.

    Returns the typed frame (one row per payload, in order) and, per payload, the rules it breaks (WARN ones
    included; a row is publishable when every violation's action is WARN). Key uniqueness is not checked here.
    """
    con.execute("SET TimeZone = 'UTC'")
    cols = list(contract.columns)
    src = pd.DataFrame([{c: (None if p.get(c) is None else str(p.get(c))) for c in cols} for p in payloads],
                       columns=cols, dtype=object)
    src["_i"] = range(len(src))
    name = "_repair_payloads"
    con.register(name, src)
    try:
        typed = con.execute(f"SELECT * FROM (SELECT {typed_select(contract)}, c._i FROM {name} c) "
                            f"ORDER BY _i").df()
        found = con.execute(f"SELECT _i, {violations_sql(contract)} FROM (SELECT {typed_select(contract)}, c._i "
                            f"FROM {name} c) ORDER BY _i").fetchall()
    finally:
        con.unregister(name)
    out: list[list[Violation]] = [[] for _ in payloads]
    for i, vs in found:
        out[i] = [Violation(i, v["rule"], v["col"], v["value"], v["action"], v["message"]) for v in vs]
    return typed.drop(columns=["_i"]).reset_index(drop=True), out
