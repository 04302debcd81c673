"""The landing spec (`contracts/sources.yaml`): which exports exist, their columns and the entity each feeds.

Generator, ingestion, drift detection and the real-export mappings all read this one file, so they cannot
disagree about a column name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from gtm_pipeline.errors import ContractError

FORMATS = ("csv", "jsonl", "parquet")
_SOURCE_KEYS = {"description", "owner", "tables", "cutoff"}
_TABLE_KEYS = {"format", "columns", "aliases", "entity", "to_entity", "description", "event_time"}
# How far a delivery is complete (its data time, DESIGN §6): through the end of its delivery day, or through the
# newest event timestamp it carries (a source that syncs during the day; each table names its event_time column).
CUTOFFS = ("end_of_day", "newest_event")


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


def _fail(path: Path, where: str, msg: str) -> ContractError:
    return ContractError(f"{path.name}: {where}: {msg}")


def _parse_table(path: Path, source: str, name: str, body: object) -> Table:
    where = f"sources.{source}.tables.{name}"
    if not isinstance(body, dict):
        raise _fail(path, where, "must be a mapping with format, columns, entity and to_entity")
    unknown = set(body) - _TABLE_KEYS
    if unknown:
        raise _fail(path, where, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_TABLE_KEYS)}")
    fmt = body.get("format")
    if fmt not in FORMATS:
        raise _fail(path, f"{where}.format", f"{fmt!r} is not a supported format; use one of {list(FORMATS)}")
    columns = body.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise _fail(path, f"{where}.columns", "must be a non-empty list of column names")
    if len(set(columns)) != len(columns):
        raise _fail(path, f"{where}.columns", "column names must be unique")
    entity = body.get("entity")
    if not isinstance(entity, str) or not entity:
        raise _fail(path, f"{where}.entity", "must name the cleaned entity the rows feed")
    to_entity_raw = body.get("to_entity") or {}
    if not isinstance(to_entity_raw, dict):
        raise _fail(path, f"{where}.to_entity", "must map entity columns to landing columns or {const: value}")
    to_entity: dict[str, str | tuple[str, str]] = {}
    for ecol, spec in to_entity_raw.items():
        if isinstance(spec, str):
            if spec not in columns:
                raise _fail(path, f"{where}.to_entity.{ecol}",
                            f"landing column {spec!r} is not in columns; known: {', '.join(columns)}")
            to_entity[ecol] = spec
        elif isinstance(spec, dict) and set(spec) == {"const"}:
            to_entity[ecol] = ("const", str(spec["const"]))
        else:
            raise _fail(path, f"{where}.to_entity.{ecol}", "must be a landing column name or {const: value}")
    aliases_raw = body.get("aliases") or {}
    aliases: dict[str, tuple[str, ...]] = {}
    for col, alts in aliases_raw.items():
        if col not in columns:
            raise _fail(path, f"{where}.aliases.{col}", f"not a column of the table; known: {', '.join(columns)}")
        if not isinstance(alts, list) or not all(isinstance(a, str) for a in alts):
            raise _fail(path, f"{where}.aliases.{col}", "must be a list of alternative column names")
        aliases[col] = tuple(alts)
    event_time = body.get("event_time")
    if event_time is not None and event_time not in columns:
        raise _fail(path, f"{where}.event_time", f"{event_time!r} is not a column of the table; known: "
                                                 f"{', '.join(columns)}")
    return Table(source=source, name=name, format=fmt, columns=tuple(columns), entity=entity,
                 to_entity=to_entity, aliases=aliases, event_time=event_time)


def parse_landing_spec(path: Path) -> LandingSpec:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ContractError(f"{path.name}: not valid YAML: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict):
        raise ContractError(f"{path.name}: must have a top-level 'sources' mapping")
    sources: dict[str, Source] = {}
    for sname, sbody in doc["sources"].items():
        if not isinstance(sbody, dict):
            raise _fail(path, f"sources.{sname}", "must be a mapping with description, owner and tables")
        unknown = set(sbody) - _SOURCE_KEYS
        if unknown:
            raise _fail(path, f"sources.{sname}", f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_SOURCE_KEYS)}")
        tables = tuple(_parse_table(path, sname, tname, tbody) for tname, tbody in (sbody.get("tables") or {}).items())
        if not tables:
            raise _fail(path, f"sources.{sname}.tables", "a source needs at least one table")
        cutoff = sbody.get("cutoff", "end_of_day")
        if cutoff not in CUTOFFS:
            raise _fail(path, f"sources.{sname}.cutoff", f"{cutoff!r} is not a cut-off; use one of {list(CUTOFFS)}")
        if cutoff == "newest_event":
            missing = [t.name for t in tables if not t.event_time]
            if missing:
                raise _fail(path, f"sources.{sname}.cutoff", f"newest_event needs event_time on every table; "
                                                             f"missing on {missing}")
        sources[sname] = Source(name=sname, description=str(sbody.get("description", "")),
                                owner=str(sbody.get("owner", "")), tables=tables, cutoff=cutoff)
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
