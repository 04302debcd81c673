"""Hand-made CRM landing files for the repair and routing tests: small, exact, and with known amounts.

Three delivery days (2026-08-01..03). Owners: four AEs and two SDRs. Every day has four opportunities with an owner
(amount 1000 each); day 2 adds two without an owner (amounts 2500 and 4000), one with a bad stage ("stage_7") and
an unassigned lead.
"""

from __future__ import annotations

from pathlib import Path

DAYS = ("2026-08-01", "2026-08-02", "2026-08-03")
MISSING_DAY = DAYS[1]
MISSING_AMOUNTS = (2500.0, 4000.0)
OWNERS_HEADER = "owner_id,name,email,team,segment,region,capacity_per_day,monthly_cost,active,updated_at"
OWNERS = [
    "U01,Ann Ae,ann@x.io,ae,smb,na,5,15000,true,2026-08-01 06:00:00",
    "U02,Bob Ae,bob@x.io,ae,smb,na,5,15000,true,2026-08-01 06:00:00",
    "U03,Cat Ae,cat@x.io,ae,mid_market,emea,5,15000,true,2026-08-01 06:00:00",
    "U04,Dan Ae,dan@x.io,ae,enterprise,na,1,15000,true,2026-08-01 06:00:00",
    "S01,Eve Sdr,eve@x.io,sdr,smb,na,10,8000,true,2026-08-01 06:00:00",
    "S02,Fay Sdr,fay@x.io,sdr,smb,emea,10,8000,true,2026-08-01 06:00:00",
]
ACCOUNTS_HEADER = "account_id,name,domain,industry,size_band,employees,region,segment,created_at,owner_id"
ACCOUNTS = [
    "A1,Acme,acme.io,software,11-50,30,na,smb,2026-07-01 00:00:00,U01",
    "A2,Beta,beta.io,retail,51-200,120,emea,mid_market,2026-07-01 00:00:00,U03",
    "A3,Gamma,gamma.io,fintech,5000+,9000,na,enterprise,2026-07-01 00:00:00,U04",
]
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
LEAD_HEADER = ("lead_id,created_at,email,company,account_id,channel,campaign_id,utm_source,utm_medium,utm_campaign,"
               "industry,size_band,region,segment,score,status,status_changed_at,dq_reason,owner_id,assigned_at,"
               "routed_by")


def opp(oid: str, day: str, *, owner: str = "U01", hour: int = 10, stage: str = "discovery", amount: float = 1000,
        segment: str = "smb", region: str = "na", account: str = "A1") -> str:
    return (f"{oid},{account},,{owner},{day} {hour:02d}:00:00,{stage},team,40,0.1,10,{amount:g},USD,{segment},"
            f"{region},software,11-50,email,2026-09-30")


def lead(lid: str, day: str, *, owner: str = "S01", hour: int = 9, region: str = "na", channel: str = "email") -> str:
    assigned = f"{day} {hour:02d}:01:00" if owner else ""
    return (f"{lid},{day} {hour:02d}:00:00,{lid.lower()}@c.io,Co,,{channel},,,,,software,11-50,{region},smb,50,new,,,"
            f"{owner},{assigned},{'engine' if owner else ''}")


def opportunities_for(day: str) -> list[str]:
    n = DAYS.index(day)
    rows = [opp(f"O{n}{i}", day, owner=("U01", "U02", "U03", "U01")[i], hour=9 + i,
                segment=("smb", "smb", "mid_market", "smb")[i], region=("na", "na", "emea", "na")[i],
                account=("A1", "A1", "A2", "A1")[i]) for i in range(4)]
    if day == MISSING_DAY:
        rows.append(opp("OM1", day, owner="", hour=14, amount=MISSING_AMOUNTS[0]))
        rows.append(opp("OM2", day, owner="", hour=15, amount=MISSING_AMOUNTS[1], segment="mid_market",
                        region="emea", account="A2"))
        rows.append(opp("OB1", day, hour=16, stage="stage_7", amount=777))
    return rows


def write_landing(landing: Path, days=DAYS) -> Path:
    """Write crm/owners, accounts, opportunities and leads for ``days`` under ``landing``; returns ``landing``."""
    for day in days:
        d = landing / "crm" / day
        d.mkdir(parents=True, exist_ok=True)
        if day == DAYS[0]:
            (d / "owners.csv").write_text("\n".join([OWNERS_HEADER, *OWNERS]) + "\n")
            (d / "accounts.csv").write_text("\n".join([ACCOUNTS_HEADER, *ACCOUNTS]) + "\n")
        (d / "opportunities.csv").write_text("\n".join([OPP_HEADER, *opportunities_for(day)]) + "\n")
        leads = [lead(f"L{DAYS.index(day)}1", day)]
        if day == MISSING_DAY:
            leads.append(lead("LU1", day, owner="", region="emea", hour=11))
        (d / "leads.csv").write_text("\n".join([LEAD_HEADER, *leads]) + "\n")
    return landing


def build_warehouse(root: Path) -> tuple[Path, Path]:
    """The hand-made CRM days written under ``root``, ingested and cleaned (plain functions).

    Returns (landing folder, DuckDB file)."""
    import duckdb

    from gtm_pipeline.clean import clean_days
    from gtm_pipeline.clean.contract import load_entity_contracts
    from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.ingest.stage import ingest_days

    spec, contracts = load_landing_spec(CONTRACTS_DIR_DEFAULT), load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    landing = write_landing(root / "landing")
    db = root / "gtm.duckdb"
    with duckdb.connect(str(db)) as con:
        ingest_days(con, spec, landing, "crm", list(DAYS))
        for e in ("owner", "account", "lead", "opportunity"):
            clean_days(con, spec, contracts[e], list(DAYS))
    return landing, db
