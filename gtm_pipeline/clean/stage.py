"""Clean stage: raw text rows of delivery days -> typed, normalised, deduplicated, contract-checked entity rows, in
one SQL pass per entity and batch of days (no row comes to Python).

For one entity and a batch of partitions (delivery days):
1. the candidates are the union of the entity's source tables for those days, mapped by `contracts/sources.yaml`,
   with released repairs overlaid on their records' raw values (`gtm_pipeline.quarantine.overlay`);
2. one ``CREATE TABLE AS`` types every value (`rules.typed_sql`), lists the rules each row breaks
   (`rules.violations_sql`) and its strongest break action, and flags late records;
3. a second copy of a key on the same delivery day is marked with where the first copy is (a window over the key
   and lineage only); a later day's copy is a new version, or a duplicate if unchanged (`gtm_pipeline.clean.history`);
4. each row goes to exactly one place, by the break action of the rules it broke (docs/contracts.md): clean table,
   ``quarantine.<entity>``, ``quarantine.missing_owner`` or ``raw.rejects``. If any row breaks a ``block_publish``
   rule, the day is not published at all: the clean table keeps its previous version of that day, the offending rows
   are quarantined and the day's other rows wait in quarantine as ``held``;
5. incidents are grouped per (entity, break action, rule), not per day (`gtm_pipeline.ops.incidents`).
All writes for the batch happen in one transaction, after deleting what an earlier run wrote, so re-running a day
changes nothing. Quarantine rows that carry repair state are merged rather than rewritten (`merge_state`), so a
released record enters the clean table exactly once and its quarantine row shows the run that took it in.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

import duckdb
import pandas as pd

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import BLOCK_PUBLISH, MISSING_OWNER, QUARANTINE, EntityContract
from gtm_pipeline.clean.history import ensure_history, mark_redeliveries, publish_versions
from gtm_pipeline.clean.references import HELD_BY, HOLD_FOR_PARENT, mark_held_by_parent
from gtm_pipeline.clean.report import CleanReport, fill_reports, findings
from gtm_pipeline.clean.rules import action_sql, json_path, late_sql, quote_ident, sql_str, typed_select, violations_sql
from gtm_pipeline.datatime import BLOCKED, PUBLISHED, blocked_text, clean_day_cutoffs, record_partitions
from gtm_pipeline.ingest.landing import LandingSpec
from gtm_pipeline.ops.incidents import record_contract_findings
from gtm_pipeline.quarantine.overlay import (
    MISSING_OWNER_TABLE,
    REPAIR_COLUMN_NAMES,
    ensure_repair_columns,
    load_state,
    merge_state,
    overlay_sql,
)
from gtm_pipeline.warehouse import ensure_base, existing_tables, record_publication, transaction, utcnow

LINEAGE = ("_source", "_table", "_file", "_line", "_partition")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Candidate rows of one clean call (one temp table in DuckDB, one transaction): days are batched up to this many, so
# the limit bounds DuckDB's working set.
MAX_BATCH_ROWS = 2_000_000
_T, _L, _V, _S = "_clean_candidates", "_clean_labelled", "_clean_violations", "_clean_state_lineage"

QUARANTINE_DDL = """(
    quarantine_id VARCHAR, entity VARCHAR, _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT,
    _partition DATE, rule VARCHAR, rules VARCHAR[], columns VARCHAR[], reason VARCHAR, break_action VARCHAR,
    contract_version VARCHAR, payload VARCHAR, status VARCHAR, quarantined_at TIMESTAMP, run_id VARCHAR)"""
_Q_COLUMNS = ("quarantine_id", "entity", *LINEAGE, "rule", "rules", "columns", "reason", "break_action",
              "contract_version", "payload", "status", "quarantined_at", "run_id")


def rule_kind(rule: str) -> str:
    return rule.split(":", 1)[0]


def quarantine_id(entity: str, file: str, line: int) -> str:
    return hashlib.sha256(f"{entity}|{file}|{line}".encode()).hexdigest()[:16]


def _quarantine_id_sql(entity: str) -> str:
    """`quarantine_id` in SQL (the same digest)."""
    return f"left(sha256({sql_str(entity + '|')} || _file || '|' || CAST(_line AS VARCHAR)), 16)"


def ensure_entity_tables(con: duckdb.DuckDBPyConnection, contract: EntityContract) -> None:
    ensure_base(con)
    cols = ", ".join(f"{quote_ident(c.name)} {c.sql_type}" for c in contract.columns.values())
    con.execute(f"""CREATE TABLE IF NOT EXISTS clean.{contract.entity} ({cols},
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT, _partition DATE, _late BOOLEAN,
        _contract_version VARCHAR, _published_at TIMESTAMP)""")
    con.execute(f"CREATE TABLE IF NOT EXISTS quarantine.{contract.entity} {QUARANTINE_DDL}")
    con.execute(f"CREATE TABLE IF NOT EXISTS quarantine.missing_owner {QUARANTINE_DDL}")
    for table in (contract.entity, MISSING_OWNER_TABLE):
        ensure_repair_columns(con, table)
    ensure_history(con, contract)


def days_sql(days: list[str]) -> str:
    """A SQL list of DATE literals; partition keys are checked to be ISO dates, so nothing else reaches SQL."""
    for d in days:
        if not _ISO_DAY.fullmatch(d):
            raise ValueError(f"not a partition key (YYYY-MM-DD): {d!r}")
    return "(" + ", ".join(f"DATE '{d}'" for d in days) + ")"


def _candidate_sql(con, spec: LandingSpec, contract: EntityContract, days: list[str]) -> str | None:
    """The entity's source rows of ``days`` as text columns + lineage, released repairs overlaid (None: no source
    table exists yet)."""
    parts = []
    existing = existing_tables(con, "raw")
    for t in spec.tables_for_entity(contract.entity):
        if t.raw_table not in existing:
            continue
        sel = []
        for col in contract.columns:
            src = t.to_entity.get(col)
            if src is None:
                sel.append(f"NULL::VARCHAR AS {quote_ident(col)}")
            elif isinstance(src, tuple):
                sel.append(f"{sql_str(src[1])}::VARCHAR AS {quote_ident(col)}")
            else:
                sel.append(f"{quote_ident(src)} AS {quote_ident(col)}")
        parts.append(f"SELECT {', '.join(sel)}, {', '.join(LINEAGE)} FROM raw.{t.raw_table} "
                     f"WHERE _partition IN {days_sql(days)}")
    if not parts:
        return None
    overlaid = ", ".join(f"CASE WHEN o._file IS NULL THEN c0.{quote_ident(c)} "
                         f"ELSE json_extract_string(o.released_payload, {json_path(c)}) END AS {quote_ident(c)}"
                         for c in contract.columns)
    return (f"SELECT {overlaid}, {', '.join('c0.' + x for x in LINEAGE)} FROM ({' UNION ALL '.join(parts)}) c0 "
            f"LEFT JOIN ({overlay_sql(contract.entity, days_sql(days))}) o "
            "ON o._file = c0._file AND o._line = c0._line")


def payload_sql(contract: EntityContract) -> str:
    """The record's raw text values as a JSON object (keys sorted): what quarantine and rejects keep for repair."""
    pairs = ", ".join(f"{sql_str(c)}, {quote_ident('__raw_' + c)}" for c in sorted(contract.columns))
    return f"json_object({pairs})"


def _stage(con, spec: LandingSpec, contract: EntityContract, days: list[str]) -> bool:
    """The labelled candidates of ``days`` in temp table ``_T`` (typed columns, ``__raw_<col>``, lineage, ``_v``,
    ``_action``, ``_late``, ``_dup_of``); False when the entity has no source table yet."""
    cand = _candidate_sql(con, spec, contract, days)
    if cand is None:
        return False
    lineage = ", ".join("c." + x for x in LINEAGE)
    con.execute(f"""CREATE TEMP TABLE {_T} AS
        SELECT *, {action_sql('_v')} AS _action FROM (
            SELECT *, {violations_sql(contract)} AS _v, {late_sql(contract)} AS _late, NULL::VARCHAR AS _dup_of
            FROM (SELECT {typed_select(contract)}, {lineage} FROM ({cand}) c))""")
    _mark_duplicates(con, contract)
    return True


def _mark_duplicates(con, contract: EntityContract) -> None:
    """Set ``_dup_of`` (``file:line`` of the first copy) on second copies of a key within one delivery day: the
    first by (file, line) wins. Copies on other days are versions (`history.mark_redeliveries`)."""
    if not contract.key:
        return
    keys = [quote_ident(k) for k in contract.key]
    nonnull = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    # The window reads only key and lineage columns (not the full rows): most of the cost of a dedup is its width.
    con.execute(f"""UPDATE {_T} SET _dup_of = d.first FROM (
        WITH r AS (SELECT {', '.join(keys)}, _file, _line,
                          row_number() OVER w AS rn, first_value(_file || ':' || _line) OVER w AS first
                   FROM {_T} WHERE {nonnull}
                   WINDOW w AS (PARTITION BY {', '.join(keys)}, _partition ORDER BY _file, _line))
        SELECT _file, _line, first FROM r WHERE rn > 1
    ) d WHERE {_T}._file = d._file AND {_T}._line = d._line""")


def _label(con, blocked: list[str]) -> None:
    held = f"WHEN _partition IN {days_sql(blocked)} THEN 'held' " if blocked else ""
    con.execute(f"""CREATE TEMP VIEW {_L} AS SELECT *, CASE WHEN _dup_of IS NOT NULL THEN 'duplicate'
        WHEN _action = {sql_str(BLOCK_PUBLISH)} THEN 'blocking' WHEN _action = {sql_str(QUARANTINE)} THEN 'quarantine'
        WHEN _action = {sql_str(MISSING_OWNER)} THEN 'missing_owner' {held}WHEN {HELD_BY} IS NOT NULL THEN 'held'
        ELSE 'clean' END AS _dest FROM {_T}""")
    con.execute(f"""CREATE TEMP TABLE {_V} AS SELECT _partition, _file, _line, e.v AS v, e.pos AS _pos FROM (
        SELECT _partition, _file, _line, unnest(list_transform(_v, lambda x, i: {{'v': x, 'pos': i}})) AS e
        FROM {_T} WHERE _dup_of IS NULL AND len(_v) > 0)""")


def blocked_reasons(con, entity: str, blocked: list[str]) -> dict[str, str]:
    """Per blocked day, the sentence every output uses for it (`datatime.blocked_text`): which check blocked it,
    how many rows, and the command that lists them."""
    out = {}
    for d, kinds, rows in con.execute(
            f"SELECT strftime(_partition, '%Y-%m-%d'), list_sort(list_distinct(list(v.kind))), "
            f"count(DISTINCT (_file, _line)) FROM {_V} WHERE v.action = {sql_str(BLOCK_PUBLISH)} "
            f"AND _partition IN {days_sql(blocked)} GROUP BY 1").fetchall():
        checks = ", ".join(keys.RULE_CHECKS.get(k, k) for k in kinds)
        out[d] = blocked_text(f"clean/{entity}", (d,), check=checks, rule=kinds[0] if len(kinds) == 1 else None,
                              rows=int(rows))
    return out


def _quarantine_select(contract: EntityContract, run_id: str | None, now: datetime, where: str,
                       blocked: dict[str, str]) -> tuple[str, list]:
    """SQL (and parameters) of the quarantine rows of the labelled rows matching ``where``: one per record, with
    every rule it broke; a held row says why it waits (``blocked``: day -> sentence)."""
    e = contract.entity
    held = "_dest = 'held'"
    main_rule = "list_filter(_v, lambda x: x.action = _action)[1].kind"
    columns = "list_sort(list_distinct(list_filter(list_transform(_v, lambda x: x.col), lambda c: c IS NOT NULL)))"
    held_reason = ("CASE strftime(_partition, '%Y-%m-%d') " + " ".join(
        f"WHEN {sql_str(d)} THEN {sql_str('held: ' + text)}" for d, text in sorted(blocked.items())) + " END"
        if blocked else "NULL")
    sql = f"""SELECT {_quarantine_id_sql(e)} AS quarantine_id, {sql_str(e)} AS entity, {', '.join(LINEAGE)},
        CASE WHEN {held} THEN 'held' ELSE {main_rule} END AS rule,
        CASE WHEN {held} THEN ['held'] ELSE list_sort(list_distinct(list_transform(_v, lambda x: x.rule))) END AS rules,
        CASE WHEN {held} THEN []::VARCHAR[] ELSE {columns} END AS columns,
        CASE WHEN {held} THEN coalesce({held_reason}, {HELD_BY})
             ELSE array_to_string(list_transform(_v, lambda x: x.message), '; ') END AS reason,
        CASE WHEN {held} AND {held_reason} IS NULL THEN {sql_str(HOLD_FOR_PARENT)}
             WHEN {held} THEN {sql_str(BLOCK_PUBLISH)} ELSE _action END AS break_action,
        ?::VARCHAR AS contract_version, {payload_sql(contract)} AS payload,
        CASE WHEN {held} THEN 'held' ELSE 'open' END AS status, ?::TIMESTAMP AS quarantined_at,
        ?::VARCHAR AS run_id,
        CASE WHEN _dest = 'missing_owner' THEN '{MISSING_OWNER_TABLE}' ELSE {sql_str(e)} END AS _dest_table
        FROM {_L} WHERE _dest IN ('blocking', 'quarantine', 'missing_owner', 'held') AND ({where})"""
    return sql, [contract.version, now, run_id]


def _merge_repair_state(con, contract: EntityContract, state: dict[str, dict], run_id: str | None,
                        now: datetime, blocked: dict[str, str]) -> tuple[list[dict], set[str]]:
    """The quarantine rows to write for records with repair state (usually none), this run's fate of each record
    merged with its repair (`merge_state`), and the ids whose old rows go. Fills ``_S`` with their lineage, which
    the bulk insert skips."""
    con.execute(f"CREATE TEMP TABLE {_S} AS SELECT unnest(?::VARCHAR[]) AS f, unnest(?::BIGINT[]) AS l",
                [[r["_file"] for r in state.values()], [int(r["_line"]) for r in state.values()]])
    in_state = f"(_file, _line) IN (SELECT (f, l) FROM {_S})"
    fates = {qid: dest for qid, dest in con.execute(
        f"SELECT {_quarantine_id_sql(contract.entity)}, _dest FROM {_L} WHERE {in_state}").fetchall()}
    sql, params = _quarantine_select(contract, run_id, now, in_state, blocked)
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    new_by_id = {}
    for row in cur.fetchall():
        rec = dict(zip(names, row))
        rec["_dest"] = rec.pop("_dest_table")
        new_by_id[rec["quarantine_id"]] = rec
    return merge_state(state, fates, new_by_id, run_id=run_id, now=now)


def clean_partition(con: duckdb.DuckDBPyConnection, spec: LandingSpec, contract: EntityContract, day: str,
                    run_id: str | None = None, now: datetime | None = None) -> CleanReport:
    """Clean, check and publish one delivery day of one entity. Idempotent."""
    return clean_days(con, spec, contract, [day], run_id=run_id, now=now)[0]


def clean_days(con: duckdb.DuckDBPyConnection, spec: LandingSpec, contract: EntityContract, days: list[str],
               run_id: str | None = None, now: datetime | None = None,
               max_rows: int = MAX_BATCH_ROWS) -> list[CleanReport]:
    """Clean, check and publish several delivery days of one entity, one report per day, in day order.

    Days are processed in batches of at most ``max_rows`` candidate rows (one SQL pass and one transaction per
    batch) because the per-call overhead dominates small days. Each day keeps its own semantics: a day with an
    out-of-range row is blocked on its own, publications and incident contributions are per day, and within a
    batch the first copy of a key (by day, file, line) wins exactly as if the days had run one after another.
    """
    now = now or utcnow()
    con.execute("SET TimeZone = 'UTC'")
    ensure_entity_tables(con, contract)
    days = sorted(set(days))
    reports: list[CleanReport] = []
    for batch in _batches(con, spec, contract, days, max_rows):
        reports.extend(_clean_batch(con, spec, contract, batch, run_id, now))
    return reports


def _batches(con, spec: LandingSpec, contract: EntityContract, days: list[str], max_rows: int) -> list[list[str]]:
    if len(days) <= 1:
        return [days]
    existing = existing_tables(con, "raw")
    sizes = dict.fromkeys(days, 0)
    for t in spec.tables_for_entity(contract.entity):
        if t.raw_table in existing:
            for d, n in con.execute(f"SELECT strftime(_partition, '%Y-%m-%d'), count(*) FROM raw.{t.raw_table} "
                                    f"WHERE _partition IN {days_sql(days)} GROUP BY 1").fetchall():
                sizes[d] += n
    batches: list[list[str]] = []
    cur: list[str] = []
    rows = 0
    for d in days:
        if cur and rows + sizes[d] > max_rows:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(d)
        rows += sizes[d]
    return batches + ([cur] if cur else [])


def _drop_temp(con) -> None:
    con.execute(f"DROP VIEW IF EXISTS temp.{_L}")
    for t in (_T, _V, _S):
        con.execute(f"DROP TABLE IF EXISTS temp.{t}")


def _clean_batch(con, spec: LandingSpec, contract: EntityContract, days: list[str], run_id: str | None,
                 now: datetime) -> list[CleanReport]:
    e = contract.entity
    _drop_temp(con)
    reports = {d: CleanReport(entity=e, day=d) for d in days}
    try:
        staged = _stage(con, spec, contract, days)
        blocked: list[str] = []
        reasons: dict[str, str] = {}
        state_write: list[dict] = []
        state_delete: set[str] = set()
        if staged:
            blocked = [d for (d,) in con.execute(
                f"SELECT DISTINCT strftime(_partition, '%Y-%m-%d') FROM {_T} WHERE _dup_of IS NULL "
                f"AND _action = {sql_str(BLOCK_PUBLISH)} ORDER BY 1").fetchall()]
            mark_redeliveries(con, contract, _T, days, blocked)
            mark_held_by_parent(con, contract, _T)  # a row whose parent waits in quarantine waits with it
            _label(con, blocked)
            reasons = blocked_reasons(con, e, blocked) if blocked else {}
            fill_reports(con, contract, _L, _V, reports)
            state: dict[str, dict] = {}
            for d in days:
                state.update(load_state(con, e, d))  # quarantine rows that carry repairs (usually none)
            if state:
                state_write, state_delete = _merge_repair_state(con, contract, state, run_id, now, reasons)
                for r in state_write:
                    d = str(r["_partition"])[:10]
                    if r["status"] == "applied" and state[r["quarantine_id"]]["status"] != "applied" and d in reports:
                        reports[d].applied += 1
        for d in blocked:
            reports[d].blocked = True
        _write(con, spec, contract, days, reasons, staged, (state_write, state_delete), reports, run_id, now)
    finally:
        _drop_temp(con)
    return [reports[d] for d in days]


def _write(con, spec: LandingSpec, contract: EntityContract, days: list[str], blocked: dict[str, str], staged: bool,
           state: tuple[list[dict], set[str]], reports: dict[str, CleanReport], run_id: str | None,
           now: datetime) -> None:
    """Every write of the batch, in one transaction: replace what earlier runs wrote for these days."""
    e = contract.entity
    state_write, state_delete = state
    all_days = days_sql(days)
    published = [d for d in days if d not in blocked]
    with transaction(con):
        for t in spec.tables_for_entity(e):
            con.execute(f"DELETE FROM raw.rejects WHERE stage = 'clean' AND _source = ? AND _table = ? "
                        f"AND _partition IN {all_days}", [t.source, t.name])
        con.execute(f"DELETE FROM quarantine.{e} WHERE _partition IN {all_days} AND status IN ('open', 'held')")
        con.execute(f"DELETE FROM quarantine.missing_owner WHERE entity = ? AND _partition IN {all_days} "
                    f"AND status IN ('open', 'held')", [e])
        if state_delete:
            for target in (e, MISSING_OWNER_TABLE):
                con.execute(f"DELETE FROM quarantine.{target} WHERE _partition IN {all_days} "
                            f"AND quarantine_id IN (SELECT unnest(?::VARCHAR[]))", [sorted(state_delete)])
        if staged:
            _insert_rows(con, contract, run_id, now, blocked, skip_state=bool(state_delete))
        if published:
            for d, n in publish_versions(con, contract, _L if staged else None, published, now).items():
                reports[d].clean, reports[d].superseded = reports[d].clean - n, n
        if state_write:
            _insert_state_rows(con, e, state_write)
        # These days' contributions to the entity's grouped incidents are replaced by this run's findings; an
        # incident no day feeds any more resolves itself (gtm_pipeline.ops.incidents).
        found = findings(con, _V, reports) if staged else []
        per_day = record_contract_findings(con, entity=e, owner=contract.owner, version=contract.version,
                                           days=days, findings=found, run_id=run_id, now=now)
        for d, ids in per_day.items():
            if d in reports:
                reports[d].incidents.extend(sorted(set(ids)))
        cutoffs = clean_day_cutoffs(con, spec, e, days)
        for d in published:
            record_publication(con, asset_key=f"clean/{e}", partition_key=d, row_count=reports[d].clean,
                               version=contract.version, run_id=run_id, published_at=now, data_time=cutoffs.get(d))
        record_partitions(con, f"clean/{e}", [(d, BLOCKED if d in blocked else PUBLISHED, cutoffs.get(d))
                                              for d in days], run_id=run_id, now=now)


def _insert_rows(con, contract: EntityContract, run_id: str | None, now: datetime, blocked: dict[str, str],
                 skip_state: bool) -> None:
    """Duplicate rejects and quarantine rows, straight from the labelled candidates (clean rows: `publish_versions`)."""
    e = contract.entity
    if contract.key:
        key_text = " || ', ' || ".join(f"coalesce(CAST({quote_ident(k)} AS VARCHAR), 'None')" for k in contract.key)
        con.execute(
            f"INSERT INTO raw.rejects (_source, _table, _file, _line, _partition, stage, rule, reason, raw_text, "
            f"_ingested_at) SELECT _source, _table, _file, _line, _partition, 'clean', 'unique', "
            f"'duplicate of ' || _dup_of || {sql_str(' on key (' + ', '.join(contract.key) + ') = (')} || "
            f"{key_text} || ')', {payload_sql(contract)}, ? FROM {_L} WHERE _dest = 'duplicate'", [now])
    # Records with repair state get their merged rows from _insert_state_rows instead.
    where = f"(_file, _line) NOT IN (SELECT (f, l) FROM {_S})" if skip_state else "TRUE"
    sql, params = _quarantine_select(contract, run_id, now, where, blocked)
    qcols = ", ".join(_Q_COLUMNS)
    for target in (e, MISSING_OWNER_TABLE):
        con.execute(f"INSERT INTO quarantine.{target} ({qcols}) SELECT {qcols} FROM ({sql}) "
                    f"WHERE _dest_table = {sql_str(target)}", params)


def _insert_state_rows(con, entity: str, rows: list[dict]) -> None:
    full = [{**dict.fromkeys(REPAIR_COLUMN_NAMES), **r} for r in rows]
    qdf = pd.DataFrame(full)
    for target in (MISSING_OWNER_TABLE, entity):
        part = qdf[qdf["_dest"] == target].drop(columns=["_dest"])
        if len(part):
            con.register("_q_df", part)
            names = ", ".join(part.columns)
            con.execute(f"INSERT INTO quarantine.{target} ({names}) SELECT {names} FROM _q_df")
            con.unregister("_q_df")
