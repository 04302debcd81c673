"""The refresh automation (gtm_pipeline/orchestration/automation.py) evaluated the way the daemon evaluates it
(`dg.evaluate_automation_conditions`, tick after tick with the cursor), on a small graph of the pipeline's shape:
two daily entities, facts over each, a metric over both facts, a decision over the metric and one entity.

What it promises, each attacked: a new day refreshes everything over all days together; nothing refreshes while a
run that writes delivery days is queued or running (not even the assets whose own inputs are done); nothing
refreshes over unchanged inputs, tick after tick; an entity whose day failed triggers nothing of its own. Also: why not
``AutomationCondition.eager()``; the forecast's hourly schedule does not queue a second forecast behind a refresh;
the instance configuration queues runs one at a time.
"""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest

from gtm_pipeline import keys
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.orchestration.automation import apply_automation, refresh_condition

daily = dg.DailyPartitionsDefinition(start_date="2025-01-01", end_offset=1)
DAY1, DAY2 = "2026-08-01", "2026-08-02"


@dg.asset(key=["clean", "opportunity"], partitions_def=daily)
def opportunity(): ...


@dg.asset(key=["clean", "ad_spend"], partitions_def=daily)
def ad_spend(): ...


DAILY = [opportunity, ad_spend]
COND = refresh_condition([a.key for a in DAILY])


@dg.asset(key=["metrics", "fact_pipeline"], deps=[opportunity], automation_condition=COND)
def fact_pipeline(): ...


@dg.asset(key=["metrics", "fact_costs"], deps=[ad_spend], automation_condition=COND)
def fact_costs(): ...


@dg.asset(key=["metrics", "cac_per_sqo"], deps=[fact_pipeline, fact_costs], automation_condition=COND)
def cac_per_sqo(): ...


@dg.asset(key=["decisions", "channel_invest"], deps=[cac_per_sqo, opportunity], automation_condition=COND)
def channel_invest(): ...


REFRESHED = [fact_pipeline, fact_costs, cac_per_sqo, channel_invest]
ALL = {a.key for a in REFRESHED}
daily_job = dg.define_asset_job("daily", selection=DAILY)
DEFS = dg.Definitions(assets=[*DAILY, *REFRESHED], jobs=[daily_job])


class Daemon:
    """Ticks of the automation sensor: what each one would request, with the cursor carried over."""

    def __init__(self, instance, defs=DEFS, selection=None):
        self.instance, self.defs, self.cursor = instance, defs, None
        self.selection = selection or dg.AssetSelection.assets(*REFRESHED)

    def tick(self) -> set[dg.AssetKey]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                   asset_selection=self.selection, cursor=self.cursor)
        self.cursor = result.cursor
        return {r.key for r in result.results if r.true_subset.size and isinstance(r.key, dg.AssetKey)}


def land(instance, day: str, assets=DAILY) -> None:
    assert dg.materialize(assets, instance=instance, partition_key=day).success


def refresh(instance) -> None:
    assert dg.materialize(REFRESHED, instance=instance).success


def test_a_new_day_refreshes_everything_together_and_then_nothing_more():
    with dg.instance_for_test() as inst:
        daemon = Daemon(inst)
        assert daemon.tick() == set()            # nothing landed yet: every input lacks data
        land(inst, DAY1)
        assert daemon.tick() == ALL              # one tick, every layer over all days: one run
        refresh(inst)
        for _ in range(3):                       # the refresh's own writes trigger nothing
            assert daemon.tick() == set()
        land(inst, DAY2)
        land(inst, "2026-08-03")                 # two days while the sensor was paused (no ticks) ...
        assert daemon.tick() == ALL              # ... one refresh when it is switched on again
        refresh(inst)
        assert daemon.tick() == set()


def settled(inst) -> Daemon:
    """A daemon over an instance where day 1 landed and was refreshed: nothing is left to do."""
    daemon = Daemon(inst)
    land(inst, DAY1)
    daemon.tick()
    refresh(inst)
    assert daemon.tick() == set()
    return daemon


def test_nothing_refreshes_while_a_delivery_day_is_being_written():
    """A daily run publishes its entities one by one: the facts over the first entity done must not start alone."""
    with dg.instance_for_test() as inst:
        daemon = settled(inst)
        queued = inst.create_run_for_job(DEFS.resolve_job_def("daily"), tags={"dagster/partition": DAY2})
        assert daemon.tick() == set()            # queued: every entity of DAY2 is planned
        land(inst, DAY2, [opportunity])          # opportunity is in, ad_spend still being written
        assert daemon.tick() == set()            # fact_pipeline waits although its own input is done
        land(inst, DAY2, [ad_spend])
        inst.report_run_failed(queued)           # the run is over (how does not matter here)
        assert daemon.tick() == ALL              # everything together, once
        refresh(inst)
        assert daemon.tick() == set()


def test_an_entity_whose_day_failed_triggers_nothing_of_its_own():
    @dg.asset(key=["clean", "opportunity"], partitions_def=daily)
    def broken():
        raise RuntimeError("unreadable export")

    with dg.instance_for_test() as inst:
        daemon = settled(inst)
        assert not dg.materialize([broken, ad_spend], instance=inst, partition_key=DAY2, raise_on_error=False).success
        assert daemon.tick() == {fact_costs.key, cac_per_sqo.key, channel_invest.key}  # ad_spend's day did land
        refresh(inst)
        assert daemon.tick() == set()            # and the failed entity does not retrigger anything


def test_eager_would_never_fire_below_a_daily_asset():
    """Why the pipeline does not use AutomationCondition.eager(): an unpartitioned asset maps onto every partition
    of its daily parent, and the partitions before the first delivery are always missing."""
    @dg.asset(key=["metrics", "eager_fact"], deps=[opportunity], automation_condition=dg.AutomationCondition.eager())
    def eager_fact(): ...

    defs = dg.Definitions(assets=[*DAILY, *REFRESHED, eager_fact])
    with dg.instance_for_test() as inst:
        daemon = Daemon(inst, defs, dg.AssetSelection.assets(*REFRESHED, eager_fact))
        daemon.tick()
        land(inst, DAY1)
        assert daemon.tick() == ALL              # eager_fact is not among them
        land(inst, DAY2)
        assert eager_fact.key not in daemon.tick()


def test_the_hourly_forecast_waits_for_a_refresh_in_flight():
    """The refresh carries the forecast: at the top of the hour, with the facts already refreshed and the forecast
    not yet, the schedule must not queue a second forecast over the same facts."""
    from gtm_pipeline.definitions import defs
    from gtm_pipeline.metrics.schedules import _input_keys, forecast_due

    def report(key: dg.AssetKey, t: float) -> None:
        inst.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=key, metadata={"published": True, "data_time": dg.MetadataValue.timestamp(t)}))

    with dg.instance_for_test() as inst:
        for k in _input_keys():
            report(k, 1_790_000_000.0)
        assert forecast_due(inst)[0]
        refresh_run = inst.create_run_for_job(defs.resolve_job_def(keys.REFRESH_JOB))
        due, why = forecast_due(inst)
        assert not due and why == f"run {refresh_run.run_id} is queued or running and will refresh the forecast"
        inst.report_run_failed(refresh_run)      # a refresh that died before the forecast: the hour catches up
        assert forecast_due(inst)[0]


def test_sensor_interval_comes_from_the_environment_and_bad_values_say_how_to_fix_them():
    assert load_settings({}).sensor_interval_seconds is None
    assert load_settings({"GTM_PIPELINE_SENSOR_INTERVAL": "5"}).sensor_interval_seconds == 5
    for bad in ("0", "soon", "-3"):
        with pytest.raises(GtmPipelineError, match=rf"GTM_PIPELINE_SENSOR_INTERVAL='{bad}': expected a whole number"):
            load_settings({"GTM_PIPELINE_SENSOR_INTERVAL": bad})
    settings = dataclasses.replace(load_settings(), sensor_interval_seconds=7)
    sensor = apply_automation(dg.Definitions(assets=[*DAILY, fact_pipeline]), settings).get_repository_def() \
        .get_sensor_def(keys.AUTOMATION_SENSOR)
    assert sensor.minimum_interval_seconds == 7


def test_the_instance_queues_runs_one_at_a_time(tmp_path, monkeypatch):
    from gtm_pipeline.orchestration.runner import DAGSTER_YAML, ensure_dagster_home

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_dagster_home(load_settings())
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert inst.get_concurrency_config().run_queue_config.max_concurrent_runs == 1
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # what earlier versions wrote
    ensure_dagster_home(load_settings())
    assert (home / "dagster.yaml").read_text() == DAGSTER_YAML
    own = "concurrency:\n  runs:\n    max_concurrent_runs: 3\n"  # an operator's own file is left alone
    (home / "dagster.yaml").write_text(own)
    ensure_dagster_home(load_settings())
    assert (home / "dagster.yaml").read_text() == own
