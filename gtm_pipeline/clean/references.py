"""References to a row that waits in quarantine: the referencing row is held with it, not published as an orphan.

A stage event whose opportunity is in ``quarantine.opportunity`` (an enum to decide, a day held back by a range, a
missing owner routed to repair) would otherwise enter ``clean.opportunity_stage`` pointing at nothing, and only the
``references_resolve`` warning would say so. Here such a row is marked in the clean stage's candidates with the
reason ``held: parent in quarantine: ...`` and waits in ``quarantine.<entity>`` with status ``held``; each re-clean
of its day looks again, so once the parent is released into clean the row is published with the day.

What counts as "in quarantine": a row of the parent's quarantine (``quarantine.<parent>``, or
``quarantine.missing_owner`` for that entity) with a status that can still reach clean (open, held, repaired,
released), whose key is not also in ``clean.<parent>`` (a later good copy wins). The key is read from the
quarantine payload (the raw text, trimmed, as the clean stage types a string) and compared as text. A reference to
a key that exists nowhere is not held: it stays a ``references_resolve`` warning, as before. A rejected repair
(status ``rejected``) will never reach clean, so it does not hold its children either.

The parent's quarantine is the one its latest clean run wrote: within one run, an entity cleaned before the entity
it references sees that entity's quarantine of the run before (Dagster runs the clean steps of one level in name
order: account and opportunity before opportunity_stage, owner after everything that references it).
"""

from __future__ import annotations

import duckdb

from gtm_pipeline.clean.contract import EntityContract
from gtm_pipeline.clean.rules import quote_ident, sql_str
from gtm_pipeline.quarantine.overlay import MISSING_OWNER_TABLE
from gtm_pipeline.warehouse import existing_tables

HELD_BY = "_held_by"  # candidates' column: why the row waits for its parent (NULL: it does not)
# The break_action of such a held row (a blocked day's held rows say block_publish_and_notify_owner).
HOLD_FOR_PARENT = "hold_for_parent"
# Status of a parent quarantine row that can still enter clean (gtm_pipeline.quarantine.overlay statuses).
WAITING = ("open", "held", "repaired", "released")


def _json_path(column: str) -> str:
    return "'$.\"" + column.replace("'", "''").replace('"', '\\"') + "\"'"


def _parent_keys_sql(parent: str, column: str, quarantine: set[str]) -> str | None:
    """SQL of the parent's keys waiting in quarantine, one row per key with the rule that holds it there."""
    waiting = ", ".join(sql_str(s) for s in WAITING)
    key = f"nullif(trim(json_extract_string(payload, {_json_path(column)})), '')"
    parts = []
    if parent in quarantine:
        parts.append(f"SELECT {key} AS k, rule, {sql_str('quarantine.' + parent)} AS t FROM quarantine.{parent} "
                     f"WHERE status IN ({waiting})")
    if MISSING_OWNER_TABLE in quarantine:
        parts.append(f"SELECT {key} AS k, rule, {sql_str('quarantine.' + MISSING_OWNER_TABLE)} AS t "
                     f"FROM quarantine.{MISSING_OWNER_TABLE} WHERE entity = {sql_str(parent)} "
                     f"AND status IN ({waiting})")
    if not parts:
        return None
    return f"SELECT k, min(t) AS t, min(rule) AS rule FROM ({' UNION ALL '.join(parts)}) WHERE k IS NOT NULL GROUP BY k"


def mark_held_by_parent(con: duckdb.DuckDBPyConnection, contract: EntityContract, table: str) -> int:
    """Add ``_held_by`` to the candidates ``table`` and set it on first copies whose reference points at a parent
    row waiting in quarantine (see the module docstring); returns how many rows it holds."""
    con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {HELD_BY} VARCHAR")
    quarantine = existing_tables(con, "quarantine")
    clean = existing_tables(con, "clean")
    held = []
    for pos, col in enumerate(contract.rules_of_kind("references")):
        assert col.references is not None  # rules_of_kind("references") keeps only the columns that declare one
        parent, pcol = col.references.split(".")
        if parent == contract.entity:
            continue  # its own quarantine is what this run rewrites
        keys = _parent_keys_sql(parent, pcol, quarantine)
        if keys is None:
            continue
        c = quote_ident(col.name)
        in_clean = (f" AND NOT EXISTS (SELECT 1 FROM clean.{parent} p WHERE CAST(p.{quote_ident(pcol)} AS VARCHAR) "
                    f"= CAST(x.{c} AS VARCHAR))") if parent in clean else ""
        reason = (f"{sql_str('held: parent in quarantine: ' + col.name + ' ')} || "
                  f"'''' || CAST(x.{c} AS VARCHAR) || ''' is in ' || q.t || ' (rule ' || q.rule || '); it is "
                  f"published with its day once the {parent} is released'")
        held.append(f"SELECT x._file, x._line, {pos} AS pos, {reason} AS reason FROM {table} x "
                    f"JOIN ({keys}) q ON q.k = CAST(x.{c} AS VARCHAR) WHERE x._dup_of IS NULL{in_clean}")
    if not held:
        return 0
    con.execute(f"""UPDATE {table} SET {HELD_BY} = h.reason FROM (
        SELECT _file, _line, arg_min(reason, pos) AS reason FROM ({' UNION ALL '.join(held)}) GROUP BY _file, _line
    ) h WHERE {table}._file = h._file AND {table}._line = h._line""")
    (n,) = con.execute(f"SELECT count(*) FROM {table} WHERE {HELD_BY} IS NOT NULL").fetchall()[0]
    return int(n)
