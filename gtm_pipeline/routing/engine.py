"""Routing engine (spec §4.4 Routing Policy): rule sets, owner pools, capped tie-breakers, dead-letter queue.

Rule sets live in ``contracts/routing/<name>.yaml`` (``rules_v1.yaml`` is current, ``rules_v2.yaml`` a candidate);
their models and loaders are in `gtm_pipeline.routing.contract` (importable from here). A rule matches a record (a
lead or an opportunity) by structured conditions on its attributes and names the pool of owners that may take it;
the first rule whose pool has an owner with capacity left wins:

    rules:
      - name: ae_same_segment_same_region
        applies_to: [opportunity]
        when: {segment: [smb, mid_market], region: [na, latam]}   # every listed field must match; {} matches all
        assign: {team: ae, segment: same, region: same}            # "same" = the record's own value

Owners come from ``clean.owner`` (latest version per owner_id, active, ``capacity_per_day`` open assignments a
day). Among the eligible owners the tie-breakers are capped exactly as the playbook says: **age** (longest since
the last assignment) -> **load** (fewest open assignments on the record's day) -> **random UUID**, drawn as
``uuid.UUID(int=random.Random(seed + record_hash).getrandbits(128))`` so a run is reproducible. A record no rule
can place goes to the dead-letter queue ``ops.routing_dlq``; `replay_dlq` re-routes it after a fix (a new rule set,
more capacity), as the playbook's reversal says ("replay DLQ").

The pure API (no warehouse): `parse_rule_set`, `route`, `shadow_evaluate`, `gini`, `assignment_gini`,
`latency_summary`. The warehouse side: `load_owners`, `route_in_warehouse`, `record_assignments`, `dead_letter`,
`replay_dlq`, `unassigned_leads`, `route_leads`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.errors import GtmPipelineError

# The rule-set contract lives in its own module; its names stay importable from here (routing.load_rule_set, ...).
from gtm_pipeline.routing.contract import (  # noqa: F401 - re-exported
    CONDITION_FIELDS,
    KINDS,
    POOL_FIELDS,
    SAME,
    STATUSES,
    TEAM_FOR_KIND,
    Rule,
    RuleSet,
    current_rule_set,
    load_rule_set,
    load_rule_sets,
    parse_rule_set,
    routing_enums,
)
from gtm_pipeline.warehouse import ensure_base, table_exists, utcnow

TIE_BREAKERS = ("age", "load", "random_uuid")  # capped: spec §4.4 "Cap tie-breakers: age -> load -> random UUID"
SHADOW_MATCH_MIN_PCT = 99.5   # spec §4.4: promote a new rule set when shadow match >= 99.5%
GINI_MAX = 0.2                # spec §4.4 pre-check: fairness Gini <= 0.2
ROUTE_SLO_SECONDS = 120       # spec §4.4 pre-check: P(Route < 2m)


# ---- records, owners, assignments -------------------------------------------------------------------------------

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


# ---- evaluation: fairness, latency, shadow mode ------------------------------------------------------------------

def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values: 0 = perfectly even, towards 1 = all on one."""
    xs = sorted(float(v) for v in values)
    n, total = len(xs), sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2 * weighted) / (n * total) - (n + 1) / n


def assignment_gini(assignments: Iterable[Assignment], owners: Sequence[Owner] | None = None,
                    team: str | None = None) -> float:
    """Gini of assignments per owner. With ``owners``, every active owner (of ``team``) counts, with 0 if idle."""
    counts = Counter(a.owner_id for a in assignments)
    if owners is not None:
        ids = [o.owner_id for o in owners if o.active and (team is None or o.team == team)]
        return gini([counts.get(i, 0) for i in ids])
    return gini(list(counts.values()))


@dataclass(frozen=True)
class LatencySummary:
    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    share_within: float     # share of decisions within ``threshold_ms``

    def as_dict(self) -> dict:
        return {"n": self.n, "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "max_ms": self.max_ms,
                "share_within": self.share_within}


def _quantile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def latency_summary(assignments: Iterable[Assignment],
                    threshold_ms: float = ROUTE_SLO_SECONDS * 1000) -> LatencySummary:
    """The engine's decision latency. (Lead-to-assignment time in the CRM, P(Route<2m), is a metric of clean.lead.)"""
    xs = [a.latency_ms for a in assignments]
    return LatencySummary(n=len(xs), p50_ms=_quantile(xs, 0.5), p95_ms=_quantile(xs, 0.95),
                          max_ms=max(xs) if xs else 0.0,
                          share_within=(sum(1 for x in xs if x <= threshold_ms) / len(xs)) if xs else 1.0)


@dataclass
class ShadowReport:
    """Current vs candidate rule set on the same records (spec §4.4: promote when shadow match >= 99.5%)."""

    current: str
    candidate: str
    records: int
    identical: int
    match_pct: float
    unassigned_current: int
    unassigned_candidate: int
    gini_current: float
    gini_candidate: float
    latency_current: LatencySummary
    latency_candidate: LatencySummary
    differences: list[dict]     # first differing records: record_id, owners and rules under both

    @property
    def meets_match_threshold(self) -> bool:
        return self.match_pct >= SHADOW_MATCH_MIN_PCT

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("current", "candidate", "records", "identical", "match_pct",
                                            "unassigned_current", "unassigned_candidate", "gini_current",
                                            "gini_candidate", "differences")}
        d["latency_current"] = self.latency_current.as_dict()
        d["latency_candidate"] = self.latency_candidate.as_dict()
        d["meets_match_threshold"] = self.meets_match_threshold
        return d


def shadow_evaluate(records: Sequence[Record], current: RuleSet, candidate: RuleSet, owners: Sequence[Owner],
                    seed: int = 0, max_differences: int = 20) -> ShadowReport:
    """Route the same records under both rule sets from the same owner state; compare owner by owner.

    Shadow match % = share of records assigned identically (the same owner, or unassigned under both).
    """
    a, b = route(records, current, owners, seed), route(records, candidate, owners, seed)
    oa, ob = a.owner_of(), b.owner_of()
    ra = {x.record_id: x.rule for x in a.assignments}
    rb = {x.record_id: x.rule for x in b.assignments}
    ids = [r.record_id for r in records]
    same = sum(1 for i in ids if oa.get(i) == ob.get(i))
    diffs = [{"record_id": i, "current_owner": oa.get(i), "candidate_owner": ob.get(i),
              "current_rule": ra.get(i), "candidate_rule": rb.get(i)} for i in ids if oa.get(i) != ob.get(i)]
    return ShadowReport(
        current=current.label, candidate=candidate.label, records=len(ids), identical=same,
        match_pct=100.0 * same / len(ids) if ids else 100.0,
        unassigned_current=len(a.unrouted), unassigned_candidate=len(b.unrouted),
        gini_current=assignment_gini(a.assignments, owners), gini_candidate=assignment_gini(b.assignments, owners),
        latency_current=latency_summary(a.assignments), latency_candidate=latency_summary(b.assignments),
        differences=diffs[:max_differences])


# ---- warehouse: owners, assignments, DLQ -------------------------------------------------------------------------

_DDL = [
    """CREATE TABLE IF NOT EXISTS ops.routing_assignments (
        assignment_id VARCHAR, kind VARCHAR, record_id VARCHAR, owner_id VARCHAR, rule VARCHAR, rule_set VARCHAR,
        tie_break VARCHAR, random_uuid VARCHAR, routing_day DATE, record_created_at TIMESTAMP, routed_at TIMESTAMP,
        latency_ms DOUBLE, seed BIGINT, source VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS ops.routing_dlq (
        dlq_id VARCHAR, kind VARCHAR, record_id VARCHAR, record VARCHAR, reason VARCHAR, attempts INTEGER,
        status VARCHAR, rule_set VARCHAR, source VARCHAR, first_failed_at TIMESTAMP, last_attempt_at TIMESTAMP,
        replayed_at TIMESTAMP, owner_id VARCHAR, rule VARCHAR)""",
]
DLQ_OPEN, DLQ_REPLAYED = "open", "replayed"


def ensure_routing_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_base(con)
    for stmt in _DDL:
        con.execute(stmt)


def load_owners(con: duckdb.DuckDBPyConnection, days: Iterable[date] = ()) -> list[Owner]:
    """Owners from ``clean.owner`` (latest version per owner_id) with their state for the given routing days.

    ``last_assigned_at``: the latest assignment before the first of ``days`` (opportunities by created_at, leads by
    assigned_at, and this engine's own assignments); ``load``: open assignments (opportunities not closed, leads new
    or working, engine assignments) per day.
    """
    if not table_exists(con, "clean", "owner"):
        raise GtmPipelineError("clean.owner is empty or missing: run the pipeline for a day with crm/owners.csv "
                               "first (gtm-pipeline run --from <day>)")
    ensure_routing_tables(con)
    rows = con.execute("""
        SELECT owner_id, team, segment, region, capacity_per_day, coalesce(active, true)
        FROM clean.owner WHERE owner_id IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY owner_id ORDER BY updated_at DESC, _file DESC, _line DESC) = 1
        ORDER BY owner_id""").fetchall()
    owners = {r[0]: Owner(owner_id=r[0], team=r[1], segment=r[2], region=r[3],
                          capacity_per_day=None if r[4] is None else int(r[4]), active=bool(r[5])) for r in rows}
    days = sorted(set(days))
    if not days or not owners:
        return list(owners.values())
    events = _assignment_events_sql(con)
    start = days[0]
    for oid, last in con.execute(
            f"SELECT owner_id, max(event_at) FROM ({events}) WHERE event_at < ?::TIMESTAMP GROUP BY 1",
            [start]).fetchall():
        if oid in owners:
            owners[oid].last_assigned_at = last
    placeholders = ", ".join("?::DATE" for _ in days)
    for oid, d, n in con.execute(
            f"SELECT owner_id, event_at::DATE, count(DISTINCT kind || ':' || record_id) FROM ({events}) "
            f"WHERE is_open AND event_at::DATE IN ({placeholders}) GROUP BY 1, 2", days).fetchall():
        if oid in owners:
            owners[oid].load[d] = int(n)
    return list(owners.values())


def _assignment_events_sql(con) -> str:
    parts = ["SELECT kind, record_id, owner_id, record_created_at AS event_at, true AS is_open "
             "FROM ops.routing_assignments WHERE record_created_at IS NOT NULL"]
    if table_exists(con, "clean", "opportunity"):
        parts.append("SELECT 'opportunity', opportunity_id, owner_id, created_at, "
                     "coalesce(stage NOT IN ('closed_won', 'closed_lost'), true) "
                     "FROM clean.opportunity WHERE owner_id IS NOT NULL AND created_at IS NOT NULL")
    if table_exists(con, "clean", "lead"):
        parts.append("SELECT 'lead', lead_id, owner_id, assigned_at, coalesce(status IN ('new', 'working'), true) "
                     "FROM clean.lead WHERE owner_id IS NOT NULL AND assigned_at IS NOT NULL")
    return " UNION ".join(parts)


def route_in_warehouse(con: duckdb.DuckDBPyConnection, records: Sequence[Record], rules: RuleSet,
                       seed: int = 0) -> RoutingResult:
    """`route` with owners and their state read from the warehouse for the records' days."""
    owners = load_owners(con, {r.day for r in records})
    return route(records, rules, owners, seed)


def record_assignments(con: duckdb.DuckDBPyConnection, result: RoutingResult, seed: int,
                       now: datetime | None = None) -> None:
    """Append the engine's assignments to ``ops.routing_assignments`` (what the CRM write-back would use)."""
    ensure_routing_tables(con)
    now = now or utcnow()
    rows = [(uuid.uuid4().hex[:16], a.kind, a.record_id, a.owner_id, a.rule, a.rule_set, a.tie_break, a.random_uuid,
             a.day, a.created_at, now, a.latency_ms, seed, a.source) for a in result.assignments]
    if rows:
        con.executemany("INSERT INTO ops.routing_assignments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def dlq_id(kind: str, record_id: str) -> str:
    return "DLQ-" + hashlib.sha256(f"{kind}|{record_id}".encode()).hexdigest()[:10]


def dead_letter(con: duckdb.DuckDBPyConnection, unrouted: Iterable[Unrouted], rule_set: str,
                now: datetime | None = None) -> list[str]:
    """Put unroutable records on the DLQ (one open entry per record; a repeat counts another attempt)."""
    ensure_routing_tables(con)
    now = now or utcnow()
    ids = []
    for u in unrouted:
        r = u.record
        i = dlq_id(r.kind, r.record_id)
        ids.append(i)
        if con.execute("SELECT count(*) FROM ops.routing_dlq WHERE dlq_id = ? AND status = ?",
                       [i, DLQ_OPEN]).fetchall()[0][0]:
            con.execute("UPDATE ops.routing_dlq SET attempts = attempts + 1, reason = ?, rule_set = ?, "
                        "last_attempt_at = ?, record = ? WHERE dlq_id = ? AND status = ?",
                        [u.reason, rule_set, now, r.to_json(), i, DLQ_OPEN])
        else:
            con.execute("DELETE FROM ops.routing_dlq WHERE dlq_id = ?", [i])  # an earlier, replayed entry
            con.execute("INSERT INTO ops.routing_dlq VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
                        [i, r.kind, r.record_id, r.to_json(), u.reason, DLQ_OPEN, rule_set, r.source, now, now])
    return ids


def dlq_entries(con: duckdb.DuckDBPyConnection, status: str | None = None, kind: str | None = None):
    """The DLQ as a DataFrame (newest first)."""
    ensure_routing_tables(con)
    where, params = [], []
    if status:
        where.append("status = ?")
        params.append(status)
    if kind:
        where.append("kind = ?")
        params.append(kind)
    sql = ("SELECT dlq_id, kind, record_id, status, attempts, reason, rule_set, source, first_failed_at, "
           "last_attempt_at, replayed_at, owner_id, rule FROM ops.routing_dlq"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY last_attempt_at DESC, dlq_id")
    return con.execute(sql, params).df()


@dataclass
class ReplayReport:
    rule_set: str
    replayed: list[tuple[str, Assignment]] = field(default_factory=list)   # (dlq_id, assignment)
    still_unrouted: list[tuple[str, str]] = field(default_factory=list)   # (dlq_id, reason)


def replay_dlq(con: duckdb.DuckDBPyConnection, rules: RuleSet, seed: int = 0, kind: str | None = None,
               ids: Sequence[str] | None = None, now: datetime | None = None) -> ReplayReport:
    """Re-route the open DLQ entries (after a fix: new rules, more capacity); routed ones are marked replayed.

    Their assignments go to ``ops.routing_assignments``; entries that still fail get another attempt and the new
    reason. Records that came from quarantine (``source`` "quarantine:<id>") are returned so the caller can turn
    them into repairs (see ``gtm_pipeline.quarantine.repair.repair_from_replay``).
    """
    ensure_routing_tables(con)
    now = now or utcnow()
    where, params = ["status = ?"], [DLQ_OPEN]
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if ids:
        where.append(f"dlq_id IN ({', '.join('?' for _ in ids)})")
        params.extend(ids)
    entries = con.execute(f"SELECT dlq_id, record FROM ops.routing_dlq WHERE {' AND '.join(where)} "
                          f"ORDER BY first_failed_at, dlq_id", params).fetchall()
    report = ReplayReport(rule_set=rules.label)
    if not entries:
        return report
    records = {Record.from_json(rec).record_id: (i, Record.from_json(rec)) for i, rec in entries}
    result = route_in_warehouse(con, [r for _, r in records.values()], rules, seed)
    record_assignments(con, result, seed, now)
    for a in result.assignments:
        i = records[a.record_id][0]
        con.execute("UPDATE ops.routing_dlq SET status = ?, replayed_at = ?, last_attempt_at = ?, "
                    "attempts = attempts + 1, owner_id = ?, rule = ?, rule_set = ? WHERE dlq_id = ?",
                    [DLQ_REPLAYED, now, now, a.owner_id, a.rule, rules.label, i])
        report.replayed.append((i, a))
    for u in result.unrouted:
        i = records[u.record.record_id][0]
        con.execute("UPDATE ops.routing_dlq SET attempts = attempts + 1, last_attempt_at = ?, reason = ?, "
                    "rule_set = ? WHERE dlq_id = ?", [now, u.reason, rules.label, i])
        report.still_unrouted.append((i, u.reason))
    return report


def unassigned_leads(con: duckdb.DuckDBPyConnection, days: Sequence[str]) -> list[Record]:
    """Leads of the given delivery days that have no owner, are still workable, and are not routed or queued yet."""
    ensure_routing_tables(con)
    if not table_exists(con, "clean", "lead") or not days:
        return []
    placeholders = ", ".join("?::DATE" for _ in days)
    # The ICP audience filter in force (an applied icp.update) decides which leads sales may be routed.
    schema, view = keys.LEAD_ICP_VIEW.split(".")
    audience = (f"AND NOT EXISTS (SELECT 1 FROM {keys.LEAD_ICP_VIEW} i WHERE i.lead_id = l.lead_id "
                f"AND NOT i.routing_eligible)" if table_exists(con, schema, view) else "")
    rows = con.execute(f"""
        SELECT l.lead_id, l.segment, l.region, l.industry, l.size_band, l.channel, l.created_at, l._partition
        FROM clean.lead l
        WHERE l._partition IN ({placeholders}) AND l.owner_id IS NULL {audience}
          AND coalesce(l.status, 'new') IN ('new', 'working', 'sql')
          AND NOT EXISTS (SELECT 1 FROM ops.routing_assignments a WHERE a.kind = 'lead' AND a.record_id = l.lead_id)
          AND NOT EXISTS (SELECT 1 FROM ops.routing_dlq q WHERE q.kind = 'lead' AND q.record_id = l.lead_id
                          AND q.status = 'open')
        ORDER BY l.created_at, l.lead_id""", list(days)).fetchall()
    return [Record(record_id=r[0], kind="lead", attrs=dict(zip(CONDITION_FIELDS, r[1:6])),
                   day=(r[6].date() if r[6] else r[7]), created_at=r[6], source=f"clean.lead:{r[7]}")
            for r in rows]


def records_from_clean(con: duckdb.DuckDBPyConnection, kind: str, days: Sequence[str]) -> list[Record]:
    """Every lead or opportunity delivered on ``days`` as a routing record (e.g. to shadow-compare rule sets)."""
    table, key = {"lead": ("lead", "lead_id"), "opportunity": ("opportunity", "opportunity_id")}[kind]
    if not table_exists(con, "clean", table) or not days:
        return []
    placeholders = ", ".join("?::DATE" for _ in days)
    rows = con.execute(f"SELECT {key}, segment, region, industry, size_band, channel, created_at, _partition "
                       f"FROM clean.{table} WHERE _partition IN ({placeholders}) ORDER BY created_at, {key}",
                       list(days)).fetchall()
    return [Record(record_id=r[0], kind=kind, attrs=dict(zip(CONDITION_FIELDS, r[1:6])),
                   day=(r[6].date() if r[6] else r[7]), created_at=r[6]) for r in rows]


def route_leads(con: duckdb.DuckDBPyConnection, rules: RuleSet, days: Sequence[str], seed: int = 0) -> RoutingResult:
    """Route the unassigned leads of ``days``: assignments to ``ops.routing_assignments``, failures to the DLQ."""
    records = unassigned_leads(con, days)
    result = route_in_warehouse(con, records, rules, seed) if records else RoutingResult()
    con.execute("BEGIN TRANSACTION")
    try:
        record_assignments(con, result, seed)
        dead_letter(con, result.unrouted, rules.label)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return result
