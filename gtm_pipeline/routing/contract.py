"""Routing rule sets, ``contracts/routing/<name>.yaml`` (spec 002 §4.4 Routing Policy): the models of the YAML, read by
the one contract loader (`gtm_pipeline.contract_loader`), and the functions that load them.
`gtm_pipeline.routing.engine` applies them to records.

```yaml
rule_set: v1                       # unique across contracts/routing
version: "1.0.0"
status: current                    # current | candidate | retired; exactly one rule set is current
owner: RevOps
description: Leads go to an SDR of their region; ...
flag: FF_ROUTING_V1                # optional
rules:                             # tried in order; the first whose pool has capacity left wins
  - name: ae_same_segment_same_region
    applies_to: [opportunity]      # lead | opportunity
    when: {segment: [smb, mid_market], region: [na, latam]}   # every listed field must match; {} matches all
    assign: {team: ae, segment: same, region: same}            # "same" = the record's own value
```

The values of ``when`` and of ``assign`` (team, segment, region) are the enums of the lead, opportunity and owner
entity contracts (`routing_enums`), passed to validation as its context.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.errors import ContractError

if TYPE_CHECKING:
    from gtm_pipeline.routing.assign import Owner, Record

Kind = Literal["lead", "opportunity"]
KINDS = get_args(Kind)
TEAM_FOR_KIND = {"lead": "sdr", "opportunity": "ae"}  # who takes what, unless a rule names the team
CONDITION_FIELDS = ("segment", "region", "industry", "size_band", "channel")
POOL_FIELDS = ("team", "segment", "region", "owners")
SAME = "same"
Status = Literal["current", "candidate", "retired"]
STATUSES = get_args(Status)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _at_least_one(what: str) -> AfterValidator:
    """Non-empty, checked after the items (a length bound in Field would also fire when an item is invalid)."""
    def check(v: Any) -> Any:
        if not v:
            raise ValueError(f"must list at least one {what}")
        return v
    return AfterValidator(check)


def _number_as_text(v: Any) -> Any:
    # YAML reads an unquoted version 1.0 as a number; it is still the version "1.0".
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v




def _context(info: ValidationInfo, key: str) -> Any:
    """What `parse_rule_set` passes along: ``enums`` (`routing_enums`) and ``path`` (the file read)."""
    value = (info.context or {}).get(key)
    if value is None:
        raise ValueError(f"validated without {key!r}: load rule sets with load_rule_set or "
                         f"parse_rule_set(path, routing_enums(contracts_dir))")
    return value


def _enum(info: ValidationInfo, fieldname: str) -> tuple[str, ...]:
    return tuple(_context(info, "enums")[fieldname])


def _one_of(value: object, fieldname: str, allowed: Sequence[str], noun: str) -> str:
    if str(value) in allowed:
        return str(value)
    close = difflib.get_close_matches(str(value), list(allowed), n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    raise ValueError(f"{value!r} is not {noun}; allowed: {', '.join(allowed)}{hint}")


def _values(raw: Any, info: ValidationInfo, or_same: bool = False) -> frozenset[str]:
    """A non-empty list of values of the entity-contract enum the field is named after (``segment: [smb]``)."""
    name = info.field_name or ""
    allowed = _enum(info, name)
    if not isinstance(raw, list) or not raw:
        either = f"{SAME} or " if or_same else ""
        raise ValueError(f"must be {either}a non-empty list of {name} values, e.g. [{', '.join(allowed[:2])}]")
    return frozenset(_one_of(v, name, allowed, f"a {name}") for v in raw)


class Conditions(Strict):
    """``when``: conditions on the record; every field listed must match, and a record without a value does not
    match a condition on that field."""

    segment: frozenset[str] | None = None
    region: frozenset[str] | None = None
    industry: frozenset[str] | None = None
    size_band: frozenset[str] | None = None
    channel: frozenset[str] | None = None

    @field_validator(*CONDITION_FIELDS, mode="before")
    @classmethod
    def _known_values(cls, v: Any, info: ValidationInfo) -> Any:
        return None if v is None else _values(v, info)

    def items(self) -> list[tuple[str, frozenset[str]]]:
        return [(f, v) for f in CONDITION_FIELDS if (v := getattr(self, f)) is not None]


class Pool(Strict):
    """``assign``: which owners may take a matching record (capacity aside)."""

    team: str | None = None                          # None: TEAM_FOR_KIND of the record
    segment: str | frozenset[str] | None = None      # None: any; SAME: the record's own value; else a set of values
    region: str | frozenset[str] | None = None
    owners: Annotated[frozenset[Name], _at_least_one("owner id, e.g. [U001, U002]")] | None = None

    @field_validator("team")
    @classmethod
    def _known_team(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else _one_of(v, "team", _enum(info, "team"), "an owner team")

    @field_validator("segment", "region", mode="before")
    @classmethod
    def _same_or_values(cls, v: Any, info: ValidationInfo) -> Any:
        return v if v is None or v == SAME else _values(v, info, or_same=True)


class Rule(Strict):
    name: Name
    description: str = ""
    applies_to: Annotated[tuple[Kind, ...], _at_least_one(f"record kind: {', '.join(KINDS)}")]
    when: Conditions = Conditions()
    assign: Pool = Pool()

    @model_validator(mode="after")
    def _team_takes_its_kinds(self) -> Rule:
        team = self.assign.team
        wrong = [k for k in self.applies_to if team is not None and TEAM_FOR_KIND[k] != team]
        if wrong:
            raise error_at(("assign", "team"), f"{team!r} cannot take {wrong[0]}s: {wrong[0]}s go to "
                                                f"{TEAM_FOR_KIND[wrong[0]]} (spec 002 §4.4); split the rule by "
                                                "applies_to")
        return self

    @property
    def team(self) -> str | None:
        return self.assign.team

    @property
    def segment(self) -> str | frozenset[str] | None:
        return self.assign.segment

    @property
    def region(self) -> str | frozenset[str] | None:
        return self.assign.region

    @property
    def owners(self) -> frozenset[str] | None:
        return self.assign.owners

    def matches(self, record: Record) -> bool:
        if record.kind not in self.applies_to:
            return False
        return all(record.attrs.get(f) in allowed for f, allowed in self.when.items())

    def admits(self, owner: Owner, record: Record) -> bool:
        """Is ``owner`` in this rule's pool for ``record`` (capacity aside)?"""
        if not owner.active or owner.team != (self.team or TEAM_FOR_KIND[record.kind]):
            return False
        if self.owners is not None and owner.owner_id not in self.owners:
            return False
        for attr in ("segment", "region"):
            want = getattr(self, attr)
            have = getattr(owner, attr)
            if want is None:
                continue
            if want == SAME:
                if record.attrs.get(attr) is None or have != record.attrs.get(attr):
                    return False
            elif have not in want:
                return False
        return True


class RuleSet(Strict):
    """One ``contracts/routing/<name>.yaml``; the file it was read from comes in the validation context."""

    rule_set: Name
    version: Annotated[str, BeforeValidator(_number_as_text), Field(min_length=1)]
    status: Status
    owner: Name
    description: Annotated[str, StringConstraints(strip_whitespace=True)] = ""
    flag: str | None = None
    rules: Annotated[tuple[Rule, ...], _at_least_one("rule; rules are tried in order")]
    _path: Path = PrivateAttr()

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        seen: set[str] = set()
        for i, r in enumerate(rules):
            if r.name in seen:
                raise error_at((i, "name"), f"{r.name!r} is used twice; rule names must be unique")
            seen.add(r.name)
        return rules

    @model_validator(mode="after")
    def _read_from(self, info: ValidationInfo) -> RuleSet:
        self._path = Path(_context(info, "path"))
        return self

    @property
    def path(self) -> Path:
        return self._path

    @property
    def name(self) -> str:
        return self.rule_set

    @property
    def where(self) -> str:
        return f"contracts/routing/{self.path.name}"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def routing_enums(contracts_dir: Path) -> dict[str, tuple[str, ...]]:
    """Allowed values of the condition fields and of ``team``, from the lead, opportunity and owner contracts."""
    # Local: the entity contracts load pandas and Dagster (1.2 s); the rule-set loader stays light for the CLI.
    from gtm_pipeline.clean.contract import load_entity_contracts

    contracts = load_entity_contracts(contracts_dir)
    out: dict[str, tuple[str, ...]] = {}
    for fieldname in (*CONDITION_FIELDS, "team"):
        values: list[str] = []
        for ent in ("opportunity", "lead", "owner"):
            col = contracts[ent].columns.get(fieldname) if ent in contracts else None
            if col is not None and col.type == "enum":
                values.extend(v for v in col.values if v not in values)
        out[fieldname] = tuple(values)
    return out


def parse_rule_set(path: Path, enums: Mapping[str, Sequence[str]]) -> RuleSet:
    """Load and validate one rule-set file; a problem raises ContractError naming the file and the field."""
    return load(RuleSet, path, f"contracts/routing/{path.name}", context={"enums": enums, "path": path})


@lru_cache(maxsize=32)
def _cached(path_str: str, mtime: float, contracts_dir: str) -> RuleSet:
    return parse_rule_set(Path(path_str), routing_enums(Path(contracts_dir)))


def load_rule_set(path: Path, contracts_dir: Path) -> RuleSet:
    """One rule set (validated against the entity contracts' enums), e.g. ``contracts/routing/rules_v2.yaml``."""
    path = Path(path)
    if not path.exists():
        raise ContractError(f"{path}: no such rule-set file; rule sets live in contracts/routing/*.yaml")
    return _cached(str(path), path.stat().st_mtime, str(contracts_dir))


def load_rule_sets(contracts_dir: Path) -> dict[str, RuleSet]:
    folder = contracts_dir / "routing"
    out: dict[str, RuleSet] = {}
    for f in sorted(folder.glob("*.yaml")):
        rs = load_rule_set(f, contracts_dir)
        if rs.name in out:
            raise ContractError(f"{rs.where}: rule_set {rs.name!r} is also declared in {out[rs.name].where}")
        out[rs.name] = rs
    if not out:
        raise ContractError(f"{folder}: no rule sets found (expected contracts/routing/<name>.yaml)")
    return out


def current_rule_set(contracts_dir: Path) -> RuleSet:
    """The rule set with ``status: current`` (exactly one must be)."""
    sets = load_rule_sets(contracts_dir)
    cur = [rs for rs in sets.values() if rs.status == "current"]
    if len(cur) != 1:
        raise ContractError(f"contracts/routing: exactly one rule set must have status: current, found "
                            f"{[rs.where for rs in cur] or 'none'}")
    return cur[0]
