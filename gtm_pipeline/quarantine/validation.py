"""Re-validating a repaired quarantine row against the *current* contract: the clean stage's typing + rules SQL
(`gtm_pipeline.clean.validate_payloads`), plus its key against the clean table. Used by repair and release."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from gtm_pipeline.clean import PRECEDENCE, WARN, EntityContract, Violation, quote_ident, rule_kind, validate_payloads
from gtm_pipeline.warehouse import scalar, table_exists


@dataclass
class Verdict:
    ok: bool
    violations: list[Violation]
    typed: dict

    @property
    def reason(self) -> str:
        return "; ".join(v.message for v in self.violations if v.action != WARN)


def revalidate(con: duckdb.DuckDBPyConnection, contract: EntityContract, payloads: list[dict],
               lineage: list[tuple[str, int]]) -> list[Verdict]:
    """Validate corrected payloads against the current contract, plus their key against ``clean.<entity>``."""
    if not payloads:
        return []
    typed, per_row = validate_payloads(con, contract, payloads)
    verdicts = []
    has_clean = table_exists(con, "clean", contract.entity)
    for i, vs in enumerate(per_row):
        trow = typed.iloc[i].to_dict()
        vs = list(vs)
        key = contract.key
        if key and has_clean and all(trow.get(k) is not None and not pd.isna(trow.get(k)) for k in key):
            cond = " AND ".join(f"{quote_ident(k)} = ?" for k in key)
            first = scalar(
                con, f"SELECT min(_file || ':' || _line) FROM clean.{contract.entity} WHERE {cond} "
                     f"AND NOT (_file = ? AND _line = ?)", [*(trow[k] for k in key), *lineage[i]])
            if first:
                vs.append(Violation(i, "unique", ",".join(key), None, "reject_duplicate",
                                    f"{', '.join(key)}: already in clean.{contract.entity} at {first}"))
        verdicts.append(Verdict(ok=all(v.action == WARN for v in vs), violations=vs, typed=trow))
    return verdicts


def failure_fields(vs: list[Violation]) -> dict:
    """The columns a failing row's quarantine record is updated with: main rule, all rules, columns, action, reason."""
    acts = {v.action for v in vs if v.action != WARN}
    act = next(a for a in PRECEDENCE if a in acts)
    main = [v for v in vs if v.action == act]
    return {"rule": rule_kind(main[0].rule), "rules": sorted({v.rule for v in vs}),
            "columns": sorted({v.column for v in vs if v.column}), "break_action": act,
            "reason": "; ".join(v.message for v in vs if v.action != WARN)}

