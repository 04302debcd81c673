"""The audited way back: ``gtm-pipeline lifecycle recycle <lead_id> --reason <dq_reason> --by <who>``.

Automatic moves only go forward (HubSpot: "clear, then set" is the only way back), so a recycle is a person's act
with a receipt: one appended row of ``ops.lifecycle_recycles`` with who, when, why (a dq_reason of
contracts/entities/lead.yaml) and the stage the record left. Nothing here updates or deletes a row. The next
computation of ``metrics.lifecycle_history`` shows the record in ``recycled`` from that moment; later evidence moves
it forward again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.contract_loader import read_yaml
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.lifecycle.contract import RECYCLED
from gtm_pipeline.warehouse import one_row, table_exists, transaction

TABLE = "ops.lifecycle_recycles"
_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    recycle_id VARCHAR PRIMARY KEY, lead_id VARCHAR NOT NULL, recycled_at TIMESTAMP NOT NULL,
    reason VARCHAR NOT NULL, recycled_by VARCHAR NOT NULL, previous_stage VARCHAR NOT NULL)"""


@dataclass(frozen=True)
class Recycle:
    recycle_id: str
    lead_id: str
    recycled_at: datetime
    reason: str
    recycled_by: str
    previous_stage: str


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute(_DDL)


def dq_reasons(contracts_dir: Path) -> list[str]:
    """The allowed reasons: clean.lead's dq_reason values, so a recycle reads like a CRM disqualification."""
    doc = read_yaml(Path(contracts_dir) / "entities" / "lead.yaml", "contracts/entities/lead.yaml")
    col = ((doc or {}).get("columns") or {}).get("dq_reason") or {}
    return list(col.get("values") or [])


def current_stage(con: duckdb.DuckDBPyConnection, lead_id: str) -> str:
    """The record's stage now: the published history's, unless a recycle was logged after that publication."""
    if not table_exists(con, "metrics", "lifecycle_history"):
        raise GtmPipelineError("metrics.lifecycle_history is not published yet, so the stage to leave is unknown; "
                               "run 'gtm-pipeline metrics refresh lifecycle_history' first")
    (stage,) = one_row(con, "SELECT any_value(current_stage) FROM metrics.lifecycle_history WHERE lead_id = ?",
                       [lead_id])
    if table_exists(con, "ops", "lifecycle_recycles"):
        (pending,) = one_row(con, f"""
            SELECT count(*) FROM (SELECT max(recycled_at) AS at FROM {TABLE} WHERE lead_id = ?) r
            WHERE r.at IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM metrics.lifecycle_history h
                WHERE h.lead_id = ? AND h.stage = '{RECYCLED}' AND h.entered_at = r.at)""", [lead_id, lead_id])
        if pending:
            return RECYCLED
    if stage is None:
        raise GtmPipelineError(f"lead {lead_id!r} has no rows in metrics.lifecycle_history; refresh it with "
                               f"'gtm-pipeline metrics refresh lifecycle_history' and retry")
    return stage


def recycle(con: duckdb.DuckDBPyConnection, contracts_dir: Path, lead_id: str, *, reason: str, by: str,
            now: datetime) -> Recycle:
    """Append one audited recycle of ``lead_id``; every refusal names the lead, the problem and the fix."""
    reasons = dq_reasons(contracts_dir)
    if not reason or reason not in reasons:
        raise GtmPipelineError(f"lifecycle recycle {lead_id}: --reason {reason!r} is not a dq_reason; allowed "
                               f"(contracts/entities/lead.yaml): {', '.join(reasons)}")
    if not by.strip():
        raise GtmPipelineError(f"lifecycle recycle {lead_id}: --by is empty; name who recycles the record")
    if not table_exists(con, "clean", "lead") or one_row(
            con, "SELECT count(*) FROM clean.lead WHERE lead_id = ?", [lead_id])[0] == 0:
        raise GtmPipelineError(f"lifecycle recycle: lead {lead_id!r} is not in clean.lead; check the id "
                               f"(lead ids look like L0004508)")
    previous = current_stage(con, lead_id)
    if previous == RECYCLED:
        raise GtmPipelineError(f"lifecycle recycle {lead_id}: the lead is already recycled; it moves forward again "
                               f"on new evidence, so there is nothing to recycle")
    row = Recycle(f"RC{uuid.uuid4().hex[:12]}", lead_id, now.replace(tzinfo=None), reason, by.strip(), previous)
    with transaction(con):
        ensure_table(con)
        con.execute(f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                    [row.recycle_id, row.lead_id, row.recycled_at, row.reason, row.recycled_by, row.previous_stage])
    return row
