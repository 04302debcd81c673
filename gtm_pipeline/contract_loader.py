"""One loader for the YAML contracts: a pydantic v2 model per kind (``extra="forbid"``), and one function that turns a
`pydantic.ValidationError` into the project's message style::

    contracts/experiments/lead_form.yaml: arms[1].weigth: unknown field; allowed: name, weight; did you mean "weight"?

A model declares the shape (fields, types, literals, bounds); checks that need more than one field live in the
model's validators and raise ``ValueError`` with a sentence, which this module prefixes with the file and the field.
New kinds are written on it; the older hand-written validators move to it with the house redesign.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from gtm_pipeline.errors import ContractError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every contract model: unknown fields are errors, and models are immutable once loaded.

    A YAML key that is a Python keyword (``from``, ``in``) is a field with an alias: ``from_: str =
    Field(alias="from")``. YAML is validated by alias only (`validate`), so ``from_`` in a file is an unknown field;
    Python code may construct models by either name. Messages name the alias, the key the user wrote."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


def read_yaml(path: Path, where: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ContractError(f"{where}: file not found") from e
    except UnicodeDecodeError as e:
        raise ContractError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ContractError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from e


def load(model: type[M], path: Path, where: str, context: dict | None = None) -> M:
    """Read and validate one YAML file as ``model``; ``where`` names it in messages (a repo-relative path)."""
    doc = read_yaml(path, where)
    if not isinstance(doc, dict):
        raise ContractError(f"{where}: expected a mapping of fields at the top level, got "
                            f"{type(doc).__name__}")
    return validate(model, doc, where, context)


def validate(model: type[M], doc: Any, where: str, context: dict | None = None) -> M:
    try:
        # by alias only: the file must say `from`, never the Python name `from_`
        return model.model_validate(doc, context=context, by_alias=True, by_name=False)
    except ValidationError as e:
        raise ContractError(message(e, model, where)) from None


def message(e: ValidationError, model: type[BaseModel], where: str) -> str:
    """The first problem in the project's style (and how many more there are)."""
    errors = e.errors(include_url=False)
    # An unknown field first: a typo ("ownr") also makes the real field missing, and the typo is the cause.
    errors.sort(key=lambda err: err["type"] != "extra_forbidden")
    first = errors[0]
    text = f"{where}: {_problem(first, model)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this file)"
    return text


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _problem(err: ErrorDetails, model: type[BaseModel]) -> str:
    # pydantic puts a model validator's error at the model's location and a tagged-union branch name in loc: drop
    # the names that are not fields, and the "[key]" marker of a bad mapping key (the key itself is named before it).
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p == "[key]")))
    kind, where = err["type"], _path(loc)
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = _close(str(loc[-1]), allowed)
        return f"{where}: unknown field; allowed: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return f"{where}: is required"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",") if c.strip()]
        got = err.get("input")
        return f"{where}: {got!r} is not allowed; allowed: {', '.join(choices)}" + _close(str(got), choices)
    if kind == "value_error":
        msg = str(err.get("ctx", {}).get("error", err["msg"]))
        return f"{where}: {msg}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {err['msg'][0].lower() + err['msg'][1:]}{shown}"


def error_at(loc: tuple[str | int, ...], sentence: str) -> ValidationError:
    """A model validator's problem placed below the model it validates: raised with loc ``("assign", "team")`` from a
    rule's validator, the message names ``rules[0].assign.team``, the entry to fix (pydantic prefixes the model's own
    place, `load` adds the file). The sentence is passed as context, never as a template, so braces in it are safe."""
    return ValidationError.from_exception_data("contract", [InitErrorDetails(
        type=PydanticCustomError("value_error", "{sentence}", {"sentence": sentence}), loc=loc, input=None)])


def _close(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model found by walking ``loc`` from ``model`` (lists, dicts and optionals unwrapped)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return []
    current = _unwrap(current, None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return yaml_names(current)
    return []


def yaml_names(model: type[BaseModel]) -> list[str]:
    """The keys a file writes for ``model``'s fields, in declaration order: the alias where a field has one."""
    return [f.alias or name for name, f in model.model_fields.items()]


def keys_given(obj: BaseModel) -> list[str]:
    """The keys the file gave for ``obj`` (aliases where fields have one), in declaration order: what a model
    validator names when it checks which of several keys were written."""
    fields = type(obj).model_fields
    return [f.alias or name for name, f in fields.items() if name in obj.model_fields_set]


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    """The field a YAML key names (its alias, else its name), or None."""
    return next((f for name, f in model.model_fields.items() if (f.alias or name) == key), None)


def _unwrap(tp: Any, part: Any) -> Any:
    """One step down a type: a model's field (``part`` a name), a list's item or a dict's value (``part`` an index or
    key); Optional/Union unwrap to their model member. ``part`` None only unwraps."""
    for _ in range(5):
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in members if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else (members[0] if members else None)
            continue
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        break
    if part is None:
        return tp
    if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
        f = _field(tp, part)
        return f.annotation if f is not None else None
    origin = typing.get_origin(tp)
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        args = typing.get_args(tp)
        return args[0] if args else None
    if origin is dict or origin is typing.Mapping:
        args = typing.get_args(tp)
        return args[1] if len(args) == 2 else None
    return None
