"""Contracts that fit the data they meet (issue 15 §7): a range picked by another column's value, amount 0 allowed
on a lost deal and refused on a won one. Each guarantee is attacked with the value that must still be caught."""

from __future__ import annotations

import duckdb
import pytest

from gtm_pipeline.clean import clean_partition, load_entity_contracts, parse_entity_contract
from gtm_pipeline.clean.rules import violations_sql
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day

D1 = "2017-03-01"
OPP_HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
              "currency,segment,region,industry,size_band,channel,close_date")
STAGE_HEADER = "stage_event_id,opportunity_id,from_stage,to_stage,changed_at,amount,loss_reason"


def opp(oid: str, product: str, price: str) -> str:
    return (f'{oid},A1,,U1,{D1} 00:00:00,discovery,"{product}",{price},,,,USD,mid_market,na,software,201-1000,,'
            f"{D1}")


@pytest.fixture
def env(tmp_path):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def deliver(table: str, header: str, rows: list[str], entity: str):
        p = tmp_path / "landing" / "crm" / D1 / f"{table}.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join([header, *rows]) + "\n")
        ingest_day(con, spec, tmp_path / "landing", "crm", D1)
        return clean_partition(con, spec, contracts[entity], D1)

    yield con, deliver
    con.close()


def test_the_shipped_contract_gives_gtk_500_its_own_range():
    col = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"].columns["list_price"]
    assert col.range_by == "product" and ("GTK 500", 20000.0, 35000.0) in col.ranges
    assert (col.min, col.max) == (1.0, 10000.0)  # every other product keeps the old range


def test_gtk_500_at_its_genuine_list_price_publishes(env):
    con, deliver = env
    rep = deliver("opportunities", OPP_HEADER, [opp("O1", "GTK 500", "26768"), opp("O2", "GTX Basic", "550"),
                                                opp("O3", "business", "60")], "opportunity")
    assert not rep.blocked and rep.clean == 3 and rep.counts == {}


@pytest.mark.parametrize("product, price, reason", [
    ("GTK 500", "267680", "list_price: 267680.0 is outside [20000, 35000], the range for product 'GTK 500'"),
    ("GTK 500", "550", "list_price: 550.0 is outside [20000, 35000], the range for product 'GTK 500'"),
    ("GTX Basic", "26768", "list_price: 26768.0 is outside [1, 10000], the default range (product 'GTX Basic' has "
                           "no range of its own)"),
    ("", "26768", "list_price: 26768.0 is outside [1, 10000], the default range (product is empty)"),
    ("gtk 500", "26768", "the default range (product 'gtk 500' has no range of its own)"),  # matched exactly
])
def test_a_genuinely_wrong_price_still_blocks_the_day(env, product, price, reason):
    con, deliver = env
    rep = deliver("opportunities", OPP_HEADER, [opp("O1", product, price), opp("O2", "GTK 500", "26768")],
                  "opportunity")
    assert rep.blocked and rep.clean == 0 and rep.held == 1
    ((rule, got, action),) = con.execute(
        "SELECT rule, reason, break_action FROM quarantine.opportunity WHERE status = 'open'").fetchall()
    assert (rule, action) == ("range", "block_publish_and_notify_owner")
    assert reason in got
    assert con.execute("SELECT count(*) FROM clean.opportunity").fetchone()[0] == 0


@pytest.mark.parametrize("to_stage, amount, clean", [
    ("closed_lost", "0", True),     # Maven closes every lost deal at 0: nothing booked
    ("closed_lost", "4321", True),  # the generated CRM keeps the value at stake on a lost deal
    ("closed_lost", "", True),
    ("closed_won", "4321", True),
    ("closed_won", "0", False),     # a booking of 0 is no booking
    ("closed_won", "", False),
    ("closed_won", "-5", False),    # also out of range, which blocks
])
def test_amount_zero_is_a_lost_deal_not_a_won_one(env, to_stage, amount, clean):
    con, deliver = env
    rep = deliver("opportunity_stages", STAGE_HEADER, [f"E1,O1,discovery,{to_stage},{D1} 00:00:00,{amount},"],
                  "opportunity_stage")
    assert (rep.clean == 1) is clean
    if not clean:
        rules = con.execute("SELECT rules FROM quarantine.opportunity_stage").fetchone()[0]
        assert "row_check:won_has_amount" in rules


BASE = """entity: widget
version: "1"
owner: RevOps
description: One row per widget.
columns:
  widget_id: {type: string, required: true}
  kind: {type: string}
  color: {type: enum, values: [red, blue]}
  size: {type: integer, range: RANGE}
"""


def _contract(tmp_path, rng: str):
    p = tmp_path / "widget.yaml"
    p.write_text(BASE.replace("RANGE", rng))
    return parse_entity_contract(p)


def test_a_keyed_range_without_default_leaves_unlisted_values_unchecked(tmp_path):
    c = _contract(tmp_path, "{by: color, ranges: {red: [0, 5], blue: {min: 10}}}")
    col = c.columns["size"]
    assert col.ranges == (("red", 0.0, 5.0), ("blue", 10.0, None)) and (col.min, col.max) == (None, None)
    rows = [("a", "red", 6), ("b", "red", 5), ("c", "blue", 9), ("d", "blue", 99), ("e", None, 1000)]
    values = ", ".join(f"('{w}', NULL, {repr(k) if k else 'NULL'}, {n})" for w, k, n in rows)
    got = duckdb.sql(f"""SELECT len({violations_sql(c)}) FROM (
        SELECT *, widget_id AS __raw_widget_id, kind AS __raw_kind, color AS __raw_color,
               CAST(size AS VARCHAR) AS __raw_size FROM (VALUES {values}) t(widget_id, kind, color, size))
        ORDER BY widget_id""").fetchall()
    assert [n for (n,) in got] == [1, 0, 1, 0, 0]


def test_keyed_range_sql_is_one_case_over_the_by_column(tmp_path):
    c = _contract(tmp_path, "{by: kind, ranges: {\"it's\": [0, 1]}, default: [0, 9]}")
    sql = violations_sql(c)
    assert "CASE WHEN \"kind\" = 'it''s' THEN" in sql  # a quote in a value is escaped, never evaluated


@pytest.mark.parametrize("rng, message", [
    ("{by: colour, ranges: {red: [0, 5]}}", "columns.size.range.by: 'colour' is not another column of this "
                                            'contract; known: widget_id, kind, color; did you mean "color"?'),
    ("{by: size, ranges: {red: [0, 5]}}", "columns.size.range.by: 'size' is not another column"),
    ("{by: color, ranges: {green: [0, 5]}}", "columns.size.range.ranges.green: 'green' is not a value of 'color'; "
                                             "allowed: red, blue"),
    ("{by: color, ranges: {red: [5, 0]}}", "columns.size.range.ranges.red: min 5.0 is greater than max 0.0"),
    ("{by: color, ranges: {red: [0, 5, 9]}}", "a range as a list is [min, max], got 3 values"),
    ("{by: color, ranges: {red: [0, 5]}, min: 1}", "with by, give the range of unlisted values as default"),
    ("{by: color}", "columns.size.range.ranges: must map values of 'color' to [min, max]"),
    ("{by: color, ranges: {}}", "columns.size.range.ranges: dictionary should have at least 1 item"),
    ("{ranges: {red: [0, 5]}}", "ranges/default need by: <column>"),
    ("{by: color, rnages: {red: [0, 5]}}", "columns.size.range.rnages: unknown field; allowed: min, max, by, "
                                          'ranges, default; did you mean "ranges"?'),
    ("{by: color, ranges: {red: {min: 0, mx: 5}}}", "columns.size.range.ranges.red.mx: unknown field; allowed: "
                                                    'min, max; did you mean "max"?'),
    ("{by: color, ranges: {red: [0, lots]}}", "columns.size.range.ranges.red.max: input should be a valid number"),
    ("{by: color, ranges: [red, 5]}", "columns.size.range.ranges: input should be a valid dictionary"),
    ("{by: color, ranges: {red: [0, 5]}, default: [9, 1]}", "columns.size.range.default: min 9.0 is greater"),
])
def test_malformed_keyed_ranges_name_the_file_the_field_and_the_fix(tmp_path, rng, message):
    with pytest.raises(ContractError) as e:
        _contract(tmp_path, rng)
    assert str(e.value).startswith("contracts/entities/widget.yaml: ")
    assert message in str(e.value)


def test_a_range_by_an_integer_column_is_refused(tmp_path):
    p = tmp_path / "widget.yaml"
    p.write_text(BASE.replace("RANGE", "{by: seats, ranges: {'1': [0, 5]}}") + "  seats: {type: integer}\n")
    with pytest.raises(ContractError, match=r"columns.size.range.by: 'seats' is integer; a range can be picked by "
                                            r"a string or enum column only"):
        parse_entity_contract(p)
