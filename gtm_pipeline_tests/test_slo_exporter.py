"""The Prometheus exporter: what /metrics says about real event-log state, names that pass `promtool check metrics`,
answers while another process holds DuckDB's write lock, and counts its own scrape errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import require
from gtm_pipeline.slo.contract import load_slo_file, resolve_coverage
from gtm_pipeline.slo.exporter import SloCollector, serve
from gtm_pipeline.slo.history import History
from slo_fakes import METRICS, publish, write_slo_file

H = 3600.0
INDEX = {f"metrics/{m}": "metrics" for m in METRICS}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def exporter(tmp_path):
    """An exporter over a test instance; yields (instance, port, collector) and stops the server afterwards."""
    slo_file = load_slo_file(write_slo_file(tmp_path / "slos.yaml"))
    history = History(tmp_path / "history.sqlite")
    with dg.instance_for_test() as inst:
        collector = SloCollector(slo_file, resolve_coverage(slo_file, INDEX), history, lambda: inst)
        server = serve(collector, "127.0.0.1", 0)
        try:
            yield inst, server.server_port, collector
        finally:
            server.shutdown()
            server.server_close()
            history.close()


def test_metrics_reflect_event_log_state(exporter):
    inst, port, _ = exporter
    now = time.time()
    for m in METRICS:
        if m != "attribution":          # attribution never published: exported as 0 (unknown)
            publish(inst, m, now - (5 if m == "forecast" else 1) * H)
    s = _samples(_scrape(port))
    fc = (("asset", "metrics/forecast"), ("slo", "forecast_age"))
    assert s[("gtm_asset_last_success_timestamp_seconds", fc)] == pytest.approx(now - 5 * H, abs=1e-3)
    assert s[("gtm_asset_last_success_timestamp_seconds", (("asset", "metrics/attribution"),
                                                           ("slo", "attribution_age")))] == 0
    assert s[("gtm_slo_objective_ratio", (("slo", "forecast_age"),))] == 0.98
    assert s[("gtm_slo_freshness_threshold_seconds", (("slo", "forecast_age"),))] == 14400
    assert s[("gtm_slo_window_seconds", (("slo", "metric_age"),))] == 28 * 86400
    assert s[("gtm_slo_burn_rate", (*fc[:1], ("slo", "forecast_age"), ("window", "1h")))] == pytest.approx(50, rel=1e-3)
    assert s[("gtm_slo_burn_rate", (*fc[:1], ("slo", "forecast_age"), ("window", "3d")))] == pytest.approx(
        1 / 72 / 0.02, rel=1e-3)
    assert s[("gtm_slo_sli_total_seconds", fc)] == pytest.approx(5 * H, rel=1e-3)
    assert s[("gtm_slo_sli_good_seconds", fc)] == pytest.approx(4 * H, rel=1e-3)
    assert s[("gtm_slo_error_budget_remaining_ratio", fc)] == pytest.approx(1 - H / (0.02 * 28 * 86400), rel=1e-3)
    assert s[("gtm_slo_attainment_ratio", fc)] == pytest.approx(0.8, rel=1e-3)
    assert s[("gtm_exporter_scrape_errors_total", ())] == 0
    # A new publication shows at the next scrape: the exporter keeps no state of its own.
    publish(inst, "forecast", now)
    assert _samples(_scrape(port))[("gtm_asset_last_success_timestamp_seconds", fc)] == pytest.approx(now, abs=1e-3)


def test_names_pass_promtool_check_metrics(exporter):
    require(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    inst, port, _ = exporter
    publish(inst, "forecast", time.time())
    text = _scrape(port)
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_answers_while_another_process_holds_the_duckdb_write_lock(exporter, tmp_path):
    inst, port, _ = exporter
    publish(inst, "forecast", time.time())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "c.execute('CREATE TABLE IF NOT EXISTS t (x INT)'); print('locked', flush=True); sys.stdin.read()",
         str(tmp_path / "gtm.duckdb")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        s = _samples(_scrape(port))
        assert s[("gtm_exporter_scrape_errors_total", ())] == 0
        assert s[("gtm_asset_last_success_timestamp_seconds",
                  (("asset", "metrics/forecast"), ("slo", "forecast_age")))] > 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_scrape_errors_are_counted_and_the_scrape_still_answers(tmp_path):
    slo_file = load_slo_file(write_slo_file(tmp_path / "slos.yaml"))

    def broken():
        raise RuntimeError("event log unreachable")

    with History(tmp_path / "h.sqlite") as h:
        collector = SloCollector(slo_file, resolve_coverage(slo_file, INDEX), h, broken)
        server = serve(collector, "127.0.0.1", 0)
        try:
            _scrape(server.server_port)
            s = _samples(_scrape(server.server_port))
        finally:
            server.shutdown()
            server.server_close()
    assert s[("gtm_exporter_scrape_errors_total", ())] == 2
    assert s[("gtm_slo_objective_ratio", (("slo", "forecast_age"),))] == 0.98     # static figures still served
    assert not [k for k in s if k[0] == "gtm_asset_last_success_timestamp_seconds"]  # absent, not stale
