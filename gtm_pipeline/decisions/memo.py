"""Decision memos (spec 002 §5 "Decision Memo Template"): one markdown file per decision, re-rendered after every log
entry, at ``<data_dir>/memos/<decision_id>.md``. Sections, in the spec's order: Decision, Context, Options
considered, Metrics & contracts referenced, Decision & thresholds, Risk & reversal, Owners & approvals, Monitoring
plan (dashboards); then the decision's log entries with their hashes."""

from __future__ import annotations

import json
from pathlib import Path

from gtm_pipeline.decisions import log
from gtm_pipeline.decisions.context import DecisionContext
from gtm_pipeline.decisions.record import Decision, get


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)
    return "—" if v is None else str(v)


def _figures(figures: dict) -> list[str]:
    lines = []
    for k, v in figures.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            cols = sorted({c for x in v.values() for c in x})
            lines += ["", f"{k}:", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            lines += [f"| {name} | " + " | ".join(_fmt(x.get(c)) for c in cols) + " |" for name, x in v.items()]
            lines.append("")
        else:
            lines.append(f"- {k}: {_fmt(v)}")
    return lines


def render(dc: DecisionContext, d: Decision) -> str:
    p = d.proposal
    det = p.details_dict
    pb = dc.playbooks.get(d.node)
    lines = [f"# Decision: {p.chosen_action}", "",
             f"`{d.decision_id}` · node `{d.node}` · subject `{p.subject}` · status **{d.status}** · "
             f"review by {p.review_date}", ""]
    lines += ["## Context", "",
              f"- Proposed {p.ts:%Y-%m-%d %H:%M} UTC by the `{d.node}` evaluation "
              f"(playbook {p.playbook_version}; spec {pb.spec if pb else ''}).",
              f"- Taxonomy: owner {p.owner}; reversibility {det.get('reversibility')}; risk class "
              f"{det.get('risk_class')}; cadence {det.get('cadence')} (how often the node is considered, not a "
              f"mandate to change).",
              "- Pre-checks: " + "; ".join(det.get("prechecks", [])),
              f"- Inputs version: {p.inputs_version}",
              f"- Inputs hash: `{p.inputs_hash}` (rows kept in decisions.inputs)", ""]
    lines += ["## Options considered", ""] + [f"- {o}" for o in det.get("options", [])] + [""]
    lines += ["## Metrics & contracts referenced", ""]
    lines += [f"- `metrics.{t}` — contracts/metrics/{t}.yaml" for t in (pb.inputs if pb else [])]
    lines += ["", "Figures behind the decision:", ""] + _figures(det.get("figures", {})) + [""]
    lines += ["## Decision & thresholds", "", f"**{p.chosen_action}**", "",
              f"Flag `{d.action.get('flag')}`: v{d.action.get('based_on_version')} → "
              f"`{json.dumps(d.action.get('new_value'), sort_keys=True)}`", "",
              "| threshold | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(p.thresholds_dict.items())]
    lines += ["", "Why:", ""] + [f"- {r}" for r in det.get("reasons", [])] + [""]
    reversed_ = d.latest(log.REVERSED)
    lines += ["## Risk & reversal", "", f"- Risk: {p.risk_notes}", f"- Reversal plan: {p.reversal_plan}",
              f"- Reversal outcome: {reversed_.reversal_outcome if reversed_ else 'not reversed'}", ""]
    lines += ["## Owners & approvals", "", f"- Owner: {p.owner} ({', '.join(dc.roster.people(p.owner))})"]
    approvals = {e.details_dict["role"]: e for e in d.entries if e.event == log.APPROVAL}
    for role in p.approvers:
        e = approvals.get(role)
        lines.append(f"- Approver {role}: " + (f"approved by {e.actor} at {e.ts:%Y-%m-%d %H:%M} UTC" if e
                                               else "pending"))
    rej = d.latest(log.REJECTED)
    if rej:
        lines.append(f"- Rejected by {rej.actor} ({rej.details_dict.get('role')}): {rej.details_dict.get('reason')}")
    app = d.latest(log.APPLIED)
    if app:
        a = app.details_dict
        lines.append(f"- Applied by {app.actor} at {app.ts:%Y-%m-%d %H:%M} UTC: {a['flag']} v{a['from_version']} → "
                     f"v{a['to_version']}, effective {a['effective_date']}")
    lines += ["", "## Monitoring plan (dashboards)", ""]
    lines += [f"- {w} — over {det.get('monitoring_window_days')} days after the change" for w in det.get("monitoring",
                                                                                                        [])]
    lines += ["- Dashboards: Dagster asset `decisions/monitoring` (latest checks), the metric assets above, "
              "`gtm-pipeline decisions show " + d.decision_id + "`"]
    mon = d.latest(log.MONITORED)
    if mon:
        md = mon.details_dict
        lines += ["", f"Latest check {mon.ts:%Y-%m-%d %H:%M} UTC"
                  + (" (window complete)" if md.get("window_complete") else "") + ":", ""]
        lines += [f"- {r['text']}" for r in md.get("results", [])]
    lines += ["", "## Decision log", "", "| # | time (UTC) | event | status | actor | entry hash |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {e.entry_id} | {e.ts:%Y-%m-%d %H:%M:%S} | {e.event} | {e.status} | {e.actor or ''} | "
              f"`{e.entry_hash[:16]}` |" for e in d.entries]
    return "\n".join(lines) + "\n"


def memo_path(dc: DecisionContext, decision_id: str) -> Path:
    return dc.memo_dir / f"{decision_id}.md"


def write_memo(dc: DecisionContext, d: Decision) -> Path:
    path = memo_path(dc, d.decision_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(dc, d), encoding="utf-8")
    return path


def rerender(dc: DecisionContext, decision_id: str) -> None:
    """Re-render a decision's memo from the log; every lifecycle step calls this after its entry."""
    write_memo(dc, get(dc, decision_id))
