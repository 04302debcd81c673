"""Quarantine repair workflow (docs/design.md §7; spec 002 §3 "routing to repair"): list, show, repair, release
(all audited).

Three ways to repair a quarantined record, each writing the corrected raw text values to the row's
``repaired_payload`` (the original ``payload`` is never changed):

* ``route``: an opportunity (or lead) without owner gets one from the routing rules (`gtm_pipeline.routing.engine`);
  records no rule can place go to the routing dead-letter queue ``ops.routing_dlq``;
* ``enum_map``: bad enum values are mapped to allowed ones by a mapping file (YAML or CSV);
* ``csv``: a CSV of corrected rows keyed by ``quarantine_id`` sets the listed columns.

A repaired record is re-validated against the *current* contract on the same typing + rules SQL as the clean
stage (`gtm_pipeline.clean.validate_payloads`), plus its key against the clean table: if it passes, its status
becomes ``repaired``; if not, it stays ``open`` with the new reason. ``release`` re-validates again and marks valid
repaired rows ``released``: the clean stage overlays them on their raw records the next time their day is cleaned
(see `gtm_pipeline.quarantine.overlay`), which the backfill sensor triggers for exactly the affected days.

Selecting and showing the rows is `gtm_pipeline.quarantine.rows`, re-validation
`gtm_pipeline.quarantine.validation`, the release `gtm_pipeline.quarantine.release`.

Every change is audited in ``quarantine.repairs``: who, when, which column, before and after, method, outcome.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import yaml

from gtm_pipeline.clean import EntityContract, slug, validate_payloads
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.quarantine.overlay import MISSING_OWNER_TABLE, OPEN, REPAIRED
from gtm_pipeline.quarantine.rows import Filters, audit_id, effective_payload, select_rows
from gtm_pipeline.quarantine.validation import failure_fields, revalidate
from gtm_pipeline.routing import engine as routing
from gtm_pipeline.warehouse import transaction, utcnow

METHODS = ("route", "enum_map", "csv", "release")
EDITABLE = (OPEN, REPAIRED)  # statuses a repair may change


@dataclass
class RowOutcome:
    quarantine_id: str
    entity: str
    table: str
    status: str                                     # repaired | open (still fails) | skipped
    changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    reason: str = ""                                # why it still fails, or why it was skipped
    note: str = ""


@dataclass
class RepairReport:
    method: str
    outcomes: list[RowOutcome] = field(default_factory=list)
    unrouted: list[tuple[str, str, str]] = field(default_factory=list)  # (quarantine_id, dlq_id, reason)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        parts = [f"{self.count('repaired')} repaired (valid, ready to release)",
                 f"{self.count('open')} still failing (kept open with the new reason)",
                 f"{self.count('skipped')} skipped"]
        if self.method == "route":
            parts.append(f"{len(self.unrouted)} unroutable (sent to the routing DLQ)")
        return f"{self.method}: " + ", ".join(parts)


def _apply_changes(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], rows: pd.DataFrame,
                   changes: Mapping[str, Mapping[str, str | None]], *, method: str, actor: str,
                   notes: Mapping[str, str] | None = None, now: datetime | None = None) -> RepairReport:
    """Apply value changes to quarantine rows, re-validate, update status/reason, audit. Caller holds a transaction."""
    now = now or utcnow()
    notes = notes or {}
    report = RepairReport(method=method)
    todo: dict[str, list[tuple[dict, dict, dict]]] = {}
    for _, r in rows.iterrows():
        qid = r["quarantine_id"]
        row = r.to_dict()
        if qid not in changes:
            continue
        if row["status"] not in EDITABLE:
            report.outcomes.append(RowOutcome(qid, row["entity"], row["quarantine_table"], "skipped",
                                              reason=f"status {row['status']}: only open or repaired rows can be "
                                                     f"repaired"))
            continue
        before = effective_payload(row)
        after = dict(before)
        after.update(changes[qid])
        diff = {c: (before.get(c), after.get(c)) for c in after if before.get(c) != after.get(c)}
        if not diff:
            report.outcomes.append(RowOutcome(qid, row["entity"], row["quarantine_table"], "skipped",
                                              reason="no value changes"))
            continue
        todo.setdefault(row["entity"], []).append((row, after, diff))
    for entity, items in todo.items():
        contract = contracts[entity]
        verdicts = revalidate(con, contract, [a for _, a, _ in items],
                              [(r["_file"], int(r["_line"]), r["_partition"]) for r, _, _ in items])
        for (row, after, diff), verdict in zip(items, verdicts):
            qid, table = row["quarantine_id"], row["quarantine_table"]
            payload = json.dumps(after, sort_keys=True)
            if verdict.ok:
                con.execute(f"UPDATE quarantine.{table} SET status = ?, repaired_payload = ?, repaired_at = ?, "
                            f"contract_version = ? WHERE quarantine_id = ?",
                            [REPAIRED, payload, now, contract.version, qid])
                out = RowOutcome(qid, entity, table, REPAIRED, diff, note=notes.get(qid, ""))
            else:
                ff = failure_fields(verdict.violations)
                con.execute(f"UPDATE quarantine.{table} SET status = ?, repaired_payload = ?, repaired_at = ?, "
                            f"rule = ?, rules = ?, columns = ?, reason = ?, break_action = ?, contract_version = ? "
                            f"WHERE quarantine_id = ?",
                            [OPEN, payload, now, ff["rule"], ff["rules"], ff["columns"], ff["reason"],
                             ff["break_action"], contract.version, qid])
                out = RowOutcome(qid, entity, table, OPEN, diff, reason=ff["reason"], note=notes.get(qid, ""))
            report.outcomes.append(out)
            outcome = "repaired" if verdict.ok else f"still fails: {out.reason}"
            con.executemany("INSERT INTO quarantine.repairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                            [(audit_id(), qid, entity, table, col, b, a, method, actor, now, out.note, outcome)
                             for col, (b, a) in sorted(diff.items())])
    return report



def _editable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"].isin(EDITABLE)] if not rows.empty else rows


def repair_by_route(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], rows: pd.DataFrame,
                    rule_set, *, actor: str, seed: int = 0, now: datetime | None = None) -> RepairReport:
    """Give records without owner an owner from the routing rules; unroutable ones go to ``ops.routing_dlq``."""
    now = now or utcnow()
    report = RepairReport(method="route")
    # keyed by the source each record is given below (routing types an assignment's source as optional)
    records: list[routing.Record] = []
    by_source: dict[str | None, str] = {}
    for entity, part in _editable(rows).groupby("entity") if not rows.empty else []:
        if entity not in routing.KINDS or "owner_id" not in contracts[entity].columns:
            for qid in part["quarantine_id"]:
                report.outcomes.append(RowOutcome(qid, entity, "", "skipped", reason=f"{entity} rows are not routed"))
            continue
        payloads = [effective_payload(r) for _, r in part.iterrows()]
        typed, _ = validate_payloads(con, contracts[entity], payloads)
        key = contracts[entity].key[0] if contracts[entity].key else None
        for (_, r), p, (_, t) in zip(part.iterrows(), payloads, typed.iterrows()):
            qid = r["quarantine_id"]
            if r["quarantine_table"] != MISSING_OWNER_TABLE and "owner_id" not in list(r["columns"]):
                report.outcomes.append(RowOutcome(qid, entity, r["quarantine_table"], "skipped",
                                                  reason="not quarantined for a missing owner"))
                continue
            if p.get("owner_id") not in (None, "") and str(p.get("owner_id")).strip():
                report.outcomes.append(RowOutcome(qid, entity, r["quarantine_table"], "skipped",
                                                  reason=f"has an owner already ({p['owner_id']})"))
                continue
            created = t.get("created_at")
            created = None if created is None or pd.isna(created) else pd.Timestamp(created).to_pydatetime()
            day = created.date() if created else pd.Timestamp(r["_partition"]).date()
            rid = str(t[key]) if key and t.get(key) is not None and not pd.isna(t.get(key)) else qid
            attrs = {f: (None if t.get(f) is None or pd.isna(t.get(f)) else str(t.get(f)))
                     for f in routing.CONDITION_FIELDS if f in t}
            source = f"quarantine:{qid}"
            records.append(routing.Record(record_id=rid, kind=entity, attrs=attrs, day=day, created_at=created,
                                          source=source))
            by_source[source] = qid
    if not records:
        return report
    result = routing.route_in_warehouse(con, records, rule_set, seed)
    changes = {by_source[a.source]: {"owner_id": a.owner_id} for a in result.assignments}
    notes = {by_source[a.source]: f"rule {a.rule} of {a.rule_set}; tie-break {a.tie_break}; seed {seed}"
             for a in result.assignments}
    with transaction(con):
        sub = _apply_changes(con, contracts, rows[rows["quarantine_id"].isin(list(changes))], changes,
                             method="route", actor=actor, notes=notes, now=now)
        routing.record_assignments(con, result, seed, now)
        dlq = routing.dead_letter(con, result.unrouted, rule_set.label, now)
    report.outcomes.extend(sub.outcomes)
    report.unrouted = [(by_source[u.record.source], i, u.reason) for u, i in zip(result.unrouted, dlq)]
    return report


def repair_from_replay(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], replay,
                       *, actor: str) -> RepairReport:
    """Turn DLQ replays of quarantined records (source "quarantine:<id>") into ``route`` repairs."""
    changes, notes = {}, {}
    for dlq, a in replay.replayed:
        if a.source and a.source.startswith("quarantine:"):
            qid = a.source.split(":", 1)[1]
            changes[qid] = {"owner_id": a.owner_id}
            notes[qid] = f"DLQ replay {dlq}: rule {a.rule} of {a.rule_set}; tie-break {a.tie_break}"
    if not changes:
        return RepairReport(method="route")
    rows = select_rows(con, contracts, Filters(ids=tuple(changes)))
    with transaction(con):
        return _apply_changes(con, contracts, rows, changes, method="route", actor=actor, notes=notes)


def load_enum_map(path: Path) -> dict[str, dict[str, str]]:
    """``{column: {bad: good}}`` from YAML (``stage: {"closed won!!": closed_won}``) or CSV (column,bad,good)."""
    path = Path(path)
    if not path.exists():
        raise GtmPipelineError(f"{path}: no such mapping file; pass a YAML or CSV file of column -> bad -> good")
    if path.suffix.lower() == ".csv":
        out: dict[str, dict[str, str]] = {}
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if set(reader.fieldnames or []) != {"column", "bad", "good"}:
                raise GtmPipelineError(f"{path}: header must be exactly column,bad,good (got "
                                       f"{','.join(reader.fieldnames or [])})")
            for n, rec in enumerate(reader, start=2):
                if not rec["column"] or rec["bad"] is None or not rec["good"]:
                    raise GtmPipelineError(f"{path}:{n}: column, bad and good must all be filled in")
                out.setdefault(rec["column"].strip(), {})[rec["bad"]] = rec["good"].strip()
        return out
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise GtmPipelineError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise GtmPipelineError(f"{path}: must map each column to a mapping of bad -> good values, e.g. "
                               f"stage: {{\"closed won!!\": closed_won}}")
    return {str(c): {str(b): str(g) for b, g in m.items()} for c, m in doc.items()}


def repair_by_enum_map(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], rows: pd.DataFrame,
                       mapping: Mapping[str, Mapping[str, str]], *, actor: str, source: str = "mapping",
                       now: datetime | None = None) -> RepairReport:
    """Map bad enum values to allowed ones (matched as written or spelling-insensitively)."""
    rows = _editable(rows)
    entities = sorted(set(rows["entity"])) if not rows.empty else []
    for col, m in mapping.items():
        users = [e for e in entities if col in contracts[e].columns and contracts[e].columns[col].type == "enum"]
        if not users:
            raise GtmPipelineError(f"{source}: column {col!r} is not an enum column of the selected rows' "
                                   f"entit{'y' if len(entities) == 1 else 'ies'} ({', '.join(entities) or 'none'})")
        for e in users:
            allowed = contracts[e].columns[col].values
            for bad, good in m.items():
                if good not in allowed:
                    raise GtmPipelineError(f"{source}: {col}: {bad!r} -> {good!r}: {good!r} is not an allowed value "
                                           f"of {e}.{col}; allowed: {', '.join(allowed)}")
    changes: dict[str, dict[str, str]] = {}
    notes: dict[str, str] = {}
    for _, r in rows.iterrows():
        p = effective_payload(r)
        ch = {}
        for col, m in mapping.items():
            c = contracts[r["entity"]].columns.get(col)
            v = p.get(col)
            if c is None or c.type != "enum" or v is None:
                continue
            exact = {b.strip(): g for b, g in m.items()}
            by_slug = {slug(b): g for b, g in m.items()}
            mapped = exact.get(v.strip(), by_slug.get(slug(v)))
            if mapped is not None and mapped != v:
                ch[col] = mapped
        if ch:
            changes[r["quarantine_id"]] = ch
            notes[r["quarantine_id"]] = f"enum map {source}"
    with transaction(con):
        return _apply_changes(con, contracts, rows, changes, method="enum_map", actor=actor, notes=notes, now=now)


def read_corrections(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract],
                     path: Path) -> tuple[pd.DataFrame, dict[str, dict[str, str | None]]]:
    """Read a corrections CSV (``quarantine_id`` + columns to set; an empty cell means no value). All or nothing:
    any unknown id, column or non-editable row is an error naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise GtmPipelineError(f"{path}: no such file; write one with 'gtm-pipeline quarantine list --entity <e> "
                               f"--export {path.name}' and edit it")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "quarantine_id" not in header:
            raise GtmPipelineError(f"{path}: the header has no quarantine_id column (got {','.join(header)}); "
                                   f"rows are keyed by the quarantined row's id")
        lines = [(n, {k.strip(): v for k, v in rec.items() if k is not None}) for n, rec in enumerate(reader, 2)]
    ids = [rec["quarantine_id"].strip() for _, rec in lines if rec.get("quarantine_id")]
    rows = select_rows(con, contracts, Filters(ids=tuple(ids))) if ids else pd.DataFrame()
    by_id = {r["quarantine_id"]: r for _, r in rows.iterrows()} if not rows.empty else {}
    changes: dict[str, dict[str, str | None]] = {}
    for n, rec in lines:
        qid = (rec.get("quarantine_id") or "").strip()
        if not qid:
            raise GtmPipelineError(f"{path}:{n}: quarantine_id is empty")
        if qid in changes:
            raise GtmPipelineError(f"{path}:{n}: quarantine_id {qid} appears twice; keep one line per row")
        if qid not in by_id:
            raise GtmPipelineError(f"{path}:{n}: quarantine_id {qid} not found; list ids with "
                                   f"'gtm-pipeline quarantine list'")
        row = by_id[qid]
        if row["status"] not in EDITABLE:
            raise GtmPipelineError(f"{path}:{n}: quarantine_id {qid} is {row['status']}; only open or repaired "
                                   f"rows can be repaired")
        known = contracts[row["entity"]].columns
        ch = {}
        for col in header:
            if col == "quarantine_id":
                continue
            if col not in known:
                raise GtmPipelineError(f"{path}:{n}: column {col!r} is not a column of {row['entity']}; known: "
                                       f"{', '.join(known)}")
            v = rec.get(col)
            ch[col] = None if v is None or v.strip() == "" else v
        changes[qid] = ch
    return rows, changes


def repair_by_csv(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], path: Path, *,
                  actor: str, now: datetime | None = None) -> RepairReport:
    """Apply a CSV of corrected rows keyed by quarantine_id (see `read_corrections`)."""
    rows, changes = read_corrections(con, contracts, path)
    notes = {q: f"corrections file {Path(path).name}" for q in changes}
    with transaction(con):
        return _apply_changes(con, contracts, rows, changes, method="csv", actor=actor, notes=notes, now=now)

