"""The metrics stage in Dagster: one group ``metrics`` whose assets carry their contract, qa_tests as asset checks,
an hourly forecast schedule; one materialization of the group on a temporary warehouse; a deliberately broken
metric keeps its published version; the CLI commands work."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from dagster_duckdb import DuckDBResource

from gtm_pipeline import keys
from gtm_pipeline.metrics.assets import metric_assets
from gtm_pipeline.metrics.contract import load_metric_contracts
from gtm_pipeline.orchestration.resources import GtmProject
from gtm_pipeline_tests.metrics_fixtures import CONTRACTS, build_hand_warehouse

CONTRACTS_BY_NAME = load_metric_contracts(CONTRACTS)


def _md(event, key):
    v = event.materialization.metadata.get(key)
    return getattr(v, "value", getattr(v, "text", v))


def test_every_metric_asset_carries_its_contract():
    assets = metric_assets()
    by_key = {k: a for a in assets for k in a.keys}
    assert set(by_key) == {keys.metric_key(n) for n in CONTRACTS_BY_NAME}
    for key, a in by_key.items():
        c = CONTRACTS_BY_NAME[key.path[-1]]
        spec = next(s for s in a.specs if s.key == key)
        assert spec.group_name == "metrics" and key.path[0] == "metrics"
        assert "Grain: one row per (" in spec.description and f"Owner: {c.owner}" in spec.description
        assert "Source: " in spec.description
        assert spec.owners and all(o.startswith("team:") for o in spec.owners)
        assert spec.code_version and spec.kinds and spec.tags["stage"] == "metrics"
        md = spec.metadata
        assert md["definition"] == c.definition and md["grain"] == ", ".join(c.grain) and md["owner"] == c.owner
        assert md["formula"] == (c.formula_text or "(fact table: no formula)")
        assert {d.asset_key for d in spec.deps} == {
            keys.clean_key(i.split(".", 1)[1]) if i.startswith("clean.") else keys.metric_key(i) for i in c.inputs}
        assert {ck.name for ck in a.check_keys} == set(c.check_names())


def test_forecast_is_scheduled_hourly_and_the_refresh_job_runs_the_layer():
    from gtm_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def(keys.FORECAST_SCHEDULE)
    assert schedule.cron_schedule == "0 * * * *" and schedule.job_name == keys.FORECAST_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    forecast_job = defs.resolve_job_def(keys.FORECAST_JOB)
    assert forecast_job.asset_layer.selected_asset_keys == {keys.metric_key("forecast")}
    refresh = defs.resolve_job_def(keys.REFRESH_JOB).asset_layer.selected_asset_keys
    assert {keys.metric_key(n) for n in CONTRACTS_BY_NAME} <= refresh


@pytest.fixture
def hand_db(env_settings):
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(env_settings.duckdb_path)) as con:
        build_hand_warehouse(con)
    return env_settings


def _resources(settings, contracts_dir: Path = CONTRACTS):
    return {"warehouse": DuckDBResource(database=str(settings.duckdb_path)),
            "project": GtmProject(landing_dir=str(settings.landing_dir), contracts_dir=str(contracts_dir))}


def test_materialize_the_metrics_group_then_a_broken_metric_keeps_its_version(hand_db, tmp_path, monkeypatch):
    with dg.instance_for_test() as instance:
        result = dg.materialize(metric_assets(), instance=instance, resources=_resources(hand_db))
        assert result.success
        events = {e.asset_key.path[-1]: e for e in result.get_asset_materialization_events()}
        assert set(events) == set(CONTRACTS_BY_NAME)
        for name, e in events.items():
            # the hand data's email spent $300 and won nothing: an infinite CAC blocks cac_by_channel (issue 14 §2)
            assert _md(e, "published") is (name != "cac_by_channel"), name
            if name != "cac_by_channel":   # never published before: no published_at
                assert datetime.fromisoformat(_md(e, "published_at"))
            assert _md(e, "owner") == CONTRACTS_BY_NAME[name].owner
            assert _md(e, "grain") == ", ".join(CONTRACTS_BY_NAME[name].grain)
        assert "| smb " in _md(events["cm_per_seat"], "latest_values")
        checks = {(c.asset_key.path[-1], c.check_name): c for c in result.get_asset_check_evaluations()}
        assert set(checks) == {(n, ck) for n, c in CONTRACTS_BY_NAME.items() for ck in c.check_names()}
        failed = {k for k, c in checks.items() if not c.passed}
        assert failed == {("price_elasticity", "precise_enough"),      # warn: 2 closes cannot give a precise E
                          ("cac_by_channel_daily", "cac_30d_finite"),  # warn: 30 days of email cost, no win
                          ("cac_by_channel", "cac_in_range")}          # error: email's infinite CAC blocks
        assert checks[("price_elasticity", "precise_enough")].severity == dg.AssetCheckSeverity.WARN
        assert checks[("cac_by_channel_daily", "cac_30d_finite")].severity == dg.AssetCheckSeverity.WARN
        assert checks[("cac_by_channel", "cac_in_range")].severity == dg.AssetCheckSeverity.ERROR
        first_published_at = _md(events["cm_by_line"], "published_at")

        # A deliberately broken contract: $200 per seat to serve makes O1's CM 360 - 2010.44 - 36 < -1000.
        broken = tmp_path / "contracts"
        shutil.copytree(CONTRACTS, broken)
        path = broken / "metrics" / "cm_by_line.yaml"
        path.write_text(path.read_text().replace("values: {smb: 6.0,", "values: {smb: 200.0,"))
        monkeypatch.setenv("GTM_PIPELINE_CONTRACTS_DIR", str(broken))
        cm_asset = [a for a in metric_assets() if keys.metric_key("cm_by_line") in a.keys]
        again = dg.materialize(cm_asset, instance=instance, resources=_resources(hand_db, broken))
        assert again.success  # the audit blocks the publish, not the run
        e = again.get_asset_materialization_events()[0]
        assert _md(e, "published") is False and _md(e, "published_at") == first_published_at
        assert _md(e, "blocked_by") == "cm_in_range" and _md(e, "incident_id").startswith("INC-")
        check = next(c for c in again.get_asset_check_evaluations() if c.check_name == "cm_in_range")
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    with duckdb.connect(str(hand_db.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT monthly_cm FROM metrics.cm_by_line").fetchall() == [(pytest.approx(253.56),)]
        assert con.execute("SELECT severity, owner, status FROM ops.incidents WHERE asset_key = "
                           "'metrics/cm_by_line'").fetchall() == [("SEV2", "FP&A", "open")]
        assert sorted(con.execute("SELECT recipient, channel FROM ops.notifications").fetchall()) == [
            ("Demand Gen", "owner"), ("FP&A", "owner")]
        assert con.execute("SELECT count(*) FROM ops.publications WHERE asset_key = 'metrics/cm_by_line'"
                           ).fetchone() == (1,)


def test_cli_metrics_commands(hand_db):
    from gtm_pipeline.cli import main
    from gtm_pipeline.metrics import run_layer

    runner = CliRunner()
    out = runner.invoke(main, ["metrics", "--help"])
    assert out.exit_code == 0 and all(c in out.output for c in ("validate", "status", "show", "refresh"))
    out = runner.invoke(main, ["metrics", "validate"])
    assert out.exit_code == 0 and f"ok: {len(CONTRACTS_BY_NAME)} metric contracts" in out.output
    out = runner.invoke(main, ["metrics", "show", "payback"])
    assert out.exit_code == 2 and "metrics.payback has never been published" in out.output
    with duckdb.connect(str(hand_db.duckdb_path)) as con:
        run_layer(con, CONTRACTS, only=["fact_bookings", "cm_by_line", "cm_per_seat"])
    out = runner.invoke(main, ["metrics", "show", "cm_per_seat"])
    assert out.exit_code == 0 and "cm_per_seat" in out.output and "25.356" in out.output
    out = runner.invoke(main, ["metrics", "status"])
    assert out.exit_code == 0
    line = next(x for x in out.output.splitlines() if x.startswith("cm_per_seat"))
    assert line.split()[-1] == "2" and "never" in next(x for x in out.output.splitlines() if x.startswith("payback "))
    out = runner.invoke(main, ["metrics", "show", "paybak"])
    assert out.exit_code == 2 and 'unknown metric "paybak"; known:' in out.output


def test_the_hourly_forecast_does_not_recompute_over_unchanged_facts():
    """The schedule republished the forecast hourly from the same facts; now it runs only when they have news."""
    from gtm_pipeline.definitions import defs
    from gtm_pipeline.metrics.schedules import _input_keys

    schedule = defs.resolve_schedule_def(keys.FORECAST_SCHEDULE)

    def report(key: dg.AssetKey, data_time: float) -> None:
        inst.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, metadata={"published": True, "data_time": dg.MetadataValue.timestamp(data_time)}))

    def tick():
        return schedule.evaluate_tick(dg.build_schedule_context(instance=inst))

    day = 1_790_000_000.0
    with dg.instance_for_test() as inst:
        assert tick().skip_message.startswith("inputs without a data time yet")
        for k in _input_keys():
            report(k, day)
        assert len(tick().run_requests) == 1                 # never published: run
        report(keys.metric_key("forecast"), day)
        assert "no newer data" in tick().skip_message        # the next hours over the same facts: skip
        report(keys.metric_key("fact_pipeline"), day + 3600)
        assert "no newer data" in tick().skip_message        # one input moved, the oldest did not
        for k in _input_keys():
            report(k, day + 3600)
        assert len(tick().run_requests) == 1
