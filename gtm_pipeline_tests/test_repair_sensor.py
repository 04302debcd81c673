"""The repair backfill: the tick decision as a plain function, then the sensor through `build_sensor_context`
(targeted run requests, idempotent run keys, and skip reasons when idle, missing or locked)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource
from repair_landing import MISSING_DAY, build_warehouse

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.quarantine import backfill as backfill
from gtm_pipeline.quarantine import release as release
from gtm_pipeline.quarantine import repair as repair
from gtm_pipeline.quarantine import rows as qrows
from gtm_pipeline.quarantine import selection as selection
from gtm_pipeline.quarantine.backfill import FAILED, IN_FLIGHT, SUCCEEDED, decide
from gtm_pipeline.quarantine.snapshot import Applied, Block, Pending, Snapshot
from gtm_pipeline.routing import engine as routing

P = [Pending("q1", "opportunity", "2026-08-02", "REL-a"), Pending("q2", "opportunity", "2026-08-03", "REL-a"),
     Pending("q3", "lead", "2026-08-02", "REL-a")]
T = datetime(2026, 8, 10, 12)


def never(_key):
    return None


def no_refresh(_entities):
    return None


def states(mapping):
    return lambda key: mapping.get(key)


@pytest.fixture(autouse=True)
def live_dagster_context():
    """Resolve definitions inside a live instance context: a test elsewhere that leaves Dagster's definitions-state
    context pointing at a disposed instance would otherwise break `Definitions.get_repository_def()` here."""
    with dg.DagsterInstance.ephemeral():
        yield


# ---- the tick as a plain function --------------------------------------------------------------------------------

def test_new_releases_make_one_batch_with_one_run_per_affected_day():
    d = decide(Snapshot(pending=P), None, never, no_refresh)
    b = backfill.batch_id(["REL-a"])
    assert [(r.day, r.entities, r.run_key) for r in d.requests] == [
        ("2026-08-02", ("lead", "opportunity"), backfill.run_key(b, "2026-08-02")),
        ("2026-08-03", ("opportunity",), backfill.run_key(b, "2026-08-03"))]
    assert d.cursor == {"batches": {b: {"releases": ["REL-a"], "attempt": 0}}}
    # The same releases always give the same keys (a restart cannot invent new runs).
    assert [r.run_key for r in decide(Snapshot(pending=P), None, never, no_refresh).requests] == \
        [r.run_key for r in d.requests]


def test_runs_in_flight_are_not_requested_again_with_or_without_the_cursor():
    first = decide(Snapshot(pending=P), None, never, no_refresh)
    flying = states({r.run_key: IN_FLIGHT for r in first.requests})
    again = decide(Snapshot(pending=P), first.cursor, flying, no_refresh)
    assert again.requests == [] and "waiting for 2 run(s)" in again.skip_reason()
    lost_cursor = decide(Snapshot(pending=P), None, flying, no_refresh)
    assert lost_cursor.requests == []


def test_a_second_release_is_a_second_batch():
    first = decide(Snapshot(pending=P), None, never, no_refresh)
    flying = states({r.run_key: IN_FLIGHT for r in first.requests})
    more = P + [Pending("q4", "opportunity", "2026-08-05", "REL-b")]
    d = decide(Snapshot(pending=more), first.cursor, flying, no_refresh)
    assert [(r.day, r.batch) for r in d.requests] == [("2026-08-05", backfill.batch_id(["REL-b"]))]
    assert len(d.cursor["batches"]) == 2


def test_a_failed_run_is_retried_with_a_new_key_then_the_sensor_says_why():
    cur = decide(Snapshot(pending=P[:1]), None, never, no_refresh).cursor
    b = next(iter(cur["batches"]))
    seen = {}
    for attempt in range(backfill.MAX_ATTEMPTS - 1):
        seen[backfill.run_key(b, "2026-08-02", attempt)] = FAILED
        d = decide(Snapshot(pending=P[:1]), cur, states(seen), no_refresh)
        assert [r.run_key for r in d.requests] == [backfill.run_key(b, "2026-08-02", attempt + 1)]
        cur = d.cursor
    seen[backfill.run_key(b, "2026-08-02", backfill.MAX_ATTEMPTS - 1)] = FAILED
    d = decide(Snapshot(pending=P[:1]), cur, states(seen), no_refresh)
    assert d.requests == [] and "failed 3 times" in d.skip_reason()
    assert "gtm-pipeline quarantine backfill" in d.skip_reason()


def test_rows_a_blocked_day_holds_are_named_with_day_check_and_fix_not_dropped_silently():
    cur = decide(Snapshot(pending=P[:1]), None, never, no_refresh).cursor
    b = next(iter(cur["batches"]))
    # The re-clean ran; the day is blocked, so the released row is held instead of applied.
    held = Snapshot(held=P[:1], blocks={("opportunity", "2026-08-02"): Block("opportunity", "2026-08-02",
                                                                           (("range", 1),))})
    d = decide(held, cur, states({backfill.run_key(b, "2026-08-02"): FAILED}), no_refresh)
    assert d.requests == []  # no retry: re-cleaning a blocked day holds the row again
    assert d.skip_reason() == (
        "1 released row(s) stay held: clean/opportunity 2026-08-02 is blocked by check ranges_in_bounds "
        "(1 row(s) out of contract); see 'gtm-pipeline quarantine list --entity opportunity --rule range --day "
        "2026-08-02'; repair and release those rows and the held rows are taken in with the day")
    # A contract that blocks on another rule names that rule's check; a block whose rows are gone says where to look.
    enum = Block("lead", "2026-08-03", (("enum", 2),)).describe()
    assert "blocked by check enum_integrity (2 row(s) out of contract)" in enum and "--rule enum" in enum
    assert Block("lead", "2026-08-03", ()).describe() == (
        "clean/lead 2026-08-03 is blocked; see 'gtm-pipeline quarantine list --entity lead --day 2026-08-03'")


def test_refresh_follows_once_the_batch_is_in_and_only_once():
    first = decide(Snapshot(pending=P[:1]), None, never, no_refresh)
    applied = Snapshot(applied=[Applied("q1", "opportunity", "2026-08-02", T, "run-1")])
    d = decide(applied, first.cursor, states({first.requests[0].run_key: SUCCEEDED}), no_refresh)
    assert d.cursor == {"batches": {}}
    [req] = d.requests
    assert req.day is None and req.entities == ("opportunity",) and req.since_day == "2026-08-02"
    assert req.run_key == backfill.refresh_key(["q1"]) + "-a0"
    flying = decide(applied, d.cursor, states({req.run_key: IN_FLIGHT}), no_refresh)
    assert flying.requests == [] and "waiting for the downstream refresh" in flying.skip_reason()
    done = decide(applied, d.cursor, states({req.run_key: SUCCEEDED}), lambda _e: backfill._epoch(T) + 60)
    assert done.requests == [] and done.skip_reason() == "no released repairs waiting and nothing to refresh"


def test_a_failed_refresh_is_retried_then_the_sensor_says_why():
    applied = Snapshot(applied=[Applied("q1", "opportunity", "2026-08-02", T, "run-1")])
    base = backfill.refresh_key(["q1"])
    seen = {f"{base}-a0": FAILED}
    assert [r.run_key for r in decide(applied, {}, states(seen), no_refresh).requests] == [f"{base}-a1"]
    seen.update({f"{base}-a{i}": FAILED for i in range(backfill.MAX_ATTEMPTS)})
    d = decide(applied, {}, states(seen), no_refresh)
    assert d.requests == [] and "failed 3 times" in d.skip_reason() and "gtm-pipeline refresh" in d.skip_reason()


def test_no_refresh_while_a_partition_run_is_in_flight():
    first = decide(Snapshot(pending=P[:1]), None, never, no_refresh)
    snap = Snapshot(pending=P[:1], applied=[Applied("q9", "opportunity", "2026-08-01", T, "run-0")])
    d = decide(snap, first.cursor, states({first.requests[0].run_key: IN_FLIGHT}), no_refresh)
    assert d.requests == []


def test_the_refresh_is_left_to_the_automation_sensor_first_and_requested_only_if_none_came():
    """One repair, one refresh: re-cleaned days are new clean data, which the automation sensor refreshes after on
    its own. The repair waits for that run (or any run rebuilding the downstream) for the grace period, and asks for
    its own refresh only if nothing rebuilt the downstream by then."""
    applied = Snapshot(applied=[Applied("q1", "opportunity", "2026-08-02", T, "run-1")])
    base = backfill.refresh_key(["q1"])
    t0 = backfill._epoch(T) + 10
    waiting = decide(applied, {}, never, no_refresh, now=t0, grace=120)
    assert waiting.requests == [] and "leaving the downstream refresh to the automation sensor" in \
        waiting.skip_reason()
    assert waiting.cursor["refresh_wait"] == {base: t0}
    # the automation's run is queued: wait for it, however long it takes (past the grace too)
    busy = decide(applied, waiting.cursor, never, no_refresh, refresh_busy=lambda _e: "run abc (__ASSET_JOB, queued)",
                  now=t0 + 500, grace=120)
    assert busy.requests == [] and "run abc (__ASSET_JOB, queued) rebuilds the downstream" in busy.skip_reason()
    # it rebuilt the downstream after the repair: nothing more to do, and the wait is forgotten
    done = decide(applied, busy.cursor, never, lambda _e: backfill._epoch(T) + 60, now=t0 + 600, grace=120)
    assert done.requests == [] and done.cursor == {"batches": {}}
    # nobody came within the grace: the repair's own refresh, once
    late = decide(applied, waiting.cursor, never, no_refresh, refresh_busy=lambda _e: None, now=t0 + 121, grace=120)
    assert [r.run_key for r in late.requests] == [f"{base}-a0"]
    # the repair's own refresh in flight is not waited for as "someone else's"
    own = decide(applied, late.cursor, states({f"{base}-a0": IN_FLIGHT}), no_refresh,
                 refresh_busy=lambda _e: "run own (repair_backfill_job, started)", now=t0 + 130, grace=120)
    assert own.requests == [] and "waiting for the downstream refresh run" in own.skip_reason()


def test_cursor_round_trip_and_garbage():
    assert backfill.decode_cursor(backfill.encode_cursor({"batches": {}})) == {"batches": {}}
    assert backfill.decode_cursor("not json") == {} and backfill.decode_cursor(None) == {}


# ---- the sensor, on a real (temporary) warehouse and instance ----------------------------------------------------

@pytest.fixture(scope="module")
def released_warehouse(tmp_path_factory):
    """Hand-made days cleaned, the missing owners routed and released (plain functions)."""
    root = tmp_path_factory.mktemp("sensor_wh")
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    build_warehouse(root)
    with duckdb.connect(str(root / "gtm.duckdb")) as con:
        qrows.ensure_repair_tables(con, contracts)
        rows = qrows.select_rows(con, contracts, qrows.Filters(table="missing_owner"))
        repair.repair_by_route(con, contracts, rows, routing.current_rule_set(CONTRACTS_DIR_DEFAULT), actor="t")
        release.release(con, contracts, qrows.select_rows(con, contracts, qrows.Filters(status="repaired")),
                       actor="t")
    return root / "gtm.duckdb"


@pytest.fixture
def defs(env_settings):
    from gtm_pipeline.definitions import build_definitions

    return build_definitions()


def tick(defs, db, instance, cursor=None):
    sensor = defs.resolve_sensor_def(keys.REPAIR_BACKFILL_SENSOR)
    ctx = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                  resources={"warehouse": DuckDBResource(database=str(db))})
    return sensor.evaluate_tick(ctx)


def test_sensor_is_running_by_default_and_targets_the_backfill_job(defs):
    sensor = defs.resolve_sensor_def(keys.REPAIR_BACKFILL_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30 and sensor.job_name == keys.REPAIR_BACKFILL_JOB
    job_keys = defs.resolve_job_def(keys.REPAIR_BACKFILL_JOB).asset_layer.selected_asset_keys
    assert keys.clean_key("opportunity") in job_keys and keys.CONSERVATION_KEY in job_keys
    assert not any(k.path[0] == keys.INGEST for k in job_keys)


def test_sensor_requests_only_the_affected_day_and_entity(defs, released_warehouse, tmp_path):
    db = shutil.copy(released_warehouse, tmp_path / "gtm.duckdb")
    with dg.instance_for_test() as instance:
        res = tick(defs, db, instance)
        [req] = res.run_requests
        assert req.partition_key == MISSING_DAY and req.job_name == keys.REPAIR_BACKFILL_JOB
        assert set(req.asset_selection) == {keys.clean_key("opportunity"), keys.quarantine_key("opportunity"),
                                            keys.MISSING_OWNER_KEY}
        assert req.run_key.startswith("repair-B-") and req.tags[backfill.TAG_RUN_KEY] == req.run_key
        assert req.tags[backfill.TAG_TRIGGER] == keys.REPAIR_BACKFILL_SENSOR
        # Evaluating again from the new cursor, before the daemon has launched the run, asks for the same run key.
        again = tick(defs, db, instance, res.cursor)
        assert [r.run_key for r in again.run_requests] == [req.run_key]


def test_sensor_skips_with_a_reason_when_idle_missing_or_locked(defs, released_warehouse, tmp_path):
    with dg.instance_for_test() as instance:
        missing = tick(defs, tmp_path / "nope.duckdb", instance)
        assert not missing.run_requests and "does not exist yet" in missing.skip_message
        idle_db = tmp_path / "idle.duckdb"
        duckdb.connect(str(idle_db)).close()
        idle = tick(defs, idle_db, instance)
        assert idle.skip_message == "no released repairs waiting and nothing to refresh"
        db = shutil.copy(released_warehouse, tmp_path / "gtm.duckdb")
        # Another process holds the write lock, as a running run does.
        holder = subprocess.Popen(
            [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
             " sys.stdin.read()", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "locked"
            locked = tick(defs, db, instance)
            assert not locked.run_requests and "locked by a running run" in locked.skip_message
        finally:
            holder.communicate("", timeout=30)
        assert tick(defs, db, instance).run_requests  # the lock is gone: the batch is requested


def test_refresh_busy_sees_a_queued_run_of_the_downstream_and_ignores_other_runs(defs):
    from dagster._core.storage.dagster_run import DagsterRun

    graph = defs.resolve_asset_graph()
    down = selection.refresh_selection(graph, ["opportunity"])
    daily = selection.partition_selection(graph, ["opportunity"])
    with dg.DagsterInstance.ephemeral() as instance:
        busy = selection.refresh_busy_lookup(instance, graph)
        # (STARTED: a QUEUED run needs a code-location origin, which a bare instance has not)
        instance.add_run(DagsterRun(job_name="daily_ingest_job", run_id="d" * 32, status=dg.DagsterRunStatus.STARTED,
                                    asset_selection=frozenset(daily)))
        assert busy(["opportunity"]) is None                 # a day's clean run is not a downstream refresh
        instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id="a" * 32, status=dg.DagsterRunStatus.SUCCESS,
                                    asset_selection=frozenset(down[:3])))
        assert busy(["opportunity"]) is None                 # finished runs do not count
        instance.add_run(DagsterRun(job_name="__ASSET_JOB", run_id="b" * 32, status=dg.DagsterRunStatus.STARTED,
                                    asset_selection=frozenset(down[:3])))
        assert busy(["opportunity"]) == "run bbbbbbbb (__ASSET_JOB, started)"
