"""What one clean run tells its caller: per day, where the rows went, counts and a few samples per rule, and the
findings that feed the grouped contract incidents (`gtm_pipeline.ops.incidents`). Everything is aggregated in SQL over
the labelled candidates; only counts and at most ``SAMPLE_SIZE`` rows per rule and day come to Python."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from gtm_pipeline.clean.contract import BLOCK_PUBLISH, QUARANTINE, WARN, EntityContract
from gtm_pipeline.clean.rules import sql_str
from gtm_pipeline.ops.incidents import BLOCK_KIND, QUARANTINE_KIND, Finding

SAMPLE_SIZE = 5


@dataclass
class CleanReport:
    entity: str
    day: str
    candidates: int = 0
    clean: int = 0
    quarantined: int = 0
    missing_owner: int = 0
    held: int = 0
    rejected: int = 0
    late: int = 0
    blocked: bool = False
    counts: dict[str, int] = field(default_factory=dict)        # rule kind -> violations
    samples: dict[str, list[dict]] = field(default_factory=dict)  # rule kind -> a few rows with file/line/reason
    warnings: dict[str, int] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    applied: int = 0  # released repairs taken into clean by this run (see gtm_pipeline.quarantine.overlay)
    superseded: int = 0  # versions published into history only: a later day holds their key's current version


def _day(col: str) -> str:
    return f"strftime({col}, '%Y-%m-%d')"


def fill_reports(con: duckdb.DuckDBPyConnection, contract: EntityContract, labelled: str, violations: str,
                 reports: dict[str, CleanReport]) -> None:
    """Destination counts, violation counts, warnings and samples of ``labelled`` (the view with ``_dest``) and
    ``violations`` (one row per broken rule of a non-duplicate row) into ``reports``."""
    for d, dest, n, n_late in con.execute(
            f"SELECT {_day('_partition')}, _dest, count(*), count(*) FILTER (WHERE _late) FROM {labelled} "
            f"GROUP BY ALL").fetchall():
        rep = reports[d]
        rep.candidates += n
        if dest == "clean":
            rep.clean += n
            rep.late += n_late
        elif dest in ("blocking", "quarantine"):
            rep.quarantined += n
        elif dest == "missing_owner":
            rep.missing_owner += n
        elif dest == "held":
            rep.held += n
        elif dest == "duplicate":
            rep.rejected += n
    for d, kind, rule, action, n in con.execute(
            f"SELECT {_day('_partition')}, v.kind, v.rule, v.action, count(*) FROM {violations} "
            f"GROUP BY ALL").fetchall():
        rep = reports[d]
        rep.counts[kind] = rep.counts.get(kind, 0) + n
        if action == WARN:
            rep.warnings[rule] = rep.warnings.get(rule, 0) + n
    for d, kind, file, line, column, value, rule, reason in con.execute(
            f"SELECT {_day('_partition')}, v.kind, _file, _line, v.col, v.value, v.rule, v.message FROM {violations} "
            f"QUALIFY row_number() OVER (PARTITION BY _partition, v.kind ORDER BY _file, _line, _pos) <= {SAMPLE_SIZE} "
            f"ORDER BY _partition, v.kind, _file, _line, _pos").fetchall():
        reports[d].samples.setdefault(kind, []).append(
            {"file": file, "line": int(line), "column": column, "value": value, "rule": rule, "reason": reason})
    key = ",".join(contract.key)
    for d, file, line, first in con.execute(
            f"SELECT {_day('_partition')}, _file, _line, _dup_of FROM {labelled} WHERE _dest = 'duplicate' "
            f"QUALIFY row_number() OVER (PARTITION BY _partition ORDER BY _file, _line) <= {SAMPLE_SIZE} "
            f"ORDER BY _partition, _file, _line").fetchall():
        reports[d].samples.setdefault("unique", []).append(
            {"file": file, "line": int(line), "column": key, "rule": "unique",
             "reason": f"duplicate key, first seen at {first}"})
    for rep in reports.values():
        if rep.rejected:
            rep.counts["unique"] = rep.counts.get("unique", 0) + rep.rejected


def findings(con: duckdb.DuckDBPyConnection, violations: str, reports: dict[str, CleanReport]) -> list[Finding]:
    """One finding per (day, break action, rule) from the violations that quarantine a row or block its day;
    missing owners, duplicates and warnings open no incident (they have their own queues)."""
    acts = f"({sql_str(QUARANTINE)}, {sql_str(BLOCK_PUBLISH)})"
    kind_of = {QUARANTINE: QUARANTINE_KIND, BLOCK_PUBLISH: BLOCK_KIND}
    out: dict[tuple[str, str, str], Finding] = {}
    for d, action, rule, rows in con.execute(
            f"SELECT {_day('_partition')}, v.action, v.rule, count(DISTINCT (_file, _line)) FROM {violations} "
            f"WHERE v.action IN {acts} GROUP BY ALL ORDER BY ALL").fetchall():
        kind = kind_of[action]
        out[(d, action, rule)] = Finding(kind=kind, rule=rule, partition=d, rows=int(rows),
                                         held=reports[d].held if kind == BLOCK_KIND else 0)
    for d, action, rule, column, rows in con.execute(
            f"SELECT {_day('_partition')}, v.action, v.rule, v.col, count(DISTINCT (_file, _line)) FROM {violations} "
            f"WHERE v.action IN {acts} AND v.col IS NOT NULL GROUP BY ALL ORDER BY ALL").fetchall():
        out[(d, action, rule)].columns[column] = int(rows)
    for d, action, rule, file, line, column, value, reason in con.execute(
            f"SELECT {_day('_partition')}, v.action, v.rule, _file, _line, v.col, v.value, v.message FROM {violations} "
            f"WHERE v.action IN {acts} QUALIFY row_number() OVER (PARTITION BY _partition, v.action, v.rule "
            f"ORDER BY _file, _line, _pos) <= {SAMPLE_SIZE} ORDER BY _partition, v.action, v.rule, _file, _line, _pos"
    ).fetchall():
        out[(d, action, rule)].samples.append(
            {"file": file, "line": int(line), "column": column, "value": value, "reason": reason})
    return list(out.values())
