"""What the repair backfill reads from the warehouse: released, applied and held quarantine rows, and what blocks a
held row's day. Plain DuckDB reads on a short read-only connection, so the sensors and the metrics exporter can look
while no run writes (`gtm_pipeline.quarantine.backfill` decides what to run from a `Snapshot`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.clean.contract import BLOCK_PUBLISH, EntityContract
from gtm_pipeline.clean.references import ready_children
from gtm_pipeline.datatime import blocked_text
from gtm_pipeline.quarantine.overlay import APPLIED, HELD, REJECTED, RELEASED

T = TypeVar("T")
# Release id of a held-for-parent row whose parent is in clean now: each is a release of its own, so the backfill
# requests its day as a new batch exactly once, and the batch ends when the re-clean publishes the row.
PARENT_READY = "parent-ready:"


class WarehouseBusy(Exception):
    """The DuckDB file is locked by a writer (a running run) or does not exist yet."""


@dataclass(frozen=True)
class Pending:
    quarantine_id: str
    entity: str
    day: str
    release_id: str


@dataclass(frozen=True)
class Applied:
    quarantine_id: str
    entity: str
    day: str
    applied_at: datetime
    applied_run_id: str | None


@dataclass(frozen=True)
class Block:
    """What holds back the publication of one entity's day: its rows that break a block-publish rule, by rule."""

    entity: str
    day: str
    rules: tuple[tuple[str, int], ...]   # (rule, rows), e.g. (("range", 1),)

    def describe(self) -> str:
        asset = f"{keys.CLEAN}/{self.entity}"
        if not self.rules:
            return blocked_text(asset, (self.day,))
        checks = ", ".join(dict.fromkeys(keys.RULE_CHECKS.get(r.split(":")[0], r) for r, _ in self.rules))
        kinds = {r.split(":")[0] for r, _ in self.rules}
        text = blocked_text(asset, (self.day,), check=checks, rule=kinds.pop() if len(kinds) == 1 else None,
                            rows=sum(n for _, n in self.rules))
        return text + "; repair and release those rows and the held rows are taken in with the day"


@dataclass
class Snapshot:
    pending: list[Pending] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    held: list[Pending] = field(default_factory=list)      # released rows held on a blocked day
    blocks: dict[tuple[str, str], Block] = field(default_factory=dict)   # (entity, day) of held rows -> why

    def held_lines(self) -> list[str]:
        """One line per blocked day that holds released rows: day, entity, the check and rows that block it."""
        by_day: dict[tuple[str, str], int] = {}
        for h in self.held:
            by_day[(h.entity, h.day)] = by_day.get((h.entity, h.day), 0) + 1
        return [f"{n} released row(s) stay held: {self.blocks[k].describe()}" for k, n in sorted(by_day.items())]


def read_snapshot(con: duckdb.DuckDBPyConnection, contracts: Mapping[str, EntityContract] | None = None) -> Snapshot:
    """Released-but-not-applied rows, applied rows, and released rows held on a blocked day (with what blocks that
    day), from every quarantine table that has the repair columns. With ``contracts``, rows held for a parent that
    is in clean now are pending too (release id ``parent-ready:<quarantine_id>``): their day needs a re-clean."""
    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'quarantine' "
        "AND column_name = 'released_payload' ORDER BY 1").fetchall()]
    snap = Snapshot()
    for t in tables:
        for qid, ent, day, status, rid, at, run in con.execute(
                f"SELECT quarantine_id, entity, _partition::VARCHAR, status, release_id, applied_at, applied_run_id "
                f"FROM quarantine.{t} WHERE status IN ('{RELEASED}', '{APPLIED}') "
                f"OR (status = '{HELD}' AND released_payload IS NOT NULL)").fetchall():
            if status == RELEASED:
                snap.pending.append(Pending(qid, ent, day, rid or "unbatched"))
            elif status == HELD:
                snap.held.append(Pending(qid, ent, day, rid or "unbatched"))
            elif at is not None:
                snap.applied.append(Applied(qid, ent, day, at, run))
    if contracts is not None:
        snap.pending += [Pending(q, e, d, PARENT_READY + q) for q, e, d in ready_children(con, contracts)]
    for ent, day in sorted({(h.entity, h.day) for h in snap.held}):
        # The rows that hold the day back: those breaking a block-publish rule, still waiting for their repair.
        counts: dict[str, int] = {}
        for t in tables:
            for rule, n in con.execute(
                    f"SELECT rule, count(*) FROM quarantine.{t} WHERE entity = ? AND _partition = ?::DATE "
                    f"AND break_action = ? AND status NOT IN ('{HELD}', '{APPLIED}', '{REJECTED}') GROUP BY 1",
                    [ent, day, BLOCK_PUBLISH]).fetchall():
                counts[rule] = counts.get(rule, 0) + int(n)
        snap.blocks[(ent, day)] = Block(ent, day, tuple(sorted(counts.items())))
    return snap


def connect_reader(database: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection; if this process already holds the file open for writing, a connection with that
    configuration (DuckDB refuses a second configuration in one process). That happens after an in-process run whose
    step failed: the warehouse resource does not close its connection when the step raises.
    """
    try:
        return duckdb.connect(str(database), read_only=True)
    except duckdb.ConnectionException:
        pass
    try:
        return duckdb.connect(str(database))
    except duckdb.ConnectionException:
        return duckdb.connect(str(database), config={"custom_user_agent": "dagster"})  # DuckDBResource's config


def read_when_free(database: str | Path, read: Callable[[duckdb.DuckDBPyConnection], T], *,
                   error: type[Exception], missing: str) -> T:
    """``read`` on a short read-only connection. A missing file raises ``error(missing)``; a file whose write lock a
    run holds raises ``error`` saying so (the sensors and the exporter look again at their next tick)."""
    path = Path(database)
    if not path.exists():
        raise error(missing)
    try:
        con = connect_reader(path)
    except duckdb.Error as e:  # IOException "Could not set lock on file" while a run holds the write lock
        raise error(f"the warehouse {path.name} is locked by a running run ({str(e).splitlines()[0][:160]}); "
                    f"will look again on the next tick") from e
    try:
        return read(con)
    finally:
        con.close()


def read_snapshot_file(database: str | Path, contracts: Mapping[str, EntityContract] | None = None) -> Snapshot:
    """`read_snapshot` on a read-only connection; a locked or missing file raises WarehouseBusy with the reason."""
    return read_when_free(database, lambda con: read_snapshot(con, contracts), error=WarehouseBusy,
                          missing=f"the warehouse {Path(database).name} does not exist yet: nothing has been "
                                  f"cleaned or released")
