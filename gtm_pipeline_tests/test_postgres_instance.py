"""The shipped Postgres deployment (deploy/postgres/dagster.yaml) against a real PostgreSQL server.

Flow: Debian's PostgreSQL binaries start a throw-away cluster on 127.0.0.1:<free port> (as the ``postgres`` system
user when the tests run as root, since Postgres refuses to run as root) -> a DAGSTER_HOME whose dagster.yaml is the
shipped file, pointed at that server through DAGSTER_PG_* -> `gtm-pipeline run` materializes two delivery days ->
`dagster-daemon` and `dagster-webserver` run as separate processes, the daemon's `landing_sensor` ticks, sees the
third day and its run goes through the run queue, and `refresh_automation_sensor` refreshes the layers built over all
days after it -> everything is read back from Postgres: runs, materializations, the sensor's tick and cursor (through
the instance, through the webserver's GraphQL, and with plain SQL).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from conftest import REPO, require
from procs import free_port, graphql, log_tail, run_checked, start_group, stop_group, venv_tool, wait_for_webserver

pytestmark = pytest.mark.slow

PG_USER, PG_PASSWORD, PG_DB = "dagster", "gtm-test-secret", "dagster_gtm"
FIRST_DAY = date(2026, 8, 3)
DAYS = [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(3)]


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PgServer:
    """A PostgreSQL cluster in a temp folder, owned by the ``postgres`` user when we are root."""

    def __init__(self, bindir: Path, root: Path, port: int):
        self.bindir, self.root, self.port = bindir, root, port
        self.data, self.sock, self.log = root / "data", root / "sock", root / "postgres.log"
        self.as_root = os.geteuid() == 0

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(a) for a in args]
        return (["runuser", "-u", "postgres", "--"] + cmd) if self.as_root else cmd

    def _run(self, *args: str) -> None:
        res = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120, cwd=str(self.root),
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n"
                                 f"{log_tail(self.log)}")

    def start(self) -> None:
        self.sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            for p in (self.sock, pwfile):
                shutil.chown(p, "postgres", "postgres")
        # Password authentication (scram) even locally: the instance connects exactly as a deployment would.
        self._run(self.bindir / "initdb", "-D", self.data, "-U", PG_USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--no-instructions")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.sock} -c fsync=off -c synchronous_commit=off"
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=PG_USER, password=PG_PASSWORD, dbname=db)


@pytest.fixture
def pg_server():
    bindir = _pg_bindir()
    require(bindir is not None and (bindir / "pg_ctl").exists(),
            "Debian PostgreSQL server (apt-get install postgresql; /usr/lib/postgresql/*/bin)")
    if os.geteuid() == 0:
        require(shutil.which("runuser") is not None, "runuser (util-linux), to run PostgreSQL as the postgres user")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="gtm-pg-"))
    server = PgServer(bindir, root, free_port())
    try:
        server.start()
        con = server.connect()
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"CREATE DATABASE {PG_DB}")
        con.close()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _env(tmp_path: Path, pg: PgServer) -> dict[str, str]:
    data = tmp_path / "data"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # The shipped file, unchanged: what the deployment doc tells operators to copy.
    shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_DB": PG_DB,
        "DAGSTER_PG_USER": PG_USER, "DAGSTER_PG_PASSWORD": PG_PASSWORD,
        "GTM_PIPELINE_DATA_DIR": str(data),
        "GTM_PIPELINE_LANDING_DIR": str(data / "landing"),
        "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
        "GTM_PIPELINE_SENSOR_INTERVAL": "5",  # the sensors' defaults (60 s, 30 s) would only make the test wait
        "PYTHONUNBUFFERED": "1",
    })
    return env


SENSOR_QUERY = """
query($sel: SensorSelector!) { sensorOrError(sensorSelector: $sel) { __typename
  ... on Sensor { name description sensorState { status
      ticks(limit: 10) { status runIds skipReason cursor error { message } }
      launches: ticks(statuses: [SUCCESS], limit: 10) { status runIds cursor } } } } }
"""
RUNS_QUERY = "{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }"


def test_postgres_backed_instance(tmp_path, pg_server, monkeypatch):
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.ingest.sensors import LANDING_SENSOR

    env = _env(tmp_path, pg_server)
    cli = venv_tool("gtm-pipeline")
    landing = Path(env["GTM_PIPELINE_LANDING_DIR"])

    # 1. Three delivery days of exports; a materialization of the first two through the CLI, recorded in Postgres.
    run_checked([cli, "generate", "--days", "3", "--start", DAYS[0], "--scale", "0.2", "--seed", "5",
                 "--out", str(landing), "--no-progress"], env=env, cwd=REPO)
    out = run_checked([cli, "run", "--from", DAYS[0], "--to", DAYS[1]], env=env, cwd=REPO)
    assert f"{keys.DAILY_JOB} {DAYS[0]}..{DAYS[1]}" in out

    # 2. Daemon and webserver as separate processes over the same Postgres-backed DAGSTER_HOME.
    web_port = free_port()
    daemon_log, web_log = tmp_path / "daemon.log", tmp_path / "webserver.log"
    daemon = start_group([venv_tool("dagster-daemon"), "run", "-w", "workspace.yaml"], env=env, cwd=REPO,
                         log=daemon_log)
    web = None
    try:
        web = start_group([venv_tool("dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                           "-p", str(web_port)], env=env, cwd=REPO, log=web_log)
        locations = wait_for_webserver(web_port, web, web_log)

        # 3. The sensor's tick (run by the daemon) requests the one day not yet ingested; the refresh automation
        # then refreshes the layers built over all days (docs/operations.md). Wait until the daemon has nothing left.
        for k, v in env.items():
            if k.startswith(("DAGSTER_", "GTM_PIPELINE_")):
                monkeypatch.setenv(k, v)
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        sensor_runs, refreshes = [], []
        deadline = time.monotonic() + 240  # bounds a hang only; nothing asserts on time
        while time.monotonic() < deadline:
            assert daemon.poll() is None, f"dagster-daemon exited:\n{log_tail(daemon_log)}"
            sensor_runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": LANDING_SENSOR}))
            refreshes = instance.get_runs(filters=dg.RunsFilter(
                tags={"dagster/sensor_name": keys.AUTOMATION_SENSOR}))
            landed = instance.get_run_record_by_id(sensor_runs[0].run_id) if sensor_runs else None
            if landed and landed.end_time and all(r.is_finished for r in instance.get_runs()) and any(
                    instance.get_run_record_by_id(r.run_id).create_timestamp.timestamp() > landed.end_time
                    for r in refreshes):
                break
            time.sleep(1)
        assert sensor_runs, f"landing_sensor launched no run:\n{log_tail(daemon_log)}"
        run = sensor_runs[0]
        assert len(sensor_runs) == 1
        assert run.status == dg.DagsterRunStatus.SUCCESS, \
            f"sensor run {run.run_id} {run.status}:\n{log_tail(daemon_log)}"
        assert run.job_name == keys.DAILY_JOB
        assert run.tags["dagster/asset_partition_range_start"] == DAYS[2]
        assert run.tags["dagster/asset_partition_range_end"] == DAYS[2]

        # 4a. Read back through the instance (i.e. from Postgres): the runs, the materialized partitions, metadata.
        assert "PostgresRunStorage" in type(instance.run_storage).__name__
        assert "PostgresEventLogStorage" in type(instance.event_log_storage).__name__
        assert "PostgresScheduleStorage" in type(instance.schedule_storage).__name__
        all_runs = instance.get_runs()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in all_runs), [
            (r.job_name, r.status) for r in all_runs]
        daily_runs = [r for r in all_runs if r.job_name == keys.DAILY_JOB]
        assert len(daily_runs) == 2 and refreshes and len(all_runs) == len(daily_runs) + len(refreshes)
        web_key = keys.raw_key("web")
        assert set(DAYS) <= set(instance.get_materialized_partitions(web_key))
        latest = instance.get_latest_materialization_event(web_key)
        assert latest.run_id == run.run_id
        assert latest.asset_materialization.metadata["dagster/row_count"].value > 0
        mats = instance.fetch_materializations(web_key, limit=10).records
        assert {m.run_id for m in mats} == {r.run_id for r in daily_runs}

        # 4b. The same through the webserver (a separate process reading Postgres): runs and the sensor's ticks.
        gql_runs = graphql(web_port, RUNS_QUERY)["runsOrError"]["results"]
        assert {r["runId"] for r in gql_runs} == {r.run_id for r in all_runs}
        sel = {"repositoryLocationName": locations[0], "repositoryName": "__repository__",
               "sensorName": LANDING_SENSOR}
        sensor = graphql(web_port, SENSOR_QUERY, {"sel": sel})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        assert sensor["sensorState"]["status"] == "RUNNING"
        # The launching tick by status: on a slow machine more skipped ticks than the page holds follow it.
        ticks = sensor["sensorState"]["ticks"]
        launched = [t for t in sensor["sensorState"]["launches"] if run.run_id in t["runIds"]]
        assert launched, (sensor["sensorState"]["launches"], ticks)
        cursor = json.loads(launched[0]["cursor"])
        assert set(cursor) == set(DAYS)  # every landing day fingerprinted, the two CLI days counted as seen

        # 4c. Plain SQL on the server: the tables Dagster created, holding those rows.
        con = pg_server.connect(PG_DB)
        try:
            with con.cursor() as cur:
                cur.execute("SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
                assert cur.fetchone()[0] == len(all_runs)
                cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                            "AND asset_key = %s", [web_key.to_string()])
                assert cur.fetchone()[0] == len(mats)
                cur.execute("SELECT count(*) FROM job_ticks WHERE status = 'SUCCESS'")
                assert cur.fetchone()[0] >= 1
        finally:
            con.close()
    finally:
        if web is not None:
            stop_group(web)
        stop_group(daemon)

    # 5. A second tick, evaluated here from the cursor stored in Postgres, has nothing new and says so.
    from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
    from gtm_pipeline.ingest.sensors import landing_sensor
    from gtm_pipeline.orchestration.resources import GtmProject

    project = GtmProject(landing_dir=str(landing), contracts_dir=str(CONTRACTS_DIR_DEFAULT))
    ctx = dg.build_sensor_context(instance=instance, cursor=launched[0]["cursor"], resources={"project": project})
    result = landing_sensor.evaluate_tick(ctx)
    assert not result.run_requests
    assert "no new or changed delivery days" in (result.skip_message or "")
    instance.dispose()
