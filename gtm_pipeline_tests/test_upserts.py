"""Upserts with history (SCD type 2, `gtm_pipeline.clean.history`): drills that try to lose an update, bring an old
version back, count a record twice or let a blocked or quarantined delivery replace a good version."""

from __future__ import annotations

import duckdb
import pytest

from gtm_pipeline.clean import clean_partition
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.clean.stage import clean_days
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine.ledger import conservation, render
from gtm_pipeline_tests.test_clean import HEADER, row

D1, D2, D3 = "2026-08-01", "2026-08-02", "2026-08-03"
OID = "O0000002"
SPEC = load_landing_spec(CONTRACTS_DIR_DEFAULT)
CONTRACT = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"]
# _published_at is when a run wrote the row: the only column a re-run may change.
COLS = "* EXCLUDE (_published_at)"


class Wh:
    def __init__(self, tmp_path, name: str = "w"):
        self.landing = tmp_path / f"{name}_landing"
        self.con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))

    def land(self, day: str, rows: list[str]) -> None:
        p = self.landing / "crm" / day / "opportunities.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join([HEADER, *rows]) + "\n")
        ingest_day(self.con, SPEC, self.landing, "crm", day)

    def deliver(self, day: str, rows: list[str]):
        self.land(day, rows)
        return clean_partition(self.con, SPEC, CONTRACT, day)

    def clean(self) -> list[tuple]:
        return self.con.execute("SELECT opportunity_id, stage, _partition::VARCHAR, _file, _line "
                                "FROM clean.opportunity ORDER BY ALL").fetchall()

    def versions(self, oid: str = OID) -> list[tuple]:
        return self.con.execute("SELECT stage, valid_from::VARCHAR, valid_to::VARCHAR, _file, _line "
                                "FROM clean.opportunity_history WHERE opportunity_id = ? ORDER BY valid_from",
                                [oid]).fetchall()

    def tables(self) -> tuple[list, list]:
        return tuple(self.con.execute(f"SELECT {COLS} FROM clean.{t} ORDER BY _file, _line").fetchall()
                     for t in ("opportunity", "opportunity_history"))

    def assert_conserved(self) -> None:
        df = conservation(self.con, SPEC)
        df = df[df["table"] == "crm/opportunities"]
        assert len(df) and (df["lost"] == 0).all(), df
        assert (df["records"] == df["clean"] + df["superseded"] + df["quarantined"] + df["held"]
                + df["rejected"]).all(), df
        assert (df["in_two_places"] == 0).all(), df

    def ledger_day(self, day: str) -> dict:
        df = conservation(self.con, SPEC, day=day)
        return df[df["table"] == "crm/opportunities"].iloc[0].to_dict()


@pytest.fixture
def wh(tmp_path):
    w = Wh(tmp_path)
    yield w
    w.con.close()


def f(day: str) -> str:
    return f"crm/{day}/opportunities.csv"


def test_a_re_export_that_changes_the_stage_is_an_update_with_two_versions(wh):
    wh.deliver(D1, [row("O0000001"), row(OID, stage="prospecting")])
    rep = wh.deliver(D2, [row(OID, stage="negotiation")])
    assert (rep.clean, rep.rejected, rep.superseded) == (1, 0, 0)
    assert wh.clean() == [("O0000001", "discovery", D1, f(D1), 2), (OID, "negotiation", D2, f(D2), 2)]
    assert wh.versions() == [("prospecting", D1, D2, f(D1), 3), ("negotiation", D2, None, f(D2), 2)]
    assert wh.con.execute("SELECT count(*) FROM raw.rejects").fetchone()[0] == 0
    wh.assert_conserved()
    day1, day2 = wh.ledger_day(D1), wh.ledger_day(D2)
    assert (day1["records"], day1["clean"], day1["superseded"]) == (2, 1, 1)
    assert (day2["records"], day2["clean"], day2["superseded"]) == (1, 1, 0)
    assert "3 records = 2 clean + 1 superseded + 0 quarantined + 0 held + 0 rejected; lost: 0" in render(wh.con, SPEC)


def test_re_running_any_day_in_any_order_is_idempotent_and_day_1_never_becomes_current_again(wh, tmp_path):
    days = {D1: [row(OID, stage="prospecting")], D2: [row(OID, stage="negotiation")],
            D3: [row(OID, stage="negotiation", amount="5000")]}
    for d, rows in days.items():
        wh.deliver(d, rows)
    after = wh.tables()
    assert [v[0] for v in wh.versions()] == ["prospecting", "negotiation", "negotiation"]
    for d in (D1, D2, D1, D3, D2):
        clean_partition(wh.con, SPEC, CONTRACT, d)
        assert wh.tables() == after, f"re-running {d} changed clean or history"
    assert wh.clean() == [(OID, "negotiation", D3, f(D3), 2)]
    # The same deliveries published last day first, and all at once, end in the same tables.
    for order in ([D3, D1, D2], None):
        other = Wh(tmp_path, f"other_{order is None}")
        for d, rows in days.items():
            other.land(d, rows)
        if order:
            for d in order:
                clean_partition(other.con, SPEC, CONTRACT, d)
        else:
            clean_days(other.con, SPEC, CONTRACT, list(days))
        assert other.tables() == after, f"order {order or 'one batch'}"
        other.assert_conserved()
        other.con.close()
    wh.assert_conserved()


def test_a_second_copy_on_the_same_day_is_still_a_reject_naming_the_first_copy(wh):
    wh.deliver(D1, [row(OID, stage="prospecting")])
    rep = wh.deliver(D2, [row(OID, stage="negotiation"), row(OID, stage="closed_won")])
    assert (rep.clean, rep.rejected) == (1, 1)
    [(line, reason)] = wh.con.execute("SELECT _line, reason FROM raw.rejects WHERE stage = 'clean'").fetchall()
    assert line == 3 and reason == f"duplicate of {f(D2)}:2 on key (opportunity_id) = ({OID})"
    assert [v[0] for v in wh.versions()] == ["prospecting", "negotiation"]
    assert wh.clean() == [(OID, "negotiation", D2, f(D2), 2)]
    wh.assert_conserved()


def test_an_unchanged_re_delivery_makes_no_version_but_a_change_back_does(wh):
    wh.deliver(D1, [row(OID, stage="prospecting")])
    wh.deliver(D2, [row(OID, stage="prospecting"), row("O9")])       # a full re-export: nothing changed for OID
    assert wh.con.execute("SELECT reason FROM raw.rejects WHERE stage = 'clean'").fetchall() == [
        (f"duplicate of {f(D1)}:2 on key (opportunity_id) = ({OID})",)]
    assert wh.versions() == [("prospecting", D1, None, f(D1), 2)]
    wh.deliver(D3, [row(OID, stage="negotiation")])
    clean_days(wh.con, SPEC, CONTRACT, [D1, D2, D3])                  # the same days in one batch: same outcome
    assert [v[:3] for v in wh.versions()] == [("prospecting", D1, D3), ("negotiation", D3, None)]
    wh.deliver(D2, [row(OID, stage="proposal")])                      # D2 re-delivered with a change: a version
    assert [v[:3] for v in wh.versions()] == [("prospecting", D1, D2), ("proposal", D2, D3),
                                              ("negotiation", D3, None)]
    assert wh.clean()[0] == (OID, "negotiation", D3, f(D3), 2)
    wh.assert_conserved()


def test_a_key_quarantined_on_day_2_keeps_its_day_1_version_current(wh):
    wh.deliver(D1, [row(OID, stage="prospecting")])
    rep = wh.deliver(D2, [row(OID, stage="negotiaton")])
    assert (rep.clean, rep.quarantined) == (0, 1)
    assert wh.clean() == [(OID, "prospecting", D1, f(D1), 2)]
    assert wh.versions() == [("prospecting", D1, None, f(D1), 2)]
    wh.assert_conserved()
    assert wh.ledger_day(D2)["quarantined"] == 1 and wh.ledger_day(D1)["clean"] == 1


def test_a_blocked_day_supersedes_nothing_and_its_fix_does(wh):
    wh.deliver(D1, [row(OID, stage="prospecting"), row("O3")])
    rep = wh.deliver(D2, [row(OID, stage="negotiation"), row("O3", amount="4320000000")])
    assert rep.blocked and rep.clean == 0 and rep.held == 1
    assert wh.clean() == [(OID, "prospecting", D1, f(D1), 2), ("O3", "discovery", D1, f(D1), 3)]
    assert wh.versions() == [("prospecting", D1, None, f(D1), 2)]
    wh.assert_conserved()
    rep = wh.deliver(D2, [row(OID, stage="negotiation"), row("O3", amount="5000")])   # the corrected re-delivery
    assert not rep.blocked and rep.clean == 2
    assert [v[:3] for v in wh.versions()] == [("prospecting", D1, D2), ("negotiation", D2, None)]
    wh.assert_conserved()


def test_a_warehouse_cleaned_before_histories_keeps_its_rows_on_the_first_update(wh):
    wh.deliver(D1, [row(OID, stage="prospecting"), row("O3")])
    wh.con.execute("DROP TABLE clean.opportunity_history")           # as a warehouse from before this change
    wh.deliver(D2, [row(OID, stage="negotiation")])
    assert wh.clean() == [(OID, "negotiation", D2, f(D2), 2), ("O3", "discovery", D1, f(D1), 3)]
    assert [v[:3] for v in wh.versions()] == [("prospecting", D1, D2), ("negotiation", D2, None)]
    wh.assert_conserved()


def test_re_running_an_earlier_day_reports_its_version_as_superseded(wh):
    wh.deliver(D1, [row(OID, stage="prospecting")])
    wh.deliver(D2, [row(OID, stage="negotiation")])
    rep = clean_partition(wh.con, SPEC, CONTRACT, D1)
    assert (rep.clean, rep.superseded) == (0, 1)


def test_a_quarantined_day_2_update_repaired_and_released_becomes_the_current_version(wh, tmp_path):
    """The key is in clean from day 1: that is the version the repaired row updates, not a copy it duplicates."""
    from gtm_pipeline.quarantine import release, repair
    from gtm_pipeline.quarantine import rows as qrows
    from gtm_pipeline.quarantine.rows import Filters

    contracts = {"opportunity": CONTRACT}
    wh.deliver(D1, [row(OID, stage="prospecting")])
    wh.deliver(D2, [row(OID, stage="negotiaton")])
    qrows.ensure_repair_tables(wh.con, contracts)
    qid = qrows.select_rows(wh.con, contracts, Filters(rule="enum")).iloc[0]["quarantine_id"]
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f"quarantine_id,stage\n{qid},negotiation\n")
    rep = repair.repair_by_csv(wh.con, contracts, fixes, actor="j")
    assert [o.status for o in rep.outcomes] == ["repaired"], rep.outcomes
    rel = release.release(wh.con, contracts, qrows.select_rows(wh.con, contracts, Filters(status="repaired")),
                          actor="j")
    assert rel.released == [qid] and rel.days == {D2: ["opportunity"]}
    wh.deliver(D2, [row(OID, stage="negotiaton")])   # the backfill re-cleans day 2 with the release overlaid
    assert wh.clean() == [(OID, "negotiation", D2, f(D2), 2)]
    assert [v[:3] for v in wh.versions()] == [("prospecting", D1, D2), ("negotiation", D2, None)]
    wh.assert_conserved()


def test_a_repair_that_makes_a_second_copy_inside_one_delivery_is_still_refused(wh, tmp_path):
    from gtm_pipeline.quarantine import repair
    from gtm_pipeline.quarantine import rows as qrows
    from gtm_pipeline.quarantine.rows import Filters

    contracts = {"opportunity": CONTRACT}
    wh.deliver(D1, [row("O3")])
    wh.deliver(D2, [row(OID, stage="prospecting"), row("O4", stage="negotiaton")])
    qrows.ensure_repair_tables(wh.con, contracts)
    qid = qrows.select_rows(wh.con, contracts, Filters(rule="enum")).iloc[0]["quarantine_id"]
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f"quarantine_id,stage,opportunity_id\n{qid},negotiation,{OID}\n")
    repair.repair_by_csv(wh.con, contracts, fixes, actor="j")
    r = qrows.select_rows(wh.con, contracts, Filters(ids=(qid,))).iloc[0]
    assert r["status"] == "open"
    assert f"opportunity_id: already in clean.opportunity at {f(D2)}:2 (same delivery day)" in r["reason"]


def test_the_pipeline_snapshot_reads_the_stage_each_day_had_not_todays(wh):
    """Without stage events (a CRM that re-exports the record), the daily snapshot takes the version current on
    each day: a re-export moving O0000002 to negotiation on day 3 leaves days 1-2 in prospecting."""
    from datetime import datetime

    from gtm_pipeline.metrics.registry import BuildContext, computations

    wh.deliver(D1, [row(OID, stage="prospecting")])
    # O9, created on day 3, carries the snapshot's day spine to day 3 (it runs through the last day of data).
    wh.deliver(D3, [row(OID, stage="negotiation"), row("O9", created=f"{D3} 09:00:00")])
    wh.con.execute("CREATE TABLE clean.opportunity_stage (stage_event_id VARCHAR, opportunity_id VARCHAR, "
                   "from_stage VARCHAR, to_stage VARCHAR, changed_at TIMESTAMP)")
    comp = computations()["fact_pipeline"]
    sql = comp.build(wh.con, BuildContext("fact_pipeline", comp.reads, datetime(2026, 8, 4)))
    assert wh.con.execute(f"SELECT snapshot_date::VARCHAR, stage, is_open FROM ({sql}) WHERE opportunity_id = '{OID}' "
                          f"ORDER BY 1").fetchall() == [
        (D1, "prospecting", True), (D2, "prospecting", True), (D3, "negotiation", True)]
    # A stage event, where the source has them, still wins over the version of the day.
    wh.con.execute(f"INSERT INTO clean.opportunity_stage VALUES ('E1', '{OID}', 'prospecting', 'closed_lost', "
                   f"TIMESTAMP '{D2} 12:00:00')")
    got = wh.con.execute(f"SELECT snapshot_date::VARCHAR, stage FROM ({sql}) WHERE opportunity_id = '{OID}' "
                         f"ORDER BY 1").fetchall()
    assert got == [(D1, "prospecting"), (D2, "closed_lost")]


def test_a_failing_publish_raises_its_own_error_and_changes_nothing(wh):
    """A clean table an older version left without a column: the error names it (not "transaction is aborted", a
    clean-up statement's error after the failed one) and the rollback leaves both tables as they were."""
    wh.deliver(D1, [row(OID, stage="prospecting")])
    wh.con.execute("ALTER TABLE clean.opportunity DROP COLUMN industry")
    before = wh.tables()
    with pytest.raises(duckdb.BinderException, match="industry"):
        wh.deliver(D2, [row(OID, stage="negotiation")])
    assert wh.tables() == before
