"""The weekly execution review's sections (spec 000 §5 "Weekly execution review"; issue 20 §4), added to the weekly
ops packet: experiment status and blockers, funnel anomalies, incident triage, and the week's learnings. Every line
is read from a warehouse table -- metrics.experiment_readout, metrics.sql_funnel, ops.incidents, decisions.log,
decisions.flags -- and a table not built yet says so instead of an empty section.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb

from gtm_pipeline.decisions import flags as flagstore
from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.experiments.contract import Experiment, load_experiments, metric_columns
from gtm_pipeline.warehouse import OPEN_SQL, scalar, table_exists

# A funnel anomaly: the latest complete week's lead volume or SQL rate moved this much (relative) from the four weeks
# before, on a channel with at least this many leads a week in those weeks (fewer: noise, not news).
ANOMALY_CHANGE = 0.25
ANOMALY_MIN_LEADS = 20
BASELINE_WEEKS = 4
EXPERIMENT_NODE, LAUNCH_NODE = "experiment.ship", "launch.gate"
TERMINAL = ("ship ", "roll back", "stop")


def experiments_or_problem(contracts_dir: Path) -> tuple[dict[str, Experiment], str]:
    """The experiment contracts, or none and the load problem (a packet still renders with a broken contract)."""
    try:
        return load_experiments(contracts_dir, metric_columns(contracts_dir)), ""
    except GtmPipelineError as e:
        return {}, f"experiment contracts do not load: {e}"


@dataclass(frozen=True)
class Look:
    experiment: str
    look: int
    as_of: datetime
    verdict: str
    srm_p: float | None
    units: int
    arms: str               # "short_form +0.031 [+0.008, +0.054]; ..." (treatments against the control)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}"


def latest_looks(con: duckdb.DuckDBPyConnection) -> dict[str, Look] | None:
    """The latest look of every experiment in metrics.experiment_readout (None: the table is not built yet)."""
    if not table_exists(con, "metrics", "experiment_readout"):
        return None
    rows = con.execute(
        "SELECT r.experiment, r.look, r.as_of, r.arm, r.is_control, r.units, r.estimate, r.ci_low, r.ci_high, "
        "r.srm_p, r.verdict FROM metrics.experiment_readout r JOIN (SELECT experiment, max(look) AS look FROM "
        "metrics.experiment_readout GROUP BY 1) m USING (experiment, look) "
        "ORDER BY r.experiment, r.is_control DESC, r.arm").fetchall()
    out: dict[str, Look] = {}
    for exp, look, as_of, arm, is_control, units, est, lo, hi, srm, verdict in rows:
        prev = out.get(exp)
        text = "" if is_control else f"{arm} {_fmt(est)} [{_fmt(lo)}, {_fmt(hi)}]"
        arms = "; ".join(t for t in ((prev.arms if prev else ""), text) if t)
        out[exp] = Look(exp, int(look), as_of, str(verdict), srm, (prev.units if prev else 0) + int(units), arms)
    return out


def _refusals(decisions: list[lifecycle.Decision], node: str, period) -> list[tuple[str, log.Entry]]:
    return [(d.proposal.subject, e) for d in decisions if d.node == node for e in d.entries
            if e.event == log.REFUSED and e.ts in period]


def experiment_lines(con: duckdb.DuckDBPyConnection, contracts_dir: Path, decisions: list[lifecycle.Decision],
                     period, as_of: date) -> tuple[list[str], list[str]]:
    """(status of every experiment, the blockers): a split failing SRM, a ship decision refused by a gate in the
    period, an experiment past its start without a look, a launch whose gate is blocked."""
    exps, problem = experiments_or_problem(contracts_dir)
    looks = latest_looks(con)
    status: list[str] = [f"- {problem}"] if problem else []
    blockers: list[str] = []
    if looks is None:
        status.append("- metrics.experiment_readout is not built yet: run gtm-pipeline refresh")
        looks = {}
    for name, exp in sorted(exps.items()):
        lk = looks.get(name)
        cur = flagstore.current(con, exp.flag) if table_exists(con, "decisions", "flags") else None
        flag = f"{exp.flag} = {cur.value}" if cur else f"{exp.flag} not set"
        if lk is None:
            status.append(f"- `{name}` ({exp.owner}): no look yet (starts {exp.starts}); {flag}")
            if exp.starts <= as_of and looks:
                blockers.append(f"- `{name}`: started {exp.starts} but has no look in metrics.experiment_readout; "
                                f"check its units and run gtm-pipeline refresh")
            continue
        status.append(f"- `{name}` ({exp.owner}): look {lk.look} ({lk.as_of:%Y-%m-%d}), {lk.units:,} units; "
                      f"{lk.arms or 'control only'}; verdict **{lk.verdict}**; {flag}")
        if lk.verdict.startswith("invalid"):
            srm = "-" if lk.srm_p is None else f"{lk.srm_p:.2g}"
            blockers.append(f"- `{name}`: {lk.verdict} (SRM p {srm}); the split is broken: fix the assignment and "
                            f"restart the experiment with a new salt")
    for subject, e in _refusals(decisions, EXPERIMENT_NODE, period):
        det = e.details_dict
        blockers.append(f"- `{subject}`: decision `{e.decision_id}` refused at {det.get('step', '?')} "
                        f"({log_time(e.ts)}): {det.get('message') or det.get('detail', '')}")
    for d in decisions:
        if d.node == LAUNCH_NODE and d.last.event == log.REFUSED:
            blockers.append(f"- launch `{d.proposal.subject}`: {d.last.details_dict.get('message', 'blocked')}")
    return status or ["- No experiment contracts in contracts/experiments."], blockers


def log_time(ts: datetime) -> str:
    return f"{ts:%Y-%m-%d %H:%M} UTC"


def _week_start(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def funnel_anomaly_lines(con: duckdb.DuckDBPyConnection, as_of: date) -> list[str]:
    """Channels whose latest complete week moved >= 25 % in lead volume or SQL rate from the 4 weeks before."""
    if not table_exists(con, "metrics", "sql_funnel"):
        return ["- metrics.sql_funnel is not built yet: run gtm-pipeline refresh"]
    rows = con.execute("SELECT channel, week, leads, sqls FROM metrics.sql_funnel WHERE week <> 'all'").fetchall()
    weeks = sorted({w for _, w, _, _ in rows if (s := _week_start(w)) and s + timedelta(days=7) <= as_of})
    if len(weeks) < BASELINE_WEEKS + 1:
        return [f"- Fewer than {BASELINE_WEEKS + 1} complete weeks in metrics.sql_funnel: no baseline yet."]
    latest, base = weeks[-1], set(weeks[-1 - BASELINE_WEEKS:-1])
    by: dict[str, dict[str, list[int]]] = {}
    for ch, w, leads, sqls in rows:
        cell = by.setdefault(ch, {"now": [0, 0], "base": [0, 0]})
        part = "now" if w == latest else "base" if w in base else None
        if part:
            cell[part][0] += int(leads or 0)
            cell[part][1] += int(sqls or 0)
    out = []
    for ch, c in sorted(by.items()):
        (n_leads, n_sqls), (b_leads, b_sqls) = c["now"], c["base"]
        per_week = b_leads / BASELINE_WEEKS
        if per_week < ANOMALY_MIN_LEADS:
            continue
        moves = [f"leads {n_leads:,} vs {per_week:,.1f}/week ({n_leads / per_week - 1:+.0%})"] \
            if abs(n_leads / per_week - 1) >= ANOMALY_CHANGE else []
        b_rate, n_rate = b_sqls / b_leads, (n_sqls / n_leads if n_leads else 0.0)
        if b_rate > 0 and abs(n_rate / b_rate - 1) >= ANOMALY_CHANGE:
            moves.append(f"SQL rate {n_rate:.1%} vs {b_rate:.1%} ({n_rate / b_rate - 1:+.0%})")
        if moves:
            out.append(f"- **{ch}**, week of {latest}: " + "; ".join(moves))
    return out or [f"- None: every channel with >= {ANOMALY_MIN_LEADS} leads a week is within "
                   f"±{ANOMALY_CHANGE:.0%} of its {BASELINE_WEEKS}-week baseline (week of {latest})."]


def _age(since: datetime, now: datetime) -> str:
    s = max(0, int((now - since).total_seconds()))
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def triage_lines(con: duckdb.DuckDBPyConnection, now: datetime, period) -> list[str]:
    """Every open or acknowledged incident, worst first, with its age, what it is on and the next step."""
    if not table_exists(con, "ops", "incidents"):
        return ["- No incident table yet: nothing to triage."]
    rows = con.execute(f"SELECT incident_id, severity, status, opened_at, title, coalesce(entity, asset_key, '-'), "
                       f"owner, acknowledged_by FROM ops.incidents WHERE {OPEN_SQL} "
                       f"ORDER BY severity, opened_at").fetchall()
    opened = scalar(con, "SELECT count(*) FROM ops.incidents WHERE opened_at > ? AND opened_at <= ?",
                    [period.start, period.end])
    resolved = scalar(con, "SELECT count(*) FROM ops.incidents WHERE resolved_at > ? AND resolved_at <= ?",
                      [period.start, period.end])
    out = [f"- This period: {opened} opened, {resolved} resolved; {len(rows)} open now."]
    for iid, sev, status, opened_at, title, on, owner, ack in rows:
        step = (f"acknowledged by {ack}; next: gtm-pipeline incidents resolve {iid} --by NAME --note TEXT"
                if status == "acknowledged" else f"next: gtm-pipeline incidents ack {iid} --by NAME")
        out.append(f"- **{sev}** `{iid}` ({status}, {_age(opened_at, now)} old): {title} -- on {on}; "
                   f"owner {owner or '-'}; {step}")
    return out


def learning_lines(decisions: list[lifecycle.Decision], looks: dict[str, Look] | None, period) -> list[str]:
    """What the period settled: experiments whose latest look reached a verdict, and decisions applied, confirmed,
    reversed or rejected (a reversal says what the monitoring caught)."""
    out = [f"- `{lk.experiment}` look {lk.look}: {lk.verdict} ({lk.arms})" for lk in (looks or {}).values()
           if lk.verdict.startswith(TERMINAL) and lk.as_of.date() > period.since]
    for d in decisions:
        for e in d.entries:
            if e.ts in period and e.event in (log.APPLIED, log.CONFIRMED, log.REVERSED, log.REJECTED):
                why = e.reversal_outcome or e.details_dict.get("reason", "")
                out.append(f"- {log_time(e.ts)} `{d.decision_id}` {d.node}: {e.event} -- {d.proposal.chosen_action}"
                           + (f" ({why})" if why else ""))
    return out or ["- None in this period."]


def weekly_execution_sections(dc: lifecycle.DecisionContext, decisions: list[lifecycle.Decision], period,
                              as_of: date) -> list[str]:
    """The four sections of the weekly execution review, as markdown lines."""
    status, blockers = experiment_lines(dc.con, dc.contracts_dir, decisions, period, as_of)
    return ["## Experiment status", "", *status, "", "## Blockers", "", *(blockers or ["- None."]),
            "", "## Funnel anomalies", "", *funnel_anomaly_lines(dc.con, as_of),
            "", "## Incident triage", "", *triage_lines(dc.con, dc.clock(), period),
            "", "## Learnings", "", *learning_lines(decisions, latest_looks(dc.con), period), ""]
