"""Output a person reads (issue 16 §5): by default a command prints only its own lines -- no library warning, no
Dagster log line, no DEBUG -- and -v / -vv show more; a blocked day reads the same wherever it is reported (the
progress bar of a run: test_progress.py).

The quiet-by-default checks run the real console script in a subprocess: Dagster's beta/preview warnings are raised
once per process, when the definitions are first imported, and pytest's own warning capture would hide them from an
in-process runner."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from conftest import REPO
from procs import venv_tool

from gtm_pipeline import keys
from gtm_pipeline.cli import main
from gtm_pipeline.datatime import blocked_text
from gtm_pipeline.orchestration.runner import Blocked, RunOutcome, blocked_in_warehouse, summary

# Lines that are not a command's own output: Python warnings ("...: BetaWarning: ..."), and log lines -- Dagster's
# console log ("... - dagster - DEBUG - ...") or a Python logger's ("12:00:00,123 DEBUG name: ...").
NOT_OURS = re.compile(r"Warning\b| - (DEBUG|INFO|WARNING|ERROR) - |\d\d:\d\d:\d\d\S* (DEBUG|INFO|WARNING)\b")


@pytest.fixture
def quiet_env(small_warehouse, tmp_path) -> dict[str, str]:
    """The environment of a real `gtm-pipeline` process over a private copy of the small warehouse."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(small_warehouse, data / "gtm.duckdb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    env.update({"GTM_PIPELINE_DATA_DIR": str(data), "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
                "GTM_PIPELINE_LANDING_DIR": str(data / "landing"), "DAGSTER_HOME": str(tmp_path / "dagster_home"),
                "PYTHONWARNINGS": "default"})  # every warning shown once: only the CLI's own filter may hide one
    return env


def _gtm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([venv_tool("gtm-pipeline"), *args], env=env, cwd=str(REPO), capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_commands_print_only_their_own_output_by_default(quiet_env):
    for args in (["--help"], ["ledger"], ["decisions", "evaluate"]):
        res = _gtm(quiet_env, *args)
        noise = [ln for ln in (res.stdout + res.stderr).splitlines() if NOT_OURS.search(ln)]
        assert not noise, f"gtm-pipeline {' '.join(args)}: {noise[:5]}"
        assert res.stderr == "", f"gtm-pipeline {' '.join(args)} wrote to stderr: {res.stderr[:500]}"
    # What the quiet log would have said is the command's own output: why each node proposed nothing.
    evaluated = _gtm(quiet_env, "decisions", "evaluate").stdout
    assert evaluated.startswith("ok: run ")
    assert re.search(r"^  note: pricing\.change: pre-check failed: no proposal", evaluated, re.M), evaluated


def test_v_shows_info_and_vv_debug(quiet_env):
    info = _gtm(quiet_env, "-v", "decisions", "evaluate")
    starts = r" INFO gtm_pipeline\.orchestration\.runner: refresh_job: run [0-9a-f-]{36} starts, 7 step\(s\)"
    assert re.search(starts, info.stderr), info.stderr
    assert " - WARNING - " in info.stderr  # the run's own log, at INFO and above
    assert "BetaWarning" in info.stderr  # the warnings the default hides are real, and -v shows them
    assert not re.search(r"\bDEBUG\b", info.stdout + info.stderr)
    debug = _gtm(quiet_env, "-vv", "decisions", "evaluate")
    assert len(re.findall(r" - DEBUG - ", debug.stderr)) >= 7, debug.stderr[-2000:]  # every step's events


# ---- one wording for a blocked day ---------------------------------------------------------------------------------

DAY = "2026-08-08"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
OPP = "{id},A1,L1,U1,2026-08-01 10:00:00,discovery,core,{price},0.1,10,4320,USD,smb,na,software,11-50,email,2026-09-01"


@pytest.fixture
def blocked_day(env_settings):
    """A warehouse whose opportunity day DAY is blocked by one out-of-range list price (plain functions)."""
    from gtm_pipeline.clean import clean_partition, load_entity_contracts
    from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.ingest.stage import ingest_day

    s = env_settings
    spec, contracts = load_landing_spec(CONTRACTS_DIR_DEFAULT), load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    f = s.landing_dir / "crm" / DAY / "opportunities.csv"
    f.parent.mkdir(parents=True)
    f.write_text(f"{OPP_HEADER}\n{OPP.format(id='O1', price=40)}\n{OPP.format(id='O2', price=99999)}\n")
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(s.duckdb_path)) as con:
        ingest_day(con, spec, s.landing_dir, "crm", DAY)
        for entity in ("owner", "account", "lead", "opportunity"):
            clean_partition(con, spec, contracts[entity], DAY)
    return s


def test_a_blocked_day_reads_the_same_in_the_run_the_summary_the_notice_and_the_slo_report(blocked_day, monkeypatch,
                                                                                           tmp_path):
    from slo_fakes import publish, write_slo_file

    said = blocked_text("clean/opportunity", (DAY,), check=keys.CHECK_RANGES, rule="range", rows=1)
    assert said == (f"clean/opportunity {DAY} is blocked by check ranges_in_bounds (1 row(s) out of contract); "
                    f"see 'gtm-pipeline quarantine list --entity opportunity --rule range --day {DAY}'")
    # The warehouse's record of the block, as the demo's summary prints it.
    with duckdb.connect(str(blocked_day.duckdb_path), read_only=True) as con:
        assert [b.describe() for b in blocked_in_warehouse(con)] == [said]
        assert f"blocked:    {said}" in summary(con).splitlines()
        # The owner's notice of the incident the block opened.
        [(body,)] = con.execute("SELECT body FROM ops.notifications WHERE asset_key = 'clean/opportunity'").fetchall()
        assert body.splitlines()[0] == said, body
    # What a run reports: the failed check's asset, name, blocked_days and violations (runner.run_job).
    run = RunOutcome(keys.DAILY_JOB, False, "r1", ["clean_opportunity"], [],
                     blocked=[Blocked("clean/opportunity", keys.CHECK_RANGES, (DAY,), 1)])
    assert run.problems() == [said] and f"\n  {said}\n" in str(run.failure(f"{keys.DAILY_JOB} {DAY}..{DAY}"))
    # slo report: a metric held back by that day names it on its row, and the day is described once below.
    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(write_slo_file(tmp_path / "slos.yaml")))
    instance = dg.DagsterInstance.get()
    try:
        now = time.time()
        publish(instance, "forecast", now - 3600, data_time=now - 86400,
                blocked_inputs=[f"clean/opportunity@{DAY}"])
        res = CliRunner().invoke(main, ["slo", "report", "--module", "slo_fakes"])
    finally:
        instance.dispose()
    assert res.exit_code == 0, res.output
    assert f"held back by clean/opportunity {DAY}" in res.output
    assert f"Blocked days holding versions back:\n  {said}\n" in res.output


def test_a_blocked_day_without_its_details_keeps_the_same_shape():
    assert blocked_text("clean/lead", ("2026-08-02", "2026-08-03"), check=keys.CHECK_ENUMS, rule="enum") == (
        "clean/lead 2026-08-02, 2026-08-03 are blocked by check enum_integrity; "
        "see 'gtm-pipeline quarantine list --entity lead --rule enum'")
    days = tuple(f"2026-08-{d:02d}" for d in range(1, 9))
    assert blocked_text("clean/lead", days).startswith("clean/lead 2026-08-01 .. 2026-08-08 (8 days) are blocked; ")
    assert blocked_text("metrics/payback", ("2026-08-02",)) == "metrics/payback 2026-08-02 is blocked"
