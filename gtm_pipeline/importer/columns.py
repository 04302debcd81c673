"""The models of one output's rows in a mapping file: a filter `Condition`, and the `ColumnSpec` of a landing column
with its `LookupSpec` and `UnitConversion`. The grammar is in `gtm_pipeline.importer.spec`; the values' own rules
in `gtm_pipeline.importer.values`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, StrictBool, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, keys_given
from gtm_pipeline.importer.values import (
    Buckets,
    Formats,
    Multiplier,
    NotNull,
    OptionalScalar,
    OptionalText,
    OptionalValueMap,
    RawValues,
    Scalar,
    Template,
    Text,
    Unit,
    unit_factor,
)

SOURCES = ("from", "const", "template", "lookup")
CONVERTERS = ("date_format", "bucket", "multiply", "convert")


class Condition(Strict):
    """One filter condition on a raw input column: exactly one of ``in``, ``not_in`` or ``not_empty: true``."""

    column: Text
    in_: RawValues = Field((), alias="in")
    not_in: RawValues = ()
    not_empty: StrictBool = False

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = [k for k in keys_given(self) if k in ("in", "not_in", "not_empty")]
        if len(tests) != 1:
            raise ValueError("give exactly one of in: [..], not_in: [..] or not_empty: true")
        if tests == ["not_empty"] and not self.not_empty:
            raise error_at(("not_empty",), "only not_empty: true is supported")
        return self

    @property
    def op(self) -> str:
        return "in" if self.in_ else "not_in" if self.not_in else "not_empty"

    @property
    def values(self) -> tuple[str, ...]:
        return self.in_ or self.not_in

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


class LookupSpec(Strict):
    """``lookup``: column ``value`` of input ``input``, on its row whose ``key`` equals this row's ``on``.

    ``on_map`` holds reviewed aliases (``GTXPro: GTX Pro``) for keys the two files spell differently. A miss is a
    reject naming the nearest key (``missing: reject``), or an empty value counted in the import report (``warn``);
    ``empty`` is for a relation that may be absent (a lead with no deal), never for spelling differences."""

    input: Text
    key: Text
    value: Text
    on: Text
    on_map: OptionalValueMap = None
    missing: Literal["reject", "empty", "warn"] = "reject"


class UnitConversion(Strict):
    """``convert: {from: cents, to: dollars}``: a number given in one unit lands in another of the same dimension
    (money, duration or ratio; the units are `gtm_pipeline.importer.values.UNITS`), multiplied exactly."""

    from_: Unit = Field(alias="from")
    to: Unit

    @model_validator(mode="after")
    def _same_dimension(self) -> UnitConversion:
        unit_factor(self.from_, self.to)  # raises a ValueError naming both units and what the source converts to
        return self

    @property
    def factor(self) -> Decimal:
        return unit_factor(self.from_, self.to)


class ColumnSpec(Strict):
    """How one landing column is computed: one source, then a value map, then at most one converter.

    Field order is the YAML's (and that of the loader's "allowed:" list). A default is used only when the key is
    absent, so an explicit null is validated: `const: ~` and `default: ~` mean the empty text, `from: ~` is an
    error."""

    from_: OptionalText = Field(None, alias="from")
    const: Scalar = ""
    template: Template = ()
    lookup: Annotated[LookupSpec | None, NotNull] = None
    map: OptionalValueMap = None
    default: OptionalScalar = None
    unmapped: Literal["keep", "warn", "reject"] = "keep"   # warn: keep, counted in the import report
    date_format: Formats = ()
    bucket: Buckets = ()
    multiply: Multiplier = None
    convert: Annotated[UnitConversion | None, NotNull] = None
    required: StrictBool = False
    _target: str = PrivateAttr("")   # the landing column, set by its OutputSpec
    _source: str = PrivateAttr("")
    _converter: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _combination(self) -> ColumnSpec:
        given = keys_given(self)
        sources = [k for k in given if k in SOURCES]
        if len(sources) != 1:
            found = f" (found {', '.join(sources)})" if sources else ""
            raise ValueError(f"give exactly one of from, const, template or lookup{found}")
        if sources == ["const"] and len(given) > 1:
            raise error_at((next(k for k in given if k != "const"),), "a const column takes no other keys")
        if "unmapped" in given and "map" not in given:
            raise error_at(("unmapped",), "only applies together with map")
        if "unmapped" in given and "default" in given:
            raise error_at(("unmapped",), "give either default (a value for unmapped input) or unmapped")
        converters = [k for k in given if k in CONVERTERS]
        if len(converters) > 1:
            raise ValueError("give at most one of date_format, bucket, multiply or convert "
                             f"(found {', '.join(converters)})")
        self._source, self._converter = sources[0], (converters[0] if converters else None)
        return self

    @property
    def target(self) -> str:
        return self._target

    @property
    def source(self) -> str:
        return self._source

    @property
    def column(self) -> str | None:
        return self.from_

    @property
    def value_map(self) -> dict[str, str] | None:
        return self.map

    @property
    def converter(self) -> str | None:
        return self._converter

    @property
    def factor(self) -> Decimal | None:
        """What ``multiply`` or ``convert`` multiplies a number by; None for other columns."""
        return self.multiply if self.convert is None else self.convert.factor

    @property
    def label(self) -> str:
        if self.source == "from" and self.column != self.target:
            return f"{self.target} (from {self.column})"
        if self.lookup is not None:
            return f"{self.target} (lookup {self.lookup.input}.{self.lookup.value} on {self.lookup.on})"
        if self.source == "template":
            return f"{self.target} (template)"
        return self.target

    def reads(self, where: str, input_name: str) -> list[tuple[str, str, str]]:
        """(where in the mapping, input name, column) for each raw column this spec reads, ``where`` naming the
        spec and ``input_name`` the input of its output."""
        lookup = self.lookup
        if lookup is not None:
            return [(f"{where}.lookup.key", lookup.input, lookup.key), (f"{where}.lookup.value", lookup.input,
                    lookup.value), (f"{where}.lookup.on", input_name, lookup.on)]
        if self.source == "template":
            return [(f"{where}.template", input_name, name) for _, name in self.template if name is not None]
        return [(f"{where}.from", input_name, self.column)] if self.source == "from" and self.column else []
