"""End to end (issue 6): opportunities without an owner on one day -> the pipeline quarantines them -> repaired
through the routing rules -> released -> the sensor's backfill re-cleans only that day and refreshes downstream ->
clean and the metrics change by exactly the repaired rows, nothing duplicated or lost, and repeating changes nothing.
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.orchestration.runner import run_job
from gtm_pipeline.quarantine import backfill as backfill
from gtm_pipeline.quarantine import backfill_now as backfill_now
from gtm_pipeline.quarantine import release as release
from gtm_pipeline.quarantine import repair as repair
from gtm_pipeline.quarantine import rows as qrows
from gtm_pipeline.quarantine.snapshot import connect_reader
from gtm_pipeline.routing import engine as routing

START = date(2026, 8, 1)
DAYS = 10
RUN_DAYS = ("2026-08-09", "2026-08-10")   # day 1 (owners) is run too; days 2-8 are not needed
BAD_DAY = "2026-08-09"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(autouse=True)
def live_dagster_context():
    """Resolve definitions inside a live instance context: a test elsewhere that leaves Dagster's definitions-state
    context pointing at a disposed instance would otherwise break `Definitions.get_repository_def()` here."""
    with dg.DagsterInstance.ephemeral():
        yield


def drop_owners(path, n: int) -> list[tuple[str, float]]:
    """Blank the owner_id of the first ``n`` opportunities of a CRM export; returns their (id, amount)."""
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) >= n + 1, f"{path} has too few opportunities for the test"
    for r in rows[:n]:
        r["owner_id"] = ""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(out.getvalue())
    return [(r["opportunity_id"], float(r["amount"])) for r in rows[:n]]


def q(db, sql, params=()):
    with connect_reader(db) as con:
        return con.execute(sql, list(params)).fetchall()


def execute(defs, instance, req: dg.RunRequest, must_succeed: bool = True):
    """Run a sensor's request in-process, as the daemon would launch it."""
    job = defs.resolve_job_def(req.job_name)
    res = job.execute_in_process(instance=instance, partition_key=req.partition_key,
                                 asset_selection=req.asset_selection, run_config=QUIET, raise_on_error=False,
                                 tags={**req.tags, "dagster/run_key": req.run_key})
    assert res.success or not must_succeed
    return res


# What the refresh must rebuild for this test's claims. (Other downstream assets, e.g. decision nodes that need
# metrics a 10-day sample cannot publish, may fail on this small data; the sensor then retries the refresh.)
def ours():
    return {keys.CONSERVATION_KEY, keys.metric_key("fact_pipeline"), keys.metric_key("fact_bookings")}


@pytest.mark.slow
def test_missing_owners_repaired_by_routing_backfill_only_that_day(env_settings, monkeypatch):
    from gtm_pipeline.definitions import build_definitions
    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate

    s = env_settings
    generate(s.landing_dir, GenerateConfig(days=DAYS, seed=11, start=START, scale=0.3, defects=DefectRates.none()),
             progress=False)
    injected = drop_owners(s.landing_dir / "crm" / BAD_DAY / "opportunities.csv", 2)
    ids = tuple(i for i, _ in injected)
    defs = build_definitions()
    instance = dg.DagsterInstance.ephemeral()
    db = s.duckdb_path

    # 1. The pipeline as usual: ingest + clean + contracts for the days, then the ledger and the metric layer.
    for rng in ((START.isoformat(), START.isoformat()), RUN_DAYS):
        assert run_job(keys.DAILY_JOB, partition_range=rng, instance=instance, defs=defs, run_config=QUIET).success
    run_job(keys.REFRESH_JOB, instance=instance, defs=defs, run_config=QUIET)
    assert all(instance.get_latest_materialization_event(k) for k in ours())
    held = q(db, "SELECT _partition::VARCHAR, status, json_extract_string(payload, '$.opportunity_id') "
                 "FROM quarantine.missing_owner ORDER BY 3")
    assert held == [(BAD_DAY, "open", i) for i in sorted(ids)]
    clean_before = q(db, "SELECT count(*), sum(amount) FROM clean.opportunity")[0]
    pipeline_before = set(q(db, "SELECT snapshot_date::VARCHAR, opportunity_id, stage, amount, owner_id "
                                "FROM metrics.fact_pipeline"))
    bookings_before = set(q(db, "SELECT opportunity_id, amount FROM metrics.fact_bookings"))
    assert not {r[1] for r in pipeline_before} & set(ids)
    ingest_runs_before = {k: instance.get_latest_materialization_event(k).run_id
                          for k in (keys.raw_key("crm"), keys.raw_key("web"))}

    # 2. Repair through the routing rules and release (what `quarantine repair --route` / `release` do).
    contracts = load_entity_contracts(s.contracts_dir)
    # Through the warehouse resource: its connection settings match those of any connection an in-process run left
    # open (DuckDB refuses two configurations of one file in one process).
    with DuckDBResource(database=str(db)).get_connection() as con:
        qrows.ensure_repair_tables(con, contracts)
        rows = qrows.select_rows(con, contracts, qrows.Filters(table="missing_owner", status="open"))
        fixed = repair.repair_by_route(con, contracts, rows, routing.current_rule_set(s.contracts_dir), actor="e2e")
        assert fixed.count("repaired") == 2 and not fixed.unrouted
        rel = release.release(con, contracts, qrows.select_rows(con, contracts, qrows.Filters(status="repaired")),
                             actor="e2e")
    assert len(rel.released) == 2 and rel.days == {BAD_DAY: ["opportunity"]}

    # 3. The sensor: one run for the affected day, of the opportunity's clean assets only.
    sensor = defs.resolve_sensor_def(keys.REPAIR_BACKFILL_SENSOR)
    resources = {"warehouse": DuckDBResource(database=str(db))}

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                                            resources=resources))

    first = tick(None)
    [day_req] = first.run_requests
    assert day_req.partition_key == BAD_DAY
    assert set(day_req.asset_selection) == {keys.clean_key("opportunity"), keys.quarantine_key("opportunity"),
                                            keys.MISSING_OWNER_KEY}
    day_run = execute(defs, instance, day_req)
    mats = day_run.get_asset_materialization_events()
    assert {m.partition for m in mats} == {BAD_DAY}
    assert {m.asset_key for m in mats} == set(day_req.asset_selection)

    # 3b. The stage events of the two opportunities waited as held for their parent: with the parents in clean now,
    # the next tick re-cleans the days of those events, of opportunity_stage only, once -- and they are published.
    waiting = q(db, "SELECT count(*) FROM quarantine.opportunity_stage WHERE break_action = 'hold_for_parent'")[0][0]
    assert waiting > 0
    children = tick(first.cursor)
    assert children.run_requests
    for r in children.run_requests:
        assert set(r.asset_selection) == {keys.clean_key("opportunity_stage"), keys.quarantine_key("opportunity_stage")}
        execute(defs, instance, r)
    assert q(db, "SELECT count(*) FROM quarantine.opportunity_stage WHERE break_action = 'hold_for_parent'") == [(0,)]
    assert q(db, "SELECT count(DISTINCT opportunity_id) FROM clean.opportunity_stage WHERE opportunity_id IN "
                 f"{tuple(ids)}") == [(2,)]
    first = children   # the cursor the next ticks continue from

    # 4. The re-cleaned day is new clean data, which the automation sensor refreshes after on its own: the repair
    # leaves it the first chance. No automation sensor runs here, so after the grace the repair asks for its own
    # refresh: daily metrics from the affected day on, then everything unpartitioned.
    from gtm_pipeline.clock import utcnow
    from gtm_pipeline.quarantine.sensors import refresh_grace

    t1 = utcnow().replace(microsecond=0)
    monkeypatch.setenv("GTM_PIPELINE_NOW", t1.isoformat())
    wait = tick(first.cursor)
    assert wait.run_requests == [] and "leaving the downstream refresh to the automation sensor" in wait.skip_message
    monkeypatch.setenv("GTM_PIPELINE_NOW", (t1 + timedelta(seconds=refresh_grace() + 1)).isoformat())
    second = tick(wait.cursor)
    [refresh_req] = second.run_requests
    assert refresh_req.partition_key is None
    sel = set(refresh_req.asset_selection)
    assert keys.CONSERVATION_KEY in sel and keys.metric_key("fact_pipeline") in sel
    assert not any(k.path[0] in (keys.INGEST, keys.CLEAN) for k in sel)
    graph = defs.resolve_asset_graph()
    daily_metrics = [k for k in sel if graph.get(k).partitions_def is not None]
    if daily_metrics:  # daily-partitioned metrics: from the affected day through the latest day only
        assert refresh_req.tags["dagster/asset_partition_range_start"] == BAD_DAY
        assert refresh_req.tags["dagster/asset_partition_range_end"] == RUN_DAYS[1]
    else:
        assert "dagster/asset_partition_range_start" not in refresh_req.tags
    refresh_run = execute(defs, instance, refresh_req, must_succeed=False)
    assert ours() <= {m.asset_key for m in refresh_run.get_asset_materialization_events()}
    parts = {m.partition for m in refresh_run.get_asset_materialization_events() if m.partition}
    assert parts == ({BAD_DAY, RUN_DAYS[1]} if daily_metrics else set())  # never the whole history
    counts = q(db, "SELECT count(*), sum(amount) FROM clean.opportunity")

    # 5. Nothing runs twice: later ticks (also after a restart without cursor, or with a stale cursor) request no
    # partition run; at most a failed refresh is retried, a bounded number of times, and changes no count.
    cursor = second.cursor
    for _ in range(backfill.MAX_ATTEMPTS):
        again = tick(cursor)
        cursor = again.cursor or cursor
        if not again.run_requests:
            break
        for r in again.run_requests:
            assert r.partition_key is None and not any(k.path[0] == keys.CLEAN for k in r.asset_selection)
            execute(defs, instance, r, must_succeed=False)
    for c in (cursor, None, first.cursor):
        idle = tick(c)
        assert idle.run_requests == [] and idle.skip_message
    assert q(db, "SELECT count(*), sum(amount) FROM clean.opportunity") == counts
    assert backfill_now.run_backfill_in_process(db, definitions=defs, run=run_job, instance=instance,
                                             run_config=QUIET).runs == []
    assert {k: instance.get_latest_materialization_event(k).run_id for k in ingest_runs_before} == ingest_runs_before

    # 6. Exactly once: clean grew by exactly the repaired rows, each once, with the routed owners.
    amount = sum(a for _, a in injected)
    assert q(db, "SELECT count(*), sum(amount) FROM clean.opportunity")[0] == (clean_before[0] + 2,
                                                                               pytest.approx(clean_before[1] + amount))
    assert q(db, "SELECT count(*) - count(DISTINCT opportunity_id) FROM clean.opportunity")[0][0] == 0
    owners = q(db, "SELECT opportunity_id, owner_id FROM clean.opportunity WHERE opportunity_id IN (?, ?)", ids)
    assert len(owners) == 2 and all(o for _, o in owners)
    assert q(db, "SELECT DISTINCT status, applied_run_id FROM quarantine.missing_owner") == [
        ("applied", day_run.run_id)]
    ledger = q(db, "SELECT sum(lost), sum(in_two_places), sum(quarantined) FROM ops.conservation "
                   "WHERE \"table\" = 'crm/opportunities'")[0]
    assert ledger == (0, 0, 0)
    # The ledger's identity (gtm_pipeline.quarantine.ledger): rows a blocked day holds back count too.
    assert q(db, "SELECT sum(records) = sum(clean) + sum(superseded) + sum(quarantined) + sum(held) "
                 "+ sum(rejected_clean) + sum(rejected_ingest) FROM ops.conservation")[0][0]

    # 7. The metric layer changed by exactly those rows: new pipeline rows are theirs, every other row unchanged.
    pipeline_after = set(q(db, "SELECT snapshot_date::VARCHAR, opportunity_id, stage, amount, owner_id "
                               "FROM metrics.fact_pipeline"))
    assert pipeline_before <= pipeline_after
    new = pipeline_after - pipeline_before
    assert {r[1] for r in new} == set(ids)
    for oid, amt in injected:
        days = sorted(r[0] for r in new if r[1] == oid)
        assert days[0] == BAD_DAY and all(r[3] == amt for r in new if r[1] == oid)
    bookings_after = set(q(db, "SELECT opportunity_id, amount FROM metrics.fact_bookings"))
    assert bookings_before <= bookings_after and {b[0] for b in bookings_after - bookings_before} <= set(ids)
