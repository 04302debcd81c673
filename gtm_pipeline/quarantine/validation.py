"""Re-validating a repaired quarantine row against the *current* contract: the clean stage's typing + rules SQL
(`gtm_pipeline.clean.validate_payloads`), plus its key against the versions published on the same delivery day.
Used by repair and release."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from gtm_pipeline.clean import PRECEDENCE, WARN, EntityContract, Violation, quote_ident, rule_kind, validate_payloads
from gtm_pipeline.clean.history import history_table
from gtm_pipeline.warehouse import existing_tables, scalar


@dataclass
class Verdict:
    ok: bool
    violations: list[Violation]
    typed: dict

    @property
    def reason(self) -> str:
        return "; ".join(v.message for v in self.violations if v.action != WARN)


def revalidate(con: duckdb.DuckDBPyConnection, contract: EntityContract, payloads: list[dict],
               lineage: list[tuple[str, int, object]]) -> list[Verdict]:
    """Validate corrected payloads against the current contract, plus their key against the published versions of
    the same delivery day (``lineage``: file, line, delivery day of each payload).

    Only the same day counts: with upserts (``gtm_pipeline.clean.history``) a key published on an earlier day is
    the version a repaired later-day row updates, not a copy of it; a second copy inside one delivery is the
    duplicate the clean stage would reject.
    """
    if not payloads:
        return []
    typed, per_row = validate_payloads(con, contract, payloads)
    verdicts = []
    tables = existing_tables(con, "clean")
    versions = history_table(contract.entity) if history_table(contract.entity) in tables else (
        contract.entity if contract.entity in tables else None)
    for i, vs in enumerate(per_row):
        trow = typed.iloc[i].to_dict()
        vs = list(vs)
        key = contract.key
        if key and versions and all(trow.get(k) is not None and not pd.isna(trow.get(k)) for k in key):
            cond = " AND ".join(f"{quote_ident(k)} = ?" for k in key)
            file, line, day = lineage[i]
            first = scalar(
                con, f"SELECT min(_file || ':' || _line) FROM clean.{versions} WHERE {cond} "
                     f"AND _partition = CAST(? AS DATE) AND NOT (_file = ? AND _line = ?)",
                [*(trow[k] for k in key), str(pd.Timestamp(day).date()), file, line])
            if first:
                vs.append(Violation(i, "unique", ",".join(key), None, "reject_duplicate",
                                    f"{', '.join(key)}: already in clean.{contract.entity} at {first} "
                                    f"(same delivery day)"))
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

