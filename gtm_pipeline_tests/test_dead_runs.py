"""Dead runs are marked, transient failures are retried, deterministic ones are not (issue 15 §6).

The instance configuration the CLI writes (and the shipped Postgres one) is read by a real Dagster instance, and
Dagster's own retry decision is asked about a crashed run, a run that failed in a step, and a crash already retried;
the warehouse resource's step retry is attacked with a real second process holding DuckDB's write lock. The kill -9
drill against a running `dagster dev` is `test_dead_runs_e2e.py`.
"""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import duckdb
import pytest
import yaml
from conftest import REPO

from gtm_pipeline.config import load_settings
from gtm_pipeline.orchestration.resources import WarehouseResource
from gtm_pipeline.orchestration.runner import _EARLIER_DAGSTER_YAML, DAGSTER_YAML, ensure_dagster_home
from gtm_pipeline.quarantine import backfill as backfill
from gtm_pipeline.quarantine import selection as selection


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home(load_settings())
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def test_the_cli_instance_monitors_runs_and_retries_only_crashes(instance):
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 180
    assert instance.run_monitoring_cancel_timeout_seconds == 180
    assert instance.run_monitoring_max_runtime_seconds == 7200
    assert instance.run_monitoring_max_resume_run_attempts == 0  # the local run launcher cannot resume a run
    assert instance.run_monitoring_poll_interval_seconds == 30
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert instance.run_retries_retry_on_asset_or_op_failure is False
    # The daemons that do it run under `dagster dev` / `dagster-daemon run` over this instance.
    from dagster._daemon.auto_run_reexecution.event_log_consumer import EventLogConsumerDaemon
    from dagster._daemon.daemon import MonitoringDaemon

    assert {MonitoringDaemon.daemon_type(), EventLogConsumerDaemon.daemon_type()} <= set(
        instance.get_required_daemon_types())


def _failed_run(instance, run_id: str, *, reason=None, parent: str | None = None) -> dg.DagsterRun:
    """A started run that fails the way Dagster reports it: the code server's report for a dead worker carries no
    reason; a run whose step raised carries STEP_FAILURE."""
    from dagster._core.events import JobFailureData
    from dagster._core.storage.dagster_run import DagsterRun

    tags = {"dagster/parent_run_id": parent, "dagster/root_run_id": parent, "dagster/retry_number": "1"} \
        if parent else {}
    run = instance.add_run(DagsterRun(job_name="daily_ingest_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                      tags=tags, parent_run_id=parent, root_run_id=parent))
    instance.report_run_failed(run, job_failure_data=JobFailureData(error=None, failure_reason=reason)
                               if reason else None)
    return instance.get_run_by_id(run_id)


def test_a_crashed_run_is_retried_once_and_a_step_failure_never(instance):
    from dagster._core.events import RunFailureReason

    crashed = _failed_run(instance, "c" * 32)
    assert crashed.status == dg.DagsterRunStatus.FAILURE
    assert crashed.tags.get(backfill.WILL_RETRY_TAG) == "true"
    # Bad data, a blocking check or a bug fail the same way again: no loop.
    stepped = _failed_run(instance, "s" * 32, reason=RunFailureReason.STEP_FAILURE)
    assert stepped.tags.get(backfill.WILL_RETRY_TAG) == "false"
    # The retry of the crash crashes too: max_retries 1, so it stops there.
    again = _failed_run(instance, "r" * 32, parent=crashed.run_id)
    assert again.tags.get(backfill.WILL_RETRY_TAG) == "false"


def test_the_repair_sensor_counts_a_run_about_to_be_retried_as_in_flight(instance):
    from dagster._core.storage.dagster_run import DagsterRun

    lookup = selection.run_state_lookup(instance)
    for run_id, key, will_retry in (("a" * 32, "k-retry", "true"), ("b" * 32, "k-done", "false")):
        run = instance.add_run(DagsterRun(job_name="repair_backfill_job", run_id=run_id,
                                          status=dg.DagsterRunStatus.STARTED, tags={backfill.TAG_RUN_KEY: key}))
        instance.report_run_failed(run)
        instance.add_run_tags(run_id, {backfill.WILL_RETRY_TAG: will_retry})
    assert lookup("k-retry") == backfill.IN_FLIGHT   # the daemon re-executes it; no second copy under a new key
    assert lookup("k-done") == backfill.FAILED       # the sensor's own next attempt takes over


def test_the_postgres_instance_has_the_same_queue_monitoring_and_retries():
    shipped = yaml.safe_load((REPO / "deploy" / "postgres" / "dagster.yaml").read_text())
    local = yaml.safe_load(DAGSTER_YAML)
    for block in ("concurrency", "run_monitoring", "run_retries"):
        assert shipped[block] == local[block], block


def test_every_earlier_cli_dagster_yaml_is_brought_up_to_date(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for earlier in _EARLIER_DAGSTER_YAML:
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(earlier)
        ensure_dagster_home(load_settings())
        assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    own = DAGSTER_YAML.replace("max_retries: 1", "max_retries: 3")  # an operator's edit is kept
    (home / "dagster.yaml").write_text(own)
    ensure_dagster_home(load_settings())
    assert (home / "dagster.yaml").read_text() == own


# ---- a DuckDB write lock: retried by the step, and only that ------------------------------------------------------

class LockHolder:
    """Another process with the DuckDB file open for writing, as a CLI run or a shell would have it."""

    def __init__(self, db):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
             " sys.stdin.readline(); c.close(); print('free', flush=True); sys.stdin.read()", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "free"

    def stop(self):
        self.proc.communicate("", timeout=30)


def _materialize(db, body, *, retries=2):
    @dg.asset
    def touch(warehouse: WarehouseResource):
        with warehouse.get_connection() as con:
            body(con)

    wh = WarehouseResource(database=str(db), lock_retries=retries, lock_retry_wait_seconds=1.0)
    result = dg.materialize([touch], resources={"warehouse": wh}, raise_on_error=False)
    kinds = [e.event_type_value for e in result.all_events]
    return result, kinds.count("STEP_UP_FOR_RETRY"), result.all_events


@pytest.fixture
def fast_connect(monkeypatch):
    """DuckDBResource backs off for about 100 s before giving up on a lock; one try is enough to test what follows."""
    import dagster_duckdb.resource as upstream

    monkeypatch.setattr(upstream, "backoff", lambda fn, retry_on, args=(), kwargs=None, max_retries=0: fn(
        *args, **(kwargs or {})))


def test_a_lock_that_goes_away_is_retried_by_the_step(tmp_path, monkeypatch):
    import dagster_duckdb.resource as upstream

    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    holder = LockHolder(db)
    released = []

    def connect_once(fn, retry_on, args=(), kwargs=None, max_retries=0):
        # The lock goes away right after the step's first attempt met it (not on a timer: a loaded machine may reach
        # the connect only after a timer fired, and then nothing would be retried).
        try:
            return fn(*args, **(kwargs or {}))
        except Exception:
            if not released:
                released.append(True)
                holder.release()
            raise

    monkeypatch.setattr(upstream, "backoff", connect_once)
    try:
        result, retries, _ = _materialize(db, lambda con: con.execute("CREATE TABLE t AS SELECT 1 AS x"))
        assert result.success and retries == 1
    finally:
        holder.stop()
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_a_lock_that_stays_fails_after_the_retries_and_names_the_lock(tmp_path, fast_connect):
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()
    holder = LockHolder(db)
    try:
        result, retries, events = _materialize(db, lambda con: None, retries=1)
    finally:
        holder.stop()
    assert not result.success and retries == 1
    failure = next(e for e in events if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    text = failure.to_string()
    assert "lock" in text.lower() and "w.duckdb" in text, text


def test_an_error_that_is_not_a_lock_fails_at_once(tmp_path, fast_connect):
    db = tmp_path / "w.duckdb"
    result, retries, _ = _materialize(db, lambda con: con.execute("SELECT * FROM no_such_table"))
    assert not result.success and retries == 0
