"""landing_sensor through build_sensor_context: new and changed delivery days request daily_ingest_job runs over
contiguous ranges; nothing new, days already materialized and days outside the partitions are skipped with a reason."""

from __future__ import annotations

import json
import os
import shutil

import dagster as dg
import pytest

from gtm_pipeline import keys
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import landing_days
from gtm_pipeline.ingest.sensors import day_fingerprints, landing_sensor
from gtm_pipeline.orchestration.resources import GtmProject

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture
def landing(small_landing, tmp_path):
    dst = tmp_path / "landing"
    shutil.copytree(small_landing, dst)
    return dst


def tick(instance, landing, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor,
        resources={"project": GtmProject(landing_dir=str(landing), contracts_dir=str(CONTRACTS_DIR_DEFAULT))})
    return landing_sensor.evaluate_tick(ctx)


def test_first_tick_requests_one_run_for_the_whole_range(landing):
    days = landing_days(landing)
    with dg.instance_for_test() as instance:
        result = tick(instance, landing)
    assert len(result.run_requests) == 1
    req = result.run_requests[0]
    assert (req.tags[RANGE_START], req.tags[RANGE_END]) == (days[0], days[-1])
    assert req.job_name in (None, keys.DAILY_JOB)
    assert set(json.loads(result.cursor)) == set(days)


def test_nothing_new_skips_and_says_why(landing):
    cursor = json.dumps(day_fingerprints(landing, ["ads", "calendar", "crm", "vendors", "web"]))
    with dg.instance_for_test() as instance:
        result = tick(instance, landing, cursor)
    assert not result.run_requests
    assert "no new or changed delivery days" in result.skip_message


def test_a_changed_day_is_requested_alone(landing):
    days = landing_days(landing)
    with dg.instance_for_test() as instance:
        first = tick(instance, landing)
        f = next((landing / "web" / days[2]).iterdir())
        f.write_bytes(f.read_bytes() + b"\n")
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 5_000_000_000))
        second = tick(instance, landing, first.cursor)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in second.run_requests] == [(days[2], days[2])]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key


def test_days_already_materialized_count_as_seen(landing):
    days = landing_days(landing)
    with dg.instance_for_test() as instance:
        for source in ("ads", "calendar", "crm", "vendors", "web"):
            for day in days[:-2]:
                instance.report_runless_asset_event(dg.AssetMaterialization(keys.raw_key(source), partition=day))
        result = tick(instance, landing)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in result.run_requests] == [(days[-2], days[-1])]


def test_days_before_the_first_partition_are_skipped_with_the_fix(tmp_path):
    landing = tmp_path / "landing"
    (landing / "web" / "2017-03-01").mkdir(parents=True)
    (landing / "web" / "2017-03-01" / "sessions.csv").write_text("x\n")
    with dg.instance_for_test() as instance:
        result = tick(instance, landing)
        assert not result.run_requests
        assert "GTM_PIPELINE_START_DATE=2017-03-01" in result.skip_message
        again = tick(instance, landing, result.cursor)
    assert "no new or changed delivery days" in again.skip_message


def test_an_empty_landing_folder_is_explained(tmp_path):
    with dg.instance_for_test() as instance:
        result = tick(instance, tmp_path / "nothing_here")
    assert "no delivery days" in result.skip_message
