"""The decisions stage in Dagster: one materialize of the group on a temp warehouse (the real SLO resource as the
pre-check: red until the inputs are published, then green), and the review-cadence schedules: on chosen dates, and
on every tick the daemon would make in a year (DST changes and leap years included), at the default and at
configured times."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
from dagster._utils.schedules import schedule_execution_time_iterator  # the daemon's tick iterator (no public API)
from dagster_duckdb import DuckDBResource
from decision_fixtures import pricing_metrics

from gtm_pipeline import keys
from gtm_pipeline.config import ReviewTimes
from gtm_pipeline.decisions.defs import defs as decision_defs
from gtm_pipeline.decisions.schedules import (
    build_schedules,
    monthly_review_schedule,
    quarterly_plan_schedule,
    weekly_ops_schedule,
)
from gtm_pipeline.orchestration.resources import DecisionStore
from gtm_pipeline.slo.resources import slo_resource

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
    weekly = (weekly_ops_schedule.cron_schedule, weekly_ops_schedule.execution_timezone)
    assert weekly == ("0 10 * * 2", keys.REVIEW_TIMEZONE)
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


@pytest.mark.parametrize("day,runs", [("2026-03-22", True), ("2026-06-21", True), ("2026-09-21", True),
                                      ("2026-12-22", True), ("2026-03-21", False), ("2026-03-23", False),
                                      ("2026-12-21", False), ("2026-12-23", False), ("2026-06-20", False)])
def test_quarterly_plan_ten_days_before_the_quarter_starts(day, runs):
    when = datetime.fromisoformat(day).replace(hour=9, tzinfo=ET)
    reqs, skip = _tick(quarterly_plan_schedule, when)
    assert bool(reqs) is runs
    if runs:
        assert reqs[0].run_config["ops"]["decisions__review_packet"]["config"] == {"cadence": "quarterly_plan",
                                                                              "as_of": day}
    else:
        assert f"{day} is not 10 days before the start of a quarter" in skip


# ---- every tick the daemon would make, evaluated (issue 14 §6: the cadences as the spec writes them) ---------------

def _runs(schedule, start: datetime, end: datetime) -> list[tuple[str, datetime]]:
    """(as_of, tick in UTC) of every run ``schedule`` requests between ``start`` and ``end``: the ticks come from the
    iterator the scheduler daemon walks (`RemoteSchedule.execution_time_iterator`), each evaluated like a real tick."""
    out = []
    for tick in schedule_execution_time_iterator(start.timestamp(), schedule.cron_schedule,
                                                 schedule.execution_timezone):
        if tick >= end:
            break
        # No instance: these schedules read none, and one per tick would cost ~50 ms x 730 days
        with dg.build_schedule_context(scheduled_execution_time=tick) as ctx:
            result = schedule.evaluate_tick(ctx)
        out += [(r.run_config["ops"]["decisions__review_packet"]["config"]["as_of"], tick.astimezone(UTC))
                for r in result.run_requests or []]
    return out


def _days(start: date, end: date, keep) -> list[str]:
    return [d.isoformat() for d in (start + timedelta(days=i) for i in range((end - start).days)) if keep(d)]


YEAR = (datetime(2026, 1, 1, tzinfo=ET), datetime(2027, 1, 1, tzinfo=ET))


def test_weekly_ops_every_tuesday_at_10_et_through_both_dst_changes():
    runs = _runs(weekly_ops_schedule, *YEAR)
    assert [d for d, _ in runs] == _days(date(2026, 1, 1), date(2027, 1, 1), lambda d: d.weekday() == 1)
    assert {t.astimezone(ET).strftime("%a %H:%M") for _, t in runs} == {"Tue 10:00"}
    utc = dict(runs)
    # DST starts Sun 2026-03-08 and ends Sun 2026-11-01: the ET time holds, the UTC time moves by the hour
    assert [utc[d].hour for d in ("2026-03-03", "2026-03-10", "2026-10-27", "2026-11-03")] == [15, 14, 14, 15]


def test_monthly_review_first_wednesday_at_13_et_only():
    runs = _runs(monthly_review_schedule, *YEAR)
    assert [d for d, _ in runs] == ["2026-01-07", "2026-02-04", "2026-03-04", "2026-04-01", "2026-05-06",
                                    "2026-06-03", "2026-07-01", "2026-08-05", "2026-09-02", "2026-10-07",
                                    "2026-11-04", "2026-12-02"]
    assert {t.astimezone(ET).strftime("%a %H:%M") for _, t in runs} == {"Wed 13:00"}
    utc = dict(runs)
    assert (utc["2026-10-07"].hour, utc["2026-11-04"].hour) == (17, 18)     # the first Wednesday after DST ends


def test_quarterly_plan_four_times_a_year_including_leap_years():
    # 2027 -> 2029 spans the leap day 2028-02-29: still Mar 22, ten days before Apr 1
    runs = _runs(quarterly_plan_schedule, datetime(2027, 1, 1, tzinfo=ET), datetime(2029, 1, 1, tzinfo=ET))
    assert [d for d, _ in runs] == [f"{y}-{md}" for y in (2027, 2028) for md in ("03-22", "06-21", "09-21", "12-22")]
    assert {t.astimezone(ET).strftime("%H:%M") for _, t in runs} == {"09:00"}


def test_configured_times_move_the_ticks_not_the_days():
    weekly, monthly, quarterly = build_schedules(ReviewTimes(weekly_ops=time(7, 15),
                                                             monthly_business_review=time(16, 45),
                                                             quarterly_plan=time(23, 30)))
    assert (weekly.cron_schedule, monthly.cron_schedule, quarterly.cron_schedule) == (
        "15 7 * * 2", "45 16 * * 3", "30 23 * * *")
    assert "07:15 ET" in weekly.description and "GTM_PIPELINE_QUARTERLY_PLAN_AT" in quarterly.description
    # 23:30 ET is already the next day in UTC: the packet is still dated by the ET day
    runs = _runs(quarterly, *YEAR)
    assert [d for d, _ in runs] == ["2026-03-22", "2026-06-21", "2026-09-21", "2026-12-22"]
    assert [t.strftime("%m-%d %H:%M") for _, t in runs] == ["03-23 03:30", "06-22 03:30", "09-22 03:30",
                                                            "12-23 04:30"]
    assert [d for d, _ in _runs(monthly, *YEAR)][:2] == ["2026-01-07", "2026-02-04"]


def test_a_tick_given_in_utc_is_dated_by_its_et_day():
    """A context built with a UTC time (not how the daemon passes it, but what another caller may do): the ET day
    decides, not the UTC one -- else a late review is skipped, or dated a day late."""
    quarterly = build_schedules(ReviewTimes(quarterly_plan=time(23, 30)))[2]
    [req], _ = _tick(quarterly, datetime(2026, 12, 23, 4, 30, tzinfo=UTC))           # Dec 22 23:30 EST
    assert req.run_config["ops"]["decisions__review_packet"]["config"]["as_of"] == "2026-12-22"
    reqs, skip = _tick(quarterly, datetime(2026, 12, 22, 4, 30, tzinfo=UTC))         # Dec 21 23:30 EST
    assert not reqs and "2026-12-21 is not 10 days before" in skip
    [req], _ = _tick(weekly_ops_schedule, datetime(2026, 11, 24, 15, 0, tzinfo=UTC))  # Tue 10:00 EST
    assert req.run_key == "weekly_ops-2026-11-24"
