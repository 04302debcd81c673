"""Review cadences (spec front matter ``review_cadence``), as schedules of the review packet job, in ET.

A cron expression cannot say "first Wednesday": in cron, day-of-month and day-of-week are OR-ed, so
``0 13 1-7 * 3`` would fire on every Wednesday *and* on days 1-7. The monthly schedule therefore runs every
Wednesday at 13:00 and skips unless the day is <= 7; the quarterly one runs daily and skips except on Q-10d.
"""

from __future__ import annotations

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.decisions.packets import is_first_wednesday, is_quarterly_plan_day

review_packet_job = dg.define_asset_job(
    keys.REVIEW_PACKET_JOB, selection=dg.AssetSelection.assets(keys.REVIEW_PACKET_KEY),
    description="Build a review packet (pending decisions, SLO health, hygiene, decisions due for review).",
)

_OP = "decisions__review_packet"


def _request(context: dg.ScheduleEvaluationContext, cadence: str) -> dg.RunRequest:
    day = context.scheduled_execution_time.date()
    return dg.RunRequest(run_key=f"{cadence}-{day.isoformat()}", tags={"cadence": cadence},
                         run_config={"ops": {_OP: {"config": {"cadence": cadence, "as_of": day.isoformat()}}}})


@dg.schedule(name=keys.WEEKLY_OPS_SCHEDULE, job=review_packet_job, cron_schedule="0 10 * * 2",
             execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Weekly ops review, Tuesdays 10:00 ET: routing, hygiene health and pending decisions.")
def weekly_ops_schedule(context: dg.ScheduleEvaluationContext):
    return _request(context, "weekly_ops")


@dg.schedule(name=keys.MONTHLY_REVIEW_SCHEDULE, job=review_packet_job, cron_schedule="0 13 * * 3",
             execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Monthly business review, first Wednesday 13:00 ET (runs Wednesdays, skips after the 7th).")
def monthly_review_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.date()
    if not is_first_wednesday(day):
        return dg.SkipReason(f"{day} is not the first Wednesday of the month")
    return _request(context, "monthly_business_review")


@dg.schedule(name=keys.QUARTERLY_PLAN_SCHEDULE, job=review_packet_job, cron_schedule="0 9 * * *",
             execution_timezone=keys.REVIEW_TIMEZONE, default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Quarterly plan packet, 10 days before quarter end (Mar 21, Jun 20, Sep 20, Dec 21) "
                         "09:00 ET (runs daily, skips other days).")
def quarterly_plan_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.date()
    if not is_quarterly_plan_day(day):
        return dg.SkipReason(f"{day} is not 10 days before the end of its quarter")
    return _request(context, "quarterly_plan")


schedules = [weekly_ops_schedule, monthly_review_schedule, quarterly_plan_schedule]
