"""Honest exit codes (issue 15 §5; docs/operations.md, "Exit codes"): every command that runs Dagster work exits 0
when its runs succeeded, 1 when a run failed or a blocking check stopped it, and says which step or which check on
which asset and day, and the command that shows more; 2 stays for usage errors.

Flow: three generated delivery days, day 2 with one out-of-range list price (the blocking `ranges_in_bounds` check
holds the day back) and one opportunity without an owner -> `gtm-pipeline demo` builds the warehouse once (a blocked
day is a finding, not a failure of the demo: exit 0) -> each test works on a private copy and attacks one command:
a blocked day, a step that breaks on a damaged table, the released repair a blocked day holds; the pointers the
messages give are followed and must show the rows. Commands run in-process through click's CliRunner, and once as a
real subprocess, whose exit status is what a scheduler or CI sees.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from conftest import REPO
from procs import venv_tool

from gtm_pipeline import keys
from gtm_pipeline.cli import main
from gtm_pipeline.orchestration.runner import Blocked, RunOutcome

pytestmark = pytest.mark.slow  # the module builds the whole graph once (about a minute on 2 cores)

DAYS = ("2026-08-01", "2026-08-02", "2026-08-03")
BLOCKED_DAY = DAYS[1]
BAD_PRICE = "99999"  # contracts/entities/opportunity.yaml: list_price range max 10000


# ---- the messages, as plain data -----------------------------------------------------------------------------------

@pytest.mark.parametrize("blocked,more", [
    (Blocked("clean/opportunity", keys.CHECK_RANGES, ("2026-08-02",)),
     "gtm-pipeline quarantine list --entity opportunity --rule range --day 2026-08-02"),
    (Blocked("clean/lead", keys.CHECK_ENUMS, ("2026-08-02", "2026-08-03")),
     "gtm-pipeline quarantine list --entity lead --rule enum"),
    (Blocked("clean/lead", "custom_blocking_check", ("2026-08-02",)),
     "gtm-pipeline quarantine list --entity lead --day 2026-08-02"),
    (Blocked("metrics/payback", "in_range", ("2026-08-02",)), None),
])
def test_a_blocking_check_points_to_the_rows_behind_it(blocked, more):
    assert blocked.more() == more
    verb = "are" if len(blocked.days) > 1 else "is"
    assert blocked.describe().startswith(
        f"{blocked.asset} {', '.join(blocked.days)} {verb} blocked by check {blocked.check}")
    assert (f"; see '{more}'" in blocked.describe()) == (more is not None)


def test_a_blocking_check_names_the_rows_out_of_contract_when_it_counted_them():
    b = Blocked("clean/opportunity", keys.CHECK_RANGES, ("2026-08-02",), rows=3)
    assert b.describe() == (f"clean/opportunity 2026-08-02 is blocked by check {keys.CHECK_RANGES} (3 row(s) out of "
                            f"contract); see 'gtm-pipeline quarantine list --entity opportunity --rule range "
                            f"--day 2026-08-02'")


def test_the_outcome_says_blocked_only_when_nothing_else_broke():
    b = Blocked("clean/opportunity", keys.CHECK_RANGES, ("2026-08-02",))
    blocked = RunOutcome("daily_ingest_job", False, "r1", ["clean_opportunity"], [], blocked=[b])
    assert blocked.status == "blocked" and blocked.only_blocked
    broken = RunOutcome("daily_ingest_job", False, "r1", ["clean_opportunity", "clean_lead"], [], blocked=[b],
                        step_errors={"clean_lead": "duckdb.BinderException: no column email"})
    assert broken.status == "failed" and not broken.only_blocked
    assert broken.problems() == [b.describe(),
                                 "failed: step clean_lead: duckdb.BinderException: no column email"]
    text = str(broken.failure("daily_ingest_job 2026-08-02..2026-08-02"))
    assert text.startswith("daily_ingest_job 2026-08-02..2026-08-02 failed (run r1):")
    assert "more: run r1 in the Dagster UI ('make ui', then http://127.0.0.1:3000/runs/r1)" in text
    assert RunOutcome("refresh_job", False, "r2", [], []).problems() == [
        "failed: the run failed outside its steps; see its log"]
    assert RunOutcome("refresh_job", True, "r3", [], ["metrics/x:in_range"]).status == "ok"


# ---- the commands, on a generated warehouse --------------------------------------------------------------------------

def _edit_day(landing: Path) -> None:
    """Day 2 gains two opportunities (a few generated days hold none yet): one with an out-of-range list price, one
    without an owner, both on a generated account and in the segment and region of a generated AE."""
    def first(path: Path, **match) -> dict:
        with path.open(newline="") as fh:
            return next(r for r in csv.DictReader(fh) if all(r[k] == v for k, v in match.items()))

    ae = first(landing / "crm" / DAYS[0] / "owners.csv", team="ae")
    account = first(landing / "crm" / DAYS[0] / "accounts.csv")["account_id"]
    base = {"account_id": account, "lead_id": "", "owner_id": ae["owner_id"], "created_at": f"{BLOCKED_DAY} 10:00:00",
            "stage": "discovery", "product": "team", "list_price": "40", "discount": "0.1", "seats": "10",
            "amount": "3600", "currency": "USD", "segment": ae["segment"], "region": ae["region"],
            "industry": "software", "size_band": "11-50", "channel": "email", "close_date": "2026-09-30"}
    path = landing / "crm" / BLOCKED_DAY / "opportunities.csv"
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    assert set(header) == {"opportunity_id", *base}, header
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
        w.writerow({**base, "opportunity_id": "OPP-EXIT-1", "list_price": BAD_PRICE})
        w.writerow({**base, "opportunity_id": "OPP-EXIT-2", "owner_id": ""})


def _env(root: Path) -> dict[str, str]:
    data = root / "data"
    return {"GTM_PIPELINE_DATA_DIR": str(data), "GTM_PIPELINE_LANDING_DIR": str(data / "landing"),
            "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"), "DAGSTER_HOME": str(root / "dagster_home")}


def _bind(mp: pytest.MonkeyPatch, root: Path) -> None:
    """Point the settings at ``root`` and rebuild the definitions the CLI runs, bound to them."""
    import gtm_pipeline.definitions as definitions

    for k in [k for k in os.environ if k.startswith("GTM_PIPELINE_")]:
        mp.delenv(k)  # no webhook or key of the machine's own environment
    for k, v in _env(root).items():
        mp.setenv(k, v)
    mp.setattr(definitions, "defs", definitions.build_definitions())


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The demo over the edited landing, once; returns (root, the demo's result)."""
    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate

    root = tmp_path_factory.mktemp("exit_codes")
    landing = root / "data" / "landing"
    generate(landing, GenerateConfig(days=len(DAYS), seed=3, start=date.fromisoformat(DAYS[0]), scale=0.1,
                                     defects=DefectRates.none()), progress=False)
    _edit_day(landing)
    with dg.DagsterInstance.ephemeral(), pytest.MonkeyPatch.context() as mp:
        _bind(mp, root)
        res = cli("demo")
    return root, res


@pytest.fixture
def wh(built, tmp_path, monkeypatch):
    """A private copy of the demo's warehouse, landing and Dagster instance, with the CLI bound to it."""
    root, _ = built
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "dagster_home", tmp_path / "dagster_home")
    with dg.DagsterInstance.ephemeral():
        _bind(monkeypatch, tmp_path)
        yield tmp_path


def _sql(root: Path, *statements: str):
    with duckdb.connect(str(root / "data" / "gtm.duckdb")) as con:
        out = None
        for s in statements:
            out = con.execute(s).fetchall()
        return out


def _run_id(output: str) -> str:
    return re.search(r"\(run ([0-9a-f-]{36})\)", output).group(1)


def test_demo_with_a_blocked_day_is_not_a_failure_and_says_so(built):
    _, res = built
    assert res.exit_code == 0, res.output
    assert "finished with blocked publications (a finding, not a failure of the demo" in res.output
    blocked = (f"clean/opportunity {BLOCKED_DAY} is blocked by check {keys.CHECK_RANGES} (1 row(s) out of "
               f"contract); see 'gtm-pipeline quarantine list --entity opportunity --rule range --day {BLOCKED_DAY}'")
    assert f"      {blocked}" in res.output  # the run's outcome, and the summary says it the same way
    assert f"blocked:    {blocked}" in res.output
    assert "What landed where" in res.output and "error:" not in res.output


def test_run_blocked_by_a_check_exits_1_naming_check_asset_day_and_the_rows(wh):
    res = cli("run", "--from", BLOCKED_DAY)
    assert res.exit_code == 1, res.output
    run_id = _run_id(res.output)
    assert f"{keys.DAILY_JOB} {BLOCKED_DAY}..{BLOCKED_DAY}: blocked (run {run_id})" in res.output
    assert f"error: {keys.DAILY_JOB} {BLOCKED_DAY}..{BLOCKED_DAY} was blocked (run {run_id}):" in res.output
    more = f"gtm-pipeline quarantine list --entity opportunity --rule range --day {BLOCKED_DAY}"
    assert f"clean/opportunity {BLOCKED_DAY} is blocked by check {keys.CHECK_RANGES} (1 row(s) out of " \
           f"contract); see '{more}'" in res.output
    assert f"/runs/{run_id}" in res.output and "Traceback" not in res.output
    # The pointer is real: the command it names lists the out-of-range row.
    shown = cli(*more.split()[1:])
    assert shown.exit_code == 0 and "1 row(s)" in shown.output and BAD_PRICE in shown.output
    # A day that publishes exits 0.
    ok = cli("run", "--from", DAYS[0])
    assert ok.exit_code == 0 and f"{DAYS[0]}..{DAYS[0]}: ok" in ok.output, ok.output


def test_run_exit_status_of_the_real_process(wh):
    """What a scheduler or CI sees: the process's own exit status and the message on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    env.update(_env(wh))
    res = subprocess.run([venv_tool("gtm-pipeline"), "run", "--from", BLOCKED_DAY], env=env, cwd=str(REPO),
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"error: {keys.DAILY_JOB} {BLOCKED_DAY}..{BLOCKED_DAY} was blocked" in res.stderr
    assert f"clean/opportunity {BLOCKED_DAY} is blocked by check {keys.CHECK_RANGES}" in res.stderr
    assert "Warning" not in res.stderr  # Dagster's beta/preview warnings stay hidden by default
    usage = subprocess.run([venv_tool("gtm-pipeline"), "run"], env=env, cwd=str(REPO), capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert usage.returncode == 2 and "Missing option '--from'" in usage.stderr  # usage errors stay 2


def test_run_with_a_step_that_breaks_exits_1_naming_the_step_and_its_error(wh):
    # A table an older version left behind without a column the clean stage writes.
    _sql(wh, "ALTER TABLE clean.lead DROP COLUMN email")
    res = cli("run", "--from", DAYS[0])
    assert res.exit_code == 1, res.output
    run_id = _run_id(res.output)
    assert f"error: {keys.DAILY_JOB} {DAYS[0]}..{DAYS[0]} failed (run {run_id}):" in res.output
    assert re.search(r"failed: step clean_lead: \S*(Binder|Catalog)\S*Exception: .*email", res.output), res.output
    assert f"more: run {run_id} in the Dagster UI" in res.output


def test_refresh_with_a_step_that_breaks_exits_1(wh):
    # The ledger's table replaced by a view (by hand, say): its step cannot replace it.
    _sql(wh, "CREATE TABLE ops.conservation_copy AS SELECT * FROM ops.conservation", "DROP TABLE ops.conservation",
         "CREATE VIEW ops.conservation AS SELECT * FROM ops.conservation_copy")
    res = cli("refresh")
    assert res.exit_code == 1, res.output
    assert f"error: {keys.REFRESH_JOB} failed (run {_run_id(res.output)}):" in res.output
    assert re.search(r"failed: step contracts__conservation: .*conservation", res.output), res.output


def test_metrics_refresh_with_a_step_that_breaks_exits_1(wh):
    _sql(wh, "CREATE TABLE metrics.payback_copy AS SELECT * FROM metrics.payback", "DROP TABLE metrics.payback",
         "CREATE VIEW metrics.payback AS SELECT * FROM metrics.payback_copy")
    res = cli("metrics", "refresh", "payback")
    assert res.exit_code == 1, res.output
    assert "error: metrics refresh payback failed (run " in res.output
    assert re.search(r"failed: step metrics__payback: .*payback.*View", res.output), res.output
    assert cli("metrics", "refresh", "booking_rate").exit_code == 0  # the others still publish: exit 0


def test_decisions_evaluate_with_a_step_that_breaks_exits_1(wh):
    _sql(wh, "CREATE TABLE decisions.log_copy AS SELECT * FROM decisions.log", "DROP TABLE decisions.log",
         "CREATE VIEW decisions.log AS SELECT entry_id FROM decisions.log_copy")
    res = cli("decisions", "evaluate", "--node", "pricing.change")
    assert res.exit_code == 1, res.output
    assert "error: decisions evaluate pricing.change failed (run " in res.output
    assert re.search(r"failed: step decisions__\w+: ", res.output), res.output


def _release_the_missing_owner(root: Path) -> None:
    for args in (("quarantine", "repair", "--route", "--table", "missing_owner", "--day", BLOCKED_DAY),
                 ("quarantine", "release", "--day", BLOCKED_DAY)):
        res = cli(*args)
        assert res.exit_code == 0, res.output
    assert "1 row(s)" in cli("quarantine", "list", "--status", "released").output


def test_a_backfill_a_blocked_day_stops_says_which_day_and_check_then_takes_the_row_in(wh, tmp_path):
    _release_the_missing_owner(wh)
    res = cli("quarantine", "backfill", "--no-refresh")
    assert res.exit_code == 1, res.output
    assert f"blocked day {BLOCKED_DAY}: opportunity (run " in res.output
    held = (f"1 released row(s) stay held: clean/opportunity {BLOCKED_DAY} is blocked by check "
            f"{keys.CHECK_RANGES} (1 row(s) out of contract); see 'gtm-pipeline quarantine list --entity opportunity "
            f"--rule range --day {BLOCKED_DAY}'; repair and release those rows")
    assert "error: quarantine backfill was blocked:" in res.output and held in res.output
    # Running it again changes nothing and says the same: the row is held, not lost and not silently done.
    again = cli("quarantine", "backfill", "--no-refresh")
    assert again.exit_code == 1 and held in again.output, again.output

    # The sensor says the same in its skip reason.
    from dagster_duckdb import DuckDBResource

    from gtm_pipeline.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.resolve_sensor_def(keys.REPAIR_BACKFILL_SENSOR)
    with dg.instance_for_test() as instance:
        tick = sensor.evaluate_tick(dg.build_sensor_context(
            instance=instance, definitions=defs,
            resources={"warehouse": DuckDBResource(database=str(wh / "data" / "gtm.duckdb"))}))
    assert not tick.run_requests and held in (tick.skip_message or ""), tick.skip_message

    # The fix it names: repair and release the out-of-range row; the backfill then publishes the day with both.
    qid = re.search(r"\b([0-9a-f]{16})\b", cli("quarantine", "list", "--entity", "opportunity", "--day", BLOCKED_DAY,
                                                "--rule", "range").output.split("samples:")[1]).group(1)
    fix = tmp_path / "fix.csv"
    fix.write_text(f"quarantine_id,list_price\n{qid},100\n")
    assert cli("quarantine", "repair", "--csv", str(fix)).exit_code == 0
    assert cli("quarantine", "release", "--id", qid).exit_code == 0
    done = cli("quarantine", "backfill", "--no-refresh")
    assert done.exit_code == 0, done.output
    assert f"ok     day {BLOCKED_DAY}: opportunity" in done.output and "stay held" not in done.output
    assert _sql(wh, "SELECT count(*) FROM quarantine.opportunity WHERE status = 'held'") == [(0,)]
    assert _sql(wh, "SELECT count(*) FROM (SELECT status FROM quarantine.opportunity UNION ALL SELECT status FROM "
                    "quarantine.missing_owner) WHERE status = 'applied'") == [(2,)]


def test_a_backfill_whose_run_breaks_exits_1_naming_the_step(wh):
    _release_the_missing_owner(wh)
    # The per-day publication ledger, which every re-clean writes, replaced by a view.
    _sql(wh, "CREATE TABLE ops.ps_copy AS SELECT * FROM ops.partition_status", "DROP TABLE ops.partition_status",
         "CREATE VIEW ops.partition_status AS SELECT * FROM ops.ps_copy")
    res = cli("quarantine", "backfill", "--no-refresh")
    assert res.exit_code == 1, res.output
    assert "error: quarantine backfill failed:" in res.output
    assert re.search(rf"day {BLOCKED_DAY}: opportunity: failed: step clean_opportunity: .*partition_status",
                     res.output), res.output
    assert "more: run " in res.output
