"""Releasing repaired quarantine rows: re-validated once more, valid ones are marked ``released`` under one
release id (the clean stage takes them in when their day is re-cleaned, `gtm_pipeline.quarantine.backfill`); rows
that fail now go back to ``open`` with the reason. Every decision is audited in ``quarantine.repairs``."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pandas as pd

from gtm_pipeline.clean import EntityContract
from gtm_pipeline.quarantine.overlay import OPEN, RELEASED, REPAIRED
from gtm_pipeline.quarantine.rows import audit_id
from gtm_pipeline.quarantine.validation import failure_fields, revalidate
from gtm_pipeline.warehouse import transaction, utcnow


@dataclass
class ReleaseReport:
    release_id: str
    released: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)    # (quarantine_id, why it fails now)
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (quarantine_id, status)
    days: dict[str, list[str]] = field(default_factory=dict)        # day -> entities with released rows


def release(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], rows: pd.DataFrame, *,
            actor: str, now: datetime | None = None) -> ReleaseReport:
    """Mark valid repaired rows for re-entry (one release id for the batch); others are refused or skipped."""
    now = now or utcnow()
    rid = "REL-" + hashlib.sha256(f"{uuid.uuid4()}".encode()).hexdigest()[:10]
    rep = ReleaseReport(release_id=rid)
    if rows.empty:
        return rep
    ready = rows[rows["status"] == REPAIRED]
    for _, r in rows[rows["status"] != REPAIRED].iterrows():
        rep.skipped.append((r["quarantine_id"], r["status"]))
    with transaction(con):
        for entity, part in ready.groupby("entity"):
            contract = contracts[entity]
            payloads = [json.loads(p) for p in part["repaired_payload"]]
            lineage = [(f, int(ln), d) for f, ln, d in zip(part["_file"], part["_line"], part["_partition"])]
            verdicts = revalidate(con, contract, payloads, lineage)
            for (_, r), v in zip(part.iterrows(), verdicts):
                qid, table = r["quarantine_id"], r["quarantine_table"]
                if v.ok:
                    con.execute(f"UPDATE quarantine.{table} SET status = ?, released_payload = repaired_payload, "
                                f"released_at = ?, release_id = ?, contract_version = ? WHERE quarantine_id = ?",
                                [RELEASED, now, rid, contract.version, qid])
                    rep.released.append(qid)
                    day = str(pd.Timestamp(r["_partition"]).date())
                    ents = rep.days.setdefault(day, [])
                    if entity not in ents:
                        ents.append(entity)
                    outcome, after = "released", RELEASED
                else:
                    ff = failure_fields(v.violations)
                    con.execute(f"UPDATE quarantine.{table} SET status = ?, rule = ?, rules = ?, columns = ?, "
                                f"reason = ?, break_action = ?, contract_version = ? WHERE quarantine_id = ?",
                                [OPEN, ff["rule"], ff["rules"], ff["columns"], ff["reason"], ff["break_action"],
                                 contract.version, qid])
                    rep.refused.append((qid, ff["reason"]))
                    outcome, after = f"refused: {ff['reason']}", OPEN
                con.execute("INSERT INTO quarantine.repairs VALUES (?, ?, ?, ?, NULL, ?, ?, 'release', ?, ?, ?, ?, ?)",
                            [audit_id(), qid, entity, table, REPAIRED, after, actor, now,
                             f"contract {contract.entity}@{contract.version}", outcome, rid])
    return rep

