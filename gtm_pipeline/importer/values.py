"""The values of a mapping file (``contracts/mappings/<name>.yaml``) below its models: YAML scalars as landed text,
value maps, strptime formats, templates, buckets, numbers and units, each an annotated type whose validator says
what is wrong in a sentence (the contract loader adds the file and the field). The models are in
`gtm_pipeline.importer.spec`."""

from __future__ import annotations

import difflib
import string
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator

from gtm_pipeline.contract_loader import error_at

# crm exports carry naive timestamps in this layout; date_format turns any parsed date into it.
LANDING_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def did_you_mean(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f'; did you mean "{close[0]}"?' if close else ""



def kind_of(obj: Any) -> str:
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
    raise ValueError(f"expected a single value (text or number); got {kind_of(obj)}")


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("expected a non-empty string")
    return v


def some(what: str) -> AfterValidator:
    """Non-empty, checked after the items (a length bound in Field would also fire when an item is invalid)."""
    def check(v: Any) -> Any:
        if not v:
            raise ValueError(f"expected {what}")
        return v
    return AfterValidator(check)


def _value_map(obj: Any) -> Any:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"expected a non-empty mapping of raw value to landed value; got {kind_of(obj)}")
    for key in obj:
        # YAML turns true/false and ~ into a boolean and null, and 0.10 into 0.1: the raw text would then never
        # match, so such keys must be quoted.
        if isinstance(key, bool) or key is None or isinstance(key, float):
            raise error_at((str(key),), 'key is read by YAML as a boolean, null or float; quote it ("yes")')
        if not isinstance(key, (str, int)):
            raise error_at((str(key),), f"keys must be text; got {kind_of(key)}")
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
        raise ValueError(f'expected a text template such as "{{id}}-{{stage}}"; got {kind_of(text)}')
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
            raise error_at((i,), f"upper bound must be a number or null; got {kind_of(bound)}")
        elif previous is not None and bound <= previous:
            raise error_at((i,), f"upper bounds must increase; {bound:g} follows {previous:g}")
        else:
            previous = float(bound)
    return [(None if b is None else float(b), label) for b, label in spec]


def number(obj: Any) -> Decimal:
    if isinstance(obj, bool) or not isinstance(obj, (int, float)):
        raise ValueError(f"expected a number; got {kind_of(obj)}")
    return Decimal(str(obj))


def iso_day(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as e:
        raise ValueError(f"{text!r} is not a day in the form YYYY-MM-DD") from e


Scalar = Annotated[str, BeforeValidator(_scalar)]
Text = Annotated[str, AfterValidator(_not_blank)]
ValueMap = Annotated[dict[str, Scalar], BeforeValidator(_value_map)]
Formats = Annotated[tuple[str, ...], BeforeValidator(_formats)]
RawValues = Annotated[tuple[Scalar, ...], some("a non-empty list of raw values")]



def _not_null(v: Any) -> Any:
    # A default is used only when the key is absent, so an explicit null reaches here: it is a mistake, not "unset".
    if v is None:
        raise ValueError("expected a value; got null (remove the key to leave it unset)")
    return v


NotNull = BeforeValidator(_not_null)
# None only when the key is absent (an explicit null is validated: `from: ~` is an error, `default: ~` and
# `default_day: ~` go through the scalar rule, i.e. the empty text).
OptionalText = Annotated[str | None, NotNull, AfterValidator(_not_blank)]
OptionalScalar = Annotated[str | None, BeforeValidator(_scalar)]
OptionalDay = Annotated[str | None, BeforeValidator(_scalar), AfterValidator(iso_day)]
OptionalValueMap = Annotated[dict[str, Scalar] | None, BeforeValidator(_value_map)]
Template = Annotated[tuple[tuple[str, str | None], ...], BeforeValidator(_template)]
Buckets = Annotated[tuple[tuple[float | None, Scalar], ...], BeforeValidator(_buckets)]
Multiplier = Annotated[Decimal | None, BeforeValidator(number)]

# Units a column can be converted between (``convert: {from: cents, to: dollars}``): each is its factor to the
# base unit of its dimension, so a conversion multiplies exactly (Decimal) by from/to and cannot cross dimensions.
# Money units are currency-agnostic: "dollars" is the whole currency unit, the landing currency column says which.
Unit = Literal["cents", "dollars", "thousands", "millions", "milliseconds", "seconds", "minutes", "hours", "days",
               "weeks", "basis_points", "percent", "fraction"]
UNITS: dict[str, tuple[str, Decimal]] = {
    "cents": ("money", Decimal("0.01")), "dollars": ("money", Decimal(1)),
    "thousands": ("money", Decimal(1000)), "millions": ("money", Decimal(1_000_000)),
    "milliseconds": ("duration", Decimal("0.001")), "seconds": ("duration", Decimal(1)),
    "minutes": ("duration", Decimal(60)), "hours": ("duration", Decimal(3600)), "days": ("duration", Decimal(86400)),
    "weeks": ("duration", Decimal(604800)),
    "basis_points": ("ratio", Decimal("0.0001")), "percent": ("ratio", Decimal("0.01")),
    "fraction": ("ratio", Decimal(1)),
}


def unit_factor(source: str, target: str) -> Decimal:
    """What a value in ``source`` units is multiplied by to be in ``target`` units (ValueError across dimensions)."""
    (source_dim, source_factor), (target_dim, target_factor) = UNITS[source], UNITS[target]
    if source_dim != target_dim:
        same = ", ".join(u for u in get_args(Unit) if UNITS[u][0] == source_dim and u != source)
        raise ValueError(f"cannot convert {source} ({source_dim}) to {target} ({target_dim}); "
                         f"{source} converts to {same}")
    if source == target:
        raise ValueError(f"from and to are both {source}; remove convert")
    return source_factor / target_factor
