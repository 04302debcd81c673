"""Import mapping files, ``contracts/mappings/<name>.yaml``: the models of the YAML, read by the one contract loader
(`gtm_pipeline.contract_loader`), and `load_mapping`. `gtm_pipeline.importer.mapping` runs them.

    name, description, license_note, anchors (holds YAML anchors reused below; ignored)
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

The YAML is read with duplicate keys refused and YAML 1.2 booleans (only true/false), then validated against
``sources.yaml`` (passed as the validation context). Two keys are Python keywords (``from``, ``in``), so those
models are built with `pydantic.create_model`: the field keeps the name the user writes, and the loader's "allowed:"
lists and "did you mean" hints show it.
"""

from __future__ import annotations

import codecs
import difflib
import re
import string
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    PrivateAttr,
    StrictBool,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from gtm_pipeline.config import PROJECT_ROOT, load_settings
from gtm_pipeline.contract_loader import Strict, error_at, validate
from gtm_pipeline.errors import ContractError
from gtm_pipeline.ingest.landing import LandingSpec, Table, load_landing_spec

# crm exports carry naive timestamps in this layout; date_format turns any parsed date into it.
LANDING_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_SOURCES = ("from", "const", "template", "lookup")
_CONVERTERS = ("date_format", "bucket", "multiply")


def did_you_mean(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""




def _kind(obj: Any) -> str:
    if obj is None:
        return "nothing"
    if isinstance(obj, (dict, list)):
        return "a mapping" if isinstance(obj, dict) else "a list"
    return f"{type(obj).__name__} {obj!r}"


def _scalar(obj: Any) -> str:
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
    raise ValueError(f"expected a single value (text or number); got {_kind(obj)}")


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("expected a non-empty string")
    return v


def _some(what: str) -> AfterValidator:
    """Non-empty, checked after the items (a length bound in Field would also fire when an item is invalid)."""
    def check(v: Any) -> Any:
        if not v:
            raise ValueError(f"expected {what}")
        return v
    return AfterValidator(check)


def _value_map(obj: Any) -> Any:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"expected a non-empty mapping of raw value to landed value; got {_kind(obj)}")
    for key in obj:
        # YAML turns true/false and ~ into a boolean and null, and 0.10 into 0.1: the raw text would then never
        # match, so such keys must be quoted.
        if isinstance(key, bool) or key is None or isinstance(key, float):
            raise error_at((str(key),), 'key is read by YAML as a boolean, null or float; quote it ("yes")')
        if not isinstance(key, (str, int)):
            raise error_at((str(key),), f"keys must be text; got {_kind(key)}")
    return {str(k): v for k, v in obj.items()}


def _formats(spec: Any) -> tuple[str, ...]:
    formats = spec if isinstance(spec, list) else [spec]
    if not formats:
        raise ValueError('expected a strptime format such as "%Y-%m-%d" or a list of them')
    for fmt in formats:
        if not isinstance(fmt, str) or "%" not in fmt:
            raise ValueError(f'{fmt!r} is not a strptime format such as "%Y-%m-%d"')
        try:
            datetime(2001, 2, 3, 4, 5, 6).strftime(fmt)
        except ValueError as e:
            raise ValueError(f"{fmt!r} is not a valid strptime format ({e})") from e
    return tuple(formats)


def _template(text: Any) -> tuple[tuple[str, str | None], ...]:
    """``"{a}-{b}"`` -> ``(("", "a"), ("-", None), ("", "b"))``: literal text, or an input column to insert."""
    if not isinstance(text, str) or not text:
        raise ValueError(f'expected a text template such as "{{id}}-{{stage}}"; got {_kind(text)}')
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}; write literal braces as {{{{ and }}}}") from e
    pieces: list[tuple[str, str | None]] = []
    for literal, field_name, fmt_spec, conversion in parsed:
        if literal:
            pieces.append((literal, None))
        if field_name is None:
            continue
        if not field_name or fmt_spec or conversion or any(ch in field_name for ch in ".[]"):
            raise ValueError(f"{text!r}: fields are plain input column names such as {{opportunity_id}}; "
                             "format specs, conversions, attributes and indexes are not supported")
        pieces.append(("", field_name))
    return tuple(pieces)


def _buckets(spec: Any) -> list[tuple[Any, Any]]:
    hint = ("expected a list of [upper_bound, label] pairs, ascending, "
            "e.g. [[50, smb], [1000, mid_market], [null, enterprise]]")
    if not isinstance(spec, list) or not spec:
        raise ValueError(hint)
    previous: float | None = None
    for i, pair in enumerate(spec):
        if not isinstance(pair, list) or len(pair) != 2:
            raise error_at((i,), hint)
        bound = pair[0]
        if bound is None:
            if i != len(spec) - 1:
                raise error_at((i,), "only the last bucket may have no upper bound (null)")
        elif isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise error_at((i,), f"upper bound must be a number or null; got {_kind(bound)}")
        elif previous is not None and bound <= previous:
            raise error_at((i,), f"upper bounds must increase; {bound:g} follows {previous:g}")
        else:
            previous = float(bound)
    return [(None if b is None else float(b), label) for b, label in spec]


def _number(obj: Any) -> Decimal:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        raise ValueError(f"expected a number; got {_kind(obj)}")
    return Decimal(str(obj))


def _iso_day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as e:
        raise ValueError(f"{text!r} is not a day in the form YYYY-MM-DD") from e


Scalar = Annotated[str, BeforeValidator(_scalar)]
Text = Annotated[str, AfterValidator(_not_blank)]
ValueMap = Annotated[dict[str, Scalar], BeforeValidator(_value_map)]
Formats = Annotated[tuple[str, ...], BeforeValidator(_formats)]
RawValues = Annotated[tuple[Scalar, ...], _some("a non-empty list of raw values")]


class InputSpec(Strict):
    """``inputs.<name>``: one original export file."""

    file: Text
    encoding: Text = "utf-8"
    delimiter: str = ","
    description: str = ""
    _name: str = PrivateAttr("")     # its key under inputs, set by the Mapping

    @property
    def name(self) -> str:
        return self._name

    @field_validator("file")
    @classmethod
    def _inside(cls, v: str) -> str:
        if Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"{v!r}: give a path relative to the input folder, inside it")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError as e:
            raise ValueError(f"unknown encoding {v!r}; e.g. utf-8, cp1252, latin-1") from e
        return v

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, v: str) -> str:
        if len(v) != 1 or v in "\"\r\n":
            raise ValueError(f'{v!r}: expected one character such as "," ";" or "\\t"')
        return v


class _ConditionRules(Strict):
    """One filter condition on a raw input column (fields: see `Condition`)."""

    @model_validator(mode="after")
    def _one_test(self) -> _ConditionRules:
        tests = [k for k in ("in", "not_in", "not_empty") if k in self.model_fields_set]
        if len(tests) != 1:
            raise ValueError("give exactly one of in: [..], not_in: [..] or not_empty: true")
        if tests == ["not_empty"] and not self.not_empty:
            raise error_at(("not_empty",), "only not_empty: true is supported")
        return self

    @property
    def op(self) -> str:
        return "in" if getattr(self, "in") else "not_in" if self.not_in else "not_empty"

    @property
    def values(self) -> tuple[str, ...]:
        return getattr(self, "in") or self.not_in

    def failure(self, row: dict[str, str]) -> str | None:
        """None when the row passes, else why it does not."""
        column, op, values = self.column, self.op, self.values
        value = row[column]
        shown = "[" + ", ".join(values) + "]"
        if op == "in" and value not in values:
            return f'{column} "{value}" not in {shown}'
        if op == "not_in" and value in values:
            return f'{column} "{value}" is in not_in {shown}'
        if op == "not_empty" and value.strip() == "":
            return f"{column} is empty"
        return None


Condition = create_model("Condition", __base__=_ConditionRules, __module__=__name__, column=(Text, ...),
                         **{"in": (RawValues, ())}, not_in=(RawValues, ()), not_empty=(StrictBool, False))


class LookupSpec(Strict):
    """``lookup``: column ``value`` of input ``input``, on its row whose ``key`` equals this row's ``on``."""

    input: Text
    key: Text
    value: Text
    on: Text
    on_map: ValueMap = None   # None only when absent (an explicit null is an error)
    missing: Literal["reject", "empty", "warn"] = "reject"   # warn: empty, counted in the import report


class _ColumnRules(Strict):
    """How one landing column is computed: one source, then a value map, then at most one converter (fields: see
    `ColumnSpec`)."""

    _target: str = PrivateAttr("")   # the landing column, set by its OutputSpec
    _source: str = PrivateAttr("")

    @model_validator(mode="after")
    def _combination(self) -> _ColumnRules:
        given = [k for k in type(self).model_fields if k in self.model_fields_set]
        sources = [k for k in given if k in _SOURCES]
        if len(sources) != 1:
            found = f" (found {', '.join(sources)})" if sources else ""
            raise ValueError(f"give exactly one of from, const, template or lookup{found}")
        if sources == ["const"] and len(given) > 1:
            raise error_at((next(k for k in given if k != "const"),), "a const column takes no other keys")
        if "unmapped" in given and "map" not in given:
            raise error_at(("unmapped",), "only applies together with map")
        if "unmapped" in given and "default" in given:
            raise error_at(("unmapped",), "give either default (a value for unmapped input) or unmapped")
        converters = [k for k in given if k in _CONVERTERS]
        if len(converters) > 1:
            raise ValueError(f"give at most one of date_format, bucket or multiply (found {', '.join(converters)})")
        self._source = sources[0]
        return self

    @property
    def target(self) -> str:
        return self._target

    @property
    def source(self) -> str:
        return self._source

    @property
    def column(self) -> str | None:
        return getattr(self, "from")

    @property
    def value_map(self) -> dict[str, str] | None:
        return self.map

    @property
    def converter(self) -> str | None:
        return next((k for k in _CONVERTERS if k in self.model_fields_set), None)

    @property
    def label(self) -> str:
        lookup: LookupSpec | None = self.lookup
        if self.source == "from" and self.column != self.target:
            return f"{self.target} (from {self.column})"
        if lookup is not None:
            return f"{self.target} (lookup {lookup.input}.{lookup.value} on {lookup.on})"
        if self.source == "template":
            return f"{self.target} (template)"
        return self.target

    def reads(self, where: str, input_name: str) -> list[tuple[str, str, str]]:
        """(where in the mapping, input name, column) for each raw column this spec reads, ``where`` naming the
        spec and ``input_name`` the input of its output."""
        lookup: LookupSpec | None = self.lookup
        if lookup is not None:
            return [(f"{where}.lookup.key", lookup.input, lookup.key), (f"{where}.lookup.value", lookup.input,
                    lookup.value), (f"{where}.lookup.on", input_name, lookup.on)]
        pieces: tuple[tuple[str, str | None], ...] = self.template
        if self.source == "template":
            return [(f"{where}.template", input_name, name) for _, name in pieces if name is not None]
        return [(f"{where}.from", input_name, self.column)] if self.source == "from" and self.column else []


# Field order is the YAML's (and that of the loader's "allowed:" list). A default is used only when the key is
# absent, so an explicit null is validated: `const: ~` and `default: ~` mean the empty text, `from: ~` is an error.
ColumnSpec = create_model(
    "ColumnSpec", __base__=_ColumnRules, __module__=__name__,
    **{"from": (Text, None)}, const=(Scalar, ""),
    template=(Annotated[tuple[tuple[str, str | None], ...], BeforeValidator(_template)], ()),
    lookup=(LookupSpec, None), map=(ValueMap, None), default=(Scalar, None),
    unmapped=(Literal["keep", "warn", "reject"], "keep"),   # warn: keep, counted in the import report
    date_format=(Formats, ()),
    bucket=(Annotated[tuple[tuple[float | None, Scalar], ...], BeforeValidator(_buckets)], ()),
    multiply=(Annotated[Decimal, BeforeValidator(_number)], None),
    required=(StrictBool, False))


class OutputSpec(Strict):
    """``outputs[i]``: one landing table of sources.yaml fed by the rows of one input."""

    target: Text
    input: Text
    description: str = ""
    filter: tuple[Condition, ...] = ()
    day_from: tuple[Text, ...] = ()
    day_format: Formats = ()
    default_day: Annotated[Scalar, AfterValidator(_iso_day)] = None   # None only when absent, as in ColumnSpec
    columns: Annotated[dict[str, ColumnSpec], _some("a mapping of landing column to its spec")]
    _table: Table | None = PrivateAttr(None)
    _index: int = PrivateAttr(0)
    _label: str = PrivateAttr("")   # "crm/leads", or "crm/leads (outputs[3])" when a mapping targets a table twice

    @field_validator("target")
    @classmethod
    def _known_table(cls, v: str, info: ValidationInfo) -> str:
        landing: LandingSpec = (info.context or {})["landing"]
        source, _, table_name = v.partition("/")
        if source not in landing.sources:
            known = sorted(landing.sources)
            raise ValueError(f'unknown source "{source}"; known: {", ".join(known)}{did_you_mean(source, known)}')
        tables = sorted(t.name for t in landing.sources[source].tables)
        if table_name not in tables:
            raise ValueError(f'unknown table "{table_name}" in source {source}; known: {", ".join(tables)}'
                             f"{did_you_mean(table_name, tables)}")
        return v

    @field_validator("filter", mode="before")
    @classmethod
    def _one_or_all(cls, v: Any) -> Any:
        # One condition, or a list of them that must all hold. A single one is read as a list of one, so its
        # problems are named filter[0].<field> (the loader finds the allowed fields of a list's items by the index).
        return () if v is None else [v] if isinstance(v, dict) else v

    @field_validator("columns", mode="before")
    @classmethod
    def _landing_columns(cls, v: Any, info: ValidationInfo) -> Any:
        if not isinstance(v, dict) or "target" not in info.data:
            return v
        target = info.data["target"]
        known = sorted((info.context or {})["landing"].table(target).columns)
        for name in v:
            if name not in known:
                raise error_at((str(name),), f"unknown column for {target}; known: {', '.join(known)}"
                                              f"{did_you_mean(str(name), known)}")
        return v

    @model_validator(mode="after")
    def _dated(self, info: ValidationInfo) -> OutputSpec:
        if not self.day_from and self.default_day is None:
            raise ValueError("needs day_from (date columns) or default_day: every landing file belongs to a day")
        self._table = (info.context or {})["landing"].table(self.target)
        for name, col in self.columns.items():
            col._target = name
        return self

    @property
    def table(self) -> Table:
        assert self._table is not None, "set when the output is validated"
        return self._table

    @property
    def index(self) -> int:
        return self._index

    @property
    def label(self) -> str:
        return self._label

    @property
    def where(self) -> str:
        return f"outputs[{self.index}]"

    def reads(self) -> list[tuple[str, str, str]]:
        """(where in the mapping, input name, column) for every raw column this output reads."""
        refs = [(f"{self.where}.filter", self.input, c.column) for c in self.filter]
        refs += [(f"{self.where}.day_from", self.input, c) for c in self.day_from]
        for name, col in self.columns.items():
            refs += col.reads(f"{self.where}.columns.{name}", self.input)
        return refs


class Mapping(Strict):
    """One mapping file; where it was read from comes in the validation context."""

    name: Text
    description: str = ""
    license_note: str = ""
    anchors: Any = None
    inputs: Annotated[dict[str, InputSpec], _some("a mapping of input name to {file, encoding, delimiter}")]
    outputs: Annotated[tuple[OutputSpec, ...], _some("a non-empty list of outputs")]
    _path: Path = PrivateAttr()
    _display: str = PrivateAttr()

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not all(ch.isalnum() or ch in "_-" for ch in v):
            raise ValueError(f"{v!r}: use letters, digits, '_' and '-' only")
        return v

    @model_validator(mode="after")
    def _inputs_declared_and_used(self, info: ValidationInfo) -> Mapping:
        declared = ", ".join(self.inputs)
        for i, out in enumerate(self.outputs):
            if out.input not in self.inputs:
                raise error_at(("outputs", i, "input"), f'unknown input "{out.input}"; declared inputs: {declared}')
            for name, col in out.columns.items():
                lookup: LookupSpec | None = col.lookup
                if lookup is not None and lookup.input not in self.inputs:
                    raise error_at(("outputs", i, "columns", name, "lookup", "input"),
                                    f'unknown input "{lookup.input}"; declared inputs: {declared}')
        used = {o.input for o in self.outputs} | self.lookup_inputs()
        for name in self.inputs:
            if name not in used:
                raise error_at(("inputs", name), "not read by any output or lookup; remove it or use it")
        for name, spec in self.inputs.items():
            spec._name = name
        targets = [o.target for o in self.outputs]
        for i, out in enumerate(self.outputs):
            out._index = i
            out._label = out.target if targets.count(out.target) == 1 else f"{out.target} ({out.where})"
        self._path, self._display = Path(info.context["path"]), info.context["display"]
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def display(self) -> str:
        return self._display

    def outputs_for(self, input_name: str) -> list[OutputSpec]:
        """The outputs fed by one input; the first is its primary output."""
        return [o for o in self.outputs if o.input == input_name]

    def lookup_inputs(self) -> set[str]:
        return {c.lookup.input for o in self.outputs for c in o.columns.values() if c.lookup is not None}


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


def load_mapping(path: Path | str, *, contracts_dir: Path | str | None = None) -> Mapping:
    """Load and strictly validate a mapping file against ``sources.yaml``.

    Unknown keys, unknown target source/table/column, unknown inputs and malformed transforms raise
    ``ContractError`` naming the file, the field and what is allowed. Whether the input files exist and have the
    columns the mapping reads is checked by ``run_mapping`` (or ``check_inputs``), which knows the input folder.
    ``contracts_dir`` holds ``sources.yaml``; by default the configured contracts folder.
    """
    path = Path(path)
    shown = _display(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except OSError as e:
        raise ContractError(f"{shown}: cannot read the mapping file ({e.strerror})") from e
    except yaml.YAMLError as e:
        raise ContractError(f"{shown}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ContractError(f"{shown}: expected a mapping of fields at the top level, got {type(doc).__name__}")
    landing = load_landing_spec(Path(contracts_dir) if contracts_dir is not None else load_settings().contracts_dir)
    return validate(Mapping, doc, shown, context={"landing": landing, "path": path, "display": shown})
