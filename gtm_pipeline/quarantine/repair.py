"""Quarantine repair workflow (DESIGN §7; spec §3 "routing to repair"): list, show, repair, release — all audited.

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

Every change is audited in ``quarantine.repairs``: who, when, which column, before and after, method, outcome.
"""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import yaml

from gtm_pipeline.clean import (
    PRECEDENCE,
    QUARANTINE_DDL,
    WARN,
    EntityContract,
    Violation,
    quote_ident,
    rule_kind,
    slug,
    validate_payloads,
)
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.quarantine.overlay import (
    MISSING_OWNER_TABLE,
    OPEN,
    RELEASED,
    REPAIRED,
    STATUSES,
    ensure_repair_columns,
)
from gtm_pipeline.warehouse import ensure_base, scalar, table_exists, utcnow

METHODS = ("route", "enum_map", "csv", "release")
EDITABLE = (OPEN, REPAIRED)  # statuses a repair may change

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


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection):
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


# ---- selecting rows ---------------------------------------------------------------------------------------------

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


# ---- validation -------------------------------------------------------------------------------------------------

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


def _failure_fields(vs: list[Violation]) -> dict:
    acts = {v.action for v in vs if v.action != WARN}
    act = next(a for a in PRECEDENCE if a in acts)
    main = [v for v in vs if v.action == act]
    return {"rule": rule_kind(main[0].rule), "rules": sorted({v.rule for v in vs}),
            "columns": sorted({v.column for v in vs if v.column}), "break_action": act,
            "reason": "; ".join(v.message for v in vs if v.action != WARN)}


# ---- repairs ----------------------------------------------------------------------------------------------------

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
                              [(r["_file"], int(r["_line"])) for r, _, _ in items])
        for (row, after, diff), verdict in zip(items, verdicts):
            qid, table = row["quarantine_id"], row["quarantine_table"]
            payload = json.dumps(after, sort_keys=True)
            if verdict.ok:
                con.execute(f"UPDATE quarantine.{table} SET status = ?, repaired_payload = ?, repaired_at = ?, "
                            f"contract_version = ? WHERE quarantine_id = ?",
                            [REPAIRED, payload, now, contract.version, qid])
                out = RowOutcome(qid, entity, table, REPAIRED, diff, note=notes.get(qid, ""))
            else:
                ff = _failure_fields(verdict.violations)
                con.execute(f"UPDATE quarantine.{table} SET status = ?, repaired_payload = ?, repaired_at = ?, "
                            f"rule = ?, rules = ?, columns = ?, reason = ?, break_action = ?, contract_version = ? "
                            f"WHERE quarantine_id = ?",
                            [OPEN, payload, now, ff["rule"], ff["rules"], ff["columns"], ff["reason"],
                             ff["break_action"], contract.version, qid])
                out = RowOutcome(qid, entity, table, OPEN, diff, reason=ff["reason"], note=notes.get(qid, ""))
            report.outcomes.append(out)
            outcome = "repaired" if verdict.ok else f"still fails: {out.reason}"
            con.executemany("INSERT INTO quarantine.repairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                            [(_new_id("REP"), qid, entity, table, col, b, a, method, actor, now, out.note, outcome)
                             for col, (b, a) in sorted(diff.items())])
    return report


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _editable(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"].isin(EDITABLE)] if not rows.empty else rows


def repair_by_route(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract], rows: pd.DataFrame,
                    rule_set, *, actor: str, seed: int = 0, now: datetime | None = None) -> RepairReport:
    """Give records without owner an owner from the routing rules; unroutable ones go to ``ops.routing_dlq``."""
    from gtm_pipeline.routing import engine as routing

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
    with _transaction(con):
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
    with _transaction(con):
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
    with _transaction(con):
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
    with _transaction(con):
        return _apply_changes(con, contracts, rows, changes, method="csv", actor=actor, notes=notes, now=now)


# ---- release ----------------------------------------------------------------------------------------------------

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
    with _transaction(con):
        for entity, part in ready.groupby("entity"):
            contract = contracts[entity]
            payloads = [json.loads(p) for p in part["repaired_payload"]]
            verdicts = revalidate(con, contract, payloads,
                                  [(f, int(ln)) for f, ln in zip(part["_file"], part["_line"])])
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
                    ff = _failure_fields(v.violations)
                    con.execute(f"UPDATE quarantine.{table} SET status = ?, rule = ?, rules = ?, columns = ?, "
                                f"reason = ?, break_action = ?, contract_version = ? WHERE quarantine_id = ?",
                                [OPEN, ff["rule"], ff["rules"], ff["columns"], ff["reason"], ff["break_action"],
                                 contract.version, qid])
                    rep.refused.append((qid, ff["reason"]))
                    outcome, after = f"refused: {ff['reason']}", OPEN
                con.execute("INSERT INTO quarantine.repairs VALUES (?, ?, ?, ?, NULL, ?, ?, 'release', ?, ?, ?, ?, ?)",
                            [_new_id("REP"), qid, entity, table, REPAIRED, after, actor, now,
                             f"contract {contract.entity}@{contract.version}", outcome, rid])
    return rep


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


__all__ = ["Filters", "RepairReport", "ReleaseReport", "ensure_repair_tables", "select_rows",
           "summarize", "samples", "show", "export_template", "repair_by_route", "repair_by_enum_map",
           "repair_by_csv", "repair_from_replay", "release", "load_enum_map", "read_corrections", "revalidate",
           "default_actor", "effective_payload", "repair_counts", "applied_rows"]
