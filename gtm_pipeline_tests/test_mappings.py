"""Declarative column mappings: the shipped mappings on the original data sets, each transform on hand-made CSVs,
and the validation messages (asserted as text)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import textwrap
from collections import Counter
from pathlib import Path

import pytest
import yaml

from gtm_pipeline.errors import ContractError, GtmPipelineError
from gtm_pipeline.importer.mapping import (
    LANDING_TIMESTAMP_FORMAT,
    LINEAGE_COLUMNS,
    REJECTS_COLUMNS,
    import_cli,
    load_mapping,
    run_mapping,
)

REPO = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = REPO / "contracts"
SOURCES_PATH = CONTRACTS_DIR / "sources.yaml"
MAPPINGS_DIR = REPO / "contracts" / "mappings"
# The original data sets live beside the repository, in <repo>/../shared/datasets/<name>/; they are never copied in.
DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SOURCES = yaml.safe_load(SOURCES_PATH.read_text(encoding="utf-8"))["sources"]


def _columns(target: str) -> list[str]:
    source, table = target.split("/")
    return SOURCES[source]["tables"][table]["columns"]


def _dataset(name: str) -> Path:
    folder = DATASETS_DIR / name
    if not folder.is_dir():
        message = (
            f"original data set not found: <repo>/../shared/datasets/{name}/ (looked in {folder}); "
            "put the untouched original files there to run this test"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return folder


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, [dict(zip(header, row)) for row in reader]


def _landing_rows(out: Path, target: str) -> list[dict[str, str]]:
    """All rows of one landing table, in day order, each with its day under "_day"."""
    source, table = target.split("/")
    rows: list[dict[str, str]] = []
    for path in sorted(out.glob(f"{source}/*/{table}.*")):
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            assert all(list(r) == _columns(target) for r in records), path
            records = [{k: ("" if v is None else v) for k, v in r.items()} for r in records]
        else:
            header, records = _read_csv(path)
            assert header == _columns(target), path
        rows += [{**r, "_day": path.parent.name} for r in records]
    return rows


def _rejects(out: Path) -> list[dict[str, str]]:
    header, rows = _read_csv(next((out / "_import").rglob("rejects.csv")))
    assert header == list(REJECTS_COLUMNS)
    return rows


def _physical_line(path: Path, line: int) -> str:
    return path.read_bytes().decode("utf-8-sig").replace("\r\n", "\n").split("\n")[line - 1]


def _assert_headers_match_contract(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file() and "_import" not in p.parts]
    assert files
    for path in files:
        source, _day, name = path.relative_to(out).parts
        target = f"{source}/{name.split('.')[0]}"
        if path.suffix == ".csv":
            assert _read_csv(path)[0] == _columns(target), path
        else:
            first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
            assert list(first) == _columns(target), path
        assert path.suffix == "." + SOURCES[source]["tables"][target.split("/")[1]]["format"]


def _assert_lineage(out: Path, input_dir: Path, pairs: dict[str, tuple[str, str]], every: int = 401) -> int:
    """Sampled lineage rows lead back to the original line: the landing id equals the id on that input line."""
    header, lineage = _read_csv(next((out / "_import").rglob("lineage.csv")))
    assert header == list(LINEAGE_COLUMNS)
    checked = 0
    for entry in lineage[::every]:
        landing_path = out / entry["landing_file"]
        table = Path(entry["landing_file"]).name.split(".")[0]
        landing_col, input_col = pairs[table]
        raw_landing = _physical_line(landing_path, int(entry["landing_line"]))
        if landing_path.suffix == ".jsonl":
            landed = json.loads(raw_landing)
        else:
            landed = dict(zip(_columns(f"{landing_path.parts[-3]}/{table}"), next(csv.reader([raw_landing]))))
        input_path = input_dir / entry["input_file"]
        input_header = next(csv.reader([_physical_line(input_path, 1)]))
        original = dict(zip(input_header, next(csv.reader([_physical_line(input_path, int(entry["input_line"]))]))))
        assert landed[landing_col] == original[input_col], entry
        checked += 1
    return checked


# ----------------------------------------------------------------------------------------------------------------
# The shipped mappings on the original files
# ----------------------------------------------------------------------------------------------------------------
OLIST = "olist_marketing_funnel"
MAVEN = "maven_crm_sales_opportunities"


@pytest.fixture(scope="module")
def olist(tmp_path_factory):
    input_dir = _dataset(OLIST)
    out = tmp_path_factory.mktemp("olist_landing")
    report = run_mapping(load_mapping(MAPPINGS_DIR / "olist_marketing_funnel.yaml"), input_dir, out)
    return report, input_dir, out


@pytest.fixture(scope="module")
def maven(tmp_path_factory):
    input_dir = _dataset(MAVEN)
    out = tmp_path_factory.mktemp("maven_landing")
    report = run_mapping(load_mapping(MAPPINGS_DIR / "maven_crm.yaml"), input_dir, out)
    return report, input_dir, out


def _assert_conservation(report) -> None:
    for inp in report.inputs:
        if inp.role == "rows":
            primary = next(o for o in report.outputs if o.input == inp.name and o.primary)
            assert inp.rows_read == primary.rows_written + inp.rows_rejected, inp


def test_olist_counts_and_conservation(olist):
    report, _, out = olist
    reads = {i.name: i.rows_read for i in report.inputs}
    assert reads == {"mqls": 8000, "deals": 842}
    assert report.rows_rejected == 0 and _rejects(out) == []
    written = {o.target: o.rows_written for o in report.outputs}
    assert written == {
        "crm/leads": 8000,
        "web/form_fills": 8000,
        "crm/opportunities": 842,
        "crm/opportunity_stages": 842,
        "crm/accounts": 842,
    }
    _assert_conservation(report)
    for target, count in written.items():
        assert len(_landing_rows(out, target)) == count, target
    assert len(_read_csv(next((out / "_import").rglob("lineage.csv")))[1]) == sum(written.values())


def test_olist_headers_channels_and_amounts(olist):
    _, _, out = olist
    _assert_headers_match_contract(out)
    leads = _landing_rows(out, "crm/leads")
    channels = Counter(r["channel"] for r in leads)
    assert channels["paid_social"] == 1350 and channels["direct"] == 499
    assert "social" not in channels and "direct_traffic" not in channels
    # no channel information: kept as-is so the lead contract quarantines them
    assert channels["unknown"] == 1099 and channels["display"] == 118 and channels[""] == 60
    assert all(r["created_at"].endswith(" 00:00:00") and r["created_at"][:10] == r["_day"] for r in leads)
    # latest status: converted when a closed deal carries the mql_id, at its won_date
    assert Counter(r["status"] for r in leads) == {"new": 7158, "converted": 842}
    assert all(bool(r["status_changed_at"]) == (r["status"] == "converted") for r in leads)
    assert {r["region"] for r in leads} == {"latam"}
    assert Counter(r["channel"] for r in _landing_rows(out, "web/form_fills")) == channels

    opps = _landing_rows(out, "crm/opportunities")
    assert {r["stage"] for r in opps} == {"closed_won"} and {r["currency"] for r in opps} == {"USD"}
    assert all(r["opportunity_id"] == r["lead_id"] for r in opps)
    assert sum(1 for r in opps if r["amount"]) == 45  # only non-zero declared revenue becomes an amount
    assert "328800" in {r["amount"] for r in opps}  # 100000.0 BRL a month x 12 x 0.274 USD/BRL
    assert Counter(r["industry"] for r in opps) == {"retail": 587, "manufacturing": 242, "": 10, "other": 3}
    stages = _landing_rows(out, "crm/opportunity_stages")
    assert {r["to_stage"] for r in stages} == {"closed_won"}
    assert {r["account_id"] for r in opps} == {r["account_id"] for r in _landing_rows(out, "crm/accounts")}


def test_olist_lineage_points_back(olist):
    _, input_dir, out = olist
    pairs = {
        "leads": ("lead_id", "mql_id"),
        "form_fills": ("lead_id", "mql_id"),
        "opportunities": ("opportunity_id", "mql_id"),
        "opportunity_stages": ("opportunity_id", "mql_id"),
        "accounts": ("account_id", "seller_id"),
    }
    assert _assert_lineage(out, input_dir, pairs) > 40


def test_maven_counts_and_conservation(maven):
    report, _, out = maven
    reads = {i.name: (i.role, i.rows_read) for i in report.inputs}
    assert reads == {
        "pipeline": ("rows", 8800),
        "accounts": ("rows", 85),
        "products": ("lookup", 7),
        "teams": ("rows", 35),
    }
    assert report.rows_rejected == 0 and _rejects(out) == []
    written = {o.target: o.rows_written for o in report.outputs}
    assert written == {
        "crm/opportunities": 8800,
        "crm/opportunity_stages": 4238 + 2473,
        "crm/accounts": 85,
        "crm/owners": 35,
    }
    _assert_conservation(report)
    for target, count in written.items():
        assert len(_landing_rows(out, target)) == count, target


def test_maven_values_mapped(maven):
    _, _, out = maven
    _assert_headers_match_contract(out)
    opps = _landing_rows(out, "crm/opportunities")
    # the stage at creation: every deal with an engage_date was created in discovery; its close is a stage event
    assert Counter(r["stage"] for r in opps) == {"discovery": 1589 + 4238 + 2473, "prospecting": 500}
    # "GTXPro" in the pipeline is "GTX Pro" in products.csv: fixed by a value map, so the list price is found
    gtx_pro = [r for r in opps if r["product"] == "GTX Pro"]
    assert len(gtx_pro) == 1480 and {r["list_price"] for r in gtx_pro} == {"4821"}
    assert "GTXPro" not in {r["product"] for r in opps} and all(r["list_price"] for r in opps)
    # Prospecting rows carry no date: they land on default_day with no created_at
    prospecting = [r for r in opps if r["stage"] == "prospecting"]
    assert {r["_day"] for r in prospecting} == {"2017-12-31"} and {r["created_at"] for r in prospecting} == {""}
    engaged = [r for r in opps if r["stage"] == "discovery"]
    assert all(r["created_at"][:10] == r["_day"] for r in engaged)  # an opportunity lands on its creation day
    assert {r["region"] for r in opps if r["account_id"]} <= {"na", "emea", "apac", "latam"}
    assert {r["industry"] for r in opps} <= {
        "", "software", "fintech", "healthcare", "retail", "media", "telecommunications", "services", "employment"
    }

    stages = _landing_rows(out, "crm/opportunity_stages")
    assert Counter(r["to_stage"] for r in stages) == {"closed_won": 4238, "closed_lost": 2473}
    assert all(r["changed_at"][:10] == r["_day"] for r in stages)
    assert {r["from_stage"] for r in stages} == {"discovery"}

    accounts = {r["account_id"]: r for r in _landing_rows(out, "crm/accounts")}
    acme = accounts["Acme Corporation"]  # technolgy, 2822 employees, United States
    assert (acme["industry"], acme["size_band"], acme["segment"], acme["region"]) == (
        "software", "1001-5000", "enterprise", "na"
    )
    assert Counter(a["industry"] for a in accounts.values()) == {
        "retail": 17, "software": 12 + 7, "healthcare": 12, "media": 6 + 8, "fintech": 8,
        "telecommunications": 6, "services": 5, "employment": 4,
    }
    assert Counter(a["size_band"] for a in accounts.values())["5000+"] == sum(
        1 for a in accounts.values() if int(a["employees"]) > 5000
    )
    assert {a["region"] for a in accounts.values()} == {"na", "emea", "apac", "latam"}
    owners = _landing_rows(out, "crm/owners")
    assert {(o["team"], o["region"], o["updated_at"]) for o in owners} == {("ae", "na", "2016-10-20 00:00:00")}


def test_maven_lineage_points_back(maven):
    _, input_dir, out = maven
    pairs = {
        "opportunities": ("opportunity_id", "opportunity_id"),
        "opportunity_stages": ("opportunity_id", "opportunity_id"),
        "accounts": ("account_id", "account"),
        "owners": ("owner_id", "sales_agent"),
    }
    assert _assert_lineage(out, input_dir, pairs, every=97) > 100
    # one fixed row: line 3 of sales_pipeline.csv (CRLF) is Z063OYW0, a GTXPro deal engaged on 2016-10-25 and won
    # on 2017-03-11: the opportunity lands on its engage day, the win on its close day
    _, lineage = _read_csv(next((out / "_import").rglob("lineage.csv")))
    hits = [e for e in lineage if e["input_file"] == "sales_pipeline.csv" and e["input_line"] == "3"]
    assert sorted(e["landing_file"] for e in hits) == [
        "crm/2016-10-25/opportunities.csv", "crm/2017-03-11/opportunity_stages.csv"
    ]
    opp = next(e for e in hits if e["landing_file"].endswith("opportunities.csv"))
    assert _physical_line(out / opp["landing_file"], int(opp["landing_line"])).startswith(
        "Z063OYW0,Isdom,,Darcel Schlecht,2016-10-25 00:00:00,discovery,GTX Pro,4821,"
    )


def test_maven_rejects_carry_reasons_and_conservation_holds(tmp_path):
    input_dir = tmp_path / "in"
    shutil.copytree(_dataset(MAVEN), input_dir)
    for f in input_dir.iterdir():
        f.chmod(0o644)
    with (input_dir / "sales_pipeline.csv").open("ab") as f:
        f.write(b"BAD00001,Moses Frase,GTX Basic,Cancity,Won,2017-01-02,2017-13-45,10\r\n")
        f.write(b"BAD00002,Moses Frase,GTX Basic,Cancity,Won\r\n")
        f.write(b"BAD00003,Moses Frase,GTX Basic,Nowhere Inc,Engaging,2017-01-02,,\r\n")
    report = run_mapping(load_mapping(MAPPINGS_DIR / "maven_crm.yaml"), input_dir, tmp_path / "out")
    _assert_conservation(report)
    pipeline = next(i for i in report.inputs if i.name == "pipeline")
    assert (pipeline.rows_read, pipeline.rows_landed, pipeline.rows_rejected) == (8803, 8800, 3)
    rejects = {r["input_line"]: r for r in _rejects(tmp_path / "out")}
    assert set(rejects) == {"8802", "8803", "8804"}
    assert 'close_date: "2017-13-45" does not match %Y-%m-%d' in rejects["8802"]["reason"]
    assert 'day (from close_date): "2017-13-45" is not a date' in rejects["8802"]["reason"]
    assert rejects["8802"]["raw"] == "BAD00001,Moses Frase,GTX Basic,Cancity,Won,2017-01-02,2017-13-45,10"
    assert rejects["8803"]["reason"] == "row has 5 fields; the header has 8"
    assert '"Nowhere Inc" not found in accounts.account (lookup)' in rejects["8804"]["reason"]
    assert all(r["input_file"] == "sales_pipeline.csv" for r in rejects.values())


def test_shipped_mappings_document_themselves():
    for path in sorted(MAPPINGS_DIR.glob("*.yaml")):
        mapping = load_mapping(path)
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# Mapping:"), path
        assert mapping.description.strip() and mapping.license_note.strip(), path
    assert "CC BY-NC-SA 4.0" in load_mapping(MAPPINGS_DIR / "olist_marketing_funnel.yaml").license_note


# ----------------------------------------------------------------------------------------------------------------
# Transforms on small hand-made files
# ----------------------------------------------------------------------------------------------------------------
DEALS_CSV = (
    "id,stage,engage_date,close_date,value,product,employees,owner\n"
    "A1,Won,2020-01-02,2020-01-05,100,GTXPro,10,ann\n"
    "A2,Lost,2020-01-03,2020-01-04,0,Basic,11,bob\n"
    "A3,Engaging,2020-01-03,,,Basic,5001,\n"
    "A4,Prospecting,,,,,,\n"
)
PRODUCTS_CSV = "product,price\nGTX Pro,4821\nBasic,550\n"


def _import(tmp_path: Path, mapping_yaml: str, files: dict[str, str | bytes], **kwargs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    mapping_path = tmp_path / "unit.yaml"
    mapping_path.write_text(textwrap.dedent(mapping_yaml), encoding="utf-8")
    input_dir = tmp_path / "in"
    input_dir.mkdir(exist_ok=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        (input_dir / name).write_bytes(data)
    out = tmp_path / "out"
    report = run_mapping(load_mapping(mapping_path, contracts_dir=CONTRACTS_DIR), input_dir, out, **kwargs)
    return report, out


def _opps_mapping(columns: str, *, extra_inputs: str = "", head: str = "", more_outputs: str = "") -> str:
    return (
        "name: unit\n"
        "inputs:\n"
        "  deals: {file: deals.csv}\n"
        + extra_inputs
        + "outputs:\n"
        "  - target: crm/opportunities\n"
        "    input: deals\n"
        + (head or '    day_from: [close_date, engage_date]\n    default_day: "2020-01-31"\n')
        + "    columns:\n"
        + textwrap.indent(textwrap.dedent(columns), "      ")
        + more_outputs
    )


def test_from_const_template_and_unlisted_columns_empty(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        currency: {const: USD}
        lead_id: {template: "L-{id}/{stage}"}
        """), {"deals.csv": DEALS_CSV})
    rows = {r["opportunity_id"]: r for r in _landing_rows(out, "crm/opportunities")}
    assert rows["A1"]["currency"] == "USD" and rows["A1"]["lead_id"] == "L-A1/Won"
    assert rows["A1"]["stage"] == "" and rows["A1"]["amount"] == ""
    assert report.output("crm/opportunities").rows_written == 4


def test_value_map_keep_warn_reject_and_default(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        stage: {from: stage, map: {Won: closed_won, Lost: closed_lost}, unmapped: warn}
        product: {from: product, map: {GTXPro: GTX Pro}}
        currency: {from: stage, map: {Won: USD}, default: EUR}
        owner_id: {from: owner, default: unassigned}
        """), {"deals.csv": DEALS_CSV})
    rows = {r["opportunity_id"]: r for r in _landing_rows(out, "crm/opportunities")}
    stages = [rows[i]["stage"] for i in ("A1", "A2", "A3", "A4")]
    assert stages == ["closed_won", "closed_lost", "Engaging", "Prospecting"]
    assert [rows[i]["product"] for i in ("A1", "A2", "A4")] == ["GTX Pro", "Basic", ""]
    assert [rows[i]["currency"] for i in ("A1", "A2")] == ["USD", "EUR"]
    assert [rows[i]["owner_id"] for i in ("A1", "A3")] == ["ann", "unassigned"]
    notes = report.output("crm/opportunities").notes
    assert notes == ('stage: 2 values not in the value map, kept as-is ("Engaging" x1, "Prospecting" x1)',)

    report, out = _import(tmp_path / "r", _opps_mapping("""\
        opportunity_id: {from: id}
        stage: {from: stage, map: {Won: closed_won, Lost: closed_lost}, unmapped: reject}
        """), {"deals.csv": DEALS_CSV})
    reasons = {r["input_line"]: r["reason"] for r in _rejects(out)}
    assert reasons == {
        "4": 'stage: "Engaging" is not in the value map (known: "Won", "Lost")',
        "5": 'stage: "Prospecting" is not in the value map (known: "Won", "Lost")',
    }


def test_bucket(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        size_band: {from: employees, bucket: [[10, "1-10"], [50, "11-50"], [null, "50+"]]}
        segment: {from: employees, bucket: [[5000, small]]}
        """), {"deals.csv": DEALS_CSV + "A5,Won,,2020-01-06,,,many,\n"})
    rows = {r["opportunity_id"]: r for r in _landing_rows(out, "crm/opportunities")}
    assert [rows[i]["size_band"] for i in ("A1", "A2", "A4")] == ["1-10", "11-50", ""]
    reasons = {r["input_line"]: r["reason"] for r in _rejects(out)}
    assert reasons["4"] == "segment (from employees): 5001 is above the last bucket bound 5000 (bucket)"
    assert 'size_band (from employees): "many" is not a number (bucket)' in reasons["6"]


def test_lookup_with_on_map_and_missing_policies(tmp_path):
    extra = "  products: {file: products.csv}\n"
    files = {"deals.csv": DEALS_CSV + "A5,Won,,2020-01-06,,Ghost,,\n", "products.csv": PRODUCTS_CSV}
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        list_price: {lookup: {input: products, key: product, value: price, on: product, on_map: {GTXPro: GTX Pro}}}
        """, extra_inputs=extra), files)
    rows = {r["opportunity_id"]: r for r in _landing_rows(out, "crm/opportunities")}
    assert [rows[i]["list_price"] for i in ("A1", "A2", "A4")] == ["4821", "550", ""]  # empty key: empty, no error
    assert [r["reason"] for r in _rejects(out)] == [
        'list_price (lookup products.price on product): "Ghost" not found in products.product (lookup)'
    ]
    assert {i.name: i.role for i in report.inputs} == {"deals": "rows", "products": "lookup"}

    for missing, notes in [
        ("empty", ()),
        ("warn", ('list_price: 2 values without a lookup match, left empty ("GTXPro" x1, "Ghost" x1)',)),
    ]:
        report, out = _import(tmp_path / missing, _opps_mapping(f"""\
            opportunity_id: {{from: id}}
            list_price: {{lookup: {{input: products, key: product, value: price, on: product, missing: {missing}}}}}
            """, extra_inputs=extra), files)
        assert report.rows_rejected == 0 and report.output("crm/opportunities").notes == notes
        prices = {r["opportunity_id"]: r["list_price"] for r in _landing_rows(out, "crm/opportunities")}
        assert (prices["A1"], prices["A2"], prices["A5"]) == ("", "550", "")

    with pytest.raises(GtmPipelineError, match=r'products.csv: lookup key product "Basic" appears on lines 3 and 4'):
        _import(tmp_path / "d", _opps_mapping("""\
            opportunity_id: {from: id}
            list_price: {lookup: {input: products, key: product, value: price, on: product}}
            """, extra_inputs=extra), {"deals.csv": DEALS_CSV, "products.csv": PRODUCTS_CSV + "Basic,999\n"})


def test_a_lookup_miss_is_a_reject_naming_the_near_match(tmp_path):
    # Without an alias "GTXPro" is not in products.csv, which says "GTX Pro": never landed with an empty price, the
    # row is rejected and the reason names the near match and the alias that fixes it. "Ghost" is close to nothing.
    files = {"deals.csv": DEALS_CSV + "A5,Won,,2020-01-06,,Ghost,,\n", "products.csv": PRODUCTS_CSV}
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        list_price: {lookup: {input: products, key: product, value: price, on: product}}
        """, extra_inputs="  products: {file: products.csv}\n"), files)
    label = "list_price (lookup products.price on product)"
    assert {r["input_line"]: r["reason"] for r in _rejects(out)} == {
        "2": f'{label}: "GTXPro" not found in products.product (lookup); did you mean "GTX Pro"? If it is the same, '
             'add "GTXPro": "GTX Pro" to lookup.on_map',
        "6": f'{label}: "Ghost" not found in products.product (lookup)',
    }
    prices = {r["opportunity_id"]: r["list_price"] for r in _landing_rows(out, "crm/opportunities")}
    assert prices == {"A2": "550", "A3": "550", "A4": ""} and report.rows_rejected == 2  # A4: no product at all


def test_maven_without_its_product_alias_rejects_every_gtxpro_row_naming_gtx_pro(tmp_path):
    # The shipped mapping's reviewed alias (product_names: GTXPro -> GTX Pro) is what lands those 1,480 rows with
    # their list price; taken out, each of them is a reject naming the near match, and none lands with an empty price.
    text = (MAPPINGS_DIR / "maven_crm.yaml").read_text(encoding="utf-8")
    assert text.count(", on_map: *product_names") == 1
    (tmp_path / "maven_no_alias.yaml").write_text(text.replace(", on_map: *product_names", ""), encoding="utf-8")
    report = run_mapping(load_mapping(tmp_path / "maven_no_alias.yaml"), _dataset(MAVEN), tmp_path / "out")
    _assert_conservation(report)
    reasons = Counter(r["reason"] for r in _rejects(tmp_path / "out"))
    assert reasons == {'list_price (lookup products.sales_price on product): "GTXPro" not found in products.product '
                       '(lookup); did you mean "GTX Pro"? If it is the same, add "GTXPro": "GTX Pro" to lookup.on_map':
                       1480}
    opps = _landing_rows(tmp_path / "out", "crm/opportunities")
    assert len(opps) == 8800 - 1480 and all(r["list_price"] for r in opps)


def test_date_format(tmp_path):
    files = {"deals.csv": DEALS_CSV + "A5,Won,05/01/2020,2020-13-45,,,,\nA6,Won,2020-01-07T10:00:00+0200,,,,,\n"}
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        created_at: {from: engage_date, date_format: ["%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%dT%H:%M:%S%z"]}
        close_date: {from: close_date, date_format: "%Y-%m-%d"}
        """), files)
    rows = {r["opportunity_id"]: r for r in _landing_rows(out, "crm/opportunities")}
    assert LANDING_TIMESTAMP_FORMAT == "%Y-%m-%d %H:%M:%S"
    assert rows["A1"]["created_at"] == "2020-01-02 00:00:00" and rows["A1"]["close_date"] == "2020-01-05 00:00:00"
    assert rows["A4"]["created_at"] == "" and rows["A4"]["close_date"] == ""
    assert rows["A6"]["created_at"] == "2020-01-07 08:00:00"  # an offset lands as UTC wall time
    reason = _rejects(out)[0]["reason"]
    assert 'close_date: "2020-13-45" does not match %Y-%m-%d' in reason
    assert 'day (from close_date): "2020-13-45" is not a date' in reason


def test_multiply_and_required(tmp_path):
    files = {"deals.csv": "id,value\nA1,100000.0\nA2,2.5\nA3,0.0\nA4,1.25\nA5,lots\n,5\n"}
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id, required: true}
        amount: {from: value, map: {"0.0": ""}, multiply: 12}
        """, head='    default_day: "2020-01-31"\n'), files)
    rows = {r["opportunity_id"]: r["amount"] for r in _landing_rows(out, "crm/opportunities")}
    assert rows == {"A1": "1200000", "A2": "30", "A3": "", "A4": "15"}
    reasons = {r["input_line"]: r["reason"] for r in _rejects(out)}
    assert reasons == {"6": 'amount (from value): "lots" is not a number (multiply)',
                       "7": "opportunity_id (from id): empty, but required"}


def test_convert_between_units_is_exact(tmp_path):
    files = {"deals.csv": "id,value,share\nA1,105499,12.5\nA2,1,100\nA3,,\nA4,12.5,0.1\nA5,lots,1\n"}
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        amount: {from: value, convert: {from: cents, to: dollars}}
        discount: {from: share, convert: {from: percent, to: fraction}}
        """, head='    default_day: "2020-01-31"\n'), files)
    rows = {r["opportunity_id"]: (r["amount"], r["discount"]) for r in _landing_rows(out, "crm/opportunities")}
    assert rows == {"A1": ("1054.99", "0.125"), "A2": ("0.01", "1"), "A3": ("", ""), "A4": ("0.125", "0.001")}
    assert [r["reason"] for r in _rejects(out)] == ['amount (from value): "lots" is not a number (convert)']


STAGES_OUTPUT = """\
  - target: crm/opportunity_stages
    input: deals
    filter: {column: stage, in: [Won, Lost]}
    day_from: [close_date]
    columns:
      stage_event_id: {template: "{id}-{stage}"}
      changed_at: {from: close_date, date_format: "%Y-%m-%d"}
"""


def test_filters_primary_rejects_secondary_skips(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        """, head=(
        "    filter: [{column: stage, not_in: [Prospecting]}, {column: engage_date, not_empty: true}]\n"
        "    day_from: [close_date, engage_date]\n"), more_outputs=STAGES_OUTPUT), {"deals.csv": DEALS_CSV})
    assert [r["opportunity_id"] for r in _landing_rows(out, "crm/opportunities")] == ["A3", "A2", "A1"]
    assert [r["stage_event_id"] for r in _landing_rows(out, "crm/opportunity_stages")] == ["A2-Lost", "A1-Won"]
    assert [(r["input_line"], r["reason"], r["output"]) for r in _rejects(out)] == [
        ("5", 'excluded by the filter of its primary output crm/opportunities: stage "Prospecting" is in not_in '
              "[Prospecting]", "crm/opportunities"),
    ]
    assert (report.inputs[0].rows_read, report.inputs[0].rows_rejected) == (4, 1)


def test_a_row_lands_completely_or_not_at_all(tmp_path):
    # the close date fails only in the secondary output (the primary does not read it): the whole row is rejected
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        """, head='    day_from: [engage_date]\n    default_day: "2020-01-31"\n', more_outputs=STAGES_OUTPUT),
        {"deals.csv": DEALS_CSV + "A5,Won,2020-01-03,03.01.2020,,,,\n"})
    assert "A5" not in {r["opportunity_id"] for r in _landing_rows(out, "crm/opportunities")}
    [reject] = _rejects(out)
    assert reject["output"] == "crm/opportunity_stages"
    assert reject["reason"] == (
        'day (from close_date): "03.01.2020" is not a date (ISO 8601 such as 2017-03-01 or 2017-03-01 10:00:00; '
        'set day_format for other layouts); changed_at (from close_date): "03.01.2020" does not match %Y-%m-%d'
    )
    _assert_conservation(report)


def test_day_from_first_non_empty_default_day_and_day_format(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("opportunity_id: {from: id}\n"), {"deals.csv": DEALS_CSV})
    days = {r["opportunity_id"]: r["_day"] for r in _landing_rows(out, "crm/opportunities")}
    assert days == {"A1": "2020-01-05", "A2": "2020-01-04", "A3": "2020-01-03", "A4": "2020-01-31"}

    report, out = _import(tmp_path / "n", _opps_mapping(
        "opportunity_id: {from: id}\n", head="    day_from: [close_date]\n"), {"deals.csv": DEALS_CSV})
    assert [r["reason"] for r in _rejects(out)] == ["day: close_date all empty and no default_day"] * 2

    report, out = _import(tmp_path / "f", _opps_mapping(
        "opportunity_id: {from: id}\n", head='    day_from: [d]\n    day_format: "%d/%m/%Y"\n'),
        {"deals.csv": "id,d\nA1,05/01/2020\nA2,2020-01-05\n"})
    assert [r["_day"] for r in _landing_rows(out, "crm/opportunities")] == ["2020-01-05"]
    assert _rejects(out)[0]["reason"] == 'day (from d): "2020-01-05" is not a date (%d/%m/%Y)'


def test_crlf_bom_quoted_newlines_and_line_numbers(tmp_path):
    text = 'id,stage,close_date\r\nA1,"Won\r\nbig",2020-01-05\r\n\r\nA2,Lost,2020-01-05\r\nA3,Won\r\n'
    report, out = _import(tmp_path, _opps_mapping("""\
        opportunity_id: {from: id}
        stage: {from: stage}
        """, head="    day_from: [close_date]\n"), {"deals.csv": b"\xef\xbb\xbf" + text.encode("utf-8")})
    path = out / "crm" / "2020-01-05" / "opportunities.csv"
    assert path.read_bytes().decode("utf-8").startswith("opportunity_id,")  # no BOM, no CR line ends
    assert b"\r\n" not in path.read_bytes().replace(b"Won\r\nbig", b"")
    rows = _landing_rows(out, "crm/opportunities")
    assert [r["stage"] for r in rows] == ["Won\r\nbig", "Lost"]  # the header had a BOM: "id" was still found
    _, lineage = _read_csv(next((out / "_import").rglob("lineage.csv")))
    # A1 spans lines 2-3 of the input (a quoted line break), line 4 is blank, A2 is on line 5; in the landing file
    # A1 starts on line 2 and also spans two lines, so A2 starts on line 4
    assert [(e["landing_line"], e["input_line"]) for e in lineage] == [("2", "2"), ("4", "5")]
    [reject] = _rejects(out)
    assert (reject["input_line"], reject["raw"], reject["reason"]) == (
        "6", "A3,Won", "row has 2 fields; the header has 3"
    )


def test_bad_quoting_is_rejected_not_swallowed(tmp_path):
    text = 'id,close_date\nA1,2020-01-05\nA2,"2020-01-05"x\nA3,2020-01-05\nA4,"2020-01-05\nA5,2020-01-05\n'
    report, out = _import(tmp_path, _opps_mapping("opportunity_id: {from: id}\n", head="    day_from: [close_date]\n"),
                          {"deals.csv": text})
    assert [r["opportunity_id"] for r in _landing_rows(out, "crm/opportunities")] == ["A1", "A3"]
    assert [(r["input_line"], r["raw"], r["reason"]) for r in _rejects(out)] == [
        ("3", 'A2,"2020-01-05"x', "unreadable CSV row (',' expected after '\"'); check the quoting"),
        # an unclosed quote runs to the end of the file: the rest is kept, as one reject, not landed inside a value
        ("5", 'A4,"2020-01-05\nA5,2020-01-05', "unreadable CSV row (unexpected end of data); check the quoting"),
    ]
    _assert_conservation(report)


def test_output_order_is_by_day_then_line_and_rerun_is_identical(tmp_path):
    report, out = _import(tmp_path, _opps_mapping("opportunity_id: {from: id}\n"), {"deals.csv": DEALS_CSV})
    assert [f for f in report.files_written if f.startswith("crm/")] == [
        "crm/2020-01-03/opportunities.csv",
        "crm/2020-01-04/opportunities.csv",
        "crm/2020-01-05/opportunities.csv",
        "crm/2020-01-31/opportunities.csv",
    ]
    snapshot = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    run_mapping(load_mapping(tmp_path / "unit.yaml", contracts_dir=CONTRACTS_DIR), tmp_path / "in", out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot
    assert not list(out.rglob(".*.tmp"))

    (out / "crm" / "2020-01-03" / "opportunities.csv").write_text("opportunity_id\nEDITED\n", encoding="utf-8")
    mapping = load_mapping(tmp_path / "unit.yaml", contracts_dir=CONTRACTS_DIR)
    with pytest.raises(GtmPipelineError, match=r"1 landing files already exist with different content "
                                               r"\(crm/2020-01-03/opportunities.csv\); import into an empty folder"):
        run_mapping(mapping, tmp_path / "in", out)
    run_mapping(mapping, tmp_path / "in", out, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == snapshot


def test_jsonl_and_parquet_outputs(tmp_path):
    mapping = """\
        name: unit
        inputs:
          mqls: {file: mqls.csv}
        outputs:
          - target: web/form_fills
            input: mqls
            day_from: [day]
            columns:
              form_fill_id: {from: id}
              submitted_at: {from: day, date_format: "%Y-%m-%d"}
          - target: vendors/costs
            input: mqls
            day_from: [day]
            columns:
              cost_id: {from: id}
              amount: {const: 5}
        """
    report, out = _import(tmp_path, mapping, {"mqls.csv": "id,day\nm1,2020-02-01\nm2,2020-02-01\n"})
    lines = (out / "web" / "2020-02-01" / "form_fills.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert list(first) == _columns("web/form_fills")
    assert first["form_fill_id"] == "m1" and first["submitted_at"] == "2020-02-01 00:00:00"
    assert first["session_id"] is None  # unlisted columns are null in JSONL, empty in CSV
    import pyarrow.parquet as pq

    table = pq.read_table(out / "vendors" / "2020-02-01" / "costs.parquet")
    assert table.column_names == _columns("vendors/costs")
    assert table.column("cost_id").to_pylist() == ["m1", "m2"] and table.column("amount").to_pylist() == ["5", "5"]
    _, lineage = _read_csv(next((out / "_import").rglob("lineage.csv")))
    assert [(e["landing_file"], e["landing_line"]) for e in lineage] == [
        ("vendors/2020-02-01/costs.parquet", "1"), ("vendors/2020-02-01/costs.parquet", "2"),
        ("web/2020-02-01/form_fills.jsonl", "1"), ("web/2020-02-01/form_fills.jsonl", "2"),
    ]


def test_encoding_declared_and_undecodable(tmp_path):
    mapping = _opps_mapping("opportunity_id: {from: id}\nowner_id: {from: owner}\n",
                            head='    default_day: "2020-01-31"\n')
    latin = "id,owner\nA1,Jos\u00e9\n".encode("cp1252")
    with pytest.raises(GtmPipelineError, match=r"deals.csv: line 2: bytes are not valid utf-8 .*"
                                               r"set inputs.deals.encoding in .*unit.yaml"):
        _import(tmp_path, mapping, {"deals.csv": latin})
    report, out = _import(tmp_path / "c", mapping.replace("{file: deals.csv}", "{file: deals.csv, encoding: cp1252}"),
                          {"deals.csv": latin})
    assert _landing_rows(out, "crm/opportunities")[0]["owner_id"] == "Jos\u00e9"


def test_import_cli_summary(tmp_path):
    mapping_path = tmp_path / "unit.yaml"
    mapping_path.write_text(_opps_mapping("opportunity_id: {from: id}\n"), encoding="utf-8")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deals.csv").write_text(DEALS_CSV, encoding="utf-8")
    # import_cli uses the project's sources.yaml, as the CLI will
    summary = import_cli(mapping_path, tmp_path / "in", tmp_path / "out")
    assert summary.splitlines()[0] == f"Imported mapping unit into {tmp_path / 'out'}: 0 rows rejected"
    assert "input  deals (deals.csv): 4 rows read, 4 landed, 0 rejected" in summary
    assert "output crm/opportunities <- deals (primary): 4 rows in 4 files, days 2020-01-03..2020-01-31" in summary
    assert "rejects: " in summary and "/rejects.csv" in summary and "/lineage.csv" in summary


# ----------------------------------------------------------------------------------------------------------------
# Validation messages
# ----------------------------------------------------------------------------------------------------------------
VALID = """\
name: unit
inputs:
  deals: {file: deals.csv}
  products: {file: products.csv}
outputs:
  - target: crm/opportunities
    input: deals
    day_from: [close_date]
    default_day: "2020-01-31"
    columns:
      opportunity_id: {from: id}
      list_price: {lookup: {input: products, key: product, value: price, on: product}}
  - target: crm/opportunity_stages
    input: deals
    day_from: [close_date]
    columns:
      to_stage: {from: stage, map: {Won: closed_won}}
"""


def _load_text(tmp_path: Path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return load_mapping(path, contracts_dir=CONTRACTS_DIR)


OPP_KNOWN = ", ".join(sorted(_columns("crm/opportunities")))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("      to_stage:", "      stagee:",
         "bad.yaml: outputs[1].columns.stagee: unknown column for crm/opportunity_stages; known: amount, changed_at, "
         "from_stage, loss_reason, opportunity_id, stage_event_id, to_stage"),
        ("      opportunity_id: {from: id}", "      stagee: {from: id}",
         f'bad.yaml: outputs[0].columns.stagee: unknown column for crm/opportunities; known: {OPP_KNOWN}; '
         'did you mean "stage"?'),
        ("name: unit", "name: unit\nnmae: x",
         "bad.yaml: nmae: unknown field; allowed: name, description, license_note, anchors, inputs, outputs; "
         'did you mean "name"?'),
        ("target: crm/opportunities", "target: crmm/opportunities",
         'bad.yaml: outputs[0].target: unknown source "crmm"; known: ads, calendar, crm, vendors, web; '
         'did you mean "crm"?'),
        ("target: crm/opportunities", "target: crm/oportunities",
         'bad.yaml: outputs[0].target: unknown table "oportunities" in source crm; known: accounts, contacts, leads, '
         'opportunities, opportunity_stages, owners; did you mean "opportunities"?'),
        ("    input: deals\n    day_from: [close_date]\n    default_day",
         "    input: deal\n    day_from: [close_date]\n    default_day",
         'bad.yaml: outputs[0].input: unknown input "deal"; declared inputs: deals, products'),
        ("{input: products, key", "{input: prods, key",
         'bad.yaml: outputs[0].columns.list_price.lookup.input: unknown input "prods"; '
         "declared inputs: deals, products"),
        ("{from: id}", "{from: id, const: x}",
         "bad.yaml: outputs[0].columns.opportunity_id: give exactly one of from, const, template or lookup "
         "(found from, const)"),
        ("{from: id}", "{from: id, bucket: [[10, a], [5, b]]}",
         "bad.yaml: outputs[0].columns.opportunity_id.bucket[1]: upper bounds must increase; 5 follows 10"),
        ("{from: id}", "{from: id, bucket: [[null, a], [5, b]]}",
         "bad.yaml: outputs[0].columns.opportunity_id.bucket[0]: only the last bucket may have no upper bound (null)"),
        ("{Won: closed_won}}", "{Won: closed_won}, unmapped: drop}",
         "bad.yaml: outputs[1].columns.to_stage.unmapped: 'drop' is not allowed; allowed: keep, warn, reject"),
        ("{Won: closed_won}}", "{Won: closed_won}, default: x, unmapped: keep}",
         "bad.yaml: outputs[1].columns.to_stage.unmapped: give either default (a value for unmapped input) "
         "or unmapped"),
        ("{Won: closed_won}}", "{true: closed_won}}",
         'bad.yaml: outputs[1].columns.to_stage.map.True: key is read by YAML as a boolean, null or float; quote it'),
        ("{Won: closed_won}}", "{0.10: closed_won}}",
         "bad.yaml: outputs[1].columns.to_stage.map.0.1: key is read by YAML as a boolean, null or float"),
        ("{from: id}", '{template: "{id:>5}"}',
         "bad.yaml: outputs[0].columns.opportunity_id.template: '{id:>5}': fields are plain input column names"),
        ("{from: id}", "{const: x, required: true}",
         "bad.yaml: outputs[0].columns.opportunity_id.required: a const column takes no other keys"),
        ("{from: id}", '{from: id, date_format: "Y-m-d"}',
         "bad.yaml: outputs[0].columns.opportunity_id.date_format: 'Y-m-d' is not a strptime format"),
        ("    day_from: [close_date]\n    columns:\n      to_stage", "    columns:\n      to_stage",
         "bad.yaml: outputs[1]: needs day_from (date columns) or default_day"),
        ('default_day: "2020-01-31"', 'default_day: "31.01.2020"',
         "bad.yaml: outputs[0].default_day: '31.01.2020' is not a day in the form YYYY-MM-DD"),
        ("    day_from: [close_date]\n    columns:\n      to_stage",
         "    day_from: [close_date]\n    filter: {column: stage, in: [Won], not_empty: true}\n"
         "    columns:\n      to_stage",
         "bad.yaml: outputs[1].filter[0]: give exactly one of in: [..], not_in: [..] or not_empty: true"),
        ("  products: {file: products.csv}", "  products: {file: products.csv}\n  extra: {file: x.csv}",
         "bad.yaml: inputs.extra: not read by any output or lookup; remove it or use it"),
        ("{file: deals.csv}", "{file: deals.csv, encoding: utf-9}",
         "bad.yaml: inputs.deals.encoding: unknown encoding 'utf-9'"),
        ("{file: deals.csv}", "{file: ../deals.csv}",
         "bad.yaml: inputs.deals.file: '../deals.csv': give a path relative to the input folder, inside it"),
        ("      opportunity_id: {from: id}", "      opportunity_id: {from: id}\n      opportunity_id: {from: x}",
         "bad.yaml: not valid YAML: duplicate key 'opportunity_id'; each key may appear once"),
        ("name: unit", "name: [unit",
         "bad.yaml: not valid YAML: "),
    ],
)
def test_validation_messages(tmp_path, old, new, expected):
    assert old in VALID
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, VALID.replace(old, new, 1))
    assert expected in str(info.value)
    assert str(info.value).split(": ", 1)[0].endswith("bad.yaml")


def test_yaml_on_and_yes_are_text_not_booleans(tmp_path):
    mapping = _load_text(tmp_path, VALID.replace("{Won: closed_won}", "{yes: closed_won, on: x, off: y}"))
    assert mapping.outputs[1].columns["to_stage"].value_map == {"yes": "closed_won", "on": "x", "off": "y"}
    assert mapping.outputs[0].columns["list_price"].lookup.on == "product"


def test_missing_input_file_and_unknown_input_column(tmp_path):
    mapping = _load_text(tmp_path, VALID)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deals.csv").write_text("id,stage,close_dat,product\n", encoding="utf-8")
    with pytest.raises(ContractError) as info:
        run_mapping(mapping, tmp_path / "in", tmp_path / "out")
    assert "bad.yaml: inputs.products.file: products.csv not found in " in str(info.value)
    assert str(info.value).endswith("files there: deals.csv")

    (tmp_path / "in" / "products.csv").write_text("product,price\n", encoding="utf-8")
    with pytest.raises(ContractError) as info:
        run_mapping(mapping, tmp_path / "in", tmp_path / "out")
    assert str(info.value).endswith(
        'bad.yaml: outputs[0].day_from: unknown column "close_date" in input deals (deals.csv); '
        'its columns: id, stage, close_dat, product; did you mean "close_dat"?'
    )
    assert not (tmp_path / "out").exists()  # nothing is written when the mapping does not fit the files


def test_unknown_lookup_column_names_the_lookup_input(tmp_path):
    mapping = _load_text(tmp_path, VALID.replace("value: price", "value: prize"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deals.csv").write_text("id,stage,close_date,product\n", encoding="utf-8")
    (tmp_path / "in" / "products.csv").write_text("product,price\n", encoding="utf-8")
    with pytest.raises(ContractError) as info:
        run_mapping(mapping, tmp_path / "in", tmp_path / "out")
    assert str(info.value).endswith(
        'bad.yaml: outputs[0].columns.list_price.lookup.value: unknown column "prize" in input products '
        '(products.csv); its columns: product, price; did you mean "price"?'
    )


def test_empty_input_file_is_bad_input(tmp_path):
    mapping = _load_text(tmp_path, VALID)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deals.csv").write_bytes(b"")
    (tmp_path / "in" / "products.csv").write_text("product,price\n", encoding="utf-8")
    with pytest.raises(GtmPipelineError, match=r"^deals.csv: the file is empty; expected a header line"):
        run_mapping(mapping, tmp_path / "in", tmp_path / "out")
