"""Invariants on generated data: every injected defect ends where the spec sends it, nothing is lost, and re-runs
change no count."""

from __future__ import annotations

import json
from collections import Counter

import duckdb
import pytest

from gtm_pipeline.clean import clean_partition
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine.ledger import conservation


@pytest.fixture(scope="module")
def manifest(small_landing):
    return json.loads((small_landing / "manifest.json").read_text())


def _fate(con, spec, file: str, line: int, table: str) -> list[tuple[str, str]]:
    """Every place the record (file, line) of a landing table ended, as (place, rule-or-reason)."""
    t = spec.table(table)
    e = t.entity
    places = []
    for stage, rule, reason in con.execute("SELECT stage, rule, reason FROM raw.rejects WHERE _file = ? AND _line = ?",
                                           [file, line]).fetchall():
        places.append((f"rejects:{stage}", f"{rule}|{reason}"))
    for target in (e, "missing_owner"):
        for rules, status, reason in con.execute(
                f"SELECT rules, status, reason FROM quarantine.{target} WHERE _file = ? AND _line = ?",
                [file, line]).fetchall():
            places.append((f"quarantine:{target}:{status}", ",".join(rules) + "|" + reason))
    for (late,) in con.execute(f"SELECT _late FROM clean.{e} WHERE _file = ? AND _line = ?", [file, line]).fetchall():
        places.append(("clean", "late" if late else "on time"))
    for (valid_to,) in con.execute(f"SELECT valid_to FROM clean.{e}_history WHERE _file = ? AND _line = ? "
                                   "AND valid_to IS NOT NULL", [file, line]).fetchall():
        places.append(("superseded", f"until {valid_to}"))
    return places


def test_every_injected_defect_ends_in_quarantine_or_rejects_with_the_right_reason(small_warehouse, manifest):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    kinds = Counter(d["kind"] for d in manifest["defects"])
    assert {"malformed", "wrong_type", "bad_enum", "duplicate", "late"} <= set(kinds), kinds
    problems = []
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        for d in manifest["defects"]:
            if d["kind"] == "schema_drift":
                continue
            table = f"{d['source']}/{d['table']}"
            line = d["line"] + 1 if d["file"].endswith(".parquet") else d["line"]  # parquet: 0-based row index
            places = _fate(con, spec, d["file"], line, table)
            kind = d["kind"]
            ok = len(places) == 1 if kind != "out_of_range" else len(places) >= 1
            where, why = places[0] if places else ("lost", "")
            if kind == "malformed":
                ok = ok and where == "rejects:ingest"
            elif kind == "duplicate":
                copied = d["note"].split("exact copy of ")[1].split(",")[0]
                ofile, oline = copied.replace(" row ", " line ").split(" line ")
                original = f"{ofile}:{int(oline) + 1 if ofile.endswith('.parquet') else int(oline)}"
                ok = ok and where == "rejects:clean" and why.startswith("unique|") and f"duplicate of {original}" in why
            elif kind == "wrong_type":
                ok = ok and where.startswith("quarantine:") and "type" in why.split("|")[0].split(",")
            elif kind == "bad_enum":
                ok = ok and where.startswith("quarantine:") and "enum" in why.split("|")[0].split(",")
            elif kind == "missing_owner":
                ok = ok and where == "quarantine:missing_owner:open" and "owner_id" in why
            elif kind == "out_of_range":
                ok = ok and any(p.startswith("quarantine:") and "range" in w.split("|")[0] for p, w in places)
            elif kind == "late":
                ok = ok and where == "clean" and why == "late"
            if not ok:
                problems.append((kind, d["file"], d["line"], d.get("column"), places))
    assert not problems, f"{len(problems)} defect(s) not where the spec sends them, e.g. {problems[:5]}"


def test_schema_drift_is_reported_with_the_column_names(small_warehouse, manifest):
    drift = [d for d in manifest["defects"] if d["kind"] == "schema_drift"]
    assert drift, "the small set should contain the generator's schema drift"
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        rows = con.execute("SELECT _file, missing_columns, unexpected_columns, renamed "
                           "FROM raw.schema_drift").fetchall()
        rows_in, amounts_in = con.execute(
            "SELECT count(*), count(o.amount) FROM raw.crm_opportunities o JOIN raw.schema_drift s "
            "ON s._file = o._file AND list_contains(s.renamed, 'amount_usd->amount')").fetchone()
    by_file = {f: (m, u, r) for f, m, u, r in rows}
    for d in drift:
        assert d["file"] in by_file, f"drift in {d['file']} not reported"
    assert any("amount_usd->amount" in r for _, _, r in by_file.values())
    assert any("utm_content" in u for _, u, _ in by_file.values())
    assert amounts_in == rows_in  # the known alias still fills the amount column


def test_nothing_is_lost_per_source_table_and_day(small_warehouse, manifest):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        ledger = conservation(con, spec)
    # Every row the generator wrote is a record of the ledger, per source table and day (a malformed line that
    # swallows the next one still accounts for both lines).
    written = {(f"{src}/{tbl}", day): n for src, tables in manifest["row_counts"].items()
               for tbl, days in tables.items() for day, n in days.items() if n}
    read = {(t, str(d)[:10]): int(n) for t, d, n in zip(ledger["table"], ledger["_partition"], ledger["records"]) if n}
    assert read == written
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        blocked = {str(d) for (d,) in con.execute(
            "SELECT DISTINCT _partition FROM quarantine.opportunity WHERE status = 'held'").fetchall()}
    assert len(ledger) > 0 and int(ledger["records"].sum()) > 10_000
    assert (ledger["lost"] == 0).all(), ledger[ledger["lost"] != 0]
    balanced = ledger["records"] == (ledger["clean"] + ledger["superseded"] + ledger["quarantined"] + ledger["held"]
                                     + ledger["rejected"])
    assert balanced.all(), ledger[~balanced]
    assert (ledger["rejected"] == ledger["rejected_clean"] + ledger["rejected_ingest"]).all()
    two = ledger[ledger["in_two_places"] > 0]
    assert set(two["_partition"].astype(str)) <= blocked
    held = ledger[ledger["held"] > 0]
    assert len(held)
    # Held only where a day is blocked, or waiting for a parent in quarantine (gtm_pipeline.clean.references).
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT DISTINCT table_name FROM information_schema.columns "
                                            "WHERE table_schema = 'quarantine' AND column_name = 'break_action' "
                                            "AND table_name IN (SELECT table_name FROM information_schema.columns "
                                            "WHERE table_schema = 'quarantine' AND column_name = 'status')"
                                            ).fetchall()]
        held_days = {str(d) for t in tables for (d,) in con.execute(
            f"SELECT DISTINCT _partition FROM quarantine.{t} WHERE status = 'held' "
            "AND break_action <> 'hold_for_parent'").fetchall()}
    assert held_days <= blocked


def test_every_landing_file_of_every_day_is_in_the_ledger(small_warehouse, small_landing):
    """The ledger starts from what arrived: each generated file is a file record, read, with its size (the
    generator's 0-byte JSONL files of days without events included)."""
    on_disk = {p.relative_to(small_landing).as_posix(): p.stat().st_size for p in small_landing.rglob("*")
               if p.is_file() and p.parent.parent.parent == small_landing}
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        recorded = {f: (n, status) for f, n, status in con.execute(
            "SELECT _file, bytes, status FROM raw.landing_files").fetchall()}
    assert on_disk and {f: n for f, (n, _) in recorded.items()} == on_disk
    assert {status for _, status in recorded.values()} == {"read"}
    assert any(n == 0 for n in on_disk.values())  # the empty-day JSONL files are there and were read


def _physical_line(path, n: int) -> bytes:
    return path.read_bytes().split(b"\n")[n - 1].removesuffix(b"\r")


def test_every_malformed_line_keeps_its_exact_bytes(small_warehouse, small_landing, manifest):
    """The malformed corpus, byte for byte: each injected malformed line's reject holds the file's exact bytes
    (raw_bytes) and shows them escaped (raw_text), the latin-1 lines included."""
    malformed = [d for d in manifest["defects"] if d["kind"] == "malformed"]
    latin1 = 0
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        for d in malformed:
            got = con.execute("SELECT raw_bytes, raw_text FROM raw.rejects WHERE stage = 'ingest' AND _file = ? "
                              "AND _line = ?", [d["file"], d["line"]]).fetchall()
            expected = _physical_line(small_landing / d["file"], d["line"])
            assert got == [(expected, expected.decode("utf-8", errors="backslashreplace"))], d
            latin1 += b"M\xfcller" in expected
    assert malformed and latin1, "the corpus should hold malformed lines, latin-1 ones among them"


def test_rerunning_any_day_changes_no_count(warehouse_copy, small_landing):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    tables = ["clean.lead", "clean.opportunity", "clean.activity", "quarantine.opportunity", "quarantine.activity",
              "quarantine.missing_owner", "raw.rejects", "raw.web_pageviews", "raw.crm_leads"]
    with duckdb.connect(str(warehouse_copy)) as con:
        before = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        incidents = con.execute("SELECT count(*) FROM ops.incidents WHERE status = 'open'").fetchone()[0]
        for day in ("2026-08-02", "2026-08-05"):
            for source in spec.sources:
                ingest_day(con, spec, small_landing, source, day)
            for entity in spec.entities():
                clean_partition(con, spec, contracts[entity], day)
        after = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        assert after == before
        assert con.execute("SELECT count(*) FROM ops.incidents WHERE status = 'open'").fetchone()[0] == incidents


def test_batched_days_give_the_same_result_as_one_day_at_a_time(small_landing, tmp_path):
    from gtm_pipeline.clean import clean_days
    from gtm_pipeline.ingest.landing import landing_days

    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    days = landing_days(small_landing)
    results = []
    for mode in ("one_by_one", "batched"):
        with duckdb.connect(str(tmp_path / f"{mode}.duckdb")) as con:
            for day in days:
                ingest_day(con, spec, small_landing, "crm", day)
            reports = []
            for entity in ("owner", "account", "lead", "opportunity"):
                if mode == "one_by_one":
                    reports += [clean_partition(con, spec, contracts[entity], d) for d in days]
                else:  # a small row budget forces several batches
                    reports += clean_days(con, spec, contracts[entity], days, max_rows=300)
            counts = [(r.entity, r.day, r.candidates, r.clean, r.quarantined, r.missing_owner, r.held, r.rejected,
                       r.blocked) for r in reports]
            tables = {t: con.execute(f"SELECT * EXCLUDE (_published_at) FROM clean.{t} "
                                     "ORDER BY _file, _line").fetchall()
                      for t in ("lead", "opportunity")}
            rejects = con.execute("SELECT _file, _line, reason FROM raw.rejects WHERE stage = 'clean' "
                                  "ORDER BY 1, 2").fetchall()
            results.append((counts, tables, rejects))
    assert results[0] == results[1]
