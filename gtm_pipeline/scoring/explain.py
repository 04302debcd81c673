"""Every point of one lead or account and why (``gtm-pipeline scoring explain``): the group, the matched value, the
learned lift and shrinkage or the override with who and why, the decay applied, the caps hit, and the grade.

It recomputes the score from the same inputs as the metric layer (the published ``metrics.win_rate_by_segment`` and
the clean tables) at the evaluation time of the published row, with the plain functions of
`gtm_pipeline.scoring.points`, and reports whether it agrees with the published ``metrics.lead_score`` /
``metrics.account_fit_score`` row: a disagreement means the model or an input changed since the last refresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.scoring.contract import ACTIVITY_GROUPS, FIT_GROUPS, ScoringModel, load_active_model
from gtm_pipeline.scoring.fit import GroupTable, fit_tables, read_rates
from gtm_pipeline.scoring.points import ValuePoints, decayed, engagement_grade, fit_grade, intent_strength_sql


@dataclass(frozen=True)
class FitLine:
    group: str
    value: str | None
    points: float
    cap: float
    why: str


@dataclass(frozen=True)
class EngagementLine:
    group: str
    events: int
    before_decay: float
    after_decay: float
    cap: float

    @property
    def points(self) -> float:
        return min(self.after_decay, self.cap)

    @property
    def capped(self) -> bool:
        return self.after_decay > self.cap


@dataclass
class Explanation:
    kind: str                          # "lead" | "account"
    record_id: str
    model: ScoringModel
    as_of: datetime
    fit: list[FitLine] = field(default_factory=list)
    engagement: list[EngagementLine] = field(default_factory=list)
    published: dict | None = None      # the published row, if any

    @property
    def fit_score(self) -> float:
        return sum(f.points for f in self.fit)

    @property
    def engagement_score(self) -> float:
        return sum(e.points for e in self.engagement)

    @property
    def total(self) -> float:
        return min(self.fit_score + self.engagement_score, self.model.total_cap)

    @property
    def grade(self) -> str:
        g = fit_grade(self.fit_score, self.model)
        return g + engagement_grade(self.engagement_score, self.model) if self.kind == "lead" else g


def _why(group: str, vp: ValuePoints | None, value: str | None, overall_rate: float | None) -> str:
    if value is None:
        return "no value: the criterion does not match, 0 points"
    if vp is None:
        return "no override for this value (points: manual): 0 points"
    if vp.source == "override":
        return f"override by {vp.by}: {vp.why}"
    if vp.source == "baseline" or vp.learned is None or vp.learned.rate is None:
        return "no closed opportunity with this value: the overall win rate, half the cap"
    lr = vp.learned
    base = f" vs overall {overall_rate:.1%}" if overall_rate is not None else ""
    return (f"learned: {lr.won} won of {lr.closed} closed ({lr.rate:.1%}){base}; shrunk with weight {lr.weight:.2f} "
            f"to {lr.shrunk:.1%}, lift {lr.lift:+.1%}")


def _fit_lines(values: dict[str, str | None], model: ScoringModel, tables: dict[str, GroupTable],
               overall_rate: float | None) -> list[FitLine]:
    groups = model.fit.groups()
    out = []
    for g in FIT_GROUPS:
        vp = tables[g].lookup(values[g])
        out.append(FitLine(g, values[g], vp.points if vp else 0.0, groups[g].cap, _why(g, vp, values[g], overall_rate)))
    return out


def _engagement_lines(con: duckdb.DuckDBPyConnection, lead_id: str, account_id: str | None, model: ScoringModel,
                      as_of: datetime) -> list[EngagementLine]:
    groups = model.engagement.groups()
    touches = con.execute(
        f"SELECT activity_type, occurred_at, 1.0 FROM clean.activity WHERE lead_id = ? AND occurred_at <= ? "
        f"AND activity_type IN ({', '.join('?' for _ in ACTIVITY_GROUPS)}) "
        f"UNION ALL SELECT 'intent', observed_at, strength FROM ({intent_strength_sql('clean.intent', '?')}) "
        "WHERE account_id = ?",
        [lead_id, as_of, *ACTIVITY_GROUPS, as_of, account_id]).fetchall()
    out = []
    for g, spec in groups.items():
        mine = [(t, s) for grp, t, s in touches if grp == g]
        before = sum(spec.points * s for _, s in mine)
        after = sum(decayed(spec.points * s, (as_of - t).total_seconds() / 86400, model.engagement.half_life_days)
                    for t, s in mine)
        out.append(EngagementLine(g, len(mine), before, after, spec.cap))
    return out


def _published(con: duckdb.DuckDBPyConnection, table: str, key: str, record_id: str) -> dict | None:
    try:
        cur = con.execute(f"SELECT * FROM metrics.{table} WHERE {key} = ?", [record_id])
    except duckdb.CatalogException:
        return None
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


def explain(con: duckdb.DuckDBPyConnection, contracts_dir: Path, record_id: str, now: datetime | None = None
            ) -> Explanation:
    """The score of lead or account ``record_id``, point by point (evaluated when its published row was, else now)."""
    model = load_active_model(contracts_dir).spec
    cols = ", ".join(FIT_GROUPS)
    lead = con.execute(f"SELECT l.account_id, {', '.join(f'coalesce(a.{g}, l.{g})' for g in FIT_GROUPS)} "
                       "FROM clean.lead l LEFT JOIN clean.account a ON a.account_id = l.account_id "
                       "WHERE l.lead_id = ?", [record_id]).fetchone()
    account = None if lead else con.execute(f"SELECT account_id, {cols} FROM clean.account WHERE account_id = ?",
                                            [record_id]).fetchone()
    if lead is None and account is None:
        raise GtmPipelineError(f"scoring explain: {record_id!r} is neither a lead_id of clean.lead nor an account_id "
                               f"of clean.account; pick one from 'gtm-pipeline metrics show lead_score'")
    kind, row = ("lead", lead) if lead else ("account", account)
    assert row is not None
    published = (_published(con, "lead_score", "lead_id", record_id) if kind == "lead"
                 else _published(con, "account_fit_score", "account_id", record_id))
    as_of = now or (published or {}).get("_published_at") or datetime.utcnow()
    rates, overall = read_rates(con)
    tables = fit_tables(model, rates, overall)
    p0 = overall.won / overall.closed if overall.closed else None
    out = Explanation(kind, record_id, model, as_of, published=published)
    out.fit = _fit_lines(dict(zip(FIT_GROUPS, row[1:], strict=True)), model, tables, p0)
    if kind == "lead":
        out.engagement = _engagement_lines(con, record_id, row[0], model, as_of)
    return out


def render(e: Explanation) -> list[str]:
    m = e.model
    lines = [f"{e.kind} {e.record_id}: model {m.model_version}, evaluated at {e.as_of:%Y-%m-%d %H:%M} UTC", "fit:"]
    for f in e.fit:
        lines.append(f"  {f.group:<10} {f.value or '(none)':<14} {f.points:6.2f} / {f.cap:g}  {f.why}")
    g = m.grades.fit
    lines.append(f"  fit_score {e.fit_score:.2f} of {m.fit_max:g} -> grade {fit_grade(e.fit_score, m)} "
                 f"(A >= {g.A:g}, B >= {g.B:g}, else C)")
    if e.kind == "lead":
        lines.append(f"engagement (half-life {m.engagement.half_life_days:g} days):")
        for x in e.engagement:
            cap = f"; cap {x.cap:g} hit" if x.capped else ""
            lines.append(f"  {x.group:<10} {x.events:>4} touches {x.before_decay:7.2f} before decay, "
                         f"{x.after_decay:7.2f} after{cap} -> {x.points:6.2f} / {x.cap:g}")
        ge = m.grades.engagement
        lines.append(f"  engagement_score {e.engagement_score:.2f} -> grade "
                     f"{engagement_grade(e.engagement_score, m)} (1 >= {ge.one:g}, 2 >= {ge.two:g}, else 3)")
        capped = " (total cap hit)" if e.fit_score + e.engagement_score > m.total_cap else ""
        lines.append(f"total {e.total:.2f} of {m.total_cap:g}{capped}, grade {e.grade}")
    lines.append(_published_line(e))
    return lines


def _published_line(e: Explanation) -> str:
    p = e.published
    if p is None:
        return "published: no row yet (run 'gtm-pipeline metrics refresh lead_score account_fit_score')"
    score, grade = (p["total_score"], p["grade"]) if e.kind == "lead" else (p["fit_score"], p["fit_grade"])
    mine = e.total if e.kind == "lead" else e.fit_score
    same = abs(score - mine) < 0.01 and grade == e.grade and p["model_version"] == e.model.model_version
    return (f"published: {score:.2f}, grade {grade}, model {p['model_version']} at {p['_published_at']:%Y-%m-%d %H:%M}"
            + ("" if same else " -- differs: the model or an input changed since; refresh the metric"))
