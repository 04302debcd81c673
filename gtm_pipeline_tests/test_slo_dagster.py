"""The Dagster side of the SLOs: a data-age freshness check on every covered asset, one slo/<name> asset per
SLO downstream of what it covers, and the sensor (running by default) that opens and resolves incidents, posts
each state change once and reports the figures on the SLO assets."""

from __future__ import annotations

import time

import dagster as dg
import duckdb
import pytest
from slo_fakes import METRICS, Receiver, fake_definitions, publish, write_slo_file

from gtm_pipeline import keys
from gtm_pipeline.errors import ContractError

H = 3600.0


@pytest.fixture
def slo_settings(env_settings, tmp_path, monkeypatch):
    from gtm_pipeline.config import load_settings

    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(write_slo_file(tmp_path / "slos.yaml", resolve_after="0s")))
    return load_settings()


def test_every_covered_asset_gets_a_data_freshness_check_and_no_recompute_clock(slo_settings):
    defs = fake_definitions(slo_settings)
    graph = defs.resolve_asset_graph()
    metrics = {k for k in graph.get_all_asset_keys() if k.path[0] == "metrics"}
    assert {k.to_user_string() for k in metrics} == {f"metrics/{m}" for m in METRICS}
    checks = {ck.asset_key for ck in graph.asset_check_keys if ck.name == keys.CHECK_DATA_FRESHNESS}
    assert checks == metrics
    # Dagster's own policy would measure time since the last materialization (a recompute reads fresh): none here.
    assert all(graph.get(k).freshness_policy is None for k in metrics)


def test_the_ui_verdict_follows_data_age_not_recompute(slo_settings):
    """The forecast is recomputed every minute over data 5 hours old: Dagster's check must say stale, naming why."""
    with dg.instance_for_test() as inst:
        defs = fake_definitions(slo_settings)
        now = time.time()
        for m in METRICS:
            publish(inst, m, now - 60, data_time=now - (5 if m == "forecast" else 1) * H,
                    blocked_inputs=["clean/opportunity@2026-03-08"] if m == "forecast" else None)
        res = _tick(defs, inst)
        verdicts = {e.asset_key.to_user_string(): e for e in res.asset_events
                    if isinstance(e, dg.AssetCheckEvaluation)}
        assert set(verdicts) == {f"metrics/{m}" for m in METRICS}
        fc = verdicts["metrics/forecast"]
        assert not fc.passed and fc.metadata["state"].value == "stale"
        assert fc.metadata["blocked_inputs"].value == ["clean/opportunity@2026-03-08"]
        assert fc.metadata["data_time"].value == pytest.approx(now - 5 * H)
        assert verdicts["metrics/payback"].passed
        # Run from the UI (the check's own execution) it gives the same verdict.
        job = dg.define_asset_job("check_forecast", selection=dg.AssetSelection.checks(
            dg.AssetCheckKey(dg.AssetKey(["metrics", "forecast"]), keys.CHECK_DATA_FRESHNESS)))
        result = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("check_forecast") \
            .execute_in_process(instance=inst)
        [ev] = result.get_asset_check_evaluations()
        assert not ev.passed and ev.metadata["state"].value == "stale"


def test_slo_assets_sit_downstream_of_what_they_cover(slo_settings):
    graph = fake_definitions(slo_settings).resolve_asset_graph()
    node = graph.get(keys.slo_key("attribution_age"))
    assert node.group_name == "slo"
    assert {k.to_user_string() for k in node.parent_keys} == {"metrics/attribution", "metrics/attribution_validity"}
    assert "P(Age<1d) >= 0.98" in node.description
    assert {k.to_user_string() for k in graph.get(keys.slo_key("metric_age")).parent_keys} == {
        "metrics/fact_bookings", "metrics/cac_by_channel", "metrics/payback"}


def test_unknown_key_fails_the_definitions_load(slo_settings, tmp_path):
    from gtm_pipeline.slo.defs import apply_slos

    text = slo_settings.slo_file.read_text().replace("metrics/forecast", "metrics/forcast")
    slo_settings.slo_file.write_text(text)
    with pytest.raises(ContractError, match=r"slos\.yaml: slos\[0\] \(metric_age\)\.exclude\[0\]\.key: unknown asset "
                                            r"key 'metrics/forcast' \(close matches: metrics/forecast\)"):
        apply_slos(dg.Definitions(assets=[dg.AssetSpec(["metrics", m], group_name="metrics") for m in METRICS]),
                   slo_settings)


def test_the_project_definitions_carry_the_slo_stage(env_settings):
    from gtm_pipeline.definitions import defs

    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def(keys.SLO_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 60
    graph = defs.resolve_asset_graph()
    assert {keys.slo_key(n) for n in ("metric_age", "forecast_age", "attribution_age")} <= set(
        graph.get_all_asset_keys())
    forecast = dg.AssetKey(["metrics", "forecast"])
    assert dg.AssetCheckKey(forecast, keys.CHECK_DATA_FRESHNESS) in graph.asset_check_keys


def _tick(defs, instance):
    sensor = defs.resolve_sensor_def(keys.SLO_SENSOR)
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs,
                                                        resources=dict(defs.resources)))


def test_sensor_pages_once_posts_once_and_resolves(slo_settings, monkeypatch):
    from gtm_pipeline.config import load_settings
    from gtm_pipeline.slo import health

    with Receiver() as rx, dg.instance_for_test() as inst:
        monkeypatch.setenv("GTM_PIPELINE_ALERT_WEBHOOK_URL", rx.url + "/hook")
        settings = load_settings()
        defs = fake_definitions(settings)
        now = time.time()
        for m in METRICS:
            publish(inst, m, now - (5 if m == "forecast" else 1) * H)   # the forecast went stale an hour ago

        first = _tick(defs, inst)
        assert not first.run_requests
        events = {e.asset_key.to_user_string(): e for e in first.asset_events if isinstance(e, dg.AssetMaterialization)}
        assert set(events) == {"slo/metric_age", "slo/forecast_age", "slo/attribution_age"}
        fc = events["slo/forecast_age"].metadata
        assert fc["alert_level"].value == "page" and fc["state"].value == "stale"
        assert fc["burn_rate_1h"].value == pytest.approx(50.0, rel=1e-3)
        assert 0.9 < fc["error_budget_remaining"].value < 0.93          # 1h of a 13.44h budget
        assert events["slo/metric_age"].metadata["alert_level"].value == "ok"
        hook = rx.wait_for(lambda p: p["path"] == "/hook", timeout=10)
        assert hook["json"]["to"] == "page" and hook["json"]["severity"] == "SEV2"
        with duckdb.connect(str(settings.duckdb_path)) as con:
            assert con.execute("SELECT incident_id, severity, status FROM ops.incidents").fetchall() == [
                (hook["json"]["incident_id"], "SEV2", "open")]
        h = health(inst, defs, settings=settings)
        assert not h.green and any("metrics/forecast is stale" in r for r in h.reasons)

        second = _tick(defs, inst)
        assert second.skip_message.startswith("No SLO state change (metric_age fresh/ok")
        assert "forecast_age stale/page" in second.skip_message
        assert len(rx.posts) == 1                                        # no duplicate

        # A publication dated an hour ago arrives (e.g. a run that finished late): the stale stretch vanishes.
        publish(inst, "forecast", now - 1 * H)
        third = _tick(defs, inst)
        resolved = rx.wait_for(lambda p: p["json"]["to"] == "ok", timeout=10)
        assert resolved["json"]["resolves_incident_id"] == hook["json"]["incident_id"]
        assert {e.asset_key.to_user_string() for e in third.asset_events} >= {"slo/forecast_age"}
        with duckdb.connect(str(settings.duckdb_path)) as con:
            assert con.execute("SELECT status FROM ops.incidents").fetchall() == [("resolved",)]
        assert health(inst, defs, settings=settings).green
        assert len(rx.posts) == 2


def test_sensor_explains_itself_when_idle(slo_settings):
    with dg.instance_for_test() as inst:
        defs = fake_definitions(slo_settings)
        for m in METRICS:
            publish(inst, m, time.time() - 60)
        first = _tick(defs, inst)  # the first tick reports the figures on the SLO assets and the checks' verdicts
        assert sum(isinstance(e, dg.AssetMaterialization) for e in first.asset_events) == 3
        assert sum(isinstance(e, dg.AssetCheckEvaluation) for e in first.asset_events) == len(METRICS)
        second = _tick(defs, inst)
        assert not second.asset_events and not second.run_requests
        assert second.skip_message.startswith("No SLO state change (metric_age fresh/ok budget 100.0%")
        assert "next report on the slo assets in" in second.skip_message
