"""Upserts with history (SCD type 2): a key that reappears in a later delivery day is an update, not a duplicate.

``clean.<entity>_history`` keeps every published version of every record: the entity's columns, ``valid_from`` and
``valid_to`` (the delivery days between which the version was current; ``valid_to`` NULL = current), the lineage
(``_source``, ``_table``, ``_file``, ``_line``, ``_partition``) and ``_late``, ``_contract_version``,
``_published_at``. ``clean.<entity>`` holds exactly one version per key, the current one, with its columns unchanged,
so the metric layer reads the current version and needs no change.

The rule that picks the current version of a key: the latest delivery day wins; inside one delivery day a key has
one version only, because a second copy of a key on the same day is a reject naming the first copy (by file, then
line). No source delivers an ``updated_at`` outside its key today (owner keys its versions on it), so delivery day,
then file and line, is the whole rule.

A later delivery whose values equal the version it would follow (an unchanged re-delivery, e.g. a full re-export)
makes no new version: it is a reject naming the first copy of those values, as before, so a re-export of unchanged
rows neither grows the history nor moves anything.

The history is the state; ``clean.<entity>`` is derived from it for the keys a batch touched. Re-running any day
deletes that day's versions, inserts the new ones, recomputes ``valid_to`` of the touched keys from the order of
their versions and rebuilds their current rows, so the result depends on which days were published and never on
the order they ran in: re-running day 1 after day 2 leaves day 2's version current. A blocked day writes nothing,
so it supersedes nothing. Everything is set-based SQL over the key and the staged batch (docs/contracts.md).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from gtm_pipeline.clean.contract import WARN, EntityContract
from gtm_pipeline.clean.rules import quote_ident, sql_str
from gtm_pipeline.warehouse import existing_tables

LINEAGE = ("_source", "_table", "_file", "_line", "_partition")
_K = "_clean_touched_keys"


def history_table(entity: str) -> str:
    return f"{entity}_history"


def _keys(contract: EntityContract) -> list[str]:
    return [quote_ident(k) for k in contract.key]


def _on(contract: EntityContract, a: str, b: str) -> str:
    return " AND ".join(f"{a}.{k} = {b}.{k}" for k in _keys(contract))


def _days(days: list[str]) -> str:
    """A SQL list of DATE literals (the caller checked the partition keys: stage.days_sql)."""
    return "(" + ", ".join(f"DATE '{d}'" for d in days) + ")" if days else "(NULL::DATE)"


def ensure_history(con: duckdb.DuckDBPyConnection, contract: EntityContract) -> None:
    """Create ``clean.<entity>_history``; a warehouse cleaned before histories existed seeds it from its clean rows
    (one current version each), so the first upsert keeps them."""
    e, h = contract.entity, history_table(contract.entity)
    if not contract.key or h in existing_tables(con, "clean"):
        return
    cols = ", ".join(f"{quote_ident(c.name)} {c.sql_type}" for c in contract.columns.values())
    names = ", ".join(quote_ident(c) for c in contract.columns)
    con.execute(f"""CREATE TABLE IF NOT EXISTS clean.{h} ({cols}, valid_from DATE, valid_to DATE,
        _source VARCHAR, _table VARCHAR, _file VARCHAR, _line BIGINT, _partition DATE, _late BOOLEAN,
        _contract_version VARCHAR, _published_at TIMESTAMP)""")
    con.execute(f"INSERT INTO clean.{h} SELECT {names}, _partition, NULL, {', '.join(LINEAGE)}, _late, "
                f"_contract_version, _published_at FROM clean.{e}")


def mark_redeliveries(con: duckdb.DuckDBPyConnection, contract: EntityContract, staged: str, days: list[str],
                      blocked: list[str]) -> None:
    """Set ``_dup_of`` on the batch rows that would publish a version equal to the one before it (by delivery day,
    file, line, over the batch and the history of the other days): such a row names the first copy of its values.
    Same-day copies are already marked (``_dup_of``); rows that break a quarantining rule or sit on a blocked day
    make no version and are left out."""
    if not contract.key:
        return
    keys = _keys(contract)
    key_list = ", ".join(keys)
    h = history_table(contract.entity)
    cols = ", ".join(quote_ident(c) for c in contract.columns)
    nonnull = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    not_blocked = f"AND _partition NOT IN {_days(blocked)}" if blocked else ""
    eligible = f"_dup_of IS NULL AND (_action IS NULL OR _action = {sql_str(WARN)}) AND {nonnull} {not_blocked}"
    other_days = f"_partition NOT IN {_days(days)}"
    # Only keys with more than one candidate version (narrow: key columns only) reach the wide window, so a batch
    # of new keys costs one grouping. `lag(row(...)) IS DISTINCT FROM row(...)` compares whole versions with
    # NULL = NULL; the running sum numbers the runs of equal versions, whose first copy the later ones repeat.
    con.execute(f"""UPDATE {staged} SET _dup_of = d.first FROM (
        WITH b AS (SELECT {key_list} FROM {staged} WHERE {eligible}),
        many AS (SELECT {key_list} FROM (
                    SELECT {key_list} FROM b UNION ALL
                    SELECT {key_list} FROM clean.{h} x WHERE {other_days}
                        AND EXISTS (SELECT 1 FROM b WHERE {_on(contract, 'b', 'x')}))
                 GROUP BY ALL HAVING count(*) > 1),
        seq AS (
            SELECT {cols}, _partition, _file, _line, TRUE AS in_batch FROM {staged} x
            WHERE {eligible} AND EXISTS (SELECT 1 FROM many m WHERE {_on(contract, 'm', 'x')})
            UNION ALL
            SELECT {cols}, _partition, _file, _line, FALSE FROM clean.{h} x
            WHERE {other_days} AND EXISTS (SELECT 1 FROM many m WHERE {_on(contract, 'm', 'x')})),
        ch AS (SELECT *, (lag(row({cols})) OVER w IS DISTINCT FROM row({cols}))::INT AS changed FROM seq
               WINDOW w AS (PARTITION BY {key_list} ORDER BY _partition, _file, _line)),
        runs AS (SELECT *, sum(changed) OVER (PARTITION BY {key_list} ORDER BY _partition, _file, _line
                                               ROWS UNBOUNDED PRECEDING) AS run_no FROM ch)
        SELECT _file, _line, changed, in_batch, first_value(_file || ':' || _line) OVER (
            PARTITION BY {key_list}, run_no ORDER BY _partition, _file, _line) AS first FROM runs
    ) d WHERE d.in_batch AND d.changed = 0 AND {staged}._file = d._file AND {staged}._line = d._line""")


def publish_versions(con: duckdb.DuckDBPyConnection, contract: EntityContract, labelled: str | None,
                     published: list[str], now: datetime) -> dict[str, int]:
    """Replace the versions of the ``published`` days with the rows of ``labelled`` bound for clean (None: the
    entity has no source table yet, nothing to publish), then recompute ``valid_to`` and the current row of every
    key those days touch (call inside the batch's transaction). Returns, per day, its rows that are not current."""
    e, h = contract.entity, history_table(contract.entity)
    names = ", ".join(quote_ident(c) for c in contract.columns)
    lineage = ", ".join(LINEAGE)
    if not contract.key or labelled is None:  # no key, no versions: the day's rows are the clean rows
        con.execute(f"DELETE FROM clean.{e} WHERE _partition IN {_days(published)}")
        if labelled is not None:
            con.execute(f"INSERT INTO clean.{e} ({names}, {lineage}, _late, _contract_version, _published_at) "
                        f"SELECT {names}, {lineage}, _late, ?, ? FROM {labelled} WHERE _dest = 'clean'",
                        [contract.version, now])
        return {}
    keys = ", ".join(_keys(contract))
    nonnull = " AND ".join(f"{k} IS NOT NULL" for k in _keys(contract))
    days = _days(published)
    con.execute(f"DROP TABLE IF EXISTS temp.{_K}")
    con.execute(f"""CREATE TEMP TABLE {_K} AS SELECT DISTINCT {keys} FROM (
        SELECT {keys} FROM clean.{h} WHERE _partition IN {days} UNION ALL
        SELECT {keys} FROM clean.{e} WHERE _partition IN {days} UNION ALL
        SELECT {keys} FROM {labelled} WHERE _dest = 'clean') WHERE {nonnull}""")
    touched = f"EXISTS (SELECT 1 FROM {_K} k WHERE {_on(contract, 'k', 'x')})"
    # No try/finally: this runs inside the clean stage's transaction, and a statement after a failed one would
    # only say "transaction is aborted", hiding the error; the rollback drops the temp table with the rest.
    con.execute(f"DELETE FROM clean.{h} WHERE _partition IN {days}")
    con.execute(f"INSERT INTO clean.{h} ({names}, valid_from, valid_to, {lineage}, _late, _contract_version, "
                f"_published_at) SELECT {names}, _partition, NULL, {lineage}, _late, ?, ? FROM {labelled} "
                f"WHERE _dest = 'clean'", [contract.version, now])
    # The window sorts only the keys with several versions or a valid_to to clear (narrow grouping first).
    moved = (f"SELECT {keys} FROM clean.{h} x WHERE {touched} GROUP BY ALL "
             "HAVING count(*) > 1 OR count(valid_to) > 0")
    con.execute(f"""UPDATE clean.{h} SET valid_to = n.nxt FROM (
        SELECT _file, _line, lead(valid_from) OVER (PARTITION BY {keys} ORDER BY valid_from, _file, _line) AS nxt
        FROM clean.{h} x WHERE EXISTS (SELECT 1 FROM ({moved}) m WHERE {_on(contract, 'm', 'x')})) n
        WHERE clean.{h}._file = n._file AND clean.{h}._line = n._line
          AND clean.{h}.valid_to IS DISTINCT FROM n.nxt""")
    # Rows without a full key are never versions of one another: they stay by day. (Two statements, not an
    # OR, so the touched keys are a semi-join.)
    con.execute(f"DELETE FROM clean.{e} x WHERE {touched}")
    con.execute(f"DELETE FROM clean.{e} x WHERE x._partition IN {days} AND NOT ({nonnull})")
    current = (f"INSERT INTO clean.{e} ({names}, {lineage}, _late, _contract_version, _published_at) "
               f"SELECT {names}, {lineage}, _late, _contract_version, _published_at FROM clean.{h} x "
               "WHERE valid_to IS NULL AND ")
    con.execute(current + touched)
    con.execute(current + f"x._partition IN {days} AND NOT ({nonnull})")
    con.execute(f"DROP TABLE IF EXISTS temp.{_K}")
    # An earlier day re-run after a later one publishes versions that are not current: the report says so.
    return {d: int(n) for d, n in con.execute(
        f"SELECT strftime(l._partition, '%Y-%m-%d'), count(*) FROM {labelled} l JOIN clean.{h} x "
        f"ON x._file = l._file AND x._line = l._line WHERE l._dest = 'clean' AND x.valid_to IS NOT NULL "
        f"GROUP BY 1").fetchall()}
