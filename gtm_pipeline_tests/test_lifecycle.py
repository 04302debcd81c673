"""Lifecycle stages with receipts (issue 19 §2, Layer C): the stage contract's errors, forward-only moves (a lost
opportunity and a decayed grade never demote), implied dates for skipped stages, audited recycles, and
metrics.lifecycle_conversion against a hand-worked fixture.

The warehouse is built by hand: four leads in March 2026 with their touches, statuses and opportunities, and a
hand-made metrics.lead_score (only its fit is read). The scoring model is the test's own copy, so the arithmetic in
the comments does not move when contracts/scoring/ is tuned."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from gtm_pipeline.clean import ensure_entity_tables
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.errors import ContractError, GtmPipelineError
from gtm_pipeline.lifecycle.contract import load_lifecycle
from gtm_pipeline.lifecycle.recycle import recycle
from gtm_pipeline.metrics.registry import BuildContext, computations
from gtm_pipeline.warehouse import table_exists

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 4, 1)
# Engagement as the repo's model on the day this test was written: form fill 5, demo 10, half-life 14 days;
# engagement grade 2 from 8 points, fit grade B from 22 (so B2 = fit A/B and engagement >= 8).
MODEL = """
model: icp_test
version: "1"
active: true
owner: RevOps
lift_for_cap: 0.5
total_cap: 100
fit:
  industry: {cap: 30, points: learned}
  size_band: {cap: 10, points: learned}
  segment: {cap: 10, points: learned}
  region: {cap: 5, points: manual, overrides: {na: {points: 2.5, by: RevOps, why: neutral}}}
engagement:
  half_life_days: 14
  form_fill: {points: 5, cap: 15}
  demo: {points: 10, cap: 20}
  page_view: {points: 0.5, cap: 5}
  intent: {points: 4, cap: 10}
grades:
  fit: {A: 30, B: 22}
  engagement: {"1": 20, "2": 8}
"""
LEADS = [  # lead_id, segment, created_at, status, status_changed_at
    ("L1", "smb", "2026-03-01 00:00", "converted", "2026-03-04 00:00"),
    ("L2", "smb", "2026-03-01 00:00", "converted", "2026-03-10 00:00"),   # the CRM said SQL after the opp
    ("L3", "mid_market", "2026-03-02 00:00", "working", "2026-03-02 06:00"),
    ("L4", "smb", "2026-03-01 00:00", "sql", "2026-03-02 00:00"),
]
FIT = {"L1": (35.0, "A"), "L2": (10.0, "C"), "L3": (25.0, "B"), "L4": (31.0, "A")}
ACTIVITIES = [  # id, type, at, lead
    ("A1", "demo", "2026-03-02 12:00", "L1"),        # 10 points: grade A2 -> MQL
    ("A2", "form_fill", "2026-03-03 00:00", "L3"),   # 5: B3
    ("A3", "form_fill", "2026-03-03 12:00", "L3"),   # 5 * 0.5^(0.5/14) + 5 = 9.88: B2 -> MQL
    ("A4", "demo", "2026-03-12 00:00", "L4"),        # after L4's recycle on 03-10: MQL again
]
OPPS = [("O1", "L1", "2026-03-05 00:00"), ("O2", "L2", "2026-03-06 00:00")]
STAGES = [("S1", "O1", "closed_won", "2026-03-20 00:00"), ("S2", "O2", "closed_lost", "2026-03-15 00:00")]


@pytest.fixture
def lab(tmp_path):
    contracts = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", contracts)
    for f in (contracts / "scoring").glob("*.yaml"):
        f.unlink()
    (contracts / "scoring" / "icp_test.yaml").write_text(MODEL)
    con = duckdb.connect(str(tmp_path / "lab.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    entities = load_entity_contracts(contracts)
    for e in ("lead", "account", "activity", "intent", "opportunity", "opportunity_stage"):
        ensure_entity_tables(con, entities[e])
    for lid, seg, created, status, changed in LEADS:
        con.execute("INSERT INTO clean.lead (lead_id, segment, created_at, channel, status, status_changed_at) "
                    "VALUES (?, ?, ?, 'email', ?, ?)", [lid, seg, created, status, changed])
    for aid, kind, at, lid in ACTIVITIES:
        con.execute("INSERT INTO clean.activity (activity_id, activity_type, occurred_at, lead_id) VALUES (?, ?, ?, ?)",
                    [aid, kind, at, lid])
    for oid, lid, at in OPPS:
        con.execute("INSERT INTO clean.opportunity (opportunity_id, account_id, lead_id, created_at) "
                    "VALUES (?, 'AC1', ?, ?)", [oid, lid, at])
    for sid, oid, to, at in STAGES:
        con.execute("INSERT INTO clean.opportunity_stage (stage_event_id, opportunity_id, to_stage, changed_at) "
                    "VALUES (?, ?, ?, ?)", [sid, oid, to, at])
    con.execute("CREATE SCHEMA IF NOT EXISTS metrics")
    con.execute("CREATE TABLE metrics.lead_score (lead_id VARCHAR, fit_score DOUBLE, fit_grade VARCHAR)")
    con.executemany("INSERT INTO metrics.lead_score VALUES (?, ?, ?)", [(k, *v) for k, v in FIT.items()])
    yield con, contracts
    con.close()


def compute(con, contracts, name: str) -> None:
    """Run a computation's SQL and store it as metrics.<name> (the publish layer's audit is not under test)."""
    comp = computations()[name]
    sql = comp.build(con, BuildContext(name, comp.reads, NOW, contracts_dir=contracts))
    con.execute(f"CREATE OR REPLACE TABLE metrics.{name} AS {sql}")
    got = [r[0] for r in con.execute(f"DESCRIBE metrics.{name}").fetchall()]
    assert got == list(comp.columns)


def history(con, lead: str) -> list[tuple]:
    return con.execute("SELECT cycle, stage, strftime(entered_at, '%m-%d %H:%M'), strftime(exited_at, '%m-%d %H:%M'), "
                       "implied, rule FROM metrics.lifecycle_history WHERE lead_id = ? ORDER BY cycle, stage_rank",
                       [lead]).fetchall()


def where_now(con, lead: str) -> tuple:
    return con.execute("SELECT DISTINCT current_stage, highest_stage FROM metrics.lifecycle_history "
                       "WHERE lead_id = ?", [lead]).fetchall()


# ---- the contract --------------------------------------------------------------------------------------------------

def _broken(tmp_path, old: str, new: str) -> Path:
    contracts = tmp_path / "c"
    (contracts / "lifecycle").mkdir(parents=True)
    text = (REPO / "contracts" / "lifecycle" / "stages.yaml").read_text()
    assert old in text
    (contracts / "lifecycle" / "stages.yaml").write_text(text.replace(old, new, 1))
    return contracts


@pytest.mark.parametrize("old, new, message", [
    ("    entry: \"event == 'created'\"", "    entyr: \"event == 'created'\"",
     'contracts/lifecycle/stages.yaml: stages[0].entyr: unknown field; allowed: name, entry, exit; did you mean '
     '"entry"?'),
    ("manual_stages: [other, recycled]", "manual_stages: other",
     "contracts/lifecycle/stages.yaml: manual_stages: input should be a valid list (got 'other')"),
    ("event == 'opportunity'\"", "evnt == 'opportunity'\"",
     'contracts/lifecycle/stages.yaml: stages[3].entry: unknown column "evnt"'),
    ("to_stage == 'closed_lost'", "to_stag == 'closed_lost'",
     'contracts/lifecycle/stages.yaml: stages[3].exit: unknown column "to_stag"'),
    ("manual_stages: [other, recycled]", "manual_stages: [other]",
     "contracts/lifecycle/stages.yaml: manual_stages: must include 'recycled'"),
    ("  - name: sql\n", "  - name: mql\n", "contracts/lifecycle/stages.yaml: stages[2].name: 'mql' is listed twice"),
])
def test_contract_errors_name_the_file_and_the_field(tmp_path, old, new, message):
    with pytest.raises(ContractError) as e:
        load_lifecycle(_broken(tmp_path, old, new))
    assert str(e.value).startswith(message), str(e.value)


def test_the_repo_contract_loads():
    lc = load_lifecycle(REPO / "contracts")
    assert [s.name for s in lc.stages] == ["lead", "mql", "sql", "opportunity", "customer"]
    assert lc.manual == ("other", "recycled")


# ---- forward only --------------------------------------------------------------------------------------------------

def test_stages_are_entered_in_order_with_their_rules(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    assert [r[:5] for r in history(con, "L1")] == [
        (0, "lead", "03-01 00:00", "03-02 12:00", False),
        (0, "mql", "03-02 12:00", "03-04 00:00", False),
        (0, "sql", "03-04 00:00", "03-05 00:00", False),
        (0, "opportunity", "03-05 00:00", "03-20 00:00", False),
        (0, "customer", "03-20 00:00", None, False)]
    assert history(con, "L1")[1][5] == "mql.entry: fit_grade in ('A', 'B') and engagement_grade in ('1', '2')"
    assert where_now(con, "L1") == [("customer", "customer")]


def test_a_lost_opportunity_never_demotes(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    # O2 closed lost on 03-15: the opportunity row is closed by its exit criterion, the record stays there
    assert history(con, "L2")[-1][:5] == (0, "opportunity", "03-06 00:00", "03-15 00:00", False)
    assert where_now(con, "L2") == [("opportunity", "opportunity")]


def test_a_decayed_grade_never_demotes(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    # L3's engagement on 04-01 is 9.88 * 0.5^(29/14) = 2.4, grade B3 -- but it reached B2 on 03-03 12:00
    assert [r[:5] for r in history(con, "L3")] == [(0, "lead", "03-02 00:00", "03-03 12:00", False),
                                                   (0, "mql", "03-03 12:00", None, False)]
    assert where_now(con, "L3") == [("mql", "mql")]


def test_skipped_stages_get_implied_dates(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    # L2 has no touch (no MQL) and the CRM said SQL on 03-10, after the opportunity of 03-06: both take its date
    assert history(con, "L2")[1:3] == [
        (0, "mql", "03-06 00:00", "03-06 00:00", True, "implied: opportunity entered first"),
        (0, "sql", "03-06 00:00", "03-06 00:00", True, "implied: opportunity entered first")]
    # L4 went straight to SQL
    assert history(con, "L4")[1][:5] == (0, "mql", "03-02 00:00", "03-02 00:00", True)


# ---- recycles ------------------------------------------------------------------------------------------------------

def test_a_recycle_is_audited_and_shows_in_the_history(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    r = recycle(con, contracts, "L4", reason="no_budget", by="ana", now=datetime(2026, 3, 10))
    assert con.execute("SELECT lead_id, recycled_at, reason, recycled_by, previous_stage FROM "
                       "ops.lifecycle_recycles").fetchall() == [
        ("L4", datetime(2026, 3, 10), "no_budget", "ana", "sql")]
    assert r.recycle_id.startswith("RC")
    # before the refresh, a second recycle is refused: the lead is already recycled
    with pytest.raises(GtmPipelineError, match="L4: the lead is already recycled"):
        recycle(con, contracts, "L4", reason="no_budget", by="ana", now=datetime(2026, 3, 11))
    compute(con, contracts, "lifecycle_history")
    assert [r[:5] for r in history(con, "L4")] == [
        (0, "lead", "03-01 00:00", "03-02 00:00", False),
        (0, "mql", "03-02 00:00", "03-02 00:00", True),
        (0, "sql", "03-02 00:00", "03-10 00:00", False),
        (1, "recycled", "03-10 00:00", "03-12 00:00", False),
        (1, "mql", "03-12 00:00", None, False)]   # the demo of 03-12 made it an MQL again
    assert history(con, "L4")[3][5] == "recycle: no_budget (by ana)"
    assert where_now(con, "L4") == [("mql", "sql")]   # current stage beside the high-water mark


@pytest.mark.parametrize("lead, reason, by, message", [
    ("L9", "no_budget", "ana", "lifecycle recycle: lead 'L9' is not in clean.lead; check the id"),
    ("L4", "", "ana", "lifecycle recycle L4: --reason '' is not a dq_reason; allowed (contracts/entities/lead.yaml): "
                      "no_budget, "),
    ("L4", "no_budgte", "ana", "lifecycle recycle L4: --reason 'no_budgte' is not a dq_reason"),
    ("L4", "no_budget", " ", "lifecycle recycle L4: --by is empty"),
])
def test_a_bad_recycle_is_refused_and_leaves_no_row(lab, lead, reason, by, message):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    with pytest.raises(GtmPipelineError) as e:
        recycle(con, contracts, lead, reason=reason, by=by, now=NOW)
    assert str(e.value).startswith(message), str(e.value)
    assert not table_exists(con, "ops", "lifecycle_recycles")   # created with the first receipt, never before


def test_the_recycle_command(lab, monkeypatch):
    from gtm_pipeline.cli import main

    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    path = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]
    con.close()
    monkeypatch.setenv("GTM_PIPELINE_DUCKDB", path)
    monkeypatch.setenv("GTM_PIPELINE_CONTRACTS_DIR", str(contracts))
    monkeypatch.setenv("GTM_PIPELINE_NOW", "2026-03-10T00:00:00Z")
    res = CliRunner().invoke(main, ["lifecycle", "validate"])
    assert res.exit_code == 0 and "4. opportunity: entry: event == 'opportunity'; exit: " in res.output, res.output
    res = CliRunner().invoke(main, ["lifecycle", "recycle", "L9", "--reason", "no_budget", "--by", "ana"])
    assert res.exit_code == 2 and "lead 'L9' is not in clean.lead" in res.output, res.output
    res = CliRunner().invoke(main, ["lifecycle", "recycle", "L4", "--by", "ana"])
    assert res.exit_code == 2 and "Missing option '--reason'" in res.output, res.output
    res = CliRunner().invoke(main, ["lifecycle", "recycle", "L4", "--reason", "no_budget", "--by", "ana"])
    assert res.exit_code == 0 and "recycled L4 from sql at 2026-03-10 00:00:00 UTC (no_budget, by ana)" \
        in res.output, res.output
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT lead_id, previous_stage, recycled_by FROM ops.lifecycle_recycles").fetchall() \
            == [("L4", "sql", "ana")]


# ---- conversion ----------------------------------------------------------------------------------------------------

def test_lifecycle_conversion_equals_the_hand_fixture(lab):
    con, contracts = lab
    compute(con, contracts, "lifecycle_history")
    recycle(con, contracts, "L4", reason="no_budget", by="ana", now=datetime(2026, 3, 10))
    compute(con, contracts, "lifecycle_history")
    compute(con, contracts, "lifecycle_conversion")
    got = con.execute("SELECT from_stage, to_stage, entered, converted, median_days FROM metrics.lifecycle_conversion "
                      "WHERE cohort_month = 'all' AND segment = 'all' ORDER BY from_rank").fetchall()
    assert got == [
        # lead -> mql: L1 1.5 days, L2 5 (implied by its opportunity), L3 1.5, L4 1 (implied by its SQL)
        ("lead", "mql", 4, 4, 1.5),
        # mql -> sql: L1 1.5, L2 0, L4 0 (cycle 0); L3 and L4's second MQL (cycle 1) have not gone on
        ("mql", "sql", 5, 3, 0.0),
        # sql -> opportunity: L1 1, L2 0; L4 was recycled from SQL
        ("sql", "opportunity", 3, 2, 0.5),
        # opportunity -> customer: L1 15 days; L2 lost
        ("opportunity", "customer", 2, 1, 15.0)]
    by_segment = con.execute("SELECT segment, cohort_month, entered, converted, median_days FROM "
                             "metrics.lifecycle_conversion WHERE from_stage = 'lead' AND segment <> 'all' "
                             "ORDER BY segment, cohort_month").fetchall()
    assert by_segment == [("mid_market", "2026-03", 1, 1, 1.5), ("mid_market", "all", 1, 1, 1.5),
                          ("smb", "2026-03", 3, 3, 1.5), ("smb", "all", 3, 3, 1.5)]
