"""The value events of time to value, ``contracts/value_events.yaml``: which rows of which clean entities start a
subject's clock (signup), give it first value, and prove the value (research notes 001; issue 20 §3).

One file for both metrics because the events are shared: ``first_value`` is where ``ttfv`` ends and where ``ttpv``
starts, and one definition cannot drift into two. There is no product source yet (issue 19 §4), so the events are
stand-ins from the CRM and the calendar; when product events land, the sources of an event change here and the
metrics keep their meaning. An event is the earliest row of any of its sources (``any_of``), so a second way to
prove value (a pilot criterion met) is one more entry.

Loaded by the one contract loader; every entity, column and enum value is checked against the entity contracts
(``contracts/entities``) when the file loads, with the file and field named.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationInfo, model_validator

from gtm_pipeline.clean.contract import EntityContract, load_entity_contracts
from gtm_pipeline.clean.rules import quote_ident
from gtm_pipeline.contract_loader import Strict, error_at, load
from gtm_pipeline.metrics.registry import CLEAN_PREFIX

FILE = "value_events.yaml"
WHERE = f"contracts/{FILE}"
TIME_TYPES = ("timestamp", "date")
DIMENSIONS = ("segment", "channel")      # the grain's columns besides the cohort month, read from the subject

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _entity(info: ValidationInfo, name: str, loc: tuple[str | int, ...]) -> EntityContract:
    entities: dict[str, EntityContract] = (info.context or {})["entities"]
    if name not in entities:
        close = difflib.get_close_matches(name, list(entities), n=1)
        raise error_at(loc, f'unknown entity "{name}"; known: {", ".join(sorted(entities))}'
                            + (f'; did you mean "{close[0]}"?' if close else ""))
    return entities[name]


def _column(entity: EntityContract, name: str, loc: tuple[str | int, ...], types: tuple[str, ...] = ()) -> None:
    if name not in entity.columns:
        close = difflib.get_close_matches(name, list(entity.columns), n=1)
        raise error_at(loc, f'"{name}" is not a column of {entity.entity}; known: {", ".join(entity.columns)}'
                            + (f'; did you mean "{close[0]}"?' if close else ""))
    if types and entity.columns[name].type not in types:
        raise error_at(loc, f'"{name}" of {entity.entity} is {entity.columns[name].type}; an event time must be '
                            f"one of {', '.join(types)}")


class Via(Strict):
    """The subject is reached through another entity: ``{entity: opportunity, key: opportunity_id, subject:
    lead_id}`` joins the source's ``key`` to that entity's ``key`` and reads its ``subject`` column."""

    entity: Name
    key: Name
    subject: Name


class Source(Strict):
    entity: Name
    at: Name                                           # the event time column
    subject: Name | None = None                        # the subject's key in this entity ...
    via: Via | None = None                             # ... or reached through another entity
    where: dict[str, Annotated[list[str], Field(min_length=1)]] = {}   # column: [allowed values]

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> Source:
        ent = _entity(info, self.entity, ("entity",))
        _column(ent, self.at, ("at",), TIME_TYPES)
        if (self.subject is None) == (self.via is None):
            raise ValueError("needs exactly one of subject: <column> or via: {entity, key, subject}")
        if self.subject is not None:
            _column(ent, self.subject, ("subject",))
        if self.via is not None:
            other = _entity(info, self.via.entity, ("via", "entity"))
            _column(ent, self.via.key, ("via", "key"))
            _column(other, self.via.key, ("via", "key"))
            _column(other, self.via.subject, ("via", "subject"))
        for col, values in self.where.items():
            _column(ent, col, ("where", col))
            allowed = ent.columns[col].values
            for i, v in enumerate(values):
                if allowed and v not in allowed:
                    raise error_at(("where", col, i), f"{v!r} is not a value of {ent.entity}.{col}; allowed: "
                                                      f"{', '.join(allowed)}")
        return self

    @property
    def entities(self) -> tuple[str, ...]:
        return (self.entity,) + ((self.via.entity,) if self.via else ())


class Event(Strict):
    description: Name
    any_of: Annotated[list[Source], Field(min_length=1)]

    @property
    def entities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for s in self.any_of for e in s.entities))


class Subject(Strict):
    """Whose clock runs; the grain's segment and channel are read from this entity."""

    entity: Name
    key: Name

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> Subject:
        ent = _entity(info, self.entity, ("entity",))
        for col in (self.key, *DIMENSIONS):
            _column(ent, col, ("key",) if col == self.key else ("entity",))
        return self


class Events(Strict):
    signup: Event
    first_value: Event
    proven_value: Event


class ValueEvents(Strict):
    version: Name
    owner: Name
    subject: Subject
    events: Events

    def event(self, name: str) -> Event:
        return getattr(self.events, name)

    def entities(self, *events: str) -> tuple[str, ...]:
        """The clean tables a computation over these events reads (subject first)."""
        names = [self.subject.entity] + [e for name in events for e in self.event(name).entities]
        return tuple(CLEAN_PREFIX + n for n in dict.fromkeys(names))


def load_value_events(contracts_dir: Path) -> ValueEvents:
    entities = load_entity_contracts(contracts_dir)
    return load(ValueEvents, contracts_dir / FILE, WHERE, {"entities": entities})


def _literal(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def event_sql(event: Event, table: Callable[[str], str], as_of: datetime) -> str:
    """One row per subject: its earliest event time up to ``as_of`` (later rows are not known at that data time)."""
    parts = []
    for s in event.any_of:
        at = f"CAST(x.{quote_ident(s.at)} AS TIMESTAMP)"
        conds = [f"{at} IS NOT NULL", f"{at} <= TIMESTAMP '{as_of.isoformat(sep=' ')}'"]
        conds += [f"CAST(x.{quote_ident(c)} AS VARCHAR) IN ({', '.join(_literal(v) for v in vals)})"
                  for c, vals in s.where.items()]
        if s.via is None:
            subject, join = f"x.{quote_ident(s.subject or '')}", ""
        else:
            subject = f"v.{quote_ident(s.via.subject)}"
            join = (f" JOIN {table(CLEAN_PREFIX + s.via.entity)} v "
                    f"ON v.{quote_ident(s.via.key)} = x.{quote_ident(s.via.key)}")
        conds.append(f"{subject} IS NOT NULL")
        parts.append(f"SELECT CAST({subject} AS VARCHAR) AS subject, {at} AS event_at "
                     f"FROM {table(CLEAN_PREFIX + s.entity)} x{join} WHERE {' AND '.join(conds)}")
    return f"SELECT subject, min(event_at) AS event_at FROM ({' UNION ALL '.join(parts)}) GROUP BY subject"
