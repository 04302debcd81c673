"""Commands for decisions (spec 002 §4-5): list and show proposals, approve, reject, apply, reverse, monitor, verify the
log, render memos and review packets. See docs/decisions.md for a full walkthrough.

Commands on one decision's life are here; those on the log, the flag store, review packets and playbooks are in
`gtm_pipeline.cli.decision_audit`.
"""

from __future__ import annotations

import json

import click

from gtm_pipeline.cli import decision_audit, output
from gtm_pipeline.cli.decision_context import by_option, chain_warning, decision_id_argument, open_decisions
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError

# Imports of gtm_pipeline.decisions, the warehouse, the definitions and keys are function-local: `gtm-pipeline
# --help` imports every command module, and the decision layer loads Dagster and pandas (~2.5 s; keys alone loads
# Dagster, ~1 s); --help takes about half a second without them.


@click.group()
def decisions():
    """Decision nodes (spec 002 §4): proposals in a tamper-evident log, approvals, flag flips, monitoring, reversals.

    \b
    Example:
      gtm-pipeline decisions list --status proposed
    """


@decisions.command(name="list")
@click.option("--status", default=None, help="Only decisions whose current status is this (e.g. proposed, applied).")
@click.option("--node", default=None,
              help="Only this node (pricing.change, channel.invest, icp.update, routing.policy, experiment.ship).")
def list_(status, node):
    """One line per decision: id, node, status, action, review date.

    \b
    Example:
      gtm-pipeline decisions list --node pricing.change
    """
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        chain_warning(dc)
        rows = [d for d in lifecycle.all_decisions(dc)
                if (status is None or d.status == status) and (node is None or d.node == node)]
        if not rows:
            click.echo("no decisions" + (f" with status {status}" if status else "") + (f" for {node}" if node else ""))
        for d in rows:
            click.echo(f"{d.decision_id}  {d.node:<15} {d.status:<18} review {d.proposal.review_date}  "
                       f"{d.proposal.chosen_action}")


@decisions.command()
@decision_id_argument
@click.option("--json", "as_json", is_flag=True, help="Print the log entries as JSON (every field, with hashes).")
def show(decision_id, as_json):
    """A decision's log entries (every spec field, hashes included) and where its memo is.

    \b
    Example:
      gtm-pipeline decisions show DEC-1a2b3c4d5e6f --json
    """
    from gtm_pipeline.decisions import lifecycle
    from gtm_pipeline.decisions.memo import memo_path

    with open_decisions() as dc:
        d = lifecycle.get(dc, decision_id)
        chain_warning(dc)
        if as_json:
            click.echo(json.dumps([e.as_dict() for e in d.entries], indent=2, default=str))
            return
        p = d.proposal
        click.echo(f"{d.decision_id}  {d.node} / {p.subject}: {p.chosen_action}")
        click.echo(f"status {d.status}; owner {p.owner}; approvers {', '.join(p.approvers)} "
                   f"(approved: {', '.join(f'{r} by {who}' for r, who in d.approvals.items()) or 'none'})")
        click.echo(f"inputs {p.inputs_hash} ({p.inputs_version})")
        click.echo(f"reversal plan: {p.reversal_plan}; review date {p.review_date}")
        for e in d.entries:
            click.echo(f"  #{e.entry_id} {e.ts:%Y-%m-%d %H:%M:%S} {e.event:<18} -> {e.status:<18} "
                       f"{e.actor or '':<24} {e.entry_hash[:16]}")
            if e.reversal_outcome and e.event == "reversed":
                click.echo(f"      reversal outcome: {e.reversal_outcome}")
        click.echo(f"memo: {memo_path(dc, d.decision_id)}")


@decisions.command()
@decision_id_argument
@click.option("--as", "role", required=True, help="The approver role you act for, e.g. Finance.")
@by_option
@click.option("--note", default="", help="A note kept with the approval.")
def approve(decision_id, role, person, note):
    """Approve a proposal for one approver role; it can be applied once every listed approver approved.

    Only a person the roster lists for the role, never one holding the owner role, one person per role. Every gate
    is checked again (open SEV2+ incident, SLO health, input data time, node pre-checks, unchanged inputs); a
    refusal is logged and exits 2 naming the gate, its value, the limit and the fix.

    \b
    Example:
      gtm-pipeline decisions approve DEC-1a2b3c4d5e6f --as Finance --by farah@example.com
    """
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        d = lifecycle.approve(dc, decision_id, role=role, person=person, note=note)
        missing = [r for r in d.proposal.approvers if r not in d.approvals]
        click.echo(f"{decision_id}: approved by {person} for {role}; status {d.status}"
                   + (f" (waiting for {', '.join(missing)})" if missing else " -- ready to apply"))


@decisions.command()
@decision_id_argument
@click.option("--as", "role", required=True, help="The approver role you act for.")
@by_option
@click.option("--reason", required=True, help="Why the proposal is rejected (kept in the log).")
def reject(decision_id, role, person, reason):
    """Reject a proposal (an approver's call); a rejected decision is closed.

    \b
    Example:
      gtm-pipeline decisions reject DEC-1a2b3c4d5e6f --as FP&A --by paul@example.com --reason "Q4 freeze"
    """
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        lifecycle.reject(dc, decision_id, role=role, person=person, reason=reason)
        click.echo(f"{decision_id}: rejected by {person} ({role})")


@decisions.command(name="apply")
@decision_id_argument
@by_option
@click.option("--effective", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="First day whose data counts as after the change for monitoring (default: today, UTC). A past "
                   "day rehearses monitoring on data you already have.")
def apply_(decision_id, person, effective):
    """Apply an approved decision: flip its flag to the proposed version (the owner does this).

    Every gate is checked again, as at approve; a refusal is logged and exits 2 naming the gate and the fix.

    \b
    Example:
      gtm-pipeline decisions apply DEC-1a2b3c4d5e6f --by dana@example.com
    """
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        d = lifecycle.apply(dc, decision_id, person=person, effective=effective.date() if effective else None)
        a = d.entry("applied").details_dict
        click.echo(f"{decision_id}: applied -- {a['flag']} v{a['from_version']} -> v{a['to_version']} "
                   f"{json.dumps(a['value'], sort_keys=True)}; monitoring from {a['effective_date']} to "
                   f"{a['monitoring_until']}")


@decisions.command()
@decision_id_argument
@by_option
@click.option("--reason", required=True, help="Why the decision is reversed (kept in the log).")
def reverse(decision_id, person, reason):
    """Reverse an applied decision: restore the flag's previous version (routing: and replay the DLQ).

    \b
    Example:
      gtm-pipeline decisions reverse DEC-1a2b3c4d5e6f --by dana@example.com --reason "booking rate out of band"
    """
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        d = lifecycle.reverse(dc, decision_id, person=person, reason=reason)
        click.echo(f"{decision_id}: reversed -- {d.last.reversal_outcome}")


@decisions.command()
def monitor():
    """Evaluate the monitoring plan of every applied decision now (the refresh job does this after the metrics).

    \b
    Example:
      gtm-pipeline decisions monitor
    """
    from gtm_pipeline.decisions import monitoring

    with open_decisions() as dc:
        outcomes = monitoring.evaluate_all(dc)
        if not outcomes:
            click.echo("no applied decision to monitor")
        for o in outcomes:
            click.echo(f"{o.decision_id} {o.node}: {o.event or 'unchanged'}"
                       + (" (window complete)" if o.complete else ""))
            for r in o.results:
                click.echo(f"  - {r.text}")


@decisions.command()
@click.option("--node", "nodes_", multiple=True, help="Only this node (repeatable); default: every node.")
def evaluate(nodes_):
    """Run the decision node assets (and monitoring, the log check) in Dagster against the published metrics.

    Exits 1 when the run failed, naming the failed step; a node that proposes nothing is not a failure.

    \b
    Example:
      gtm-pipeline decisions evaluate --node pricing.change
    """
    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    settings = load_settings()
    unknown = [n for n in nodes_ if n not in keys.DECISION_NODE_ASSETS]
    if unknown:
        raise GtmPipelineError(f"--node {unknown[0]!r}: not a decision node; use one of "
                               f"{', '.join(keys.DECISION_NODE_ASSETS)}")
    ensure_dagster_home(settings)
    chosen = nodes_ or tuple(keys.DECISION_NODE_ASSETS)
    selection = [keys.decision_key(keys.DECISION_NODE_ASSETS[n]) for n in chosen] + [
        keys.DECISION_MONITORING_KEY, keys.DECISION_LOG_KEY]
    outcome = output.run(keys.REFRESH_JOB, asset_selection=selection)
    click.echo(f"{outcome.status}: run {outcome.run_id}"
               + (f"; failed steps: {', '.join(outcome.failed_steps)}" if outcome.failed_steps else ""))
    output.echo_notes(outcome)  # why a node proposed nothing, a monitoring breach
    if not outcome.success:  # before reading the log: what broke the run may break the reading too
        raise outcome.failure(f"decisions evaluate {' '.join(chosen)}")
    from gtm_pipeline.decisions import lifecycle

    with open_decisions() as dc:
        for d in lifecycle.all_decisions(dc):
            if d.node in chosen and d.status in ("proposed", "pending_approval", "approved"):
                click.echo(f"{d.decision_id}  {d.node:<15} {d.status:<17} {d.proposal.chosen_action}")


@decisions.command()
@decision_id_argument
def memo(decision_id):
    """Print a decision's memo (spec 002 §5 template), re-rendered from the log.

    \b
    Example:
      gtm-pipeline decisions memo DEC-1a2b3c4d5e6f
    """
    from gtm_pipeline.decisions import lifecycle
    from gtm_pipeline.decisions.memo import write_memo

    with open_decisions() as dc:
        path = write_memo(dc, lifecycle.get(dc, decision_id))
        click.echo(path.read_text(encoding="utf-8"))


for _command in decision_audit.COMMANDS:
    decisions.add_command(_command)


def register(main: click.Group) -> None:
    main.add_command(decisions)
