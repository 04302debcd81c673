"""Account profile and enrichment conflicts (gtm_pipeline/metrics/enrichment.py) on a hand-made warehouse: the CRM
wins, a field the CRM leaves empty takes the newest vendor value and names the vendor, ties never depend on arrival
order, and the conflict rate counts only real comparisons."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest

from gtm_pipeline.metrics.registry import BuildContext, computations

ACCOUNTS = [("A1", "software", None, None), ("A2", None, "11-50", "na"), ("A3", None, None, None)]
FIRMO = [  # record_id, account_id, industry, size_band, region, observed_at, vendor
    ("R1", "A1", "fintech", None, "emea", "2026-08-01", "acme"),
    ("R2", "A1", "software", None, None, "2026-08-05", "zoom_info"),
    ("R3", "A2", "retail", "51-200", "na", "2026-08-03", "acme"),
    ("R4", "A2", "media", None, None, "2026-08-03", "zoom_info"),   # same day as R3: the tie goes by vendor
    ("R5", "A9", "media", "1-10", "na", "2026-08-03", "acme"),      # an account the CRM does not have
]


@pytest.fixture
def con():
    c = duckdb.connect()
    c.execute("CREATE SCHEMA clean")
    c.execute("CREATE TABLE clean.account (account_id VARCHAR, industry VARCHAR, size_band VARCHAR, region VARCHAR)")
    c.executemany("INSERT INTO clean.account VALUES (?, ?, ?, ?)", ACCOUNTS)
    c.execute("CREATE TABLE clean.firmographic (record_id VARCHAR, account_id VARCHAR, industry VARCHAR, "
              "size_band VARCHAR, region VARCHAR, observed_at TIMESTAMP, vendor VARCHAR)")
    c.executemany("INSERT INTO clean.firmographic VALUES (?, ?, ?, ?, ?, ?, ?)", FIRMO)
    yield c
    c.close()


def run(con, name: str) -> list[tuple]:
    comp = computations()[name]
    sql = comp.build(con, BuildContext(name, comp.reads, datetime(2026, 8, 10)))
    return con.execute(f"SELECT * FROM ({sql}) ORDER BY ALL").fetchall()


def test_the_crm_wins_and_an_empty_field_takes_the_newest_vendor_value(con):
    assert run(con, "account_profile") == [
        # industry: the CRM's, though acme said fintech; region: only acme knows it
        ("A1", "software", "crm", None, None, "emea", "vendor:acme", 1, 3),
        # industry: acme and zoom_info observed it the same day -- acme wins the tie by name, whatever the order
        ("A2", "retail", "vendor:acme", "11-50", "crm", "na", "crm", 1, 3),
        ("A3", None, None, None, None, None, None, 0, 3),
    ]
    con.execute("DELETE FROM clean.firmographic")
    con.executemany("INSERT INTO clean.firmographic VALUES (?, ?, ?, ?, ?, ?, ?)", list(reversed(FIRMO)))
    assert run(con, "account_profile")[1][1:3] == ("retail", "vendor:acme")


def test_the_conflict_rate_counts_only_fields_both_sides_know(con):
    assert run(con, "enrichment_conflict_rate") == [
        ("industry", "acme", 1, 1),        # A1: acme's fintech vs the CRM's software (A2 has no CRM industry)
        ("industry", "all", 2, 1),
        ("industry", "zoom_info", 1, 0),   # A1: software = software
        ("region", "acme", 1, 0),          # A2: na = na (A1's region is the CRM's blank: no comparison)
        ("region", "all", 1, 0),
        ("size_band", "acme", 1, 1),       # A2: 51-200 vs 11-50
        ("size_band", "all", 1, 1),
    ]
