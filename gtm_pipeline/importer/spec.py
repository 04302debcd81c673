"""Import mapping files, ``contracts/mappings/<name>.yaml``: the models of the YAML, read by the one contract loader
(`gtm_pipeline.contract_loader`; `gtm_pipeline.importer.loader.load_mapping` reads a file).
`gtm_pipeline.importer.mapping` runs them.

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
                                       multiply: 12 | convert: {from: cents, to: dollars}
                  and optionally       required: true

Two keys are Python keywords (``from``, ``in``): their fields are ``from_`` and ``in_`` with the keyword as alias,
and the loader's "allowed:" lists and "did you mean" hints show the alias, the key the user writes. The column
models are in `gtm_pipeline.importer.columns`.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Any

from pydantic import PrivateAttr, ValidationInfo, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at
from gtm_pipeline.importer.columns import ColumnSpec, Condition
from gtm_pipeline.importer.values import Formats, OptionalDay, Text, did_you_mean, some
from gtm_pipeline.ingest.landing import LandingSpec, Table


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




class OutputSpec(Strict):
    """``outputs[i]``: one landing table of sources.yaml fed by the rows of one input."""

    target: Text
    input: Text
    description: str = ""
    filter: tuple[Condition, ...] = ()
    day_from: tuple[Text, ...] = ()
    day_format: Formats = ()
    default_day: OptionalDay = None   # None only when absent, as in ColumnSpec
    columns: Annotated[dict[str, ColumnSpec], some("a mapping of landing column to its spec")]
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
    inputs: Annotated[dict[str, InputSpec], some("a mapping of input name to {file, encoding, delimiter}")]
    outputs: Annotated[tuple[OutputSpec, ...], some("a non-empty list of outputs")]
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
                lookup = col.lookup
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
        context = info.context or {}
        self._path, self._display = Path(context["path"]), context["display"]
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

