"""The seeded source-data generator: determinism, layout, defects and ground truth."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from gtm_pipeline.generate import DefectRates, GenerateConfig, generate

ROOT = Path(__file__).resolve().parents[1]
SOURCES = yaml.safe_load((ROOT / "contracts" / "sources.yaml").read_text(encoding="utf-8"))["sources"]
START = date(2026, 8, 1)

# Event-time column of each table (the day a record belongs to); owners have none.
EVENT_COLUMN = {
    ("crm", "accounts"): "created_at", ("crm", "contacts"): "created_at", ("crm", "leads"): "created_at",
    ("crm", "opportunities"): "created_at", ("crm", "opportunity_stages"): "changed_at",
    ("web", "sessions"): "started_at", ("web", "pageviews"): "viewed_at", ("web", "form_fills"): "submitted_at",
    ("calendar", "events"): "start_at", ("vendors", "firmographics"): "observed_at",
    ("vendors", "intent"): "observed_at", ("vendors", "costs"): "date", ("ads", "spend"): "date",
}
ENUM_VOCAB = {
    "channel": "channel", "segment": "segment", "industry": "industry", "region": "region", "stage": "stage",
    "from_stage": "stage", "to_stage": "stage", "dq_reason": "dq_reason", "routed_by": "routed_by",
}
VOCAB = {
    "channel": {"paid_search", "paid_social", "organic_search", "email", "events", "referral", "direct", "partner"},
    "segment": {"smb", "mid_market", "enterprise"},
    "industry": {"software", "fintech", "healthcare", "retail", "manufacturing", "media", "education", "logistics"},
    "region": {"na", "emea", "apac", "latam"},
    "stage": {"prospecting", "discovery", "proposal", "negotiation", "closed_won", "closed_lost"},
    "status": {"new", "working", "sql", "disqualified", "converted"},
    "dq_reason": {"no_budget", "no_authority", "no_need", "bad_timing", "competitor", "invalid_contact",
                  "student_or_personal"},
    "type": {"meeting", "call", "demo", "email"},
    "calendar_status": {"scheduled", "completed", "no_show", "cancelled"},
    "routed_by": {"engine", "round_robin", "manual"},
}


def _aliases() -> dict[str, str]:
    """Aliases declared in contracts/entities (e.g. mm -> mid_market); benign variants may use them."""
    out: dict[str, str] = {}
    for path in sorted((ROOT / "contracts" / "entities").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for col in (spec.get("columns") or {}).values():
            if isinstance(col, dict):
                out.update({str(k): str(v) for k, v in (col.get("aliases") or {}).items()})
    return out


ALIASES = _aliases()


def normalise(value: str) -> str:
    """Spelling-insensitive form: case, blanks and punctuation do not matter, then the declared aliases."""
    v = re.sub(r"[^a-z0-9+]+", "_", value.strip().lower()).strip("_")
    return ALIASES.get(v, v)


def vocab_of(source: str, table: str, column: str) -> set[str] | None:
    if column == "status":
        return VOCAB["calendar_status"] if source == "calendar" else VOCAB["status"]
    if column == "type" and source == "calendar":
        return VOCAB["type"]
    name = ENUM_VOCAB.get(column)
    return VOCAB[name] if name else None


def run(out: Path, **kwargs) -> dict:
    return generate(out, GenerateConfig(**kwargs), progress=False)


HEAVY = DefectRates(bad_enum=0.02, out_of_range=0.2, out_of_range_days=2, missing_owner=0.05, duplicate=0.02,
                    malformed=0.01, wrong_type=0.02, late=0.04, wrong_encoding=1, drift_day_offset=2,
                    extra_key_day_offset=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen_a")
    return out, run(out, days=5, seed=11, scale=0.5)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen_heavy")
    return out, run(out, days=6, seed=5, scale=0.5, defects=HEAVY)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen_clean")
    return out, run(out, days=4, seed=3, scale=0.5, defects=DefectRates.none())


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def data_files(root: Path):
    for source, s in SOURCES.items():
        for table, t in s["tables"].items():
            for day_dir in sorted((root / source).iterdir()):
                yield source, table, t, day_dir.name, day_dir / f"{table}.{t['format']}"


def read_rows(path: Path, fmt: str) -> tuple[list[str] | None, list]:
    """(header or None, rows as dicts); CSV/JSONL lines that do not parse are skipped."""
    if fmt == "parquet":
        tbl = pq.read_table(path)
        return tbl.column_names, tbl.to_pylist()
    lines = path.read_bytes().split(b"\n")[:-1]
    if fmt == "csv":
        header = next(csv.reader([lines[0].decode()]))
        rows = []
        for raw in lines[1:]:
            fields = next(csv.reader([raw.decode("utf-8")]))
            if len(fields) == len(header):
                rows.append(dict(zip(header, fields)))
        return header, rows
    return None, [json.loads(raw) for raw in lines]


def physical_line(path: Path, line: int) -> bytes:
    return path.read_bytes().split(b"\n")[line - 1]


def parse_line(path: Path, fmt: str, line: int, header: list[str] | None = None) -> dict:
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()[line]
    raw = physical_line(path, line).decode("utf-8")
    if fmt == "jsonl":
        return json.loads(raw)
    header = header or next(csv.reader([physical_line(path, 1).decode()]))
    return dict(zip(header, next(csv.reader([raw]))))


def event_date(value) -> date:
    """The UTC day of a timestamp (calendar times carry the organiser's offset)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    text = str(value)
    if "T" in text:
        return datetime.fromisoformat(text).astimezone(UTC).date()
    return date.fromisoformat(text[:10])


# --- determinism -------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(small, tmp_path):
    out_a, manifest_a = small
    manifest_b = run(tmp_path, days=5, seed=11, scale=0.5)
    ha, hb = file_hashes(out_a), file_hashes(tmp_path)
    assert ha == hb
    assert manifest_a == manifest_b
    assert "manifest.json" in ha and len(ha) > 50


def test_different_seed_differs(small, tmp_path):
    out_a, _ = small
    run(tmp_path, days=5, seed=12, scale=0.5)
    ha, hb = file_hashes(out_a), file_hashes(tmp_path)
    assert ha.keys() == hb.keys()
    differing = [k for k in ha if ha[k] != hb[k]]
    assert len(differing) > 0.8 * len(ha)


# --- layout ------------------------------------------------------------------------------------------------------
def test_files_and_columns_match_sources_yaml(clean):
    out, manifest = clean
    days = [(START.toordinal() + i) for i in range(4)]
    for source in SOURCES:
        assert sorted(p.name for p in (out / source).iterdir()) == [date.fromordinal(d).isoformat() for d in days]
    for _source, _table, t, _day, path in data_files(out):
        assert path.is_file(), path
        fmt, columns = t["format"], t["columns"]
        if fmt == "csv":
            header = path.read_bytes().split(b"\n")[0].decode()
            assert next(csv.reader([header])) == columns, path
        elif fmt == "jsonl":
            for raw in path.read_bytes().splitlines():
                assert list(json.loads(raw)) == columns, path
        else:
            assert pq.read_schema(path).names == columns, path
        if fmt != "parquet":
            assert b"\r" not in path.read_bytes()


def test_schema_drift_uses_alias_and_extra_key(heavy):
    out, manifest = heavy
    day2, day3 = (date.fromordinal(START.toordinal() + i).isoformat() for i in (2, 3))
    header = physical_line(out / "crm" / day2 / "opportunities.csv", 1).decode()
    assert "amount_usd" in header.split(",") and "amount" not in header.split(",")
    assert "amount_usd" in SOURCES["crm"]["tables"]["opportunities"]["aliases"]["amount"]
    other = physical_line(out / "crm" / date.fromordinal(START.toordinal() + 1).isoformat() / "opportunities.csv", 1)
    assert b"amount_usd" not in other
    before = json.loads(physical_line(out / "web" / date.fromordinal(START.toordinal() + 2).isoformat()
                                      / "sessions.jsonl", 1))
    after = json.loads(physical_line(out / "web" / day3 / "sessions.jsonl", 1))
    assert "utm_content" not in before and list(after)[-1] == "utm_content"
    kinds = [(d["file"], d["column"]) for d in manifest["defects"] if d["kind"] == "schema_drift"]
    assert (f"crm/{day2}/opportunities.csv", "amount_usd") in kinds
    assert (f"web/{day3}/sessions.jsonl", "utm_content") in kinds


# --- clean data --------------------------------------------------------------------------------------------------
def test_no_defects_gives_clean_data(clean):
    out, manifest = clean
    assert manifest["defects"] == []
    assert manifest["defect_counts"] == {}
    for source, table, t, day, path in data_files(out):
        fmt = t["format"]
        data = path.read_bytes()
        if fmt != "parquet":
            data.decode("utf-8")  # valid UTF-8 everywhere
        header, rows = read_rows(path, fmt)
        n_lines = len(data.split(b"\n")) - 1 if fmt != "parquet" else len(rows)
        assert len(rows) == n_lines - (1 if fmt == "csv" else 0), f"{path}: a line does not parse"
        key = t["columns"][0]
        if table not in ("owners", "spend"):
            keys = [r[key] for r in rows]
            assert len(keys) == len(set(keys)), f"{path}: duplicate {key}"
        for r in rows:
            for col, value in r.items():
                vocab = vocab_of(source, table, col)
                if vocab and value not in (None, ""):
                    assert normalise(value) in vocab, f"{path}: {col}={value!r}"
            ev = EVENT_COLUMN.get((source, table))
            if ev and not (source == "calendar" and normalise(r["status"]) == "scheduled"):
                assert event_date(r[ev]) == date.fromisoformat(day), f"{path}: {ev}={r[ev]} is not on the folder's day"
        if (source, table) == ("crm", "opportunities"):
            for r in rows:
                assert r["owner_id"] and 0 <= float(r["discount"]) <= 0.4 and int(r["seats"]) >= 1
                assert 0 < float(r["amount"]) <= 5_000_000
                expected = float(r["list_price"]) * 12 * int(r["seats"]) * (1 - float(r["discount"]))
                assert abs(float(r["amount"]) - expected) < 0.02


# --- defects -----------------------------------------------------------------------------------------------------
def test_every_defect_points_to_its_line(heavy):
    out, manifest = heavy
    defects = manifest["defects"]
    kinds = {d["kind"] for d in defects}
    assert kinds == {"bad_enum", "out_of_range", "missing_owner", "duplicate", "malformed", "wrong_type", "late",
                     "schema_drift"}
    formats = {(s, t): spec["format"] for s, src in SOURCES.items() for t, spec in src["tables"].items()}
    latin1 = 0
    for d in defects:
        path = out / d["file"]
        fmt = formats[(d["source"], d["table"])]
        assert d["file"] == f"{d['source']}/{d['day']}/{d['table']}.{fmt}"
        kind, col, value = d["kind"], d["column"], d["value"]
        if kind == "schema_drift":
            if fmt == "csv":
                assert value in physical_line(path, 1).decode().split(",")
            else:
                assert value in json.loads(physical_line(path, d["line"]))
            continue
        if kind == "malformed":
            raw = physical_line(path, d["line"])
            if b"M\xfcller" in raw:
                latin1 += 1
                with pytest.raises(UnicodeDecodeError):
                    raw.decode("utf-8")
                continue
            assert raw.decode("utf-8") == value
            if fmt == "jsonl":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(raw)
            else:
                header = next(csv.reader([physical_line(path, 1).decode()]))
                fields = next(csv.reader([raw.decode()]))
                assert len(fields) != len(header) or raw.count(b'"') % 2 == 1, d
            continue
        if kind == "duplicate":
            m = re.match(r"exact copy of (\S+) (line|row) (\d+)", d["note"])
            assert m, d
            orig_path, orig_line = out / m.group(1), int(m.group(3))
            if fmt == "parquet":
                assert parse_line(path, fmt, d["line"]) == parse_line(orig_path, fmt, orig_line)
            else:
                assert physical_line(path, d["line"]) == physical_line(orig_path, orig_line)
            assert m.group(1) == d["file"] or orig_path.parent.name < d["day"]
            assert str(parse_line(path, fmt, d["line"])[col]) == value
            continue
        row = parse_line(path, fmt, d["line"])
        if kind == "missing_owner":
            assert row["owner_id"] in ("", None)
            continue
        got = row[col]
        if kind == "late":
            got_day = event_date(got)
            assert 2 <= (date.fromisoformat(d["day"]) - got_day).days <= 6, d
            assert event_date(value) == got_day
            continue
        assert str(got) == value, d
        if kind == "bad_enum":
            assert normalise(value) not in vocab_of(d["source"], d["table"], col), d
        elif kind == "wrong_type":
            assert not re.fullmatch(r"-?\d+(\.\d+)?|\d{4}-\d{2}-\d{2}.*", value), d
        elif kind == "out_of_range":
            v = float(value)
            assert (col == "amount" and v > 5_000_000) or (col == "discount" and v > 1) or (col == "seats" and v < 1)
    assert latin1 == 1
    # one defect per record: no (file, line) is named twice, except file-level drift
    spots = [(d["file"], d["line"]) for d in defects if d["kind"] != "schema_drift"]
    assert len(spots) == len(set(spots))


def test_row_counts_in_manifest_match_files(heavy, small):
    for out, manifest in (heavy, small):
        for source, table, t, day, path in data_files(out):
            fmt = t["format"]
            rel = path.relative_to(out).as_posix()
            if fmt == "parquet":
                n = pq.read_metadata(path).num_rows
            else:
                n = path.read_bytes().count(b"\n") - (1 if fmt == "csv" else 0)
            assert manifest["row_counts"][source][table][day] == n, rel
            assert manifest["files"][rel]["rows"] == n
            assert manifest["files"][rel]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest["totals"]["rows"] == sum(f["rows"] for f in manifest["files"].values())
        on_disk = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert on_disk == manifest


def test_scale_multiplies_rows(tmp_path, small):
    _, base = small  # days=5, scale=0.5
    double = run(tmp_path, days=5, seed=11, scale=1.0)
    ratio = double["totals"]["rows"] / base["totals"]["rows"]
    assert 1.7 < ratio < 2.3, ratio
    for source in ("web", "crm"):
        r = double["totals"]["by_source"][source] / base["totals"]["by_source"][source]
        assert 1.6 < r < 2.4, (source, r)


# --- ground truth ------------------------------------------------------------------------------------------------
def test_truth_is_complete_and_consistent(tmp_path):
    manifest = run(tmp_path, days=30, seed=7, scale=1.0, defects=DefectRates.none())
    truth = manifest["truth"]
    assert truth["parameters"]["elasticity"] == {"smb": -0.6, "mid_market": -0.45, "enterprise": -1.4}
    ch = truth["channels"]
    assert set(ch) == VOCAB["channel"]
    for v in ch.values():
        assert v["spend"] == pytest.approx(v["ad_spend"] + v["vendor_costs"], abs=0.02)
        assert v["opportunities"] <= v["sqls"] <= v["leads"]
    assert ch["direct"]["spend"] == 0
    totals = truth["totals"]
    assert totals["leads"] == sum(v["leads"] for v in ch.values())
    assert manifest["totals"]["by_source"]["web"] > 0.7 * manifest["totals"]["rows"]
    assert 2000 < manifest["totals"]["rows"] / 30 < 6000
    routing = truth["routing"]
    assert 30 <= routing["median_latency_s"] <= 55
    assert 0.85 <= routing["p_route_under_120s"] <= 0.95
    assert routing["unassigned_rate"] < 0.01
    assert 0.97 <= truth["dq_reason_coverage"] <= 1.0
    assert 0.98 <= truth["attribution"]["validity"] <= 1.0
    assert truth["open_pipeline"]["count"] > 0 and truth["bookings_total"] > 0
    # the crm files hold exactly the leads and opportunities the truth counts
    out = tmp_path
    leads = sum(manifest["row_counts"]["crm"]["leads"].values())
    opps = sum(manifest["row_counts"]["crm"]["opportunities"].values())
    assert leads == totals["leads"] and opps == totals["opportunities"]
    wins = 0
    for p in sorted(out.glob("crm/*/opportunity_stages.csv")):
        wins += sum(1 for r in csv.DictReader(p.read_text(encoding="utf-8").splitlines())
                    if normalise(r["to_stage"]) == "closed_won")
    assert wins == truth["win_rate"]["wins"]
