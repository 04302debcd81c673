"""Entity contracts (`contracts/entities/<entity>.yaml`): the YAML shape (pydantic models, one loader) and the runtime
objects the clean stage compiles to SQL (`gtm_pipeline.clean.rules`).

A contract states, per column: type, required, enum (with accepted spellings), range, unique, references, text hygiene
(``max_length``, control characters) and per rule a break action (docs/contracts.md). Row checks are boolean
expressions compiled by `gtm_pipeline.expressions` from a parsed tree with an allow-list; nothing in a contract is
ever evaluated as Python.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.errors import ContractError
from gtm_pipeline.expressions import Expression, compile_assertion

TYPES = ("string", "integer", "decimal", "boolean", "date", "timestamp", "enum")
TypeName = Literal["string", "integer", "decimal", "boolean", "date", "timestamp", "enum"]
# Rule kinds, in the order a row's violations are listed (its reason and its main rule follow this order).
RULE_KINDS = ("type", "required", "enum", "range", "max_length", "control_chars", "unique", "references", "row_check")
RuleName = Literal["type", "required", "enum", "range", "max_length", "control_chars", "unique", "references"]

# Break actions, named after what they do (docs/contracts.md "Break actions").
# Final: each is its own Literal type, so it is a valid `Action` below.
QUARANTINE: Final = "quarantine_and_incident"  # enum integrity: quarantine record; open incident
MISSING_OWNER: Final = "quarantine_missing_owner"  # missing keys: write to quarantine.missing_owner; route to repair
BLOCK_PUBLISH: Final = "block_publish_and_notify_owner"  # out of range: block publish; notify owner
REJECT_DUPLICATE: Final = "reject_duplicate"  # a second copy of a key goes to raw.rejects with where the first is
WARN: Final = "warn"  # counted and shown in the check; the row stays clean
BREAK_ACTIONS = (QUARANTINE, MISSING_OWNER, BLOCK_PUBLISH, REJECT_DUPLICATE, WARN)
Action = Literal["quarantine_and_incident", "quarantine_missing_owner", "block_publish_and_notify_owner",
                 "reject_duplicate", "warn"]
# Where a row goes when it broke several rules: the strongest action wins.
PRECEDENCE = (REJECT_DUPLICATE, BLOCK_PUBLISH, QUARANTINE, MISSING_OWNER, WARN)

DEFAULT_ACTIONS = {
    "type": QUARANTINE, "required": QUARANTINE, "enum": QUARANTINE, "range": BLOCK_PUBLISH,
    "max_length": QUARANTINE, "control_chars": QUARANTINE,
    "unique": REJECT_DUPLICATE, "references": WARN, "row_check": QUARANTINE,
}
# Every string column gets the hygiene rules by default: a 5,000,000-character email or a NUL byte in a name is a
# broken export, not a value. 1,000 characters is far above any field the sources send; a column may raise it.
DEFAULT_MAX_LENGTH = 1000
_SLUG = re.compile(r"[^a-z0-9+]+")


def slug(value: str) -> str:
    """The spelling-insensitive form used to match enum values: 'Paid Search', 'paid-search' -> 'paid_search'."""
    return _SLUG.sub("_", value.strip().lower()).strip("_")


# ---- the YAML shape -------------------------------------------------------------------------------------------------

class Bounds(Strict):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _pair(cls, body: object) -> object:
        # `[20000, 30000]` means {min: 20000, max: 30000}; null leaves that side open.
        if isinstance(body, list):
            if len(body) != 2:
                raise ValueError(f"a range as a list is [min, max], got {len(body)} values")
            return {"min": body[0], "max": body[1]}
        return body

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        _check_bounds(self.min, self.max)
        return self


def _check_bounds(low: float | None, high: float | None) -> None:
    if low is None and high is None:
        raise ValueError("give min, max or both, e.g. {min: 0, max: 10}")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min {low} is greater than max {high}")


class RangeSpec(Strict):
    """``{min, max}``, or one range per value of another column:
    ``{by: product, ranges: {"GTK 500": [20000, 30000]}, default: [1, 10000]}`` (values not listed take
    ``default``; without it they are not checked). The other column's value is matched exactly, after typing."""

    min: float | None = None
    max: float | None = None
    by: str | None = Field(default=None, min_length=1)
    ranges: dict[str, Bounds] | None = Field(default=None, min_length=1)
    default: Bounds | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RangeSpec:
        if self.by is None:
            if self.ranges is not None or self.default is not None:
                raise ValueError("ranges/default need by: <column> (the column whose value picks the range)")
            _check_bounds(self.min, self.max)
        else:
            if self.min is not None or self.max is not None:
                raise ValueError("with by, give the range of unlisted values as default: [min, max], not min/max")
            if not self.ranges:
                raise error_at(("ranges",), f"must map values of {self.by!r} to [min, max], "
                                            'e.g. {"GTK 500": [20000, 30000]}')
        return self


class ColumnSpec(Strict):
    type: TypeName
    required: bool = False
    values: list[str] | None = Field(default=None, min_length=1)
    aliases: dict[str, str] | None = None
    range: RangeSpec | None = None
    unique: bool = False
    references: str | None = Field(default=None, pattern=r"^[^.]+\.[^.]+$")
    max_length: int | None = Field(default=None, ge=1)
    on_fail: dict[RuleName, Action] = Field(default_factory=dict)
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, body: object) -> object:
        return {"type": body} if isinstance(body, str) else body  # `size: integer` means {type: integer}

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.type == "enum":
            if not self.values:
                raise ValueError("an enum needs a non-empty list of allowed values (values: [a, b])")
            for alias, canonical in (self.aliases or {}).items():
                if canonical not in self.values:
                    raise ValueError(f"aliases.{alias} maps to {canonical!r}, which is not an allowed value; "
                                     f"allowed: {', '.join(self.values)}")
        elif self.values is not None or self.aliases is not None:
            raise ValueError("values/aliases are only allowed on type: enum")
        if self.range is not None and self.type not in ("integer", "decimal"):
            raise ValueError(f"range applies to integer or decimal columns, not {self.type}")
        if self.max_length is not None and self.type != "string":
            raise ValueError(f"max_length applies to string columns, not {self.type}")
        for rule, act in self.on_fail.items():
            if act == REJECT_DUPLICATE and rule != "unique":
                raise ValueError(f"on_fail.{rule}: {REJECT_DUPLICATE} is the action of a second copy of a key "
                                 f"(on_fail.unique); a broken {rule} rule quarantines, blocks, routes or warns")
        return self


class RowCheckSpec(Strict):
    name: str = Field(min_length=1)
    assert_: str = Field(alias="assert", min_length=1)
    on_fail: Action = QUARANTINE
    description: str = ""


class EntitySpec(Strict):
    entity: str = Field(min_length=1)
    version: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    description: str = Field(min_length=1)
    grain: str = ""
    key: list[str] = Field(default_factory=list)
    event_time: str | None = None
    late_after_days: int | None = Field(default=None, ge=0)
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    row_checks: list[RowCheckSpec] = Field(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: object) -> object:
        return str(v) if isinstance(v, (int, float)) else v  # `version: 2` is as good as "2"

    @field_validator("entity")
    @classmethod
    def _matches_file(cls, v: str, info: ValidationInfo) -> str:
        stem = (info.context or {}).get("stem")
        if stem is not None and v != stem:
            raise ValueError(f"{v!r} must match the file name {stem!r}")
        return v

    @model_validator(mode="after")
    def _columns_exist(self) -> EntitySpec:
        for k in self.key:
            if k not in self.columns:
                raise ValueError(f"key names unknown column {k!r}; known: {', '.join(self.columns)}")
        for name, col in self.columns.items():
            if col.range is not None and col.range.by is not None:
                _check_range_by(name, col.range, self.columns)
        et = self.event_time
        if et is not None and (et not in self.columns or self.columns[et].type not in ("timestamp", "date")):
            raise ValueError(f"event_time {et!r} must be a timestamp or date column of this contract")
        return self


def _check_range_by(name: str, rng: RangeSpec, columns: dict[str, ColumnSpec]) -> None:
    by = rng.by
    assert by is not None  # called for keyed ranges only
    where = ("columns", name, "range", "by")
    if by not in columns or by == name:
        known = [c for c in columns if c != name]
        hint = difflib.get_close_matches(by, known, n=1)
        raise error_at(where, f"{by!r} is not another column of this contract; known: {', '.join(known)}"
                              + (f'; did you mean "{hint[0]}"?' if hint else ""))
    other = columns[by]
    if other.type not in ("string", "enum"):
        raise error_at(where, f"{by!r} is {other.type}; a range can be picked by a string or enum column only")
    if other.type == "enum":
        for value in rng.ranges or {}:
            if value not in (other.values or []):
                raise error_at(("columns", name, "range", "ranges", value),
                               f"{value!r} is not a value of {by!r}; allowed: {', '.join(other.values or [])}")


# ---- the runtime objects ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    values: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # slug(alias) -> canonical
    min: float | None = None  # with range_by: the default range of values not in ranges
    max: float | None = None
    range_by: str | None = None  # the column whose value picks the range (contract `range.by`)
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()  # (value of range_by, min, max)
    unique: bool = False
    references: str | None = None  # "entity.column"
    max_length: int | None = None  # string columns: DEFAULT_MAX_LENGTH unless the contract says otherwise
    on_fail: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def action(self, rule: str) -> str:
        return self.on_fail.get(rule, DEFAULT_ACTIONS[rule])

    @property
    def sql_type(self) -> str:
        return {"string": "VARCHAR", "enum": "VARCHAR", "integer": "BIGINT", "decimal": "DOUBLE",
                "boolean": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP"}[self.type]


@dataclass(frozen=True)
class RowCheck:
    name: str
    text: str
    expression: Expression
    action: str
    description: str = ""


@dataclass(frozen=True)
class EntityContract:
    path: Path
    entity: str
    version: str
    owner: str
    description: str
    grain: str
    key: tuple[str, ...]
    columns: dict[str, Column]
    row_checks: tuple[RowCheck, ...]
    event_time: str | None = None
    late_after_days: int | None = None

    @property
    def where(self) -> str:
        return f"contracts/entities/{self.path.name}"

    def rules_of_kind(self, kind: str) -> list[Column]:
        return [c for c in self.columns.values() if (
            (kind == "required" and c.required) or (kind == "enum" and c.type == "enum")
            or (kind == "range" and (c.min is not None or c.max is not None or bool(c.ranges)))
            or (kind == "unique" and c.unique) or (kind == "references" and c.references)
            or (kind == "type" and c.type not in ("string", "enum"))
            or (kind in ("max_length", "control_chars") and c.type == "string"))]

    def actions_in_use(self) -> set[str]:
        acts = {c.action(k) for k in RULE_KINDS if k != "row_check" for c in self.rules_of_kind(k)}
        acts |= {rc.action for rc in self.row_checks}
        if self.key:
            acts.add(REJECT_DUPLICATE)
        return acts


def _column(name: str, spec: ColumnSpec) -> Column:
    rng = spec.range
    bounds = (rng.default if rng.by else rng) if rng else None
    return Column(name=name, type=spec.type, required=spec.required, values=tuple(spec.values or ()),
                  aliases={slug(a): c for a, c in (spec.aliases or {}).items()},
                  min=bounds.min if bounds else None, max=bounds.max if bounds else None,
                  range_by=rng.by if rng else None,
                  ranges=tuple((k, b.min, b.max) for k, b in (rng.ranges or {}).items()) if rng else (),
                  unique=spec.unique, references=spec.references,
                  max_length=(spec.max_length or DEFAULT_MAX_LENGTH) if spec.type == "string" else None,
                  on_fail={rule: act for rule, act in spec.on_fail.items()}, description=spec.description)


def parse_entity_contract(path: Path) -> EntityContract:
    where = f"contracts/entities/{path.name}"
    spec = load(EntitySpec, path, where, context={"stem": path.stem})
    columns = {name: _column(name, c) for name, c in spec.columns.items()}
    checks = tuple(
        RowCheck(name=rc.name, text=rc.assert_, action=rc.on_fail, description=rc.description,
                 expression=compile_assertion(rc.assert_, columns.keys(), where=f"{where}: row_checks[{i}].assert"))
        for i, rc in enumerate(spec.row_checks))
    return EntityContract(path=path, entity=spec.entity, version=spec.version, owner=spec.owner,
                          description=spec.description.strip(), grain=spec.grain, key=tuple(spec.key),
                          columns=columns, row_checks=checks, event_time=spec.event_time,
                          late_after_days=spec.late_after_days)


@lru_cache(maxsize=64)
def _cached(path_str: str, mtime: float) -> EntityContract:
    return parse_entity_contract(Path(path_str))


def load_entity_contracts(contracts_dir: Path) -> dict[str, EntityContract]:
    folder = contracts_dir / "entities"
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ContractError(f"{folder}: no entity contracts found (expected one <entity>.yaml per entity)")
    out = {}
    for f in files:
        c = _cached(str(f), f.stat().st_mtime)
        out[c.entity] = c
    for c in out.values():
        for col in c.columns.values():
            if col.references:
                ent, rcol = col.references.split(".")
                if ent not in out or rcol not in out[ent].columns:
                    raise ContractError(f"{c.where}: columns.{col.name}.references: {col.references!r} does not "
                                        f"name a column of another contract")
    return out
