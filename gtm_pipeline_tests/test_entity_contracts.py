"""Entity contracts: every shipped contract loads; malformed ones fail with file, field and what is allowed."""

from __future__ import annotations

import pytest

from gtm_pipeline.clean.contract import (
    BLOCK_PUBLISH,
    MISSING_OWNER,
    QUARANTINE,
    load_entity_contracts,
    parse_entity_contract,
    slug,
)
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.errors import ContractError, ExpressionError
from gtm_pipeline.ingest.landing import load_landing_spec

BASE = """entity: widget
version: "1"
owner: RevOps
description: One row per widget.
columns:
  widget_id: {type: string, required: true}
  size: {type: integer, range: {min: 0, max: 10}}
  color: {type: enum, values: [red, blue]}
"""


def test_every_entity_of_the_landing_spec_has_a_contract_that_loads():
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    assert set(spec.entities()) <= set(contracts)
    for t in spec.tables():
        unknown = set(t.to_entity) - set(contracts[t.entity].columns)
        assert not unknown, f"{t.qualified} maps to unknown {t.entity} columns {unknown}"


def test_spec_break_actions_are_the_defaults_and_missing_owner_is_routed():
    opp = load_entity_contracts(CONTRACTS_DIR_DEFAULT)["opportunity"]
    assert opp.columns["stage"].action("enum") == QUARANTINE
    assert opp.columns["amount"].action("range") == BLOCK_PUBLISH
    assert opp.columns["owner_id"].action("required") == MISSING_OWNER


@pytest.mark.parametrize("patch, message", [
    (("size: {type: integer", "size: {type: int"),
     "columns.size.type: 'int' is not allowed; allowed: string, integer, decimal, boolean, date, timestamp, enum; "
     'did you mean "integer"?'),
    (("color: {type: enum, values: [red, blue]}", "color: {type: enum, values: [red], aliases: {rouge: bleu}}"),
     "columns.color: aliases.rouge maps to 'bleu', which is not an allowed value; allowed: red"),
    (("range: {min: 0, max: 10}", "range: {min: 10, max: 0}"), "columns.size.range: min 10.0 is greater than max 0.0"),
    (("widget_id: {type: string, required: true}", "widget_id: {type: string, requird: true}"),
     "columns.widget_id.requird: unknown field; allowed: type, required, values, aliases, range, unique, "
     'references, max_length, on_fail, description; did you mean "required"?'),
    (("size: {type: integer, range", "size: {type: integer, on_fail: {range: explode}, range"),
     "columns.size.on_fail.range: 'explode' is not allowed; allowed: quarantine_and_incident"),
    (("entity: widget", "entity: gadget"), "entity: 'gadget' must match the file name 'widget'"),
    (("owner: RevOps", "owner: RevOps\nownr: x"), 'ownr: unknown field; allowed: entity, version, owner'),
    (("size: {type: integer", "size: {type: integer, required: [yes]"), "columns.size.required: input should be a "
     "valid boolean"),
    (("size: {type: integer", "size: {type: integer, on_fail: {rnage: warn}"), "columns.size.on_fail.rnage: 'rnage' "
     "is not allowed; allowed: type, required, enum, range"),
    (("size: {type: integer", "size: {type: integer, on_fail: {range: reject_duplicate}"),
     "on_fail.range: reject_duplicate is the action of a second copy of a key"),
    (("widget_id: {type: string, required: true}", "widget_id: {type: string, required: true, max_length: 0}"),
     "columns.widget_id.max_length: input should be greater than or equal to 1"),
    (("size: {type: integer", "size: {type: integer, max_length: 5"), "max_length applies to string columns"),
])
def test_malformed_contracts_name_the_file_the_field_and_what_is_allowed(tmp_path, patch, message):
    p = tmp_path / "widget.yaml"
    p.write_text(BASE.replace(*patch))
    with pytest.raises(ContractError) as e:
        parse_entity_contract(p)
    assert str(e.value).startswith("contracts/entities/widget.yaml")
    assert message in str(e.value)


@pytest.mark.parametrize("expr, message", [
    ("siz > 1", 'unknown column "siz"'),
    ("__import__('os').system('rm -rf /')", "is not allowed"),
    ("size.real > 1", "attribute access"),
])
def test_row_checks_are_compiled_safely_and_unknown_names_fail(tmp_path, expr, message):
    p = tmp_path / "widget.yaml"
    p.write_text(BASE + f'row_checks:\n  - name: c\n    assert: "{expr}"\n')
    with pytest.raises(ExpressionError) as e:
        parse_entity_contract(p)
    assert "contracts/entities/widget.yaml: row_checks[0].assert" in str(e.value) and message in str(e.value)


@pytest.mark.parametrize("raw, expected", [("Paid Search", "paid_search"), (" closed_won ", "closed_won"),
                                           ("Mid-Market", "mid_market"), ("EMEA", "emea"), ("5000+", "5000+"),
                                           ("1001-5000", "1001_5000")])
def test_enum_spellings_are_matched_by_slug(raw, expected):
    assert slug(raw) == expected
