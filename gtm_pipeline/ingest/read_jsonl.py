"""JSONL: one read of every file's physical lines, the keys each file uses, and the lines that are not JSON
objects (see :mod:`gtm_pipeline.ingest.read` for the scheme)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from gtm_pipeline.ingest.landing import Table
from gtm_pipeline.ingest.rawlines import PhysicalLines
from gtm_pipeline.ingest.read_sql import (
    ENCODING_REASON,
    MAX_LINE,
    NOT_BLANK,
    LandingFile,
    duckdb_rejects,
    file_stats,
    files_sql,
    insert_raw,
    probe,
    resolve_columns,
    run_read,
    scanned_lines,
    select_list,
    sql_list,
    temp_names,
    with_arrow,
)


def _lines_source(paths: list[Path], rj: str, rs: str) -> str:
    # One column per physical line: no quoting, a delimiter that never occurs in JSON text.
    return (f"read_csv({sql_list(paths)}, columns={{'_raw': 'VARCHAR'}}, header=false, delim='\\x01', quote='', "
            f"escape='', auto_detect=false, strict_mode=false, store_rejects=true, rejects_table='{rj}', "
            f"rejects_scan='{rs}', max_line_size={MAX_LINE})")


def _split_lines(f: LandingFile, i: int, k0: int, out: dict[str, list]) -> None:
    """Slow path: the file's lines split in Python, exactly as PhysicalLines numbers them (DuckDB also splits at a
    lone CR and drops a line it rejects), each decoded or rejected; appended to ``out`` from row number ``k0``."""
    phys = PhysicalLines(f.path)
    for n in range(1, len(phys) + 1):
        raw = phys.line(n)
        if len(raw) > MAX_LINE:
            f.rejects.append((n, "parse", f"line too long: {len(raw)} bytes, at most {MAX_LINE}", raw))
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            f.rejects.append((n, "parse", ENCODING_REASON, raw))
            continue
        out["_k"].append(k0 + len(out["_k"]))
        out["_f"].append(i)
        out["_line"].append(n)
        out["_raw"].append(text.removeprefix("\ufeff") if n == 1 else text)


def read_jsonl_batch(con, table: Table, batch: list[LandingFile], now, in_python: bool) -> None:
    stg, rj, rs = temp_names("stg", "rj", "rs")
    if in_python:
        con.execute(f"CREATE TEMP TABLE {stg} (_k BIGINT, _f BIGINT, _line BIGINT, _raw VARCHAR)")
        rejected, (n_read, first) = {}, ([-1] * len(batch), [0] * len(batch))
    else:
        src = _lines_source([f.path for f in batch], rj, rs)
        run_read(con, table, batch, f"CREATE TEMP TABLE {stg} AS SELECT row_number() OVER () AS _k, file_index AS _f, "
                                  f"NULL::BIGINT AS _line, _raw FROM {src}",
               lambda p: probe(_lines_source([p], *temp_names("rj", "rs"))))
        rejected = duckdb_rejects(con, rj, rs)
        n_read, first = file_stats(con, stg, batch)
    slow = [i for i, f in enumerate(batch) if rejected.get(i) or n_read[i] != scanned_lines(f)]
    if slow:
        split: dict[str, list] = {"_k": [], "_f": [], "_line": [], "_raw": []}
        for i in slow:
            # after every staged row number (1 .. rows read), so each row keeps a unique _k
            _split_lines(batch[i], i, sum(max(n, 0) for n in n_read) + 1, split)
        con.execute(f"DELETE FROM {stg} WHERE _f IN (SELECT unnest(?::BIGINT[]))", [slow])
        with_arrow(con, pa.table(split, schema=pa.schema(
            [("_k", pa.int64()), ("_f", pa.int64()), ("_line", pa.int64()), ("_raw", pa.string())])),
            f"INSERT INTO {stg} SELECT * FROM {{arrow}}")
    lines = (f"SELECT s._k, s._f, f._rel, f._day, coalesce(s._line, s._k - f._first + 1) AS _line, s._raw "
             f"FROM {stg} s JOIN {files_sql(batch, first)} ON f._f = s._f WHERE {NOT_BLANK}")
    keys = _json_keys_and_bad_lines(con, stg, lines, batch)
    _insert_jsonl(con, table, batch, keys, lines, now)
    con.execute(f"DROP TABLE {stg}")


def _json_keys_and_bad_lines(con, stg: str, lines: str, batch: list[LandingFile]) -> dict[int, set[str]]:
    """One pass: the keys each file uses and its rows, and every line that is not a JSON object (rejected
    with the parser's reason, and deleted from the staged rows). Rows group by their key list, which rarely varies,
    so the answer is small; each bad line is a group of its own. json_keys raises on invalid JSON (a failed statement
    aborts the day), so json_valid guards it: a third of the cost of try(json_keys(...)) on the web exports."""
    groups = con.execute(f"""SELECT _f, ks, bad_k, count(*), any_value(_line), any_value(_raw) FROM (
        SELECT _f, _line, _raw, ks,
               CASE WHEN ks IS NULL OR (len(ks) = 0 AND json_type(_raw) <> 'OBJECT') THEN _k END AS bad_k
        FROM (SELECT *, CASE WHEN json_valid(_raw) THEN json_keys(_raw) END AS ks FROM ({lines})))
        GROUP BY _f, ks, bad_k""").fetchall()
    keys: dict[int, set[str]] = {i: set() for i in range(len(batch))}
    bad_k, phys = [], {}
    for i, ks, bad, n, line, raw in sorted(groups, key=lambda g: (g[0], g[4])):
        f = batch[i]
        if bad is None:
            keys[i].update(ks)
            f.rows += n
            continue
        bad_k.append(bad)
        try:
            json.loads(raw)
            why = "not a JSON object"
        except json.JSONDecodeError as e:
            why = f"invalid JSON: {e.msg} at column {e.colno}"
        if i not in phys:
            phys[i] = PhysicalLines(f.path)
        f.rejects.append((int(line), "parse", why, phys[i].line(int(line))))  # the file's bytes, not DuckDB's text
    if bad_k:
        con.execute(f"DELETE FROM {stg} WHERE _k IN (SELECT unnest(?::BIGINT[]))", [bad_k])
    return keys


def _insert_jsonl(con, table: Table, batch: list[LandingFile], keys: dict[int, set[str]], lines: str, now) -> None:
    """One insert per distinct column mapping (usually one for the whole batch: files of one export share keys)."""
    by_mapping: dict[tuple, list[int]] = {}
    for i, f in enumerate(batch):
        resolved, unexpected, drift = resolve_columns(table, sorted(keys[i]))
        f.drift = drift
        by_mapping.setdefault((tuple(resolved.items()), tuple(unexpected)), []).append(i)

    def path_of(key: str) -> str:
        return "'$.\"" + key.replace("'", "''").replace('"', '\\"') + "\"'"

    for (resolved_items, unexpected), idx in by_mapping.items():
        resolved = dict(resolved_items)
        extra = ("json_object(" + ", ".join(f"'{u}', json_extract(_raw, {path_of(u)})" for u in unexpected) + ")"
                 if unexpected else "NULL")
        # One parse per line: json_extract_string with a list of paths returns every value at once.
        found = [resolved[c] for c in table.columns if c in resolved]
        slot = {name: n + 1 for n, name in enumerate(found)}
        values = f"json_extract_string(_raw, [{', '.join(path_of(x) for x in found)}])" if found else "NULL"
        where = "" if len(by_mapping) == 1 else f"WHERE _f IN ({', '.join(map(str, idx))})"
        insert_raw(con, table, select_list(table, resolved, lambda x, slot=slot: f"_v[{slot[x]}]"), extra, "f._line",
                f"(SELECT *, {values} AS _v FROM ({lines}) {where}) f", now)
