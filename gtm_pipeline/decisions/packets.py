"""Review packets for the spec's review cadences (front matter ``review_cadence``; §5 "Review Cadences"; issue 14 §6
"Cadences as the spec writes them"), all in ET (America/New_York):

* weekly ops -- Tuesdays 10:00: routing, sequencer, hygiene health + pending decisions;
* monthly business review -- the first Wednesday of the month, 13:00: pricing, channel, ...;
* quarterly plan -- 10 days before the quarter starts (Dec 22, Mar 22, Jun 21, Sep 21), 09:00;
* biweekly architecture sync -- Thursdays of every other ISO week, 14:00 (`architecture_sync`).

Spec 000 §5's operating-model sections follow the decision sections in the packets of their cadence: the weekly
execution review (`weekly_review`) in weekly ops, the monthly business readout (`monthly_readout`) in the monthly
business review, and the architecture sync's own (`architecture_sync`).

The days are the spec's; the times of day are settings (`gtm_pipeline.config.ReviewTimes`: GTM_PIPELINE_WEEKLY_OPS_AT,
GTM_PIPELINE_MONTHLY_REVIEW_AT, GTM_PIPELINE_QUARTERLY_PLAN_AT, GTM_PIPELINE_ARCHITECTURE_SYNC_AT). The date rules are
plain functions so the schedules that call them can be tested on any date.

A packet is markdown at ``<data_dir>/packets/<cadence>-<date>.md``: pending decisions (whatever is open now), the
refusals and monitoring breaches of its period, SLO health, decisions under monitoring and due for review, hygiene
(incidents, quarantine, DLQ) and the decision log's integrity in the words `verify` uses. Its **period** runs from
the previous review of the same cadence (the last scheduled day before ``as_of``, at its time of day) until the packet
is built -- a packet back-dated with ``--as-of`` stops at the end of that day -- so one scheduled packet starts where
the one before it ended and nothing falls between two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gtm_pipeline import keys
from gtm_pipeline.config import DECISION_LOG_KEY_ENV, ReviewTimes, load_settings
from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.decisions.architecture_sync import architecture_sync_sections, is_architecture_sync_day
from gtm_pipeline.decisions.monthly_readout import monthly_readout_sections
from gtm_pipeline.decisions.weekly_review import weekly_execution_sections
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import existing_tables, table_exists

TITLES = {"weekly_ops": "Weekly ops review", "monthly_business_review": "Monthly business review",
          "quarterly_plan": "Quarterly plan", "biweekly_architecture": "Biweekly architecture sync"}
QUARTERLY_LEAD_DAYS = 10
ET = ZoneInfo(keys.REVIEW_TIMEZONE)
LOG_DOC = 'docs/decisions.md, "The decision log"'


def _check_cadence(cadence: str) -> None:
    if cadence not in TITLES:
        raise GtmPipelineError(f"review cadence {cadence!r} is not one of {', '.join(TITLES)}; set the packet's "
                               f"cadence (--cadence, or the review_packet asset's config) to one of them")


# ---- the days of the cadences ---------------------------------------------------------------------------------------

def is_weekly_ops_day(d: date) -> bool:
    return d.weekday() == 1          # Tuesday


def is_first_wednesday(d: date) -> bool:
    return d.weekday() == 2 and d.day <= 7


def next_quarter_start(d: date) -> date:
    """The first day of the quarter after the one ``d`` is in (Dec 22 -> Jan 1 of the next year)."""
    month = (d.month - 1) // 3 * 3 + 4
    return date(d.year + 1, 1, 1) if month > 12 else date(d.year, month, 1)


def quarterly_plan_day(quarter_start: date) -> date:
    """The quarterly plan for the quarter starting ``quarter_start``: 10 days before it (no February in between, so
    leap years change nothing: Dec 22, Mar 22, Jun 21, Sep 21)."""
    return quarter_start - timedelta(days=QUARTERLY_LEAD_DAYS)


def is_quarterly_plan_day(d: date) -> bool:
    """Is ``d`` 10 days before the start of the next quarter?"""
    return d == quarterly_plan_day(next_quarter_start(d))


IS_REVIEW_DAY = {"weekly_ops": is_weekly_ops_day, "monthly_business_review": is_first_wednesday,
                 "quarterly_plan": is_quarterly_plan_day, "biweekly_architecture": is_architecture_sync_day}


def previous_review_day(cadence: str, as_of: date) -> date:
    """The last day before ``as_of`` on which ``cadence`` is scheduled (at most a quarter back)."""
    _check_cadence(cadence)
    d = as_of - timedelta(days=1)
    while not IS_REVIEW_DAY[cadence](d):
        d -= timedelta(days=1)
    return d


# ---- the period a packet covers -------------------------------------------------------------------------------------

def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def et_text(ts: datetime) -> str:
    """A naive UTC time (decisions.log ``ts``) as the reviewers read it: ``2026-12-01 10:00 EST``."""
    return ts.replace(tzinfo=UTC).astimezone(ET).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class Period:
    """(start, end] in naive UTC, the zone of decisions.log ``ts``: an entry written at the previous review's instant
    was that packet's to show; one written as this packet is built is this one's. ``since`` is the previous review's
    day."""

    cadence: str
    since: date
    start: datetime
    end: datetime

    def __contains__(self, ts: datetime) -> bool:
        return self.start < ts <= self.end

    def describe(self) -> str:
        return f"{et_text(self.start)} (the previous {TITLES[self.cadence].lower()}) to {et_text(self.end)}"


def period_for(cadence: str, as_of: date, at: time, now: datetime) -> Period:
    """From the previous review of ``cadence`` (its day at ``at``, ET) until ``now`` (naive UTC), or until the end of
    ``as_of`` in ET when that is earlier (a back-dated packet)."""
    since = previous_review_day(cadence, as_of)
    start = _utc(datetime.combine(since, at, tzinfo=ET))
    end_of_day = _utc(datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=ET))
    return Period(cadence, since, start, min(now, end_of_day))


# ---- the sections ---------------------------------------------------------------------------------------------------

def _pending(pending: list[lifecycle.Decision]) -> list[str]:
    if not pending:
        return ["None."]
    lines = ["| decision | node | action | status | waiting for | memo |", "|---|---|---|---|---|---|"]
    for d in pending:
        waiting = ", ".join(r for r in d.proposal.approvers if r not in d.approvals) \
            if d.status in ("proposed", "pending_approval") else ("owner to apply" if d.status == "approved"
                                                                  else "owner/approver to reverse")
        lines.append(f"| `{d.decision_id}` | {d.node} | {d.proposal.chosen_action} | {d.status} | {waiting} | "
                     f"memos/{d.decision_id}.md |")
    return lines


def _slo_lines(slo_line: str) -> list[str]:
    """The health verdict, then one bullet per reason (a red verdict lists every stale asset: unreadable as one
    line)."""
    head, sep, rest = slo_line.partition(": ")
    if not sep or not head.startswith("SLO health red"):
        return [f"- {slo_line}"]
    return [f"- **{head}**", *(f"  - {r}" for r in rest.split("; "))]


def refusal_lines(decisions: list[lifecycle.Decision], period: Period) -> list[str]:
    """Every ``refused`` entry of the period (a gate or the roster said no at approve, apply or reverse)."""
    found = []
    for d in decisions:
        for e in d.entries:
            if e.event == log.REFUSED and e.ts in period:
                det = e.details_dict
                who = (e.actor or "?") + (f" as {det['role']}" if det.get("role") else "")
                found.append((e.entry_id, f"- {et_text(e.ts)} `{d.decision_id}` {d.node}: {det.get('step', '?')} "
                                          f"by {who} -- {det.get('message') or det.get('detail', '')} "
                                          f"(gate `{det.get('gate', '?')}`; log entry #{e.entry_id})"))
    return [line for _, line in sorted(found)]


def _is_breach(d: lifecycle.Decision, i: int) -> bool:
    """A monitored entry with breached checks, or a reversal proposed without one just before it."""
    e = d.entries[i]
    if e.event == log.MONITORED:
        return bool(e.details_dict.get("breached"))
    return e.event == log.REVERSAL_PROPOSED and not (i and _is_breach(d, i - 1))


def _after_breach(d: lifecycle.Decision) -> str:
    if d.status == "reversal_proposed":
        return (f"reversal proposed, not done yet: the owner or an approver runs gtm-pipeline decisions reverse "
                f"{d.decision_id} --by ... --reason ...")
    if d.status == "reversed":
        rev = d.latest(log.REVERSED)
        return f"reversed: {rev.reversal_outcome}" if rev is not None and rev.reversal_outcome else "reversed"
    return f"now {d.status}"


def breach_lines(decisions: list[lifecycle.Decision], period: Period) -> tuple[list[str], list[str]]:
    """(every monitoring breach of the period with what followed it, reversals still open from before the period)."""
    found, seen = [], set()
    for d in decisions:
        for i, e in enumerate(d.entries):
            if e.ts in period and _is_breach(d, i):
                seen.add(d.decision_id)
                what = "; ".join(e.details_dict.get("breached") or []) or e.details_dict.get("reason", "breach")
                found.append((e.entry_id, f"- {et_text(e.ts)} `{d.decision_id}` {d.node} ({d.proposal.chosen_action})"
                                          f": {what} -- {_after_breach(d)}"))
    earlier = [f"- still open from before this period: `{d.decision_id}` {d.node}, reversal proposed "
               f"{et_text(d.entry(log.REVERSAL_PROPOSED).ts)} and not done yet"
               for d in decisions if d.status == "reversal_proposed" and d.decision_id not in seen]
    return [line for _, line in sorted(found)], earlier


def integrity_lines(report) -> list[str]:
    """The decision log's state as `gtm-pipeline decisions verify` reports it (`verify.VerifyReport`): keyed and
    verified, UNKEYED, UNVERIFIED or BROKEN at the first bad entry -- never "verified" for a chain no key checked."""
    extra: list[str] = []
    if report.status == "tampered":
        p = report.first
        verdict = (f"**BROKEN at entry #{p.entry_id}** ({p.kind}): {p.detail}. Nothing more is applied or approved "
                   f"until it is restored: run gtm-pipeline decisions verify, restore decisions.log and its "
                   f"checkpoint file from a backup ({LOG_DOC})")
        extra = [f"- also {q}" for q in report.problems[1:]]
    elif report.status == "unkeyed":
        verdict = (f"**UNKEYED**: tamper evidence limited -- plain hashes, which anyone who can write the data folder "
                   f"can recompute; set {DECISION_LOG_KEY_ENV} ({LOG_DOC})")
    elif report.status == "unverified":
        verdict = (f"**UNVERIFIED**: {report.unchecked} keyed entries could not be checked, {DECISION_LOG_KEY_ENV} "
                   f"is not set where this packet was built; set it to the log's key ({LOG_DOC})")
    else:
        verdict = "**Keyed and verified**: every entry's HMAC and the checkpoint file check out under the key"
    return ([f"- {verdict}", f"- gtm-pipeline decisions verify: {report.summary()}", *extra]
            + [f"- WARNING: {w}" for w in report.warnings])


def _hygiene(con) -> list[str]:
    lines = []
    if table_exists(con, "ops", "incidents"):
        rows = con.execute("SELECT severity, count(*) FROM ops.incidents WHERE status IN ('open', 'acknowledged') "
                           "GROUP BY 1 ORDER BY 1").fetchall()
        lines.append("- Open incidents: " + (", ".join(f"{s} {n}" for s, n in rows) or "none"))
        for i, s, t in con.execute("SELECT incident_id, severity, title FROM ops.incidents "
                                   "WHERE status IN ('open', 'acknowledged') "
                                   "ORDER BY severity, opened_at LIMIT 5").fetchall():
            lines.append(f"  - {i} {s}: {t}")
    quarantined = []
    for t in sorted(existing_tables(con, "quarantine")):
        cols = {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                          "'quarantine' AND table_name = ?", [t]).fetchall()}
        where = " WHERE status = 'open'" if "status" in cols else ""
        n = con.execute(f'SELECT count(*) FROM quarantine."{t}"{where}').fetchone()[0]
        if n:
            quarantined.append(f"{t} {n:,}")
    lines.append("- Quarantine (open rows): " + (", ".join(quarantined) or "empty"))
    if table_exists(con, "ops", "routing_dlq"):
        n = con.execute("SELECT count(*) FROM ops.routing_dlq WHERE status = 'open'").fetchone()[0]
        lines.append(f"- Routing DLQ: {n:,} open")
    return lines


# ---- the packet -----------------------------------------------------------------------------------------------------

@dataclass
class Packet:
    cadence: str
    as_of: date
    path: Path
    markdown: str
    pending: int
    in_flight: int
    due: int
    refusals: int = 0
    breaches: int = 0
    log_status: str = ""          # verify's status: ok | unkeyed | unverified | tampered
    period: Period | None = None


def _cadence_sections(dc: lifecycle.DecisionContext, cadence: str, decisions: list[lifecycle.Decision],
                      period: Period, as_of: date) -> list[str]:
    """The operating model's sections of the cadence (spec 000 §5; issue 20 §4), after the decision sections of
    issue 14 and before the log's integrity; each ends with a blank line."""
    if cadence == "weekly_ops":
        return weekly_execution_sections(dc, decisions, period, as_of)
    if cadence == "monthly_business_review":
        return monthly_readout_sections(dc, decisions, as_of)
    if cadence == "biweekly_architecture":
        return architecture_sync_sections(dc, decisions, period)
    return []


def build_packet(dc: lifecycle.DecisionContext, cadence: str, as_of: date, slo_line: str,
                 times: ReviewTimes | None = None) -> Packet:
    """Render and write the packet for ``cadence`` as of ``as_of``; ``slo_line`` is the SLO health verdict, ``times``
    the cadences' times of day (default: the settings')."""
    _check_cadence(cadence)
    if times is None:
        times = load_settings().review_times
    period = period_for(cadence, as_of, times.of(cadence), dc.clock())
    decisions = lifecycle.all_decisions(dc)
    pending = [d for d in decisions if d.status in (*log.OPEN_STATUSES, "reversal_proposed")]
    flying = [d for d in decisions if d.status == "applied"]
    due = [d for d in decisions if d.proposal.review_date and d.proposal.review_date <= as_of
           and d.status not in ("rejected", "superseded")]
    refused = refusal_lines(decisions, period)
    breached, still_open = breach_lines(decisions, period)
    nodes = [pb for pb in dc.playbooks.values() if pb.cadence == cadence]
    lines = [f"# {TITLES[cadence]} — {as_of.isoformat()}", "",
             "Nodes on this cadence: " + (", ".join(f"`{pb.node}` (owner {pb.owner})" for pb in nodes) or "none")
             + ". Cadence is how often a decision is considered, not a mandate to change.", "",
             f"Period of the refusals and breaches below: {period.describe()}.", ""]
    lines += ["## Pending decisions", "", *_pending(pending)]
    lines += ["", "## Refusals", "", *(refused or ["None in this period."])]
    lines += ["", "## Monitoring breaches", "", *(breached or ["None in this period."]), *still_open]
    lines += ["", "## SLO health", "", *_slo_lines(slo_line)]
    lines += ["", "## Applied, under monitoring", ""]
    for d in flying:
        mon = d.latest(log.MONITORED)
        checks = "; ".join(r["text"] for r in mon.details_dict.get("results", [])) if mon else "no data yet"
        lines.append(f"- `{d.decision_id}` {d.node}: {d.proposal.chosen_action} — {checks}")
    lines += [] if flying else ["None."]
    lines += ["", "## Decisions due for review", ""]
    lines += [f"- `{d.decision_id}` {d.node} ({d.status}), review date {d.proposal.review_date}: "
              f"{d.proposal.chosen_action}" for d in due] or ["None."]
    lines += ["", "## Hygiene (quarantine and incidents)", "", *_hygiene(dc.con), ""]
    lines += _cadence_sections(dc, cadence, decisions, period, as_of)
    report = log.verify(dc.con, dc.head)
    lines += ["## Decision log integrity", "", *integrity_lines(report)]
    md = "\n".join(lines) + "\n"
    path = dc.packet_dir / f"{cadence}-{as_of.isoformat()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md, encoding="utf-8")
    return Packet(cadence, as_of, path, md, len(pending), len(flying), len(due), refusals=len(refused),
                  breaches=len(breached),
                  log_status=report.status, period=period)
