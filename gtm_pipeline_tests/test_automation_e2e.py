"""The pipeline keeps itself fresh with no human (issue 13 §3), against the real `dagster dev` (webserver + daemon).

Flow: three generated delivery days are materialized by `gtm-pipeline demo` into a temporary DAGSTER_HOME (whose
dagster.yaml the CLI writes: the run queue takes one run at a time) -> `dagster dev` on 127.0.0.1:<free port>, the
landing and refresh automation sensors ticking every few seconds (GTM_PIPELINE_SENSOR_INTERVAL) -> idle ticks launch
nothing, since the demo left everything fresh -> the fourth delivery day is dropped into the landing folder ->
`landing_sensor` launches its daily run, then `refresh_automation_sensor` the refresh of the ledger, the metric layer
and the decisions -> the metric layer's published data time advances to that day's cut-off; every run succeeded and
is in the instance (and on the webserver's GraphQL), tagged with the sensor that launched it; the SLO sensor's next
evaluation measures the new data time; the hourly forecast schedule finds nothing newer to run -> further ticks
with nothing new launch nothing: no refresh over unchanged inputs. The seconds from the drop to the data time
advance, and the runs one new day causes, are printed.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO
from procs import free_port, graphql, log_tail, run_checked, start_group, stop_group, venv_tool, wait_for_webserver

pytestmark = pytest.mark.slow

FIRST_DAY = date(2026, 8, 3)
DAYS = [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(4)]
NEW_DAY = DAYS[-1]
INTERVAL = 3            # seconds between sensor ticks in this test (defaults: 60 s landing, 30 s automation)
BUDGET = 300.0          # bounds a hang only; nothing asserts on speed
# Metrics whose data time must reach the new day's cut-off: a fact table, a derived metric covered by the metric_age
# SLO, and the forecast (which the refresh now carries, so the hourly schedule finds nothing newer).
WATCHED = ("fact_pipeline", "booking_rate", "forecast")

SENSOR_TICKS = """
query($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) { __typename
  ... on Sensor { sensorState { status ticks(limit: 100) { timestamp status runIds } } } } }
"""
RUNS = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"


def _cutoff(day: str) -> float:
    """Every generated source is complete at the end of its delivery day (contracts/sources.yaml: end_of_day)."""
    d = date.fromisoformat(day) + timedelta(days=1)
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def _data_time(instance, name: str) -> float | None:
    import dagster as dg

    ev = instance.get_latest_materialization_event(dg.AssetKey(["metrics", name]))
    if ev is None or ev.asset_materialization is None:
        return None
    v = ev.asset_materialization.metadata.get("data_time")
    return None if v is None else float(v.value)


class Daemon:
    """What the test reads from the running deployment: runs from the instance, sensor ticks from GraphQL."""

    def __init__(self, instance, port: int, location: str):
        self.instance, self.port, self.location = instance, port, location

    def ticks(self, sensor: str) -> list[dict]:
        sel = {"repositoryLocationName": self.location, "repositoryName": "__repository__", "sensorName": sensor}
        out = graphql(self.port, SENSOR_TICKS, {"sel": sel})["sensorOrError"]
        assert out["__typename"] == "Sensor", out
        assert out["sensorState"]["status"] == "RUNNING", out
        return out["sensorState"]["ticks"]

    def ticks_after(self, sensor: str, since: float) -> int:
        return sum(1 for t in self.ticks(sensor) if t["timestamp"] > since)

    def runs(self):
        return self.instance.get_runs()

    def wait(self, what: str, ok, proc, log: Path, budget: float = BUDGET):
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"dagster dev exited:\n{log_tail(log)}"
            value = ok()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{log_tail(log, 120)}")


def _why(instance, run) -> str:
    """What a run that did not succeed says about it (failure events and engine errors), for the assertion message."""
    lines = [f"{run.run_id} ({run.job_name}): {run.status.value}"]
    for e in instance.all_logs(run.run_id):
        err = getattr(e.dagster_event.event_specific_data, "error", None) if e.dagster_event else None
        if err is not None or (e.dagster_event and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE")):
            lines.append(f"  {e.message}" + (f"\n{err.to_string()[-1500:]}" if err is not None else ""))
    return "\n".join(lines)


def _slo_data_time(instance, name: str) -> float | None:
    """The data time the SLO sensor last measured for a metric (its data_freshness check evaluation)."""
    import dagster as dg

    from gtm_pipeline import keys

    rec = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey(["metrics", name]), keys.CHECK_DATA_FRESHNESS))
    ev = rec.event.dagster_event.event_specific_data if rec and rec.event and rec.event.dagster_event else None
    v = ev.metadata.get("data_time") if ev is not None else None
    return None if v is None else float(v.value)


def _copy_day(src: Path, dst: Path, day: str) -> None:
    for source in sorted(p for p in src.iterdir() if p.is_dir()):
        if (source / day).is_dir():
            shutil.copytree(source / day, dst / source.name / day)


@pytest.fixture
def deployment(tmp_path):
    data, home, staging = tmp_path / "data", tmp_path / "dagster_home", tmp_path / "delivered"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    env.update({"DAGSTER_HOME": str(home), "GTM_PIPELINE_DATA_DIR": str(data),
                "GTM_PIPELINE_LANDING_DIR": str(data / "landing"), "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
                "GTM_PIPELINE_SENSOR_INTERVAL": str(INTERVAL), "GTM_PIPELINE_SLO_FILE": str(tmp_path / "slos.yaml"),
                "PYTHONUNBUFFERED": "1"})
    # The shipped SLOs, evaluated and reported on the assets every few seconds instead of every minute / 15 minutes.
    slos = (REPO / "contracts" / "slos.yaml").read_text()
    for line in ("evaluation_interval: 1m", "report_interval: 15m"):
        assert line in slos, line
        slos = slos.replace(line, f"{line.split(':')[0]}: {INTERVAL}s")
    (tmp_path / "slos.yaml").write_text(slos)
    cli = venv_tool("gtm-pipeline")
    # Four days as the sources would deliver them; the first three land now, the fourth during the test.
    run_checked([cli, "generate", "--days", str(len(DAYS)), "--start", DAYS[0], "--scale", "0.2", "--seed", "5",
                 "--clean-data", "--out", str(staging), "--no-progress"], env=env, cwd=REPO)
    for day in DAYS[:-1]:
        _copy_day(staging, data / "landing", day)
    out = run_checked([cli, "demo"], env=env, cwd=REPO, timeout=600)
    assert "What landed where" in out
    assert "max_concurrent_runs: 1" in (home / "dagster.yaml").read_text()

    port, log = free_port(), tmp_path / "dagster_dev.log"
    proc = start_group([venv_tool("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                       env=env, cwd=REPO, log=log)
    try:
        locations = wait_for_webserver(port, proc, log)
        yield env, staging, port, locations[0], proc, log
    finally:
        stop_group(proc)
        artifacts = REPO / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(log, artifacts / "automation_e2e_dagster_dev.log")


def test_a_new_delivery_day_flows_through_to_the_metric_layer_by_itself(deployment, monkeypatch):
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.metrics.schedules import forecast_due

    env, staging, port, location, proc, log = deployment
    for k, v in env.items():
        if k.startswith(("DAGSTER_", "GTM_PIPELINE_")):
            monkeypatch.setenv(k, v)
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    try:
        d = Daemon(instance, port, location)
        # The daemon reads the run queue from the dagster.yaml the CLI wrote: one run at a time (one DuckDB writer).
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator", type(instance.run_coordinator)
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 1

        demo_runs = {r.run_id for r in d.runs()}
        assert len(demo_runs) == 2  # the demo's daily and refresh runs, in-process
        before = {m: _data_time(instance, m) for m in WATCHED}
        assert all(t == _cutoff(DAYS[-2]) for t in before.values()), before

        # 1. Idle: the demo left everything fresh, so the sensors' first ticks launch nothing.
        started = time.time()
        d.wait("the first idle ticks", lambda: d.ticks_after(keys.AUTOMATION_SENSOR, started) >= 2
               and d.ticks_after(keys.LANDING_SENSOR, started) >= 2, proc, log)
        assert {r.run_id for r in d.runs()} == demo_runs, "a run was launched although nothing was new"

        # 2. A new delivery day lands; nobody types a command.
        dropped = time.time()
        _copy_day(staging, Path(env["GTM_PIPELINE_LANDING_DIR"]), NEW_DAY)
        target = _cutoff(NEW_DAY)

        def advanced():
            times = {m: _data_time(instance, m) for m in WATCHED}
            return time.time() if all(t == target for t in times.values()) else None

        advanced_at = d.wait(f"the metric layer's data time to reach {NEW_DAY}'s cut-off", advanced, proc, log)

        def settled():
            runs = [r for r in d.runs() if r.run_id not in demo_runs]
            return runs if all(r.is_finished for r in runs) else None

        new_runs = d.wait("the runs to finish", settled, proc, log)
        finished = time.time()

        # 3. The runs that did it: launched by the sensors (not by this test), all successful, visible on the UI.
        by_trigger: dict[str, list] = {}
        for r in new_runs:
            by_trigger.setdefault(r.tags.get("dagster/sensor_name", "?"), []).append(r)
        failed = [r for r in new_runs if r.status != dg.DagsterRunStatus.SUCCESS]
        assert not failed, "runs that did not succeed:\n" + "\n".join(_why(instance, r) for r in failed)
        assert set(by_trigger) == {keys.LANDING_SENSOR, keys.AUTOMATION_SENSOR}, {
            k: [r.job_name for r in v] for k, v in by_trigger.items()}
        (daily,) = by_trigger[keys.LANDING_SENSOR]
        assert daily.job_name == keys.DAILY_JOB
        assert (daily.tags["dagster/asset_partition_range_start"], daily.tags["dagster/asset_partition_range_end"]) \
            == (NEW_DAY, NEW_DAY)
        refreshes = by_trigger[keys.AUTOMATION_SENSOR]
        assert len(refreshes) == 1, [sorted(k.to_user_string() for k in r.asset_selection or []) for r in refreshes]
        (refresh,) = refreshes
        assert refresh.tags.get("gtm/trigger") == keys.AUTOMATION_SENSOR
        refreshed = {k.to_user_string() for k in refresh.asset_selection or ()}
        assert {"contracts/conservation", "decisions/decision_log"} | {f"metrics/{m}" for m in WATCHED} <= refreshed
        for m in WATCHED:
            ev = instance.get_latest_materialization_event(dg.AssetKey(["metrics", m]))
            assert ev.run_id == refresh.run_id, m
        shown = {r["runId"]: r["status"] for r in graphql(port, RUNS)["runsOrError"]["results"]}
        assert {r.run_id for r in new_runs} <= set(shown) and all(shown[r.run_id] == "SUCCESS" for r in new_runs)

        # SLO evaluation follows by itself (its sensor), measuring the new data time; the hourly forecast schedule
        # has nothing to add, since the refresh carried the forecast.
        d.wait("the SLO sensor to measure the new data time",
               lambda: all(_slo_data_time(instance, m) == target for m in WATCHED), proc, log)
        assert forecast_due(instance) == (False, "the forecast's inputs have no newer data than the forecast in force")

        # 4. Attack: with nothing new, further ticks launch nothing (no refresh loop, no republishing of the same
        # inputs as new), and the data time stays where the inputs put it.
        quiet_from = time.time()
        d.wait("three idle ticks after the refresh", lambda: d.ticks_after(keys.AUTOMATION_SENSOR, quiet_from) >= 3
               and d.ticks_after(keys.LANDING_SENSOR, quiet_from) >= 2, proc, log)
        later = [r for r in d.runs() if r.run_id not in demo_runs and r.run_id not in {x.run_id for x in new_runs}]
        assert not later, [(r.job_name, r.tags.get("dagster/sensor_name")) for r in later]
        assert all(_data_time(instance, m) == target for m in WATCHED)

        print(f"\nautomation e2e: {len(new_runs)} runs for one new day ({keys.DAILY_JOB} by {keys.LANDING_SENSOR}, "
              f"1 refresh of {len(refreshed)} assets by {keys.AUTOMATION_SENSOR}); drop -> data time advance "
              f"{advanced_at - dropped:.1f}s, drop -> last run finished {finished - dropped:.1f}s "
              f"(sensor interval {INTERVAL}s)")
    finally:
        instance.dispose()
