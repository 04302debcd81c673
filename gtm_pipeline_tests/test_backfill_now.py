"""The CLI backfill (`gtm_pipeline.quarantine.backfill_now`): the plan is pure, the runner is the caller's.

The library modules of the repair backfill must not import the definitions or the runner (the CLI supplies both);
the CLI's day runs and refresh are planned by plain functions; the executor runs exactly what was planned, through
the callable it is given, with the sensor's tags.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg
import duckdb
import pytest
from repair_landing import MISSING_DAY, build_warehouse

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.quarantine import backfill as backfill
from gtm_pipeline.quarantine import backfill_now as backfill_now
from gtm_pipeline.quarantine import release as release
from gtm_pipeline.quarantine import repair as repair
from gtm_pipeline.quarantine import rows as qrows
from gtm_pipeline.quarantine import selection as selection
from gtm_pipeline.quarantine.snapshot import Applied, Pending, Snapshot
from gtm_pipeline.routing import engine as routing

LIBRARY = ("gtm_pipeline.quarantine.backfill", "gtm_pipeline.quarantine.backfill_now",
           "gtm_pipeline.quarantine.selection", "gtm_pipeline.quarantine.snapshot", "gtm_pipeline.quarantine.sensors")


@pytest.mark.parametrize("module", LIBRARY)
def test_backfill_library_modules_import_neither_the_definitions_nor_the_runner(module):
    code = (f"import sys, {module}; bad = [m for m in ('gtm_pipeline.definitions', "
            f"'gtm_pipeline.orchestration.runner') if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


P = [Pending("q1", "opportunity", "2026-08-02", "REL-b"), Pending("q2", "opportunity", "2026-08-03", "REL-a"),
     Pending("q3", "lead", "2026-08-02", "REL-a")]


def test_cli_day_requests_are_one_per_day_under_keys_the_sensor_never_uses():
    reqs = backfill.cli_day_requests(Snapshot(pending=P), "20260810T120000")
    assert [(r.day, r.entities) for r in reqs] == [("2026-08-02", ("lead", "opportunity")),
                                                   ("2026-08-03", ("opportunity",))]
    batch = backfill.batch_id(["REL-a", "REL-b"])
    assert {r.batch for r in reqs} == {batch + "-cli"}
    sensor_keys = {r.run_key for r in backfill.decide(Snapshot(pending=P), None, lambda _k: None,
                                                      lambda _e: None).requests}
    assert len({r.run_key for r in reqs}) == 2 and not sensor_keys & {r.run_key for r in reqs}
    assert all(r.run_key.endswith("-20260810T120000") for r in reqs)
    assert backfill.cli_day_requests(Snapshot(), "x") == []


def test_cli_refresh_request_covers_only_entities_applied_after_their_own_last_refresh():
    t = datetime(2026, 8, 10, 12)
    applied = [Applied("q1", "opportunity", "2026-08-03", t, "r1"), Applied("q2", "lead", "2026-08-02", t, "r1")]
    epoch = backfill._epoch(t)
    # opportunity's downstream was rebuilt after the repair, lead's before it: only lead is refreshed.
    req = backfill.cli_refresh_request(Snapshot(applied=applied),
                                       lambda ents: epoch + 1 if ents == ["opportunity"] else epoch - 1)
    assert req is not None and req.entities == ("lead",) and req.since_day == "2026-08-02"
    assert req.day is None and req.run_key == backfill.refresh_key(["q2"]) + "-cli"
    assert backfill.cli_refresh_request(Snapshot(applied=applied), lambda _e: epoch + 1) is None
    never = backfill.cli_refresh_request(Snapshot(applied=applied), lambda _e: None)  # never materialized
    assert never is not None and never.entities == ("lead", "opportunity") and never.since_day == "2026-08-02"


@dataclass
class FakeOutcome:
    run_id: str
    success: bool
    failed_steps: list[str] = field(default_factory=list)


@dataclass
class FakeRunner:
    """Records what it is asked to run; runs nothing (the rows stay released)."""

    calls: list[dict] = field(default_factory=list)
    fail: bool = False

    def __call__(self, job_name, **kw):
        self.calls.append({"job_name": job_name, **kw})
        return FakeOutcome(f"run-{len(self.calls)}", not self.fail, ["clean_opportunity"] if self.fail else [])


@pytest.fixture(scope="module")
def released_warehouse(tmp_path_factory):
    """Hand-made days cleaned, the missing owners routed and released (plain functions)."""
    root = tmp_path_factory.mktemp("backfill_now_wh")
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    build_warehouse(root)
    with duckdb.connect(str(root / "gtm.duckdb")) as con:
        qrows.ensure_repair_tables(con, contracts)
        missing = qrows.select_rows(con, contracts, qrows.Filters(table="missing_owner"))
        repair.repair_by_route(con, contracts, missing, routing.current_rule_set(CONTRACTS_DIR_DEFAULT), actor="t")
        release.release(con, contracts, qrows.select_rows(con, contracts, qrows.Filters(status="repaired")),
                        actor="t")
    return root / "gtm.duckdb"


@pytest.fixture
def defs(env_settings):
    from gtm_pipeline.definitions import build_definitions  # the definitions are the caller's, as in the CLI

    return build_definitions()


@pytest.mark.parametrize("fail", [False, True])
def test_run_backfill_in_process_runs_the_planned_day_through_the_callers_runner(defs, released_warehouse,
                                                                                  tmp_path, fail):
    db = shutil.copy(released_warehouse, tmp_path / "gtm.duckdb")
    run = FakeRunner(fail=fail)
    with dg.instance_for_test() as instance:
        out = backfill_now.run_backfill_in_process(db, definitions=defs, run=run, instance=instance)
    [call] = run.calls  # one affected day; nothing applied, so no refresh
    graph = defs.resolve_asset_graph()
    assert call["job_name"] == keys.REPAIR_BACKFILL_JOB and call["partition_key"] == MISSING_DAY
    assert call["asset_selection"] == selection.partition_selection(graph, ["opportunity"])
    assert call["defs"] is defs and call["instance"] is instance
    assert call["tags"][backfill.TAG_TRIGGER] == "cli" and call["tags"][backfill.TAG_WAREHOUSE] == "duckdb"
    [(req, run_id, ok)] = out.runs
    assert call["tags"][backfill.TAG_RUN_KEY] == req.run_key and req.batch.endswith("-cli")
    assert (req.day, run_id, ok) == (MISSING_DAY, "run-1", not fail)
    assert out.failed_steps == ({"run-1": ["clean_opportunity"]} if fail else {})
    assert out.pending_before == 2 and out.applied == 0 and out.ok is not fail


def test_run_backfill_in_process_with_nothing_released_runs_nothing(defs, tmp_path):
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    run = FakeRunner()
    with dg.instance_for_test() as instance:
        out = backfill_now.run_backfill_in_process(db, definitions=defs, run=run, instance=instance)
    assert run.calls == [] and out.runs == [] and out.ok
