"""The monthly business readout's sections (spec 000 §5 "Monthly business readout"; issue 20 §4), added to the
monthly business review packet: revenue of shipped experiments against their holdouts, time-to-value and conversion
deltas, risks and upcoming bets. Read from metrics.fact_bookings, clean.lead / clean.account (the experiment's own
deterministic assignment), metrics.ttfv / metrics.ttpv, metrics.sql_funnel, ops.incidents, decisions.log and the
experiment backlog; a table not built yet says so.
"""

from __future__ import annotations

from datetime import date, datetime

import duckdb

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.decisions.weekly_review import LAUNCH_NODE, experiments_or_problem, latest_looks
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.experiments.assignment import HOLDOUT, arm_sql
from gtm_pipeline.experiments.backlog import backlog
from gtm_pipeline.experiments.contract import Experiment
from gtm_pipeline.warehouse import OPEN_SQL, table_exists

CONVERSION_WEEKS = 4
_UNITS = {"lead": "SELECT lead_id AS unit_id, account_id FROM clean.lead WHERE created_at >= ?",
          "account": "SELECT account_id AS unit_id, account_id FROM clean.account WHERE created_at >= ?"}


def arm_revenue(con: duckdb.DuckDBPyConnection, exp: Experiment) -> dict[str, tuple[int, float]]:
    """{arm (and holdout): (units since the start, bookings of their accounts since the start)}. An account's
    bookings count once per arm, however many of its leads fell in it."""
    sql = f"""
        WITH u AS (SELECT {arm_sql(exp, 'x.unit_id')} AS arm, x.account_id FROM ({_UNITS[exp.unit]}) x),
        n AS (SELECT arm, count(*) AS units FROM u GROUP BY 1),
        b AS (SELECT account_id, sum(amount) AS amount FROM metrics.fact_bookings WHERE booked_at >= ? GROUP BY 1),
        r AS (SELECT d.arm, sum(b.amount) AS revenue
              FROM (SELECT DISTINCT arm, account_id FROM u WHERE account_id IS NOT NULL) d JOIN b USING (account_id)
              GROUP BY 1)
        SELECT n.arm, n.units, coalesce(r.revenue, 0) FROM n LEFT JOIN r USING (arm) ORDER BY 1"""
    start = datetime.combine(exp.starts, datetime.min.time())
    return {a: (int(n), float(rev)) for a, n, rev in con.execute(sql, [start, start]).fetchall()}


def shipped_revenue_lines(dc: lifecycle.DecisionContext) -> list[str]:
    """Each experiment whose flag says shipped: revenue per unit of the shipped arm against the holdout (the control
    when the experiment keeps no holdout), and the difference over the shipped arm's units."""
    con = dc.con
    exps, problem = experiments_or_problem(dc.contracts_dir)
    if problem:
        return [f"- {problem}"]
    shipped = [(e, cur) for e in exps.values() if table_exists(con, "decisions", "flags")
               and (cur := flagstore.current(con, e.flag)) is not None and cur.value.get("state") == "shipped"]
    if not shipped:
        return ["- No shipped experiment yet: nothing to compare with a holdout."]
    if not table_exists(con, "metrics", "fact_bookings"):
        return ["- metrics.fact_bookings is not built yet: run gtm-pipeline refresh"]
    out = []
    for exp, cur in shipped:
        arm = str(cur.value.get("arm"))
        figures = arm_revenue(con, exp)
        base = HOLDOUT if figures.get(HOLDOUT, (0, 0))[0] > 0 else exp.control
        label = "holdout" if base == HOLDOUT else f"control {exp.control} (no holdout kept)"
        (n_arm, r_arm), (n_base, r_base) = figures.get(arm, (0, 0.0)), figures.get(base, (0, 0.0))
        if not n_arm or not n_base:
            out.append(f"- `{exp.experiment}`: shipped {arm} ({cur.decision_id}); too few units to compare "
                       f"({arm} {n_arm}, {label} {n_base})")
            continue
        per_arm, per_base = r_arm / n_arm, r_base / n_base
        out.append(f"- `{exp.experiment}`: shipped {arm} ({cur.decision_id}): ${per_arm:,.2f}/unit over {n_arm:,} "
                   f"units vs {label} ${per_base:,.2f}/unit over {n_base:,}: {per_arm - per_base:+,.2f}/unit, "
                   f"${(per_arm - per_base) * n_arm:+,.0f} on the shipped arm since {exp.starts}")
    return out


def _ttv(con: duckdb.DuckDBPyConnection, metric: str) -> str:
    if not table_exists(con, "metrics", metric):
        return f"- {metric}: not built yet (metrics.{metric} is not in the warehouse; metrics/ttv.py)"
    rows = con.execute(f"SELECT cohort_month, subjects, p50_days, reached_30d FROM metrics.{metric} "
                       f"WHERE segment = 'all' AND channel = 'all' AND cohort_month <> 'all' "
                       f"ORDER BY cohort_month DESC LIMIT 2").fetchall()
    if not rows:
        return f"- {metric}: no cohort yet"

    def show(x, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    (m, n, p50, r30) = rows[0]
    text = (f"- {metric}, cohort {m} ({n:,} subjects): p50 {show(p50, '.1f')} days, reached by 30 days "
            f"{show(r30, '.0%')}")
    if len(rows) > 1:
        pm, _, pp50, pr30 = rows[1]
        d50 = "-" if p50 is None or pp50 is None else f"{p50 - pp50:+.1f} days"
        d30 = "-" if r30 is None or pr30 is None else f"{(r30 - pr30) * 100:+.1f} pp"
        text += f"; vs {pm}: p50 {d50}, reached by 30 days {d30}"
    return text


def conversion_lines(con: duckdb.DuckDBPyConnection, as_of: date) -> list[str]:
    """Lead→SQL and SQL→win over the last 4 complete weeks against the 4 before (channel 'all')."""
    if not table_exists(con, "metrics", "sql_funnel"):
        return ["- conversion: metrics.sql_funnel is not built yet"]
    rows = con.execute("SELECT week, leads, sqls, wins FROM metrics.sql_funnel WHERE channel = 'all' AND "
                       "week <> 'all' AND CAST(week AS DATE) + INTERVAL 7 DAY <= ? ORDER BY week DESC",
                       [as_of]).fetchall()
    if len(rows) < 2 * CONVERSION_WEEKS:
        return [f"- conversion: fewer than {2 * CONVERSION_WEEKS} complete weeks in metrics.sql_funnel"]
    now, before = rows[:CONVERSION_WEEKS], rows[CONVERSION_WEEKS:2 * CONVERSION_WEEKS]

    def rates(part):
        leads, sqls, wins = (sum(int(r[i] or 0) for r in part) for i in (1, 2, 3))
        return (sqls / leads if leads else None), (wins / sqls if sqls else None)

    (s1, w1), (s0, w0) = rates(now), rates(before)

    def delta(a, b) -> str:
        return "-" if a is None or b is None else f"{a:.1%} vs {b:.1%} ({(a - b) * 100:+.1f} pp)"

    return [f"- Lead→SQL, weeks {now[-1][0]}..{now[0][0]} vs the 4 before: {delta(s1, s0)}",
            f"- SQL→win, same weeks: {delta(w1, w0)}"]


def risk_lines(dc: lifecycle.DecisionContext, decisions: list[lifecycle.Decision]) -> list[str]:
    con, out = dc.con, []
    if table_exists(con, "ops", "incidents"):
        for iid, sev, title in con.execute(f"SELECT incident_id, severity, title FROM ops.incidents WHERE {OPEN_SQL} "
                                           f"AND severity IN ('SEV1', 'SEV2') ORDER BY severity, opened_at"
                                           ).fetchall():
            out.append(f"- open {sev} `{iid}`: {title} (blocks the decisions that read it)")
    out += [f"- `{d.decision_id}` {d.node}: monitoring breached, reversal proposed and not done "
            f"({d.proposal.chosen_action})" for d in decisions if d.status == "reversal_proposed"]
    out += [f"- launch `{d.proposal.subject}` blocked: {d.last.details_dict.get('message', '')}"
            for d in decisions if d.node == LAUNCH_NODE and d.last.event == log.REFUSED]
    out += [f"- `{lk.experiment}`: {lk.verdict}" for lk in (latest_looks(con) or {}).values()
            if lk.verdict.startswith("invalid")]
    return out or ["- None open."]


def bet_lines(dc: lifecycle.DecisionContext, decisions: list[lifecycle.Decision]) -> list[str]:
    exps, problem = experiments_or_problem(dc.contracts_dir)
    out = [f"- {problem}"] if problem else []
    try:
        items = backlog(dc.con, exps, dc.clock())[:3]
    except (duckdb.Error, GtmPipelineError) as e:       # a young warehouse: the backlog's inputs are not built yet
        items, out = [], [*out, f"- backlog not available yet: {str(e).splitlines()[0]}"]
    for i, it in enumerate(items, 1):
        score = "-" if it.score is None else f"${it.score:,.0f}/week"
        out.append(f"- {i}. `{it.experiment}`: score {score}, P(win) {it.p_win:.2f}, {it.weeks:.1f} weeks; {it.status}")
    out += [f"- launch `{d.proposal.subject}`: gate passed ({d.decision_id}), waiting for gtm-pipeline launches "
            f"apply {d.proposal.subject}" for d in decisions
            if d.node == LAUNCH_NODE and d.status == "gate_passed" and d.last.event == log.PROPOSED]
    return out or ["- None ranked."]


def monthly_readout_sections(dc: lifecycle.DecisionContext, decisions: list[lifecycle.Decision],
                             as_of: date) -> list[str]:
    """The monthly business readout's sections, as markdown lines."""
    return ["## Revenue of shipped experiments against holdouts", "", *shipped_revenue_lines(dc),
            "", "## Time to value and conversion deltas", "", _ttv(dc.con, "ttfv"), _ttv(dc.con, "ttpv"),
            *conversion_lines(dc.con, as_of),
            "", "## Risks", "", *risk_lines(dc, decisions),
            "", "## Upcoming bets", "", *bet_lines(dc, decisions), ""]

