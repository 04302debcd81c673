"""Review cadences (spec front matter ``review_cadence``; issue 14 §6), as schedules of the review packet job, in ET.

The days are the spec's; the times of day are settings, read once when the definitions load
(`gtm_pipeline.config.ReviewTimes`; defaults Tue 10:00, first Wed 13:00, quarterly plan 09:00, architecture sync
Thu 14:00 every other week; docs/decisions.md).

A cron expression cannot say "first Wednesday": in cron, day-of-month and day-of-week are OR-ed, so
``0 13 1-7 * 3`` would fire on every Wednesday *and* on days 1-7. The monthly schedule therefore runs every
Wednesday and skips unless the day is <= 7; the quarterly one runs daily and skips except 10 days before a quarter
starts. The crons are evaluated in America/New_York, so a review stays at its local time across a DST change (its UTC
time moves by the hour). The clocks change on the second Sunday of March and the first of November -- never a
Tuesday, a Wednesday or a plan day -- so no configured time can put a review in a skipped or a repeated hour.
"""

from __future__ import annotations

from datetime import date, time

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.config import REVIEW_TIME_ENVS, ReviewTimes, load_settings
from gtm_pipeline.decisions.architecture_sync import is_architecture_sync_day
from gtm_pipeline.decisions.packets import ET, is_first_wednesday, is_quarterly_plan_day

review_packet_job = dg.define_asset_job(
    keys.REVIEW_PACKET_JOB, selection=dg.AssetSelection.assets(keys.REVIEW_PACKET_KEY),
    description="Build a review packet (pending decisions, refusals, monitoring breaches, SLO health, hygiene, "
                "decisions due for review, the decision log's integrity).",
)

_OP = "decisions__review_packet"


def _cron(at: time, day_of_week: str) -> str:
    return f"{at.minute} {at.hour} * * {day_of_week}"


def review_day(context: dg.ScheduleEvaluationContext) -> date:
    """The tick's day in ET. The daemon passes the tick in the schedule's zone, but a context built elsewhere may carry
    UTC, and a review late in the evening ET is already the next day in UTC."""
    t = context.scheduled_execution_time
    return (t.astimezone(ET) if t.tzinfo is not None else t).date()


def _request(context: dg.ScheduleEvaluationContext, cadence: str) -> dg.RunRequest:
    day = review_day(context)
    return dg.RunRequest(run_key=f"{cadence}-{day.isoformat()}", tags={"cadence": cadence},
                         run_config={"ops": {_OP: {"config": {"cadence": cadence, "as_of": day.isoformat()}}}})


def build_schedules(times: ReviewTimes) -> list[dg.ScheduleDefinition]:
    """The three review schedules at ``times`` (ET): weekly ops, monthly business review, quarterly plan."""
    weekly, monthly, quarterly = times.weekly_ops, times.monthly_business_review, times.quarterly_plan

    @dg.schedule(name=keys.WEEKLY_OPS_SCHEDULE, job=review_packet_job, cron_schedule=_cron(weekly, "2"),
                 execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Weekly ops review, Tuesdays {weekly:%H:%M} ET ({REVIEW_TIME_ENVS['weekly_ops']}): "
                             f"routing, hygiene health, pending decisions, refusals and breaches of the week.")
    def weekly_ops_schedule(context: dg.ScheduleEvaluationContext):
        return _request(context, "weekly_ops")

    @dg.schedule(name=keys.MONTHLY_REVIEW_SCHEDULE, job=review_packet_job, cron_schedule=_cron(monthly, "3"),
                 execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Monthly business review, first Wednesday {monthly:%H:%M} ET "
                             f"({REVIEW_TIME_ENVS['monthly_business_review']}; runs Wednesdays, skips after the 7th).")
    def monthly_review_schedule(context: dg.ScheduleEvaluationContext):
        day = review_day(context)
        if not is_first_wednesday(day):
            return dg.SkipReason(f"{day} is not the first Wednesday of the month")
        return _request(context, "monthly_business_review")

    @dg.schedule(name=keys.QUARTERLY_PLAN_SCHEDULE, job=review_packet_job, cron_schedule=_cron(quarterly, "*"),
                 execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Quarterly plan packet, 10 days before the quarter starts (Dec 22, Mar 22, Jun 21, "
                             f"Sep 21) at {quarterly:%H:%M} ET ({REVIEW_TIME_ENVS['quarterly_plan']}; runs daily, "
                             f"skips other days).")
    def quarterly_plan_schedule(context: dg.ScheduleEvaluationContext):
        day = review_day(context)
        if not is_quarterly_plan_day(day):
            return dg.SkipReason(f"{day} is not 10 days before the start of a quarter (Dec 22, Mar 22, Jun 21, "
                                 f"Sep 21)")
        return _request(context, "quarterly_plan")

    return [weekly_ops_schedule, monthly_review_schedule, quarterly_plan_schedule]


def build_architecture_schedule(times: ReviewTimes) -> dg.ScheduleDefinition:
    """The biweekly architecture sync (spec 000 §5): Thursdays at ``times.biweekly_architecture`` ET, every other ISO
    week. Cron has no "every other week", so it runs every Thursday and skips the weeks between (the week count from
    2024-W01, so the rhythm holds across a 53-week year: `architecture_sync.is_architecture_sync_day`)."""
    at = times.biweekly_architecture

    @dg.schedule(name=keys.ARCHITECTURE_SYNC_SCHEDULE, job=review_packet_job, cron_schedule=_cron(at, "4"),
                 execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Biweekly architecture sync, Thursdays {at:%H:%M} ET of every other ISO week "
                             f"({REVIEW_TIME_ENVS['biweekly_architecture']}; runs Thursdays, skips the weeks "
                             f"between): automation reliability, DLQ, schema drift, quarantine, contract changes.")
    def architecture_sync_schedule(context: dg.ScheduleEvaluationContext):
        day = review_day(context)
        if not is_architecture_sync_day(day):
            return dg.SkipReason(f"{day} (ISO {day.isocalendar().year}-W{day.isocalendar().week:02d}) is the "
                                 f"week between two architecture syncs")
        return _request(context, "biweekly_architecture")

    return architecture_sync_schedule


_times = load_settings().review_times
weekly_ops_schedule, monthly_review_schedule, quarterly_plan_schedule = build_schedules(_times)
architecture_sync_schedule = build_architecture_schedule(_times)
schedules = [weekly_ops_schedule, monthly_review_schedule, quarterly_plan_schedule, architecture_sync_schedule]
