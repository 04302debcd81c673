"""Import mapping files (contracts/mappings/*.yaml) on the one contract loader: an unknown field, a wrong type and a
typo'd value each fail at load with the file, the field, what is allowed and the closest name; the YAML keywords
``from`` and ``in`` are named as written."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from gtm_pipeline.contract_loader import yaml_names
from gtm_pipeline.errors import ContractError
from gtm_pipeline.importer.columns import ColumnSpec, Condition
from gtm_pipeline.importer.mapping import load_mapping
from gtm_pipeline.importer.values import UNITS, Unit

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "contracts"
VALID = """\
name: unit
inputs:
  deals: {file: deals.csv}
outputs:
  - target: crm/opportunities
    input: deals
    filter: {column: stage, in: [Won]}
    day_from: [close_date]
    columns:
      opportunity_id: {from: id}
      stage: {from: stage, map: {Won: closed_won}, unmapped: warn}
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return load_mapping(path, contracts_dir=CONTRACTS_DIR)


def test_the_valid_mapping_loads_as_the_objects_the_runner_uses(tmp_path):
    out = _load(tmp_path, VALID).outputs[0]
    col = out.columns["stage"]
    assert (out.table.qualified, out.label, out.where, out.filter[0].op, out.filter[0].values) == (
        "crm/opportunities", "crm/opportunities", "outputs[0]", "in", ("Won",))
    assert (col.target, col.source, col.column, col.value_map, col.unmapped, col.label) == (
        "stage", "from", "stage", {"Won": "closed_won"}, "warn", "stage")
    assert out.reads() == [("outputs[0].filter", "deals", "stage"), ("outputs[0].day_from", "deals", "close_date"),
                           ("outputs[0].columns.opportunity_id.from", "deals", "id"),
                           ("outputs[0].columns.stage.from", "deals", "stage")]


@pytest.mark.parametrize("old, new, message", [
    # unknown field, with the closest allowed name (a Python keyword such as "from" is shown as written)
    ("{from: id}", "{form: id}",
     "outputs[0].columns.opportunity_id.form: unknown field; allowed: from, const, template, lookup, map, default, "
     'unmapped, date_format, bucket, multiply, convert, required; did you mean "from"?'),
    ("{column: stage, in: [Won]}", "{column: stage, inn: [Won]}",
     'outputs[0].filter[0].inn: unknown field; allowed: column, in, not_in, not_empty; did you mean "in"?'),
    ("    day_from:", "    day_frm: [x]\n    day_from:",
     "outputs[0].day_frm: unknown field; allowed: target, input, description, filter, day_from, day_format, "
     'default_day, columns; did you mean "day_from"?'),
    # wrong type
    ("    day_from: [close_date]", "    day_from: close_date",
     "outputs[0].day_from: input should be a valid tuple (got 'close_date')"),
    ("{from: id}", "{from: id, multiply: twelve}",
     "outputs[0].columns.opportunity_id.multiply: expected a number; got str 'twelve'"),
    ("{from: id}", "{from: id, required: maybe}",
     "outputs[0].columns.opportunity_id.required: input should be a valid boolean (got 'maybe')"),
    # typo'd value of a closed list
    ("unmapped: warn", "unmapped: wran",
     "outputs[0].columns.stage.unmapped: 'wran' is not allowed; allowed: keep, warn, reject; did you mean \"warn\"?"),
    ("{from: id}", "{lookup: {input: deals, key: id, value: id, on: id, missing: emtpy}}",
     "outputs[0].columns.opportunity_id.lookup.missing: 'emtpy' is not allowed; allowed: reject, empty, warn; "
     'did you mean "empty"?'),
    # the Python names of keyword fields are not YAML keys: a file that writes from_ or in_ is told the real key
    ("{from: id}", "{from_: id}",
     "outputs[0].columns.opportunity_id.from_: unknown field; allowed: from, const, template, lookup, map, default, "
     'unmapped, date_format, bucket, multiply, convert, required; did you mean "from"?'),
    ("{column: stage, in: [Won]}", "{column: stage, in_: [Won]}",
     'outputs[0].filter[0].in_: unknown field; allowed: column, in, not_in, not_empty; did you mean "in"?'),
    # an explicit null is not "unset"
    ("{from: id}", "{from: ~}",
     "outputs[0].columns.opportunity_id.from: expected a value; got null (remove the key to leave it unset)"),
    # unit conversion: unknown field, wrong type, typo'd unit, two converters, units of different dimensions
    ("{from: id}", "{from: id, convert: {from: cents, too: dollars}}",
     'outputs[0].columns.opportunity_id.convert.too: unknown field; allowed: from, to; did you mean "to"? '
     "(and 1 more problem in this file)"),
    ("{from: id}", "{from: id, convert: cents}",
     "outputs[0].columns.opportunity_id.convert: input should be a valid dictionary or instance of UnitConversion "
     "(got 'cents')"),
    ("{from: id}", "{from: id, convert: {from: cent, to: dollars}}",
     "outputs[0].columns.opportunity_id.convert.from: 'cent' is not allowed; allowed: cents, dollars, thousands, "
     "millions, milliseconds, seconds, minutes, hours, days, weeks, basis_points, percent, fraction; "
     'did you mean "cents"?'),
    ("{from: id}", "{from: id, convert: {from: cents}}",
     "outputs[0].columns.opportunity_id.convert.to: is required"),
    ("{from: id}", "{from: id, multiply: 100, convert: {from: cents, to: dollars}}",
     "outputs[0].columns.opportunity_id: give at most one of date_format, bucket, multiply or convert "
     "(found multiply, convert)"),
    ("{from: id}", "{from: id, convert: {from: cents, to: hours}}",
     "outputs[0].columns.opportunity_id.convert: cannot convert cents (money) to hours (duration); cents converts "
     "to dollars, thousands, millions"),
    ("{from: id}", "{from: id, convert: {from: percent, to: percent}}",
     "outputs[0].columns.opportunity_id.convert: from and to are both percent; remove convert"),
])
def test_mapping_problems_read_in_the_loader_style(tmp_path, old, new, message):
    assert old in VALID
    with pytest.raises(ContractError) as e:
        _load(tmp_path, VALID.replace(old, new, 1))
    assert str(e.value).split(": ", 1) == [str(tmp_path / "bad.yaml"), message]


def test_unit_conversion_loads_with_its_exact_factor(tmp_path):
    col = _load(tmp_path, VALID.replace("{from: id}", "{from: id, convert: {from: cents, to: dollars}}")).outputs[0]
    spec = col.columns["opportunity_id"]
    assert (spec.converter, spec.convert.from_, spec.convert.to, str(spec.factor)) == ("convert", "cents", "dollars",
                                                                                      "0.01")


def test_every_unit_has_a_factor_and_dimension():
    assert set(typing.get_args(Unit)) == set(UNITS)


def test_the_loader_reports_yaml_names_for_aliased_fields():
    assert yaml_names(Condition) == ["column", "in", "not_in", "not_empty"]
    assert yaml_names(ColumnSpec)[0] == "from"
    # Python code may still build a model by its field names
    assert Condition(column="stage", in_=("Won",)).values == ("Won",)
