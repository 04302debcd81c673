"""The landing spec (contracts/sources.yaml) on the one contract loader: an unknown field, a wrong type and a typo'd
value each fail at load with the file, the field, what is allowed and the closest name."""

from __future__ import annotations

import pytest

from gtm_pipeline.errors import ContractError
from gtm_pipeline.ingest.landing import parse_landing_spec

TABLE = "{format: csv, columns: [a, b], entity: e, to_entity: {x: a, k: {const: 1}}, event_time: b}"


def _spec(tmp_path, text: str):
    p = tmp_path / "sources.yaml"
    p.write_text(text)
    return parse_landing_spec(p)


def test_a_valid_spec_loads_with_constants_and_aliases(tmp_path):
    spec = _spec(tmp_path, "sources: {crm: {owner: RevOps, cutoff: newest_event, tables: {t: "
                           "{format: csv, columns: [a, b], entity: e, to_entity: {x: a, k: {const: 1}}, "
                           "aliases: {a: [a_old]}, event_time: b}}}}")
    t = spec.table("crm/t")
    assert (t.to_entity, t.aliases, t.event_time, spec.sources["crm"].cutoff) == (
        {"x": "a", "k": ("const", "1")}, {"a": ("a_old",)}, "b", "newest_event")


@pytest.mark.parametrize("text, message", [
    # unknown field, with the closest allowed name
    (f"sources: {{crm: {{tables: {{t: {TABLE}}}, ownr: x}}}}",
     'sources.yaml: sources.crm.ownr: unknown field; allowed: description, owner, tables, cutoff; '
     'did you mean "owner"?'),
    ("sources: {crm: {tables: {t: {format: csv, columns: [a], entity: e, evnt_time: a}}}}",
     "sources.yaml: sources.crm.tables.t.evnt_time: unknown field; allowed: format, columns, entity, to_entity, "
     'aliases, event_time, description; did you mean "event_time"?'),
    # wrong type
    ("sources: {crm: {tables: {t: {format: csv, columns: a, entity: e}}}}",
     "sources.yaml: sources.crm.tables.t.columns: input should be a valid list (got 'a')"),
    ("sources: {crm: {tables: {t: {format: csv, columns: [a], entity: e, aliases: {a: a_old}}}}}",
     "sources.yaml: sources.crm.tables.t.aliases.a: input should be a valid list (got 'a_old')"),
    # typo'd value of a closed list
    (f"sources: {{crm: {{cutoff: end_of_dya, tables: {{t: {TABLE}}}}}}}",
     "sources.yaml: sources.crm.cutoff: 'end_of_dya' is not allowed; allowed: end_of_day, newest_event; "
     'did you mean "end_of_day"?'),
    ("sources: {crm: {tables: {t: {format: csvv, columns: [a], entity: e}}}}",
     "sources.yaml: sources.crm.tables.t.format: 'csvv' is not allowed; allowed: csv, jsonl, parquet; "
     'did you mean "csv"?'),
    # checks spanning fields name the entry to fix
    ("sources: {crm: {tables: {t: {format: csv, columns: [a], entity: e, aliases: {b: [c]}}}}}",
     "sources.yaml: sources.crm.tables.t.aliases.b: not a column of the table; known: a"),
    ("sources: {crm: {cutoff: newest_event, tables: {t: {format: csv, columns: [a], entity: e}}}}",
     "sources.yaml: sources.crm.cutoff: newest_event needs event_time on every table; missing on ['t']"),
    ("sources: {crm: {tables: {t: {format: csv, columns: [a, a], entity: e}}}}",
     "sources.yaml: sources.crm.tables.t.columns: column names must be unique; repeated: a"),
])
def test_landing_spec_problems_read_in_the_loader_style(tmp_path, text, message):
    with pytest.raises(ContractError) as e:
        _spec(tmp_path, text)
    assert str(e.value) == message
