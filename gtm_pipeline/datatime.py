"""Data time (docs/design.md §6): how far a published version's inputs are complete. Freshness is measured from it.

- A raw partition (one source, one delivery day) is complete through its source's cut-off (``contracts/
  sources.yaml``: the end of the delivery day, or the newest event timestamp it carries -- never later than the
  moment it was ingested, so a clock-skewed or future timestamp cannot make data look fresh).
- A clean partition is complete through the oldest cut-off among the sources that delivered that day.
- A day-partitioned table as a whole is complete through its newest published day -- unless a day is blocked (its
  publication refused): then it is complete only through the last day before the earliest blocked one, and that
  blocked day is named, so everything downstream says which input holds it back.
- A derived asset is as old as its oldest input: the minimum over the inputs it actually read, carrying their
  blocked partitions along. Recomputing over unchanged inputs therefore yields the same data time: never younger.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import duckdb

from gtm_pipeline.ingest.landing import LandingSpec, Source
from gtm_pipeline.warehouse import scalar, table_exists

PUBLISHED = "published"
BLOCKED = "blocked"


@dataclass(frozen=True)
class DataTime:
    at: datetime | None                          # complete through (naive UTC); None: nothing published yet
    blocking: tuple[str, ...] = field(default=())  # blocked partitions that stop `at`: "clean/opportunity@2026-08-16"

    @property
    def partial(self) -> bool:
        return bool(self.blocking)


def end_of_day(day: str | date) -> datetime:
    d = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime.combine(d + timedelta(days=1), time())


def combine(parts: Iterable[DataTime]) -> DataTime:
    """As old as the oldest input; None if any input has never published (the result cannot be complete)."""
    parts = list(parts)
    blocking = tuple(sorted({b for p in parts for b in p.blocking}))
    if not parts or any(p.at is None for p in parts):
        return DataTime(None, blocking)
    return DataTime(min(p.at for p in parts if p.at is not None), blocking)


def cap(dt: DataTime, limit: datetime) -> DataTime:
    return DataTime(None if dt.at is None else min(dt.at, limit), dt.blocking)


# -- the one wording of a blocked day ------------------------------------------------------------------------------
def split_blocking(partition: str) -> tuple[str, str]:
    """``"clean/opportunity@2026-08-16"`` (a :attr:`DataTime.blocking` entry) -> (asset, day)."""
    asset, _, day = partition.rpartition("@")
    return (asset, day) if asset else (partition, "")


def quarantine_command(asset: str, days: Sequence[str] = (), rule: str | None = None) -> str | None:
    """The command that lists the rows behind a blocked day of a clean table (None for any other asset)."""
    stage, _, entity = asset.partition("/")
    if stage != "clean" or not entity:
        return None
    return (f"gtm-pipeline quarantine list --entity {entity}" + (f" --rule {rule}" if rule else "")
            + (f" --day {days[0]}" if len(days) == 1 else ""))


def blocked_text(asset: str, days: Sequence[str] = (), *, check: str | None = None, rule: str | None = None,
                 rows: int | None = None) -> str:
    """How every output says that a day is blocked (run and demo messages, the demo's summary, `slo report`), so a
    person reads one sentence shape wherever they meet it::

        clean/opportunity 2026-08-16 is blocked by check ranges_in_bounds (1 row(s) out of contract);
        see 'gtm-pipeline quarantine list --entity opportunity --rule range --day 2026-08-16'

    ``check`` and ``rows`` are left out when the output does not know them; ``rule`` narrows the command."""
    days = tuple(days)
    if not days:
        when = ""
    elif len(days) <= 5:
        when = " " + ", ".join(days)
    else:
        when = f" {days[0]} .. {days[-1]} ({len(days)} days)"
    text = (f"{asset}{when} {'are' if len(days) > 1 else 'is'} blocked" + (f" by check {check}" if check else "")
            + (f" ({rows} row(s) out of contract)" if rows is not None else ""))
    more = quarantine_command(asset, days, rule)
    return text + (f"; see '{more}'" if more else "")


# -- raw: a delivery's cut-off -------------------------------------------------------------------------------------
def delivery_cutoff(con: duckdb.DuckDBPyConnection, source: Source, day: str, ingested_at: datetime) -> datetime:
    """The data time of one delivery day of ``source`` (its rows must already be in the raw tables)."""
    if source.cutoff == "end_of_day":
        return end_of_day(day)
    newest = []
    for t in source.tables:
        if not t.event_time:
            continue
        if not table_exists(con, "raw", t.raw_table):
            continue
        col = '"' + t.event_time.replace('"', '""') + '"'
        v = scalar(con, f"SELECT max(TRY_CAST({col} AS TIMESTAMP)) FROM raw.{t.raw_table} "
                        f"WHERE _partition = ?::DATE", [day])
        if v is not None:
            newest.append(v)
    # The source is complete through its least advanced table; a delivery with no readable timestamp is complete
    # through nothing newer than the start of its day.
    at = min(newest) if newest else datetime.combine(date.fromisoformat(day), time())
    return min(at, ingested_at)


def record_partitions(con: duckdb.DuckDBPyConnection, asset_key: str,
                      states: Iterable[tuple[str, str, datetime | None]], *, run_id: str | None,
                      now: datetime) -> None:
    """Upsert (day, status, data_time) for day partitions of ``asset_key`` (call inside the writer's transaction)."""
    rows = [(asset_key, d, s, t, now, run_id or "") for d, s, t in states]
    if rows:
        con.executemany("INSERT OR REPLACE INTO ops.partition_status VALUES (?, ?::DATE, ?, ?, ?, ?)", rows)


def clean_day_cutoffs(con: duckdb.DuckDBPyConnection, spec: LandingSpec, entity: str,
                      days: Iterable[str]) -> dict[str, datetime | None]:
    """Per delivery day: the oldest cut-off among the sources feeding ``entity`` that delivered it; None for a day
    no source delivered (an empty partition completes nothing)."""
    sources = sorted({t.source for t in spec.tables_for_entity(entity)})
    days = list(days)
    out: dict[str, datetime | None] = {d: None for d in days}
    if not days or not sources:
        return out
    rows = con.execute(
        "SELECT strftime(partition_key, '%Y-%m-%d'), min(data_time) FROM ops.partition_status "
        "WHERE asset_key IN (SELECT unnest(?)) AND partition_key IN (SELECT unnest(?)::DATE) "
        "AND status = 'published' GROUP BY 1", [[f"raw/{s}" for s in sources], days]).fetchall()
    for d, t in rows:
        if t is not None:
            out[d] = t
    return out


# -- reading data times --------------------------------------------------------------------------------------------
def partitioned_data_time(con: duckdb.DuckDBPyConnection, asset_key: str) -> DataTime:
    """A day-partitioned table as a whole (see the module docstring)."""
    blocked = [r[0] for r in con.execute(
        "SELECT strftime(partition_key, '%Y-%m-%d') FROM ops.partition_status WHERE asset_key = ? AND status = ? "
        "ORDER BY 1", [asset_key, BLOCKED]).fetchall()]
    if blocked:
        at = scalar(con, "SELECT max(data_time) FROM ops.partition_status WHERE asset_key = ? AND status = ? "
                         "AND partition_key < ?::DATE", [asset_key, PUBLISHED, blocked[0]])
        return DataTime(at, tuple(f"{asset_key}@{d}" for d in blocked))
    at = scalar(con, "SELECT max(data_time) FROM ops.partition_status WHERE asset_key = ? AND status = ?",
                     [asset_key, PUBLISHED])
    return DataTime(at)


def published_data_time(con: duckdb.DuckDBPyConnection, asset_key: str) -> DataTime:
    """The version in force of a metric: its latest publication (for a day-partitioned metric, the latest
    publication of its newest day; a backfill of an old day does not make the table older). Two publications at
    one instant (a frozen clock) are told apart by insertion order."""
    row = con.execute(
        "SELECT data_time, published_at, blocked_inputs FROM ops.publications WHERE asset_key = ? "
        "ORDER BY partition_key DESC NULLS FIRST, published_at DESC, rowid DESC LIMIT 1", [asset_key]).fetchone()
    if row is None:
        return DataTime(None)
    at = row[0] if row[0] is not None else row[1]  # rows from before data time existed: as old as publication
    return DataTime(at, tuple(row[2] or ()))


def asset_data_time(con: duckdb.DuckDBPyConnection, asset_key: str) -> DataTime:
    if asset_key.startswith(("clean/", "raw/")):
        return partitioned_data_time(con, asset_key)
    return published_data_time(con, asset_key)


def inputs_data_time(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> DataTime:
    """Data time of a computation over warehouse tables (``clean.opportunity``, ``metrics.fact_pipeline``)."""
    return combine(asset_data_time(con, t.replace(".", "/", 1)) for t in tables)
