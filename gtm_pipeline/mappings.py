"""Declarative column mappings: turn a user's own CRM and marketing exports into landing files.

A mapping file (``contracts/mappings/<name>.yaml``) names the original export files (``inputs``) and, for every
landing table it feeds (``outputs``), how each landing column is computed from one input row. ``run_mapping``
writes ``<out>/<source>/<YYYY-MM-DD>/<table>.<format>`` with exactly the columns ``contracts/sources.yaml`` lists,
in order, so the normal ingest reads the result like any other delivery. Pure Python: no Dagster here.

Mapping grammar (the shipped YAML files document it again in their header comment):

    name, description, license_note
    inputs:  <name>: {file: <path relative to input_dir>, encoding: utf-8, delimiter: ","}
    outputs: - target: <source>/<table>          # must exist in sources.yaml
               input: <input name>               # the input whose rows feed this output
               filter: {column: c, in: [..]}     # or not_in: [..], or not_empty: true; a list means "all of"
               day_from: [col, ...]              # landing day = first non-empty of these columns
               day_format: "%d/%m/%Y"            # optional; default ISO 8601 (2017-03-01 or 2017-03-01 10:00:00)
               default_day: "2017-12-31"         # optional; for rows with none of the day_from columns set
               columns: {<landing column>: <column spec>}   # unlisted landing columns are empty
    column spec = exactly one source   from: col | const: v | template: "{a}-{b}" |
                                       lookup: {input, key, value, on, on_map: {..}, missing: reject|empty|warn}
                  then optionally      map: {raw: landed, ..} with default: v or unmapped: keep|warn|reject
                  then at most one of  date_format: "%Y-%m-%d" (or a list) | bucket: [[upper, label], ..] |
                                       multiply: 12
                  and optionally       required: true

Guarantees
- Nothing is lost. The first output listed for an input is its *primary* output. Every data row of an input that
  feeds outputs is either landed (in the primary output, and in each further output whose filter it passes) or
  written to ``<out>/_import/rejects.csv`` with input file, line, raw text and a reason naming the column and the
  rule. A row lands completely or not at all, so per input: rows read = rows in the primary output + rows rejected.
  A row that the primary output's filter excludes is a reject too (reason: the filter), never silently dropped.
- Lineage. ``<out>/_import/lineage.csv`` maps each landed row (landing file, line) to its input file and line.
  Lines are 1-based physical lines: a CSV's header is line 1, so its first data row is line 2; a JSONL file has no
  header; for Parquet the line is the 1-based row number. A quoted value that spans lines counts from its first line.
- Deterministic. One file per target and day; rows inside by output order, then input line. Re-running writes
  the same bytes. An existing landing file with different content is an error unless ``overwrite=True``.
- Inputs may be CRLF or LF, with or without a UTF-8 byte order mark. Blank lines are not rows and are skipped.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import os
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from gtm_pipeline.config import PROJECT_ROOT, load_settings
from gtm_pipeline.errors import ContractError, GtmPipelineError
from gtm_pipeline.landing import LandingSpec, Table, load_landing_spec

# crm exports carry naive timestamps in this layout; date_format turns any parsed date into it.
LANDING_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
IMPORT_DIR = "_import"
REJECTS_FILE = "rejects.csv"
LINEAGE_FILE = "lineage.csv"
REJECTS_COLUMNS = ("input_file", "input_line", "raw", "reason", "output")
LINEAGE_COLUMNS = ("landing_file", "landing_line", "input_file", "input_line")

_TOP_KEYS = ("name", "description", "license_note", "anchors", "inputs", "outputs")
_INPUT_KEYS = ("file", "encoding", "delimiter", "description")
_OUTPUT_KEYS = ("target", "input", "description", "filter", "day_from", "day_format", "default_day", "columns")
_FILTER_KEYS = ("column", "in", "not_in", "not_empty")
_SOURCE_KEYS = ("from", "const", "template", "lookup")
_CONVERTER_KEYS = ("date_format", "bucket", "multiply")
_COLUMN_KEYS = (*_SOURCE_KEYS, "map", "default", "unmapped", *_CONVERTER_KEYS, "required")
_LOOKUP_KEYS = ("input", "key", "value", "on", "on_map", "missing")
_ISO_DAY_HINT = "ISO 8601 such as 2017-03-01 or 2017-03-01 10:00:00; set day_format for other layouts"


# --------------------------------------------------------------------------------------------------------------
# The parsed mapping
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputSpec:
    name: str
    file: str
    encoding: str = "utf-8"
    delimiter: str = ","
    description: str = ""


@dataclass(frozen=True)
class Condition:
    """One filter condition on a raw input column."""

    column: str
    op: str  # "in", "not_in" or "not_empty"
    values: tuple[str, ...] = ()

    def failure(self, row: dict[str, str]) -> str | None:
        """None when the row passes, else why it does not."""
        value = row[self.column]
        shown = "[" + ", ".join(self.values) + "]"
        if self.op == "in" and value not in self.values:
            return f'{self.column} "{value}" not in {shown}'
        if self.op == "not_in" and value in self.values:
            return f'{self.column} "{value}" is in not_in {shown}'
        if self.op == "not_empty" and value.strip() == "":
            return f"{self.column} is empty"
        return None


@dataclass(frozen=True)
class LookupSpec:
    input: str
    key: str
    value: str
    on: str
    on_map: dict[str, str] | None = None
    missing: str = "reject"  # or "empty" (silently) or "warn" (empty, counted in the import report)


@dataclass(frozen=True)
class ColumnSpec:
    """How one landing column is computed: source, then value map, then at most one converter."""

    target: str
    source: str  # "from", "const", "template" or "lookup"
    column: str | None = None
    const: str = ""
    template: tuple[tuple[str, str | None], ...] = ()
    lookup: LookupSpec | None = None
    value_map: dict[str, str] | None = None
    default: str | None = None
    unmapped: str = "keep"  # "keep" (silently), "warn" (keep, count in the import report) or "reject"
    converter: str | None = None  # "date_format", "bucket" or "multiply"
    date_formats: tuple[str, ...] = ()
    buckets: tuple[tuple[float | None, str], ...] = ()
    factor: Decimal | None = None
    required: bool = False
    # (where in the mapping, input name, column) for every raw column this spec reads; checked against headers.
    refs: tuple[tuple[str, str, str], ...] = ()

    @property
    def label(self) -> str:
        if self.source == "from" and self.column != self.target:
            return f"{self.target} (from {self.column})"
        if self.source == "lookup" and self.lookup is not None:
            return f"{self.target} (lookup {self.lookup.input}.{self.lookup.value} on {self.lookup.on})"
        if self.source == "template":
            return f"{self.target} (template)"
        return self.target


@dataclass(frozen=True)
class OutputSpec:
    index: int
    table: Table  # the landing table of contracts/sources.yaml
    input: str
    columns: dict[str, ColumnSpec]
    filter: tuple[Condition, ...] = ()
    day_from: tuple[str, ...] = ()
    day_formats: tuple[str, ...] = ()
    default_day: str | None = None
    description: str = ""
    label: str = ""  # "crm/leads", or "crm/leads (outputs[3])" when a mapping targets one table twice

    @property
    def target(self) -> str:
        return self.table.qualified

    @property
    def where(self) -> str:
        return f"outputs[{self.index}]"


@dataclass(frozen=True)
class Mapping:
    name: str
    description: str
    license_note: str
    path: Path
    display: str
    inputs: dict[str, InputSpec]
    outputs: tuple[OutputSpec, ...]

    def outputs_for(self, input_name: str) -> list[OutputSpec]:
        """The outputs fed by one input; the first is its primary output."""
        return [o for o in self.outputs if o.input == input_name]

    def lookup_inputs(self) -> set[str]:
        return {c.lookup.input for o in self.outputs for c in o.columns.values() if c.lookup is not None}


# --------------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------------
def _display(path: Path | str) -> str:
    """A path as a user wants to read it: relative to the project or the working directory when possible."""
    p = Path(path)
    for base in (PROJECT_ROOT, Path.cwd()):
        try:
            return p.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            continue
    return str(path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in with "<<" may be overridden; only literal repeats are mistakes
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return {
        loader.construct_object(k, deep=True): loader.construct_object(v, deep=True) for k, v in node.value
    }


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)

# YAML 1.1 reads on/off/yes/no as booleans, which would turn the lookup key "on" and raw values such as "Yes" in a
# value map into True. Mappings use YAML 1.2's rule instead: only true/false (any case) are booleans.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _near(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""


class _Checker:
    """Raises ContractError messages of the form '<file>: <field>: <problem>; <what is allowed>'."""

    def __init__(self, display: str) -> None:
        self.display = display

    def fail(self, where: str, message: str) -> ContractError:
        return ContractError(f"{self.display}: {where}: {message}" if where else f"{self.display}: {message}")

    def mapping(self, obj: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected a mapping with keys {', '.join(allowed)}; got {_kind(obj)}")
        for key in obj:
            if key not in allowed:
                at = f"{where}.{key}" if where else str(key)
                raise self.fail(at, f"unknown key; allowed: {', '.join(allowed)}{_near(str(key), allowed)}")
        for key in required:
            if key not in obj:
                raise self.fail(where, f"missing required key {key!r}")
        return obj

    def text(self, obj: Any, where: str, *, allow_empty: bool = False) -> str:
        if not isinstance(obj, str) or (not allow_empty and not obj.strip()):
            raise self.fail(where, f"expected a non-empty string; got {_kind(obj)}")
        return obj

    def scalar(self, obj: Any, where: str) -> str:
        """A YAML scalar as the text it lands as (null is empty; dates in ISO form)."""
        if obj is None:
            return ""
        if isinstance(obj, bool):
            return "true" if obj else "false"
        if isinstance(obj, datetime):
            return obj.strftime(LANDING_TIMESTAMP_FORMAT)
        if isinstance(obj, date):
            return obj.isoformat()
        if isinstance(obj, (str, int, float)):
            return str(obj)
        raise self.fail(where, f"expected a single value (text or number); got {_kind(obj)}")

    def value_map(self, obj: Any, where: str) -> dict[str, str]:
        if not isinstance(obj, dict) or not obj:
            raise self.fail(where, f"expected a non-empty mapping of raw value to landed value; got {_kind(obj)}")
        out: dict[str, str] = {}
        for key, value in obj.items():
            # YAML turns yes/no/on/off/true/false and ~ into booleans and null, and 0.10 into 0.1: the raw text
            # would then never match, so such keys must be quoted.
            if isinstance(key, bool) or key is None or isinstance(key, float):
                raise self.fail(f"{where}.{key}", 'key is read by YAML as a boolean, null or float; quote it ("yes")')
            if not isinstance(key, (str, int)):
                raise self.fail(f"{where}.{key}", f"keys must be text; got {_kind(key)}")
            out[str(key)] = self.scalar(value, f"{where}.{key}")
        return out


def _kind(obj: Any) -> str:
    if obj is None:
        return "nothing"
    if isinstance(obj, dict):
        return "a mapping"
    if isinstance(obj, list):
        return "a list"
    return f"{type(obj).__name__} {obj!r}"


def load_mapping(path: Path | str, *, contracts_dir: Path | str | None = None) -> Mapping:
    """Load and strictly validate a mapping file against ``sources.yaml``.

    Unknown keys, unknown target source/table/column, unknown inputs and malformed transforms raise
    ``ContractError`` naming the file, the field and what is allowed. Whether the input files exist and have the
    columns the mapping reads is checked by ``run_mapping`` (or ``check_inputs``), which knows the input folder.
    ``contracts_dir`` holds ``sources.yaml``; by default the configured contracts folder.
    """
    path = Path(path)
    shown = _display(path)
    check = _Checker(shown)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as e:
        raise ContractError(f"{shown}: cannot read the mapping file ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ContractError(f"{shown}: not valid YAML: {e}") from e
    landing = load_landing_spec(Path(contracts_dir) if contracts_dir is not None else load_settings().contracts_dir)

    check.mapping(doc, "", _TOP_KEYS, required=("name", "inputs", "outputs"))
    name = check.text(doc["name"], "name")
    if not all(ch.isalnum() or ch in "_-" for ch in name):
        raise check.fail("name", f"{name!r}: use letters, digits, '_' and '-' only")
    description = check.text(doc.get("description", ""), "description", allow_empty=True)
    license_note = check.text(doc.get("license_note", ""), "license_note", allow_empty=True)

    raw_inputs = doc["inputs"]
    if not isinstance(raw_inputs, dict) or not raw_inputs:
        raise check.fail("inputs", "expected a mapping of input name to {file, encoding, delimiter}")
    inputs: dict[str, InputSpec] = {}
    for input_name, spec in raw_inputs.items():
        inputs[str(input_name)] = _parse_input(check, str(input_name), spec)

    raw_outputs = doc["outputs"]
    if not isinstance(raw_outputs, list) or not raw_outputs:
        raise check.fail("outputs", "expected a non-empty list of outputs")
    outputs = [_parse_output(check, i, spec, inputs, landing) for i, spec in enumerate(raw_outputs)]
    target_counts = Counter(o.target for o in outputs)
    outputs = [
        replace(o, label=o.target if target_counts[o.target] == 1 else f"{o.target} ({o.where})") for o in outputs
    ]

    used = {o.input for o in outputs} | {c.lookup.input for o in outputs for c in o.columns.values() if c.lookup}
    for input_name in inputs:
        if input_name not in used:
            raise check.fail(f"inputs.{input_name}", "not read by any output or lookup; remove it or use it")
    return Mapping(name, description, license_note, path, shown, inputs, tuple(outputs))


def _parse_input(check: _Checker, name: str, spec: Any) -> InputSpec:
    where = f"inputs.{name}"
    check.mapping(spec, where, _INPUT_KEYS, required=("file",))
    file = check.text(spec["file"], f"{where}.file")
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise check.fail(f"{where}.file", f"{file!r}: give a path relative to the input folder, inside it")
    encoding = check.text(spec.get("encoding", "utf-8"), f"{where}.encoding")
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise check.fail(f"{where}.encoding", f"unknown encoding {encoding!r}; e.g. utf-8, cp1252, latin-1") from e
    delimiter = spec.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise check.fail(f"{where}.delimiter", f'{delimiter!r}: expected one character such as "," ";" or "\\t"')
    description = check.text(spec.get("description", ""), f"{where}.description", allow_empty=True)
    return InputSpec(name, file, encoding, delimiter, description)


def _parse_output(
    check: _Checker, index: int, spec: Any, inputs: dict[str, InputSpec], landing: LandingSpec
) -> OutputSpec:
    where = f"outputs[{index}]"
    check.mapping(spec, where, _OUTPUT_KEYS, required=("target", "input", "columns"))
    target = check.text(spec["target"], f"{where}.target")
    source, _, table_name = target.partition("/")
    if source not in landing.sources:
        known = sorted(landing.sources)
        raise check.fail(
            f"{where}.target", f'unknown source "{source}"; known: {", ".join(known)}{_near(source, known)}'
        )
    tables = {t.name: t for t in landing.sources[source].tables}
    if table_name not in tables:
        known = sorted(tables)
        raise check.fail(
            f"{where}.target",
            f'unknown table "{table_name}" in source {source}; known: {", ".join(known)}{_near(table_name, known)}',
        )
    table = tables[table_name]
    input_name = check.text(spec["input"], f"{where}.input")
    if input_name not in inputs:
        raise check.fail(f"{where}.input", f'unknown input "{input_name}"; declared inputs: {", ".join(inputs)}')

    conditions = _parse_filter(check, f"{where}.filter", spec.get("filter"))
    day_from = spec.get("day_from", [])
    if not isinstance(day_from, list) or not all(isinstance(c, str) and c for c in day_from):
        raise check.fail(f"{where}.day_from", "expected a list of input column names, e.g. [close_date, engage_date]")
    day_formats = _parse_formats(check, f"{where}.day_format", spec["day_format"]) if "day_format" in spec else ()
    default_day = None
    if "default_day" in spec:
        default_day = check.scalar(spec["default_day"], f"{where}.default_day")
        try:
            default_day = date.fromisoformat(default_day).isoformat()
        except ValueError as e:
            raise check.fail(f"{where}.default_day", f"{default_day!r} is not a day in the form YYYY-MM-DD") from e
    if not day_from and default_day is None:
        raise check.fail(where, "needs day_from (date columns) or default_day: every landing file belongs to a day")

    raw_columns = spec["columns"]
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise check.fail(f"{where}.columns", f"expected a mapping of {target} column to its spec")
    columns: dict[str, ColumnSpec] = {}
    for target_column, col_spec in raw_columns.items():
        col_where = f"{where}.columns.{target_column}"
        if target_column not in table.columns:
            known = sorted(table.columns)
            raise check.fail(
                col_where,
                f"unknown column for {target}; known: {', '.join(known)}{_near(str(target_column), known)}",
            )
        columns[target_column] = _parse_column(check, col_where, target_column, col_spec, input_name, inputs)
    return OutputSpec(
        index=index,
        table=table,
        input=input_name,
        columns=columns,
        filter=conditions,
        day_from=tuple(day_from),
        day_formats=day_formats,
        default_day=default_day,
        description=check.text(spec.get("description", ""), f"{where}.description", allow_empty=True),
    )


def _parse_filter(check: _Checker, where: str, spec: Any) -> tuple[Condition, ...]:
    if spec is None:
        return ()
    items = spec if isinstance(spec, list) else [spec]
    conditions = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(spec, list) else where
        check.mapping(item, at, _FILTER_KEYS, required=("column",))
        column = check.text(item["column"], f"{at}.column")
        ops = [k for k in ("in", "not_in", "not_empty") if k in item]
        if len(ops) != 1:
            raise check.fail(at, "give exactly one of in: [..], not_in: [..] or not_empty: true")
        op = ops[0]
        if op == "not_empty":
            if item[op] is not True:
                raise check.fail(f"{at}.not_empty", "only not_empty: true is supported")
            conditions.append(Condition(column, op))
            continue
        values = item[op]
        if not isinstance(values, list) or not values:
            raise check.fail(f"{at}.{op}", "expected a non-empty list of raw values")
        conditions.append(Condition(column, op, tuple(check.scalar(v, f"{at}.{op}") for v in values)))
    return tuple(conditions)


def _parse_formats(check: _Checker, where: str, spec: Any) -> tuple[str, ...]:
    formats = spec if isinstance(spec, list) else [spec]
    if not formats:
        raise check.fail(where, 'expected a strptime format such as "%Y-%m-%d" or a list of them')
    for fmt in formats:
        if not isinstance(fmt, str) or "%" not in fmt:
            raise check.fail(where, f'{fmt!r} is not a strptime format such as "%Y-%m-%d"')
        try:
            datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
        except ValueError as e:
            raise check.fail(where, f"{fmt!r} is not a valid strptime format ({e})") from e
    return tuple(formats)


def _parse_column(
    check: _Checker, where: str, target: str, spec: Any, input_name: str, inputs: dict[str, InputSpec]
) -> ColumnSpec:
    check.mapping(spec, where, _COLUMN_KEYS)
    sources = [k for k in _SOURCE_KEYS if k in spec]
    if len(sources) != 1:
        raise check.fail(where, "give exactly one of from, const, template or lookup" + (
            f" (found {', '.join(sources)})" if sources else ""))
    source = sources[0]
    kw: dict[str, Any] = {"target": target, "source": source}
    refs: list[tuple[str, str, str]] = []

    if source == "const":
        extra = [k for k in spec if k != "const"]
        if extra:
            raise check.fail(f"{where}.{extra[0]}", "a const column takes no other keys")
        return ColumnSpec(target=target, source="const", const=check.scalar(spec["const"], f"{where}.const"))
    if source == "from":
        kw["column"] = check.text(spec["from"], f"{where}.from")
        refs.append((f"{where}.from", input_name, kw["column"]))
    elif source == "template":
        text = check.text(spec["template"], f"{where}.template")
        pieces: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as e:
            raise check.fail(f"{where}.template", f"{text!r}: {e}; write literal braces as {{{{ and }}}}") from e
        for literal, field_name, fmt_spec, conversion in parsed:
            if literal:
                pieces.append((literal, None))
            if field_name is None:
                continue
            if not field_name or fmt_spec or conversion or any(ch in field_name for ch in ".[]"):
                raise check.fail(
                    f"{where}.template",
                    f"{text!r}: fields are plain input column names such as {{opportunity_id}}; "
                    "format specs, conversions, attributes and indexes are not supported",
                )
            pieces.append(("", field_name))
            refs.append((f"{where}.template", input_name, field_name))
        kw["template"] = tuple(pieces)
    else:
        lk_where = f"{where}.lookup"
        lk = check.mapping(spec["lookup"], lk_where, _LOOKUP_KEYS, required=("input", "key", "value", "on"))
        lk_input = check.text(lk["input"], f"{lk_where}.input")
        if lk_input not in inputs:
            raise check.fail(f"{lk_where}.input", f'unknown input "{lk_input}"; declared inputs: {", ".join(inputs)}')
        missing = lk.get("missing", "reject")
        if missing not in ("reject", "empty", "warn"):
            raise check.fail(
                f"{lk_where}.missing", f"{missing!r}: expected reject, empty or warn (empty, and report it)"
            )
        lookup = LookupSpec(
            input=lk_input,
            key=check.text(lk["key"], f"{lk_where}.key"),
            value=check.text(lk["value"], f"{lk_where}.value"),
            on=check.text(lk["on"], f"{lk_where}.on"),
            on_map=check.value_map(lk["on_map"], f"{lk_where}.on_map") if "on_map" in lk else None,
            missing=missing,
        )
        refs += [
            (f"{lk_where}.key", lk_input, lookup.key),
            (f"{lk_where}.value", lk_input, lookup.value),
            (f"{lk_where}.on", input_name, lookup.on),
        ]
        kw["lookup"] = lookup

    if "map" in spec:
        kw["value_map"] = check.value_map(spec["map"], f"{where}.map")
    if "default" in spec:
        kw["default"] = check.scalar(spec["default"], f"{where}.default")
    if "unmapped" in spec:
        if "map" not in spec:
            raise check.fail(f"{where}.unmapped", "only applies together with map")
        if "default" in spec:
            raise check.fail(f"{where}.unmapped", "give either default (a value for unmapped input) or unmapped")
        if spec["unmapped"] not in ("keep", "warn", "reject"):
            raise check.fail(
                f"{where}.unmapped",
                f"{spec['unmapped']!r}: expected keep (pass through), warn (pass through and report) or reject",
            )
        kw["unmapped"] = spec["unmapped"]

    converters = [k for k in _CONVERTER_KEYS if k in spec]
    if len(converters) > 1:
        raise check.fail(where, f"give at most one of date_format, bucket or multiply (found {', '.join(converters)})")
    if converters:
        conv = kw["converter"] = converters[0]
        if conv == "date_format":
            kw["date_formats"] = _parse_formats(check, f"{where}.date_format", spec["date_format"])
        elif conv == "bucket":
            kw["buckets"] = _parse_buckets(check, f"{where}.bucket", spec["bucket"])
        else:
            factor = spec["multiply"]
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise check.fail(f"{where}.multiply", f"expected a number; got {_kind(factor)}")
            kw["factor"] = Decimal(str(factor))
    if "required" in spec:
        if not isinstance(spec["required"], bool):
            raise check.fail(f"{where}.required", "expected true or false")
        kw["required"] = spec["required"]
    kw["refs"] = tuple(refs)
    return ColumnSpec(**kw)


def _parse_buckets(check: _Checker, where: str, spec: Any) -> tuple[tuple[float | None, str], ...]:
    hint = (
        "expected a list of [upper_bound, label] pairs, ascending, "
        "e.g. [[50, smb], [1000, mid_market], [null, enterprise]]"
    )
    if not isinstance(spec, list) or not spec:
        raise check.fail(where, hint)
    buckets: list[tuple[float | None, str]] = []
    previous: float | None = None
    for i, pair in enumerate(spec):
        if not isinstance(pair, list) or len(pair) != 2:
            raise check.fail(f"{where}[{i}]", hint)
        bound, label = pair
        if bound is None:
            if i != len(spec) - 1:
                raise check.fail(f"{where}[{i}]", "only the last bucket may have no upper bound (null)")
        elif isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise check.fail(f"{where}[{i}]", f"upper bound must be a number or null; got {_kind(bound)}")
        elif previous is not None and bound <= previous:
            raise check.fail(f"{where}[{i}]", f"upper bounds must increase; {bound:g} follows {previous:g}")
        else:
            previous = float(bound)
        buckets.append((None if bound is None else float(bound), check.scalar(label, f"{where}[{i}]")))
    return tuple(buckets)


# --------------------------------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Record:
    line: int
    raw: str
    values: dict[str, str] | None  # None when the row could not be split into the header's columns
    problem: str = ""


@dataclass
class _InputData:
    spec: InputSpec
    header: list[str]
    records: list[_Record]


def _physical_lines(text: str) -> list[str]:
    if "\n" not in text and "\r" in text:  # old Mac line endings
        text = text.replace("\r", "\n")
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _read_input(mapping: Mapping, spec: InputSpec, input_dir: Path) -> _InputData:
    path = input_dir / spec.file
    if not path.is_file():
        present = sorted(p.name for p in input_dir.iterdir()) if input_dir.is_dir() else []
        raise ContractError(
            f"{mapping.display}: inputs.{spec.name}.file: {spec.file} not found in {input_dir}; "
            + (f"files there: {', '.join(present[:20])}" if present else "that folder is missing or empty")
        )
    data = path.read_bytes()
    encoding = "utf-8-sig" if codecs.lookup(spec.encoding).name == "utf-8" else spec.encoding
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise GtmPipelineError(
            f"{spec.file}: line {line}: bytes are not valid {spec.encoding} ({e.reason}); "
            f"set inputs.{spec.name}.encoding in {mapping.display} to the export's encoding (e.g. cp1252)"
        ) from e
    text = text.removeprefix("\ufeff")
    lines = _physical_lines(text)
    # strict: a quote that is never closed is an error (a reject) instead of silently swallowing later rows
    reader = csv.reader(lines, delimiter=spec.delimiter, strict=True)
    header: list[str] | None = None
    records: list[_Record] = []
    consumed = 0
    while True:
        try:
            fields = next(reader)
            problem = ""
        except StopIteration:
            break
        except csv.Error as e:
            fields, problem = None, f"unreadable CSV row ({e}); check the quoting"
        start, consumed = consumed + 1, max(reader.line_num, consumed + 1)
        raw = "".join(lines[start - 1 : consumed]).rstrip("\r\n")
        if fields == []:
            continue  # a blank line is not a row
        if header is None:
            if fields is None:
                raise GtmPipelineError(f"{spec.file}: line {start}: the header cannot be read ({problem})")
            header = fields
            dupes = sorted(c for c, n in Counter(header).items() if n > 1)
            if dupes:
                raise GtmPipelineError(f"{spec.file}: line {start}: duplicate header columns {', '.join(dupes)}")
            continue
        if fields is not None and len(fields) != len(header):
            problem = f"row has {len(fields)} fields; the header has {len(header)}"
        if problem:
            records.append(_Record(start, raw, None, problem))
        else:
            records.append(_Record(start, raw, dict(zip(header, fields))))
    if header is None:
        raise GtmPipelineError(f"{spec.file}: the file is empty; expected a header line with column names")
    return _InputData(spec, header, records)


def _check_columns(mapping: Mapping, data: dict[str, _InputData]) -> None:
    """Every raw column the mapping reads must be in the header of the input it reads from."""
    check = _Checker(mapping.display)
    for out in mapping.outputs:
        refs: list[tuple[str, str, str]] = [(f"{out.where}.filter", out.input, c.column) for c in out.filter]
        refs += [(f"{out.where}.day_from", out.input, c) for c in out.day_from]
        for col in out.columns.values():
            refs += col.refs
        for where, input_name, column in refs:
            header = data[input_name].header
            if column not in header:
                raise check.fail(
                    where,
                    f'unknown column "{column}" in input {input_name} ({data[input_name].spec.file}); '
                    f"its columns: {', '.join(header)}{_near(column, header)}",
                )


def check_inputs(mapping: Mapping, input_dir: Path | str) -> None:
    """Check that the input files exist, decode and have every column the mapping reads (ContractError if not)."""
    input_dir = Path(input_dir)
    _check_columns(mapping, {n: _read_input(mapping, s, input_dir) for n, s in mapping.inputs.items()})


# --------------------------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------------------------
_Lookups = dict[tuple[str, str, str], dict[str, str]]


def _build_lookups(mapping: Mapping, data: dict[str, _InputData]) -> _Lookups:
    lookups: _Lookups = {}
    for out in mapping.outputs:
        for col in out.columns.values():
            lk = col.lookup
            if lk is None or (lk.input, lk.key, lk.value) in lookups:
                continue
            index: dict[str, str] = {}
            first_line: dict[str, int] = {}
            for rec in data[lk.input].records:
                if rec.values is None or rec.values[lk.key] == "":
                    continue
                key, value = rec.values[lk.key], rec.values[lk.value]
                if key in index and index[key] != value:
                    raise GtmPipelineError(
                        f"{data[lk.input].spec.file}: lookup key {lk.key} \"{key}\" appears on lines "
                        f"{first_line[key]} and {rec.line} with different {lk.value} (\"{index[key]}\", \"{value}\"); "
                        f"a lookup needs one value per key (used by {out.where}.columns.{col.target})"
                    )
                index[key], first_line[key] = value, first_line.get(key, rec.line)
            lookups[(lk.input, lk.key, lk.value)] = index
    return lookups


def _number(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _format_decimal(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


def _apply(col: ColumnSpec, row: dict[str, str], lookups: _Lookups) -> tuple[str, str | None, tuple[str, str] | None]:
    """Compute one landing value: (value, error, note). A note counts a value kept under unmapped: warn or a
    lookup miss under missing: warn; the import report lists them."""
    note: tuple[str, str] | None = None
    if col.source == "const":
        return col.const, None, None
    if col.source == "from":
        value = row[col.column]  # type: ignore[index]
    elif col.source == "template":
        value = "".join(lit if name is None else row[name] for lit, name in col.template)
    else:
        lk = col.lookup
        assert lk is not None
        key = row[lk.on]
        if lk.on_map is not None:
            key = lk.on_map.get(key, key)
        if key == "":
            value = ""
        elif key in lookups[(lk.input, lk.key, lk.value)]:
            value = lookups[(lk.input, lk.key, lk.value)][key]
        elif lk.missing == "reject":
            return "", f'{col.label}: "{key}" not found in {lk.input}.{lk.key} (lookup)', None
        else:
            value = ""
            if lk.missing == "warn":
                note = ("without a lookup match, left empty", key)

    if col.value_map is not None:
        if value in col.value_map:
            value = col.value_map[value]
        elif col.default is not None:
            value = col.default
        elif col.unmapped == "reject":
            known = ", ".join(f'"{k}"' for k in col.value_map)
            return "", f'{col.label}: "{value}" is not in the value map (known: {known})', None
        elif col.unmapped == "warn" and value != "":  # an empty value is missing data, not an unknown code
            note = ("not in the value map, kept as-is", value)
    elif col.default is not None and value == "":
        value = col.default

    if value != "" and col.converter == "date_format":
        parsed = None
        for fmt in col.date_formats:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            shown = col.date_formats[0] if len(col.date_formats) == 1 else "any of " + ", ".join(col.date_formats)
            return "", f'{col.label}: "{value}" does not match {shown}', None
        if parsed.tzinfo is not None:  # an offset in the format: land the UTC wall time
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        value = parsed.strftime(LANDING_TIMESTAMP_FORMAT)
    elif value != "" and col.converter == "bucket":
        number = _number(value)
        if number is None:
            return "", f'{col.label}: "{value}" is not a number (bucket)', None
        for bound, label in col.buckets:
            if bound is None or number <= Decimal(str(bound)):
                value = label
                break
        else:
            return "", f'{col.label}: {value} is above the last bucket bound {col.buckets[-1][0]:g} (bucket)', None
    elif value != "" and col.converter == "multiply":
        number = _number(value)
        if number is None:
            return "", f'{col.label}: "{value}" is not a number (multiply)', None
        value = _format_decimal(number * col.factor)  # type: ignore[operator]

    if col.required and value == "":
        return "", f"{col.label}: empty, but required", None
    return value, None, note


def _day(out: OutputSpec, row: dict[str, str]) -> tuple[str | None, str | None]:
    """The landing day of a row: the first non-empty day_from column, else default_day."""
    for column in out.day_from:
        raw = row[column].strip()
        if not raw:
            continue
        parsed: datetime | None = None
        if out.day_formats:
            for fmt in out.day_formats:
                try:
                    parsed = datetime.strptime(raw, fmt)
                    break
                except ValueError:
                    continue
            hint = ", ".join(out.day_formats)
        else:
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                parsed = None
            hint = _ISO_DAY_HINT
        if parsed is None:
            return None, f'day (from {column}): "{raw}" is not a date ({hint})'
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc)
        return parsed.date().isoformat(), None
    if out.default_day is not None:
        return out.default_day, None
    return None, f"day: {', '.join(out.day_from)} all empty and no default_day"


# --------------------------------------------------------------------------------------------------------------
# Running a mapping
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputReport:
    name: str
    file: str
    role: str  # "rows" (feeds outputs) or "lookup" (only read by lookups)
    rows_read: int
    rows_landed: int
    rows_rejected: int


@dataclass(frozen=True)
class OutputReport:
    target: str
    input: str
    primary: bool
    rows_written: int
    files: tuple[str, ...]
    first_day: str | None
    last_day: str | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImportReport:
    mapping: str
    out_dir: Path
    inputs: tuple[InputReport, ...]
    outputs: tuple[OutputReport, ...]
    rows_rejected: int
    files_written: tuple[str, ...]  # relative to out_dir, POSIX separators
    rejects_file: str
    lineage_file: str

    def output(self, target: str) -> OutputReport:
        matches = [o for o in self.outputs if o.target == target]
        if len(matches) != 1:
            raise KeyError(f"{target}: {len(matches)} outputs of mapping {self.mapping} target it")
        return matches[0]

    def summary(self) -> str:
        lines = [f"Imported mapping {self.mapping} into {self.out_dir}: {self.rows_rejected} rows rejected"]
        for i in self.inputs:
            if i.role == "lookup":
                lines.append(f"  input  {i.name} ({i.file}): {i.rows_read} rows read, used for lookups only")
            else:
                lines.append(
                    f"  input  {i.name} ({i.file}): {i.rows_read} rows read, {i.rows_landed} landed, "
                    f"{i.rows_rejected} rejected"
                )
        for o in self.outputs:
            days = f", days {o.first_day}..{o.last_day}" if o.first_day else ""
            primary = " (primary)" if o.primary else ""
            lines.append(
                f"  output {o.target} <- {o.input}{primary}: {o.rows_written} rows in {len(o.files)} files{days}"
            )
            lines += [f"         note: {n}" for n in o.notes]
        lines.append(
            f"  landing files under {self.out_dir}/<source>/<day>/; rejects: {self.rejects_file}; "
            f"lineage: {self.lineage_file}"
        )
        first_days = [o.first_day for o in self.outputs if o.first_day]
        if first_days:
            lines.append(
                f"  earliest landing day {min(first_days)}: set GTM_PIPELINE_START_DATE to it (or earlier) "
                "before loading the pipeline"
            )
        return "\n".join(lines)


@dataclass
class _Landed:
    output: OutputSpec
    day: str
    line: int
    input_file: str
    values: list[str]


@dataclass
class _Reject:
    input_file: str
    line: int
    raw: str
    reason: str
    output: str = ""


@dataclass
class _Run:
    landed: list[_Landed] = field(default_factory=list)
    rejects: list[_Reject] = field(default_factory=list)
    notes: dict[tuple[int, str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))


def _process_input(mapping: Mapping, data: _InputData, lookups: _Lookups, run: _Run) -> tuple[int, int]:
    """Land or reject every row of one input; returns (rows landed, rows rejected)."""
    outputs = mapping.outputs_for(data.spec.name)
    primary = outputs[0]
    landed_rows = rejected_rows = 0
    for rec in data.records:
        if rec.values is None:
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, rec.problem))
            rejected_rows += 1
            continue
        row = rec.values
        excluded = next((why for why in (c.failure(row) for c in primary.filter) if why), None)
        if excluded:
            reason = f"excluded by the filter of its primary output {primary.label}: {excluded}"
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, reason, primary.label))
            rejected_rows += 1
            continue
        pending: list[_Landed] = []
        notes: list[tuple[int, str, str, str]] = []
        errors: list[str] = []
        failed_outputs: list[str] = []
        for out in outputs:
            if out is not primary and any(c.failure(row) for c in out.filter):
                continue
            out_errors: list[str] = []
            day, day_error = _day(out, row)
            if day_error:
                out_errors.append(day_error)
            values: list[str] = []
            for target in out.table.columns:
                col = out.columns.get(target)
                if col is None:
                    values.append("")
                    continue
                value, error, note = _apply(col, row, lookups)
                if error:
                    out_errors.append(error)
                if note:
                    notes.append((out.index, target, note[0], note[1]))
                values.append(value)
            if out_errors:
                errors += [e for e in out_errors if e not in errors]
                failed_outputs.append(out.label)
            else:
                pending.append(_Landed(out, day or "", rec.line, data.spec.file, values))
        if errors:
            run.rejects.append(_Reject(data.spec.file, rec.line, rec.raw, "; ".join(errors), "; ".join(failed_outputs)))
            rejected_rows += 1
            continue
        run.landed += pending
        for index, target, kind, value in notes:
            run.notes[(index, target, kind)][value] += 1
        landed_rows += 1
    return landed_rows, rejected_rows


def _render(table: Table, rows: list[list[str]]) -> tuple[bytes, list[int]]:
    """File bytes and the 1-based line (row number for Parquet) at which each row starts."""
    if table.format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(table.columns)
        starts, line = [], 2
        for values in rows:
            writer.writerow(values)
            starts.append(line)
            line += 1 + sum(v.count("\n") for v in values)  # a quoted value keeps its line breaks
        return buf.getvalue().encode("utf-8"), starts
    if table.format == "jsonl":
        text = "".join(
            json.dumps({c: (v if v != "" else None) for c, v in zip(table.columns, values)}, ensure_ascii=False) + "\n"
            for values in rows
        )
        return text.encode("utf-8"), list(range(1, len(rows) + 1))
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {c: [values[i] if values[i] != "" else None for values in rows] for i, c in enumerate(table.columns)}
    arrow = pa.table(columns, schema=pa.schema([(c, pa.string()) for c in table.columns]))
    sink = io.BytesIO()
    pq.write_table(arrow, sink)
    return sink.getvalue(), list(range(1, len(rows) + 1))


def _csv_bytes(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_atomic(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def run_mapping(
    mapping: Mapping, input_dir: Path | str, out_dir: Path | str, *, overwrite: bool = False
) -> ImportReport:
    """Convert the original files in ``input_dir`` into landing files under ``out_dir``.

    Writes ``<out>/<source>/<day>/<table>.<format>`` per output and day, plus ``<out>/_import/rejects.csv`` and
    ``<out>/_import/lineage.csv`` (both rewritten on each run). Raises ``ContractError`` when an input file is
    missing or lacks a column the mapping reads, ``GtmPipelineError`` for undecodable input or a landing file that
    already exists with different content (pass ``overwrite=True`` to replace it).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    data = {name: _read_input(mapping, spec, input_dir) for name, spec in mapping.inputs.items()}
    _check_columns(mapping, data)
    lookups = _build_lookups(mapping, data)

    run = _Run()
    input_reports: list[InputReport] = []
    for name, spec in mapping.inputs.items():
        if mapping.outputs_for(name):
            landed, rejected = _process_input(mapping, data[name], lookups, run)
            input_reports.append(InputReport(name, spec.file, "rows", len(data[name].records), landed, rejected))
        else:
            bad = [r for r in data[name].records if r.values is None]
            run.rejects += [_Reject(spec.file, r.line, r.raw, f"{r.problem} (lookup input)") for r in bad]
            input_reports.append(InputReport(name, spec.file, "lookup", len(data[name].records), 0, len(bad)))

    # Group landed rows into files: one per (target, day); inside, by output order then input line.
    by_file: dict[str, list[_Landed]] = defaultdict(list)
    for item in run.landed:
        t = item.output.table
        by_file[f"{t.source}/{item.day}/{t.name}.{t.format}"].append(item)
    contents: dict[str, bytes] = {}
    lineage: list[tuple[str, int, str, int]] = []
    for rel in sorted(by_file):
        items = sorted(by_file[rel], key=lambda x: (x.output.index, x.line))
        content, starts = _render(items[0].output.table, [x.values for x in items])
        contents[rel] = content
        lineage += [(rel, start, x.input_file, x.line) for start, x in zip(starts, items)]

    conflicts = [
        rel for rel, content in contents.items()
        if (out_dir / rel).exists() and (out_dir / rel).read_bytes() != content
    ]
    if conflicts and not overwrite:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        raise GtmPipelineError(
            f"{out_dir}: {len(conflicts)} landing files already exist with different content ({shown}); "
            "import into an empty folder, or pass overwrite=True to replace them"
        )

    for rel, content in contents.items():
        _write_atomic(out_dir / rel, content)
    input_order = {spec.file: i for i, spec in enumerate(mapping.inputs.values())}
    rejects = sorted(run.rejects, key=lambda r: (input_order[r.input_file], r.line))
    # One folder per mapping, so two imports into the same landing folder keep their own rejects and lineage.
    rejects_rel = f"{IMPORT_DIR}/{mapping.name}/{REJECTS_FILE}"
    lineage_rel = f"{IMPORT_DIR}/{mapping.name}/{LINEAGE_FILE}"
    _write_atomic(
        out_dir / rejects_rel,
        _csv_bytes(REJECTS_COLUMNS, [(r.input_file, r.line, r.raw, r.reason, r.output) for r in rejects]),
    )
    _write_atomic(out_dir / lineage_rel, _csv_bytes(LINEAGE_COLUMNS, lineage))

    output_reports = []
    for out in mapping.outputs:
        files = tuple(sorted({rel for rel, items in by_file.items() if any(x.output is out for x in items)}))
        days = sorted({x.day for x in run.landed if x.output is out})
        notes = []
        for (index, target, kind), counter in sorted(run.notes.items()):
            if index == out.index:
                top = ", ".join(f'"{v}" x{n}' for v, n in counter.most_common(5))
                notes.append(f"{target}: {sum(counter.values())} values {kind} ({top})")
        output_reports.append(OutputReport(
            target=out.target,
            input=out.input,
            primary=mapping.outputs_for(out.input)[0] is out,
            rows_written=sum(1 for x in run.landed if x.output is out),
            files=files,
            first_day=days[0] if days else None,
            last_day=days[-1] if days else None,
            notes=tuple(notes),
        ))

    # The conservation invariant: every row read is in its primary output or in the rejects file.
    for rep in input_reports:
        if rep.role == "rows":
            primary = next(o for o in output_reports if o.input == rep.name and o.primary)
            if rep.rows_read != primary.rows_written + rep.rows_rejected:
                raise RuntimeError(f"bug: {rep.file}: {rep.rows_read} rows read but {primary.rows_written} landed "
                                   f"in {primary.target} and {rep.rows_rejected} rejected")
    return ImportReport(
        mapping=mapping.name,
        out_dir=out_dir,
        inputs=tuple(input_reports),
        outputs=tuple(output_reports),
        rows_rejected=len(rejects),
        files_written=tuple(sorted(contents)) + (rejects_rel, lineage_rel),
        rejects_file=(out_dir / rejects_rel).as_posix(),
        lineage_file=(out_dir / lineage_rel).as_posix(),
    )


def import_cli(
    mapping_path: Path | str, input_dir: Path | str, out_dir: Path | str, *, overwrite: bool = False
) -> str:
    """Load a mapping, run it and return a short human summary (rows in/out/rejected per output, where files went)."""
    report = run_mapping(load_mapping(mapping_path), input_dir, out_dir, overwrite=overwrite)
    return report.summary()
