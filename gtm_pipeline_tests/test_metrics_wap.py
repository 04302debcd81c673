"""Write, audit, publish on a temporary DuckDB: a failed audit keeps the previous version, opens one incident and
notifies the owner once; fixed data publishes; the spec's out-of-range cases (CM < -$1000 per line, CAC > $1M per
channel) block; a zero or negative Monthly_CM shows up in its own check."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.metrics.contract import load_metric_contracts, parse_metric_contract
from gtm_pipeline.metrics.publish import run_metric
from gtm_pipeline.metrics.registry import Computation, computations
from gtm_pipeline.warehouse import ensure_base

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = load_metric_contracts(REPO / "contracts")
COMPS = computations()
T1, T2, T3 = datetime(2026, 3, 1, 10), datetime(2026, 3, 2, 10), datetime(2026, 3, 3, 10)

RATIO_CONTRACT = """
metric: Ratio
definition: num over den per key
grain: [k]
inputs: [clean.src]
formula: "ratio = num / den"
qa_tests:
  - name: in_range
    assert: "ratio <= 10"
  - name: small_num
    severity: warn
    assert: "num < 1000"
break_action: block_publish_and_page_owner
owner: FP&A
{extra}
"""


def _ratio_comp(columns=("k", "num", "den"), reads=("clean.src",), sql=None) -> Computation:
    return Computation(name="ratio_metric", reads=tuple(reads), columns=tuple(columns),
                       build=lambda con, ctx: sql or f"SELECT k, num, den FROM {ctx.table('clean.src')}")


def _ratio(tmp_path, extra: str = "", comp: Computation | None = None):
    path = tmp_path / "ratio_metric.yaml"
    path.write_text(RATIO_CONTRACT.format(extra=extra))
    comp = comp or _ratio_comp()
    return parse_metric_contract(path, {"ratio_metric": comp}, {"clean.src"}), comp


@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "wap.duckdb"))
    ensure_base(c)
    c.execute("CREATE TABLE clean.src (k VARCHAR, num DOUBLE, den DOUBLE)")
    yield c
    c.close()


def _set(con, rows):
    con.execute("DELETE FROM clean.src")
    con.executemany("INSERT INTO clean.src VALUES (?, ?, ?)", rows)


def _incidents(con, key="metric:ratio_metric:audit"):
    return con.execute("SELECT incident_id, severity, status, owner, rule FROM ops.incidents WHERE dedup_key = ? "
                       "ORDER BY opened_at", [key]).fetchall()


def _notifications(con):
    return con.execute("SELECT recipient, channel, subject, body, incident_id FROM ops.notifications").fetchall()


def test_failed_audit_keeps_previous_version_opens_one_incident_and_pages_once(con, tmp_path):
    contract, comp = _ratio(tmp_path)
    _set(con, [("a", 4.0, 2.0), ("b", 9.0, 3.0)])
    first = run_metric(con, contract, comp, now=T1, run_id="r1")
    assert first.published and first.published_at == T1 and first.published_rows == 2
    assert con.execute("SELECT k, ratio FROM metrics.ratio_metric ORDER BY k").fetchall() == [("a", 2.0), ("b", 3.0)]
    assert con.execute("SELECT asset_key, row_count, published_at, run_id FROM ops.publications").fetchall() == [
        ("metrics/ratio_metric", 2, T1, "r1")]

    _set(con, [("a", 4.0, 2.0), ("b", 90.0, 3.0)])  # ratio 30 breaks in_range
    blocked = run_metric(con, contract, comp, now=T2, run_id="r2")
    assert not blocked.published and [t.name for t in blocked.failures] == ["in_range"]
    assert blocked.published_at == T1 and blocked.published_rows == 2  # what readers still see
    assert con.execute("SELECT k, ratio FROM metrics.ratio_metric ORDER BY k").fetchall() == [("a", 2.0), ("b", 3.0)]
    assert con.execute("SELECT k, ratio FROM metrics._candidate_ratio_metric WHERE k = 'b'").fetchall() == [
        ("b", 30.0)]  # the rejected candidate is kept for the owner
    incidents = _incidents(con)
    assert [(i[1], i[2], i[3], i[4]) for i in incidents] == [("SEV2", "open", "FP&A", "in_range")]
    notes = _notifications(con)
    assert len(notes) == 1 and notes[0][0] == "FP&A" and notes[0][1] == "page" and notes[0][4] == incidents[0][0]
    assert "in_range: ratio <= 10 -- 1/2 rows fail" in notes[0][3] and "metrics._candidate_ratio_metric" in notes[0][3]
    assert con.execute("SELECT count(*) FROM ops.publications").fetchone()[0] == 1
    sample = next(t for t in blocked.tests if t.name == "in_range").samples
    assert sample == [{"k": "b", "ratio": 30.0}]

    again = run_metric(con, contract, comp, now=T3, run_id="r3")  # still broken: no second incident or page
    assert not again.published and again.incident_id == incidents[0][0] and not again.notified
    assert len(_incidents(con)) == 1 and len(_notifications(con)) == 1

    _set(con, [("a", 4.0, 2.0), ("b", 9.0, 1.0)])  # fixed
    fixed = run_metric(con, contract, comp, now=T3, run_id="r4")
    assert fixed.published and fixed.published_at == T3
    assert con.execute("SELECT k, ratio FROM metrics.ratio_metric ORDER BY k").fetchall() == [("a", 2.0), ("b", 9.0)]
    assert [i[2] for i in _incidents(con)] == ["resolved"]
    assert con.execute("SELECT max(published_at), count(*) FROM ops.publications").fetchone() == (T3, 2)
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = "
                       "'_candidate_ratio_metric'").fetchone()[0] == 0


def test_a_warn_test_reports_without_blocking(con, tmp_path):
    contract, comp = _ratio(tmp_path)
    _set(con, [("a", 5000.0, 1000.0)])
    out = run_metric(con, contract, comp, now=T1)
    warn = next(t for t in out.tests if t.name == "small_num")
    assert out.published and not warn.passed and warn.severity == "warn" and warn.failed_rows == 1


@pytest.mark.parametrize("policy, den, published, failed_rows, counts", [
    ("", 0.0, False, 1, {"negative": 0, "zero": 1, "missing": 0}),           # default null_policy: fail
    ("null_policy: allow", 0.0, True, 1, {"negative": 0, "zero": 1, "missing": 0}),
    ("null_policy: allow", None, True, 1, {"negative": 0, "zero": 0, "missing": 1}),
    ("null_policy: allow", -2.0, False, 1, {"negative": 1, "zero": 0, "missing": 0}),  # negative always fails
])
def test_zero_or_negative_denominators_show_in_their_own_check(con, tmp_path, policy, den, published, failed_rows,
                                                               counts):
    contract, comp = _ratio(tmp_path, extra=policy)
    contract = dataclasses.replace(contract, qa_tests=())  # only the automatic checks decide
    _set(con, [("a", 4.0, 2.0), ("b", 4.0, den)])
    out = run_metric(con, contract, comp, now=T1)
    check = next(t for t in out.tests if t.name == "denominator_positive")
    assert out.published is published and check.passed is published
    assert check.failed_rows == failed_rows and check.samples[0]["k"] == "b"
    assert check.details["by_denominator"]["den"] == {**counts, "guarded": False}


def test_duplicate_grain_rows_block(con, tmp_path):
    contract, comp = _ratio(tmp_path)
    _set(con, [("a", 4.0, 2.0), ("a", 6.0, 2.0), ("b", 1.0, 1.0)])
    out = run_metric(con, contract, comp, now=T1)
    grain = next(t for t in out.tests if t.name == "grain_unique")
    assert not out.published and not grain.passed and grain.failed_rows == 2
    assert grain.details == {"duplicated_keys": 1} and grain.samples == [{"k": "a", "rows": 2}]


def test_computation_errors_name_the_metric(con, tmp_path):
    contract, _ = _ratio(tmp_path)
    sneaky = Computation(name="ratio_metric", reads=("clean.src",), columns=("k", "num", "den"),
                         build=lambda con, ctx: f"SELECT * FROM {ctx.table('clean.lead')}")
    with pytest.raises(GtmPipelineError, match=r"metrics/ratio_metric: the computation reads 'clean\.lead', which it "
                                               r"does not declare"):
        run_metric(con, contract, sneaky, now=T1)
    wrong = _ratio_comp(columns=("k", "num", "den", "extra"))
    with pytest.raises(GtmPipelineError, match=r"metrics/ratio_metric: the computation produced columns "
                                               r"\['k', 'num', 'den'.*but declares \['k', 'num', 'den', 'extra'"):
        run_metric(con, contract, wrong, now=T1)
    con.execute("DROP TABLE clean.src")
    with pytest.raises(GtmPipelineError, match=r"metrics/ratio_metric: input table clean\.src does not exist; "
                                               r"materialize clean/src first"):
        run_metric(con, contract, _ratio_comp(), now=T1)


def test_partitioned_publish_replaces_only_its_window(con, tmp_path):
    path = tmp_path / "daily_metric.yaml"
    path.write_text("metric: Daily\nkind: fact\ndefinition: d\ngrain: [day]\ninputs: [clean.src]\n"
                    "qa_tests:\n  - {name: positive, assert: 'n > 0'}\nbreak_action: block_publish_and_notify_owner\n"
                    "owner: RevOps\n")
    comp = Computation(
        name="daily_metric", reads=("clean.src",), columns=("day", "n"), partition_column="day",
        build=lambda con, ctx: (f"SELECT d::DATE AS day, CAST(num AS DOUBLE) AS n FROM {ctx.table('clean.src')}, "
                                f"generate_series(DATE '{ctx.window[0]}', DATE '{ctx.window[1]}', INTERVAL 1 DAY) "
                                f"g(d) WHERE k = 'a'"))
    contract = parse_metric_contract(path, {"daily_metric": comp}, {"clean.src"})
    _set(con, [("a", 1.0, 1.0)])
    run_metric(con, contract, comp, now=T1, window=(date(2026, 3, 1), date(2026, 3, 3)))
    _set(con, [("a", 2.0, 1.0)])
    out = run_metric(con, contract, comp, now=T2, window=(date(2026, 3, 3), date(2026, 3, 4)))
    assert out.published and out.window == (date(2026, 3, 3), date(2026, 3, 4))
    assert con.execute("SELECT day, n FROM metrics.daily_metric ORDER BY day").fetchall() == [
        (date(2026, 3, 1), 1.0), (date(2026, 3, 2), 1.0), (date(2026, 3, 3), 2.0), (date(2026, 3, 4), 2.0)]
    assert con.execute("SELECT partition_key, published_at FROM ops.publications ORDER BY published_at, "
                       "partition_key").fetchall() == [
        ("2026-03-01", T1), ("2026-03-02", T1), ("2026-03-03", T1), ("2026-03-03", T2), ("2026-03-04", T2)]
    _set(con, [("a", -1.0, 1.0)])  # blocked: the window keeps its published rows
    blocked = run_metric(con, contract, comp, now=T3, window=(date(2026, 3, 4), date(2026, 3, 4)))
    assert not blocked.published
    assert con.execute("SELECT n FROM metrics.daily_metric WHERE day = DATE '2026-03-04'").fetchone() == (2.0,)
    notes = _notifications(con)
    assert len(notes) == 1 and notes[0][0] == "RevOps" and notes[0][1] == "owner"


# -- the spec's contract test cases on the metric layer (§3: out of range blocks publish and notifies the owner) --

def _bookings_table(con, rows):
    con.execute("CREATE OR REPLACE TABLE metrics.fact_bookings (opportunity_id VARCHAR, account_id VARCHAR, "
                "segment VARCHAR, channel VARCHAR, booked_on DATE, cohort_month VARCHAR, seats BIGINT, "
                "net_price DOUBLE, mrr DOUBLE, amount DOUBLE, is_new_customer BOOLEAN)")
    con.executemany("INSERT INTO metrics.fact_bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def test_cm_below_minus_1000_per_line_blocks_and_notifies_the_owner(con):
    good = ("O1", "A1", "smb", "paid_search", date(2026, 3, 8), "2026-03", 10, 36.0, 360.0, 4320.0, True)
    _bookings_table(con, [good])
    first = run_metric(con, CONTRACTS["cm_by_line"], COMPS["cm_by_line"], now=T1)
    assert first.published
    # 400 seats sold at $1/seat/month: CM = 400 - (400 x 6 + 0.029 x 400) - 0.10 x 400 = -2051.6 < -1000
    bad = ("O2", "A2", "smb", "email", date(2026, 3, 9), "2026-03", 400, 1.0, 400.0, 4800.0, True)
    _bookings_table(con, [good, bad])
    out = run_metric(con, CONTRACTS["cm_by_line"], COMPS["cm_by_line"], now=T2)
    cm = next(t for t in out.tests if t.name == "cm_in_range")
    assert not out.published and cm.failed_rows == 1
    assert cm.samples[0]["opportunity_id"] == "O2" and cm.samples[0]["monthly_cm"] == pytest.approx(-2051.6)
    assert con.execute("SELECT opportunity_id FROM metrics.cm_by_line").fetchall() == [("O1",)]
    inc = _incidents(con, "metric:cm_by_line:audit")
    assert [(i[1], i[3], i[4]) for i in inc] == [("SEV2", "FP&A", "cm_in_range")]
    notes = _notifications(con)
    assert [(n[0], n[1]) for n in notes] == [("FP&A", "owner")] and "cm_in_range" in notes[0][2]


def test_cac_above_1m_per_channel_blocks_and_notifies_the_owner(con):
    con.execute("CREATE TABLE metrics.fact_costs (day DATE, channel VARCHAR, cost_type VARCHAR, amount DOUBLE, "
                "items BIGINT)")
    con.execute("INSERT INTO metrics.fact_costs VALUES ('2026-03-01', 'paid_search', 'ad_spend', 5000, 1), "
                "('2026-03-01', 'events', 'vendor', 2500000, 1), ('2026-03-01', 'events', 'sales', 100, 1)")
    _bookings_table(con, [("O1", "A1", "smb", "paid_search", date(2026, 3, 8), "2026-03", 10, 36.0, 360.0, 4320.0,
                           True),
                          ("O2", "A2", "smb", "events", date(2026, 3, 8), "2026-03", 10, 36.0, 360.0, 4320.0, True)])
    out = run_metric(con, CONTRACTS["cac_by_channel"], COMPS["cac_by_channel"], now=T1)
    cac = next(t for t in out.tests if t.name == "cac_in_range")
    assert not out.published and cac.failed_rows == 2  # events and the blended 'all' row
    assert {s["channel"]: s["cac"] for s in cac.samples} == {"events": 2500000.0, "all": 1252500.0}
    assert not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'metrics' AND "
                           "table_name = 'cac_by_channel'").fetchone()[0]
    assert [(n[0], n[1]) for n in _notifications(con)] == [("Demand Gen", "owner")]


# -- Payback: zero or negative Monthly_CM is its own test result --------------------------------------------------

def _payback_inputs(con, cm_email: float):
    con.execute("CREATE OR REPLACE TABLE metrics.cac_by_channel_daily (day DATE, channel VARCHAR, segment VARCHAR, "
                "marketing_cost DOUBLE)")
    con.execute("INSERT INTO metrics.cac_by_channel_daily VALUES ('2026-03-01', 'paid_search', 'smb', 1000), "
                "('2026-03-02', 'email', 'smb', 300)")
    con.execute("CREATE OR REPLACE TABLE metrics.cm_by_account_monthly (account_id VARCHAR, month VARCHAR, "
                "segment VARCHAR, channel VARCHAR, cohort_month VARCHAR, monthly_cm DOUBLE)")
    con.execute(f"INSERT INTO metrics.cm_by_account_monthly VALUES "
                f"('A1', '2026-03', 'smb', 'paid_search', '2026-03', 200), "
                f"('A2', '2026-03', 'smb', 'email', '2026-03', {cm_email})")


def _payback(con):
    out = run_metric(con, CONTRACTS["payback"], COMPS["payback"], now=T1)
    rows = {(r[0], r[1], r[2]): r[3:] for r in con.execute(
        "SELECT segment, channel, cohort_month, cac, monthly_cm, payback_months FROM metrics._candidate_payback"
    ).fetchall()} if not out.published else {}
    return out, {t.name: t for t in out.tests}, rows


@pytest.fixture
def single_customer_cells(monkeypatch):
    """These tests check the formula row by row on one-customer cohorts, below the production minimum of 3."""
    from gtm_pipeline.metrics import unit_economics

    monkeypatch.setattr(unit_economics, "MIN_COHORT_CUSTOMERS", 1)


def test_payback_small_cohort_cells_are_not_reported_but_count_in_rollups(con):
    _payback_inputs(con, 100.0)
    out, tests, _ = _payback(con)
    assert out.published
    got = {(r[0], r[1], r[2])
           for r in con.execute("SELECT segment, channel, cohort_month FROM metrics.payback").fetchall()}
    assert ("smb", "paid_search", "2026-03") not in got and ("smb", "paid_search", "all") in got


def test_payback_publishes_with_positive_cm(con, single_customer_cells):
    _payback_inputs(con, 100.0)
    out, tests, _ = _payback(con)
    assert out.published and all(t.passed for t in tests.values())
    got = dict(((r[0], r[1], r[2]), r[3]) for r in con.execute(
        "SELECT segment, channel, cohort_month, payback_months FROM metrics.payback").fetchall())
    # Row by row: 1000/200 = 5 and 300/100 = 3; the rollup is a ratio of sums: CAC = 1300 / 2 customers = 650,
    # Monthly_CM = (200 + 100) / 2 = 150, payback 650 / 150 = 4.33 (not the mean of 5 and 3).
    assert got[("smb", "paid_search", "2026-03")] == pytest.approx(5.0)
    assert got[("smb", "email", "2026-03")] == pytest.approx(3.0)
    assert got[("smb", "all", "all")] == pytest.approx(650 / 150)


def test_payback_zero_cm_fails_its_own_check_not_only_the_bound(con, single_customer_cells):
    _payback_inputs(con, 0.0)
    out, tests, rows = _payback(con)
    assert not out.published
    assert tests["positive_values"].passed  # 0 >= 0: the spec's own test does not see it
    den = tests["denominator_positive"]
    assert not den.passed and den.failed_rows == 2  # (smb, email, 2026-03) and its (smb, email, all) rollup
    assert den.details["by_denominator"] == {"monthly_cm": {"negative": 0, "zero": 2, "missing": 0, "guarded": True}}
    assert {(s["channel"], s["cohort_month"]) for s in den.samples} == {("email", "2026-03"), ("email", "all")}
    assert rows[("smb", "email", "2026-03")][2] == pytest.approx(300 / 1e-6)  # what max(0, 1e-6) would publish
    assert "denominator_positive" in con.execute("SELECT rule FROM ops.incidents").fetchone()[0]


def test_payback_negative_cm_fails_positive_values_and_its_own_check(con, single_customer_cells):
    _payback_inputs(con, -50.0)
    out, tests, _ = _payback(con)
    assert not out.published and not tests["positive_values"].passed
    assert tests["denominator_positive"].details["by_denominator"]["monthly_cm"]["negative"] == 2
