"""A row whose parent waits in quarantine is held with it (`held: parent in quarantine`), never published as an
orphan; it is published once the parent is released and its day re-cleaned. A reference to a key that exists
nowhere stays a warning (issue 15 §7)."""

from __future__ import annotations

import duckdb
import pytest

from gtm_pipeline.clean import clean_partition, load_entity_contracts
from gtm_pipeline.clean.references import HOLD_FOR_PARENT
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine import release, repair
from gtm_pipeline.quarantine import rows as qrows
from gtm_pipeline.quarantine.ledger import conservation
from gtm_pipeline.quarantine.rows import Filters

D1, D2 = "2026-08-01", "2026-08-02"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
STAGE_HEADER = "stage_event_id,opportunity_id,from_stage,to_stage,changed_at,amount,loss_reason"
CONTRACTS = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
SPEC = load_landing_spec(CONTRACTS_DIR_DEFAULT)


def opp(oid: str, day: str = D1, industry: str = "software", owner: str = "U1", price: str = "40") -> str:
    return (f"{oid},A1,,{owner},{day} 09:00:00,discovery,business,{price},0.1,10,4320,USD,smb,na,{industry},11-50,"
            f"email,2026-09-30")


def event(eid: str, oid: str, day: str = D1) -> str:
    return f"{eid},{oid},discovery,closed_won,{day} 12:00:00,4320,"


@pytest.fixture
def wh(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def deliver(day: str, opps: list[str] | None = None, events: list[str] | None = None) -> None:
        for table, header, rows in (("opportunities", OPP_HEADER, opps), ("opportunity_stages", STAGE_HEADER, events)):
            if rows is not None:
                p = tmp_path / "landing" / "crm" / day / f"{table}.csv"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text("\n".join([header, *rows]) + "\n")
        ingest_day(con, SPEC, tmp_path / "landing", "crm", day)

    def clean(entity: str, day: str):
        return clean_partition(con, SPEC, CONTRACTS[entity], day)

    yield con, deliver, clean
    con.close()


def _stage_quarantine(con) -> list[tuple]:
    return con.execute("SELECT _line, status, rule, reason, break_action FROM quarantine.opportunity_stage "
                       "ORDER BY _line").fetchall()


def _clean_events(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT stage_event_id FROM clean.opportunity_stage ORDER BY 1").fetchall()]


def test_an_event_of_a_quarantined_opportunity_is_held_not_published(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom"), opp("O2")],
            events=[event("E1", "O1"), event("E2", "O2"), event("E3", "O404")])
    assert clean("opportunity", D1).quarantined == 1
    rep = clean("opportunity_stage", D1)
    assert (rep.clean, rep.held, rep.quarantined) == (2, 1, 0)
    assert _clean_events(con) == ["E2", "E3"]  # O404 exists nowhere: published with the references warning
    ((line, status, rule, reason, action),) = _stage_quarantine(con)
    assert (line, status, rule, action) == (2, "held", "held", HOLD_FOR_PARENT)
    assert reason == ("held: parent in quarantine: opportunity_id 'O1' is in quarantine.opportunity (rule enum); it "
                      "is published with its day once the opportunity is released")
    led = conservation(con, SPEC)
    row = led[led["table"] == "crm/opportunity_stages"].iloc[0]
    assert (row["records"], row["clean"], row["held"], row["lost"]) == (3, 2, 1, 0)
    assert con.execute("SELECT count(*) FROM clean.opportunity_stage s WHERE s.opportunity_id IN "
                       "(SELECT json_extract_string(payload, '$.opportunity_id') FROM quarantine.opportunity)"
                       ).fetchone()[0] == 0


def test_rerunning_the_day_holds_the_same_rows(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom")], events=[event("E1", "O1")])
    clean("opportunity", D1)
    first = (clean("opportunity_stage", D1).held, _stage_quarantine(con))
    assert (clean("opportunity_stage", D1).held, _stage_quarantine(con)) == first
    assert first[0] == 1


def test_the_held_event_is_published_once_its_opportunity_is_released(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom")])
    deliver(D2, events=[event("E1", "O1", D2)])  # the event arrives on another day than its parent
    clean("opportunity", D1)
    assert clean("opportunity_stage", D2).held == 1
    qrows.ensure_repair_tables(con, CONTRACTS)
    rows = qrows.select_rows(con, CONTRACTS, Filters(entity="opportunity"))
    repair.repair_by_enum_map(con, CONTRACTS, rows, {"industry": {"telecom": "media"}}, actor="t")
    rel = release.release(con, CONTRACTS, qrows.select_rows(con, CONTRACTS, Filters(entity="opportunity")),
                          actor="t")
    assert len(rel.released) == 1
    # Still held while the parent is released but not yet taken into clean (released is not clean).
    assert clean("opportunity_stage", D2).held == 1
    clean("opportunity", D1)  # the repair backfill re-cleans the parent's day
    assert con.execute("SELECT industry FROM clean.opportunity").fetchall() == [("media",)]
    rep = clean("opportunity_stage", D2)
    assert (rep.clean, rep.held) == (1, 0) and _clean_events(con) == ["E1"] and _stage_quarantine(con) == []


def test_an_event_of_an_opportunity_on_a_blocked_day_is_held(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", price="999999"), opp("O2")])  # O1 blocks the day, O2 waits as held
    deliver(D2, events=[event("E1", "O2", D2)])
    assert clean("opportunity", D1).blocked
    rep = clean("opportunity_stage", D2)
    assert (rep.clean, rep.held) == (0, 1)
    assert "opportunity_id 'O2' is in quarantine.opportunity (rule held)" in _stage_quarantine(con)[0][3]


def test_an_event_of_an_opportunity_without_owner_is_held(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", owner="")], events=[event("E1", "O1")])
    assert clean("opportunity", D1).missing_owner == 1
    clean("opportunity_stage", D1)
    assert "'O1' is in quarantine.missing_owner (rule required)" in _stage_quarantine(con)[0][3]


def test_a_parent_published_in_clean_is_not_held_by_a_quarantined_later_copy(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1")])
    deliver(D2, opps=[opp("O1", D2, industry="telecom")], events=[event("E1", "O1", D2)])
    clean("opportunity", D1)
    clean("opportunity", D2)
    assert con.execute("SELECT count(*) FROM quarantine.opportunity").fetchone()[0] == 1
    rep = clean("opportunity_stage", D2)
    assert (rep.clean, rep.held) == (1, 0)


def test_a_rejected_repair_does_not_hold_its_children_forever(wh):
    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom")], events=[event("E1", "O1")])
    clean("opportunity", D1)
    con.execute("UPDATE quarantine.opportunity SET status = 'rejected'")  # the parent will never reach clean
    rep = clean("opportunity_stage", D1)
    assert (rep.clean, rep.held) == (1, 0)


def test_the_repair_backfill_re_cleans_the_held_childs_day_once_the_parent_is_in_clean(wh, tmp_path, env_settings):
    """Nothing else re-cleans the child's day (its own rows did not change): the backfill must, in a second round
    after the parent's day run, and the sensor's plan must request it once the parent is in clean."""
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.definitions import build_definitions
    from gtm_pipeline.quarantine import backfill, backfill_now
    from gtm_pipeline.quarantine.snapshot import PARENT_READY, read_snapshot

    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom")])
    deliver(D2, events=[event("E1", "O1", D2)])
    clean("opportunity", D1)
    assert clean("opportunity_stage", D2).held == 1
    qrows.ensure_repair_tables(con, CONTRACTS)
    repair.repair_by_enum_map(con, CONTRACTS, qrows.select_rows(con, CONTRACTS, Filters(entity="opportunity")),
                              {"industry": {"telecom": "media"}}, actor="t")
    release.release(con, CONTRACTS, qrows.select_rows(con, CONTRACTS, Filters(entity="opportunity")), actor="t")
    # Released is not clean: the child is not ready yet, and the sensor plans the parent's day only.
    snap = read_snapshot(con, CONTRACTS)
    assert [(p.entity, p.day) for p in snap.pending] == [("opportunity", D1)]
    plan = backfill.decide(snap, None, lambda _k: None, lambda _e: None)
    assert [(r.day, r.entities) for r in plan.requests] == [(D1, ("opportunity",))]

    defs = build_definitions()
    names = {keys.clean_key(e): e for e in CONTRACTS}
    calls = []

    def run(job_name, *, partition_key=None, asset_selection=None, **_kw):
        """Executes a day run for real (the clean stage of the selected entities); records a refresh."""
        entities = sorted({names[k] for k in asset_selection or () if k in names})
        calls.append((partition_key, tuple(entities) if partition_key else "refresh"))
        for e in entities if partition_key else ():
            clean(e, partition_key)
        return type("Outcome", (), {"run_id": f"r{len(calls)}", "success": True, "failed_steps": []})()

    with dg.instance_for_test() as instance:
        out = backfill_now.run_backfill_in_process(tmp_path / "w.duckdb", definitions=defs, run=run,
                                                   instance=instance, contracts=CONTRACTS)
    assert calls[:2] == [(D1, ("opportunity",)), (D2, ("opportunity_stage",))]
    assert calls[2:] == [(None, "refresh")]
    assert (out.applied, out.children, out.pending_before) == (1, 1, 1)
    assert _clean_events(con) == ["E1"] and _stage_quarantine(con) == []
    assert not [p for p in read_snapshot(con, CONTRACTS).pending if p.release_id.startswith(PARENT_READY)]
    df = conservation(con, SPEC)
    assert (df["lost"] == 0).all() and (df["in_two_places"] == 0).all()


def test_the_sensor_plans_the_childs_day_when_the_parent_is_in_clean(wh):
    from gtm_pipeline.quarantine import backfill
    from gtm_pipeline.quarantine.snapshot import PARENT_READY, read_snapshot

    con, deliver, clean = wh
    deliver(D1, opps=[opp("O1", industry="telecom")])
    deliver(D2, events=[event("E1", "O1", D2)])
    clean("opportunity", D1)
    clean("opportunity_stage", D2)
    assert read_snapshot(con, CONTRACTS).pending == []   # the parent waits: nothing to run for the child
    # The parent is fixed by a corrected re-delivery of its day (no repair involved): the child is ready.
    deliver(D1, opps=[opp("O1", industry="media")])
    clean("opportunity", D1)
    snap = read_snapshot(con, CONTRACTS)
    assert [(p.entity, p.day, p.release_id.startswith(PARENT_READY)) for p in snap.pending] == [
        ("opportunity_stage", D2, True)]
    plan = backfill.decide(snap, None, lambda _k: None, lambda _e: None)
    assert [(r.day, r.entities) for r in plan.requests] == [(D2, ("opportunity_stage",))]
    # The same tick again (cursor kept, run in flight) requests nothing new; after the run the batch is done.
    again = backfill.decide(snap, plan.cursor, lambda _k: backfill.IN_FLIGHT, lambda _e: None)
    assert again.requests == []
    clean("opportunity_stage", D2)
    assert read_snapshot(con, CONTRACTS).pending == [] and _clean_events(con) == ["E1"]


def test_parents_are_cleaned_before_their_children_and_a_cycle_is_refused():
    from types import SimpleNamespace

    from gtm_pipeline.clean.references import reference_levels
    from gtm_pipeline.errors import ContractError

    levels = reference_levels(CONTRACTS)
    assert levels["owner"] == 0 and levels["opportunity_stage"] == 3
    for child in CONTRACTS:
        for col in CONTRACTS[child].rules_of_kind("references"):
            parent = col.references.split(".")[0]
            assert parent == child or levels[parent] < levels[child], (child, parent)

    def contract(*refs):
        cols = [SimpleNamespace(references=r) for r in refs]
        return SimpleNamespace(rules_of_kind=lambda kind: cols if kind == "references" else [])

    with pytest.raises(ContractError, match=r"references form a cycle a -> b -> a"):
        reference_levels({"a": contract("b.id"), "b": contract("a.id")})


def test_the_clean_steps_carry_the_parents_first_priority(env_settings):
    from gtm_pipeline import keys
    from gtm_pipeline.clean.defs import PRIORITY_TAG
    from gtm_pipeline.definitions import build_definitions

    defs = build_definitions()

    def priority(entity: str) -> int:
        return int(defs.resolve_assets_def(keys.clean_key(entity)).op.tags[PRIORITY_TAG])

    assert priority("owner") > priority("account") > priority("contact")
    assert priority("account") > priority("opportunity") > priority("opportunity_stage")
    assert priority("lead") > priority("opportunity") and priority("activity") == priority("owner")
