"""Entity contracts (`contracts/entities/<entity>.yaml`): loading, validation, SQL typing and the pandera schema.

A contract states, per column: type, required, enum (with accepted spellings), range, unique, references, and per
rule a break action (spec §3). Row checks are boolean expressions compiled by `gtm_pipeline.expressions` from a
parsed tree with an allow-list; nothing in a contract is ever evaluated as Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from gtm_pipeline.errors import ContractError, ExpressionError

TYPES = ("string", "integer", "decimal", "boolean", "date", "timestamp", "enum")
RULE_KINDS = ("type", "required", "enum", "range", "unique", "references", "row_check")

# Break actions, named after what they do (spec §3 "Contract Test Cases & Break Actions").
QUARANTINE = "quarantine_and_incident"          # enum integrity: quarantine record; open incident
MISSING_OWNER = "quarantine_missing_owner"      # missing keys: write to quarantine.missing_owner; route to repair
BLOCK_PUBLISH = "block_publish_and_notify_owner"  # out of range: block publish; notify owner
REJECT_DUPLICATE = "reject_duplicate"           # a second copy of a key goes to raw.rejects with where the first is
WARN = "warn"                                   # counted and shown in the check; the row stays clean
BREAK_ACTIONS = (QUARANTINE, MISSING_OWNER, BLOCK_PUBLISH, REJECT_DUPLICATE, WARN)

DEFAULT_ACTIONS = {
    "type": QUARANTINE, "required": QUARANTINE, "enum": QUARANTINE, "range": BLOCK_PUBLISH,
    "unique": REJECT_DUPLICATE, "references": WARN, "row_check": QUARANTINE,
}

_TOP_KEYS = {"entity", "version", "owner", "description", "grain", "key", "event_time", "late_after_days",
             "columns", "row_checks"}
_COL_KEYS = {"type", "required", "values", "aliases", "range", "unique", "references", "on_fail", "description"}
_CHECK_KEYS = {"name", "assert", "on_fail", "description"}
_SLUG = re.compile(r"[^a-z0-9+]+")


def slug(value: str) -> str:
    """The spelling-insensitive form used to match enum values: 'Paid Search', 'paid-search' -> 'paid_search'."""
    return _SLUG.sub("_", value.strip().lower()).strip("_")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    values: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # slug(alias) -> canonical
    min: float | None = None
    max: float | None = None
    unique: bool = False
    references: str | None = None  # "entity.column"
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
    expression: object  # gtm_pipeline.expressions.Expression
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
            or (kind == "range" and (c.min is not None or c.max is not None))
            or (kind == "unique" and c.unique) or (kind == "references" and c.references)
            or (kind == "type" and c.type not in ("string", "enum")))]

    def actions_in_use(self) -> set[str]:
        acts = {c.action(k) for k in RULE_KINDS if k != "row_check" for c in self.rules_of_kind(k)}
        acts |= {rc.action for rc in self.row_checks}
        if self.key:
            acts.add(REJECT_DUPLICATE)
        return acts


def _err(where: str, msg: str) -> ContractError:
    return ContractError(f"{where}: {msg}")


def _parse_column(where: str, name: str, body: object) -> Column:
    w = f"{where}: columns.{name}"
    if isinstance(body, str):
        body = {"type": body}
    if not isinstance(body, dict):
        raise _err(w, "must be a mapping like {type: string, required: true}")
    unknown = set(body) - _COL_KEYS
    if unknown:
        raise _err(w, f"unknown field(s) {sorted(unknown)}; allowed: {', '.join(sorted(_COL_KEYS))}")
    ctype = body.get("type")
    if ctype not in TYPES:
        raise _err(f"{w}.type", f"{ctype!r} is not a type; allowed: {', '.join(TYPES)}")
    values: tuple[str, ...] = ()
    aliases: dict[str, str] = {}
    if ctype == "enum":
        vals = body.get("values")
        if not isinstance(vals, list) or not vals:
            raise _err(f"{w}.values", "an enum needs a non-empty list of allowed values")
        values = tuple(str(v) for v in vals)
        for alias, canonical in (body.get("aliases") or {}).items():
            if str(canonical) not in values:
                raise _err(f"{w}.aliases.{alias}", f"maps to {canonical!r}, which is not an allowed value; "
                                                   f"allowed: {', '.join(values)}")
            aliases[slug(str(alias))] = str(canonical)
    elif "values" in body or "aliases" in body:
        raise _err(w, "values/aliases are only allowed on type: enum")
    lo = hi = None
    if "range" in body:
        rng = body["range"]
        if not isinstance(rng, dict) or not set(rng) <= {"min", "max"} or not rng:
            raise _err(f"{w}.range", "must be {min: number, max: number} (either may be omitted)")
        if ctype not in ("integer", "decimal"):
            raise _err(f"{w}.range", f"ranges apply to integer or decimal columns, not {ctype}")
        try:
            lo = float(rng["min"]) if "min" in rng else None
            hi = float(rng["max"]) if "max" in rng else None
        except (TypeError, ValueError) as e:
            raise _err(f"{w}.range", f"min and max must be numbers, got {rng}") from e
        if lo is not None and hi is not None and lo > hi:
            raise _err(f"{w}.range", f"min {lo} is greater than max {hi}")
    refs = body.get("references")
    if refs is not None and (not isinstance(refs, str) or refs.count(".") != 1):
        raise _err(f"{w}.references", f"must be 'entity.column', got {refs!r}")
    on_fail = body.get("on_fail") or {}
    if not isinstance(on_fail, dict):
        raise _err(f"{w}.on_fail", "must map a rule (type, required, enum, range, unique, references) to a break action")
    for rule, act in on_fail.items():
        if rule not in RULE_KINDS or rule == "row_check":
            raise _err(f"{w}.on_fail.{rule}", f"unknown rule; rules: type, required, enum, range, unique, references")
        if act not in BREAK_ACTIONS:
            raise _err(f"{w}.on_fail.{rule}", f"unknown break action {act!r}; allowed: {', '.join(BREAK_ACTIONS)}")
    return Column(name=name, type=ctype, required=bool(body.get("required", False)), values=values, aliases=aliases,
                  min=lo, max=hi, unique=bool(body.get("unique", False)), references=refs,
                  on_fail=dict(on_fail), description=str(body.get("description", "")))


def parse_entity_contract(path: Path) -> EntityContract:
    from gtm_pipeline.expressions import compile_assertion

    where = f"contracts/entities/{path.name}"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise _err(where, f"not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise _err(where, "must be a mapping with entity, version, owner, columns")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise _err(where, f"unknown field(s) {sorted(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    for req in ("entity", "version", "owner", "description", "columns"):
        if not doc.get(req):
            raise _err(where, f"missing required field {req!r}")
    if doc["entity"] != path.stem:
        raise _err(f"{where}: entity", f"{doc['entity']!r} must match the file name {path.stem!r}")
    cols_raw = doc["columns"]
    if not isinstance(cols_raw, dict):
        raise _err(f"{where}: columns", "must map column names to their rules")
    columns = {name: _parse_column(where, name, body) for name, body in cols_raw.items()}
    key = tuple(doc.get("key") or ())
    for k in key:
        if k not in columns:
            raise _err(f"{where}: key", f"unknown column {k!r}; known: {', '.join(columns)}")
    event_time = doc.get("event_time")
    if event_time is not None and (event_time not in columns or columns[event_time].type not in ("timestamp", "date")):
        raise _err(f"{where}: event_time", f"{event_time!r} must be a timestamp or date column of this contract")
    checks = []
    for i, rc in enumerate(doc.get("row_checks") or []):
        w = f"{where}: row_checks[{i}]"
        if not isinstance(rc, dict) or not {"name", "assert"} <= set(rc):
            raise _err(w, "must be a mapping with name and assert")
        unknown = set(rc) - _CHECK_KEYS
        if unknown:
            raise _err(w, f"unknown field(s) {sorted(unknown)}; allowed: {', '.join(sorted(_CHECK_KEYS))}")
        act = rc.get("on_fail", DEFAULT_ACTIONS["row_check"])
        if act not in BREAK_ACTIONS:
            raise _err(f"{w}.on_fail", f"unknown break action {act!r}; allowed: {', '.join(BREAK_ACTIONS)}")
        try:
            expr = compile_assertion(str(rc["assert"]), columns.keys(), where=f"{w}.assert")
        except ExpressionError:
            raise
        checks.append(RowCheck(name=str(rc["name"]), text=str(rc["assert"]), expression=expr, action=act,
                               description=str(rc.get("description", ""))))
    return EntityContract(path=path, entity=doc["entity"], version=str(doc["version"]), owner=str(doc["owner"]),
                          description=str(doc["description"]).strip(), grain=str(doc.get("grain", "")),
                          key=key, columns=columns, row_checks=tuple(checks), event_time=event_time,
                          late_after_days=doc.get("late_after_days"))


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
                    raise _err(f"{c.where}: columns.{col.name}.references",
                               f"{col.references!r} does not name a column of another contract")
    return out


# ---- SQL typing -------------------------------------------------------------------------------------------------

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def typed_sql(col: Column, text: str) -> str:
    """SQL turning the text column ``text`` into the contract type (NULL when it does not parse).

    Enum values are matched spelling-insensitively to their canonical form; a value that matches nothing is kept
    as written so that the enum check can show it.
    """
    t = f"nullif(trim({text}), '')"
    if col.type == "string":
        return t
    if col.type == "enum":
        pairs = {slug(v): v for v in col.values}
        pairs.update(col.aliases)
        cases = " ".join(f"WHEN '{k.replace(chr(39), chr(39) * 2)}' THEN '{v.replace(chr(39), chr(39) * 2)}'"
                         for k, v in sorted(pairs.items()))
        s = f"trim(both '_' from regexp_replace(lower(trim({text})), '[^a-z0-9+]+', '_', 'g'))"
        return f"CASE {s} {cases} ELSE {t} END"
    if col.type == "integer":
        return (f"coalesce(TRY_CAST({t} AS BIGINT), CASE WHEN TRY_CAST({t} AS DOUBLE) = "
                f"floor(TRY_CAST({t} AS DOUBLE)) THEN TRY_CAST(TRY_CAST({t} AS DOUBLE) AS BIGINT) END)")
    if col.type == "decimal":
        return f"TRY_CAST({t} AS DOUBLE)"
    if col.type == "boolean":
        return (f"CASE lower({t}) WHEN 'true' THEN TRUE WHEN 't' THEN TRUE WHEN 'yes' THEN TRUE WHEN '1' THEN TRUE "
                f"WHEN 'false' THEN FALSE WHEN 'f' THEN FALSE WHEN 'no' THEN FALSE WHEN '0' THEN FALSE END")
    if col.type == "date":
        return f"coalesce(TRY_CAST({t} AS DATE), CAST(TRY_CAST({t} AS TIMESTAMPTZ) AS DATE))"
    if col.type == "timestamp":
        # Offsets are honoured; a value without one is taken as UTC (the session time zone is set to UTC).
        return f"CAST(timezone('UTC', TRY_CAST({t} AS TIMESTAMPTZ)) AS TIMESTAMP)"
    raise AssertionError(col.type)


def type_label(col: Column) -> str:
    return {"integer": "an integer", "decimal": "a number", "boolean": "a boolean (true/false)",
            "date": "a date (YYYY-MM-DD)", "timestamp": "a timestamp (ISO-8601)"}.get(col.type, col.type)


def quote_ident(name: str) -> str:
    return _q(name)
