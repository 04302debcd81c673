"""The reference script (``reference.sql``): the pipeline's work up to the clean tables, and CAC by channel, in plain
DuckDB SQL over the landing folder. The benchmark times it per stage to show what the same typing, deduplication
and contract labelling cost without the pipeline around them; ``test_bench_reference.py`` holds its results equal to
the pipeline's on generated data with planted defects.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from gtm_pipeline.errors import GtmPipelineError

SQL_PATH = Path(__file__).with_name("reference.sql")
# A section starts at a line "-- stage: <name>"; what comes before it (settings and macros) is "setup".
_STAGE_MARK = re.compile(r"^-- stage: (\w+)[ \t]*$", re.MULTILINE)
SETUP = "setup"


@dataclass
class ReferenceResult:
    """What the reference script produced, and how long each of its sections took."""

    seconds: dict[str, float] = field(default_factory=dict)            # section -> seconds (setup included)
    clean_counts: dict[tuple[str, str], int] = field(default_factory=dict)       # (entity, day) -> rows
    quarantine_totals: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (table, entity, rule)
    duplicates: dict[tuple[str, str], int] = field(default_factory=dict)         # (entity, day) -> rows
    cac_by_channel: dict[str, tuple[float, int, float | None]] = field(default_factory=dict)  # (cost, wins, cac)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def as_dict(self) -> dict:
        """JSON-friendly: the tuple keys joined with '/'."""
        return {"seconds": self.seconds, "total": self.total,
                "clean_rows": sum(self.clean_counts.values()),
                "quarantined_rows": sum(self.quarantine_totals.values()),
                "duplicate_rows": sum(self.duplicates.values()),
                "cac_by_channel": {k: list(v) for k, v in self.cac_by_channel.items()}}


def sections(sql: str | None = None) -> list[tuple[str, str]]:
    """The script as (section, SQL) pairs in order: "setup", then one per ``-- stage:`` mark."""
    sql = SQL_PATH.read_text(encoding="utf-8") if sql is None else sql
    marks = list(_STAGE_MARK.finditer(sql))
    out = [(SETUP, sql[:marks[0].start()] if marks else sql)]
    for m, nxt in zip(marks, [*marks[1:], None]):
        out.append((m.group(1), sql[m.end():nxt.start() if nxt else len(sql)]))
    return out


def run_reference(landing: Path, database: str = ":memory:", memory_limit: str | None = None) -> ReferenceResult:
    """Run the script over ``landing`` in a fresh connection to ``database`` and return its results.

    ``memory_limit`` is DuckDB's (e.g. "1GB"); the benchmark gives it the pipeline's, so both work in the same room.
    """
    import duckdb

    landing = Path(landing).resolve()
    if not landing.is_dir():
        raise GtmPipelineError(f"bench reference: landing folder {landing} does not exist; generate one with "
                               f"'gtm-pipeline generate --out {landing}'")
    res = ReferenceResult()
    con = duckdb.connect(database)
    try:
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'")
        con.execute("SET VARIABLE landing = ?", [landing.as_posix()])
        for name, sql in sections():
            t0 = time.perf_counter()
            try:
                con.execute(sql)
            except duckdb.Error as e:
                first = str(e).splitlines()[0]
                hint = ("; it reads every export of contracts/sources.yaml (<source>/<day>/<table>.<format>), so "
                        "the landing folder needs at least one file of each" if "No files found" in first else "")
                raise GtmPipelineError(f"bench reference: section {name!r} of {SQL_PATH.name} failed on {landing}: "
                                       f"{first}{hint}") from e
            res.seconds[name] = time.perf_counter() - t0
        _read_results(con, res)
    finally:
        con.close()
    return res


def _read_results(con, res: ReferenceResult) -> None:
    for entity, day, n in con.execute("SELECT entity, strftime(day, '%Y-%m-%d'), n FROM ref_clean_counts").fetchall():
        res.clean_counts[(entity, day)] = int(n)
    for table, entity, rule, n in con.execute(
            "SELECT quarantine_table, entity, rule, n FROM ref_quarantine_totals").fetchall():
        res.quarantine_totals[(table, entity, rule)] = int(n)
    for entity, day, n in con.execute("SELECT entity, strftime(day, '%Y-%m-%d'), n FROM ref_duplicates").fetchall():
        res.duplicates[(entity, day)] = int(n)
    for channel, cost, wins, cac in con.execute(
            "SELECT channel, marketing_cost, wins, cac FROM ref_cac_by_channel").fetchall():
        res.cac_by_channel[channel] = (float(cost), int(wins), None if cac is None else float(cac))
