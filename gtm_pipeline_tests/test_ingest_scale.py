"""Ingestion edge cases that only show at benchmark sizes (docs/bench.md)."""

from __future__ import annotations

import duckdb

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day

DAY = "2026-08-01"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
GOOD = "O{n},A1,L1,U1,2026-08-01 10:00:00,discovery,core,40,0.1,10,4320,USD,smb,na,software,11-50,email,2026-09-01"


def test_an_unterminated_quote_before_a_large_rest_of_file_does_not_fail_the_day(tmp_path):
    """A broken quote early in a big CSV makes Python's csv module see one field longer than its 128 KiB default
    limit while line numbers are aligned; the day must still load, every record counted once."""
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    n = 3_000  # ~300 KiB after the broken line
    lines = [OPP_HEADER, GOOD.format(n=0).replace(",A1,", ',"A1 broken,', 1)]
    lines += [GOOD.format(n=i) for i in range(1, n + 1)]
    path = tmp_path / "crm" / DAY / "opportunities.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 200_000
    with duckdb.connect() as con:
        report = ingest_day(con, spec, tmp_path, "crm", DAY)
        rows = con.execute("SELECT count(*) FROM raw.crm_opportunities").fetchone()[0]
        rejected = con.execute("SELECT count(*) FROM raw.rejects WHERE stage = 'ingest'").fetchone()[0]
    table = next(t for t in report.tables if t.table == "crm/opportunities")
    assert rows == table.rows and rejected == table.rejected
    assert rows + rejected >= 1 and rows <= n + 1
