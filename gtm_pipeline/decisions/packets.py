"""Review packets for the spec's review cadences (front matter ``review_cadence``; §5 "Review Cadences"):

* weekly ops -- Tue 10:00 ET: routing, sequencer, hygiene health + pending decisions;
* monthly business review -- 1st Wed 13:00 ET: pricing, channel, ...;
* quarterly plan -- 10 days before quarter end (Q-10d).

A packet is markdown at ``<data_dir>/packets/<cadence>-<date>.md``: pending decisions, decisions in flight with
their latest monitoring, decisions due for review, SLO health and open incidents, and hygiene (quarantine, DLQ).
The date rules are plain functions so the schedules that call them can be tested on any date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from gtm_pipeline.decisions import lifecycle, log
from gtm_pipeline.warehouse import table_exists

TITLES = {"weekly_ops": "Weekly ops review", "monthly_business_review": "Monthly business review",
          "quarterly_plan": "Quarterly plan"}
QUARTERLY_LEAD_DAYS = 10


def is_first_wednesday(d: date) -> bool:
    return d.weekday() == 2 and d.day <= 7


def quarter_end(d: date) -> date:
    month = ((d.month - 1) // 3 + 1) * 3
    nxt = date(d.year + (month == 12), month % 12 + 1, 1)
    return nxt - timedelta(days=1)


def is_quarterly_plan_day(d: date) -> bool:
    """Q-10d: ten days before the last day of the quarter (Mar 21, Jun 20, Sep 20, Dec 21)."""
    return d == quarter_end(d) - timedelta(days=QUARTERLY_LEAD_DAYS)


@dataclass
class Packet:
    cadence: str
    as_of: date
    path: Path
    markdown: str
    pending: int
    in_flight: int
    due: int


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
    for (t,) in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'quarantine' "
                            "ORDER BY 1").fetchall():
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


def build_packet(dc: lifecycle.DecisionContext, cadence: str, as_of: date, slo_line: str) -> Packet:
    """Render and write the packet for ``cadence`` as of ``as_of``; ``slo_line`` is the SLO health verdict."""
    if cadence not in TITLES:
        raise ValueError(f"cadence {cadence!r}; one of {', '.join(TITLES)}")
    decisions = lifecycle.all_decisions(dc)
    pending = [d for d in decisions if d.status in (*log.OPEN_STATUSES, "reversal_proposed")]
    flying = [d for d in decisions if d.status == "applied"]
    due = [d for d in decisions if d.proposal.review_date and d.proposal.review_date <= as_of
           and d.status not in ("rejected", "superseded")]
    nodes = [pb for pb in dc.playbooks.values() if pb.cadence == cadence]
    lines = [f"# {TITLES[cadence]} — {as_of.isoformat()}", "",
             "Nodes on this cadence: " + (", ".join(f"`{pb.node}` (owner {pb.owner})" for pb in nodes) or "none")
             + ". Cadence is how often a decision is considered, not a mandate to change.", ""]
    lines += ["## Pending decisions", ""]
    if pending:
        lines += ["| decision | node | action | status | waiting for | memo |", "|---|---|---|---|---|---|"]
        for d in pending:
            waiting = ", ".join(r for r in d.proposal.approvers if r not in d.approvals) \
                if d.status in ("proposed", "pending_approval") else ("owner to apply" if d.status == "approved"
                                                                      else "owner/approver to reverse")
            lines.append(f"| `{d.decision_id}` | {d.node} | {d.proposal.chosen_action} | {d.status} | {waiting} | "
                         f"memos/{d.decision_id}.md |")
    else:
        lines.append("None.")
    lines += ["", "## Applied, under monitoring", ""]
    if flying:
        for d in flying:
            mon = d.latest(log.MONITORED)
            checks = "; ".join(r["text"] for r in mon.details_dict.get("results", [])) if mon else "no data yet"
            lines.append(f"- `{d.decision_id}` {d.node}: {d.proposal.chosen_action} — {checks}")
    else:
        lines.append("None.")
    lines += ["", "## Decisions due for review", ""]
    lines += [f"- `{d.decision_id}` {d.node} ({d.status}), review date {d.proposal.review_date}: "
              f"{d.proposal.chosen_action}" for d in due] or ["None."]
    lines += ["", "## SLO health", "", f"- {slo_line}", "", "## Hygiene (quarantine and incidents)", ""]
    lines += _hygiene(dc.con)
    chain = log.verify(dc.con, dc.head)
    lines += ["", "## Decision log integrity", "",
              f"- {chain.entries} entries; " + ("chain verified" if chain.ok else f"BROKEN: {chain.first}")]
    md = "\n".join(lines) + "\n"
    path = dc.packet_dir / f"{cadence}-{as_of.isoformat()}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md, encoding="utf-8")
    return Packet(cadence, as_of, path, md, len(pending), len(flying), len(due))
