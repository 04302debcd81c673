"""End to end with the real servers: Debian's `prometheus` and `prometheus-alertmanager` on 127.0.0.1 with 1-second
intervals, `gtm-pipeline slo exporter` as a separate process, and a local webhook receiver.

Flow: the (stand-in) metric layer is materialized through Dagster into an on-disk instance -> the exporter serves
it, also while another process holds DuckDB's write lock (the warehouse figures then come from the last snapshot)
-> `gtm-pipeline slo rules` writes the rules, the Prometheus config and the Alertmanager config used here -> a day
of clean/opportunity is blocked in the warehouse (as the clean stage records it) and the forecast's data goes stale
(threshold 15 s in this test's SLO file, real time) -> Prometheus fires the blocked-publication ticket and the
burn-rate page, Alertmanager delivers both to the receiver; the Dagster sensor opens one SEV2 incident, posts one
webhook, `slo report` shows the burn and the pre-check is red -> the day publishes and the ticket resolves -> a
fresh materialization resolves the page, the incident and the pre-check. The times from the forecast's data going
stale to the page webhook and from the block to the ticket webhook are measured and printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from conftest import REPO, require
from procs import free_port, log_tail, start_group, stop_group, venv_tool
from slo_fakes import Receiver, metric_assets, write_slo_file

from gtm_pipeline import keys
from gtm_pipeline.cli import main
from gtm_pipeline.clock import utcnow
from gtm_pipeline.datatime import BLOCKED, PUBLISHED, record_partitions

pytestmark = pytest.mark.slow

THRESHOLD = 15  # seconds: the forecast is stale 15 s after its last publication
# Page: 14.4x over 30 s and 5 s (stale for 28.8% of 30 s = 8.6 s). Ticket windows long enough not to fire here.
ALERTING = [{"severity": "page", "long": "30s", "short": "5s", "burn_rate": 14.4},
            {"severity": "ticket", "long": "30m", "short": "5m", "burn_rate": 3}]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _wait(what: str, fn, budget: float, procs: dict, interval: float = 0.25):
    """Poll ``fn`` until it returns something truthy; ``budget`` only guards against hangs."""
    deadline = time.monotonic() + budget
    last = None
    while time.monotonic() < deadline:
        for name, (proc, log) in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            out = fn()
            if out:
                return out
        except (OSError, ValueError, KeyError) as e:
            last = repr(e)
        time.sleep(interval)
    logs = "\n".join(f"--- {n}:\n{log_tail(lg, 30)}" for n, (_, lg) in procs.items())
    raise AssertionError(f"timed out waiting for {what} (last error: {last})\n{logs}")


def _prom_query(port: int, q: str) -> list:
    body = json.loads(_get(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(q)}"))
    return body["data"]["result"]


def _data_time(instance: dg.DagsterInstance) -> float:
    """The data time of the forecast's version in force, as the exporter reads it from the event log."""
    from gtm_pipeline.slo.source import classify, data_time_of

    rec = instance.fetch_materializations(dg.AssetKey(["metrics", "forecast"]), limit=1).records[0]
    return data_time_of(rec, classify(rec)[1])[0]


def _write(database, fn, budget: float = 30.0) -> float:
    """Run ``fn(con)`` in one transaction on the warehouse, as a pipeline step would; the exporter's short read-only
    connection may hold the file for a few milliseconds, so retry on the lock (as DuckDBResource does). Returns the
    time of the commit."""
    from gtm_pipeline.warehouse import ensure_base

    database.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + budget
    while True:
        try:
            con = duckdb.connect(str(database))
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        try:
            ensure_base(con)
            con.execute("BEGIN TRANSACTION")
            fn(con)
            con.execute("COMMIT")
            return time.time()
        finally:
            con.close()


def _incidents(database) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute("SELECT severity, status FROM ops.incidents").fetchall()


def _alerts(post: dict) -> list[tuple]:
    return [(a["labels"]["alertname"], a["labels"].get("asset"), a["labels"]["severity"])
            for a in post["json"]["alerts"]]


def test_stale_forecast_pages_through_prometheus_and_alertmanager(env_settings, tmp_path, monkeypatch,
                                                                   record_property):
    for tool in ("prometheus", "prometheus-alertmanager"):
        require(shutil.which(tool) is not None, f"{tool} (Debian package)")
    from gtm_pipeline.config import load_settings

    slo_path = write_slo_file(tmp_path / "slos.yaml", forecast_threshold=f"{THRESHOLD}s", window="1h",
                              alerting=ALERTING, evaluation_interval="1s", resolve_after="0s", rule_interval="1s",
                              absent_for="30s", report_interval="1m")
    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(slo_path))
    procs: dict = {}
    with Receiver() as rx:
        monkeypatch.setenv("GTM_PIPELINE_ALERT_WEBHOOK_URL", rx.url + "/dagster")
        settings = load_settings()
        instance = dg.DagsterInstance.get()
        # The metric layer (stand-ins) materialized for real; their metadata says published: true and the data
        # time. The warehouse exists, as after the first pipeline run, so the exporter has figures from the start.
        assert dg.materialize(metric_assets(), instance=instance).success
        _write(settings.duckdb_path, lambda con: None)

        exporter_port, am_port, prom_port = free_port(), free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
        env["PYTHONPATH"] = str(REPO / "gtm_pipeline_tests")
        try:
            log = tmp_path / "exporter.log"
            procs["exporter"] = (start_group([venv_tool("gtm-pipeline"), "slo", "exporter", "--host", "127.0.0.1",
                                              "--port", str(exporter_port), "--module", "slo_fakes",
                                              "--warehouse-min-interval", "0.5"],
                                             env=env, cwd=REPO, log=log), log)
            out = tmp_path / "prom"
            res = CliRunner().invoke(main, [
                "slo", "rules", "--out", str(out), "--exporter", f"127.0.0.1:{exporter_port}",
                "--alertmanager", f"127.0.0.1:{am_port}", "--page-webhook-url", rx.url + "/page",
                "--ticket-webhook-url", rx.url + "/ticket", "--scrape-interval", "1s", "--group-wait", "1s",
                "--group-interval", "1s"], catch_exceptions=False)
            assert res.exit_code == 0, res.output
            log = tmp_path / "alertmanager.log"
            procs["alertmanager"] = (start_group([
                "prometheus-alertmanager", f"--config.file={out / 'alertmanager.yml'}",
                f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address="], env=env, cwd=tmp_path, log=log), log)
            log = tmp_path / "prometheus.log"
            procs["prometheus"] = (start_group([
                "prometheus", f"--config.file={out / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}", "--rules.alert.resend-delay=1s"],
                env=env, cwd=tmp_path, log=log), log)

            metrics_url = f"http://127.0.0.1:{exporter_port}/metrics"
            _wait("the exporter", lambda: b"gtm_warehouse_snapshot_timestamp_seconds" in _get(metrics_url), 90, procs)
            _wait("alertmanager", lambda: _get(f"http://127.0.0.1:{am_port}/-/ready"), 60, procs)
            _wait("prometheus", lambda: _get(f"http://127.0.0.1:{prom_port}/-/ready"), 60, procs)
            # Prometheus computes the SLI of the fresh forecast from the exporter's data time.
            _wait("the forecast's SLI in Prometheus",
                  lambda: [r for r in _prom_query(prom_port, 'gtm_slo:sli_error{slo="forecast_age"}')
                           if r["value"][1] == "0"], 60, procs)

            # The exporter answers while a run (another process) holds DuckDB's write lock.
            holder = subprocess.Popen(
                [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                 "c.execute('CREATE TABLE IF NOT EXISTS t (x INT)'); print('locked', flush=True); sys.stdin.read()",
                 str(settings.duckdb_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert holder.stdout.readline().strip() == "locked"
                time.sleep(0.6)  # past --warehouse-min-interval: this scrape tries the warehouse and finds it locked
                text = _get(metrics_url).decode()
                assert 'gtm_asset_data_time_seconds{asset="metrics/forecast",slo="forecast_age"}' in text
                assert "gtm_exporter_scrape_errors_total 0.0" in text
                assert "gtm_warehouse_snapshot_timestamp_seconds " in text      # the last snapshot, with its time
                assert "gtm_exporter_warehouse_read_failures_total 0.0" not in text
            finally:
                holder.stdin.close()
                holder.wait(timeout=30)

            # A run blocks the opportunity delivery of one day (an out-of-range amount), recording it exactly as the
            # clean stage does. Meanwhile nothing refreshes the forecast: its data goes stale THRESHOLD seconds after
            # its data time.
            day = "2026-08-16"
            blocked_at = _write(settings.duckdb_path, lambda con: record_partitions(
                con, "clean/opportunity", [(day, BLOCKED, None)], run_id="e2e-blocked", now=utcnow()))
            stale_at = _data_time(instance) + THRESHOLD
            is_blocked = lambda p, status: (p["path"] == "/ticket" and p["json"]["status"] == status  # noqa: E731
                                            and p["json"]["groupLabels"].get("alertname") == "GtmPublicationBlocked")
            ticket = rx.wait_for(lambda p: is_blocked(p, "firing"), timeout=60)
            assert ticket is not None, "no blocked-publication alert reached the receiver:\n" + log_tail(
                tmp_path / "prometheus.log")
            blocked_to_webhook = ticket["at"] - blocked_at
            record_property("blocked_to_webhook_seconds", round(blocked_to_webhook, 1))
            [alert] = ticket["json"]["alerts"]
            assert {k: alert["labels"][k] for k in ("alertname", "asset", "partition", "owner", "severity", "sev")} \
                == {"alertname": "GtmPublicationBlocked", "asset": "clean/opportunity", "partition": day,
                    "owner": "RevOps", "severity": "ticket", "sev": "SEV3"}
            assert alert["annotations"]["runbook"].startswith(
                f"gtm-pipeline quarantine list --entity opportunity --day {day}")

            page = rx.wait_for(lambda p: p["path"] == "/page" and p["json"]["status"] == "firing", timeout=120)
            assert page is not None, "no page reached the receiver:\n" + log_tail(tmp_path / "prometheus.log")
            staleness_to_webhook = page["at"] - stale_at
            record_property("staleness_to_webhook_seconds", round(staleness_to_webhook, 1))
            print(f"\nstaleness -> Alertmanager webhook: {staleness_to_webhook:.1f} s "
                  f"(burn accumulation 8.6 s + scrape/evaluation 1 s + group_wait 1 s); "
                  f"blocked day -> webhook: {blocked_to_webhook:.1f} s (snapshot 0.5 s + scrape/evaluation 1 s + "
                  f"group_wait 1 s)")
            assert _alerts(page) == [("GtmFreshnessSloPageBurn", "metrics/forecast", "page")]
            assert "gtm-pipeline slo report" in page["json"]["alerts"][0]["annotations"]["runbook"]
            assert staleness_to_webhook > 8.6   # the page waits for the 30s/5s burn; it cannot come before

            # The Dagster side sees the same staleness: one SEV2 incident, one webhook, report, pre-check red.
            from slo_fakes import fake_definitions

            from gtm_pipeline.slo import health

            defs = fake_definitions(settings)
            sensor = defs.resolve_sensor_def(keys.SLO_SENSOR)
            ctx = lambda: dg.build_sensor_context(instance=instance, definitions=defs,  # noqa: E731
                                                  resources=dict(defs.resources))
            # Ticks until the incident is written: a tick that meets the exporter's read-only connection leaves the
            # incident for the next one (the webhook goes out at once).
            _wait("the Dagster sensor's incident", lambda: (sensor.evaluate_tick(ctx()),
                                                            _incidents(settings.duckdb_path))[1], 60, procs)
            dagster_hooks = [p for p in rx.posts if p["path"] == "/dagster"]
            assert [(p["json"]["slo"], p["json"]["to"], p["json"]["severity"]) for p in dagster_hooks] == [
                ("forecast_age", "page", "SEV2")]
            assert _incidents(settings.duckdb_path) == [("SEV2", "open")]
            assert not health(instance, defs, settings=settings).green
            report = subprocess.run([venv_tool("gtm-pipeline"), "slo", "report", "--module", "slo_fakes"], env=env,
                                    cwd=REPO, capture_output=True, text=True, timeout=120)
            assert report.returncode == 0, report.stderr
            line = next(ln for ln in report.stdout.splitlines() if ln.startswith("forecast_age "))
            assert "stale" in line and "page (SEV2, INC-" in line

            # The day is re-run clean and publishes: the blocked-publication alert resolves.
            cleared_at = _write(settings.duckdb_path, lambda con: record_partitions(
                con, "clean/opportunity", [(day, PUBLISHED, utcnow())], run_id="e2e-repaired", now=utcnow()))
            cleared = rx.wait_for(lambda p: is_blocked(p, "resolved"), timeout=60)
            assert cleared is not None, "the blocked-publication alert never resolved"
            print(f"published day -> resolved webhook: {cleared['at'] - cleared_at:.1f} s")

            # A fresh forecast: the page resolves in Alertmanager, the incident and the pre-check recover.
            assert dg.materialize(metric_assets(["forecast"]), instance=instance).success
            resolved = rx.wait_for(lambda p: p["path"] == "/page" and p["json"]["status"] == "resolved", timeout=120)
            assert resolved is not None, "the page never resolved"
            _wait("the Dagster sensor's resolution", lambda: (sensor.evaluate_tick(ctx()), [
                p for p in rx.posts if p["path"] == "/dagster" and p["json"]["to"] == "ok"])[1], 60, procs,
                interval=1.0)
            _wait("the incident's resolution", lambda: (sensor.evaluate_tick(ctx()), _incidents(
                settings.duckdb_path) == [("SEV2", "resolved")])[1], 60, procs, interval=1.0)
            assert health(instance, defs, settings=settings).green
            assert len([p for p in rx.posts if p["path"] == "/dagster"]) == 2   # opened, resolved: once each
            # Tickets: only the blocked day (the page inhibits nothing needed; the SLO's own SEV2 incident does not
            # page a second time; the warehouse figures never went stale).
            assert {a[0] for p in rx.posts if p["path"] in ("/ticket", "/page") for a in _alerts(p)} == {
                "GtmPublicationBlocked", "GtmFreshnessSloPageBurn"}
        finally:
            for proc, _log in procs.values():
                stop_group(proc, grace=10)
