"""Ingestion on hand-made landing files: lineage, rejects with reasons, drift, idempotent re-runs."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.ingest.landing import landing_days, load_landing_spec, parse_landing_spec
from gtm_pipeline.ingest.stage import ingest_day

DAY = "2026-08-01"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
GOOD = "O{n},A1,L1,U1,2026-08-01 10:00:00,discovery,core,40,0.1,10,4320,USD,smb,na,software,11-50,email,2026-09-01"


@pytest.fixture
def spec():
    return load_landing_spec(CONTRACTS_DIR_DEFAULT)


@pytest.fixture
def con():
    with duckdb.connect() as c:
        yield c


def _write(landing: Path, rel: str, data: bytes) -> Path:
    p = landing / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_csv_rows_keep_their_physical_line_and_bad_lines_are_rejected_with_reasons(tmp_path, spec, con):
    lines = [OPP_HEADER, GOOD.format(n=1), "O2,A1,L1", GOOD.format(n=3).replace("core", "M\xfcller"),
             GOOD.format(n=4) + ",surplus", GOOD.format(n=5), 'O6,"unterminated,A1', GOOD.format(n=7)]
    body = ("\n".join(lines[:3]).encode() + b"\n" + lines[3].encode("latin-1") + b"\n"
            + "\n".join(lines[4:]).encode() + b"\n")
    _write(tmp_path, f"crm/{DAY}/opportunities.csv", body)
    rep = ingest_day(con, spec, tmp_path, "crm", DAY)
    t = next(x for x in rep.tables if x.table == "crm/opportunities")
    got = con.execute("SELECT opportunity_id, _line, _file FROM raw.crm_opportunities ORDER BY _line").fetchall()
    assert [(o, ln) for o, ln, _ in got] == [("O1", 2), ("O5", 6)]
    assert got[0][2] == f"crm/{DAY}/opportunities.csv"
    rejects = con.execute("SELECT _line, reason, raw_text FROM raw.rejects ORDER BY _line").fetchall()
    by_line = {ln: (why, raw) for ln, why, raw in rejects}
    assert by_line[3][0].startswith("missing field(s)") and by_line[3][1] == "O2,A1,L1"
    assert by_line[4][0].startswith("not valid UTF-8") and "M\\xfcller" in by_line[4][1]
    assert by_line[5][0].startswith("extra field(s)")
    assert "quote" in by_line[7][0]
    # The unterminated quote on line 7 swallows line 8; line 8 is rejected on its own, naming line 7.
    assert by_line[8] == (f"read as part of the record that starts on line 7 ({by_line[7][0]})", GOOD.format(n=7))
    # Nothing lost: every data line is either a raw row or a reject.
    assert t.rows + t.rejected == 7 and t.rows == 2


def test_reingesting_a_day_replaces_it_exactly(tmp_path, spec, con):
    _write(tmp_path, f"crm/{DAY}/opportunities.csv",
           (OPP_HEADER + "\n" + GOOD.format(n=1) + "\nbad,line\n" + GOOD.format(n=2) + "\n").encode())
    for _ in range(3):
        ingest_day(con, spec, tmp_path, "crm", DAY)
    assert con.execute("SELECT count(*) FROM raw.crm_opportunities").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM raw.rejects").fetchone()[0] == 1
    # A corrected re-delivery replaces the day: the reject disappears, the fixed row lands.
    _write(tmp_path, f"crm/{DAY}/opportunities.csv",
           (OPP_HEADER + "\n" + GOOD.format(n=1) + "\n" + GOOD.format(n=9) + "\n" + GOOD.format(n=2) + "\n").encode())
    ingest_day(con, spec, tmp_path, "crm", DAY)
    assert con.execute("SELECT count(*) FROM raw.crm_opportunities").fetchone()[0] == 3
    assert con.execute("SELECT count(*) FROM raw.rejects").fetchone()[0] == 0


def test_schema_drift_names_the_columns_and_known_aliases_still_map(tmp_path, spec, con):
    header = OPP_HEADER.replace(",amount,", ",amount_usd,") + ",utm_content"
    _write(tmp_path, f"crm/{DAY}/opportunities.csv", (header + "\n" + GOOD.format(n=1) + ",spring\n").encode())
    rep = ingest_day(con, spec, tmp_path, "crm", DAY)
    drift = next(t for t in rep.tables if t.table == "crm/opportunities").drift
    assert drift.renamed == ["amount_usd->amount"] and drift.unexpected == ["utm_content"] and not drift.missing
    amount, extra = con.execute("SELECT amount, _extra FROM raw.crm_opportunities").fetchone()
    assert amount == "4320" and '"utm_content":"spring"' in extra
    row = con.execute("SELECT missing_columns, unexpected_columns, renamed FROM raw.schema_drift").fetchone()
    assert row == ([], ["utm_content"], ["amount_usd->amount"])


def test_unknown_rename_is_reported_as_missing_and_unexpected(tmp_path, spec, con):
    header = OPP_HEADER.replace(",seats,", ",licences,")
    _write(tmp_path, f"crm/{DAY}/opportunities.csv", (header + "\n" + GOOD.format(n=1) + "\n").encode())
    rep = ingest_day(con, spec, tmp_path, "crm", DAY)
    drift = next(t for t in rep.tables if t.table == "crm/opportunities").drift
    assert drift.missing == ["seats"] and drift.unexpected == ["licences"]
    assert "missing columns: seats" in drift.describe() and "unexpected columns: licences" in drift.describe()


def test_jsonl_bad_lines_are_rejected_with_the_parser_reason_and_lines_stay_exact(tmp_path, spec, con):
    body = (b'{"session_id":"s1","started_at":"2026-08-01T00:00:00Z","channel":"email"}\n'
            b'{"session_id":"s2",\n'
            b"\n"
            b'{"session_id":"s3","channel":"M\xfcller"}\n'
            b"[1,2]\n"
            b'{"session_id":"s4","utm_content":"x"}\n')
    _write(tmp_path, f"web/{DAY}/sessions.jsonl", body)
    rep = ingest_day(con, spec, tmp_path, "web", DAY)
    landed = con.execute("SELECT session_id, _line FROM raw.web_sessions ORDER BY _line").fetchall()
    assert landed == [("s1", 1), ("s4", 6)]
    rejects = dict(con.execute("SELECT _line, reason FROM raw.rejects").fetchall())
    assert rejects[2].startswith("invalid JSON") and rejects[4].startswith("not valid UTF-8")
    assert rejects[5] == "not a JSON object"
    t = next(x for x in rep.tables if x.table == "web/sessions")
    assert t.rows == 2 and t.rejected == 3 and "utm_content" in t.drift.unexpected


def test_parquet_rows_are_read_as_text_and_a_corrupt_file_is_rejected_whole(tmp_path, spec, con):
    d = tmp_path / "vendors" / DAY
    d.mkdir(parents=True)
    pd.DataFrame({"record_id": ["r1", "r2"], "account_id": ["a", "b"], "topic": ["crm", "ai"],
                  "intent_score": [12.5, 99.0], "observed_at": pd.to_datetime(["2026-08-01", "2026-08-01"]),
                  "vendor": ["v", "v"], "domain": ["a.io", "b.io"]}).to_parquet(d / "intent.parquet")
    (d / "costs.parquet").write_bytes(b"PAR1 not really parquet")
    ingest_day(con, spec, tmp_path, "vendors", DAY)
    assert con.execute("SELECT record_id, intent_score, _line FROM raw.vendors_intent ORDER BY 1").fetchall() == [
        ("r1", "12.5", 1), ("r2", "99.0", 2)]
    file, line, reason = con.execute("SELECT _file, _line, reason FROM raw.rejects").fetchone()
    assert file == f"vendors/{DAY}/costs.parquet" and line is None and reason.startswith("cannot read Parquet file")


def test_missing_files_are_a_note_not_an_error(tmp_path, spec, con):
    rep = ingest_day(con, spec, tmp_path, "ads", DAY)
    assert rep.rows == 0 and all(t.note == "no file delivered" for t in rep.tables)


def test_landing_days_ignore_non_day_folders(tmp_path):
    (tmp_path / "crm" / "2026-08-02").mkdir(parents=True)
    (tmp_path / "crm" / "notes").mkdir()
    (tmp_path / "_import").mkdir()
    assert landing_days(tmp_path) == ["2026-08-02"]


@pytest.mark.parametrize("yaml_text, message", [
    ("sources: {crm: {tables: {x: {format: xlsx, columns: [a], entity: e}}}}",
     "sources.crm.tables.x.format: 'xlsx' is not allowed; allowed: csv, jsonl, parquet"),
    ("sources: {crm: {tables: {x: {format: csv, columns: [a], entity: e, to_entity: {b: zz}}}}}",
     "sources.crm.tables.x.to_entity.b: landing column 'zz' is not in columns; known: a"),
    ("sources: {crm: {tables: {x: {format: csv, columns: [a], entity: e, colums: [b]}}}}",
     "sources.crm.tables.x.colums: unknown field; allowed: format, columns, entity, to_entity, aliases, event_time, "
     'description; did you mean "columns"?'),
    ("sources: {crm: {owner: x}}", "sources.crm.tables: a source needs at least one table"),
])
def test_landing_spec_errors_name_file_field_and_fix(tmp_path, yaml_text, message):
    p = tmp_path / "sources.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ContractError) as e:
        parse_landing_spec(p)
    assert str(e.value).startswith("sources.yaml: ") and message in str(e.value)
