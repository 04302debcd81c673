"""Clean stage: raw text rows of one delivery day -> typed, normalised, deduplicated, contract-checked entity rows.

For one entity and one partition (delivery day):
1. the candidate is the union of the entity's source tables for that day, mapped by `contracts/sources.yaml`;
2. values are typed in DuckDB SQL (timestamps to UTC, enums matched spelling-insensitively to canonical values);
3. a second copy of a key (in the same day, or already published on another day) goes to ``raw.rejects``;
4. pandera validates the typed rows against the schema generated from the entity contract (required, enum,
   range and row checks), plus the type failures found in step 2;
5. each row goes to exactly one place, by the break action of the rules it broke (spec §3):
   clean table, ``quarantine.<entity>``, ``quarantine.missing_owner`` or ``raw.rejects``. If any row breaks a
   ``block_publish`` rule, the day is not published at all: the clean table keeps its previous version of that
   day, the offending rows are quarantined, the day's other rows wait in quarantine as ``held``, and the owner is
   notified when this opens the incident.
6. incidents are grouped per (entity, break action, rule), not per day (`gtm_pipeline.incidents`): each day's run
   replaces that day's contribution, and an incident no day contributes to any more resolves itself.
All writes for the day happen in one transaction, after deleting what an earlier run wrote, so re-running a day
changes nothing.

Repairs (`gtm_pipeline.repair`): released corrections are overlaid on the raw values of their records before step 2,
and quarantine rows that carry repair state are merged rather than rewritten (`gtm_pipeline.repair_overlay`), so a
released record enters the clean table exactly once and its quarantine row shows the run that took it in.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pandas as pd
import pandera.pandas as pa

from gtm_pipeline.datatime import BLOCKED, PUBLISHED, clean_day_cutoffs, record_partitions
from gtm_pipeline.entity_contracts import (
    BLOCK_PUBLISH, MISSING_OWNER, QUARANTINE, REJECT_DUPLICATE, WARN, EntityContract, quote_ident, type_label,
    typed_sql,
)
from gtm_pipeline.expressions import assertion_sql
from gtm_pipeline.landing import LandingSpec
from gtm_pipeline.repair_overlay import (
    MISSING_OWNER_TABLE, REPAIR_COLUMN_NAMES, ensure_repair_columns, load_state, merge_state,
    overlay_sql, sql_list,
)
from gtm_pipeline.incidents import BLOCK_KIND, QUARANTINE_KIND, Finding, record_contract_findings
from gtm_pipeline.warehouse import ensure_base, record_publication, utcnow

LINEAGE = ("_source", "_table", "_file", "_line", "_partition")
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Candidate rows of one clean call (one temp table in DuckDB, one transaction): days are batched up to this many.
# Only the rows flagged by suspect_sql reach pandas, so the limit bounds DuckDB's working set, not pandas'.
MAX_BATCH_ROWS = 2_000_000
SAMPLE_SIZE = 5
# Where a row goes when it broke several rules: the strongest action wins.
_PRECEDENCE = (REJECT_DUPLICATE, BLOCK_PUBLISH, QUARANTINE, MISSING_OWNER, WARN)

QUARANTINE_DDL = """(
    quarantine_id VARCHAR, entity VARCHAR, _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT,
    _partition DATE, rule VARCHAR, rules VARCHAR[], columns VARCHAR[], reason VARCHAR, break_action VARCHAR,
    contract_version VARCHAR, payload VARCHAR, status VARCHAR, quarantined_at TIMESTAMP, run_id VARCHAR)"""


@dataclass
class Violation:
    row: int            # position in the candidate frame
    rule: str           # type | required | enum | range | unique | row_check:<name> | references
    column: str | None
    value: object
    action: str
    message: str


@dataclass
class CleanReport:
    entity: str
    day: str
    candidates: int = 0
    clean: int = 0
    quarantined: int = 0
    missing_owner: int = 0
    held: int = 0
    rejected: int = 0
    late: int = 0
    blocked: bool = False
    counts: dict[str, int] = field(default_factory=dict)        # rule kind -> violating rows
    samples: dict[str, list[dict]] = field(default_factory=dict)  # rule kind -> a few rows with file/line/reason
    warnings: dict[str, int] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    applied: int = 0  # released repairs taken into clean by this run (see repair_overlay)


def rule_kind(rule: str) -> str:
    return rule.split(":", 1)[0]


def quarantine_id(entity: str, file: str, line: int) -> str:
    return hashlib.sha256(f"{entity}|{file}|{line}".encode()).hexdigest()[:16]


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


def _candidate_sql(con, spec: LandingSpec, contract: EntityContract) -> str | None:
    parts = []
    existing = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    for t in spec.tables_for_entity(contract.entity):
        if t.raw_table not in existing:
            continue
        sel = []
        for col in contract.columns:
            src = t.to_entity.get(col)
            if src is None:
                sel.append(f"NULL::VARCHAR AS {quote_ident(col)}")
            elif isinstance(src, tuple):
                sel.append(f"'{src[1]}'::VARCHAR AS {quote_ident(col)}")
            else:
                sel.append(f"{quote_ident(src)} AS {quote_ident(col)}")
        parts.append(f"SELECT {', '.join(sel)}, {', '.join(LINEAGE)} FROM raw.{t.raw_table} "
                     f"WHERE _partition IN {{days}}")
    return " UNION ALL ".join(parts) if parts else None


def _days_sql(days: list[str]) -> str:
    """A SQL list of DATE literals; partition keys are checked to be ISO dates, so nothing else reaches SQL."""
    for d in days:
        if not _ISO_DAY.fullmatch(d):
            raise ValueError(f"not a partition key (YYYY-MM-DD): {d!r}")
    return "(" + ", ".join(f"DATE '{d}'" for d in days) + ")"


def _typed_sql(con, spec: LandingSpec, contract: EntityContract, days: list[str]) -> str | None:
    """SQL of the typed candidate rows of ``days`` (typed columns, ``__raw_<col>`` text, lineage, ``_dup_of``), in no
    particular order; None when no source table of the entity exists yet."""
    cand = _candidate_sql(con, spec, contract)
    if cand is None:
        return None
    cand = cand.replace("{days}", _days_sql(days))
    cols = list(contract.columns)
    key = contract.key
    if key:
        kcols = ", ".join(f"t.{quote_ident(k)}" for k in key)
        nonnull = " AND ".join(f"t.{quote_ident(k)} IS NOT NULL" for k in key)
        join = " AND ".join(f"p.{quote_ident(k)} = t.{quote_ident(k)}" for k in key)
        dedup = f"""
            , ranked AS (
                SELECT t.*, row_number() OVER (PARTITION BY {kcols} ORDER BY t._partition, t._file, t._line) AS _rn,
                       first_value(t._file || ':' || t._line) OVER (
                           PARTITION BY {kcols} ORDER BY t._partition, t._file, t._line) AS _first
                FROM typed t)
            SELECT r.* EXCLUDE (_rn, _first),
                   CASE WHEN NOT ({nonnull.replace('t.', 'r.')}) THEN NULL
                        WHEN r._rn > 1 THEN r._first
                        ELSE (SELECT min(p._file || ':' || p._line) FROM clean.{contract.entity} p
                              WHERE {join.replace('t.', 'r.')} AND p._partition NOT IN {_days_sql(days)}) END AS _dup_of
            FROM ranked r"""
    else:
        dedup = "SELECT *, NULL::VARCHAR AS _dup_of FROM typed"
    # Released repairs replace the raw values of their records (by lineage) before typing: see repair_overlay.
    overlaid = ", ".join(f"CASE WHEN o._file IS NULL THEN c0.{quote_ident(c)} "
                         f"ELSE json_extract_string(o.released_payload, {_json_path(c)}) END AS {quote_ident(c)}"
                         for c in cols)
    cand = (f"SELECT {overlaid}, {', '.join('c0.' + x for x in LINEAGE)} FROM ({cand}) c0 "
            f"LEFT JOIN ({overlay_sql(contract.entity, _days_sql(days))}) o ON o._file = c0._file AND o._line = c0._line")
    return (f"WITH c AS ({cand}), typed AS (SELECT {_typed_select(contract)}, {', '.join('c.' + x for x in LINEAGE)} "
            f"FROM c)" + dedup)


def suspect_sql(contract: EntityContract) -> str:
    """Boolean SQL over a typed candidate row (typed columns and ``__raw_<col>``): TRUE when the row breaks a rule of
    its contract, by the same rules `find_violations` checks with pandera (type, required, enum, range, row checks).

    The clean stage validates only these rows in pandas and publishes the others with one ``INSERT ... SELECT``
    inside DuckDB. It may flag a row pandera then passes (that row is simply published from pandas), but must never
    miss one: ``test_clean_prefilter.py`` holds the two together on generated data.
    """
    terms = []
    for col in contract.columns.values():
        c, raw = quote_ident(col.name), quote_ident("__raw_" + col.name)
        # pandas reads a DOUBLE NaN as missing, so pandera treats it as NULL (and its range check skips it).
        missing = f"({c} IS NULL OR isnan({c}))" if col.type == "decimal" else f"({c} IS NULL)"
        if col.type not in ("string", "enum"):
            # find_violations: raw text present (not blank) but the typed value is missing. trim() strips less than
            # Python's str.strip(), so this flags a superset (e.g. a tab-only value), never fewer rows.
            terms.append(f"({missing} AND {raw} IS NOT NULL AND trim({raw}) <> '')")
        if col.required:
            terms.append(missing)
        if col.type == "enum":
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in col.values)
            terms.append(f"({c} IS NOT NULL AND {c} NOT IN ({values}))")
        if col.min is not None or col.max is not None:
            out = [f"{c} < {float(col.min)!r}"] if col.min is not None else []
            out += [f"{c} > {float(col.max)!r}"] if col.max is not None else []
            terms.append(f"(NOT {missing} AND ({' OR '.join(out)}))")
    for rc in contract.row_checks:
        terms.append(f"(NOT {assertion_sql(rc.expression)})")
    return "(" + " OR ".join(terms) + ")" if terms else "FALSE"


def late_sql(contract: EntityContract) -> str:
    """Boolean SQL: the record's event day is more than ``late_after_days`` before its delivery day (``_late``)."""
    if not (contract.event_time and contract.late_after_days is not None):
        return "FALSE"
    et = quote_ident(contract.event_time)
    return f"coalesce(CAST({et} AS DATE) < _partition - {int(contract.late_after_days)}, FALSE)"


def _json_path(column: str) -> str:
    return "'$.\"" + column.replace("'", "''").replace('"', '\\"') + "\"'"


def _typed_select(contract: EntityContract, alias: str = "c") -> str:
    """Typed columns plus their raw text (``__raw_<col>``) from the text columns of ``alias``: the one typing path."""
    typed = ", ".join(f"{typed_sql(col, alias + '.' + quote_ident(col.name))} AS {quote_ident(col.name)}"
                      for col in contract.columns.values())
    raw = ", ".join(f"{alias}.{quote_ident(c)} AS {quote_ident('__raw_' + c)}" for c in contract.columns)
    return f"{typed}, {raw}"


def validate_payloads(con: duckdb.DuckDBPyConnection, contract: EntityContract,
                      payloads: list[dict[str, str | None]]) -> tuple[pd.DataFrame, list[list[Violation]]]:
    """Type and validate arbitrary raw-text rows (e.g. repaired quarantine payloads) exactly as `clean_partition` does.

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
        df = con.execute(f"SELECT {_typed_select(contract)} FROM {name} c ORDER BY c._i").df()
    finally:
        con.unregister(name)
    out: list[list[Violation]] = [[] for _ in payloads]
    for v in find_violations(contract, df.reset_index(drop=True)):
        out[v.row].append(v)
    return df, out


def pandera_schema(contract: EntityContract) -> pa.DataFrameSchema:
    """The pandera schema generated from an entity contract (dtype checks are done by the SQL typing step)."""
    columns = {}
    for col in contract.columns.values():
        checks = []
        if col.type == "enum":
            checks.append(pa.Check.isin(list(col.values)))
        if col.min is not None or col.max is not None:
            lo = col.min if col.min is not None else float("-inf")
            hi = col.max if col.max is not None else float("inf")
            checks.append(pa.Check.in_range(lo, hi))
        columns[col.name] = pa.Column(None, checks=checks, nullable=not col.required, required=True,
                                      name=col.name)
    row_checks = []
    for rc in contract.row_checks:
        expr = rc.expression
        row_checks.append(pa.Check(lambda df, _e=expr: _e.evaluate_assertion(df), name=f"row_check:{rc.name}"))
    return pa.DataFrameSchema(columns=columns, checks=row_checks, coerce=False, strict=False,
                              name=f"{contract.entity}@{contract.version}")


def find_violations(contract: EntityContract, df: pd.DataFrame) -> list[Violation]:
    """Every rule a candidate row breaks (type failures from SQL typing, the rest from pandera)."""
    out: list[Violation] = []
    typed_bad: set[tuple[int, str]] = set()
    for col in contract.columns.values():
        if col.type in ("string", "enum"):
            continue
        raw = df[f"__raw_{col.name}"]
        bad = raw.notna() & (raw.astype("string").str.strip() != "") & df[col.name].isna()
        for i in bad[bad].index:
            typed_bad.add((i, col.name))
            out.append(Violation(i, "type", col.name, raw[i], col.action("type"),
                                 f"{col.name}: {raw[i]!r} is not {type_label(col)}"))
    if df.empty:
        return out
    schema = pandera_schema(contract)
    frame = df[list(contract.columns)]
    try:
        schema.validate(frame, lazy=True)
        return out
    except pa.errors.SchemaErrors as e:
        fc = e.failure_cases
    seen: set[tuple[int, str, str | None]] = set()
    for rec in fc.itertuples(index=False):
        check = str(rec.check)
        key = (rec.index, check, rec.column if check.startswith("row_check:") is False else None)
        if key in seen:
            continue  # pandera reports a frame-level check once per column of a failing row
        seen.add(key)
        idx = rec.index
        if idx is None or (isinstance(idx, float) and pd.isna(idx)):
            continue
        idx = int(idx)
        colname = rec.column if isinstance(rec.column, str) and rec.column in contract.columns else None
        if check == "not_nullable" and colname:
            if (idx, colname) in typed_bad:
                continue  # already reported as a type failure
            col = contract.columns[colname]
            out.append(Violation(idx, "required", colname, None, col.action("required"),
                                 f"{colname}: required value is missing"))
        elif check.startswith("isin(") and colname:
            col = contract.columns[colname]
            out.append(Violation(idx, "enum", col.name, rec.failure_case, col.action("enum"),
                                 f"{col.name}: {rec.failure_case!r} is not an allowed value "
                                 f"({', '.join(col.values)})"))
        elif check.startswith("in_range(") and colname:
            col = contract.columns[colname]
            out.append(Violation(idx, "range", col.name, rec.failure_case, col.action("range"),
                                 f"{col.name}: {rec.failure_case} is outside [{_fmt(col.min)}, {_fmt(col.max)}]"))
        elif check.startswith("row_check:"):
            name = check[len("row_check:"):]
            rc = next(r for r in contract.row_checks if r.name == name)
            out.append(Violation(idx, f"row_check:{name}", None, None, rc.action,
                                 f"row check {name!r} failed: {rc.text}"))
    return out


def _fmt(v: float | None) -> str:
    return "-inf" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


def _payload(df: pd.DataFrame, i: int, cols) -> str:
    return json.dumps({c: (None if pd.isna(v := df.at[i, f"__raw_{c}"]) else str(v)) for c in cols}, sort_keys=True)


def clean_partition(con: duckdb.DuckDBPyConnection, spec: LandingSpec, contract: EntityContract, day: str,
                    run_id: str | None = None, now: datetime | None = None) -> CleanReport:
    """Clean, check and publish one delivery day of one entity. Idempotent."""
    return clean_days(con, spec, contract, [day], run_id=run_id, now=now)[0]


def clean_days(con: duckdb.DuckDBPyConnection, spec: LandingSpec, contract: EntityContract, days: list[str],
               run_id: str | None = None, now: datetime | None = None,
               max_rows: int = MAX_BATCH_ROWS) -> list[CleanReport]:
    """Clean, check and publish several delivery days of one entity, one report per day, in day order.

    Days are processed in batches of at most ``max_rows`` candidate rows (one pandera pass and one transaction per
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
    existing = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    sizes = dict.fromkeys(days, 0)
    for t in spec.tables_for_entity(contract.entity):
        if t.raw_table in existing:
            for d, n in con.execute(f"SELECT strftime(_partition, '%Y-%m-%d'), count(*) FROM raw.{t.raw_table} "
                                    f"WHERE _partition IN {_days_sql(days)} GROUP BY 1").fetchall():
                sizes[d] += n
    batches, cur, rows = [], [], 0
    for d in days:
        if cur and rows + sizes[d] > max_rows:
            batches.append(cur)
            cur, rows = [], 0
        cur.append(d)
        rows += sizes[d]
    return batches + ([cur] if cur else [])


def _clean_batch(con, spec: LandingSpec, contract: EntityContract, days: list[str], run_id: str | None,
                 now: datetime) -> list[CleanReport]:
    e = contract.entity
    cols = list(contract.columns)
    state: dict = {}
    for d in days:
        state.update(load_state(con, e, d))  # quarantine rows that carry repairs (usually none)
    # Row work stays in DuckDB: the typed candidates go to a temp table with a flag for every row that may break a
    # rule (suspect_sql), is a duplicate or carries repair state. Only flagged rows (and, on a blocked day, that
    # day's rows, which wait in quarantine as held) come to pandas, where pandera decides; the others are
    # published below with one INSERT ... SELECT.
    staged = _stage_candidates(con, spec, contract, days, state)
    blocked_days: set[str] = set()
    while True:
        df = _flagged_frame(con, contract, staged, blocked_days)
        day_of = (pd.to_datetime(df["_partition"]).dt.strftime("%Y-%m-%d") if len(df)
                  else pd.Series(dtype="object", index=df.index))

        dup_rows = df.index[df["_dup_of"].notna()] if len(df) else pd.Index([])
        dup_set = set(dup_rows)
        violations = [v for v in find_violations(contract, df) if v.row not in dup_set]
        by_row: dict[int, list[Violation]] = {}
        for v in violations:
            by_row.setdefault(v.row, []).append(v)

        def action_of(vs: list[Violation]) -> str:
            acts = {v.action for v in vs}
            return next(a for a in _PRECEDENCE if a in acts)

        dest = pd.Series("clean", index=df.index, dtype="object")
        for i, vs in by_row.items():
            dest[i] = {BLOCK_PUBLISH: "blocking", QUARANTINE: "quarantine", MISSING_OWNER: "missing_owner",
                       WARN: "clean"}[action_of(vs)]
        dest[dup_rows] = "duplicate"
        found = set(day_of[dest == "blocking"])
        if found <= blocked_days:
            break
        blocked_days |= found  # fetch the blocked days' other rows too: they are held, with their payloads
    dest[(dest == "clean") & day_of.isin(blocked_days)] = "held"
    late = df["_late"].astype(bool) if len(df) else pd.Series(False, index=df.index)

    # Quarantine rows: one per record, with every rule it broke.
    q_rows = []
    for i in df.index[dest.isin(["blocking", "quarantine", "missing_owner", "held"])]:
        vs = by_row.get(i, [])
        day = day_of[i]
        if dest[i] == "held":
            rule, rules, qcols, action = "held", ["held"], [], BLOCK_PUBLISH
            reason = f"held: {e} for {day} is not published because rows of that day are out of range"
            status = "held"
        else:
            act = action_of(vs)
            main = [v for v in vs if v.action == act]
            rule, rules = rule_kind(main[0].rule), sorted({v.rule for v in vs})
            qcols = sorted({v.column for v in vs if v.column})
            reason = "; ".join(v.message for v in vs)
            action, status = act, "open"
        q_rows.append({
            "quarantine_id": quarantine_id(e, df.at[i, "_file"], int(df.at[i, "_line"])), "entity": e,
            "_source": df.at[i, "_source"], "_table": df.at[i, "_table"], "_file": df.at[i, "_file"],
            "_line": int(df.at[i, "_line"]), "_partition": pd.Timestamp(day).date(), "rule": rule, "rules": rules,
            "columns": qcols, "reason": reason, "break_action": action, "contract_version": contract.version,
            "payload": _payload(df, i, cols), "status": status, "quarantined_at": now, "run_id": run_id,
            "_dest": "missing_owner" if dest[i] == "missing_owner" else e})

    # Records with repair state: merge this run's outcome with their rows instead of writing fresh ones.
    state_write, state_delete = [], set()
    if state:
        qids = [quarantine_id(e, f, int(ln)) for f, ln in zip(df["_file"], df["_line"])]
        fates = {q: dest[i] for q, i in zip(qids, df.index)}
        new_by_id = {r["quarantine_id"]: r for r in q_rows}
        state_write, state_delete = merge_state(state, fates, new_by_id, run_id=run_id, now=now)
        q_rows = [{**dict.fromkeys(REPAIR_COLUMN_NAMES), **r} for r in q_rows
                  if r["quarantine_id"] not in state_delete]

    reject_rows = [(df.at[i, "_source"], df.at[i, "_table"], df.at[i, "_file"], int(df.at[i, "_line"]), day_of[i],
                    "clean", "unique",
                    f"duplicate of {df.at[i, '_dup_of']} on key ({', '.join(contract.key)}) = "
                    f"({', '.join(str(df.at[i, k]) for k in contract.key)})",
                    _payload(df, i, cols), now) for i in dup_rows]

    clean_mask = dest == "clean"
    clean_df = df.loc[clean_mask, cols + list(LINEAGE)].copy()
    clean_df["_late"] = late[clean_mask].astype(bool)
    clean_df["_contract_version"] = contract.version
    clean_df["_published_at"] = now

    reports = {d: CleanReport(entity=e, day=d, blocked=d in blocked_days) for d in days}
    for d, group in dest.groupby(day_of) if len(df) else []:
        rep = reports[d]
        rep.candidates = len(group)
        rep.clean = int((group == "clean").sum())
        rep.quarantined = int(group.isin(["blocking", "quarantine"]).sum())
        rep.missing_owner = int((group == "missing_owner").sum())
        rep.held = int((group == "held").sum())
        rep.rejected = int((group == "duplicate").sum())
        rep.late = int((late[group.index] & (group == "clean")).sum())
    published = [d for d in days if d not in blocked_days]
    if staged and published:  # the unflagged rows: published as they are
        for d, n, n_late in con.execute(
                f"SELECT strftime(_partition, '%Y-%m-%d'), count(*), count(*) FILTER (WHERE _late) FROM {_CANDIDATES} "
                f"WHERE NOT _flag AND _partition IN {_days_sql(published)} GROUP BY 1").fetchall():
            reports[d].candidates += n
            reports[d].clean += n
            reports[d].late += n_late
    for v in violations:  # counts and samples per rule kind, for asset-check metadata and the CLI
        rep = reports[day_of[v.row]]
        kind = rule_kind(v.rule)
        rep.counts[kind] = rep.counts.get(kind, 0) + 1
        if v.action == WARN:
            rep.warnings[v.rule] = rep.warnings.get(v.rule, 0) + 1
        sample = rep.samples.setdefault(kind, [])
        if len(sample) < SAMPLE_SIZE:
            sample.append({"file": df.at[v.row, "_file"], "line": int(df.at[v.row, "_line"]), "column": v.column,
                           "value": None if v.value is None else str(v.value), "rule": v.rule, "reason": v.message})
    for i in dup_rows:
        rep = reports[day_of[i]]
        rep.counts["unique"] = rep.counts.get("unique", 0) + 1
        sample = rep.samples.setdefault("unique", [])
        if len(sample) < SAMPLE_SIZE:
            sample.append({"file": df.at[i, "_file"], "line": int(df.at[i, "_line"]),
                           "column": ",".join(contract.key), "rule": "unique",
                           "reason": f"duplicate key, first seen at {df.at[i, '_dup_of']}"})
    for r in state_write:
        if r["status"] == "applied" and state[r["quarantine_id"]]["status"] != "applied":
            d = str(r["_partition"])[:10]
            if d in reports:
                reports[d].applied += 1

    tables = [(t.source, t.name) for t in spec.tables_for_entity(e)]
    all_days = _days_sql(days)
    con.execute("BEGIN TRANSACTION")
    try:
        for s_, t_ in tables:
            con.execute(f"DELETE FROM raw.rejects WHERE stage = 'clean' AND _source = ? AND _table = ? "
                        f"AND _partition IN {all_days}", [s_, t_])
        con.execute(f"DELETE FROM quarantine.{e} WHERE _partition IN {all_days} AND status IN ('open', 'held')")
        con.execute(f"DELETE FROM quarantine.missing_owner WHERE entity = ? AND _partition IN {all_days} "
                    f"AND status IN ('open', 'held')", [e])
        if state_delete:
            for target in (e, MISSING_OWNER_TABLE):
                con.execute(f"DELETE FROM quarantine.{target} WHERE _partition IN {all_days} "
                            f"AND quarantine_id IN {sql_list(sorted(state_delete))}")
        if reject_rows:
            con.executemany("INSERT INTO raw.rejects (_source, _table, _file, _line, _partition, stage, rule, reason, "
                            "raw_text, _ingested_at) VALUES (?, ?, ?, ?, ?::DATE, ?, ?, ?, ?, ?)", reject_rows)
        if published:
            con.execute(f"DELETE FROM clean.{e} WHERE _partition IN {_days_sql(published)}")
            if staged:  # the unflagged rows, straight from the temp table
                names = ", ".join(quote_ident(c) for c in (*cols, *LINEAGE))
                con.execute(f"INSERT INTO clean.{e} ({names}, _late, _contract_version, _published_at) "
                            f"SELECT {names}, _late, ?, ? FROM {_CANDIDATES} "
                            f"WHERE NOT _flag AND _partition IN {_days_sql(published)}", [contract.version, now])
            if len(clean_df):
                con.register("_clean_df", clean_df)
                names = ", ".join(quote_ident(c) for c in clean_df.columns)
                con.execute(f"INSERT INTO clean.{e} ({names}) SELECT {names} FROM _clean_df")
                con.unregister("_clean_df")
        if q_rows or state_write:
            qdf = pd.DataFrame(q_rows + state_write)
            for target in ("missing_owner", e):
                part = qdf[qdf["_dest"] == target].drop(columns=["_dest"])
                if len(part):
                    con.register("_q_df", part)
                    names = ", ".join(part.columns)
                    con.execute(f"INSERT INTO quarantine.{target} ({names}) SELECT {names} FROM _q_df")
                    con.unregister("_q_df")
        # These days' contributions to the entity's grouped incidents are replaced by this run's findings; an
        # incident no day feeds any more resolves itself (gtm_pipeline.incidents).
        per_day = record_contract_findings(con, entity=e, owner=contract.owner, version=contract.version,
                                           days=days, findings=_findings(df, day_of, violations, reports),
                                           run_id=run_id, now=now)
        for d, ids in per_day.items():
            if d in reports:
                reports[d].incidents.extend(sorted(set(ids)))
        cutoffs = clean_day_cutoffs(con, spec, e, days)
        if published:
            for d in published:
                record_publication(con, asset_key=f"clean/{e}", partition_key=d, row_count=reports[d].clean,
                                   version=contract.version, run_id=run_id, published_at=now,
                                   data_time=cutoffs.get(d))
        record_partitions(con, f"clean/{e}", [(d, BLOCKED if d in blocked_days else PUBLISHED, cutoffs.get(d))
                                              for d in days], run_id=run_id, now=now)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.{_CANDIDATES}")
    return [reports[d] for d in days]


_CANDIDATES = "_clean_candidates"


def _stage_candidates(con, spec: LandingSpec, contract: EntityContract, days: list[str], state: dict) -> bool:
    """Create the temp table of typed candidates with ``_flag`` (may break a rule, duplicate, or repair state) and
    ``_late``; False when the entity has no source table yet."""
    con.execute(f"DROP TABLE IF EXISTS temp.{_CANDIDATES}")
    sql = _typed_sql(con, spec, contract, days)
    if sql is None:
        return False
    con.execute(f"CREATE TEMP TABLE {_CANDIDATES} AS SELECT *, ({suspect_sql(contract)} OR _dup_of IS NOT NULL) "
                f"AS _flag, {late_sql(contract)} AS _late FROM ({sql})")
    if state:  # records with repair state are merged in pandas (merge_state needs their fate)
        con.execute(f"UPDATE {_CANDIDATES} SET _flag = TRUE FROM (SELECT unnest(?::VARCHAR[]) AS f, "
                    f"unnest(?::BIGINT[]) AS l) s WHERE _file = s.f AND _line = s.l",
                    [[r["_file"] for r in state.values()], [int(r["_line"]) for r in state.values()]])
    return True


def _flagged_frame(con, contract: EntityContract, staged: bool, blocked_days: set[str]) -> pd.DataFrame:
    """Flagged candidates (and every candidate of ``blocked_days``) in (day, file, line) order, indexed 0..n-1."""
    cols = list(contract.columns)
    if not staged:
        empty = {c: pd.Series(dtype="object") for c in cols}
        return pd.DataFrame({**empty, **{f"__raw_{c}": pd.Series(dtype="object") for c in cols},
                             **{k: pd.Series(dtype="object") for k in (*LINEAGE, "_dup_of")},
                             "_late": pd.Series(dtype="bool")})
    where = "_flag" + (f" OR _partition IN {_days_sql(sorted(blocked_days))}" if blocked_days else "")
    return con.execute(f"SELECT * EXCLUDE (_flag) FROM {_CANDIDATES} WHERE {where} "
                       f"ORDER BY _partition, _file, _line").df().reset_index(drop=True)


def _findings(df: pd.DataFrame, day_of: pd.Series, violations: list[Violation],
              reports: dict[str, CleanReport]) -> list[Finding]:
    """One finding per (day, break action, rule) from the violations that quarantine a row or block its day
    (spec §3); missing owners, duplicates and warnings open no incident (they have their own queues)."""
    out: dict[tuple[str, str, str], Finding] = {}
    rows: dict[tuple[str, str, str], set[int]] = {}
    col_rows: dict[tuple[str, str, str, str], set[int]] = {}
    for v in violations:
        if v.action not in (QUARANTINE, BLOCK_PUBLISH):
            continue
        kind = BLOCK_KIND if v.action == BLOCK_PUBLISH else QUARANTINE_KIND
        day = day_of[v.row]
        k = (day, kind, v.rule)
        f = out.get(k)
        if f is None:
            f = out[k] = Finding(kind=kind, rule=v.rule, partition=day,
                                 held=reports[day].held if kind == BLOCK_KIND else 0)
        rows.setdefault(k, set()).add(v.row)
        if v.column:
            col_rows.setdefault((*k, v.column), set()).add(v.row)
        if len(f.samples) < SAMPLE_SIZE:
            f.samples.append({"file": df.at[v.row, "_file"], "line": int(df.at[v.row, "_line"]), "column": v.column,
                              "value": None if v.value is None else str(v.value), "reason": v.message})
    for k, f in out.items():
        f.rows = len(rows[k])
    for (day, kind, rule, col), rs in col_rows.items():
        out[(day, kind, rule)].columns[col] = len(rs)
    return list(out.values())
