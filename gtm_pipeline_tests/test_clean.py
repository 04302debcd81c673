"""Clean stage on hand-made exports: each break action of spec 002 §3, idempotent re-runs, and the ledger."""

from __future__ import annotations

import json

import duckdb
import pytest

from gtm_pipeline.clean import clean_partition
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.datatime import blocked_text
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine.ledger import conservation

D1, D2 = "2026-08-01", "2026-08-02"
HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
          "currency,segment,region,industry,size_band,channel,close_date")


def row(oid, *, owner="U1", stage="discovery", amount="4320", seats="10", created="2026-08-01 10:00:00",
        segment="smb", channel="email"):
    return (f"{oid},A1,L1,{owner},{created},{stage},core,40,0.1,{seats},{amount},USD,{segment},na,software,11-50,"
            f"{channel},2026-09-30")


@pytest.fixture
def env(tmp_path):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contract = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def deliver(day: str, rows: list[str]):
        p = tmp_path / "landing" / "crm" / day / "opportunities.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join([HEADER, *rows]) + "\n")
        ingest_day(con, spec, tmp_path / "landing", "crm", day)
        return clean_partition(con, spec, contract, day)

    yield con, deliver, spec
    con.close()


def test_normalised_values_land_typed_and_in_utc(env):
    con, deliver, _ = env
    rep = deliver(D1, [row("O1", stage=" Closed Won ", segment="SMB", channel="Paid Search",
                           created="2026-08-01T06:00:00-04:00")])
    assert rep.clean == 1 and not rep.counts
    stage, segment, channel, created = con.execute(
        "SELECT stage, segment, channel, created_at FROM clean.opportunity").fetchone()
    assert (stage, segment, channel) == ("closed_won", "smb", "paid_search")
    assert str(created) == "2026-08-01 10:00:00"


def test_enum_violation_is_quarantined_with_an_incident(env):
    con, deliver, _ = env
    rep = deliver(D1, [row("O1"), row("O2", stage="negotiaton")])
    assert (rep.clean, rep.quarantined) == (1, 1)
    rule, reason, status, version, payload = con.execute(
        "SELECT rule, reason, status, contract_version, payload FROM quarantine.opportunity").fetchone()
    assert rule == "enum" and status == "open" and version == "1.0.0"
    assert "stage: 'negotiaton' is not an allowed value" in reason
    assert json.loads(payload)["stage"] == "negotiaton"
    sev, state = con.execute("SELECT severity, status FROM ops.incidents").fetchone()
    assert (sev, state) == ("SEV3", "open")


def test_out_of_range_blocks_the_day_keeps_the_previous_version_and_notifies_the_owner(env):
    con, deliver, _ = env
    assert deliver(D1, [row("O1"), row("O2")]).clean == 2
    published_before = con.execute("SELECT opportunity_id, amount FROM clean.opportunity ORDER BY 1").fetchall()
    rep = deliver(D1, [row("O1"), row("O2", amount="4320000000"), row("O3")])  # a re-delivery with a unit error
    assert rep.blocked and rep.quarantined == 1 and rep.held == 2 and rep.clean == 0
    assert con.execute("SELECT opportunity_id, amount FROM clean.opportunity ORDER BY 1").fetchall() == published_before
    statuses = dict(con.execute("SELECT status, count(*) FROM quarantine.opportunity GROUP BY 1").fetchall())
    assert statuses == {"open": 1, "held": 2}
    open_incidents = con.execute("SELECT severity, rule FROM ops.incidents WHERE status = 'open'").fetchall()
    assert open_incidents == [("SEV3", "range")]
    recipient, subject = con.execute("SELECT recipient, subject FROM ops.notifications").fetchone()
    assert recipient == "RevOps" and "not published" in subject
    # The fixed re-delivery publishes, releases the held rows and resolves the incident.
    rep = deliver(D1, [row("O1"), row("O2"), row("O3")])
    assert not rep.blocked and rep.clean == 3
    assert con.execute("SELECT count(*) FROM quarantine.opportunity").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM ops.incidents WHERE status = 'open'").fetchone()[0] == 0


def test_missing_owner_goes_to_quarantine_missing_owner(env):
    con, deliver, _ = env
    rep = deliver(D1, [row("O1", owner="")])
    assert rep.missing_owner == 1 and rep.clean == 0 and rep.quarantined == 0
    entity, rule, reason = con.execute("SELECT entity, rule, reason FROM quarantine.missing_owner").fetchone()
    assert (entity, rule) == ("opportunity", "required") and "owner_id: required value is missing" in reason


def test_wrong_types_are_quarantined_naming_column_and_value(env):
    con, deliver, _ = env
    deliver(D1, [row("O1", seats="ten")])
    assert con.execute("SELECT reason FROM quarantine.opportunity").fetchone()[0] == "seats: 'ten' is not an integer"


def test_duplicates_in_a_day_and_across_days_are_rejected_naming_the_first_copy(env):
    con, deliver, _ = env
    deliver(D1, [row("O1"), row("O1")])
    deliver(D2, [row("O1"), row("O2")])
    rejects = con.execute("SELECT _file, _line, reason FROM raw.rejects WHERE stage = 'clean' ORDER BY 1, 2").fetchall()
    assert rejects == [
        (f"crm/{D1}/opportunities.csv", 3, f"duplicate of crm/{D1}/opportunities.csv:2 on key (opportunity_id) = (O1)"),
        (f"crm/{D2}/opportunities.csv", 2, f"duplicate of crm/{D1}/opportunities.csv:2 on key (opportunity_id) = (O1)"),
    ]
    assert con.execute("SELECT count(*) FROM clean.opportunity").fetchone()[0] == 2


def test_late_records_are_accepted_and_flagged(env):
    con, deliver, _ = env
    rep = deliver(D2, [row("O1", created="2026-07-25 09:00:00"), row("O2", created="2026-08-02 09:00:00")])
    assert rep.late == 1
    assert con.execute("SELECT opportunity_id FROM clean.opportunity WHERE _late").fetchall() == [("O1",)]


def test_rerunning_a_day_changes_no_count_and_the_ledger_balances(env):
    con, deliver, spec = env
    rows = [row("O1"), row("O2", stage="bogus"), row("O3", owner=""), row("O1"), "broken,line"]
    first = deliver(D1, rows)
    snapshot = lambda: [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (  # noqa: E731
        "clean.opportunity", "quarantine.opportunity", "quarantine.missing_owner", "raw.rejects", "ops.incidents")]
    before = snapshot()
    for _ in range(2):
        again = deliver(D1, rows)
    assert snapshot() == before
    assert (again.clean, again.quarantined, again.missing_owner, again.rejected) == (
        first.clean, first.quarantined, first.missing_owner, first.rejected) == (1, 1, 1, 1)
    ledger = conservation(con, spec, "crm").iloc[0]
    assert ledger["records"] == 5 and ledger["lost"] == 0 and ledger["in_two_places"] == 0
    assert ledger["records"] == (ledger["clean"] + ledger["quarantined"] + ledger["rejected_clean"]
                                 + ledger["rejected_ingest"])


def test_held_rows_say_which_check_blocked_their_day_in_the_one_wording(env):
    con, deliver, _ = env
    deliver(D1, [row("O1"), row("O2", amount="4320000000"), row("O3", seats="0")])
    reasons = {r for (r,) in con.execute("SELECT DISTINCT reason FROM quarantine.opportunity WHERE status = 'held'")
               .fetchall()}
    assert reasons == {"held: " + blocked_text("clean/opportunity", (D1,), check="ranges_in_bounds", rule="range",
                                               rows=2)}
