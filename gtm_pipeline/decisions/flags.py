"""The flag store: versioned feature flags and configs that applying a decision flips (spec 002 §4: price card version,
budget split, audience filter, ``FF_ROUTING_V1``).

``decisions.flags`` keeps every version of every flag (append-only); ``decisions.flags_current`` is the latest
version of each. A value is JSON. Applying writes version n+1; reversing writes version n+2 whose value is that of
the version before the apply (``restores_version``), so the history shows both the change and its undo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.decisions.hashing import canonical_json
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.routing import engine as routing
from gtm_pipeline.warehouse import ensure_base, scalar, utcnow

ROUTING_FLAG = "FF_ROUTING_V1"

_DDL = [
    """CREATE TABLE IF NOT EXISTS decisions.flags (
        flag VARCHAR, version INTEGER, value VARCHAR, set_at TIMESTAMP, set_by VARCHAR, decision_id VARCHAR,
        reason VARCHAR, restores_version INTEGER)""",
    """CREATE OR REPLACE VIEW decisions.flags_current AS
        SELECT * FROM decisions.flags QUALIFY row_number() OVER (PARTITION BY flag ORDER BY version DESC) = 1""",
]


@dataclass(frozen=True)
class FlagVersion:
    flag: str
    version: int
    value: dict
    set_at: datetime
    set_by: str | None
    decision_id: str | None
    reason: str
    restores_version: int | None


def ensure_flags(con: duckdb.DuckDBPyConnection) -> None:
    ensure_base(con)
    for stmt in _DDL:
        con.execute(stmt)


def _fv(r) -> FlagVersion:
    return FlagVersion(r[0], int(r[1]), json.loads(r[2]), r[3], r[4], r[5], r[6], r[7])


_COLS = "flag, version, value, set_at, set_by, decision_id, reason, restores_version"


def current(con: duckdb.DuckDBPyConnection, flag: str) -> FlagVersion | None:
    ensure_flags(con)
    r = con.execute(f"SELECT {_COLS} FROM decisions.flags WHERE flag = ? ORDER BY version DESC LIMIT 1",
                    [flag]).fetchone()
    return _fv(r) if r else None


def version(con: duckdb.DuckDBPyConnection, flag: str, v: int) -> FlagVersion | None:
    ensure_flags(con)
    r = con.execute(f"SELECT {_COLS} FROM decisions.flags WHERE flag = ? AND version = ?", [flag, v]).fetchone()
    return _fv(r) if r else None


def history(con: duckdb.DuckDBPyConnection, flag: str | None = None) -> list[FlagVersion]:
    ensure_flags(con)
    sql = f"SELECT {_COLS} FROM decisions.flags" + (" WHERE flag = ?" if flag else "") + " ORDER BY flag, version"
    return [_fv(r) for r in con.execute(sql, [flag] if flag else []).fetchall()]


def all_current(con: duckdb.DuckDBPyConnection) -> list[FlagVersion]:
    ensure_flags(con)
    return [_fv(r) for r in con.execute(f"SELECT {_COLS} FROM decisions.flags_current ORDER BY flag").fetchall()]


def set_flag(con: duckdb.DuckDBPyConnection, flag: str, value: dict, *, set_by: str, reason: str,
             decision_id: str | None = None, restores_version: int | None = None,
             at: datetime | None = None) -> FlagVersion:
    """Append the next version of ``flag`` (call inside the caller's transaction)."""
    ensure_flags(con)
    n = scalar(con, "SELECT coalesce(max(version), 0) FROM decisions.flags WHERE flag = ?", [flag])
    fv = FlagVersion(flag, int(n) + 1, value, at or utcnow(), set_by, decision_id, reason, restores_version)
    con.execute("INSERT INTO decisions.flags VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [fv.flag, fv.version, canonical_json(value), fv.set_at, fv.set_by, fv.decision_id, fv.reason,
                 fv.restores_version])
    return fv


def routing_rule_set_in_force(con: duckdb.DuckDBPyConnection, contracts_dir: Path):
    """The routing rule set that FF_ROUTING_V1 puts in force: the ``status: current`` one while the flag is on (or
    was never set), the promoted candidate named in the flag's value while it is off."""
    fv = current(con, ROUTING_FLAG)
    sets = routing.load_rule_sets(Path(contracts_dir))
    if fv is None or fv.value.get("enabled", True):
        return routing.current_rule_set(Path(contracts_dir))
    name = fv.value.get("rule_set")
    if name not in sets:
        raise GtmPipelineError(f"{ROUTING_FLAG} v{fv.version} names rule set {name!r}, which is not in "
                               f"contracts/routing (known: {', '.join(sorted(sets))}); reverse the decision "
                               f"{fv.decision_id} or restore the rule-set file")
    return sets[name]
