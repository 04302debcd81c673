"""Incidents a team can live with: one per cause across days, self-resolving with evidence when the days are re-run
clean, reopening as a new incident on a new break, operable from the CLI, and seen by the decision pre-checks."""

from __future__ import annotations

import json
import shlex

import click
import duckdb
import pytest
from click.testing import CliRunner
from decision_fixtures import green, pricing_metrics

from gtm_pipeline.clean import clean_days, clean_partition
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.cli import main
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.decisions import nodes, open_context
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.ops import incidents as incidents
from gtm_pipeline.quarantine.release import release
from gtm_pipeline.quarantine.repair import repair_by_enum_map
from gtm_pipeline.quarantine.rows import Filters, ensure_repair_tables, select_rows
from gtm_pipeline.slo import open_incidents
from gtm_pipeline.warehouse import ensure_base

DAYS = [f"2026-08-0{i}" for i in range(1, 7)]
HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
          "currency,segment,region,industry,size_band,channel,close_date")
ENUM_KEY = "contract:opportunity:quarantine:enum"


def row(oid, *, stage="discovery", seats="10", amount="4320"):
    return (f"{oid},A1,L1,U1,2026-08-01 10:00:00,{stage},core,40,0.1,{seats},{amount},USD,smb,na,software,11-50,"
            f"email,2026-09-30")


class Warehouse:
    """The test warehouse: its connection (``execute``, ``close``) plus land / deliver / clean helpers."""

    def __init__(self, con, land, deliver, clean, contracts):
        self.con, self.land, self.deliver, self.clean, self.contracts = con, land, deliver, clean, contracts

    def __getattr__(self, name):
        return getattr(self.con, name)


@pytest.fixture
def wh(env_settings):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(env_settings.duckdb_path))

    def land(day, rows):
        p = env_settings.landing_dir / "crm" / day / "opportunities.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join([HEADER, *rows]) + "\n")
        ingest_day(con, spec, env_settings.landing_dir, "crm", day)

    def deliver(day, rows, run_id=None):
        land(day, rows)
        return clean_partition(con, spec, contracts["opportunity"], day, run_id=run_id)

    def clean(days, run_id=None):
        return clean_days(con, spec, contracts["opportunity"], days, run_id=run_id)

    wh = Warehouse(con, land, deliver, clean, contracts)
    yield wh
    con.close()


def _incidents(con, where="TRUE"):
    return con.execute(f"SELECT incident_id, status, occurrences, first_partition, last_partition, partitions, "
                       f"samples, resolved_by, resolution, dedup_key, severity FROM ops.incidents WHERE {where} "
                       f"ORDER BY opened_at, incident_id").fetchall()


def _bad_day(i, n_bad):
    return [row(f"G{i}")] + [row(f"B{i}-{k}", stage="negotiaton") for k in range(n_bad)]


def test_many_days_of_one_enum_break_are_one_incident_with_count_days_and_samples(wh):
    for i, d in enumerate(DAYS):
        wh.deliver(d, _bad_day(i, i + 1))          # 1 + 2 + ... + 6 = 21 bad rows
    [(iid, status, n, first, last, parts, samples, *_rest)] = _incidents(wh)
    assert (status, n, first, last, parts) == ("open", 21, DAYS[0], DAYS[-1], DAYS)
    smp = json.loads(samples)
    assert 0 < len(smp) <= incidents.SAMPLES
    assert {s["column"] for s in smp} == {"stage"} and {s["value"] for s in smp} == {"negotiaton"}
    assert smp[0]["file"] == f"crm/{DAYS[0]}/opportunities.csv" and smp[0]["line"] == 3
    # The samples spread over days instead of showing the first day's rows only.
    assert len({s["day"] for s in smp}) == len(smp)
    # Quarantine agrees with the count: the incident is about exactly these rows.
    assert wh.execute("SELECT count(*) FROM quarantine.opportunity WHERE rule = 'enum'").fetchone()[0] == 21
    # Re-running every day (one batch) changes nothing: same incident, same count.
    wh.clean(DAYS)
    assert [(r[0], r[2], r[5]) for r in _incidents(wh)] == [(iid, 21, DAYS)]


def test_a_batch_run_groups_the_same_way_and_each_cause_is_its_own_incident(wh):
    for i, d in enumerate(DAYS):
        wh.land(d, _bad_day(i, 2) + ([row(f"T{i}", seats="ten")] if i % 2 else []))
    reports = wh.clean(DAYS)
    rows = {r[9]: r for r in _incidents(wh, "status = 'open'")}
    assert set(rows) == {ENUM_KEY, "contract:opportunity:quarantine:type"}
    assert rows[ENUM_KEY][2] == 12 and rows[ENUM_KEY][5] == DAYS
    assert rows["contract:opportunity:quarantine:type"][2] == 3
    assert rows["contract:opportunity:quarantine:type"][5] == DAYS[1::2]
    assert all(r.incidents for r in reports)       # every day names the incidents it feeds


def test_rerunning_fixed_days_resolves_the_incident_with_evidence_and_a_new_break_opens_a_new_one(wh):
    for i, d in enumerate(DAYS):
        wh.deliver(d, _bad_day(i, 2))
    [(iid, *_)] = _incidents(wh)
    for i, d in enumerate(DAYS[:-1]):                # the vendor re-sends all but the last day fixed
        wh.deliver(d, [row(f"G{i}"), row(f"B{i}-0"), row(f"B{i}-1")], run_id=f"run-{i}")
    [(same, status, n, first, last, parts, *_)] = _incidents(wh)
    assert (same, status, n, first, last, parts) == (iid, "open", 2, DAYS[-1], DAYS[-1], [DAYS[-1]])
    wh.deliver(DAYS[-1], [row("G9"), row("B9-0"), row("B9-1")], run_id="run-last")
    [(same, status, _, _, _, _, _, by, evidence, _, _)] = _incidents(wh)
    assert (same, status, by) == (iid, "resolved", "auto: condition cleared")
    assert evidence == f"0 rows remain; last day re-run {DAYS[-1]} by run run-last"
    assert wh.execute("SELECT resolved_at IS NOT NULL FROM ops.incidents").fetchone()[0]
    # A new break after the resolution is a new incident, not the old one reopened.
    wh.deliver(DAYS[2], _bad_day(2, 1))
    old, new = _incidents(wh)
    assert old[0] == iid and old[1] == "resolved"
    assert new[0] != iid and (new[1], new[2], new[5]) == ("open", 1, [DAYS[2]])


def test_a_released_repair_resolves_the_incident_when_the_day_is_recleaned(wh):
    wh.deliver(DAYS[0], _bad_day(0, 2))
    ensure_repair_tables(wh.con, wh.contracts)
    rows = select_rows(wh.con, wh.contracts, Filters(entity="opportunity", rule="enum"))
    repair_by_enum_map(wh.con, wh.contracts, rows, {"stage": {"negotiaton": "negotiation"}}, actor="jane")
    wh.clean([DAYS[0]], run_id="after-repair")
    assert _incidents(wh)[0][1] == "open"            # repaired but not released: still broken in the warehouse
    release(wh.con, wh.contracts, select_rows(wh.con, wh.contracts, Filters(status="repaired")), actor="jane")
    wh.clean([DAYS[0]], run_id="backfill-1")         # what the repair backfill runs
    [(_, status, *_, by, evidence, _, _)] = _incidents(wh)
    assert (status, by) == ("resolved", "auto: condition cleared") and "by run backfill-1" in evidence


def test_blocked_days_share_one_incident_and_the_owner_is_notified_once(wh):
    wh.deliver(DAYS[0], [row("O1"), row("O2", amount="4320000000")])
    wh.deliver(DAYS[1], [row("O3"), row("O4", amount="4320000000"), row("O5")])
    [(iid, status, n, first, last, parts, _, _, _, key, sev)] = _incidents(wh)
    assert (status, n, parts, sev) == ("open", 2, DAYS[:2], "SEV3")
    assert key == "contract:opportunity:block_publish:range"
    title = wh.execute("SELECT title FROM ops.incidents").fetchone()[0]
    assert "not published on 2 day(s)" in title and "3 row(s) held" in title
    notes = wh.execute("SELECT recipient, incident_id FROM ops.notifications").fetchall()
    assert notes == [("RevOps", iid)]
    wh.deliver(DAYS[0], [row("O1"), row("O2")])
    wh.deliver(DAYS[1], [row("O3"), row("O4"), row("O5")])
    assert _incidents(wh)[0][1] == "resolved"
    assert wh.execute("SELECT count(*) FROM clean.opportunity").fetchone()[0] == 5


def test_a_warehouse_from_before_grouping_keeps_working_and_its_per_day_incidents_resolve(wh):
    # The ops.incidents of an old warehouse: twelve columns, one open incident per day and rule.
    wh.execute("CREATE SCHEMA IF NOT EXISTS ops")
    wh.execute("""CREATE TABLE ops.incidents (
        incident_id VARCHAR PRIMARY KEY, opened_at TIMESTAMP, severity VARCHAR, origin VARCHAR,
        asset_key VARCHAR, rule VARCHAR, title VARCHAR, details VARCHAR, owner VARCHAR,
        status VARCHAR, resolved_at TIMESTAMP, dedup_key VARCHAR)""")
    wh.execute(f"INSERT INTO ops.incidents VALUES ('INC-old', TIMESTAMP '2026-08-01 06:00', 'SEV3', 'contract', "
               f"'clean/opportunity', 'enum', 'old', '{{}}', 'RevOps', 'open', NULL, "
               f"'contract:opportunity:{DAYS[0]}:quarantine')")
    wh.deliver(DAYS[0], _bad_day(0, 1), run_id="r1")
    old, new = _incidents(wh)
    assert old[0] == "INC-old" and old[1] == "resolved" and "superseded by the grouped incidents" in old[8]
    assert new[9] == ENUM_KEY and new[1] == "open"


# --- the CLI ---------------------------------------------------------------------------------------------------


def cli(*args):
    return CliRunner().invoke(main, list(args))


def test_cli_round_trip_open_list_ack_resolve(wh):
    wh.deliver(DAYS[0], _bad_day(0, 2))
    wh.close()  # the CLI opens the same file
    res = cli("incidents", "open", "--severity", "SEV2", "--title", "CRM export double-counts renewals",
              "--entity", "opportunity", "--owner", "RevOps")
    assert res.exit_code == 0, res.output
    iid = res.output.split()[0]
    listed = cli("incidents", "list")
    assert listed.exit_code == 0, listed.output
    line = next(ln for ln in listed.output.splitlines() if ln.startswith(iid))
    assert "SEV2" in line and "open" in line and "opportunity" in line and "RevOps" in line
    assert "gtm-pipeline incidents resolve" in line
    enum_line = next(ln for ln in listed.output.splitlines() if " enum " in ln)
    assert "gtm-pipeline quarantine repair --enum-map" in enum_line and " 2 " in enum_line
    assert "2 open (SEV2 1, SEV3 1)" in listed.output
    assert cli("incidents", "ack", iid, "--by", "jane").exit_code == 0
    [inc] = [i for i in json.loads(cli("incidents", "list", "--json").output) if i["incident_id"] == iid]
    assert (inc["status"], inc["acknowledged_by"]) == ("acknowledged", "jane")
    res = cli("incidents", "resolve", iid, "--by", "jane", "--note", "export fixed upstream")
    assert res.exit_code == 0, res.output
    assert iid not in cli("incidents", "list").output
    shown = cli("incidents", "show", iid)
    assert "resolved" in shown.output and "by jane: export fixed upstream" in shown.output
    assert iid in cli("incidents", "list", "--all").output


@pytest.mark.parametrize("args,message", [
    (("show", "INC-nope"), "incident 'INC-nope' not found in ops.incidents"),
    (("ack", "INC-nope", "--by", "jane"), "gtm-pipeline incidents list --all"),
    (("resolve", "INC-nope", "--by", "j", "--note", "x"), "not found"),
    (("open", "--severity", "SEV2", "--title", "x", "--entity", "opportunitty"), "--entity opportunitty: no such "),
    (("open", "--severity", "SEV2", "--title", "x", "--asset", "metrics/cac_per_sq"), "no metric 'cac_per_sq'"),
    (("open", "--severity", "SEV2", "--title", "  "), "--title is empty"),
])
def test_cli_errors_are_one_line_with_exit_2(wh, args, message):
    wh.deliver(DAYS[0], [row("O1")])
    wh.close()
    res = cli("incidents", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.startswith("error:")]) == 1


def test_resolving_twice_and_acking_a_resolved_incident_say_so(wh):
    wh.deliver(DAYS[0], [row("O1")])
    wh.close()
    iid = cli("incidents", "open", "--severity", "SEV3", "--title", "t").output.split()[0]
    assert cli("incidents", "resolve", iid, "--by", "j", "--note", "done").exit_code == 0
    again = cli("incidents", "resolve", iid, "--by", "j", "--note", "done")
    assert again.exit_code == 2 and "already resolved" in again.output
    ack = cli("incidents", "ack", iid, "--by", "j")
    assert ack.exit_code == 2 and "nothing to acknowledge" in ack.output


def _resolves(tokens: list[str]) -> None:
    """The command and options of a runbook line exist in the CLI (words in capitals are placeholders)."""
    assert tokens[0] == "gtm-pipeline", tokens
    cmd: click.Command = main
    rest = tokens[1:]
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        cmd, rest = cmd.commands[rest[0]], rest[1:]
    assert not isinstance(cmd, click.Group), f"{tokens}: not a command"
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {t for t in rest if t.startswith("--")} <= opts, f"{tokens}: unknown options"


@pytest.mark.parametrize("origin,rule,key", [
    ("contract", "enum", ENUM_KEY), ("contract", "type", "contract:opportunity:quarantine:type"),
    ("contract", "range", "contract:opportunity:block_publish:range"),
    ("contract", "row_check:close_after_create", "contract:opportunity:quarantine:row_check:close_after_create"),
    ("metric", "positive_values", "metric:payback:audit"), ("slo", "freshness_slo:metric_age", "slo:x"),
    ("manual", "manual", "manual:x"),
])
def test_every_next_step_names_a_real_command(origin, rule, key):
    inc = {"incident_id": "INC-1", "origin": origin, "rule": rule, "entity": "opportunity" if origin == "contract"
           else None, "asset_key": "metrics/payback", "dedup_key": key, "status": "open"}
    steps = incidents.runbook(inc)
    assert steps and incidents.next_step(inc).startswith("gtm-pipeline ")
    for step in steps:
        for part in step.split("   (")[0].split(": ")[-1].split(";"):
            part = part.strip()
            if part.startswith("gtm-pipeline"):
                _resolves(shlex.split(part))


# --- decision pre-checks see a declared incident ---------------------------------------------------------------


def test_a_declared_sev2_blocks_the_decisions_that_read_it_until_resolved(env_settings):
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(env_settings.duckdb_path))
    pricing_metrics(con)
    con.close()
    on_opp = cli("incidents", "open", "--severity", "SEV2", "--title", "opp export broken", "--entity",
                 "opportunity").output.split()[0]
    on_cac = cli("incidents", "open", "--severity", "SEV2", "--title", "cac wrong", "--asset",
                 "metrics/cac_per_sqo").output.split()[0]
    con = duckdb.connect(str(env_settings.duckdb_path))
    try:
        assert {i["incident_id"] for i in open_incidents(con, "SEV2")} == {on_opp, on_cac}
        dc = open_context(con, env_settings)
        pricing = dc.playbooks["pricing.change"]
        r = nodes.evaluate_node(dc, pricing, green)
        # pricing reads price_elasticity, which reads clean.opportunity: the opportunity incident blocks it ...
        assert not r.prechecks_passed and on_opp in r.note and "opp export broken" in r.note
        # ... and the cac_per_sqo one does not (pricing does not read it), while channel.invest does.
        assert on_cac not in r.note
        deps = nodes.metric_dependencies(CONTRACTS_DIR_DEFAULT, dc.playbooks["channel.invest"].inputs)
        pre = nodes.incident_precheck(con, "SEV2", deps)
        assert not pre.passed and on_cac in pre.detail
        # Acknowledged is still open for the gate; resolved is not.
        incidents.acknowledge(con, on_opp, by="jane")
        assert not nodes.evaluate_node(dc, pricing, green).prechecks_passed
        incidents.resolve(con, on_opp, by="jane", note="re-exported")
        assert nodes.evaluate_node(dc, pricing, green).prechecks_passed
        assert {i["incident_id"] for i in open_incidents(con, "SEV2")} == {on_cac}
    finally:
        con.close()


def test_severity_of_a_declared_incident_is_checked(wh):
    ensure_base(wh.con)
    with pytest.raises(Exception, match="severity 'SEV9' is not one of SEV1, SEV2, SEV3, SEV4"):
        incidents.declare(wh.con, severity="SEV9", title="x", by="j")
