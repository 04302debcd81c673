"""Launch gates (spec 000 §6, issue 20 §2): the contract fails at load with file and field, and the gate is attacked
item by item -- missing evidence, a rollback rehearsed 31 days ago, an event with no volume in 7 days, an unknown
region, evidence edited after the check (hash mismatch refuses the apply) -- each blocking with the file and field
named, logged in the hash-chained decision log."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta

import duckdb
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from gtm_pipeline.cli import main
from gtm_pipeline.config import load_settings
from gtm_pipeline.decisions import flags, log, open_context
from gtm_pipeline.errors import ContractError, GtmPipelineError
from gtm_pipeline.launches import gate
from gtm_pipeline.launches.contract import load_launches
from gtm_pipeline.launches.evidence import file_digest

LAUNCH = "ai_sdr_assistant"
WHERE = f"contracts/launches/{LAUNCH}.yaml"
NOW = datetime(2026, 12, 7, 12, 0)          # 6 days after the shipped rehearsal (2026-12-01)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A private copy of the repository's contracts, the settings pointed at it, the clock frozen at NOW."""
    r = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", r)
    monkeypatch.setenv("GTM_PIPELINE_CONTRACTS_DIR", str(r))
    monkeypatch.setenv("GTM_PIPELINE_NOW", NOW.isoformat())
    return r


def _edit(root, change) -> None:
    path = root / "launches" / f"{LAUNCH}.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc))


def _events(con, rows) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS clean")
    con.execute("CREATE OR REPLACE TABLE clean.activity (activity_id VARCHAR, activity_type VARCHAR, "
                "occurred_at TIMESTAMP)")
    for i, (kind, at) in enumerate(rows):
        con.execute("INSERT INTO clean.activity VALUES (?, ?, ?)", [f"a{i}", kind, at])


@pytest.fixture
def dc(root, env_settings):
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(env_settings.duckdb_path))
    _events(con, [("web_session", NOW - timedelta(days=1)), ("page_view", NOW - timedelta(hours=3)),
                  ("page_view", NOW - timedelta(days=6, hours=23))])
    yield open_context(con, load_settings())
    con.close()


# ---- the contract --------------------------------------------------------------------------------------------------

def test_the_shipped_launch_and_regimes_load():
    launches = load_launches(REPO / "contracts")
    assert set(launches) == {LAUNCH}
    assert launches[LAUNCH].spec.regions == ["EU", "US"]


@pytest.mark.parametrize("change,expected", [
    (lambda d: d.pop("positioning"), "positioning: is required"),
    (lambda d: d.pop("escalation"), "escalation: is required"),
    (lambda d: d.update(ownr=d.pop("owner")), 'ownr: unknown field; allowed: launch, title, owner'),
    (lambda d: d["rollback"].update(flg=d["rollback"].pop("flag")),
     'rollback.flg: unknown field; allowed: flag, time_limit_minutes, max_rehearsal_age_days, rehearsal; '
     'did you mean "flag"?'),
    (lambda d: d["eval_suite"]["thresholds"].update(task_success_min="high"),
     "eval_suite.thresholds.task_success_min: input should be a valid number"),
    (lambda d: d["eval_suite"]["thresholds"].update(hallucination_rate_max=1.5),
     "eval_suite.thresholds.hallucination_rate_max: input should be less than or equal to 1"),
    (lambda d: d["rollback"]["rehearsal"].update(rehearsed_on="last week"),
     "rollback.rehearsal.rehearsed_on: input should be a valid date"),
    (lambda d: d["instrumentation"].update(table="activity; DROP TABLE x"),
     "instrumentation.table: 'activity; DROP TABLE x' is not schema.table"),
    (lambda d: d.update(pricing_hypotheses=[]), "pricing_hypotheses: list should have at least 1 item"),
    (lambda d: d.update(regions=["EU", "BR"]),
     "regions[1]: 'BR' is not a regime of contracts/compliance/regimes.yaml; known: EU, US"),
    (lambda d: d["escalation"][1].update(level=1), "escalation: levels must rise without repeats"),
    (lambda d: d.update(launch="other"), "launch: 'other' must equal the file name"),
    (lambda d: d["enablement"][0].update(evidence="../../../etc/passwd"),
     "enablement[0].evidence: '../../../etc/passwd' must be a path relative to contracts/launches/ without '..'"),
])
def test_a_bad_launch_contract_names_file_and_field(root, change, expected):
    _edit(root, change)
    with pytest.raises(ContractError) as e:
        load_launches(root)
    assert str(e.value).startswith(WHERE + ": ") and expected in str(e.value), e.value


def test_a_bad_regimes_file_names_its_field(root):
    path = root / "compliance" / "regimes.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["regimes"]["EU"].pop("as_of")
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ContractError, match=r"^contracts/compliance/regimes.yaml: regimes.EU.as_of: is required"):
        load_launches(root)


# ---- the gate ------------------------------------------------------------------------------------------------------

def test_a_complete_launch_passes_logs_every_hash_and_applies(dc, root):
    result = gate.check(dc, LAUNCH)
    assert result.passed, result.refusal()
    entry = log.entries(dc.con, result.decision_id)[-1]
    assert (entry.node, entry.event, entry.status) == ("launch.gate", "proposed", "gate_passed")
    hashes = {i["field"]: i["digest"] for i in entry.details_dict["items"]}
    assert hashes["eval_suite.evidence"] == file_digest(root / "launches/evidence" / LAUNCH / "eval_results.csv")
    assert all(h.startswith("sha256:") for h in hashes.values()), hashes
    assert {"rollback.rehearsal", "enablement[1].evidence", "regions[0]", "instrumentation.events[1]"} <= set(hashes)
    assert gate.check(dc, LAUNCH).state == "duplicate"      # same evidence: logged once
    fv = gate.apply(dc, LAUNCH, person="pat@example.com")
    assert fv.value == {"state": "launched", "launch": LAUNCH}
    assert flags.current(dc.con, "FF_LAUNCH_AI_SDR_ASSISTANT").version == 1
    assert log.entries(dc.con, result.decision_id)[-1].status == "launched"
    assert log.verify(dc.con, dc.head).status in ("ok", "unkeyed")
    with pytest.raises(GtmPipelineError, match="already launched"):
        gate.apply(dc, LAUNCH, person="pat@example.com")


def _blocked(dc) -> gate.GateResult:
    result = gate.check(dc, LAUNCH)
    assert not result.passed
    entry = log.entries(dc.con, result.decision_id)[-1]
    assert (entry.event, entry.status) == ("refused", "blocked")
    assert entry.details_dict["message"] == result.refusal()
    return result


def test_missing_evidence_file_blocks_naming_file_and_field(dc, root):
    (root / "launches/evidence" / LAUNCH / "support_faq.md").unlink()
    r = _blocked(dc)
    assert r.refusal() == (
        f"refused: launch {LAUNCH} blocked: {WHERE}: enablement[1].evidence: evidence file "
        f"contracts/launches/evidence/{LAUNCH}/support_faq.md not found; publish 'Support FAQ' for Support and "
        f"point enablement[1].evidence at it")


def test_an_unrehearsed_rollback_blocks(dc, root):
    _edit(root, lambda d: d["rollback"].pop("rehearsal"))
    assert "rollback.rehearsal: no rehearsal recorded; rehearse the rollback" in _blocked(dc).refusal()


@pytest.mark.parametrize("days,passes", [(30, True), (31, False)])
def test_a_rehearsal_older_than_30_days_blocks(dc, root, monkeypatch, days, passes):
    monkeypatch.setenv("GTM_PIPELINE_NOW", (datetime(2026, 12, 1, 8) + timedelta(days=days)).isoformat())
    _events(dc.con, [("web_session", dc.clock()), ("page_view", dc.clock())])
    result = gate.check(dc, LAUNCH)
    assert result.passed is passes, result.items
    if not passes:
        assert f"{WHERE}: rollback.rehearsal.rehearsed_on: rehearsed 2026-12-01, 31 days ago, more than " \
               f"rollback.max_rehearsal_age_days 30" in result.refusal()


def test_a_zero_volume_event_blocks(dc):
    # page_view's only events: one just outside the 7-day window, one in the future of the clock.
    _events(dc.con, [("web_session", NOW - timedelta(hours=1)), ("page_view", NOW - timedelta(days=7, seconds=1)),
                     ("page_view", NOW + timedelta(hours=1))])
    assert (f"{WHERE}: instrumentation.events[1]: clean.activity.activity_type = 'page_view': no event in the "
            f"last 7 days") in _blocked(dc).refusal()


def test_a_missing_event_table_blocks(dc):
    dc.con.execute("DROP TABLE clean.activity")
    assert f"{WHERE}: instrumentation.table: table clean.activity is not in the warehouse" in _blocked(dc).refusal()


def test_an_unknown_region_blocks_at_the_gate(dc, root):
    # The launch loaded when the region existed; the regimes file dropped it since: the gate judges the file now.
    path = root / "compliance" / "regimes.yaml"
    doc = yaml.safe_load(path.read_text())
    del doc["regimes"]["US"]
    path.write_text(yaml.safe_dump(doc))
    assert (f"{WHERE}: regions[1]: 'US' is not a regime of contracts/compliance/regimes.yaml; known: EU"
            in _blocked(dc).refusal())


@pytest.mark.parametrize("cases,expected", [
    ("\n".join(["case_id,task_success,hallucinated"] + [f"c{i},{int(i % 5 != 0)},0" for i in range(40)]),
     "eval_suite.thresholds.task_success_min: task success 0.800 (min 0.85)"),
    ("\n".join(["case_id,task_success,hallucinated"] + [f"c{i},1,{int(i % 10 == 0)}" for i in range(40)]),
     "eval_suite.thresholds.hallucination_rate_max: task success 1.000 (min 0.85), hallucination rate 0.100"),
    ("case_id,task_success,hallucinated\nc1,1,0\n", "holds 1 case(s), fewer than eval_suite.min_cases 20"),
    ("case_id,success\nc1,1\n", "missing column(s) task_success, hallucinated"),
    ("case_id,task_success,hallucinated\nc1,yes,0\n", "row 2: task_success must be 0 or 1, got 'yes'"),
])
def test_eval_results_are_compared_with_the_thresholds(dc, root, cases, expected):
    (root / "launches/evidence" / LAUNCH / "eval_results.csv").write_text(cases + "\n")
    assert expected in _blocked(dc).refusal()


def test_evidence_changed_after_the_check_refuses_apply(dc, root):
    result = gate.check(dc, LAUNCH)
    assert result.passed
    playbook = root / "launches/evidence" / LAUNCH / "sdr_playbook.md"
    before = file_digest(playbook)
    playbook.write_text(playbook.read_text() + "4. Send without reading when busy.\n")
    with pytest.raises(gate.LaunchBlocked) as e:
        gate.apply(dc, LAUNCH, person="pat@example.com")
    assert (f"evidence changed since the check {result.decision_id}: enablement[0].evidence "
            f"(contracts/launches/evidence/{LAUNCH}/sdr_playbook.md): {before} at the check, "
            f"{file_digest(playbook)} now") in str(e.value)
    last = log.entries(dc.con, result.decision_id)[-1]
    assert (last.event, last.status, last.details_dict["gate"]) == ("refused", "gate_passed", "evidence_hash")
    assert flags.current(dc.con, "FF_LAUNCH_AI_SDR_ASSISTANT") is None


def test_apply_rechecks_the_gate(dc, monkeypatch):
    assert gate.check(dc, LAUNCH).passed
    monkeypatch.setenv("GTM_PIPELINE_NOW", datetime(2027, 1, 2, 12).isoformat())   # rehearsal now 32 days old
    _events(dc.con, [("web_session", dc.clock()), ("page_view", dc.clock())])
    with pytest.raises(gate.LaunchBlocked, match=r"rollback.rehearsal.rehearsed_on: .* \(re-checked at apply\)"):
        gate.apply(dc, LAUNCH, person="pat@example.com")
    assert flags.current(dc.con, "FF_LAUNCH_AI_SDR_ASSISTANT") is None


def test_apply_without_a_passing_check_is_refused(dc):
    with pytest.raises(gate.LaunchBlocked, match="has no passing gate check in decisions.log"):
        gate.apply(dc, LAUNCH, person="pat@example.com")
    assert log.entries(dc.con)[-1].event == "refused"


# ---- the CLI -------------------------------------------------------------------------------------------------------

def test_cli_validate_check_and_refusal_exit_codes(dc, root):
    runner = CliRunner()
    ok = runner.invoke(main, ["launches", "validate"])
    assert ok.exit_code == 0 and f"ok: {WHERE}" in ok.output, ok.output
    (root / "launches/evidence" / LAUNCH / "rollback_rehearsal.md").unlink()
    dc.con.close()                          # the CLI opens the warehouse itself
    blocked = runner.invoke(main, ["launches", "check", LAUNCH])
    assert blocked.exit_code == 2, blocked.output
    assert (f"error: refused: launch {LAUNCH} blocked: {WHERE}: rollback.rehearsal.evidence: evidence file "
            f"contracts/launches/evidence/{LAUNCH}/rollback_rehearsal.md not found") in blocked.output
    assert "MISSING rollback.rehearsal.evidence" in blocked.output
