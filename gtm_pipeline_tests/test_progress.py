"""Long runs show progress: ingesting a range of delivery days logs "i/N day(s)" lines into the run's log (the
run page of the UI shows them live), the CLI's long commands print their steps, and an in-process run started by the
CLI shows a bar on stderr over its steps, with the days an ingest step has read (cli/output.py)."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import dagster as dg
from click.testing import CliRunner
from conftest import SMALL_DAYS, SMALL_START
from dagster_duckdb import DuckDBResource


def test_ingest_range_logs_progress(small_landing, tmp_path):
    from gtm_pipeline import keys
    from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
    from gtm_pipeline.ingest.assets import ingest_assets
    from gtm_pipeline.orchestration.resources import GtmProject

    web = next(a for a in ingest_assets() if keys.raw_key("web") in a.keys)
    first = SMALL_START.isoformat()
    last = (SMALL_START + timedelta(days=SMALL_DAYS - 1)).isoformat()
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [web], instance=instance,
            resources={"warehouse": DuckDBResource(database=str(tmp_path / "gtm.duckdb")),
                       "project": GtmProject(landing_dir=str(small_landing),
                                             contracts_dir=str(CONTRACTS_DIR_DEFAULT))},
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        )
        assert result.success
        messages = [e.user_message for e in instance.all_logs(result.run_id)]
    progress = [m for m in messages if re.search(r"web: \d+/\d+ day\(s\)", m)]
    assert progress, messages
    assert f"{SMALL_DAYS}/{SMALL_DAYS} day(s)" in progress[-1]
    assert last in progress[-1]


def test_generate_reports_what_it_wrote(tmp_path):
    from gtm_pipeline.cli import main

    res = CliRunner().invoke(main, ["generate", "--days", "2", "--scale", "0.05", "--out", str(tmp_path / "landing"),
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert re.search(r"wrote [\d,]+ rows for 2 days to ", res.output)


def test_the_progress_bar_follows_the_steps_and_the_days_they_read(small_landing, env_settings, monkeypatch):
    import gtm_pipeline.definitions as definitions
    from gtm_pipeline import keys
    from gtm_pipeline.cli.output import StepBar
    from gtm_pipeline.orchestration.runner import run_job

    monkeypatch.setenv("GTM_PIPELINE_LANDING_DIR", str(small_landing))
    defs = definitions.build_definitions()
    bar_out = io.StringIO()
    with dg.instance_for_test() as instance:
        out = run_job(keys.DAILY_JOB, partition_range=("2026-08-01", "2026-08-02"), instance=instance, defs=defs,
                      run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
                      asset_selection=[keys.raw_key("web"), keys.raw_key("crm")], watcher=StepBar(bar_out))
    assert out.success, out.problems()
    text = bar_out.getvalue()
    assert f"{keys.DAILY_JOB}:" in text and "2/2 [" in text, text  # the selection's 2 steps, both done
    assert "ingest/raw_web 2/2 day(s)" in text and "ingest/raw_crm" in text, text


def test_a_broken_progress_display_does_not_fail_the_run(small_landing, env_settings, monkeypatch):
    import gtm_pipeline.definitions as definitions
    from gtm_pipeline import keys
    from gtm_pipeline.cli.output import StepBar
    from gtm_pipeline.orchestration.runner import run_job

    class Broken(StepBar):
        def step_started(self, step: str) -> None:
            raise OSError("the terminal went away")

    monkeypatch.setenv("GTM_PIPELINE_LANDING_DIR", str(small_landing))
    with dg.instance_for_test() as instance:
        out = run_job(keys.DAILY_JOB, partition_range=("2026-08-01", "2026-08-01"), instance=instance,
                      defs=definitions.build_definitions(), asset_selection=[keys.raw_key("crm")],
                      run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
                      watcher=Broken(io.StringIO()))
    assert out.success, out.problems()
