"""An entity contract compiled to SQL: the one engine that types a raw text row and says which rules it breaks.

`typed_sql` turns a text column into its contract type (NULL when it does not parse); `violations_sql` is one SQL
expression per contract giving, for each typed candidate row, the list of rules it breaks as structs (rule, kind,
column, value, action, message), in a fixed order: type failures of every column first, then per column required,
enum, range, max_length, control_chars, then the row checks. The clean stage stores that list beside the row and
routes every row with ``INSERT ... SELECT`` (`gtm_pipeline.clean.stage`); a repaired payload is checked by the same
SQL (`gtm_pipeline.clean.payloads`), so there is no second rule engine to keep in step.
"""

from __future__ import annotations

from gtm_pipeline.clean.contract import (
    BLOCK_PUBLISH,
    MISSING_OWNER,
    QUARANTINE,
    WARN,
    Column,
    EntityContract,
    slug,
)
from gtm_pipeline.expressions import assertion_sql

VIOLATION_TYPE = ("STRUCT(rule VARCHAR, kind VARCHAR, col VARCHAR, value VARCHAR, action VARCHAR, "
                  "message VARCHAR)")
# Shown values are clipped: a 5,000,000-character field must not become a 5,000,000-character reason.
SHOWN_CHARS = 200
# C0 control characters other than tab (NUL, newline, carriage return, escape, ...): never part of a clean value.
CONTROL_CHARS = "[\\x00-\\x08\\x0A-\\x1F]"


def json_path(column: str) -> str:
    """The JSON path literal of a payload key (quarantine payloads are JSON objects keyed by column name)."""
    return "'$.\"" + column.replace("'", "''").replace('"', '\\"') + "\"'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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
        cases = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in sorted(pairs.items()))
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


def typed_select(contract: EntityContract, alias: str = "c") -> str:
    """Typed columns plus their raw text (``__raw_<col>``) from the text columns of ``alias``: the one typing path."""
    typed = ", ".join(f"{typed_sql(col, alias + '.' + quote_ident(col.name))} AS {quote_ident(col.name)}"
                      for col in contract.columns.values())
    raw = ", ".join(f"{alias}.{quote_ident(c)} AS {quote_ident('__raw_' + c)}" for c in contract.columns)
    return f"{typed}, {raw}"


def _clipped(x: str) -> str:
    return f"CASE WHEN length({x}) > {SHOWN_CHARS} THEN left({x}, {SHOWN_CHARS - 1}) || '…' ELSE {x} END"


def _quoted(x: str) -> str:
    """SQL for the value as Python's repr shows a string ('abc', or "it's" when it holds a quote)."""
    v = (f"replace(replace(replace(replace({_clipped(x)}, '\\', '\\\\'), chr(10), '\\n'), chr(13), '\\r'), "
         "chr(9), '\\t')")
    return (f"CASE WHEN contains({x}, '''') AND NOT contains({x}, '\"') THEN '\"' || {v} || '\"' "
            f"ELSE '''' || replace({v}, '''', '\\''') || '''' END")


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _item(cond: str, rule: str, column: str | None, value: str, action: str, message: str) -> tuple[str, str]:
    kind = rule.split(":", 1)[0]
    struct = (f"{{'rule': {sql_str(rule)}, 'kind': {sql_str(kind)}, "
              f"'col': {sql_str(column) if column else 'NULL::VARCHAR'}, 'value': {value}, "
              f"'action': {sql_str(action)}, 'message': {message}}}")
    return cond, struct


def _missing(col: Column) -> str:
    c = quote_ident(col.name)
    # A DOUBLE NaN ('nan' in a file) is no number: treated as missing, like NULL.
    return f"({c} IS NULL OR isnan({c}))" if col.type == "decimal" else f"({c} IS NULL)"


def _type_failed(col: Column) -> str:
    raw = quote_ident("__raw_" + col.name)
    return f"({_missing(col)} AND {raw} IS NOT NULL AND NOT regexp_full_match({raw}, '\\s*'))"


def _outside(c: str, low: float | None, high: float | None) -> str:
    out_of = ([f"{c} < {float(low)!r}"] if low is not None else []) + \
             ([f"{c} > {float(high)!r}"] if high is not None else [])
    return f"({' OR '.join(out_of)})" if out_of else "FALSE"


def _bounds(low: float | None, high: float | None) -> str:
    return f"[{_num(low) if low is not None else '-inf'}, {_num(high) if high is not None else 'inf'}]"


def _keyed_range_item(col: Column) -> tuple[str, str]:
    """The range rule of a column whose range depends on another column's value (``range.by``): one set-based CASE
    over that value picks the bounds, and the message names the range that applied and why."""
    assert col.range_by is not None  # a column with ranges always names its by column (contract.RangeSpec)
    c, by = quote_ident(col.name), quote_ident(col.range_by)
    listed = [(sql_str(k), lo, hi) for k, lo, hi in col.ranges]
    has_default = col.min is not None or col.max is not None
    outside = ("CASE " + " ".join(f"WHEN {by} = {k} THEN {_outside(c, lo, hi)}" for k, lo, hi in listed)
               + f" ELSE {_outside(c, col.min, col.max) if has_default else 'FALSE'} END")
    which = ("CASE " + " ".join(
        f"WHEN {by} = {sql_str(k)} THEN {sql_str(f' is outside {_bounds(lo, hi)}, the range for {col.range_by} {k!r}')}"
        for k, lo, hi in col.ranges)
        + f" ELSE {sql_str(f' is outside {_bounds(col.min, col.max)}, the default range (')} || "
          f"coalesce({sql_str(col.range_by + ' ')} || {_quoted(by)} || ' has no range of its own)', "
          f"{sql_str(col.range_by + ' is empty)')}) END")
    return _item(f"(NOT {_missing(col)} AND {outside})", "range", col.name, f"CAST({c} AS VARCHAR)",
                 col.action("range"), f"{sql_str(col.name + ': ')} || CAST({c} AS VARCHAR) || {which}")


def _column_items(col: Column) -> list[tuple[str, str]]:
    c, raw, name = quote_ident(col.name), quote_ident("__raw_" + col.name), col.name
    out = []
    if col.required:
        cond = f"({_missing(col)} AND NOT {_type_failed(col)})" if col.type not in ("string", "enum") else _missing(col)
        out.append(_item(cond, "required", name, "NULL::VARCHAR", col.action("required"),
                         sql_str(f"{name}: required value is missing")))
    if col.type == "enum":
        allowed = ", ".join(sql_str(v) for v in col.values)
        out.append(_item(f"({c} IS NOT NULL AND {c} NOT IN ({allowed}))", "enum", name, _clipped(c),
                         col.action("enum"), f"{sql_str(name + ': ')} || {_quoted(c)} || "
                                             f"{sql_str(' is not an allowed value (' + ', '.join(col.values) + ')')}"))
    if col.ranges:
        out.append(_keyed_range_item(col))
    elif col.min is not None or col.max is not None:
        out.append(_item(f"(NOT {_missing(col)} AND {_outside(c, col.min, col.max)})", "range", name,
                         f"CAST({c} AS VARCHAR)", col.action("range"),
                         f"{sql_str(name + ': ')} || CAST({c} AS VARCHAR) || "
                         f"{sql_str(' is outside ' + _bounds(col.min, col.max))}"))
    if col.type == "string" and col.max_length:
        out.append(_item(f"(length({c}) > {int(col.max_length)})", "max_length", name, _clipped(c),
                         col.action("max_length"),
                         f"{sql_str(name + ': ')} || CAST(length({c}) AS VARCHAR) || "
                         f"{sql_str(f' characters; the limit is {col.max_length} (max_length in the contract)')}"))
    if col.type == "string":
        first = f"regexp_extract({raw}, '{CONTROL_CHARS}')"
        out.append(_item(f"regexp_matches({raw}, '{CONTROL_CHARS}')", "control_chars", name, _clipped(raw),
                         col.action("control_chars"),
                         f"{sql_str(name + ': control character ')} || printf('U+%04X', ord({first})) || "
                         f"' at character ' || CAST(strpos({raw}, {first}) AS VARCHAR) || "
                         f"{sql_str('; only tab is allowed in text')}"))
    return out


def violation_items(contract: EntityContract) -> list[tuple[str, str]]:
    """(condition, struct) per rule of the contract, in the order violations are listed."""
    items = []
    for col in contract.columns.values():
        if col.type not in ("string", "enum"):
            raw = quote_ident("__raw_" + col.name)
            items.append(_item(_type_failed(col), "type", col.name, _clipped(raw), col.action("type"),
                               f"{sql_str(col.name + ': ')} || {_quoted(raw)} || "
                               f"{sql_str(' is not ' + type_label(col))}"))
    for col in contract.columns.values():
        items.extend(_column_items(col))
    for rc in contract.row_checks:
        items.append(_item(f"(NOT {assertion_sql(rc.expression)})", f"row_check:{rc.name}", None, "NULL::VARCHAR",
                           rc.action, sql_str(f"row check {rc.name!r} failed: {rc.text}")))
    return items


def violations_sql(contract: EntityContract) -> str:
    """SQL over a typed candidate row: the list of rules it breaks (empty when none); see the module docstring."""
    items = violation_items(contract)
    if not items:
        return f"[]::{VIOLATION_TYPE}[]"
    any_broken = " OR ".join(cond for cond, _ in items)
    # Most rows break nothing: the list is built only for rows where some condition holds.
    listed = ", ".join(f"CASE WHEN {cond} THEN {struct} END" for cond, struct in items)
    return (f"CASE WHEN {any_broken} THEN list_filter([{listed}], lambda x: x IS NOT NULL) "
            f"ELSE []::{VIOLATION_TYPE}[] END")


def action_sql(violations: str = "_v") -> str:
    """The strongest break action in a violation list (NULL when empty): BLOCK > QUARANTINE > MISSING_OWNER > WARN."""
    acts = f"list_transform({violations}, lambda x: x.action)"
    cases = " ".join(f"WHEN list_contains({acts}, {sql_str(a)}) THEN {sql_str(a)}"
                     for a in (BLOCK_PUBLISH, QUARANTINE, MISSING_OWNER, WARN))
    return f"CASE {cases} END"


def late_sql(contract: EntityContract) -> str:
    """Boolean SQL: the record's event day is more than ``late_after_days`` before its delivery day (``_late``)."""
    if not (contract.event_time and contract.late_after_days is not None):
        return "FALSE"
    et = quote_ident(contract.event_time)
    return f"coalesce(CAST({et} AS DATE) < _partition - {int(contract.late_after_days)}, FALSE)"
