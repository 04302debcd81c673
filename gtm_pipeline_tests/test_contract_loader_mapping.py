"""Import mapping files (contracts/mappings/*.yaml) on the one contract loader: an unknown field, a wrong type and a
typo'd value each fail at load with the file, the field, what is allowed and the closest name; the YAML keywords
``from`` and ``in`` are named as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from gtm_pipeline.errors import ContractError
from gtm_pipeline.importer.mapping import load_mapping

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
     'unmapped, date_format, bucket, multiply, required; did you mean "from"?'),
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
])
def test_mapping_problems_read_in_the_loader_style(tmp_path, old, new, message):
    assert old in VALID
    with pytest.raises(ContractError) as e:
        _load(tmp_path, VALID.replace(old, new, 1))
    assert str(e.value).split(": ", 1) == [str(tmp_path / "bad.yaml"), message]
