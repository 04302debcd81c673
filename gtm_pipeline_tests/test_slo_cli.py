"""`gtm-pipeline slo report | health | validate` over an on-disk Dagster instance in tmp (never data/)."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest
from click.testing import CliRunner
from slo_fakes import METRICS, publish, write_slo_file

from gtm_pipeline.cli import main

H = 3600.0


@pytest.fixture
def stale_forecast(env_settings, tmp_path, monkeypatch):
    """The fake metric layer, fresh except the forecast, last published 5 hours ago (stale for an hour)."""
    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(write_slo_file(tmp_path / "slos.yaml")))
    instance = dg.DagsterInstance.get()
    now = time.time()
    for m in METRICS:
        publish(instance, m, now - (5 if m == "forecast" else 1) * H)
    yield instance
    instance.dispose()


def _run(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["slo", *args, "--module", "slo_fakes"])
    return res.exit_code, res.output


def test_report_shows_the_burn(stale_forecast):
    code, out = _run("report")
    assert code == 0, out
    line = next(ln for ln in out.splitlines() if ln.startswith("forecast_age "))
    cols = line.split()
    assert cols[1:3] == ["stale", "5h00m"]       # cols[3:5]: the data time (date, time)
    assert cols[6] == "92.56%"                   # budget left: 1h of the 13.44h budget spent
    assert cols[7:10] == ["50.00", "50.00", "50.00"]   # burn 5m, 30m, 1h: the maximum at 98%
    assert "metrics/forecast" in out and "metric_age" in out
    code, out = _run("report", "--json")
    data = {s["slo"]: s for s in json.loads(out)["slos"]}
    assert data["forecast_age"]["burn_rates"]["1h"] == pytest.approx(50.0, rel=1e-3)
    assert data["forecast_age"]["assets"][0]["bad_seconds"] == pytest.approx(H, rel=1e-3)
    assert data["metric_age"]["state"] == "fresh"


def test_health_blocks_on_the_stale_forecast_only(stale_forecast):
    code, out = _run("health", "--asset", "metrics/forecast")
    assert code == 1
    assert out.startswith("SLO health red: forecast_age: metrics/forecast is stale: its data is 5h00m old")
    code, out = _run("health", "--asset", "metrics/payback")
    assert (code, out.strip()) == (0, "SLO health green")


def test_validate_lists_coverage(stale_forecast):
    code, out = _run("validate")
    assert code == 0, out
    assert "forecast_age: P(Age<4h) >= 0.98 over 28d00h, owner RevOps: 1 asset(s)" in out
    assert "  metrics/payback" in out and out.rstrip().endswith("slos.yaml: valid")


def test_a_bad_slo_file_is_one_clear_error(env_settings, tmp_path, monkeypatch):
    bad = write_slo_file(tmp_path / "slos.yaml")
    bad.write_text(bad.read_text().replace("threshold: 4h", "threshold: four hours"))
    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(bad))
    res = CliRunner().invoke(main, ["slo", "rules", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert "error: " in res.output and "slos[1] (forecast_age).threshold: 'four hours' is not a duration" in res.output
