"""Computing landing values from one input row: a column's source (``from``, ``const``, ``template``, ``lookup``),
then its value map, then its converter, and the row's landing day. Each returns an error sentence instead of
raising, so the runner can reject the whole row with every reason."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.importer.columns import ColumnSpec, LookupSpec
from gtm_pipeline.importer.read import InputData
from gtm_pipeline.importer.spec import Mapping, OutputSpec
from gtm_pipeline.importer.values import LANDING_TIMESTAMP_FORMAT

_ISO_DAY_HINT = "ISO 8601 such as 2017-03-01 or 2017-03-01 10:00:00; set day_format for other layouts"
# A note counts a value kept under unmapped: warn or a lookup miss under missing: warn: (kind, value).
Note = tuple[str, str]
_LookupId = tuple[str, str, str]   # (input, key column, value column)


@dataclass
class Lookups:
    """Every lookup's index (key -> value), and the nearest key of each missed value, found once per value."""

    indexes: dict[_LookupId, dict[str, str]]
    _near: dict[tuple[_LookupId, str], str | None] = field(default_factory=dict)

    def near(self, ident: _LookupId, key: str) -> str | None:
        if (ident, key) not in self._near:
            close = difflib.get_close_matches(key, list(self.indexes[ident]), n=1, cutoff=0.6)
            self._near[(ident, key)] = close[0] if close else None
        return self._near[(ident, key)]


def _ident(lk: LookupSpec) -> _LookupId:
    return (lk.input, lk.key, lk.value)


def build_lookups(mapping: Mapping, data: dict[str, InputData]) -> Lookups:
    """One index per lookup; a key with two different values is an error (a lookup needs one value per key)."""
    indexes: dict[_LookupId, dict[str, str]] = {}
    for out in mapping.outputs:
        for col in out.columns.values():
            lk = col.lookup
            if lk is None or _ident(lk) in indexes:
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
            indexes[_ident(lk)] = index
    return Lookups(indexes)


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


def apply(col: ColumnSpec, row: dict[str, str], lookups: Lookups) -> tuple[str, str | None, Note | None]:
    """Compute one landing value: (value, error, note); the import report lists the notes."""
    if col.source == "const":
        return col.const, None, None
    value, error, note = _source_value(col, row, lookups)
    if error is None:
        value, error, mapped_note = _mapped(col, value)
        note = note or mapped_note
    if error is None and value != "" and col.converter is not None:
        value, error = _converted(col, value)
    if error is None and col.required and value == "":
        error = f"{col.label}: empty, but required"
    return ("", error, None) if error else (value, None, note)


def _source_value(col: ColumnSpec, row: dict[str, str], lookups: Lookups) -> tuple[str, str | None, Note | None]:
    if col.column is not None:
        return row[col.column], None, None
    if col.source == "template":
        return "".join(lit if name is None else row[name] for lit, name in col.template), None, None
    lk = col.lookup
    assert lk is not None, "the column's one source is a lookup"
    key = row[lk.on]
    if lk.on_map is not None:
        key = lk.on_map.get(key, key)
    if key == "":
        return "", None, None
    index = lookups.indexes[_ident(lk)]
    if key in index:
        return index[key], None, None
    if lk.missing == "reject":
        # Never a silent empty: the reason names the value and, for a spelling difference, the key it is close to
        # and the alias that would fix it (issue 15 §7).
        near = lookups.near(_ident(lk), key)
        hint = (f'; did you mean "{near}"? If it is the same, add "{key}": "{near}" to lookup.on_map'
                if near is not None else "")
        return "", f'{col.label}: "{key}" not found in {lk.input}.{lk.key} (lookup){hint}', None
    return "", None, ("without a lookup match, left empty", key) if lk.missing == "warn" else None


def _mapped(col: ColumnSpec, value: str) -> tuple[str, str | None, Note | None]:
    if col.value_map is None:
        return (col.default if col.default is not None and value == "" else value), None, None
    if value in col.value_map:
        return col.value_map[value], None, None
    if col.default is not None:
        return col.default, None, None
    if col.unmapped == "reject":
        known = ", ".join(f'"{k}"' for k in col.value_map)
        return "", f'{col.label}: "{value}" is not in the value map (known: {known})', None
    if col.unmapped == "warn" and value != "":  # an empty value is missing data, not an unknown code
        return value, None, ("not in the value map, kept as-is", value)
    return value, None, None


def _converted(col: ColumnSpec, value: str) -> tuple[str, str | None]:
    if col.converter == "date_format":
        return _timestamp(col, value)
    number = _number(value)
    if number is None:
        return "", f'{col.label}: "{value}" is not a number ({col.converter})'
    if col.converter == "bucket":
        for bound, label in col.bucket:
            if bound is None or number <= Decimal(str(bound)):
                return label, None
        return "", f"{col.label}: {value} is above the last bucket bound {col.bucket[-1][0]:g} (bucket)"
    factor = col.factor   # multiply, or convert's exact factor between its units
    assert factor is not None, "multiply and convert always have a factor"
    return _format_decimal(number * factor), None


def _timestamp(col: ColumnSpec, value: str) -> tuple[str, str | None]:
    for fmt in col.date_format:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if parsed.tzinfo is not None:  # an offset in the format: land the UTC wall time
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed.strftime(LANDING_TIMESTAMP_FORMAT), None
    shown = col.date_format[0] if len(col.date_format) == 1 else "any of " + ", ".join(col.date_format)
    return "", f'{col.label}: "{value}" does not match {shown}'


def day(out: OutputSpec, row: dict[str, str]) -> tuple[str | None, str | None]:
    """The landing day of a row: the first non-empty day_from column, else default_day."""
    for column in out.day_from:
        raw = row[column].strip()
        if not raw:
            continue
        parsed: datetime | None = None
        if out.day_format:
            for fmt in out.day_format:
                try:
                    parsed = datetime.strptime(raw, fmt)
                    break
                except ValueError:
                    continue
            hint = ", ".join(out.day_format)
        else:
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                parsed = None
            hint = _ISO_DAY_HINT
        if parsed is None:
            return None, f'day (from {column}): "{raw}" is not a date ({hint})'
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC)
        return parsed.date().isoformat(), None
    if out.default_day is not None:
        return out.default_day, None
    return None, f"day: {', '.join(out.day_from)} all empty and no default_day"
