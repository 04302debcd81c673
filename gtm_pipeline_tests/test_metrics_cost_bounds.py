"""Cost bounds of the metric contracts treat cost with zero conversions as infinite (issue 14 §2): the spec's
"CAC > $1M per channel -> block publish" holds for a channel that spent and won nothing, whose CAC is NULL only
because the division has no value. Table-driven over each bound x {no cost and no conversion, cost and no
conversion, bound - eps, bound, bound + eps}, in both engines the contracts compile to, then drilled through the
real write-audit-publish on a temporary DuckDB."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from gtm_pipeline.expressions import assertion_sql
from gtm_pipeline.metrics.contract import load_metric_contracts
from gtm_pipeline.metrics.publish import run_metric
from gtm_pipeline.metrics.registry import computations
from gtm_pipeline.warehouse import ensure_base

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = load_metric_contracts(REPO / "contracts")
COMPS = computations()
T1 = datetime(2026, 3, 1, 10)
BOUND = 1_000_000.0

# (metric, test, cost column, conversions column, the formula's target)
BOUNDS = {
    "cac_by_channel": ("cac_in_range", "marketing_cost", "wins", "cac"),
    "cac_per_sqo": ("in_range", "marketing_cost", "sqos", "cac_per_sqo"),
    "cac_by_channel_daily": ("cac_in_range", "marketing_cost_30d", "wins_30d", "cac_30d"),
}
CASES = [   # (case, cost, conversions, passes the bound)
    ("no cost, no conversion", 0.0, 0, True),
    ("cost, no conversion (infinite)", 500.0, 0, False),
    ("bound - eps", 2 * BOUND - 0.02, 2, True),
    ("bound", 2 * BOUND, 2, True),
    ("bound + eps", 2 * BOUND + 0.02, 2, False),
    ("zero cost, conversions", 0.0, 3, True),
]


def _evaluate(metric: str, cost: float, conversions: int) -> tuple[bool, bool]:
    """(DuckDB, pandas) verdict of the metric's cost bound on one row; the formula computes the cost ratio."""
    c = CONTRACTS[metric]
    test_name, cost_col, conv_col, target = BOUNDS[metric]
    [test] = [t for t in c.qa_tests if t.name == test_name]
    [formula] = [f for f in c.formulas if f.target == target]
    base = pd.DataFrame({cost_col: [cost], conv_col: [conversions], "marketing_cost": [cost],
                         "sales_cost": [0.0]}).loc[:, lambda d: ~d.columns.duplicated()]
    df = base.assign(**{target: formula.expression.evaluate(base)})
    con = duckdb.connect()
    con.register("base", base)
    sql = con.execute(f"SELECT {assertion_sql(test.expression)} FROM "
                      f"(SELECT *, {formula.expression.to_sql()} AS {target} FROM base)").fetchone()[0]
    return bool(sql), bool(test.expression.evaluate_assertion(df).iloc[0])


@pytest.mark.parametrize("metric", ["cac_by_channel", "cac_per_sqo"])
@pytest.mark.parametrize("case,cost,conversions,passes", CASES, ids=[c[0] for c in CASES])
def test_cost_bounds_per_channel(metric, case, cost, conversions, passes):
    assert _evaluate(metric, cost, conversions) == (passes, passes)


@pytest.mark.parametrize("case,cost,conversions,passes", CASES, ids=[c[0] for c in CASES])
def test_daily_cost_bound_blocks_finite_values_and_warns_on_infinite_ones(case, cost, conversions, passes):
    c = CONTRACTS["cac_by_channel_daily"]
    blocks = _evaluate("cac_by_channel_daily", cost, conversions)
    infinite = conversions == 0 and cost > 0
    assert blocks == ((passes or infinite),) * 2       # the error test judges finite 30-day CACs only ...
    [warn] = [t for t in c.qa_tests if t.name == "cac_30d_finite"]
    df = pd.DataFrame({"marketing_cost_30d": [cost], "wins_30d": [conversions]})
    assert warn.severity == "warn" and bool(warn.expression.evaluate_assertion(df).iloc[0]) is not infinite


# ---- drills through write-audit-publish ---------------------------------------------------------------------------

@pytest.fixture
def con(tmp_path):
    c = duckdb.connect(str(tmp_path / "bounds.duckdb"))
    ensure_base(c)
    c.execute("CREATE TABLE metrics.fact_costs (day DATE, channel VARCHAR, cost_type VARCHAR, amount DOUBLE, "
              "items BIGINT)")
    c.execute("CREATE TABLE metrics.fact_bookings (opportunity_id VARCHAR, account_id VARCHAR, segment VARCHAR, "
              "channel VARCHAR, booked_on DATE, cohort_month VARCHAR, seats BIGINT, net_price DOUBLE, mrr DOUBLE, "
              "amount DOUBLE, is_new_customer BOOLEAN)")
    yield c
    c.close()


def _costs(con, rows):
    con.executemany("INSERT INTO metrics.fact_costs VALUES (?, ?, ?, ?, 1)", rows)


def _win(con, opp: str, channel: str):
    con.execute("INSERT INTO metrics.fact_bookings VALUES (?, ?, 'smb', ?, DATE '2026-03-08', '2026-03', 10, 36.0, "
                "360.0, 4320.0, true)", [opp, f"A-{opp}", channel])


def test_a_channel_that_spent_and_won_nothing_blocks_cac_by_channel(con):
    _costs(con, [(date(2026, 3, 1), "paid_search", "ad_spend", 5000.0),
                 (date(2026, 3, 1), "paid_social", "ad_spend", 27776.74),     # the demo's paid_social
                 (date(2026, 3, 1), "direct", "sales", 300.0)])               # no marketing cost, no win: fine
    _win(con, "O1", "paid_search")
    out = run_metric(con, CONTRACTS["cac_by_channel"], COMPS["cac_by_channel"], now=T1)
    [t] = [t for t in out.tests if t.name == "cac_in_range"]
    assert not out.published and t.blocks and t.failed_rows == 1
    assert [(s["channel"], s["cac"]) for s in t.samples] == [("paid_social", None)]
    row = con.execute("SELECT severity, owner, status FROM ops.incidents WHERE asset_key = 'metrics/cac_by_channel'"
                      ).fetchall()
    assert row == [("SEV2", "Demand Gen", "open")]
    # the channel wins once: its CAC is 27,776.74, within the bound, and the table publishes
    _win(con, "O2", "paid_social")
    assert run_metric(con, CONTRACTS["cac_by_channel"], COMPS["cac_by_channel"], now=T1).published


def test_a_channel_that_spent_and_has_no_sqo_blocks_cac_per_sqo(con):
    con.execute("CREATE TABLE metrics.fact_pipeline (opportunity_id VARCHAR, snapshot_date DATE, channel VARCHAR, "
                "is_created BOOLEAN)")
    con.execute("INSERT INTO metrics.fact_pipeline VALUES ('O1', DATE '2026-03-02', 'paid_search', true)")
    _costs(con, [(date(2026, 3, 1), "paid_search", "ad_spend", 5000.0),
                 (date(2026, 3, 1), "events", "vendor", 900.0)])
    out = run_metric(con, CONTRACTS["cac_per_sqo"], COMPS["cac_per_sqo"], now=T1)
    [t] = [t for t in out.tests if t.name == "in_range"]
    assert not out.published and t.blocks and [s["channel"] for s in t.samples] == ["events"]
