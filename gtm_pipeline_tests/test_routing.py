"""Routing engine (spec 002 §4.4): rule-set validation, matching, capped tie-breakers, reproducible random UUID,
fairness and shadow figures, and the dead-letter queue with its replay."""

from __future__ import annotations

import hashlib
import random
import textwrap
import uuid
from datetime import date, datetime

import duckdb
import pytest

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.routing import engine as routing

D = date(2026, 8, 2)
ENUMS = routing.routing_enums(CONTRACTS_DIR_DEFAULT)


def rules(text: str, tmp_path, name: str = "rs.yaml") -> routing.RuleSet:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return routing.parse_rule_set(p, ENUMS)


def rs_yaml(rules_block: str, status: str = "current") -> str:
    return (f"rule_set: t\nversion: '1'\nstatus: {status}\nowner: RevOps\ndescription: test\nrules:\n"
            + textwrap.indent(textwrap.dedent(rules_block), "  "))


def opp(rid, *, seg="smb", reg="na", hour=10, day=D, **attrs) -> routing.Record:
    return routing.Record(rid, "opportunity", {"segment": seg, "region": reg, **attrs}, day,
                          datetime(day.year, day.month, day.day, hour))


def ae(oid, *, seg="smb", reg="na", cap=5, last=None, load=0, active=True) -> routing.Owner:
    return routing.Owner(oid, "ae", seg, reg, cap, active, last, {D: load} if load else {})


SAME_SEG_REGION = rs_yaml("""
    - name: same
      applies_to: [opportunity]
      assign: {team: ae, segment: same, region: same}
    - name: any
      applies_to: [opportunity]
      assign: {team: ae}
""")


def test_the_project_rule_sets_load_and_v1_is_current():
    sets = routing.load_rule_sets(CONTRACTS_DIR_DEFAULT)
    assert {"v1", "v2"} <= set(sets)
    assert routing.current_rule_set(CONTRACTS_DIR_DEFAULT).name == "v1"
    assert sets["v2"].status == "candidate"


@pytest.mark.parametrize("bad,expected", [
    ("rule_set: t\nversion: '1'\nstatus: current\nowner: x\nrules: []\nflavour: x\n",
     "flavour: unknown field; allowed: rule_set, version, status, owner, description, flag, rules"),
    (rs_yaml("- {name: a, applies_to: [opportunity], assign: {team: ae}, priority: 1}"),
     "rules[0].priority: unknown field; allowed: name, description, applies_to, when, assign"),
    (rs_yaml("- {name: a, applies_to: [opportunity], when: {country: [us]}, assign: {}}"),
     "rules[0].when.country: unknown field; allowed: segment, region, industry, size_band, channel"),
    (rs_yaml("- {name: a, applies_to: [opportunity], when: {segment: [smbb]}, assign: {}}"),
     "rules[0].when.segment: 'smbb' is not a segment; allowed: smb, mid_market, enterprise"),
    (rs_yaml("- {name: a, applies_to: [lead], assign: {team: ae}}"),
     "rules[0].assign.team: 'ae' cannot take leads: leads go to sdr"),
    (rs_yaml("- {name: a, applies_to: [opportunity], assign: {team: csm}}"),
     "rules[0].assign.team: 'csm' is not an owner team; allowed: sdr, ae"),
    (rs_yaml("- {name: a, applies_to: [opportunity], assign: {region: [moon]}}"),
     "rules[0].assign.region: 'moon' is not a region"),
    (rs_yaml("- {name: a, applies_to: [opportunity], assign: {}}\n- {name: a, applies_to: [lead], assign: {}}"),
     "rules[1].name: 'a' is used twice"),
    (rs_yaml("- {name: a, applies_to: [accounts], assign: {}}"),
     "rules[0].applies_to[0]: 'accounts' is not allowed; allowed: lead, opportunity"),
    (rs_yaml("- {name: a, applies_to: [opportunity], assign: {}}", status="live"),
     "status: 'live' is not allowed; allowed: current, candidate, retired"),
])
def test_rule_set_errors_name_file_and_field(tmp_path, bad, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(bad)
    with pytest.raises(ContractError) as e:
        routing.parse_rule_set(p, ENUMS)
    assert str(e.value).startswith("contracts/routing/bad.yaml: ")
    assert expected in str(e.value)


def test_first_rule_with_capacity_wins_and_same_means_the_records_value(tmp_path):
    rs = rules(SAME_SEG_REGION, tmp_path)
    owners = [ae("U1", seg="smb", reg="na"), ae("U2", seg="enterprise", reg="emea")]
    res = routing.route([opp("O1", seg="enterprise", reg="emea"), opp("O2", seg="mid_market", reg="na")], rs, owners)
    got = {a.record_id: (a.owner_id, a.rule) for a in res.assignments}
    assert got == {"O1": ("U2", "same"), "O2": ("U1", "any")}


def test_capacity_is_per_day_and_a_full_pool_falls_through(tmp_path):
    rs = rules(SAME_SEG_REGION, tmp_path)
    owners = [ae("U1", cap=1), ae("U9", seg="enterprise", reg="apac", cap=1)]
    res = routing.route([opp("O1", hour=9), opp("O2", hour=10), opp("O3", hour=11)], rs, owners)
    assert [(a.record_id, a.owner_id, a.rule) for a in res.assignments] == [("O1", "U1", "same"), ("O2", "U9", "any")]
    assert [u.record.record_id for u in res.unrouted] == ["O3"]
    assert "rule same: all 1 owner(s) at capacity on 2026-08-02" in res.unrouted[0].reason
    assert "rule any: all 2 owner(s) at capacity" in res.unrouted[0].reason
    # The next day has fresh capacity; the caller's owners are untouched.
    nxt = routing.route([opp("O4", day=date(2026, 8, 3))], rs, owners)
    assert nxt.assignments[0].owner_id in ("U1", "U9") and owners[0].load == {}


def test_inactive_owners_and_unmatched_records(tmp_path):
    rs = rules(rs_yaml("""
        - name: smb_only
          applies_to: [opportunity]
          when: {segment: [smb]}
          assign: {team: ae}
    """), tmp_path)
    res = routing.route([opp("O1", seg="smb"), opp("O2", seg="enterprise"), opp("O3", seg=None)], rs,
                        [ae("U1", active=False)])
    reasons = {u.record.record_id: u.reason for u in res.unrouted}
    assert reasons["O1"] == "rule smb_only: no active owner in its pool"
    assert reasons["O2"].startswith("no rule of t@1 applies to this opportunity (region=na, segment=enterprise)")
    assert "segment=None" in reasons["O3"]


def test_tie_breakers_age_then_load_then_random_uuid(tmp_path):
    rs = rules(SAME_SEG_REGION, tmp_path)
    early, late = datetime(2026, 8, 1, 9), datetime(2026, 8, 1, 17)
    by_age = routing.route([opp("O1")], rs, [ae("U1", last=late), ae("U2", last=early)]).assignments[0]
    assert (by_age.owner_id, by_age.tie_break) == ("U2", "age")
    by_load = routing.route([opp("O1")], rs, [ae("U1", last=early, load=2), ae("U2", last=early, load=1)])
    assert (by_load.assignments[0].owner_id, by_load.assignments[0].tie_break) == ("U2", "load")
    tied = [ae("U1", last=early), ae("U2", last=early), ae("U3", last=early)]
    a = routing.route([opp("O1")], rs, tied, seed=5).assignments[0]
    assert a.tie_break == "random_uuid"
    u = routing.record_uuid(5, "O1")
    assert a.random_uuid == str(u) and a.owner_id == ["U1", "U2", "U3"][u.int % 3]


def test_random_uuid_is_the_documented_seeded_formula_and_reproducible(tmp_path):
    h = int.from_bytes(hashlib.sha256(b"O42").digest()[:8], "big")
    assert routing.record_uuid(7, "O42") == uuid.UUID(int=random.Random(7 + h).getrandbits(128))
    rs = rules(SAME_SEG_REGION, tmp_path)
    owners = [ae(f"U{i}") for i in range(5)]
    recs = [opp(f"O{i}", hour=8 + i % 10) for i in range(40)]
    one = [(a.record_id, a.owner_id) for a in routing.route(recs, rs, owners, seed=1).assignments]
    assert one == [(a.record_id, a.owner_id) for a in routing.route(recs, rs, owners, seed=1).assignments]


def test_each_assignment_updates_age_and_load_so_work_spreads(tmp_path):
    rs = rules(SAME_SEG_REGION, tmp_path)
    owners = [ae("U1"), ae("U2"), ae("U3")]
    res = routing.route([opp(f"O{i}", hour=9 + i) for i in range(6)], rs, owners)
    counts = {o: sum(1 for a in res.assignments if a.owner_id == o) for o in ("U1", "U2", "U3")}
    assert counts == {"U1": 2, "U2": 2, "U3": 2}
    assert routing.assignment_gini(res.assignments, owners) == 0.0


@pytest.mark.parametrize("values,expected", [([], 0.0), ([3, 3, 3], 0.0), ([0, 0, 3], 2 / 3), ([1, 3], 0.25)])
def test_gini(values, expected):
    assert routing.gini(values) == pytest.approx(expected)


def test_idle_owners_count_in_assignment_gini(tmp_path):
    rs = rules(SAME_SEG_REGION, tmp_path)
    owners = [ae("U1", cap=None), ae("U2", seg="enterprise", reg="apac")]
    res = routing.route([opp(f"O{i}", hour=9 + i) for i in range(4)], rs, owners)
    assert {a.owner_id for a in res.assignments} == {"U1"}
    assert routing.assignment_gini(res.assignments) == 0.0          # among assignees only
    assert routing.assignment_gini(res.assignments, owners) == pytest.approx(0.5)


def test_shadow_evaluation_compares_owner_by_owner(tmp_path):
    cur = rules(SAME_SEG_REGION, tmp_path, "cur.yaml")
    cand = rules(rs_yaml("""
        - name: any
          applies_to: [opportunity]
          assign: {team: ae}
    """, status="candidate"), tmp_path, "cand.yaml")
    owners = [ae("U1", seg="smb", reg="na", cap=None), ae("U2", seg="enterprise", reg="emea", cap=None)]
    recs = [opp("O1", seg="enterprise", reg="emea", hour=9), opp("O2", hour=10), opp("O3", hour=11)]
    same = routing.shadow_evaluate(recs, cur, cur, owners)
    assert (same.match_pct, same.meets_match_threshold, same.differences) == (100.0, True, [])
    rep = routing.shadow_evaluate(recs, cur, cand, owners)
    assert rep.records == 3 and rep.identical == len(recs) - len(rep.differences)
    assert rep.match_pct == pytest.approx(100 * rep.identical / 3) and not rep.meets_match_threshold
    assert rep.differences and {"record_id", "current_owner", "candidate_owner"} <= set(rep.differences[0])
    assert rep.latency_current.n == 3 and rep.as_dict()["latency_candidate"]["n"] == 3


# ---- warehouse: owners from clean.owner, DLQ and replay ---------------------------------------------------------

@pytest.fixture
def wh(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("CREATE SCHEMA clean")
    con.execute("""CREATE TABLE clean.owner AS SELECT * FROM (VALUES
        ('U1', 'ae', 'smb', 'na', 1, true, TIMESTAMP '2026-08-01 06:00:00', 'f', 1),
        ('U1', 'ae', 'smb', 'na', 0, true, TIMESTAMP '2026-07-01 06:00:00', 'f', 2),
        ('U2', 'ae', 'smb', 'na', 5, false, TIMESTAMP '2026-08-01 06:00:00', 'f', 3),
        ('S1', 'sdr', 'smb', 'emea', 0, true, TIMESTAMP '2026-08-01 06:00:00', 'f', 4))
        t(owner_id, team, segment, region, capacity_per_day, active, updated_at, _file, _line)""")
    con.execute("""CREATE TABLE clean.opportunity AS SELECT * FROM (VALUES
        ('O0', 'U1', TIMESTAMP '2026-08-02 08:00:00', 'discovery')) t(opportunity_id, owner_id, created_at, stage)""")
    con.execute("""CREATE TABLE clean.lead AS SELECT * FROM (VALUES
        ('L1', NULL, NULL, 'new', 'smb', 'emea', 'software', '11-50', 'email', TIMESTAMP '2026-08-02 09:00:00',
         DATE '2026-08-02'))
        t(lead_id, owner_id, assigned_at, status, segment, region, industry, size_band, channel, created_at,
          _partition)""")
    yield con
    con.close()


def test_load_owners_takes_the_latest_version_and_counts_the_days_load(wh):
    owners = {o.owner_id: o for o in routing.load_owners(wh, [D])}
    assert owners["U1"].capacity_per_day == 1 and owners["U1"].load == {D: 1}
    assert not owners["U2"].active and owners["S1"].capacity_per_day == 0


def test_unroutable_records_go_to_the_dlq_and_replay_after_a_fix(wh):
    v1 = routing.current_rule_set(CONTRACTS_DIR_DEFAULT)
    res = routing.route_in_warehouse(wh, [opp("O1", hour=12)], v1)
    assert not res.assignments and "at capacity" in res.unrouted[0].reason  # U1 full (O0), U2 inactive
    [i] = routing.dead_letter(wh, res.unrouted, v1.label)
    routing.dead_letter(wh, res.unrouted, v1.label)  # a second failure: same entry, one more attempt
    q = routing.dlq_entries(wh, "open")
    assert list(q["dlq_id"]) == [i] and int(q["attempts"][0]) == 2
    still = routing.replay_dlq(wh, v1)
    assert not still.replayed and still.still_unrouted[0][0] == i
    wh.execute("INSERT INTO clean.owner VALUES ('U1', 'ae', 'smb', 'na', 3, true, TIMESTAMP '2026-08-02 12:00:00', "
               "'f', 9)")  # the fix: more capacity
    rep = routing.replay_dlq(wh, v1)
    assert [(d, a.owner_id) for d, a in rep.replayed] == [(i, "U1")]
    row = routing.dlq_entries(wh, "replayed").iloc[0]
    assert (row["owner_id"], int(row["attempts"])) == ("U1", 4)
    assert wh.execute("SELECT count(*) FROM ops.routing_assignments WHERE record_id = 'O1'").fetchone()[0] == 1
    assert routing.replay_dlq(wh, v1).replayed == []  # nothing open any more


def test_unassigned_leads_are_routed_or_dead_lettered_once(wh):
    v1 = routing.current_rule_set(CONTRACTS_DIR_DEFAULT)
    res = routing.route_leads(wh, v1, ["2026-08-02"])
    assert not res.assignments and res.unrouted[0].record.record_id == "L1"  # the only SDR has capacity 0
    assert routing.route_leads(wh, v1, ["2026-08-02"]).unrouted == []      # queued already: not routed twice
    wh.execute("UPDATE clean.owner SET capacity_per_day = 10 WHERE owner_id = 'S1'")
    rep = routing.replay_dlq(wh, v1, kind="lead")
    assert [(a.record_id, a.owner_id, a.rule) for _, a in rep.replayed] == [("L1", "S1", "sdr_same_region")]
    assert routing.route_leads(wh, v1, ["2026-08-02"]).assignments == []   # assigned already
