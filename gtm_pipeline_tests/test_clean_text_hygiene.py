"""Text hygiene in entity contracts: an overlong value or a control character never reaches a clean table, the
reason stays readable, and a repair is judged by the same compiled rules as the clean run."""

from __future__ import annotations

import json

import duckdb
import pytest

from gtm_pipeline.clean import (
    DEFAULT_MAX_LENGTH,
    clean_partition,
    load_entity_contracts,
    parse_entity_contract,
    validate_payloads,
)
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.ingest.landing import load_landing_spec
from gtm_pipeline.ingest.stage import ingest_day
from gtm_pipeline.quarantine.ledger import conservation

D1 = "2026-08-01"
HEADER = ("opportunity_id,account_id,lead_id,owner_id,created_at,stage,product,list_price,discount,seats,amount,"
          "currency,segment,region,industry,size_band,channel,close_date")


def row(oid: str, product: str = "core") -> str:
    return (f'{oid},A1,L1,U1,2026-08-01 10:00:00,discovery,"{product}",40,0.1,10,4320,USD,smb,na,software,11-50,'
            f"email,2026-09-30")


@pytest.fixture
def env(tmp_path):
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contract = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))

    def deliver(rows: list[str], contract=contract):
        p = tmp_path / "landing" / "crm" / D1 / "opportunities.csv"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(("\n".join([HEADER, *rows]) + "\n").encode())
        ingest_day(con, spec, tmp_path / "landing", "crm", D1)
        return clean_partition(con, spec, contract, D1)

    yield con, deliver, contract
    con.close()


def _quarantined(con) -> list[tuple]:
    return con.execute("SELECT _line, rule, reason, payload FROM quarantine.opportunity ORDER BY _line").fetchall()


def test_every_string_column_has_the_default_limit():
    contract = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"]
    assert contract.columns["product"].max_length == DEFAULT_MAX_LENGTH
    assert contract.columns["amount"].max_length is None  # numbers are typed, not length-checked


def test_an_overlong_value_is_quarantined_with_a_short_reason(env):
    con, deliver, _ = env
    rep = deliver([row("O1"), row("O2", product="x" * 5000)])
    assert (rep.clean, rep.quarantined) == (1, 1) and rep.counts == {"max_length": 1}
    ((line, rule, reason, payload),) = _quarantined(con)
    assert (line, rule) == (3, "max_length")
    assert reason == f"product: 5000 characters; the limit is {DEFAULT_MAX_LENGTH} (max_length in the contract)"
    assert json.loads(payload)["product"] == "x" * 5000  # the record is kept whole for repair
    assert con.execute("SELECT count(*) FROM clean.opportunity WHERE length(product) > 1000").fetchone()[0] == 0


def test_a_five_million_character_value_never_reaches_clean_and_is_accounted_for(env):
    con, deliver, _ = env
    deliver([row("O1"), row("O2", product="y" * 5_000_000)])
    assert con.execute("SELECT max(length(product)) FROM clean.opportunity").fetchone()[0] == 4
    led = conservation(con, spec=load_landing_spec(CONTRACTS_DIR_DEFAULT))
    ((records, clean, quarantined, lost),) = led[led["table"] == "crm/opportunities"][
        ["records", "clean", "quarantined", "lost"]].itertuples(index=False)
    assert (records, clean, quarantined, lost) == (2, 1, 1, 0)
    for reason in (r[2] for r in _quarantined(con)):
        assert len(reason) < 300


@pytest.mark.parametrize("char, code, position", [("\x00", "U+0000", 3), ("\n", "U+000A", 4), ("\x1b", "U+001B", 1)])
def test_control_characters_are_quarantined_and_named(env, char, code, position):
    con, deliver, _ = env
    product = "ab" + char + "c" if position == 3 else ("abc" + char if position == 4 else char + "abc")
    rep = deliver([row("O1"), row("O2", product=product)])
    assert (rep.clean, rep.quarantined) == (1, 1)
    rows = _quarantined(con)
    assert [r[1] for r in rows] == ["control_chars"]
    assert rows[0][2] == f"product: control character {code} at character {position}; only tab is allowed in text"
    assert json.loads(rows[0][3])["product"] == product  # exact raw text, control character included


def test_a_tab_inside_text_is_allowed(env):
    con, deliver, _ = env
    rep = deliver([row("O1", product="core\tplus")])
    assert (rep.clean, rep.quarantined) == (1, 0)
    assert con.execute("SELECT product FROM clean.opportunity").fetchone()[0] == "core\tplus"


def test_a_contract_can_raise_the_limit(env, tmp_path):
    con, deliver, contract = env
    folder = tmp_path / "contracts" / "entities"
    folder.mkdir(parents=True)
    text = contract.path.read_text().replace("product: {type: string}", "product: {type: string, max_length: 6000}")
    assert "max_length: 6000" in text
    (folder / "opportunity.yaml").write_text(text)
    raised = parse_entity_contract(folder / "opportunity.yaml")
    rep = deliver([row("O1", product="z" * 5000)], contract=raised)
    assert (rep.clean, rep.quarantined) == (1, 0)
    rep = deliver([row("O1", product="z" * 6001)], contract=raised)
    assert (rep.clean, rep.quarantined) == (0, 1)


def test_a_repair_is_judged_by_the_same_rules_as_the_clean_run(env):
    con, deliver, contract = env
    deliver([row("O1", product="bad\x00value")])
    ((_, _, reason, payload),) = _quarantined(con)
    _, per_row = validate_payloads(con, contract, [json.loads(payload)])
    assert "; ".join(v.message for v in per_row[0]) == reason
    fixed = {**json.loads(payload), "product": "badvalue"}
    _, per_row = validate_payloads(con, contract, [fixed])
    assert per_row == [[]]
