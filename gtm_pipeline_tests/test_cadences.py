"""The operating model's cadences (spec 000 §5, issue 20 §4): the biweekly architecture sync's date rule across a
53-week year (ISO 2026-W53 / 2027-W01), its schedule tick by tick, and the packets' sections read from real tables --
a blocked experiment shows as a blocker, an open incident in triage, a funnel drop as an anomaly, a shipped
experiment's revenue against its holdout, TTV "not built yet" until its tables exist, DLQ, drift and contract
changes in the architecture sync."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pytest
import yaml
from conftest import REPO
from dagster._utils.schedules import schedule_execution_time_iterator  # the daemon's tick iterator (no public API)

from gtm_pipeline.config import ReviewTimes, load_settings
from gtm_pipeline.decisions import flags, log, open_context
from gtm_pipeline.decisions.architecture_sync import is_architecture_sync_day, weeks_since_epoch
from gtm_pipeline.decisions.monthly_readout import arm_revenue
from gtm_pipeline.decisions.packets import build_packet, period_for, previous_review_day
from gtm_pipeline.decisions.schedules import architecture_sync_schedule, build_architecture_schedule
from gtm_pipeline.experiments.assignment import arm_of
from gtm_pipeline.experiments.contract import load_experiments, metric_columns
from gtm_pipeline.routing.engine import ensure_routing_tables
from gtm_pipeline.warehouse import ensure_base, open_incident

ET = ZoneInfo("America/New_York")
TIMES = ReviewTimes()


# ---- the biweekly date rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("day,iso,runs", [
    (date(2026, 12, 24), (2026, 52), False),
    (date(2026, 12, 31), (2026, 53), True),
    (date(2027, 1, 7), (2027, 1), False),
    (date(2027, 1, 14), (2027, 2), True),
    (date(2027, 1, 13), (2027, 2), False),      # a Wednesday of a sync week
])
def test_every_other_iso_week_across_the_53_week_year(day, iso, runs):
    assert tuple(day.isocalendar())[:2] == iso
    assert is_architecture_sync_day(day) is runs


def test_syncs_are_exactly_two_weeks_apart_for_three_years_unlike_the_week_number_rule():
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(3 * 366)]
    syncs = [d for d in days if is_architecture_sync_day(d)]
    assert {(b - a).days for a, b in zip(syncs, syncs[1:])} == {14}
    # the tempting rule -- an even ISO week number -- leaves three weeks across 2026-W53 / 2027-W01
    naive = [d for d in days if d.weekday() == 3 and d.isocalendar().week % 2 == 0]
    assert max((b - a).days for a, b in zip(naive, naive[1:])) == 21
    assert weeks_since_epoch(date(2024, 1, 1)) == 0 and weeks_since_epoch(date(2024, 1, 14)) == 1


def test_the_period_of_a_sync_starts_at_the_previous_sync():
    assert previous_review_day("biweekly_architecture", date(2027, 1, 14)) == date(2026, 12, 31)
    p = period_for("biweekly_architecture", date(2027, 1, 14), TIMES.biweekly_architecture,
                   datetime(2027, 1, 14, 19, 5))
    assert (p.start, p.end) == (datetime(2026, 12, 31, 19, 0), datetime(2027, 1, 14, 19, 5))


def test_the_schedule_ticks_every_other_thursday_at_14_et():
    out, skips = [], []
    start, end = datetime(2026, 11, 1, tzinfo=ET), datetime(2027, 3, 1, tzinfo=ET)
    for tick in schedule_execution_time_iterator(start.timestamp(), architecture_sync_schedule.cron_schedule,
                                                 architecture_sync_schedule.execution_timezone):
        if tick >= end:
            break
        with dg.build_schedule_context(scheduled_execution_time=tick) as ctx:
            result = architecture_sync_schedule.evaluate_tick(ctx)
        out += [(r.run_config["ops"]["decisions__review_packet"]["config"], tick.astimezone(ET))
                for r in result.run_requests or []]
        skips += [result.skip_message] if not result.run_requests else []
    assert [c["as_of"] for c, _ in out] == ["2026-11-05", "2026-11-19", "2026-12-03", "2026-12-17", "2026-12-31",
                                           "2027-01-14", "2027-01-28", "2027-02-11", "2027-02-25"]
    assert {c["cadence"] for c, _ in out} == {"biweekly_architecture"}
    assert {t.strftime("%a %H:%M") for _, t in out} == {"Thu 14:00"}
    assert "2027-01-07 (ISO 2027-W01) is the week between two architecture syncs" in skips
    moved = build_architecture_schedule(ReviewTimes(biweekly_architecture=datetime(2026, 1, 1, 8, 30).time()))
    assert moved.cron_schedule == "30 8 * * 4" and "GTM_PIPELINE_ARCHITECTURE_SYNC_AT" in moved.description


# ---- the packets ---------------------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 8, 16, 0)            # Tue 2026-12-08 11:00 ET, after the weekly review's time


@pytest.fixture
def dc(tmp_path, monkeypatch, env_settings):
    root = tmp_path / "contracts"
    shutil.copytree(REPO / "contracts", root)
    monkeypatch.setenv("GTM_PIPELINE_CONTRACTS_DIR", str(root))
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    ensure_base(con)
    ctx = open_context(con, load_settings(), clock=lambda: NOW)
    yield ctx
    con.close()


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _readout(con, rows) -> None:
    con.execute("CREATE OR REPLACE TABLE metrics.experiment_readout (experiment VARCHAR, look BIGINT, as_of TIMESTAMP, "
                "arm VARCHAR, is_control BOOLEAN, units BIGINT, estimate DOUBLE, ci_low DOUBLE, ci_high DOUBLE, "
                "srm_p DOUBLE, verdict VARCHAR)")
    con.executemany("INSERT INTO metrics.experiment_readout VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _funnel(con, weeks: dict[str, list[tuple[int, int]]]) -> None:
    """``weeks``: channel -> [(leads, sqls)] for the 8 complete weeks before NOW's week, oldest first."""
    con.execute("CREATE OR REPLACE TABLE metrics.sql_funnel (channel VARCHAR, week VARCHAR, leads BIGINT, "
                "sqls BIGINT, sqos BIGINT, wins BIGINT, closed BIGINT)")
    monday = NOW.date() - timedelta(days=NOW.weekday())
    for ch, series in weeks.items():
        for i, (leads, sqls) in enumerate(series):
            wk = monday - timedelta(weeks=len(series) - i)
            con.execute("INSERT INTO metrics.sql_funnel VALUES (?, ?, ?, ?, 0, ?, 0)",
                        [ch, wk.isoformat(), leads, sqls, sqls // 4])
    # the current, incomplete week must not count as the latest
    con.execute("INSERT INTO metrics.sql_funnel VALUES ('paid_search', ?, 1, 0, 0, 0, 0)", [monday.isoformat()])


def test_weekly_packet_lists_blockers_triage_anomalies_and_learnings(dc):
    con = dc.con
    as_of = datetime(2026, 12, 7)
    _readout(con, [("lead_form_short", 20, as_of, "control", True, 2100, None, None, None, 0.00002,
                    "invalid: sample ratio mismatch"),
                   ("lead_form_short", 20, as_of, "short_form", False, 1700, 0.03, 0.01, 0.05, 0.00002,
                    "invalid: sample ratio mismatch"),
                   ("pricing_page", 30, as_of, "control", True, 900, None, None, None, 0.6, "ship bold"),
                   ("pricing_page", 30, as_of, "bold", False, 910, 0.04, 0.02, 0.06, 0.6, "ship bold")])
    _funnel(con, {"paid_search": [(100, 20)] * 7 + [(50, 10)], "organic": [(200, 40)] * 8,
                  "events": [(10, 2)] * 7 + [(1, 0)]})
    iid, _ = open_incident(con, severity="SEV2", origin="test", asset_key="metrics/experiment_readout",
                           rule="manual", title="readout stale", details={}, owner="Analytics", dedup_key="t1",
                           opened_at=NOW - timedelta(days=2, hours=3))
    with log.writing(con, dc.head) as w:           # an experiment.ship decision refused by a gate this week
        base = {"node": "experiment.ship", "subject": "lead_form_short", "playbook_version": "1.0.0",
                "inputs_version": "v", "inputs_hash": "sha256:x", "selected_thresholds": {}, "chosen_action": "ship",
                "action": {}, "owner": "Analytics", "approvers": [], "risk_notes": "", "reversal_plan": "",
                "reversal_outcome": None, "review_date": None}
        w.append(decision_id="DEC-000000000001", event="refused", status="proposed", base=base, actor="ana",
                 ts=NOW - timedelta(days=1), details={"step": "apply", "message": f"refused: open SEV2 {iid}"})
    md = build_packet(dc, "weekly_ops", NOW.date(), "SLO health green", TIMES).markdown
    status, blockers = _section(md, "Experiment status"), _section(md, "Blockers")
    assert "`lead_form_short` (Marketing Ops): look 20 (2026-12-07), 3,800 units; short_form +0.0300" in status
    assert "`lead_form_short`: invalid: sample ratio mismatch (SRM p 2e-05)" in blockers
    assert "`lead_form_short`: decision `DEC-000000000001` refused at apply" in blockers and iid in blockers
    anomalies = _section(md, "Funnel anomalies")
    assert "**paid_search**" in anomalies and "leads 50 vs 100.0/week (-50%)" in anomalies
    assert "organic" not in anomalies and "events" not in anomalies      # steady; too small to judge
    triage = _section(md, "Incident triage")
    assert f"**SEV2** `{iid}` (open, 2d03h old): readout stale -- on metrics/experiment_readout" in triage
    assert f"next: gtm-pipeline incidents ack {iid}" in triage
    assert "`pricing_page` look 30: ship bold (bold +0.0400 [+0.0200, +0.0600])" in _section(md, "Learnings")
    assert md.index("## Hygiene") < md.index("## Experiment status") < md.index("## Decision log integrity")


def test_weekly_packet_on_an_empty_warehouse_says_what_is_not_built(dc):
    md = build_packet(dc, "weekly_ops", NOW.date(), "SLO health green", TIMES).markdown
    assert "metrics.experiment_readout is not built yet" in _section(md, "Experiment status")
    assert "metrics.sql_funnel is not built yet" in _section(md, "Funnel anomalies")
    assert "- None." in _section(md, "Blockers")


def _leads_and_bookings(con, exp, n: int = 400) -> dict[str, tuple[int, float]]:
    """n leads (one account each) since the start; the shipped arm's accounts book 2,000, the others 1,000."""
    con.execute("CREATE OR REPLACE TABLE clean.lead (lead_id VARCHAR, account_id VARCHAR, created_at TIMESTAMP)")
    con.execute("CREATE OR REPLACE TABLE metrics.fact_bookings (account_id VARCHAR, amount DOUBLE, "
                "booked_at TIMESTAMP)")
    expected: dict[str, tuple[int, float]] = {}
    for i in range(n):
        lead, arm = f"L{i:04d}", arm_of(exp, f"L{i:04d}")
        amount = 2000.0 if arm == "short_form" else 1000.0
        con.execute("INSERT INTO clean.lead VALUES (?, ?, ?)", [lead, f"A{i:04d}", datetime(2026, 8, 2)])
        if i % 2 == 0:
            con.execute("INSERT INTO metrics.fact_bookings VALUES (?, ?, ?)", [f"A{i:04d}", amount,
                                                                              datetime(2026, 9, 1)])
        units, rev = expected.get(arm, (0, 0.0))
        expected[arm] = (units + 1, rev + (amount if i % 2 == 0 else 0.0))
    return expected


def test_monthly_packet_compares_shipped_revenue_with_the_holdout_and_ttv_not_built(dc):
    path = dc.contracts_dir / "experiments" / "lead_form_short.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["holdout_share"] = 0.2
    path.write_text(yaml.safe_dump(doc))
    exp = load_experiments(dc.contracts_dir, metric_columns(dc.contracts_dir))["lead_form_short"]
    expected = _leads_and_bookings(dc.con, exp)
    assert arm_revenue(dc.con, exp) == expected and expected["holdout"][0] > 40
    with log.writing(dc.con, dc.head):
        flags.set_flag(dc.con, exp.flag, {"state": "shipped", "arm": "short_form"}, set_by="ana", reason="ship",
                       decision_id="DEC-aaaaaaaaaaaa")
    md = build_packet(dc, "monthly_business_review", date(2026, 12, 2), "SLO health green", TIMES).markdown
    revenue = _section(md, "Revenue of shipped experiments against holdouts")
    (n_s, r_s), (n_h, r_h) = expected["short_form"], expected["holdout"]
    assert (f"`lead_form_short`: shipped short_form (DEC-aaaaaaaaaaaa): ${r_s / n_s:,.2f}/unit over {n_s:,} units "
            f"vs holdout ${r_h / n_h:,.2f}/unit over {n_h:,}: {r_s / n_s - r_h / n_h:+,.2f}/unit") in revenue
    ttv = _section(md, "Time to value and conversion deltas")
    assert "ttfv: not built yet" in ttv and "ttpv: not built yet" in ttv
    assert "## Risks" in md and "## Upcoming bets" in md


def test_monthly_packet_reads_ttv_and_conversion_deltas_once_built(dc):
    con = dc.con
    con.execute("CREATE TABLE metrics.ttfv (segment VARCHAR, channel VARCHAR, cohort_month VARCHAR, subjects BIGINT, "
                "p50_days DOUBLE, reached_30d DOUBLE)")
    con.executemany("INSERT INTO metrics.ttfv VALUES (?, ?, ?, ?, ?, ?)",
                    [("all", "all", "2026-10", 300, 12.0, 0.60), ("all", "all", "2026-11", 320, 10.5, 0.64),
                     ("all", "all", "all", 620, 11.0, 0.62), ("smb", "all", "2026-11", 100, 3.0, 0.9)])
    _funnel(con, {"all": [(100, 20)] * 4 + [(100, 25)] * 4})
    open_incident(con, severity="SEV1", origin="test", asset_key="metrics/booking_rate", rule="manual",
                  title="bookings missing", details={}, owner="RevOps", dedup_key="t2")
    md = build_packet(dc, "monthly_business_review", NOW.date(), "SLO health green", TIMES).markdown
    ttv = _section(md, "Time to value and conversion deltas")
    assert ("ttfv, cohort 2026-11 (320 subjects): p50 10.5 days, reached by 30 days 64%; vs 2026-10: p50 -1.5 days, "
            "reached by 30 days +4.0 pp") in ttv
    assert "ttpv: not built yet" in ttv
    assert "Lead→SQL, weeks" in ttv and "25.0% vs 20.0% (+5.0 pp)" in ttv
    assert "open SEV1" in _section(md, "Risks") and "bookings missing" in _section(md, "Risks")


def test_architecture_sync_packet_reads_dlq_drift_quarantine_and_contract_changes(dc):
    con = dc.con
    ensure_routing_tables(con)
    day = date(2027, 1, 14)
    now = datetime(2027, 1, 14, 19, 30)
    dc.clock = lambda: now
    con.execute("INSERT INTO ops.routing_dlq (dlq_id, kind, record_id, reason, status, first_failed_at) VALUES "
                "('d1', 'lead', 'L1', 'no eligible owner', 'open', '2027-01-10 08:00'), "
                "('d2', 'lead', 'L2', 'no eligible owner', 'replayed', '2026-12-01 08:00')")
    con.execute("INSERT INTO raw.schema_drift VALUES ('web', 'sessions', 'f.jsonl', '2027-01-09', ['country'], "
                "['region'], [], '2027-01-09 06:00')")
    con.execute("INSERT INTO raw.schema_drift VALUES ('crm', 'lead', 'g.jsonl', '2026-12-20', ['x'], [], [], "
                "'2026-12-20 06:00')")                              # before the period: not listed
    con.execute("INSERT INTO ops.publications (asset_key, published_at, row_count, version) VALUES "
                "('metrics/sql_funnel', '2026-12-20 06:00', 10, '1.0.0'), "
                "('metrics/sql_funnel', '2027-01-12 06:00', 10, '1.1.0'), "
                "('metrics/booking_rate', '2026-12-20 06:00', 10, '1.0.0'), "
                "('metrics/booking_rate', '2027-01-12 06:00', 10, '1.0.0')")
    con.execute("INSERT INTO ops.partition_status VALUES ('raw/web_sessions', '2027-01-12', 'published', NULL, "
                "'2027-01-12 06:00', 'r1'), ('raw/web_sessions', '2027-01-13', 'blocked', NULL, '2027-01-13 06:00', "
                "'r2')")
    md = build_packet(dc, "biweekly_architecture", day, "SLO health green", TIMES).markdown
    assert md.startswith("# Biweekly architecture sync — 2027-01-14")
    reliability = _section(md, "Automation reliability")
    assert "raw partitions updated: 2, published 1, blocked 1 (50.0% published)" in reliability
    dlq = _section(md, "Routing DLQ")
    assert "1 open, 1 replayed; 1 new this period" in dlq and "no eligible owner: 1 open" in dlq
    drift = _section(md, "Schema drift")
    assert "web.sessions: 1 file(s) drifted -- missing country; unexpected region" in drift and "crm" not in drift
    changes = _section(md, "Contract changes")
    assert "metrics/sql_funnel: contract version 1.0.0 -> 1.1.0" in changes and "booking_rate" not in changes
