"""Data for the metric-layer tests: a hand-made clean data set whose every metric can be worked out by hand, and a
fast loader of defect-free generated landing files into the clean tables.

The loader exists because the ground-truth tests need months of data (elasticity and win rates need closed
opportunities) and the clean stage proper takes much longer for that (every rule, dedup and incident bookkeeping per
batch). On defect-free files the clean stage publishes every row unchanged except for typing, so the loader applies the
clean stage's own typing SQL (`gtm_pipeline.clean.rules.typed_sql`) to every file of a table at once; a test checks
that it gives exactly the clean stage's rows on a small generated set.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from gtm_pipeline.clean import ensure_entity_tables
from gtm_pipeline.clean.contract import EntityContract, load_entity_contracts
from gtm_pipeline.clean.rules import quote_ident, typed_sql
from gtm_pipeline.ingest.landing import LandingSpec, load_landing_spec

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"


def _reader(spec_table, files: list[Path]) -> str:
    paths = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    if spec_table.format == "csv":
        return f"read_csv({paths}, all_varchar = true, header = true, filename = true)"
    if spec_table.format == "jsonl":
        cols = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in spec_table.columns) + "}"
        return f"read_json({paths}, format = 'newline_delimited', columns = {cols}, filename = true)"
    return f"read_parquet({paths}, filename = true)"


def bulk_load_clean(landing: Path, con: duckdb.DuckDBPyConnection, spec: LandingSpec | None = None,
                    contracts: dict[str, EntityContract] | None = None) -> dict[str, int]:
    """Type every landing file of a defect-free generated set into clean.<entity>; returns rows per entity."""
    spec = spec or load_landing_spec(CONTRACTS)
    contracts = contracts or load_entity_contracts(CONTRACTS)
    con.execute("SET TimeZone = 'UTC'")
    counts = {}
    for entity in spec.entities():
        contract = contracts[entity]
        ensure_entity_tables(con, contract)
        parts = []
        for t in spec.tables_for_entity(entity):
            files = sorted(landing.glob(f"{t.source}/*/{t.name}.{t.format}"))
            if not files:
                continue
            sel = []
            for col in contract.columns.values():
                src = t.to_entity.get(col.name)
                if src is None:
                    text = "NULL::VARCHAR"
                elif isinstance(src, tuple):
                    text = f"'{src[1]}'::VARCHAR"
                else:
                    text = f"CAST(r.{quote_ident(src)} AS VARCHAR)"
                sel.append(f"{typed_sql(col, text)} AS {quote_ident(col.name)}")
            parts.append(f"SELECT {', '.join(sel)}, '{t.source}' AS _source, '{t.name}' AS _table "
                         f"FROM {_reader(t, files)} r")
        if not parts:
            counts[entity] = 0
            continue
        names = ", ".join(quote_ident(c) for c in contract.columns) + ", _source, _table"
        con.execute(f"INSERT INTO clean.{entity} ({names}) {' UNION ALL '.join(parts)}")
        counts[entity] = con.execute(f"SELECT count(*) FROM clean.{entity}").fetchone()[0]
    return counts


# --------------------------------------------------------------------------------------------------------------------
# The hand-made data set (March 2026, UTC). The expected metric values in test_metrics_recompute.py are worked out
# from these rows by hand; the comments give the arithmetic's inputs.
# --------------------------------------------------------------------------------------------------------------------

OWNERS = [  # daily cost in March (31 days): SDR 3100/31 = 100, AE 6200/31 = 200
    dict(owner_id="U1", team="sdr", segment="smb", capacity_per_day=2, monthly_cost=3100, active=True,
         updated_at="2026-02-01 00:00:00"),
    dict(owner_id="U2", team="sdr", segment="mid_market", capacity_per_day=5, monthly_cost=3100, active=True,
         updated_at="2026-02-01 00:00:00"),
    dict(owner_id="A1", team="ae", segment="smb", capacity_per_day=5, monthly_cost=6200, active=True,
         updated_at="2026-02-01 00:00:00"),
]
LEADS = [  # latency = assigned_at - created_at: 30, 90, 200, 10, (unassigned), 60, 20 seconds
    dict(lead_id="L1", created_at="2026-03-01 10:00:00", assigned_at="2026-03-01 10:00:30", owner_id="U1",
         channel="paid_search", segment="smb", industry="software", size_band="11-50", status="converted",
         routed_by="engine"),
    dict(lead_id="L2", created_at="2026-03-01 11:00:00", assigned_at="2026-03-01 11:01:30", owner_id="U1",
         channel="paid_search", segment="smb", industry="retail", size_band="1-10", status="converted",
         routed_by="engine"),
    dict(lead_id="L3", created_at="2026-03-02 09:00:00", assigned_at="2026-03-02 09:03:20", owner_id="U1",
         channel="paid_search", segment="mid_market", industry="software", size_band="51-200",
         status="disqualified", dq_reason="no_budget", status_changed_at="2026-03-05 10:00:00",
         routed_by="round_robin"),
    dict(lead_id="L4", created_at="2026-03-02 10:00:00", assigned_at="2026-03-02 10:00:10", owner_id="U2",
         channel="email", segment="smb", industry="media", size_band="1-10", status="disqualified",
         status_changed_at="2026-03-05 11:00:00", routed_by="engine"),
    dict(lead_id="L5", created_at="2026-03-03 10:00:00", channel="email", segment="smb", industry="media",
         size_band="1-10", status="new"),
    dict(lead_id="L6", created_at="2026-03-03 12:00:00", assigned_at="2026-03-03 12:01:00", owner_id="U2",
         channel="email", segment="mid_market", industry="fintech", size_band="51-200", status="converted",
         routed_by="engine"),
    dict(lead_id="L7", created_at="2026-03-01 12:00:00", assigned_at="2026-03-01 12:00:20", owner_id="U1",
         channel="paid_search", segment="smb", industry="retail", size_band="1-10", status="working",
         routed_by="manual"),
]
ACCOUNTS = [
    dict(account_id="A-1", name="Alpha", segment="smb", industry="software", size_band="11-50"),
    dict(account_id="A-2", name="Beta", segment="mid_market", industry="fintech", size_band="51-200"),
    dict(account_id="A-3", name="Gamma", segment="smb", industry="retail", size_band="1-10"),
]
OPPORTUNITIES = [  # amount = list x (1 - discount) x seats x 12
    dict(opportunity_id="O1", account_id="A-1", lead_id="L1", owner_id="A1", created_at="2026-03-02 09:00:00",
         stage="prospecting", list_price=40.0, discount=0.1, seats=10, amount=4320.0, segment="smb",
         industry="software", size_band="11-50", channel="paid_search", close_date="2026-03-20"),
    dict(opportunity_id="O2", account_id="A-2", lead_id="L6", owner_id="A1", created_at="2026-03-04 09:00:00",
         stage="discovery", list_price=60.0, discount=0.0, seats=50, amount=36000.0, segment="mid_market",
         industry="fintech", size_band="51-200", channel="email", close_date="2026-03-25"),
    dict(opportunity_id="O3", account_id="A-3", lead_id="L2", owner_id="A1", created_at="2026-03-03 09:00:00",
         stage="prospecting", list_price=40.0, discount=0.0, seats=5, amount=2400.0, segment="smb",
         industry="retail", size_band="1-10", channel="paid_search", close_date="2026-03-15"),
]
STAGES = [
    ("S1", "O1", None, "prospecting", "2026-03-02 09:00:00", 4320.0),
    ("S2", "O1", "prospecting", "discovery", "2026-03-03 10:00:00", 4320.0),
    ("S3", "O1", "discovery", "proposal", "2026-03-05 10:00:00", 4320.0),
    ("S4", "O1", "proposal", "negotiation", "2026-03-06 10:00:00", 4320.0),
    ("S5", "O1", "negotiation", "closed_won", "2026-03-08 12:00:00", 4320.0),
    ("S6", "O2", None, "discovery", "2026-03-04 09:00:00", 36000.0),
    ("S7", "O2", "discovery", "proposal", "2026-03-06 09:00:00", 36000.0),
    ("S8", "O3", None, "prospecting", "2026-03-03 09:00:00", 2400.0),
    ("S9", "O3", "prospecting", "closed_lost", "2026-03-07 09:00:00", 2400.0),
]
AD_SPEND = [("2026-03-01", "paid_search", "G-1", 1000.0), ("2026-03-05", "paid_search", "G-1", 500.0)]
VENDOR_COSTS = [("VC1", "2026-03-01", "NewsCo", "email", "data", 300.0)]
ACTIVITIES = [  # (id, type, occurred_at, lead, session, channel)
    ("s1", "web_session", "2026-03-01 09:55:00", "L1", "s1", "paid_search"),
    ("f1", "form_fill", "2026-03-01 09:59:00", "L1", "s1", "paid_search"),   # same visit as s1: not a 2nd touch
    ("s2", "web_session", "2026-03-01 20:00:00", "L1", "s2", "organic_search"),
    ("s3", "web_session", "2026-03-02 08:00:00", "L1", "s3", "email"),
    ("s9", "web_session", "2026-03-03 08:00:00", "L1", "s9", "direct"),        # after O1 was created: not a touch
    ("s4", "web_session", "2026-03-03 08:00:00", "L6", "s4", "email"),
    ("p1", "page_view", "2026-03-01 09:56:00", "L1", "s1", None),              # no channel: not a touch
]


def _insert(con, entity: str, rows: list[dict]) -> None:
    for r in rows:
        cols = ", ".join(quote_ident(k) for k in r)
        marks = ", ".join("?" for _ in r)
        con.execute(f"INSERT INTO clean.{entity} ({cols}) VALUES ({marks})", list(r.values()))


def build_hand_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """Create every clean table (empty where the set has no rows) and insert the hand-made rows."""
    contracts = load_entity_contracts(CONTRACTS)
    for c in contracts.values():
        ensure_entity_tables(con, c)
    _insert(con, "owner", OWNERS)
    _insert(con, "lead", LEADS)
    _insert(con, "account", ACCOUNTS)
    _insert(con, "opportunity", OPPORTUNITIES)
    _insert(con, "opportunity_stage", [dict(stage_event_id=a, opportunity_id=b, from_stage=c, to_stage=d,
                                            changed_at=e, amount=f) for a, b, c, d, e, f in STAGES])
    _insert(con, "ad_spend", [dict(spend_date=a, channel=b, campaign_id=c, spend=d) for a, b, c, d in AD_SPEND])
    _insert(con, "vendor_cost", [dict(cost_id=a, cost_date=b, vendor=c, channel=d, category=e, amount=f)
                                 for a, b, c, d, e, f in VENDOR_COSTS])
    _insert(con, "activity", [dict(activity_id=a, activity_type=b, occurred_at=c, lead_id=d, session_id=e, channel=f)
                              for a, b, c, d, e, f in ACTIVITIES])
