"""Drill: kill -9 a run mid-flight under the real `dagster dev` (issue 15 §6).

Flow: four generated delivery days, clean data -> an uninterrupted `gtm-pipeline run` of them in a separate
warehouse gives the reference counts -> `dagster dev` on 127.0.0.1:<free port> over a DAGSTER_HOME holding the
dagster.yaml the CLI writes; `landing_sensor` launches the daily run of the four days -> once a step of it has
succeeded, its run worker (the pid Dagster recorded, checked to be in this test's process group) gets SIGKILL ->
the instance shows the run FAILURE within a bounded wait, and the daemon re-executes it once (run_retries: a
crashed worker), from the step it died in; the retry succeeds -> every raw, clean and quarantine table and the
partition ledger hold exactly the reference counts: nothing lost, nothing doubled.
Then the case only run monitoring sees: a run whose worker dies together with its code server. Nothing reports
that run; the monitoring daemon fails it once it outlives its maximum runtime (a short `dagster/max_runtime_seconds`
tag here; 7200 s in the shipped config). Last, with `dagster dev` stopped, re-running the days by hand gives the
reference counts again. The seconds from each kill to FAILURE are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import REPO
from procs import free_port, graphql, log_tail, run_checked, start_group, stop_group, venv_tool, wait_for_webserver

from gtm_pipeline.orchestration.runner import DAGSTER_YAML

pytestmark = pytest.mark.slow

DAYS = [(date(2026, 8, 3) + timedelta(days=i)).isoformat() for i in range(4)]
INTERVAL = 3           # sensor ticks, seconds
BUDGET = 300.0         # bounds a hang only
MAX_RUNTIME = 10       # the second drill's run: its maximum runtime (seconds)
POLL = 30              # run_monitoring.poll_interval_seconds of the shipped config
LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }"""


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    data = root / "data"
    env.update({"DAGSTER_HOME": str(root / "dagster_home"), "GTM_PIPELINE_DATA_DIR": str(data),
                "GTM_PIPELINE_LANDING_DIR": str(data / "landing"), "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
                "GTM_PIPELINE_SENSOR_INTERVAL": str(INTERVAL), "PYTHONUNBUFFERED": "1"})
    return env


def counts(db: Path) -> dict[str, int]:
    """Rows of every table the daily job writes (raw, clean, quarantine) and the per-day partition ledger."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        tables = con.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN "
                             "('raw', 'clean', 'quarantine') AND table_type = 'BASE TABLE' ORDER BY 1, 2").fetchall()
        out = {f"{s}.{t}": con.execute(f'SELECT count(*) FROM {s}."{t}"').fetchone()[0] for s, t in tables}
        for key, status, n in con.execute("SELECT asset_key, status, count(*) FROM ops.partition_status "
                                          "WHERE asset_key LIKE 'raw/%' OR asset_key LIKE 'clean/%' "
                                          "GROUP BY 1, 2").fetchall():
            out[f"partition_status {key} {status}"] = n
    return out


def _worker_pid(instance, run_id: str) -> int | None:
    """The run worker's pid, as Dagster records it when the worker starts ("Started process for run (pid: N).")."""
    for e in instance.all_logs(run_id):
        m = re.match(r"Started process for run \(pid: (\d+)\)", e.message or "")
        if m:
            return int(m.group(1))
    return None


def _ours(pid: int, group: int) -> bool:
    try:
        return os.getpgid(pid) == group
    except ProcessLookupError:
        return False


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


class Wait:
    def __init__(self, proc, log: Path):
        self.proc, self.log = proc, log

    def until(self, what: str, ok, budget: float = BUDGET, step: float = 0.1):
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dagster dev exited:\n{log_tail(self.log)}"
            value = ok()
            if value:
                return value
            time.sleep(step)
        raise AssertionError(f"timed out waiting for {what}:\n{log_tail(self.log, 120)}")


def _messages(instance, run_id: str) -> str:
    return "\n".join(e.message or "" for e in instance.all_logs(run_id))


def test_a_killed_run_is_marked_failed_retried_once_and_nothing_is_lost_or_doubled(tmp_path, monkeypatch):
    import dagster as dg

    from gtm_pipeline import keys

    cli = venv_tool("gtm-pipeline")
    ref, live = tmp_path / "reference", tmp_path / "live"
    run_checked([cli, "generate", "--days", str(len(DAYS)), "--start", DAYS[0], "--scale", "0.5", "--seed", "9",
                 "--clean-data", "--out", str(tmp_path / "landing"), "--no-progress"], env=_env(ref), cwd=REPO)
    for root in (ref, live):
        shutil.copytree(tmp_path / "landing", root / "data" / "landing")

    # The reference: the same days, uninterrupted, in a warehouse of their own.
    run_checked([cli, "run", "--from", DAYS[0], "--to", DAYS[-1]], env=_env(ref), cwd=REPO, timeout=600)
    expected = counts(ref / "data" / "gtm.duckdb")
    assert all(sum(n for k, n in expected.items() if k.startswith(s)) > 0 for s in ("raw.", "clean."))

    env = _env(live)
    (live / "dagster_home").mkdir()
    (live / "dagster_home" / "dagster.yaml").write_text(DAGSTER_YAML)  # what the CLI writes into a new home
    for k, v in env.items():
        if k.startswith(("DAGSTER_", "GTM_PIPELINE_")):
            monkeypatch.setenv(k, v)
    port, log = free_port(), tmp_path / "dagster_dev.log"
    proc = start_group([venv_tool("dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                       env=env, cwd=REPO, log=log)
    instance = None
    try:
        locations = wait_for_webserver(port, proc, log)
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        w = Wait(proc, log)

        # 1. The landing sensor launches the daily run of the four days; kill its worker once a step is done.
        def daily_run():
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": keys.LANDING_SENSOR}))
            return runs[-1] if runs else None  # the first (oldest) one

        run = w.until("the landing sensor's daily run", daily_run)
        pid = w.until("the run worker's pid", lambda: _worker_pid(instance, run.run_id))
        assert _ours(pid, proc.pid), f"pid {pid} is not in this test's dagster dev process group"
        w.until("a step of the run to succeed", lambda: any(
            e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"
            for e in instance.all_logs(run.run_id)))
        assert not instance.get_run_by_id(run.run_id).is_finished, "the run finished before the kill: give it more"
        started = [e.dagster_event.step_key for e in instance.all_logs(run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        dead = w.until("the killed run to be marked failed",
                       lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, budget=120)
        marked_after = time.monotonic() - killed
        assert dead.status == dg.DagsterRunStatus.FAILURE, dead.status
        assert "signal 9" in _messages(instance, run.run_id) or "SIGKILL" in _messages(instance, run.run_id)

        # 2. Retried once by the daemon (a crashed worker, not a failed step), from where it died; it succeeds.
        def retry():
            kids = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}))
            return kids[0] if kids and kids[0].is_finished else None

        again = w.until("the automatic retry to finish", retry)
        retried_after = time.monotonic() - killed
        assert again.status == dg.DagsterRunStatus.SUCCESS, _messages(instance, again.run_id)[-3000:]
        assert again.tags.get("dagster/retry_number") == "1"
        assert again.tags.get("dagster/sensor_name") == keys.LANDING_SENSOR  # the parent's tags carried over
        assert len(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/root_run_id": run.run_id}))) == 1

        # 3. Once nothing is in flight (the automation sensor refreshes after the retry), the counts are the
        # reference's: what the killed step had half written is gone or replaced by its re-execution, none doubled.
        w.until("every run to finish", lambda: all(r.is_finished for r in instance.get_runs()), step=1.0)
        assert counts(live / "data" / "gtm.duckdb") == expected

        # 4. Worker and code server die together: no process is left to report the run; run monitoring fails it
        # once it outlives its maximum runtime.
        sel = {"repositoryLocationName": locations[0], "repositoryName": "__repository__",
               "jobName": keys.DAILY_JOB}
        meta = {"tags": [{"key": "dagster/partition", "value": DAYS[1]},
                         {"key": "dagster/max_runtime_seconds", "value": str(MAX_RUNTIME)}]}
        launched = graphql(port, LAUNCH, {"p": {"selector": sel, "executionMetadata": meta}})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        orphan_id = launched["run"]["runId"]
        pid = w.until("the second run's worker", lambda: _worker_pid(instance, orphan_id))
        # Started, not starting: a run killed while starting is the start timeout's case (180 s), not this one.
        w.until("the second run to start a step", lambda: any(
            e.dagster_event and e.dagster_event.event_type_value == "STEP_START" for e in instance.all_logs(orphan_id)))
        assert instance.get_run_by_id(orphan_id).status == dg.DagsterRunStatus.STARTED
        server = _parent(pid)
        assert _ours(pid, proc.pid) and _ours(server, proc.pid)
        assert "api grpc" in Path(f"/proc/{server}/cmdline").read_text().replace("\0", " ")
        os.kill(server, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        orphan = w.until("run monitoring to fail the orphaned run",
                         lambda: (r := instance.get_run_by_id(orphan_id)).is_finished and r,
                         budget=MAX_RUNTIME + 2 * POLL + 60, step=1.0)
        monitored_after = time.monotonic() - killed
        assert orphan.status == dg.DagsterRunStatus.FAILURE, orphan.status
        assert f"maximum runtime of {MAX_RUNTIME} seconds" in _messages(instance, orphan_id)
    finally:
        if instance is not None:
            instance.dispose()
        stop_group(proc)
        artifacts = REPO / "artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copy(log, artifacts / "dead_runs_e2e_dagster_dev.log")

    # 5. Re-running the days by hand afterwards (nothing else running) gives the reference counts again.
    run_checked([cli, "run", "--from", DAYS[0], "--to", DAYS[-1]], env=env, cwd=REPO, timeout=600)
    assert counts(live / "data" / "gtm.duckdb") == expected
    print(f"\ndead runs e2e: worker killed during {started[-1]} ({len(started)} steps started); marked FAILURE "
          f"{marked_after:.1f}s after kill -9 (by the code server), retry succeeded {retried_after:.1f}s after; "
          f"worker + code server killed: FAILURE {monitored_after:.1f}s after (run monitoring, max runtime "
          f"{MAX_RUNTIME}s, poll {POLL}s); {len(expected)} tables/ledger rows equal to the uninterrupted run")
