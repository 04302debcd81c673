"""Routing itself, with no warehouse: records, owners and assignments, and `route`, which places each record by the
first rule of a rule set whose pool has an owner with capacity left, breaking ties exactly as spec 002 §4.4 caps them:
age -> load -> a seeded random UUID (see `gtm_pipeline.routing.engine` for the rules and the warehouse side)."""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from gtm_pipeline.routing.contract import RuleSet

TIE_BREAKERS = ("age", "load", "random_uuid")  # capped: spec 002 §4.4 "Cap tie-breakers: age -> load -> random UUID"


@dataclass(frozen=True)
class Record:
    """Something to route: a lead or an opportunity, with its (canonical) attributes."""

    record_id: str
    kind: str                                   # lead | opportunity
    attrs: Mapping[str, str | None]             # segment, region, industry, size_band, channel
    day: date                                   # the routing day: capacity and load are counted per day
    created_at: datetime | None = None          # the routing clock: "age" is measured up to here
    source: str | None = None                   # e.g. "quarantine:<id>" for a repair

    def to_json(self) -> str:
        return json.dumps({"record_id": self.record_id, "kind": self.kind, "attrs": dict(self.attrs),
                           "day": self.day.isoformat(), "source": self.source,
                           "created_at": self.created_at.isoformat() if self.created_at else None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        d = json.loads(text)
        return cls(record_id=d["record_id"], kind=d["kind"], attrs=d["attrs"], day=date.fromisoformat(d["day"]),
                   created_at=datetime.fromisoformat(d["created_at"]) if d.get("created_at") else None,
                   source=d.get("source"))


@dataclass
class Owner:
    owner_id: str
    team: str
    segment: str | None = None
    region: str | None = None
    capacity_per_day: int | None = None         # None: no limit
    active: bool = True
    last_assigned_at: datetime | None = None    # None: never assigned (longest wait)
    load: dict[date, int] = field(default_factory=dict)  # open assignments per day

    def has_capacity(self, day: date) -> bool:
        return self.capacity_per_day is None or self.load.get(day, 0) < self.capacity_per_day


@dataclass(frozen=True)
class Assignment:
    record_id: str
    kind: str
    owner_id: str
    rule: str
    rule_set: str
    tie_break: str          # single | age | load | random_uuid: the criterion that decided
    random_uuid: str        # the record's seeded UUID (used only when age and load tie)
    latency_ms: float       # the engine's decision time for this record
    day: date
    created_at: datetime | None = None
    source: str | None = None


@dataclass(frozen=True)
class Unrouted:
    record: Record
    reason: str


@dataclass
class RoutingResult:
    assignments: list[Assignment] = field(default_factory=list)
    unrouted: list[Unrouted] = field(default_factory=list)

    def owner_of(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {a.record_id: a.owner_id for a in self.assignments}
        out.update({u.record.record_id: None for u in self.unrouted})
        return out


def record_uuid(seed: int, record_id: str) -> uuid.UUID:
    """The record's reproducible random UUID: same seed and record id, same UUID, on every machine."""
    h = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big")
    return uuid.UUID(int=random.Random(seed + h).getrandbits(128))


def _pick(eligible: list[Owner], record: Record, seed: int) -> tuple[Owner, str, uuid.UUID]:
    u = record_uuid(seed, record.record_id)
    if len(eligible) == 1:
        return eligible[0], "single", u
    never = datetime.min
    oldest = min(o.last_assigned_at or never for o in eligible)
    tied = [o for o in eligible if (o.last_assigned_at or never) == oldest]
    if len(tied) == 1:
        return tied[0], "age", u
    least = min(o.load.get(record.day, 0) for o in tied)
    tied = [o for o in tied if o.load.get(record.day, 0) == least]
    if len(tied) == 1:
        return tied[0], "load", u
    tied.sort(key=lambda o: o.owner_id)
    return tied[u.int % len(tied)], "random_uuid", u


def route(records: Iterable[Record], rules: RuleSet, owners: Sequence[Owner], seed: int = 0) -> RoutingResult:
    """Assign each record to an owner by the first rule whose pool has capacity left; the rest are unrouted.

    Records are taken in (created_at, record_id) order and each assignment updates the chosen owner's age and load,
    so later records see earlier ones. ``owners`` is not modified. Deterministic for a given seed.
    """
    pool = [replace(o, load=dict(o.load)) for o in owners]
    out = RoutingResult()
    ordered = sorted(records, key=lambda r: (r.created_at or datetime.min, r.record_id))
    for rec in ordered:
        t0 = time.perf_counter()
        reasons: list[str] = []
        chosen = None
        for rule in rules.rules:
            if not rule.matches(rec):
                continue
            members = [o for o in pool if rule.admits(o, rec)]
            eligible = [o for o in members if o.has_capacity(rec.day)]
            if not members:
                reasons.append(f"rule {rule.name}: no active owner in its pool")
                continue
            if not eligible:
                reasons.append(f"rule {rule.name}: all {len(members)} owner(s) at capacity on {rec.day}")
                continue
            owner, how, u = _pick(eligible, rec, seed)
            chosen = (rule, owner, how, u)
            break
        ms = (time.perf_counter() - t0) * 1000
        if chosen is None:
            why = "; ".join(reasons) if reasons else (f"no rule of {rules.label} applies to this {rec.kind} "
                                                      f"({_attrs_text(rec)})")
            out.unrouted.append(Unrouted(rec, why))
            continue
        rule, owner, how, u = chosen
        owner.load[rec.day] = owner.load.get(rec.day, 0) + 1
        if rec.created_at is not None:
            owner.last_assigned_at = max(owner.last_assigned_at or rec.created_at, rec.created_at)
        out.assignments.append(Assignment(record_id=rec.record_id, kind=rec.kind, owner_id=owner.owner_id,
                                          rule=rule.name, rule_set=rules.label, tie_break=how, random_uuid=str(u),
                                          latency_ms=ms, day=rec.day, created_at=rec.created_at, source=rec.source))
    return out


def _attrs_text(rec: Record) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(rec.attrs.items())) or "no attributes"


