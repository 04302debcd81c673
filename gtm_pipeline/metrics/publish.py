"""Write, audit, publish: how a metric reaches ``metrics.<name>`` (docs/design.md §4).

1. **Write** the candidate ``metrics._candidate_<name>``: the computation's base, the contract's parameters as
   columns (so every row shows the assumptions it was computed with), the formula targets and ``_published_at``.
2. **Audit** it: every qa_test of the contract (an assert that is NULL fails, as everywhere in contracts), plus two
   automatic checks: ``grain_unique`` (one row per grain value: a fan-out in a join shows here) and
   ``denominator_positive`` for every divisor of the formula -- a zero or negative denominator is reported as
   itself, not hidden in a huge quotient (the spec's ``CAC / max(Monthly_CM, 1e-6)`` turns a zero CM into a
   payback of 10^9 months).
3. **Publish** only if no ``error`` test failed: in one transaction the published table is replaced by the
   candidate (or, for a day-partitioned fact, the window's days are replaced), the publication is recorded in
   ``ops.publications`` with its **data time** -- the oldest data time among the inputs it read, capped at the end
   of the window for a day-partitioned fact, and the blocked input partitions that hold it back, if any (what
   freshness measures; `gtm_pipeline.datatime`) -- and open incidents of the metric are resolved. If the audit
   fails, nothing readers see changes: the previous version stays, the candidate is kept for inspection, an
   incident opens (SEV2; one per metric while it stays open) and the owner is paged or notified once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import duckdb
import pandas as pd

from gtm_pipeline.datatime import DataTime, cap, end_of_day, inputs_data_time, published_data_time
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.expressions import assertion_sql
from gtm_pipeline.metrics.contract import CHECK_DENOMINATOR, CHECK_GRAIN_UNIQUE, MetricContract
from gtm_pipeline.metrics.registry import BuildContext, Computation
from gtm_pipeline.warehouse import (
    ensure_base,
    notify_owner,
    one_row,
    open_incident,
    record_publication,
    resolve_incidents,
    scalar,
    table_exists,
    transaction,
    utcnow,
)

SAMPLES = 5
PREVIEW_ROWS = 20
INCIDENT_SEVERITY = "SEV2"


@dataclass
class TestResult:
    name: str
    passed: bool
    severity: str               # "error" blocks publication, "warn" does not
    failed_rows: int
    total_rows: int
    text: str                   # the assert (or what the automatic check tests)
    samples: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == "error"


@dataclass
class PublishOutcome:
    name: str
    published: bool
    published_at: datetime | None      # time of the version readers see now (new or previous); None if never
    candidate_rows: int
    published_rows: int | None         # rows readers see now
    tests: list[TestResult]
    candidate_at: datetime
    window: tuple[date, date] | None = None
    data_time: DataTime = field(default_factory=lambda: DataTime(None))  # of the version readers see now
    incident_id: str | None = None
    notified: bool = False
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    columns: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failures(self) -> list[TestResult]:
        return [t for t in self.tests if t.blocks]


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def asset_key_text(name: str) -> str:
    return f"metrics/{name}"


def candidate_table(name: str) -> str:
    return f"metrics._candidate_{name}"


def incident_key(name: str) -> str:
    return f"metric:{name}:audit"


def _check_inputs(con: duckdb.DuckDBPyConnection, contract: MetricContract, comp: Computation) -> None:
    for inp in comp.reads:
        schema, table = comp.input_table(inp).split(".", 1)
        if not table_exists(con, schema, table):
            hint = (f"materialize clean/{table} first (gtm-pipeline run --from <day>)" if schema == "clean"
                    else f"materialize metrics/{table} first; if it never published, its audit failed: see "
                         f"ops.incidents")
            raise GtmPipelineError(f"metrics/{contract.name}: input table {schema}.{table} does not exist; {hint}")


def _candidate_sql(contract: MetricContract, base_sql: str, now: datetime) -> str:
    params = ", ".join(f"{p.sql()} AS {q(p.name)}" for p in contract.parameters)
    sql = f"SELECT _b.*{', ' + params if params else ''} FROM ({base_sql}) _b"
    for i, f in enumerate(contract.formulas):
        sql = f"SELECT _f{i}.*, CAST({f.expression.to_sql()} AS DOUBLE) AS {q(f.target)} FROM ({sql}) _f{i}"
    return f"SELECT _c.*, TIMESTAMP '{now.isoformat(sep=' ')}' AS _published_at FROM ({sql}) _c"


def write_candidate(con: duckdb.DuckDBPyConnection, contract: MetricContract, comp: Computation,
                    ctx: BuildContext) -> str:
    """Build ``metrics._candidate_<name>``; returns its name. Checks the columns against the declaration."""
    base = comp.build(con, ctx)
    view = f"_base_{comp.name}"
    if isinstance(base, pd.DataFrame):
        # DuckDB refuses register() while an earlier statement's result is not fully fetched (a fetchone() left it
        # open); a new statement, fetched to the end, closes it.
        con.execute("SELECT 1").fetchall()
        con.register(view, base)
        base_sql = f"SELECT * FROM {view}"
    else:
        base_sql = base
    cand = candidate_table(comp.name)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {cand} AS {_candidate_sql(contract, base_sql, ctx.now)}")
    except duckdb.Error as e:
        raise GtmPipelineError(f"metrics/{comp.name}: computing the candidate failed: {e}") from e
    finally:
        if isinstance(base, pd.DataFrame):
            con.unregister(view)
    got = [r[0] for r in con.execute(f"DESCRIBE {cand}").fetchall()]
    expected = list(comp.columns) + [p.name for p in contract.parameters] + list(contract.targets) + ["_published_at"]
    if got != expected:
        raise GtmPipelineError(f"metrics/{comp.name}: the computation produced columns {got[:len(got) - 1]} but "
                               f"declares {expected[:len(expected) - 1]}; fix columns= in gtm_pipeline/metrics")
    return cand


def _samples(con, sql: str) -> list[dict]:
    df = con.execute(sql).df()
    return json.loads(df.to_json(orient="records", date_format="iso", default_handler=str))


def audit(con: duckdb.DuckDBPyConnection, contract: MetricContract, cand: str) -> list[TestResult]:
    total = int(scalar(con, f"SELECT count(*) FROM {cand}"))
    grain = ", ".join(q(g) for g in contract.grain)
    results: list[TestResult] = []
    for t in contract.qa_tests:
        cond = assertion_sql(t.expression)
        failed = int(scalar(con, f"SELECT count(*) FROM {cand} WHERE NOT {cond}"))
        shown = ", ".join(dict.fromkeys([q(g) for g in contract.grain] + [q(n) for n in sorted(t.expression.names)]))
        samples = _samples(con, f"SELECT {shown} FROM {cand} WHERE NOT {cond} ORDER BY {grain} LIMIT {SAMPLES}") \
            if failed else []
        results.append(TestResult(t.name, failed == 0, t.severity, failed, total, t.text, samples))

    dup = one_row(con, f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT {grain}, count(*) AS n FROM {cand} "
                       f"GROUP BY ALL HAVING count(*) > 1)")
    samples = _samples(con, f"SELECT {grain}, count(*) AS rows FROM {cand} GROUP BY ALL HAVING count(*) > 1 "
                            f"ORDER BY rows DESC LIMIT {SAMPLES}") if dup[0] else []
    results.append(TestResult(CHECK_GRAIN_UNIQUE, dup[0] == 0, "error", int(dup[1]), total,
                              f"one row per ({', '.join(contract.grain)})", samples,
                              {"duplicated_keys": int(dup[0])}))

    dens = contract.denominators()
    if dens:
        per: dict[str, dict] = {}
        bad_conds = []
        for d in dens:
            neg, zero, missing = one_row(
                con, f"SELECT count(*) FILTER (WHERE ({d.sql}) < 0), count(*) FILTER (WHERE ({d.sql}) = 0), "
                     f"count(*) FILTER (WHERE ({d.sql}) IS NULL) FROM {cand}")
            per[d.text] = {"negative": int(neg), "zero": int(zero), "missing": int(missing), "guarded": d.guarded}
            bad_conds.append(f"NOT COALESCE(({d.sql}) > 0, FALSE)")
        negative = sum(v["negative"] for v in per.values())
        zero_or_missing = sum(v["zero"] + v["missing"] for v in per.values())
        allowed = contract.null_policy == "allow"
        any_bad = " OR ".join(bad_conds)
        failed_rows = int(scalar(con, f"SELECT count(*) FROM {cand} WHERE {any_bad}"))
        passed = negative == 0 and (zero_or_missing == 0 or allowed)
        shown = ", ".join([q(g) for g in contract.grain] + [f"{d.sql} AS {q(d.text)}" for d in dens])
        samples = _samples(con, f"SELECT {shown} FROM {cand} WHERE {any_bad} ORDER BY {grain} LIMIT {SAMPLES}") \
            if failed_rows else []
        text = ("denominator > 0 for " + ", ".join(d.text for d in dens)
                + (" (zero or missing allowed by null_policy: the metric is NULL there)" if allowed else ""))
        results.append(TestResult(CHECK_DENOMINATOR, passed, "error", failed_rows, total, text, samples,
                                  {"by_denominator": per, "null_policy": contract.null_policy}))
    return results


def _visible(con, name: str) -> tuple[datetime | None, int | None]:
    at = con.execute("SELECT max(published_at) FROM ops.publications WHERE asset_key = ?",
                     [asset_key_text(name)]).fetchone()[0]
    rows = con.execute(f"SELECT count(*) FROM metrics.{q(name)}").fetchone()[0] \
        if table_exists(con, "metrics", name) else None
    return at, rows


def input_data_time(con, comp: Computation, window: tuple[date, date] | None) -> DataTime:
    """How far the inputs this computation reads are complete (a day-partitioned fact: no further than its window)."""
    dt = inputs_data_time(con, [comp.input_table(i) for i in comp.reads])
    return cap(dt, end_of_day(window[1])) if window is not None else dt


def _preview(con, contract: MetricContract, comp: Computation, cand: str) -> pd.DataFrame:
    cols = list(dict.fromkeys(list(contract.grain) + list(contract.targets)))
    order = comp.order_by or ", ".join(q(g) for g in contract.grain)
    return con.execute(f"SELECT {', '.join(q(c) for c in cols)} FROM {cand} ORDER BY {order} "
                       f"LIMIT {PREVIEW_ROWS}").df()


def _publish(con, contract: MetricContract, comp: Computation, cand: str, ctx: BuildContext, run_id: str | None,
             rows: int, data_time: DataTime) -> tuple[date, date] | None:
    name = comp.name
    window = ctx.window
    with transaction(con):
        if comp.partition_column is None:   # not comp.partitioned
            con.execute(f"DROP TABLE IF EXISTS metrics.{q(name)}")
            con.execute(f"ALTER TABLE {cand} RENAME TO {q(name)}")
            record_publication(con, asset_key=asset_key_text(name), partition_key=None, row_count=rows,
                               version=contract.version, run_id=run_id, published_at=ctx.now,
                               data_time=data_time.at, blocked_inputs=list(data_time.blocking))
        else:
            col = q(comp.partition_column)
            if window is None:
                lo, hi = con.execute(f"SELECT min({col}), max({col}) FROM {cand}").fetchone()
                window = (lo, hi) if lo is not None else None
            if window is not None:
                con.execute(f"CREATE TABLE IF NOT EXISTS metrics.{q(name)} AS SELECT * FROM {cand} LIMIT 0")
                have = con.execute(f"DESCRIBE metrics.{q(name)}").fetchall()
                want = con.execute(f"DESCRIBE {cand}").fetchall()
                if [(r[0], r[1]) for r in have] != [(r[0], r[1]) for r in want]:
                    raise GtmPipelineError(
                        f"metrics/{name}: the published table's columns differ from the new candidate's (the "
                        f"computation or contract changed); drop metrics.{name} and backfill every partition")
                outside = con.execute(f"SELECT count(*) FROM {cand} WHERE {col} NOT BETWEEN ? AND ?",
                                      list(window)).fetchone()[0]
                if outside:
                    raise GtmPipelineError(f"metrics/{name}: {outside} candidate rows fall outside the window "
                                           f"{window[0]}..{window[1]}; the computation must respect ctx.window")
                con.execute(f"DELETE FROM metrics.{q(name)} WHERE {col} BETWEEN ? AND ?", list(window))
                con.execute(f"INSERT INTO metrics.{q(name)} SELECT * FROM {cand}")
                counts = dict(con.execute(f"SELECT {col}, count(*) FROM {cand} GROUP BY 1").fetchall())
                day = window[0]
                while day <= window[1]:
                    day_time = cap(data_time, end_of_day(day))
                    record_publication(con, asset_key=asset_key_text(name), partition_key=day.isoformat(),
                                       row_count=int(counts.get(day, 0)), version=contract.version, run_id=run_id,
                                       published_at=ctx.now, data_time=day_time.at,
                                       blocked_inputs=list(day_time.blocking))
                    day += timedelta(days=1)
            con.execute(f"DROP TABLE {cand}")
        resolve_incidents(con, incident_key(name), resolved_at=ctx.now,
                          evidence=f"the audit passed: {rows} row(s) of metrics/{name}@{contract.version} "
                                   f"published by {f'run {run_id}' if run_id else 'a call outside Dagster'}")
    return window


def _block(con, contract: MetricContract, outcome: PublishOutcome, cand: str) -> None:
    failures = outcome.failures
    what = "; ".join(f"{t.name} failed on {t.failed_rows} of {t.total_rows} rows" for t in failures)
    title = f"{contract.metric} (metrics/{contract.name}) not published: {what}"
    details = {t.name: {"assert": t.text, "failed_rows": t.failed_rows, "total_rows": t.total_rows,
                        "samples": t.samples, **t.details} for t in failures}
    with transaction(con):
        iid, new = open_incident(con, severity=INCIDENT_SEVERITY, origin="metric",
                                 asset_key=asset_key_text(contract.name), rule=",".join(t.name for t in failures),
                                 title=title, details=details, owner=contract.owner,
                                 dedup_key=incident_key(contract.name))
        if new:
            lines = []
            for t in failures:
                lines.append(f"- {t.name}: {t.text} -- {t.failed_rows}/{t.total_rows} rows fail")
                lines.extend(f"    {json.dumps(s, default=str)}" for s in t.samples[:3])
            kept = (f"The version published at {outcome.published_at.isoformat()} stays visible."
                    if outcome.published_at else "Nothing was published before, so readers see no table yet.")
            body = (f"{title}\n\n" + "\n".join(lines) + f"\n\n{kept} The rejected candidate is in {cand}. "
                    f"Contract: {contract.where}. Fix the data or the contract, then re-materialize "
                    f"metrics/{contract.name} (or run gtm-pipeline refresh); the incident resolves on the next "
                    f"successful publish.")
            notify_owner(con, owner=contract.owner, subject=title, body=body,
                         asset_key=asset_key_text(contract.name), incident_id=iid,
                         channel="page" if contract.pages else "owner")
    outcome.incident_id, outcome.notified = iid, new


def run_metric(con: duckdb.DuckDBPyConnection, contract: MetricContract, comp: Computation, *,
               run_id: str | None = None, now: datetime | None = None,
               window: tuple[date, date] | None = None) -> PublishOutcome:
    """Write, audit and (if the audit passes) publish one metric table. Idempotent for the same inputs."""
    now = now or utcnow()
    ensure_base(con)
    _check_inputs(con, contract, comp)
    ctx = BuildContext(name=comp.name, reads=comp.reads, now=now, window=window if comp.partitioned else None,
                       contracts_dir=contract.path.parent.parent)
    cand = write_candidate(con, contract, comp, ctx)
    rows = int(scalar(con, f"SELECT count(*) FROM {cand}"))
    tests = audit(con, contract, cand)
    preview = _preview(con, contract, comp, cand)
    columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {cand}").fetchall()]
    blocked = any(t.blocks for t in tests)
    if not blocked:
        data_time = input_data_time(con, comp, ctx.window)
        window = _publish(con, contract, comp, cand, ctx, run_id, rows, data_time)
        at, visible = _visible(con, comp.name)
        return PublishOutcome(comp.name, True, now, rows, visible, tests, now, window, preview=preview,
                              columns=columns, data_time=published_data_time(con, asset_key_text(comp.name)))
    at, visible = _visible(con, comp.name)
    outcome = PublishOutcome(comp.name, False, at, rows, visible, tests, now, window, preview=preview,
                             columns=columns, data_time=published_data_time(con, asset_key_text(comp.name)))
    _block(con, contract, outcome, cand)
    return outcome
