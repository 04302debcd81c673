"""The conservation ledger counts what arrived, not what reached raw: drills against each of its promises.

- a day whose every line was rejected is in the ledger (`ledger --day`, `--json`), with its rejects;
- a 0-byte file is a file reject ("empty file") naming its path; a file no table reads is `unclaimed`, with the
  closest table, in the ledger, in the asset check's metadata and in the exporter's series (test_slo_exporter.py);
- a rejected line keeps the file's exact bytes and shows them escaped, wherever DuckDB places the record;
- a raw row that disappears is `lost` (the ledger does not start from raw), and re-running a day changes nothing.
"""

from __future__ import annotations

import json
import re

import dagster as dg
import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from dagster_duckdb import DuckDBResource

from gtm_pipeline.clean import clean_partition
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.cli import main
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ingest.landing import closest_table, load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine.ledger import COUNTS, as_json, conservation, render, unread_files

SPEC = load_landing_spec(CONTRACTS_DIR_DEFAULT)
CONTRACTS = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
D1, D2 = "2026-08-08", "2026-08-09"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
GOOD = "O{n},A1,L1,U1,2026-08-01 10:00:00,discovery,core,40,0.1,10,4320,USD,smb,na,software,11-50,email,2026-09-01"
LEADS_HEADER = ",".join(SPEC.table("crm/leads").columns)


def _write(landing, rel: str, data: bytes):
    p = landing / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _run_day(con, landing, day: str, sources=("crm",)):
    for source in sources:
        ingest_day(con, SPEC, landing, source, day)
    for entity in ("owner", "account", "lead", "opportunity"):
        clean_partition(con, SPEC, CONTRACTS[entity], day)


def _row(df: pd.DataFrame, table: str, day: str) -> dict:
    got = df[(df["table"] == table) & (df["_partition"].astype(str).str[:10] == day)]
    assert len(got) == 1, df
    return got.iloc[0].to_dict()


def _balanced(df: pd.DataFrame) -> bool:
    return bool(((df["records"] == df["clean"] + df["superseded"] + df["quarantined"] + df["held"] + df["rejected"])
                 & (df["lost"] == 0)).all())


class Warehouse:
    """A writable connection to the configured (temporary) warehouse, closed while the CLI reads the file: DuckDB
    opens a file read-only only when this process holds no other connection to it."""

    def __init__(self, path):
        self.path = str(path)
        self.con = duckdb.connect(self.path)

    def cli(self, *args) -> str:
        self.con.close()
        try:
            res = CliRunner().invoke(main, ["ledger", *args], catch_exceptions=False)
        finally:
            self.con = duckdb.connect(self.path)
        assert res.exit_code == 0, res.output
        return res.output


@pytest.fixture
def wh(env_settings):
    """(warehouse, landing folder) at the configured temporary paths, so the CLI reads the same warehouse."""
    s = env_settings
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    s.landing_dir.mkdir(parents=True, exist_ok=True)
    w = Warehouse(s.duckdb_path)
    yield w, s.landing_dir
    w.con.close()


def test_a_day_whose_every_line_was_rejected_is_in_the_ledger_with_its_rejects(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"crm/{D1}/opportunities.csv", f"{OPP_HEADER}\n{GOOD.format(n=1)}\n".encode())
    _write(landing, f"crm/{D2}/opportunities.csv", f"{OPP_HEADER}\nO2,A1,L1\nO3,broken\n".encode())
    for day in (D1, D2):
        _run_day(con, landing, day)
    assert con.execute("SELECT count(*) FROM raw.crm_opportunities WHERE _partition = ?", [D2]).fetchone()[0] == 0
    day2 = _row(conservation(con, SPEC, day=D2), "crm/opportunities", D2)
    assert {k: day2[k] for k in ("files", *COUNTS)} == {"files": 1, "records": 2, "clean": 0, "superseded": 0,
                                                        "quarantined": 0, "held": 0, "rejected": 2, "lost": 0}
    doc = json.loads(w.cli("--json", "--day", D2))
    assert doc["balanced"] and doc["day"] == D2
    assert [t for t in doc["tables"] if t["table"] == "crm/opportunities"] == [
        {"table": "crm/opportunities", "day": D2, "files": 1, "files_rejected": 0, "records": 2, "clean": 0,
         "superseded": 0, "quarantined": 0, "held": 0, "rejected": 2, "lost": 0, "rejected_ingest": 2,
         "rejected_clean": 0, "raw_rows": 0, "in_two_places": 0}]
    text = w.cli("--day", D2)
    assert "crm/opportunities" in text and "rejected lines (2;" in text
    assert f"crm/{D2}/opportunities.csv:2 [ingest] missing field(s)" in text and "raw: O2,A1,L1" in text
    # The default view is a per-table summary over all days, and names the rejected-only day.
    summary = w.cli()
    assert "days whose every record was rejected: crm/opportunities 2026-08-09" in summary
    assert "3 records = 1 clean + 0 quarantined + 0 held + 2 rejected; lost: 0" in summary
    full = json.loads(w.cli("--json"))
    assert {(t["table"], t["day"]) for t in full["tables"]} >= {("crm/opportunities", D1), ("crm/opportunities", D2)}


@pytest.mark.parametrize("rel, fmt", [(f"crm/{D1}/leads.csv", "CSV"), (f"vendors/{D1}/intent.parquet", "PARQUET")])
def test_a_zero_byte_file_is_a_file_reject_naming_its_path(wh, rel, fmt):
    w, landing = wh
    con = w.con
    _write(landing, rel, b"")
    source, table = rel.split("/")[0], rel.split("/")[-1].split(".")[0]
    rep = ingest_day(con, SPEC, landing, source, D1)
    assert next(t for t in rep.tables if t.file == rel).file_reject.startswith("empty file")
    rejects = con.execute("SELECT _table, _line, rule, reason, raw_text FROM raw.rejects").fetchall()
    assert rejects == [(table, None, "file", f"empty file: {rel} has 0 bytes (a {fmt} export has at least its "
                                             f"{'header line' if fmt == 'CSV' else 'footer'}); re-export it", None)]
    row = _row(conservation(con, SPEC), f"{source}/{table}", D1)
    assert (row["files"], row["files_rejected"], row["records"], row["lost"]) == (1, 1, 0, 0)
    files = unread_files(con)
    assert files[["file", "status", "bytes"]].values.tolist() == [[rel, "rejected", 0]]
    assert f"{D1}  {rel}  empty file: {rel} has 0 bytes" in render(con, SPEC)
    assert files["table"].tolist() == [f"{source}/{table}"]


def test_a_zero_byte_jsonl_file_is_an_empty_day_and_still_a_file_in_the_ledger(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"calendar/{D1}/events.jsonl", b"")
    ingest_day(con, SPEC, landing, "calendar", D1)
    row = _row(conservation(con, SPEC), "calendar/events", D1)
    assert (row["files"], row["files_rejected"], row["records"], row["lost"]) == (1, 0, 0, 0)
    assert unread_files(con).empty


def test_an_unclaimed_file_is_listed_with_the_closest_table_in_the_ledger_and_the_asset_check(wh, env_settings):
    w, landing = wh
    con = w.con
    _write(landing, f"crm/{D1}/leads.csv", f"{LEADS_HEADER}\n".encode())
    extra = _write(landing, f"crm/{D1}/leads_extra.csv", f"{LEADS_HEADER}\nL-1,x\n".encode())
    _write(landing, f"crm/{D1}/.leads.csv.tmp", b"being written")  # a file still being written is not a delivery
    rep = ingest_day(con, SPEC, landing, "crm", D1)
    rel = f"crm/{D1}/leads_extra.csv"
    assert [(f, h) for f, _, h in rep.unclaimed] == [(rel, "crm/leads")]
    reason = con.execute("SELECT reason FROM raw.rejects WHERE rule = 'unclaimed' AND _file = ? AND _table IS NULL "
                         "AND _line IS NULL", [rel]).fetchone()[0]
    assert reason == (f"unclaimed: no table of source crm reads leads_extra.csv; closest table: crm/leads, read from "
                      f"crm/{D1}/leads.csv. Rename the file, or add its table to contracts/sources.yaml "
                      f"(sources.crm.tables)")
    files = unread_files(con)
    assert files[["file", "status", "hint", "bytes"]].values.tolist() == [
        [rel, "unclaimed", "crm/leads", extra.stat().st_size]]
    # Counted as a file, not as lines of a table: crm/leads' day still balances with its own 0 records.
    assert _balanced(conservation(con, SPEC))
    text = w.cli()
    assert f"{D1}  {rel} [closest table: crm/leads]  unclaimed: no table of source crm reads" in text
    doc = json.loads(w.cli("--json"))
    assert doc["totals"]["files_unclaimed"] == 1
    assert [(f["file"], f["status"], f["hint"]) for f in doc["files_not_read"]] == [(rel, "unclaimed", "crm/leads")]

    # The UI check: every_file_read fails as a warning naming the file and the hint; nothing_lost still passes.
    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.resources import GtmProject
    from gtm_pipeline.quarantine.assets import conservation as conservation_asset

    w.con.close()
    result = dg.materialize([conservation_asset], resources={
        "warehouse": DuckDBResource(database=str(env_settings.duckdb_path)),
        "project": GtmProject(landing_dir=str(landing), contracts_dir=str(CONTRACTS_DIR_DEFAULT))})
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks[keys.CHECK_NOTHING_LOST].passed
    every = checks[keys.CHECK_EVERY_FILE_READ]
    assert not every.passed and every.severity == dg.AssetCheckSeverity.WARN
    assert every.metadata["files_unclaimed"].value == 1
    assert f"`{rel}` (unclaimed, closest table crm/leads)" in every.metadata["files"].value
    w.con = duckdb.connect(w.path)


@pytest.mark.parametrize("source, name, expected", [
    ("crm", "leads_extra.csv", "crm/leads"),
    ("crm", "Opportunity.csv", "crm/opportunities"),
    ("crm", "leads.json", "crm/leads"),           # right name, wrong format
    ("crm", "sessions.jsonl", "web/sessions"),    # dropped in the wrong source folder
    ("crm", "notes.txt", None),
])
def test_the_hint_is_the_closest_table(source, name, expected):
    best = closest_table(SPEC, source, name)
    assert (best.qualified if best else None) == expected


def test_an_unclaimed_file_without_a_close_table_lists_what_the_source_reads(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"ads/{D1}/notes.txt", b"hello\n")
    _write(landing, f"ads/{D1}/old/spend.csv", b"date\n")   # a sub-folder is not read either
    ingest_day(con, SPEC, landing, "ads", D1)
    got = dict(con.execute("SELECT _file, reason FROM raw.rejects WHERE rule = 'unclaimed'").fetchall())
    assert got[f"ads/{D1}/notes.txt"].startswith("unclaimed: no table of source ads reads notes.txt; it reads "
                                                 "spend.csv. Rename the file")
    assert got[f"ads/{D1}/old/spend.csv"].startswith(f"unclaimed: ads/{D1}/old/spend.csv is in a sub-folder; "
                                                     f"tables are read only from files directly in ads/{D1}/")


def test_a_line_that_is_not_utf8_keeps_its_exact_bytes_and_is_shown_escaped(wh):
    """The line's first byte used to be lost (DuckDB places the record one byte late); after a quoted field that
    spans two lines DuckDB also numbers records, not lines. Both are read back from the file."""
    w, landing = wh
    con = w.con
    bad = b"L-10,jos\xe9 m\xfcller," + b",".join([b"x"] * (len(LEADS_HEADER.split(",")) - 2))
    lines = [LEADS_HEADER.encode(), bad, b'L-11,"two', b'lines",' + b",".join([b"y"] * (len(LEADS_HEADER.split(","))
                                                                                      - 2)),
             b"L-12,\xff\xfe", b"L-13,short"]
    path = _write(landing, f"crm/{D1}/leads.csv", b"\r\n".join(lines) + b"\r\n")
    _write(landing, f"web/{D1}/sessions.jsonl", b'{"session_id":"s1"}\n{"session_id":"caf\xe9"}\n{"x":\n')
    ingest_day(con, SPEC, landing, "crm", D1)
    ingest_day(con, SPEC, landing, "web", D1)
    physical = path.read_bytes().split(b"\r\n")
    got = con.execute("SELECT _line, raw_bytes, raw_text, reason FROM raw.rejects WHERE _table = 'leads' "
                      "ORDER BY _line").fetchall()
    assert [(ln, raw) for ln, raw, _, _ in got] == [(2, physical[1]), (5, physical[4]), (6, physical[5])]
    assert got[0][1] == bad and got[0][2] == "L-10,jos\\xe9 m\\xfcller," + ",".join(["x"] * (len(
        LEADS_HEADER.split(",")) - 2))
    assert got[1][2] == "L-12,\\xff\\xfe" and got[0][3].startswith("not valid UTF-8")
    assert con.execute("SELECT lead_id, _line FROM raw.crm_leads").fetchall() == [("L-11", 3)]
    web = con.execute("SELECT _line, raw_bytes, raw_text FROM raw.rejects WHERE _table = 'sessions' "
                      "ORDER BY _line").fetchall()
    assert web == [(2, b'{"session_id":"caf\xe9"}', '{"session_id":"caf\\xe9"}'), (3, b'{"x":', '{"x":')]
    assert "raw: L-12,\\xff\\xfe" in w.cli("--day", D1)


def test_a_header_that_cannot_be_used_rejects_every_line_once(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"crm/{D1}/opportunities.csv",
           OPP_HEADER.replace("stage", "st\xe4ge").encode("latin-1") + f"\n{GOOD.format(n=1)}\n\n{GOOD.format(n=2)}\n"
           .encode())
    rep = ingest_day(con, SPEC, landing, "crm", D1)
    got = con.execute("SELECT _line, rule, reason FROM raw.rejects ORDER BY _line").fetchall()
    assert [ln for ln, _, _ in got] == [1, 2, 4] and {r for _, r, _ in got} == {"encoding"}
    assert got[0][2].startswith("header is not valid UTF-8") and got[1][2].startswith("not read: the whole file is "
                                                                                      "rejected (header is not")
    row = _row(conservation(con, SPEC), "crm/opportunities", D1)
    assert (row["records"], row["rejected"], row["lost"]) == (3, 3, 0)
    assert next(t for t in rep.tables if t.table == "crm/opportunities").records == 3


@pytest.mark.parametrize("body, rejected, first_reason", [
    (b"\n\r\n\n", [], None),                                            # only blank lines: an empty file
    (f"\n{OPP_HEADER}\n{GOOD.format(n=1)}\n".encode(), [2, 3], "not read: the whole file is rejected (line 1 is "
                                                                    "blank"),
    (f"{OPP_HEADER},stage\n{GOOD.format(n=1)}\n".encode(), [1, 2], "duplicate column names in header: ['stage']"),
])
def test_a_file_without_a_usable_header_is_accounted_for_line_by_line_or_as_a_file(wh, body, rejected, first_reason):
    con = wh[0].con
    _write(wh[1], f"crm/{D1}/opportunities.csv", body)
    ingest_day(con, SPEC, wh[1], "crm", D1)
    got = con.execute("SELECT _line, reason FROM raw.rejects ORDER BY _line NULLS FIRST").fetchall()
    row = _row(conservation(con, SPEC), "crm/opportunities", D1)
    if not rejected:
        assert got == [(None, f"empty file: crm/{D1}/opportunities.csv holds only blank lines (a CSV export has at "
                                f"least its header line); re-export it")]
        assert (row["files_rejected"], row["records"], row["lost"]) == (1, 0, 0)
        return
    assert [ln for ln, _ in got] == rejected and got[0][1].startswith(first_reason)
    assert (row["records"], row["rejected"], row["lost"]) == (len(rejected), len(rejected), 0)


def test_a_raw_row_that_disappears_is_lost_because_the_ledger_counts_what_arrived(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"crm/{D1}/opportunities.csv",
           f"{OPP_HEADER}\n{GOOD.format(n=1)}\n{GOOD.format(n=2)}\nbad\n".encode())
    _run_day(con, landing, D1)
    assert _balanced(conservation(con, SPEC))
    con.execute("DELETE FROM clean.opportunity WHERE opportunity_id = 'O2'")
    con.execute("DELETE FROM raw.crm_opportunities WHERE opportunity_id = 'O2'")  # gone from raw as well
    row = _row(conservation(con, SPEC), "crm/opportunities", D1)
    assert (row["records"], row["clean"], row["rejected"], row["lost"]) == (3, 1, 1, 1)
    con.execute("DELETE FROM raw.crm_opportunities")
    con.execute("DELETE FROM clean.opportunity")
    row = _row(conservation(con, SPEC), "crm/opportunities", D1)   # the day is still there: the file arrived
    assert (row["records"], row["rejected"], row["lost"]) == (3, 1, 2)
    assert "NOT BALANCED: crm/opportunities 2026-08-08 (2)" in render(con, SPEC)
    assert not as_json(con, SPEC)["balanced"]


def test_rerunning_a_day_changes_no_ledger_reject_or_file_row(wh):
    w, landing = wh
    con = w.con
    _write(landing, f"crm/{D1}/opportunities.csv", f"{OPP_HEADER}\n{GOOD.format(n=1)}\nbad\n".encode())
    _write(landing, f"crm/{D1}/leads.csv", b"")
    _write(landing, f"crm/{D1}/leads_extra.csv", b"x\n")

    def snapshot():
        return (con.execute("SELECT * EXCLUDE (_ingested_at) FROM raw.rejects ORDER BY ALL").fetchall(),
                con.execute("SELECT * EXCLUDE (_ingested_at) FROM raw.landing_files ORDER BY ALL").fetchall(),
                conservation(con, SPEC).to_dict("records"))

    _run_day(con, landing, D1)
    first = snapshot()
    assert len(first[0]) == 3 and len(first[1]) == 3
    for _ in range(2):
        _run_day(con, landing, D1)
    assert snapshot() == first
    # The export fixed and the stray file renamed: its reject and file record go, the day still balances.
    _write(landing, f"crm/{D1}/leads.csv", f"{LEADS_HEADER}\n".encode())
    (landing / f"crm/{D1}/leads_extra.csv").rename(landing / f"crm/{D1}/.leads_extra.csv.done")
    _run_day(con, landing, D1)
    assert con.execute("SELECT rule FROM raw.rejects").fetchall() == [("parse",)]
    assert unread_files(con).empty and _balanced(conservation(con, SPEC))


def test_a_day_that_is_not_a_date_is_one_clear_error(wh):
    con = wh[0].con
    with pytest.raises(GtmPipelineError, match=r"--day '2026-8-1': not a delivery day; use YYYY-MM-DD"):
        conservation(con, SPEC, day="2026-8-1")


def test_the_default_view_is_one_line_per_table_and_detail_is_every_table_and_day(small_warehouse, env_settings):
    """`ledger` prints one line per source table over all days; `--detail` one per table and day; `--json` keeps
    every table and day; the three agree on the totals."""
    import shutil

    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(small_warehouse, env_settings.duckdb_path)
    with duckdb.connect(str(env_settings.duckdb_path), read_only=True) as con:
        df = conservation(con, SPEC)
    w = Warehouse(env_settings.duckdb_path)
    try:
        summary, detail, doc = w.cli(), w.cli("--detail"), json.loads(w.cli("--json"))
    finally:
        w.con.close()
    tables, days = sorted(df["table"].unique()), df["_partition"].nunique()
    assert days > 1 and len(df) == len(tables) * days  # the small warehouse: every table on every day
    lines = summary.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["table", "days"])
    rows = lines[head + 1:head + 1 + len(tables)]
    assert [r.split()[0] for r in rows] == tables and all(r.split()[1] == str(days) for r in rows)
    assert len(lines) <= len(tables) + 6, summary  # title, header, tables, verdict (no file or day lists here)
    detail_rows = [ln for ln in detail.splitlines() if re.match(r"\s*\S+/\S+ \d{4}-\d{2}-\d{2} ", ln)]
    assert len(detail_rows) == len(df)
    assert len(doc["tables"]) == len(df) and set(doc) == {"day", "identity", "balanced", "totals", "tables",
                                                          "files_not_read"}
    sup = doc["totals"]["superseded"]
    verdict = (f"{doc['totals']['records']:,} records = {doc['totals']['clean']:,} clean + "
               + (f"{sup:,} superseded + " if sup else "") + f"{doc['totals']['quarantined']:,} quarantined")
    assert verdict in summary.splitlines()[-1] and verdict in detail.splitlines()[-1]
