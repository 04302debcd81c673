"""Judging routing results (spec 002 §4.4 pre-checks and promotion): fairness (Gini of assignments per owner), the
engine's decision latency, and shadow mode (a candidate rule set against the current one on the same records)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gtm_pipeline.routing.assign import Assignment, Owner, Record, route
from gtm_pipeline.routing.contract import RuleSet

SHADOW_MATCH_MIN_PCT = 99.5   # spec 002 §4.4: promote a new rule set when shadow match >= 99.5%
GINI_MAX = 0.2                # spec 002 §4.4 pre-check: fairness Gini <= 0.2
ROUTE_SLO_SECONDS = 120       # spec 002 §4.4 pre-check: P(Route < 2m)


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
    """Current vs candidate rule set on the same records (spec 002 §4.4: promote when shadow match >= 99.5%)."""

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


