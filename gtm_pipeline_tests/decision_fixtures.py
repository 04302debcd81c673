"""Small hand-made metric tables for the decision tests: the pricing node's inputs (with the columns the metric layer
publishes) and a daily booking rate whose level changes on a chosen day, so monitoring has something to judge.

Every table is published (ops.publications) with that data time three hours before the product clock's now
(``GTM_PIPELINE_NOW`` when frozen), or at ``published_at`` -- the lifecycle tests pass PUBLISHED_AT, three hours
before their own clock starts -- so the data-time gate (24 h, contracts/slos.yaml) holds until a test moves the clock
on."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from types import SimpleNamespace

import duckdb

from gtm_pipeline.warehouse import ensure_base

GREEN = SimpleNamespace(green=True, reasons=[])
CHANGE_DAY = date(2026, 10, 15)
PUBLISHED_AT = datetime(2026, 11, 2, 6, 0)
PRICING_TABLES = ("price_elasticity", "cm_per_seat", "gm_pct", "payback_by_segment", "booking_rate")
TEST_KEY = "test-key-0123456789abcdef"          # a decision-log key for tests (GTM_PIPELINE_DECISION_LOG_KEY)


def green(_assets):
    return GREEN


def pricing_metrics(con: duckdb.DuckDBPyConnection, *, smb_elasticity: float = -0.6,
                    rate_before: float = 0.30, rate_after: float = 0.30,
                    published_at: datetime | None = None) -> None:
    """smb qualifies (+7 %: price 50, CM 30 -> uplift $3.05); enterprise is outside the elasticity range. The smb
    booking rate is ``rate_before`` in the 28 days before CHANGE_DAY and ``rate_after`` from it on."""
    from gtm_pipeline.clock import utcnow

    ensure_base(con)
    published_at = published_at or utcnow() - timedelta(hours=3)
    stamp = f"TIMESTAMP '{published_at:%Y-%m-%d %H:%M:%S}'"
    con.execute(f"""CREATE OR REPLACE TABLE metrics.price_elasticity AS SELECT * FROM (VALUES
        ('smb', 400, 120, {smb_elasticity}, 0.1, NULL), ('enterprise', 300, 90, -1.4, 0.2, NULL))
        t(segment, closed, won, elasticity, e_se, note)""")
    con.execute("""CREATE OR REPLACE TABLE metrics.cm_per_seat AS SELECT * FROM (VALUES
        ('smb', 1000, 50.0, 20.0, 30.0), ('enterprise', 900, 80.0, 25.0, 55.0), ('all', 1900, 64.2, 22.4, 41.8))
        t(segment, seats, price_per_seat, cost_per_seat, cm_per_seat)""")
    con.execute("""CREATE OR REPLACE TABLE metrics.gm_pct AS SELECT * FROM (VALUES ('smb', 0.8), ('enterprise', 0.85))
        t(segment, gm_pct)""")
    con.execute("""CREATE OR REPLACE TABLE metrics.payback_by_segment AS SELECT * FROM (VALUES
        ('smb', 300.0, 150.0, 2.0), ('enterprise', 5000.0, 1000.0, 5.0), ('all', 900.0, 300.0, 3.0))
        t(segment, cac, monthly_cm, payback_months)""")
    rows = []
    for i in range(-28, 14):
        d = CHANGE_DAY + timedelta(days=i)
        rate = rate_before if i < 0 else rate_after
        rows.append(f"('smb', '{d.isoformat()}', {int(rate * 100)}, 100, 1000.0)")
    con.execute(f"""CREATE OR REPLACE TABLE metrics.booking_rate AS SELECT *, {stamp} AS _published_at FROM (VALUES
        {', '.join(rows)}) t(segment, day, won, closed, bookings)""")
    publish(con, PRICING_TABLES, published_at)


def publish(con: duckdb.DuckDBPyConnection, tables, at: datetime, data_time: datetime | None = None) -> None:
    """Record a publication of each metric table (its data time ``data_time``, default ``at``)."""
    for t in tables:
        con.execute("INSERT INTO ops.publications (asset_key, partition_key, published_at, row_count, version, run_id, "
                    "data_time) VALUES (?, NULL, ?, 2, '1.0.0', NULL, ?)", [f"metrics/{t}", at, data_time or at])


def open_sev2(con: duckdb.DuckDBPyConnection, asset_key: str) -> str:
    """An incident as the pipeline opens one (origin test, rule range); returns its id."""
    from gtm_pipeline.warehouse import open_incident

    return open_incident(con, severity="SEV2", origin="test", asset_key=asset_key, rule="range", title="test incident",
                  details={}, owner="FP&A", dedup_key=f"test:{asset_key}")[0]
