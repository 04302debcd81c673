"""Quarantine repair on a temporary DuckDB (plain functions, no Dagster): the three repair methods, re-validation,
release, the audit trail, and the clean stage's repair overlay (exactly once, ledger, held days, migration)."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from repair_landing import DAYS, MISSING_AMOUNTS, MISSING_DAY, OPP_HEADER, opp, write_landing

from gtm_pipeline.clean import QUARANTINE_DDL, clean_partition, validate_payloads
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine import release as release
from gtm_pipeline.quarantine import repair as repair
from gtm_pipeline.quarantine import rows as qrows
from gtm_pipeline.quarantine.ledger import conservation
from gtm_pipeline.quarantine.rows import Filters
from gtm_pipeline.routing import engine as routing

SPEC = load_landing_spec(CONTRACTS_DIR_DEFAULT)
CONTRACTS = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
ENTITIES = ("owner", "account", "lead", "opportunity")
V1 = routing.current_rule_set(CONTRACTS_DIR_DEFAULT)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The hand-made days ingested and cleaned once per module; each test works on its own copy."""
    root = tmp_path_factory.mktemp("repair_wh")
    landing = write_landing(root / "landing")
    with duckdb.connect(str(root / "w.duckdb")) as con:
        for d in DAYS:
            ingest_day(con, SPEC, landing, "crm", d)
            for e in ENTITIES:
                clean_partition(con, SPEC, CONTRACTS[e], d, run_id="initial")
        qrows.ensure_repair_tables(con, CONTRACTS)
    return root


class Wh:
    def __init__(self, built, tmp_path):
        shutil.copytree(built / "landing", tmp_path / "landing")
        shutil.copy(built / "w.duckdb", tmp_path / "w.duckdb")
        self.landing = tmp_path / "landing"
        self.con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def rows(self, **kw):
        return qrows.select_rows(self.con, CONTRACTS, Filters(**kw))

    def reclean(self, day=MISSING_DAY, run_id="backfill-1"):
        return clean_partition(self.con, SPEC, CONTRACTS["opportunity"], day, run_id=run_id)

    def opps(self):
        return self.con.execute("SELECT count(*), sum(amount) FROM clean.opportunity").fetchone()

    def ledger(self):
        df = conservation(self.con, SPEC)
        return df[df["table"] == "crm/opportunities"][["clean", "quarantined", "lost", "in_two_places"]].sum().to_dict()

    def status(self, qid):
        return self.rows(ids=(qid,)).iloc[0]["status"]


@pytest.fixture
def wh(built, tmp_path):
    w = Wh(built, tmp_path)
    yield w
    w.con.close()


def test_list_counts_and_filters(wh):
    rows = wh.rows()
    counts = qrows.summarize(rows)
    assert set(zip(counts["quarantine_table"], counts["rule"], counts["rows"])) == {
        ("missing_owner", "required", 2), ("opportunity", "enum", 1)}
    assert len(wh.rows(rule="enum")) == 1 and len(wh.rows(column="owner_id")) == 2
    assert len(wh.rows(day=DAYS[0])) == 0 and len(wh.rows(table="missing_owner", status="open")) == 2
    assert set(qrows.samples(rows)["where"]) == {f"crm/{MISSING_DAY}/opportunities.csv:{n}" for n in (6, 7, 8)}
    with pytest.raises(GtmPipelineError, match="--entity opportunty: unknown entity; known: account"):
        wh.rows(entity="opportunty")


def test_route_repair_assigns_owners_audits_and_revalidates(wh):
    rep = repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="jane")
    assert rep.count("repaired") == 2 and not rep.unrouted
    owners = {o.quarantine_id: o.changes["owner_id"] for o in rep.outcomes}
    # OM1 (smb/na) -> the smb/na AE idle the longest; OM2 (mid_market/emea) -> the only such AE
    assert sorted(owners.values()) == [(None, "U02"), (None, "U03")]
    audit = wh.con.execute("SELECT column_name, before_value, after_value, method, actor, outcome, note "
                           "FROM quarantine.repairs ORDER BY after_value").fetchall()
    assert [a[:6] for a in audit] == [("owner_id", None, "U02", "route", "jane", "repaired"),
                                      ("owner_id", None, "U03", "route", "jane", "repaired")]
    assert "rule ae_same_segment_same_region of v1@1.0.0" in audit[0][6]
    assert wh.con.execute("SELECT count(*) FROM ops.routing_assignments").fetchone()[0] == 2
    # The original payload is kept; the corrected values are beside it.
    r = wh.rows(status="repaired").iloc[0]
    assert json.loads(r["payload"])["owner_id"] is None and json.loads(r["repaired_payload"])["owner_id"]
    # Routing again finds nothing to do: the rows have an owner now.
    again = repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="jane")
    assert again.count("repaired") == 0 and all("has an owner already" in o.reason for o in again.outcomes)


def test_route_repair_only_touches_missing_owner_rows(wh):
    rep = repair.repair_by_route(wh.con, CONTRACTS, wh.rows(rule="enum"), V1, actor="jane")
    assert [o.reason for o in rep.outcomes] == ["not quarantined for a missing owner"]


def test_unroutable_goes_to_the_dlq_and_replay_repairs_it(wh):
    wh.con.execute("UPDATE clean.owner SET capacity_per_day = 0 WHERE team = 'ae'")
    rep = repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="jane")
    assert rep.count("repaired") == 0 and len(rep.unrouted) == 2
    assert all(s == "open" for s in wh.rows(table="missing_owner")["status"])
    assert len(routing.dlq_entries(wh.con, "open")) == 2
    wh.con.execute("UPDATE clean.owner SET capacity_per_day = 5 WHERE team = 'ae'")  # the fix
    replay = routing.replay_dlq(wh.con, V1)
    fixed = repair.repair_from_replay(wh.con, CONTRACTS, replay, actor="ops")
    assert fixed.count("repaired") == 2 and routing.dlq_entries(wh.con, "open").empty
    notes = [n for (n,) in wh.con.execute("SELECT note FROM quarantine.repairs").fetchall()]
    assert all(n.startswith("DLQ replay DLQ-") for n in notes)


def test_enum_map_repairs_bad_values_and_checks_the_target(wh, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: {stage_7: negotiating}\n")
    with pytest.raises(GtmPipelineError, match=r"stage: 'stage_7' -> 'negotiating': 'negotiating' is not an allowed "
                                               r"value of opportunity.stage; allowed: prospecting"):
        repair.repair_by_enum_map(wh.con, CONTRACTS, wh.rows(), repair.load_enum_map(bad), actor="j", source=str(bad))
    notenum = tmp_path / "amount.csv"
    notenum.write_text("column,bad,good\namount,x,1\n")
    with pytest.raises(GtmPipelineError, match="column 'amount' is not an enum column"):
        repair.repair_by_enum_map(wh.con, CONTRACTS, wh.rows(), repair.load_enum_map(notenum), actor="j")
    good = tmp_path / "fix.csv"
    good.write_text("column,bad,good\nstage,STAGE 7,negotiation\n")  # matched spelling-insensitively
    rep = repair.repair_by_enum_map(wh.con, CONTRACTS, wh.rows(), repair.load_enum_map(good), actor="j")
    assert [(o.status, o.changes) for o in rep.outcomes] == [("repaired", {"stage": ("stage_7", "negotiation")})]


def test_csv_repair_keyed_by_id_and_a_row_that_still_fails_keeps_the_new_reason(wh, tmp_path):
    qid = wh.rows(rule="enum").iloc[0]["quarantine_id"]
    f = tmp_path / "fixes.csv"
    f.write_text(f"quarantine_id,stage,amount\n{qid},proposal,lots\n")
    rep = repair.repair_by_csv(wh.con, CONTRACTS, f, actor="j")
    assert rep.count("open") == 1
    row = wh.rows(ids=(qid,)).iloc[0]
    assert (row["status"], row["rule"], row["reason"]) == ("open", "type", "amount: 'lots' is not a number")
    # The next repair starts from the partial one and completes it.
    f.write_text(f"quarantine_id,amount\n{qid},777\n")
    rep = repair.repair_by_csv(wh.con, CONTRACTS, f, actor="j")
    assert rep.count("repaired") == 1
    assert json.loads(wh.rows(ids=(qid,)).iloc[0]["repaired_payload"])["stage"] == "proposal"
    befores = wh.con.execute("SELECT column_name, before_value, after_value FROM quarantine.repairs "
                             "ORDER BY changed_at, column_name").fetchall()
    assert befores == [("amount", "777", "lots"), ("stage", "stage_7", "proposal"), ("amount", "lots", "777")]


@pytest.mark.parametrize("text,expected", [
    ("id,stage\nx,proposal\n", "fixes.csv: the header has no quarantine_id column"),
    ("quarantine_id,stage\nnope,proposal\n", "fixes.csv:2: quarantine_id nope not found"),
    ("quarantine_id,stagee\n{qid},proposal\n", "fixes.csv:2: column 'stagee' is not a column of opportunity"),
    ("quarantine_id,stage\n{qid},a\n{qid},b\n", "fixes.csv:3: quarantine_id {qid} appears twice"),
])
def test_csv_errors_name_file_line_and_fix(wh, tmp_path, text, expected):
    qid = wh.rows(rule="enum").iloc[0]["quarantine_id"]
    f = tmp_path / "fixes.csv"
    f.write_text(text.format(qid=qid))
    with pytest.raises(GtmPipelineError) as e:
        repair.repair_by_csv(wh.con, CONTRACTS, f, actor="j")
    assert expected.format(qid=qid) in str(e.value)
    assert wh.con.execute("SELECT count(*) FROM quarantine.repairs").fetchone()[0] == 0  # all or nothing


def test_a_repair_that_would_duplicate_a_clean_key_is_not_valid(wh, tmp_path):
    qid = wh.rows(rule="enum").iloc[0]["quarantine_id"]
    f = tmp_path / "fixes.csv"
    f.write_text(f"quarantine_id,stage,opportunity_id\n{qid},proposal,O10\n")
    repair.repair_by_csv(wh.con, CONTRACTS, f, actor="j")
    row = wh.rows(ids=(qid,)).iloc[0]
    assert row["status"] == "open" and "opportunity_id: already in clean.opportunity at crm/2026-08-02" in row["reason"]


def test_validate_payloads_agrees_with_the_clean_stage(wh):
    rows = wh.rows()
    payloads = [json.loads(p) for p in rows["payload"]]
    _, verdicts = validate_payloads(wh.con, CONTRACTS["opportunity"], payloads)
    assert ["; ".join(v.message for v in vs) for vs in verdicts] == list(rows["reason"])


def test_release_revalidates_and_batches(wh):
    repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="j")
    a, b = wh.rows(status="repaired")["quarantine_id"]
    enum_ids = set(wh.rows(rule="enum")["quarantine_id"])
    # Simulate the contract moving on between repair and release: b's repaired value is no longer valid.
    p = json.loads(wh.rows(ids=(b,)).iloc[0]["repaired_payload"])
    p["stage"] = "stage_9"
    wh.con.execute("UPDATE quarantine.missing_owner SET repaired_payload = ? WHERE quarantine_id = ?",
                   [json.dumps(p), b])
    rel = release.release(wh.con, CONTRACTS, wh.rows(), actor="j")
    assert rel.released == [a] and rel.refused[0][0] == b and "stage_9" in rel.refused[0][1]
    assert {q for q, _ in rel.skipped} == enum_ids
    assert (wh.status(a), wh.status(b)) == ("released", "open")
    assert rel.days == {MISSING_DAY: ["opportunity"]} and rel.release_id.startswith("REL-")


def test_released_rows_enter_clean_exactly_once(wh):
    before = wh.opps()
    assert before == (12, 12000.0) and wh.ledger() == {"clean": 12, "quarantined": 3, "lost": 0, "in_two_places": 0}
    repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="j")
    rel = release.release(wh.con, CONTRACTS, wh.rows(status="repaired"), actor="j")
    # Repaired and released rows still wait in quarantine: counted there, not lost.
    assert wh.ledger() == {"clean": 12, "quarantined": 3, "lost": 0, "in_two_places": 0}
    first = wh.reclean(run_id="backfill-1")
    assert first.applied == 2 and first.missing_owner == 0
    after = wh.opps()
    assert after == (14, 12000.0 + sum(MISSING_AMOUNTS))
    rows = wh.rows(ids=tuple(rel.released))
    assert set(rows["status"]) == {"applied"} and set(rows["applied_run_id"]) == {"backfill-1"}
    assert wh.ledger() == {"clean": 14, "quarantined": 1, "lost": 0, "in_two_places": 0}
    # However often the day is cleaned again, nothing is duplicated and the link to the first run stays.
    for run in ("backfill-2", "daily-3"):
        again = wh.reclean(run_id=run)
        assert again.applied == 0 and wh.opps() == after
    assert set(wh.rows(ids=tuple(rel.released))["applied_run_id"]) == {"backfill-1"}
    assert wh.ledger() == {"clean": 14, "quarantined": 1, "lost": 0, "in_two_places": 0}
    owners = wh.con.execute("SELECT owner_id FROM clean.opportunity WHERE opportunity_id IN ('OM1', 'OM2') "
                            "ORDER BY 1").fetchall()
    assert owners == [("U02",), ("U03",)]
    # Re-ingesting the raw day (same file) and cleaning again also changes nothing.
    ingest_day(wh.con, SPEC, wh.landing, "crm", MISSING_DAY)
    wh.reclean(run_id="daily-4")
    assert wh.opps() == after and wh.ledger()["lost"] == 0


def test_unreleased_repairs_survive_a_reclean_and_do_not_apply(wh):
    repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="j")
    wh.reclean(run_id="daily-2")
    assert set(wh.rows(table="missing_owner")["status"]) == {"repaired"} and wh.opps() == (12, 12000.0)
    assert wh.ledger()["quarantined"] == 3 and len(wh.rows()) == 3  # no second row per record


def test_a_released_row_the_contract_rejects_at_apply_time_goes_back_to_open(wh):
    repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="j")
    rel = release.release(wh.con, CONTRACTS, wh.rows(status="repaired"), actor="j")
    qid = rel.released[0]
    p = json.loads(wh.rows(ids=(qid,)).iloc[0]["released_payload"])
    p["amount"] = "-5"  # as if the contract's range had changed after the release
    wh.con.execute("UPDATE quarantine.missing_owner SET released_payload = ? WHERE quarantine_id = ?",
                   [json.dumps(p), qid])
    rep = wh.reclean()
    assert rep.blocked  # amount is out of range: the day is not published, as spec 002 §3 says
    row = wh.rows(ids=(qid,)).iloc[0]
    assert row["status"] == "open" and "amount: -5.0 is outside [0, 5000000]" in row["reason"]
    assert json.loads(row["payload"])["owner_id"] is None  # the original values are kept
    assert len(wh.rows(ids=(qid,))) == 1
    assert wh.ledger()["lost"] == 0


def test_a_blocked_day_publishes_with_its_repairs_once_the_bad_row_is_fixed(wh, tmp_path):
    # Deliver day 3 again with an out-of-range amount: the whole day is held (spec 002 §3 block publish).
    path = wh.landing / "crm" / DAYS[2] / "opportunities.csv"
    path.write_text(path.read_text() + opp("OX1", DAYS[2], amount=9e9) + "\n")
    ingest_day(wh.con, SPEC, wh.landing, "crm", DAYS[2])
    rep = wh.reclean(DAYS[2], run_id="daily-2")
    assert rep.blocked and rep.held == 4
    bad = wh.rows(day=DAYS[2], rule="range").iloc[0]["quarantine_id"]
    f = tmp_path / "fix.csv"
    f.write_text(f"quarantine_id,amount\n{bad},9000\n")
    repair.repair_by_csv(wh.con, CONTRACTS, f, actor="j")
    release.release(wh.con, CONTRACTS, wh.rows(ids=(bad,)), actor="j")
    rep = wh.reclean(DAYS[2], run_id="backfill-1")
    assert not rep.blocked and rep.clean == 5 and rep.applied == 1
    assert wh.status(bad) == "applied" and wh.rows(day=DAYS[2], status="held").empty
    assert wh.con.execute("SELECT amount FROM clean.opportunity WHERE opportunity_id = 'OX1'").fetchall() == [(9000.0,)]


def test_old_quarantine_tables_are_migrated_in_place(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE SCHEMA quarantine")
    con.execute(f"CREATE TABLE quarantine.opportunity {QUARANTINE_DDL}")
    con.execute("INSERT INTO quarantine.opportunity (quarantine_id, entity, status, payload) "
                "VALUES ('q1', 'opportunity', 'open', '{}')")
    qrows.ensure_repair_tables(con, CONTRACTS)
    cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_schema = 'quarantine' AND table_name = 'opportunity'").fetchall()}
    assert {"repaired_payload", "released_payload", "release_id", "applied_run_id"} <= cols
    assert con.execute("SELECT quarantine_id, status FROM quarantine.opportunity").fetchall() == [("q1", "open")]
    con.close()


def test_show_returns_the_row_and_its_audit(wh):
    repair.repair_by_route(wh.con, CONTRACTS, wh.rows(table="missing_owner"), V1, actor="j")
    qid = wh.rows(status="repaired").iloc[0]["quarantine_id"]
    row, audit = qrows.show(wh.con, CONTRACTS, qid)
    assert row["quarantine_table"] == "missing_owner" and list(audit["method"]) == ["route"]
    with pytest.raises(GtmPipelineError, match="quarantine id 'nope' not found"):
        qrows.show(wh.con, CONTRACTS, "nope")


def test_export_template_round_trips_through_csv_repair(wh, tmp_path):
    out = tmp_path / "t.csv"
    assert qrows.export_template(wh.rows(rule="enum"), CONTRACTS, out) == 1
    text = out.read_text().splitlines()
    assert text[0] == "quarantine_id," + OPP_HEADER and ",stage_7," in text[1]
    out.write_text(text[0] + "\n" + text[1].replace(",stage_7,", ",proposal,") + "\n")
    assert repair.repair_by_csv(wh.con, CONTRACTS, out, actor="j").count("repaired") == 1
    with pytest.raises(GtmPipelineError, match=r"belong to 0 entities \(none\); export one entity at a time"):
        qrows.export_template(wh.rows().iloc[0:0], CONTRACTS, out)
