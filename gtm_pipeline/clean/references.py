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

The parent's quarantine is the one its latest clean run wrote. Within one run the clean steps go parents first
(`reference_levels` gives each clean step its Dagster priority: owner, then account and lead, then contact and
opportunity, then opportunity_stage), so a child sees its parents' quarantine of the same run.
"""

from __future__ import annotations

import duckdb

from gtm_pipeline.clean.contract import EntityContract
from gtm_pipeline.clean.rules import json_path, quote_ident, sql_str
from gtm_pipeline.errors import ContractError
from gtm_pipeline.quarantine.overlay import MISSING_OWNER_TABLE
from gtm_pipeline.warehouse import existing_tables

HELD_BY = "_held_by"  # candidates' column: why the row waits for its parent (NULL: it does not)
# The break_action of such a held row (a blocked day's held rows say block_publish_and_notify_owner).
HOLD_FOR_PARENT = "hold_for_parent"
# Status of a parent quarantine row that can still enter clean (gtm_pipeline.quarantine.overlay statuses).
WAITING = ("open", "held", "repaired", "released")


def _parent_keys_sql(parent: str, column: str, quarantine: set[str]) -> str | None:
    """SQL of the parent's keys waiting in quarantine, one row per key with the rule that holds it there."""
    waiting = ", ".join(sql_str(s) for s in WAITING)
    key = f"nullif(trim(json_extract_string(payload, {json_path(column)})), '')"
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


def ready_children(con: duckdb.DuckDBPyConnection, contracts) -> list[tuple[str, str, str]]:
    """Held-for-parent rows whose parents no longer wait in quarantine (released into clean, or rejected for good):
    (quarantine_id, entity, delivery day) of each. Re-cleaning their day publishes them; the repair backfill
    (`gtm_pipeline.quarantine.backfill`) requests that run, since nothing else would re-clean a day whose own rows
    did not change. The test is the clean stage's own (`mark_held_by_parent`), so a ready row is one the re-clean
    publishes."""
    quarantine = existing_tables(con, "quarantine")
    out: list[tuple[str, str, str]] = []
    for entity, contract in sorted(contracts.items()):
        if entity not in quarantine:
            continue
        waiting = []
        for col in contract.rules_of_kind("references"):
            assert col.references is not None
            parent, pcol = col.references.split(".")
            keys = _parent_keys_sql(parent, pcol, quarantine) if parent != entity else None
            if keys is not None:
                k = f"nullif(trim(json_extract_string(x.payload, {json_path(col.name)})), '')"
                waiting.append(f"EXISTS (SELECT 1 FROM ({keys}) q WHERE q.k = {k})")
        still = " OR ".join(waiting) or "false"
        out += [(q, entity, d) for q, d in con.execute(
            f"SELECT quarantine_id, _partition::VARCHAR FROM quarantine.{entity} x WHERE status = 'held' "
            f"AND break_action = {sql_str(HOLD_FOR_PARENT)} AND NOT ({still}) ORDER BY 2, 1").fetchall()]
    return out


def reference_levels(contracts) -> dict[str, int]:
    """Each entity's depth in the graph of references: 0 for an entity that references no other, else one more than
    its deepest parent. The clean steps of one run go parents first (their Dagster step priority), so a child sees
    its parents' quarantine of this run, not of the run before. A cycle of references is a contract error."""
    parents = {e: sorted({c.references.split(".")[0] for c in k.rules_of_kind("references") if c.references} - {e}
                         & set(contracts)) for e, k in contracts.items()}
    levels: dict[str, int] = {}

    def level(e: str, path: tuple[str, ...]) -> int:
        if e in path:
            raise ContractError(f"contracts/entities: references form a cycle {' -> '.join((*path, e))}; an entity "
                                f"cannot be held for a parent that is held for it; drop one of the references")
        if e not in levels:
            levels[e] = 1 + max((level(p, (*path, e)) for p in parents[e]), default=-1)
        return levels[e]

    for e in sorted(contracts):
        level(e, ())
    return levels
