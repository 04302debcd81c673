"""Lifecycle stages with receipts (issue 19 §2, Layer C): ``metrics.lifecycle_history`` (one row per lead, cycle and
stage entered) and ``metrics.lifecycle_conversion`` (stage-to-stage rate and median days).

The stages and their criteria are ``contracts/lifecycle/stages.yaml`` (`gtm_pipeline.lifecycle.contract`): safe
expressions over *moments* of a lead's evidence (creation, touches, CRM status, opportunity created, opportunity
stage changes), compiled to SQL. A stage is entered at the first moment its entry criterion holds.

MQL is derived from the grade, because contracts/entities/lead.yaml aliases the CRM's ``mql`` to ``new``. Chosen:
the grade is *replayed at every touch* (a form fill, demo or page view, or an intent signal of the account) with the
scoring model's points, caps and half-life, so MQL is entered at the first touch after which the grade met the
threshold. Between touches engagement only decays, so the first crossing is always at a touch. Why not the grade as
of now: a lead whose engagement has since decayed would drop out of MQL, an automatic move backwards. Fit is the
published ``metrics.lead_score`` fit (firmographics and learned rates as of now), and an intent signal's strength is
its percentile as of now; both are approximations of the fit and strength at the time.

Forward only: within a cycle only the highest stage reached counts, so a closed-lost opportunity (an ``exit``
criterion) closes the stage's row and the record stays an opportunity. The way back is an audited recycle
(`gtm_pipeline.lifecycle.recycle`); each recycle starts a new cycle at the ``recycled`` stage, and only evidence from
then on moves it forward again. The recycle log is read straight from ``ops.lifecycle_recycles``: it is a log people
write through the CLI, not a published input, so it cannot be declared in ``reads``. Skipped stages get implied
entry dates: a stage's date is the earliest entry of it or of any stage above it in the cycle; ``implied`` says the
date came from above. Every row carries the record's ``current_stage`` and its high-water mark ``highest_stage``.
"""

from __future__ import annotations

import duckdb

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.expressions import assertion_sql
from gtm_pipeline.lifecycle.contract import RECYCLED, Lifecycle, load_lifecycle
from gtm_pipeline.lifecycle.recycle import TABLE as RECYCLES
from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.metrics.unit_economics import label
from gtm_pipeline.scoring.contract import ACTIVITY_GROUPS, ENGAGEMENT_GROUPS, ScoringModel, load_active_model
from gtm_pipeline.scoring.points import grade_sql, touches_sql
from gtm_pipeline.warehouse import table_exists

HISTORY_COLUMNS = ("lead_id", "cycle", "stage", "stage_rank", "entered_at", "exited_at", "days_in_stage", "rule",
                   "implied", "current_stage", "highest_stage")


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def graded_sql(model: ScoringModel, activity: str, intent: str, lead: str, now: str) -> str:
    """CTEs ``touch`` (every touch up to now) and ``graded`` (one row per lead and touch moment with the
    engagement score as of that moment: every touch up to it decayed to it, each group stopped at its cap)."""
    e = model.engagement
    groups = e.groups()
    points = " ".join(f"WHEN '{g}' THEN {groups[g].points!r}" for g in ENGAGEMENT_GROUPS)
    caps = " ".join(f"WHEN '{g}' THEN {groups[g].cap!r}" for g in ENGAGEMENT_GROUPS)
    return f"""
        touch AS (   -- the same touches as lead_score's engagement (scoring.points.touches_sql)
            {touches_sql(activity, intent, lead, now, ACTIVITY_GROUPS)}),
        moment AS (SELECT lead_id, ts, min(grp) AS activity_type FROM touch GROUP BY ALL),
        per_group AS (
            SELECT m.lead_id, m.ts, m.activity_type, p.grp,
                   least(sum(p.strength * (CASE p.grp {points} END)
                             * pow(0.5, date_diff('second', p.ts, m.ts) / 86400.0 / {e.half_life_days!r})),
                         CASE p.grp {caps} END) AS pts
            FROM moment m JOIN touch p ON p.lead_id = m.lead_id AND p.ts <= m.ts
            GROUP BY m.lead_id, m.ts, m.activity_type, p.grp),
        graded AS (SELECT lead_id, ts, activity_type, sum(pts) AS engagement_score FROM per_group GROUP BY ALL)"""


def evidence_sql(ctx: BuildContext, model: ScoringModel, now: str) -> str:
    """CTEs up to ``evidence``: one row per lead and moment with the columns the stage criteria may use."""
    lead, opp = ctx.table("clean.lead"), ctx.table("clean.opportunity")
    _, eng_grade = grade_sql("x.fit_score", "x.engagement_score", model)
    return f"""{graded_sql(model, ctx.table('clean.activity'), ctx.table('clean.intent'), lead, now)},
        ev AS (
            SELECT lead_id, created_at AS ts, 'created' AS event, NULL::VARCHAR AS status,
                   NULL::VARCHAR AS to_stage FROM {lead}
            UNION ALL
            SELECT lead_id, coalesce(status_changed_at, created_at), 'status', status, NULL FROM {lead}
            WHERE status IS NOT NULL AND coalesce(status_changed_at, created_at) <= {now}
            UNION ALL
            SELECT lead_id, created_at, 'opportunity', NULL, NULL FROM {opp}
            WHERE lead_id IS NOT NULL AND created_at <= {now}
            UNION ALL
            SELECT o.lead_id, s.changed_at, 'opportunity_stage', NULL, s.to_stage
            FROM {ctx.table('clean.opportunity_stage')} s JOIN {opp} o ON o.opportunity_id = s.opportunity_id
            WHERE o.lead_id IS NOT NULL AND s.changed_at <= {now}),
        evidence AS (   -- the grade is known at touches (between them engagement only decays); a touch before
                        -- the lead was created counts from its creation
            SELECT x.lead_id, greatest(x.ts, l.created_at) AS ts, x.event, x.status, x.to_stage, x.activity_type,
                   f.fit_score, f.fit_grade, x.engagement_score,
                   CASE WHEN x.engagement_score IS NOT NULL THEN {eng_grade} END AS engagement_grade
            FROM (SELECT lead_id, ts, event, status, to_stage, NULL::VARCHAR AS activity_type,
                         NULL::DOUBLE AS engagement_score FROM ev
                  UNION ALL
                  SELECT lead_id, ts, 'touch', NULL, NULL, activity_type, engagement_score FROM graded) x
            JOIN {lead} l ON l.lead_id = x.lead_id   -- nothing is entered before the record exists
            LEFT JOIN {ctx.table('lead_score')} f ON f.lead_id = x.lead_id
            WHERE x.ts IS NOT NULL)"""


def cycles_sql(con: duckdb.DuckDBPyConnection, lead: str, now: str) -> str:
    """CTE ``cyc``: cycle 0 from creation to the first recycle, cycle k from the k-th recycle to the next."""
    if table_exists(con, "ops", RECYCLES.split(".")[1]):
        rec = f"SELECT lead_id, recycled_at, reason, recycled_by FROM {RECYCLES} WHERE recycled_at <= {now}"
    else:   # no recycle was ever logged
        rec = ("SELECT NULL::VARCHAR AS lead_id, NULL::TIMESTAMP AS recycled_at, NULL::VARCHAR AS reason, "
               "NULL::VARCHAR AS recycled_by WHERE false")
    return f"""
        rec AS ({rec}),
        cyc AS (
            SELECT l.lead_id, 0 AS cycle, NULL::TIMESTAMP AS starts, min(r.recycled_at) AS ends,
                   NULL::VARCHAR AS why
            FROM {lead} l LEFT JOIN rec r ON r.lead_id = l.lead_id GROUP BY l.lead_id
            UNION ALL
            SELECT lead_id, CAST(row_number() OVER w AS INTEGER), recycled_at, lead(recycled_at) OVER w,
                   'recycle: ' || reason || ' (by ' || recycled_by || ')'
            FROM rec WINDOW w AS (PARTITION BY lead_id ORDER BY recycled_at))"""


def stage_rows_sql(lc: Lifecycle) -> str:
    """CTEs up to ``kept``: each automatic stage reached in each cycle, with its own and its effective entry."""
    first = ", ".join(f"min(e.ts) FILTER (WHERE {assertion_sql(s.entry)}) AS in_{s.name}" for s in lc.stages)
    unpivot = " UNION ALL ".join(
        f"SELECT lead_id, cycle, ends, {_q(s.name)} AS stage, {s.rank} AS stage_rank, in_{s.name} AS own_at, "
        f"{_q(s.name + '.entry: ' + s.entry.text)} AS own_rule FROM hits" for s in lc.stages)
    return f"""
        hits AS (
            SELECT c.lead_id, c.cycle, c.ends, {first}
            FROM cyc c LEFT JOIN evidence e ON e.lead_id = c.lead_id
                 AND (c.starts IS NULL OR e.ts >= c.starts) AND (c.ends IS NULL OR e.ts < c.ends)
            GROUP BY ALL),
        own AS ({unpivot}),
        eff AS (   -- a stage's date: the earliest entry of it or of any stage above it (skipped stages implied)
            SELECT *, min(own_at) OVER up AS entered_at, arg_min(stage, own_at) OVER up AS source,
                   max(CASE WHEN own_at IS NOT NULL THEN stage_rank END) OVER (PARTITION BY lead_id, cycle) AS top
            FROM own
            WINDOW up AS (PARTITION BY lead_id, cycle ORDER BY stage_rank
                          ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)),
        kept AS (   -- below the cycle's top only; a recycled cycle starts above the first stage
            SELECT lead_id, cycle, ends, stage, stage_rank, entered_at,
                   own_at IS NULL OR own_at > entered_at AS implied,
                   CASE WHEN own_at IS NULL OR own_at > entered_at THEN 'implied: ' || source || ' entered first'
                        ELSE own_rule END AS rule,
                   stage_rank = top AS is_top
            FROM eff WHERE stage_rank <= top AND (cycle = 0 OR stage_rank > 1))"""


def exit_sql(lc: Lifecycle) -> str:
    """CTE ``exits``: for the top stage of a cycle, the first moment its exit criterion holds after entry."""
    cases = " ".join(f"WHEN {_q(s.name)} THEN {assertion_sql(s.exit)}" for s in lc.stages if s.exit is not None)
    cond = f"CASE k.stage {cases} ELSE FALSE END" if cases else "FALSE"
    return f"""
        exits AS (
            SELECT k.lead_id, k.cycle, min(e.ts) AS exit_at
            FROM kept k JOIN evidence e ON e.lead_id = k.lead_id AND e.ts >= k.entered_at
                 AND (k.ends IS NULL OR e.ts < k.ends) AND {cond}
            WHERE k.is_top GROUP BY ALL)"""


@computation(
    "lifecycle_history",
    reads=("clean.lead", "clean.activity", "clean.intent", "clean.opportunity", "clean.opportunity_stage",
           "lead_score"),
    order_by="lead_id, cycle, stage_rank", columns=HISTORY_COLUMNS,
)
def lifecycle_history(con, ctx: BuildContext) -> str:
    if ctx.contracts_dir is None:
        raise GtmPipelineError(f"metrics/{ctx.name}: no contracts folder to read contracts/lifecycle/ from")
    lc, model = load_lifecycle(ctx.contracts_dir), load_active_model(ctx.contracts_dir).spec
    score = ctx.table("lead_score")
    if not table_exists(con, *score.split(".")):
        raise GtmPipelineError(f"metrics/{ctx.name}: {score} is not published yet; MQL is derived from its fit "
                               f"grade: run 'gtm-pipeline metrics refresh lead_score' first")
    now = f"TIMESTAMP '{ctx.now.replace(tzinfo=None).isoformat(sep=' ')}'"
    return f"""
        WITH {evidence_sql(ctx, model, now)},
        {cycles_sql(con, ctx.table('clean.lead'), now)},
        {stage_rows_sql(lc)},
        {exit_sql(lc)},
        auto AS (
            SELECT k.lead_id, k.cycle, k.stage, k.stage_rank, k.entered_at,
                   CASE WHEN k.is_top THEN least(x.exit_at, k.ends)
                        ELSE lead(k.entered_at) OVER (PARTITION BY k.lead_id, k.cycle ORDER BY k.stage_rank)
                   END AS exited_at, k.rule, k.implied
            FROM kept k LEFT JOIN exits x ON x.lead_id = k.lead_id AND x.cycle = k.cycle),
        recycled AS (   -- the audited way back: entered at the recycle, left when a stage is entered again
            SELECT c.lead_id, c.cycle, '{RECYCLED}' AS stage, 0 AS stage_rank, c.starts AS entered_at,
                   coalesce(min(a.entered_at), c.ends) AS exited_at, c.why AS rule, false AS implied
            FROM cyc c LEFT JOIN auto a ON a.lead_id = c.lead_id AND a.cycle = c.cycle
            WHERE c.cycle > 0 GROUP BY c.lead_id, c.cycle, c.starts, c.ends, c.why),
        rows_ AS (SELECT * FROM auto UNION ALL SELECT * FROM recycled)
        SELECT lead_id, cycle, stage, stage_rank, entered_at, exited_at,
               date_diff('second', entered_at, exited_at) / 86400.0 AS days_in_stage, rule, implied,
               arg_max(stage, cycle * 1000 + stage_rank) OVER rec AS current_stage,
               coalesce(arg_max(CASE WHEN stage_rank > 0 THEN stage END,
                                CASE WHEN stage_rank > 0 THEN stage_rank END) OVER rec, '{RECYCLED}')
                   AS highest_stage
        FROM rows_ WINDOW rec AS (PARTITION BY lead_id)"""


@computation(
    "lifecycle_conversion", reads=("lifecycle_history", "clean.lead"),
    order_by="from_rank, cohort_month = 'all' DESC, cohort_month DESC, segment",
    columns=("from_stage", "to_stage", "from_rank", "cohort_month", "segment", "entered", "converted",
             "median_days"),
)
def lifecycle_conversion(con, ctx: BuildContext) -> str:
    """Per pair of consecutive automatic stages: of the records that entered the first (cohort: the month they
    entered it, UTC), how many went on to the next in the same cycle, and the median days it took. Implied entries
    count as entries (that is what keeps the funnel whole); the recycled stage is not a step of the funnel."""
    if ctx.contracts_dir is None:
        raise GtmPipelineError(f"metrics/{ctx.name}: no contracts folder to read contracts/lifecycle/ from")
    stages = load_lifecycle(ctx.contracts_dir).stages
    pairs = ", ".join(f"({a.rank}, {_q(b.name)})" for a, b in zip(stages, stages[1:], strict=False))
    hist, lead = ctx.table("lifecycle_history"), ctx.table("clean.lead")
    return f"""
        WITH steps AS (
            SELECT f.stage AS from_stage, f.stage_rank AS from_rank, strftime(f.entered_at, '%Y-%m') AS cohort_month,
                   coalesce(l.segment, 'unknown') AS segment, t.stage AS reached,
                   date_diff('second', f.entered_at, t.entered_at) / 86400.0 AS days
            FROM {hist} f
            JOIN {lead} l ON l.lead_id = f.lead_id
            LEFT JOIN {hist} t ON t.lead_id = f.lead_id AND t.cycle = f.cycle AND t.stage_rank = f.stage_rank + 1
            WHERE f.stage_rank > 0),
        pairs (from_rank, to_stage) AS (VALUES {pairs})   -- consecutive stages of contracts/lifecycle/
        SELECT s.from_stage, p.to_stage, s.from_rank, {label('cohort_month')}, {label('segment')},
               CAST(count(*) AS BIGINT) AS entered, CAST(count(s.reached) AS BIGINT) AS converted,
               median(s.days) AS median_days
        FROM steps s JOIN pairs p ON p.from_rank = s.from_rank
        GROUP BY GROUPING SETS ((s.from_stage, p.to_stage, s.from_rank, cohort_month, segment),
                                (s.from_stage, p.to_stage, s.from_rank, cohort_month),
                                (s.from_stage, p.to_stage, s.from_rank, segment),
                                (s.from_stage, p.to_stage, s.from_rank))"""
