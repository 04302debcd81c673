"""Scoring (issue 19 §1, Layer A): ``metrics.account_fit_score`` (one row per account) and ``metrics.lead_score``
(one row per lead), under the active model of ``contracts/scoring/`` (`gtm_pipeline.scoring`).

Fit points are learned from the published ``metrics.win_rate_by_segment`` (an input, so Dagster orders the two and
a blocked win-rate table keeps yesterday's rates), turned into ``CASE`` expressions in Python and evaluated in
DuckDB. Engagement is summed in DuckDB: every form fill, demo and page view of the lead (clean.activity) and every
intent signal of its account (clean.intent) up to the evaluation time, each decayed by the half-life, each group
stopped at its cap. The contracts (contracts/metrics/account_fit_score.yaml, lead_score.yaml) hold the totals'
formulas and the qa_tests; every row carries the model version.
"""

from __future__ import annotations

import duckdb

from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.metrics.registry import BuildContext, computation
from gtm_pipeline.scoring.contract import (
    ACTIVITY_GROUPS,
    ENGAGEMENT_GROUPS,
    FIT_GROUPS,
    ScoringModel,
    load_active_model,
)
from gtm_pipeline.scoring.fit import GroupTable, fit_columns_sql, fit_tables, read_rates
from gtm_pipeline.scoring.points import grade_sql, touches_sql
from gtm_pipeline.warehouse import table_exists

FIT_COLUMNS = tuple(f"fit_{g}" for g in FIT_GROUPS)
ENGAGEMENT_COLUMNS = tuple(f"eng_{g}" for g in ENGAGEMENT_GROUPS)


def _model_and_tables(con: duckdb.DuckDBPyConnection, ctx: BuildContext) -> tuple[ScoringModel, dict[str, GroupTable]]:
    if ctx.contracts_dir is None:
        raise GtmPipelineError(f"metrics/{ctx.name}: no contracts folder to read contracts/scoring/ from")
    model = load_active_model(ctx.contracts_dir).spec
    rates_table = ctx.table("win_rate_by_segment")
    schema, name = rates_table.split(".")
    if not table_exists(con, schema, name):
        raise GtmPipelineError(f"metrics/{ctx.name}: {rates_table} is not published yet; fit points are learned "
                               f"from it: run 'gtm-pipeline metrics refresh win_rate_by_segment' first")
    rates, overall = read_rates(con, rates_table)
    return model, fit_tables(model, rates, overall)


@computation(
    "account_fit_score", reads=("clean.account", "win_rate_by_segment"), order_by="fit_score DESC, account_id",
    columns=("account_id", "model_version", *FIT_GROUPS, *FIT_COLUMNS, "fit_score", "fit_max", "fit_grade"),
)
def account_fit_score(con, ctx: BuildContext) -> str:
    model, tables = _model_and_tables(con, ctx)
    fit_sum = " + ".join(FIT_COLUMNS)
    grade, _ = grade_sql("fit_score", "0", model)
    return f"""
        WITH pts AS (
            SELECT account_id, {', '.join(FIT_GROUPS)}, {', '.join(fit_columns_sql(tables))}
            FROM {ctx.table('clean.account')})
        SELECT account_id, '{model.model_version}' AS model_version, {', '.join(FIT_GROUPS)},
               {', '.join(FIT_COLUMNS)}, fit_score, CAST({model.fit_max!r} AS DOUBLE) AS fit_max,
               {grade} AS fit_grade
        FROM (SELECT *, {fit_sum} AS fit_score FROM pts)"""


def engagement_sql(model: ScoringModel, activity: str, intent: str, lead: str, now: str) -> str:
    """One row per lead with any engagement: ``eng_<group>`` decayed and capped (the lead_score CTE ``eng``)."""
    e = model.engagement
    groups = e.groups()
    each = " ".join(f"WHEN '{g}' THEN {groups[g].points!r}" for g in ENGAGEMENT_GROUPS)
    capped = ", ".join(f"least(coalesce(sum(raw) FILTER (WHERE grp = '{g}'), 0), {groups[g].cap!r}) AS eng_{g}"
                       for g in ENGAGEMENT_GROUPS)
    return f"""
        ev AS (   -- touches up to the evaluation time; later ones do not exist yet for this score
            SELECT lead_id, grp, ts AS touched_at, strength
            FROM ({touches_sql(activity, intent, lead, now, ACTIVITY_GROUPS)})),
        raw AS (
            SELECT lead_id, grp,
                   sum(strength * (CASE grp {each} END)
                       * pow(0.5, date_diff('second', touched_at, {now}) / 86400.0 / {e.half_life_days!r})) AS raw
            FROM ev GROUP BY ALL),
        eng AS (SELECT lead_id, {capped} FROM raw GROUP BY lead_id)"""


@computation(
    "lead_score", reads=("clean.lead", "clean.account", "clean.activity", "clean.intent", "win_rate_by_segment"),
    order_by="grade, fit_score + engagement_score DESC, lead_id",
    columns=("lead_id", "account_id", "model_version", *FIT_GROUPS, *FIT_COLUMNS, "fit_score", *ENGAGEMENT_COLUMNS,
             "engagement_score", "total_cap", "fit_grade", "engagement_grade", "grade"),
)
def lead_score(con, ctx: BuildContext) -> str:
    model, tables = _model_and_tables(con, ctx)
    now = f"TIMESTAMP '{ctx.now.replace(tzinfo=None).isoformat(sep=' ')}'"
    lead, account = ctx.table("clean.lead"), ctx.table("clean.account")
    # the account's firmographics where the lead has one (the CRM's company record), else the lead's own
    values = ", ".join(f"coalesce(a.{g}, l.{g}) AS {g}" for g in FIT_GROUPS)
    fit_grade, eng_grade = grade_sql("fit_score", "engagement_score", model)
    eng = engagement_sql(model, ctx.table("clean.activity"), ctx.table("clean.intent"), lead, now)
    eng_cols = ", ".join(f"coalesce(e.{c}, 0.0) AS {c}" for c in ENGAGEMENT_COLUMNS)
    return f"""
        WITH firm AS (
            SELECT l.lead_id, l.account_id, {values}
            FROM {lead} l LEFT JOIN {account} a ON a.account_id = l.account_id),
        {eng},
        pts AS (
            SELECT f.lead_id, f.account_id, {', '.join('f.' + g for g in FIT_GROUPS)},
                   {', '.join(fit_columns_sql(tables, 'f.'))}, {eng_cols}
            FROM firm f LEFT JOIN eng e ON e.lead_id = f.lead_id),
        summed AS (
            SELECT *, {' + '.join(FIT_COLUMNS)} AS fit_score, {' + '.join(ENGAGEMENT_COLUMNS)} AS engagement_score
            FROM pts)
        SELECT lead_id, account_id, '{model.model_version}' AS model_version, {', '.join(FIT_GROUPS)},
               {', '.join(FIT_COLUMNS)}, fit_score, {', '.join(ENGAGEMENT_COLUMNS)}, engagement_score,
               CAST({model.total_cap!r} AS DOUBLE) AS total_cap, {fit_grade} AS fit_grade,
               {eng_grade} AS engagement_grade, ({fit_grade}) || ({eng_grade}) AS grade
        FROM summed"""
