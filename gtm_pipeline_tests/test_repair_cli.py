"""The repair walkthrough through the CLI, on a temporary warehouse: list, show, repair (route, CSV, enum map),
release and backfill; routing validate, assign-leads, shadow and the DLQ. Errors are one clear line, exit 2."""

from __future__ import annotations

import re
import shutil

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner
from repair_landing import DAYS, MISSING_DAY, build_warehouse

from gtm_pipeline.cli import main


@pytest.fixture(autouse=True)
def live_dagster_context():
    """Resolve definitions inside a live instance context: a test elsewhere that leaves Dagster's definitions-state
    context pointing at a disposed instance would otherwise break `Definitions.get_repository_def()` here."""
    with dg.DagsterInstance.ephemeral():
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The hand-made CRM days ingested and cleaned once (plain functions)."""
    root = tmp_path_factory.mktemp("cli_wh")
    build_warehouse(root)
    return root


@pytest.fixture
def cli_env(env_settings, built):
    """A private copy of the built warehouse and landing folder at the configured (temporary) paths."""
    s = env_settings
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(built / "gtm.duckdb", s.duckdb_path)
    shutil.copytree(built / "landing", s.landing_dir)
    return s


def run(*args, ok=True):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert (res.exit_code == 0) == ok, res.output
    return res.output


def test_the_walkthrough_by_hand(cli_env, tmp_path):
    out = run("quarantine", "list")
    assert "3 row(s)" in out and "missing_owner" in out and "enum" in out
    ids = re.findall(r"\b([0-9a-f]{16})\b", run("quarantine", "list", "--table", "missing_owner"))
    assert len(set(ids)) == 2
    shown = run("quarantine", "show", ids[0])
    assert "status:        open" in shown and "owner_id" in shown and "audit trail: no repairs yet" in shown

    out = run("quarantine", "repair", "--route", "--table", "missing_owner", "--day", MISSING_DAY, "--actor", "jane")
    assert "routing with rule set v1@1.0.0" in out and "route: 2 repaired" in out
    assert "owner_id: None -> 'U0" in out and "next: gtm-pipeline quarantine release" in out
    assert "jane" in run("quarantine", "show", ids[0])

    export = tmp_path / "fix.csv"
    out = run("quarantine", "list", "--entity", "opportunity", "--rule", "enum", "--export", str(export))
    assert f"wrote 1 row(s) to {export}" in out
    export.write_text(export.read_text().replace(",stage_7,", ",proposal,"))
    assert "csv: 1 repaired" in run("quarantine", "repair", "--csv", str(export))

    out = run("quarantine", "release")
    assert re.search(r"release REL-\w+: 3 released, 0 refused", out) and f"day {MISSING_DAY}: opportunity" in out
    assert "3 row(s)" in run("quarantine", "list", "--status", "released")

    out = run("quarantine", "backfill", "--no-refresh")
    assert f"ok     day {MISSING_DAY}: opportunity" in out and "3 of 3 released row(s) taken in" in out
    assert "3 row(s)" in run("quarantine", "list", "--status", "applied")
    with duckdb.connect(str(cli_env.duckdb_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM clean.opportunity").fetchone()[0] == 15
    assert "nothing to backfill" in run("quarantine", "backfill", "--no-refresh")
    assert "taken in by:   run " in run("quarantine", "show", ids[0])


def test_enum_map_from_the_cli(cli_env, tmp_path):
    m = tmp_path / "map.yaml"
    m.write_text("stage: {stage_7: negotiation}\n")
    assert "enum_map: 1 repaired" in run("quarantine", "repair", "--enum-map", str(m), "--entity", "opportunity")


@pytest.mark.parametrize("args,message", [
    (("quarantine", "repair"), "choose exactly one of --route, --enum-map FILE or --csv FILE (got none)"),
    (("quarantine", "repair", "--route", "--csv", "x.csv"), "(got --route, --csv)"),
    (("quarantine", "repair", "--csv", "missing.csv"), "missing.csv: no such file"),
    (("quarantine", "list", "--status", "done"), "--status done: unknown status; known: open, held"),
    (("quarantine", "list", "--day", "03/08/2026"), "--day 03/08/2026: not a date; use YYYY-MM-DD"),
    (("quarantine", "show", "nope"), "quarantine id 'nope' not found"),
    (("routing", "dlq", "replay", "--rules", "nope.yaml"), "nope.yaml: no such rule-set file"),
])
def test_user_errors_are_one_line_with_exit_2(cli_env, args, message):
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_no_warehouse_yet_says_what_to_run(env_settings):
    res = CliRunner().invoke(main, ["quarantine", "list"])
    assert res.exit_code == 2 and "no warehouse yet; run the pipeline first" in res.output


def test_routing_commands(cli_env):
    assert "ok: contracts/routing/rules_v1.yaml: v1@1.0.0 (current)" in run("routing", "validate")
    assert "no open DLQ entries" in run("routing", "dlq", "list")
    out = run("routing", "assign-leads", "--from", DAYS[0], "--to", DAYS[-1])
    assert "1 lead(s) assigned (ops.routing_assignments), 0 to the DLQ" in out
    out = run("routing", "shadow", "--candidate", "contracts/routing/rules_v2.yaml", "--from", DAYS[0], "--to",
              DAYS[-1], "--kind", "opportunity")
    assert "v2@2.0.0 vs v1@1.0.0" in out and "shadow match:" in out and "fairness Gini:" in out


def test_dlq_replay_from_the_cli_turns_into_repairs(cli_env):
    with duckdb.connect(str(cli_env.duckdb_path)) as con:
        con.execute("UPDATE clean.owner SET capacity_per_day = 0 WHERE team = 'ae'")
    out = run("quarantine", "repair", "--route")
    assert "2 unroutable (sent to the routing DLQ)" in out and "unrouted -> DLQ-" in out
    assert "all 4 owner(s) at capacity" in run("routing", "dlq", "list")
    assert "0 replayed, 2 still unroutable" in run("routing", "dlq", "replay")
    with duckdb.connect(str(cli_env.duckdb_path)) as con:
        con.execute("UPDATE clean.owner SET capacity_per_day = 5 WHERE team = 'ae'")
    out = run("routing", "dlq", "replay", "--actor", "ops")
    assert "2 replayed, 0 still unroutable" in out and "route: 2 repaired" in out
    assert "2 row(s)" in run("quarantine", "list", "--status", "repaired")
