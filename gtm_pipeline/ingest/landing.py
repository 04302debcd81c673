"""The landing spec (`contracts/sources.yaml`): which exports exist, their columns and the entity each feeds.

Generator, ingestion, drift detection and the real-export mappings all read this one file, so they cannot
disagree about a column name. It is read by the one contract loader (`gtm_pipeline.contract_loader`): an unknown
field, a wrong type or a value outside its list fails at load, naming the file and the field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.errors import ContractError

Format = Literal["csv", "jsonl", "parquet"]
FORMATS = get_args(Format)
# How far a delivery is complete (its data time, docs/design.md §6): through the end of its delivery day, or through the
# newest event timestamp it carries (a source that syncs during the day; each table names its event_time column).
Cutoff = Literal["end_of_day", "newest_event"]
CUTOFFS = get_args(Cutoff)
NonEmpty = Annotated[str, Field(min_length=1)]


@dataclass(frozen=True)
class Table:
    source: str
    name: str
    format: str
    columns: tuple[str, ...]
    entity: str
    # entity column -> landing column name, or ("const", value)
    to_entity: dict[str, str | tuple[str, str]]
    # canonical column -> accepted alternative names
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    event_time: str | None = None   # landing column of the event timestamp (the newest_event cut-off reads it)

    @property
    def raw_table(self) -> str:
        """DuckDB table (schema ``raw``) holding this export's rows as text, with lineage columns."""
        return f"{self.source}_{self.name}"

    @property
    def qualified(self) -> str:
        return f"{self.source}/{self.name}"

    def file_for(self, landing_dir: Path, day: str) -> Path:
        return landing_dir / self.source / day / f"{self.name}.{self.format}"


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    owner: str
    tables: tuple[Table, ...]
    cutoff: str = "end_of_day"


@dataclass(frozen=True)
class LandingSpec:
    path: Path
    sources: dict[str, Source]

    def tables(self) -> list[Table]:
        return [t for s in self.sources.values() for t in s.tables]

    def tables_for_entity(self, entity: str) -> list[Table]:
        return [t for t in self.tables() if t.entity == entity]

    def table(self, qualified: str) -> Table:
        for t in self.tables():
            if t.qualified == qualified:
                return t
        known = ", ".join(t.qualified for t in self.tables())
        raise ContractError(f"{self.path.name}: unknown source table {qualified!r}; known: {known}")

    def entities(self) -> list[str]:
        return sorted({t.entity for t in self.tables()})




class TableContract(Strict):
    """One export: ``sources.<source>.tables.<table>``."""

    format: Format
    columns: list[NonEmpty]
    entity: NonEmpty
    to_entity: dict[str, str | tuple[str, str]] = {}   # entity column -> landing column, or ("const", value)
    aliases: dict[str, list[str]] = {}                 # column -> accepted alternative names
    event_time: str | None = None
    description: str = ""

    @field_validator("columns")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must list the export's columns, in order")
        repeated = sorted({c for c in v if v.count(c) > 1})
        if repeated:
            raise ValueError(f"column names must be unique; repeated: {', '.join(repeated)}")
        return v

    @field_validator("to_entity", mode="before")
    @classmethod
    def _constants(cls, raw: Any) -> Any:
        """``{const: v}`` becomes ``("const", "v")``, the form the clean stage reads."""
        if not isinstance(raw, dict):
            return {} if raw is None else raw
        for ecol, spec in raw.items():
            if not isinstance(spec, str) and not (isinstance(spec, dict) and set(spec) == {"const"}):
                raise error_at((str(ecol),), "must be a landing column name or {const: value}")
        return {k: v if isinstance(v, str) else ("const", str(v["const"])) for k, v in raw.items()}

    @model_validator(mode="after")
    def _names_are_columns(self) -> TableContract:
        known = ", ".join(self.columns)
        for ecol, spec in self.to_entity.items():
            if isinstance(spec, str) and spec not in self.columns:
                raise error_at(("to_entity", ecol), f"landing column {spec!r} is not in columns; known: {known}")
        for col in self.aliases:
            if col not in self.columns:
                raise error_at(("aliases", col), f"not a column of the table; known: {known}")
        if self.event_time is not None and self.event_time not in self.columns:
            raise error_at(("event_time",), f"{self.event_time!r} is not a column of the table; known: {known}")
        return self


class SourceContract(Strict):
    """One source system: ``sources.<source>``."""

    description: str = ""
    owner: str = ""
    tables: Annotated[dict[str, TableContract], Field(validate_default=True)] = {}
    cutoff: Cutoff = "end_of_day"

    @field_validator("tables")
    @classmethod
    def _some_table(cls, v: dict[str, TableContract]) -> dict[str, TableContract]:
        if not v:
            raise ValueError("a source needs at least one table")
        return v

    @model_validator(mode="after")
    def _newest_event_needs_event_time(self) -> SourceContract:
        missing = [name for name, t in self.tables.items() if not t.event_time]
        if self.cutoff == "newest_event" and missing:
            raise error_at(("cutoff",), f"newest_event needs event_time on every table; missing on {missing}")
        return self


class LandingContract(Strict):
    """The whole of ``contracts/sources.yaml``."""

    version: int = 1
    sources: dict[str, SourceContract]


def parse_landing_spec(path: Path) -> LandingSpec:
    """Validate ``path`` with the models above and return the plain dataclasses the stages read (and tests build by
    hand, without a YAML file)."""
    doc = load(LandingContract, path, path.name)
    sources = {
        sname: Source(name=sname, description=s.description, owner=s.owner, cutoff=s.cutoff, tables=tuple(
            Table(source=sname, name=tname, format=t.format, columns=tuple(t.columns), entity=t.entity,
                  to_entity=dict(t.to_entity), aliases={c: tuple(a) for c, a in t.aliases.items()},
                  event_time=t.event_time)
            for tname, t in s.tables.items()))
        for sname, s in doc.sources.items()}
    return LandingSpec(path=path, sources=sources)


@lru_cache(maxsize=8)
def _cached(path_str: str, mtime: float) -> LandingSpec:
    return parse_landing_spec(Path(path_str))


def load_landing_spec(contracts_dir: Path) -> LandingSpec:
    path = contracts_dir / "sources.yaml"
    if not path.exists():
        raise ContractError(f"{path}: missing; the landing spec lists the sources and their columns")
    return _cached(str(path), path.stat().st_mtime)


def landing_days(landing_dir: Path, source: str | None = None) -> list[str]:
    """Delivery days present in the landing folder (for one source or any)."""
    days: set[str] = set()
    if not landing_dir.exists():
        return []
    for sdir in landing_dir.iterdir():
        if not sdir.is_dir() or sdir.name.startswith("_") or (source and sdir.name != source):
            continue
        for ddir in sdir.iterdir():
            if ddir.is_dir() and len(ddir.name) == 10 and ddir.name[4] == "-":
                days.add(ddir.name)
    return sorted(days)


@dataclass(frozen=True)
class DayFiles:
    """What one source delivered on one day: the file of each of its tables that is there, and every other file."""
    claimed: dict[str, Path]     # table name -> its file
    unclaimed: tuple[Path, ...]  # files no table of the source reads, in path order


def day_files(landing_dir: Path, source: Source, day: str) -> DayFiles:
    """Every file under ``<landing>/<source>/<day>/``, split into the tables' files and the unclaimed rest.

    A table reads exactly ``<table>.<format>`` at the top of the day folder; anything else found there (another
    name, another format, a file in a sub-folder) is unclaimed: the ledger lists it so it cannot vanish unseen.
    Names starting with a dot are skipped: they are files being written (the import writes ``.<name>.tmp`` and
    renames it when complete) or the operating system's own (``.DS_Store``), not deliveries.
    """
    ddir = landing_dir / source.name / day
    claimed = {t.name: t.file_for(landing_dir, day) for t in source.tables}
    claimed = {name: p for name, p in claimed.items() if p.is_file()}
    if not ddir.is_dir():
        return DayFiles(claimed=claimed, unclaimed=())
    mine = set(claimed.values())
    others = sorted(p for p in ddir.rglob("*") if p.is_file() and p not in mine
                    and not any(part.startswith(".") for part in p.relative_to(ddir).parts))
    return DayFiles(claimed=claimed, unclaimed=tuple(others))


def closest_table(spec: LandingSpec, source: str, file_name: str) -> Table | None:
    """The table an unclaimed file most likely meant (``leads_extra.csv`` -> crm/leads): the closest table name
    of its own source, else of any source (a file dropped in the wrong source folder); None if nothing is close."""
    stem = file_name.split(".", 1)[0].lower()
    for pool in ([t for t in spec.tables() if t.source == source], spec.tables()):
        by_name = {t.name: t for t in pool}
        match = difflib.get_close_matches(stem, list(by_name), n=1)
        if match:
            return by_name[match[0]]
    return None


def unclaimed_reason(spec: LandingSpec, landing_dir: Path, path: Path) -> tuple[str, str | None]:
    """(reason, hint) for an unclaimed file: why no table reads it and what to do; the hint is the closest table's
    qualified name (or None)."""
    rel = path.relative_to(landing_dir)
    source, day = rel.parts[0], rel.parts[1]
    tables = spec.sources[source].tables
    where = f"{source}/{day}/"
    why = (f"unclaimed: {rel.as_posix()} is in a sub-folder; tables are read only from files directly in {where}"
           if len(rel.parts) > 3 else f"unclaimed: no table of source {source} reads {path.name}")
    best = closest_table(spec, source, path.name)
    if best is None:
        expected = ", ".join(f"{t.name}.{t.format}" for t in tables)
        return (f"{why}; it reads {expected}. Rename the file, or add its table to contracts/sources.yaml "
                f"(sources.{source}.tables)"), None
    return (f"{why}; closest table: {best.qualified}, read from {best.source}/{day}/{best.name}.{best.format}. "
            f"Rename the file, or add its table to contracts/sources.yaml (sources.{source}.tables)"), best.qualified
