"""The quarantine rows a repair works on: their tables (and the audit table ``quarantine.repairs``), selecting them
by filters, and showing, summarising and exporting them. The repairs themselves are `gtm_pipeline.quarantine.repair`,
the release `gtm_pipeline.quarantine.release`."""

from __future__ import annotations

import csv
import getpass
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from gtm_pipeline.clean import QUARANTINE_DDL, EntityContract
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.quarantine.overlay import MISSING_OWNER_TABLE, STATUSES, ensure_repair_columns
from gtm_pipeline.warehouse import ensure_base, table_exists

AUDIT_DDL = """CREATE TABLE IF NOT EXISTS quarantine.repairs (
    repair_id VARCHAR, quarantine_id VARCHAR, entity VARCHAR, quarantine_table VARCHAR, column_name VARCHAR,
    before_value VARCHAR, after_value VARCHAR, method VARCHAR, actor VARCHAR, changed_at TIMESTAMP, note VARCHAR,
    outcome VARCHAR, release_id VARCHAR)"""


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers; the audit still needs one
        return "unknown"


def ensure_repair_tables(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract]) -> None:
    """Create (or migrate in place) the quarantine tables and the audit table ``quarantine.repairs``."""
    ensure_base(con)
    for table in (*contracts, MISSING_OWNER_TABLE):
        con.execute(f"CREATE TABLE IF NOT EXISTS quarantine.{table} {QUARANTINE_DDL}")
        ensure_repair_columns(con, table)
    con.execute(AUDIT_DDL)



def audit_id() -> str:
    """A new ``quarantine.repairs`` row id."""
    return f"REP-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Filters:
    ids: tuple[str, ...] = ()
    entity: str | None = None
    table: str | None = None      # a quarantine table: an entity name or missing_owner
    rule: str | None = None       # a rule kind (enum, required, type, range, held, ...) or a full rule name
    column: str | None = None
    day: str | None = None        # delivery day YYYY-MM-DD
    status: str | None = None

    def validate(self, contracts: Mapping[str, EntityContract]) -> None:
        if self.entity and self.entity not in contracts:
            raise GtmPipelineError(f"--entity {self.entity}: unknown entity; known: {', '.join(sorted(contracts))}")
        tables = (*sorted(contracts), MISSING_OWNER_TABLE)
        if self.table and self.table not in tables:
            raise GtmPipelineError(f"--table {self.table}: unknown quarantine table; known: {', '.join(tables)}")
        if self.status and self.status not in STATUSES:
            raise GtmPipelineError(f"--status {self.status}: unknown status; known: {', '.join(STATUSES)}")
        if self.day:
            try:
                datetime.strptime(self.day, "%Y-%m-%d")
            except ValueError as e:
                raise GtmPipelineError(f"--day {self.day}: not a date; use YYYY-MM-DD, e.g. 2026-08-03") from e


def _union_sql(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract]) -> str | None:
    parts = [f"SELECT '{t}' AS quarantine_table, * FROM quarantine.{t}"
             for t in (*sorted(contracts), MISSING_OWNER_TABLE) if table_exists(con, "quarantine", t)]
    return " UNION ALL BY NAME ".join(parts) if parts else None


def select_rows(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], f: Filters) -> pd.DataFrame:
    """Quarantine rows matching the filters, from every quarantine table, in (day, file, line) order."""
    f.validate(contracts)
    union = _union_sql(con, contracts)
    if union is None:
        return pd.DataFrame()
    where: list[str] = []
    params: list[object] = []
    if f.ids:
        where.append(f"quarantine_id IN ({', '.join('?' for _ in f.ids)})")
        params.extend(f.ids)
    for col, val in (("entity", f.entity), ("quarantine_table", f.table), ("status", f.status)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    if f.day:
        where.append("_partition = ?::DATE")
        params.append(f.day)
    if f.rule:
        where.append("(rule = ? OR list_contains(rules, ?) OR list_contains(list_transform(rules, "
                     "lambda r: split_part(r, ':', 1)), ?))")
        params.extend([f.rule] * 3)
    if f.column:
        where.append("list_contains(columns, ?)")
        params.append(f.column)
    sql = f"SELECT * FROM ({union})" + (" WHERE " + " AND ".join(where) if where else "") + \
        " ORDER BY _partition, _file, _line"
    return con.execute(sql, params).df()


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Counts per quarantine table, entity, day, rule and status."""
    if rows.empty:
        return pd.DataFrame(columns=["quarantine_table", "entity", "day", "rule", "status", "rows"])
    out = rows.assign(day=rows["_partition"].astype(str)).groupby(
        ["quarantine_table", "entity", "day", "rule", "status"]).size().reset_index(name="rows")
    return out.sort_values(["day", "quarantine_table", "rule", "status"]).reset_index(drop=True)


def samples(rows: pd.DataFrame, n: int = 5, width: int = 90) -> pd.DataFrame:
    """A few rows per (table, rule, status) with id, day, lineage and reason."""
    if rows.empty:
        return pd.DataFrame(columns=["quarantine_id", "table", "day", "where", "rule", "status", "reason"])
    picked = rows.groupby(["quarantine_table", "rule", "status"], sort=False).head(n)
    return pd.DataFrame({
        "quarantine_id": picked["quarantine_id"], "table": picked["quarantine_table"],
        "day": picked["_partition"].astype(str),
        "where": picked["_file"] + ":" + picked["_line"].astype(str), "rule": picked["rule"],
        "status": picked["status"],
        "reason": picked["reason"].map(lambda s: s if len(s) <= width else s[: width - 3] + "..."),
    }).reset_index(drop=True)


def effective_payload(row: Mapping) -> dict[str, str | None]:
    """The values a repair starts from: the latest repair attempt, else the original raw values."""
    text = row.get("repaired_payload")
    if text is None or (isinstance(text, float) and pd.isna(text)):
        text = row["payload"]
    return json.loads(text)


def export_template(rows: pd.DataFrame, contracts: Mapping[str, EntityContract], path: Path) -> int:
    """Write the selected rows as an editable CSV (quarantine_id + the entity's columns) for ``repair --csv``."""
    ents = sorted(set(rows["entity"])) if not rows.empty else []
    if len(ents) != 1:
        raise GtmPipelineError(f"--export {path}: the selected rows belong to {len(ents)} entities "
                               f"({', '.join(ents) or 'none'}); export one entity at a time with --entity")
    cols = list(contracts[ents[0]].columns)
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["quarantine_id", *cols])
        for _, r in rows.iterrows():
            p = effective_payload(r)
            w.writerow([r["quarantine_id"], *("" if p.get(c) is None else p.get(c) for c in cols)])
    return len(rows)


def show(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract],
         qid: str) -> tuple[dict, pd.DataFrame]:
    """One quarantine row (as a dict) and its audit history."""
    ensure_repair_tables(con, contracts)
    rows = select_rows(con, contracts, Filters(ids=(qid,)))
    if rows.empty:
        raise GtmPipelineError(f"quarantine id {qid!r} not found; list ids with 'gtm-pipeline quarantine list'")
    row = rows.iloc[0].to_dict()
    audit = con.execute("SELECT changed_at, actor, method, column_name, before_value, after_value, outcome, note, "
                        "release_id FROM quarantine.repairs WHERE quarantine_id = ? ORDER BY changed_at, repair_id",
                        [qid]).df()
    return row, audit



def repair_counts(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract]) -> dict[str, int]:
    """Rows per status over every quarantine table (for summaries)."""
    union = _union_sql(con, contracts)
    if union is None:
        return {}
    return dict(con.execute(f"SELECT status, count(*) FROM ({union}) GROUP BY 1").fetchall())


def applied_rows(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract],
                 ids: Iterable[str]) -> pd.DataFrame:
    """Status and the run that took them in, for the given quarantine ids."""
    ids = tuple(ids)
    rows = select_rows(con, contracts, Filters(ids=ids)) if ids else pd.DataFrame()
    if rows.empty:
        return rows
    return rows[["quarantine_id", "entity", "_partition", "status", "applied_run_id", "applied_at"]]

