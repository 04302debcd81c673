"""The decisions stage in Dagster: one materialize of the group on a temp warehouse (the real SLO resource as the
pre-check: red until the inputs are published, then green), and the review-cadence schedules on chosen dates."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from decision_fixtures import pricing_metrics
from gtm_pipeline import keys
from gtm_pipeline.defs.decisions import defs as decision_defs
from gtm_pipeline.defs.decisions.schedules import (
    monthly_review_schedule, quarterly_plan_schedule, weekly_ops_schedule,
)
from gtm_pipeline.defs.resources import DecisionStore
from gtm_pipeline.defs.slo.resources import slo_resource

ET = ZoneInfo("America/New_York")


def _assets(*names):
    return [a for a in decision_defs.assets if any(k in (keys.decision_key(n) for n in names) for k in a.keys)]


def test_materialize_pricing_node_with_the_slo_precheck(env_settings):
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(env_settings.duckdb_path)) as con:
        pricing_metrics(con)
    resources = {"warehouse": DuckDBResource(database=str(env_settings.duckdb_path)),
                 "decisions": DecisionStore(contracts_dir=str(env_settings.contracts_dir),
                                            data_dir=str(env_settings.data_dir)),
                 "slo": slo_resource(env_settings)}
    selection = _assets("pricing_change", "monitoring", "decision_log", "review_packet")
    with dg.instance_for_test() as instance:
        # 1) the metric assets were never materialized in this instance: freshness unknown -> not green -> nothing
        res = dg.materialize(selection, resources=resources, instance=instance)
        assert res.success
        md = res.asset_materializations_for_node("decisions__pricing_change")[0].metadata
        assert md["prechecks_passed"].value is False and md["new_proposals"].value == 0
        assert "SLO health not green" in md["prechecks"].value
        # 2) the inputs are published now -> green -> the smb proposal, its memo in the metadata
        for t in ("price_elasticity", "cm_per_seat", "gm_pct", "payback_by_segment", "booking_rate"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=keys.metric_key(t)))
        res = dg.materialize(selection, resources=resources, instance=instance)
        assert res.success
        md = res.asset_materializations_for_node("decisions__pricing_change")[0].metadata
        assert md["prechecks_passed"].value is True and md["new_proposals"].value == 1
        assert "# Decision: +7% list price for smb" in md["memo_preview"].value
        log_md = res.asset_materializations_for_node("decisions__decision_log")[0].metadata
        assert log_md["chain_ok"].value is True and log_md["dagster/row_count"].value == 1
        [check] = res.get_asset_check_evaluations()
        assert check.check_name == keys.CHECK_LOG_CHAIN and check.passed
        packet = res.asset_materializations_for_node("decisions__review_packet")[0].metadata
        assert packet["pending"].value == 1 and "## Pending decisions" in packet["packet"].value


def _tick(schedule, when: datetime):
    # The context must be exited: evaluating a tick enters the instance through it, and an un-exited context leaves
    # Dagster's current-instance state pointing at this (soon disposed) test instance for later tests.
    with dg.instance_for_test() as instance, \
            dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
        result = schedule.evaluate_tick(ctx)
        return list(result.run_requests or []), result.skip_message


def test_schedules_are_in_eastern_time():
    assert (weekly_ops_schedule.cron_schedule, weekly_ops_schedule.execution_timezone) == ("0 10 * * 2", keys.REVIEW_TIMEZONE)
    assert monthly_review_schedule.cron_schedule == "0 13 * * 3"
    assert {s.execution_timezone for s in decision_defs.schedules} == {"America/New_York"}


def test_weekly_ops_packet_request():
    [req], _ = _tick(weekly_ops_schedule, datetime(2026, 11, 24, 10, 0, tzinfo=ET))
    assert req.run_config["ops"]["decisions__review_packet"]["config"] == {"cadence": "weekly_ops",
                                                                          "as_of": "2026-11-24"}


@pytest.mark.parametrize("day,runs", [(datetime(2026, 11, 4, 13, 0, tzinfo=ET), True),
                                      (datetime(2026, 11, 11, 13, 0, tzinfo=ET), False),
                                      (datetime(2026, 4, 1, 13, 0, tzinfo=ET), True),
                                      (datetime(2026, 4, 8, 13, 0, tzinfo=ET), False)])
def test_monthly_review_only_first_wednesday(day, runs):
    reqs, skip = _tick(monthly_review_schedule, day)
    assert bool(reqs) is runs
    if not runs:
        assert "is not the first Wednesday" in skip


@pytest.mark.parametrize("day,runs", [("2026-03-21", True), ("2026-06-20", True), ("2026-09-20", True),
                                      ("2026-12-21", True), ("2026-12-20", False), ("2026-06-21", False)])
def test_quarterly_plan_ten_days_before_quarter_end(day, runs):
    when = datetime.fromisoformat(day).replace(hour=9, tzinfo=ET)
    reqs, skip = _tick(quarterly_plan_schedule, when)
    assert bool(reqs) is runs
    if runs:
        assert reqs[0].run_config["ops"]["decisions__review_packet"]["config"]["cadence"] == "quarterly_plan"
    else:
        assert "10 days before the end of its quarter" in skip
