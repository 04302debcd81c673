"""Commands for decisions (spec §4-5): list and show proposals, approve, reject, apply, reverse, monitor, verify the
log, render memos and review packets. See docs/decisions.md for a full walkthrough."""

from __future__ import annotations

import json
from contextlib import contextmanager

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError


def _health_fn(settings):
    """SLO health for the gates at approve and apply: the same check the node assets run, over the Dagster instance
    ``DAGSTER_HOME`` names (loaded only when a gate asks). Any error fails the gate closed."""
    def health(assets: list[str]):
        import dagster as dg

        from gtm_pipeline.definitions import defs
        from gtm_pipeline.orchestration.runner import ensure_dagster_home
        from gtm_pipeline.slo import health as slo_health

        ensure_dagster_home(settings)
        return slo_health(dg.DagsterInstance.get(), defs, assets=assets, settings=settings)
    return health


@contextmanager
def _context():
    from gtm_pipeline.decisions import open_context

    # Read-write even to read: the first use creates the decisions tables, and DuckDB lets no read-only
    # connection in while another process writes anyway (connect() waits briefly for the lock).
    settings = load_settings()
    con = connect()
    try:
        yield open_context(con, settings, health_fn=_health_fn(settings))
    finally:
        con.close()


def _chain_warning(dc) -> None:
    """Say on stderr when the log does not verify (or cannot: no key), before showing what it holds."""
    from gtm_pipeline.decisions import log

    report = log.verify(dc.con, dc.head)
    if report.status == "tampered":
        click.echo(f"WARNING: decisions.log does not verify -- {report.first}. What follows may be forged; run "
                   f"'gtm-pipeline decisions verify'.", err=True)
    elif report.status in ("unkeyed", "unverified"):
        click.echo(f"warning: decisions.log is {report.status} ({report.warnings[0].split('. ')[0]}); see "
                   f"'gtm-pipeline decisions verify'.", err=True)


def _slo_line(settings) -> str:
    """SLO health for packets run from the command line (fails closed: 'unknown' with the reason)."""
    try:
        import dagster as dg

        from gtm_pipeline.definitions import defs
        from gtm_pipeline.orchestration.runner import ensure_dagster_home
        from gtm_pipeline.slo import health

        ensure_dagster_home(settings)
        return health(dg.DagsterInstance.get(), defs, settings=settings).summary()
    except Exception as e:  # the packet still renders and says why
        return f"SLO health unknown: {type(e).__name__}: {e}"


_id = click.argument("decision_id")
_by = click.option("--by", "person", required=True,
                   help="Who acts (a person listed in contracts/decisions/roster.yaml).")


@click.group()
def decisions():
    """Decision nodes (spec §4): proposals in a tamper-evident log, approvals, flag flips, monitoring, reversals.

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

    with _context() as dc:
        _chain_warning(dc)
        rows = [d for d in lifecycle.all_decisions(dc)
                if (status is None or d.status == status) and (node is None or d.node == node)]
        if not rows:
            click.echo("no decisions" + (f" with status {status}" if status else "") + (f" for {node}" if node else ""))
        for d in rows:
            click.echo(f"{d.decision_id}  {d.node:<15} {d.status:<18} review {d.proposal.review_date}  "
                       f"{d.proposal.chosen_action}")


@decisions.command()
@_id
@click.option("--json", "as_json", is_flag=True, help="Print the log entries as JSON (every field, with hashes).")
def show(decision_id, as_json):
    """A decision's log entries (every spec field, hashes included) and where its memo is.

    \b
    Example:
      gtm-pipeline decisions show DEC-1a2b3c4d5e6f --json
    """
    from gtm_pipeline.decisions import lifecycle
    from gtm_pipeline.decisions.memo import memo_path

    with _context() as dc:
        d = lifecycle.get(dc, decision_id)
        _chain_warning(dc)
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
@_id
@click.option("--as", "role", required=True, help="The approver role you act for, e.g. Finance.")
@_by
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

    with _context() as dc:
        d = lifecycle.approve(dc, decision_id, role=role, person=person, note=note)
        missing = [r for r in d.proposal.approvers if r not in d.approvals]
        click.echo(f"{decision_id}: approved by {person} for {role}; status {d.status}"
                   + (f" (waiting for {', '.join(missing)})" if missing else " -- ready to apply"))


@decisions.command()
@_id
@click.option("--as", "role", required=True, help="The approver role you act for.")
@_by
@click.option("--reason", required=True, help="Why the proposal is rejected (kept in the log).")
def reject(decision_id, role, person, reason):
    """Reject a proposal (an approver's call); a rejected decision is closed.

    \b
    Example:
      gtm-pipeline decisions reject DEC-1a2b3c4d5e6f --as FP&A --by paul@example.com --reason "Q4 freeze"
    """
    from gtm_pipeline.decisions import lifecycle

    with _context() as dc:
        lifecycle.reject(dc, decision_id, role=role, person=person, reason=reason)
        click.echo(f"{decision_id}: rejected by {person} ({role})")


@decisions.command(name="apply")
@_id
@_by
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

    with _context() as dc:
        d = lifecycle.apply(dc, decision_id, person=person, effective=effective.date() if effective else None)
        a = d.entry("applied").details_dict
        click.echo(f"{decision_id}: applied -- {a['flag']} v{a['from_version']} -> v{a['to_version']} "
                   f"{json.dumps(a['value'], sort_keys=True)}; monitoring from {a['effective_date']} to "
                   f"{a['monitoring_until']}")


@decisions.command()
@_id
@_by
@click.option("--reason", required=True, help="Why the decision is reversed (kept in the log).")
def reverse(decision_id, person, reason):
    """Reverse an applied decision: restore the flag's previous version (routing: and replay the DLQ).

    \b
    Example:
      gtm-pipeline decisions reverse DEC-1a2b3c4d5e6f --by dana@example.com --reason "booking rate out of band"
    """
    from gtm_pipeline.decisions import lifecycle

    with _context() as dc:
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

    with _context() as dc:
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
    from gtm_pipeline.cli import output
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

    with _context() as dc:
        for d in lifecycle.all_decisions(dc):
            if d.node in chosen and d.status in ("proposed", "pending_approval", "approved"):
                click.echo(f"{d.decision_id}  {d.node:<15} {d.status:<17} {d.proposal.chosen_action}")


@decisions.command()
@click.option("--expect-head", type=int, default=None,
              help="The head sequence number recorded outside the data folder (e.g. the highest value Prometheus saw "
                   "of gtm_decision_log_head_sequence); a log that ends before it was cut back.")
@click.option("--seal", is_flag=True,
              help="Sign the head of a log written before the key was set (needs GTM_PIPELINE_DECISION_LOG_KEY and "
                   "--by); only once you have checked the entries.")
@click.option("--by", "person", default=None, help="Who seals (kept in the checkpoint line); with --seal.")
def verify(expect_head, seal, person):
    """Check the decision log's HMAC chain and checkpoint file; name the first edited, deleted, truncated, reordered
    or re-hashed entry (exit 1). Without GTM_PIPELINE_DECISION_LOG_KEY it says loudly what it cannot check.

    \b
    Example:
      gtm-pipeline decisions verify
      gtm-pipeline decisions verify --expect-head 42
      gtm-pipeline decisions verify --seal --by farah@example.com
    """
    from gtm_pipeline.decisions import log
    from gtm_pipeline.decisions import verify as chain

    with _context() as dc:
        if seal:
            if not person:
                raise GtmPipelineError("verify --seal: say who seals with --by NAME")
            report = chain.seal(dc.con, dc.head, by=person)
        else:
            report = log.verify(dc.con, dc.head, expect_head=expect_head)
    for w in report.warnings:
        click.echo(f"WARNING: {w}", err=True)
    if report.ok:
        click.echo(report.summary())
        return
    click.echo(report.summary(), err=True)
    for p in report.problems[1:]:
        click.echo(f"  also {p}", err=True)
    raise SystemExit(1)


@decisions.command()
@_id
def memo(decision_id):
    """Print a decision's memo (spec §5 template), re-rendered from the log.

    \b
    Example:
      gtm-pipeline decisions memo DEC-1a2b3c4d5e6f
    """
    from gtm_pipeline.decisions import lifecycle
    from gtm_pipeline.decisions.memo import write_memo

    with _context() as dc:
        path = write_memo(dc, lifecycle.get(dc, decision_id))
        click.echo(path.read_text(encoding="utf-8"))


@decisions.command()
@click.option("--cadence", type=click.Choice(["weekly_ops", "monthly_business_review", "quarterly_plan"]),
              default="weekly_ops", show_default=True, help="Which review the packet is for.")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Date of the review (default: today, UTC).")
def packet(cadence, as_of):
    """Build a review packet: pending decisions, refusals and monitoring breaches since the previous review of the
    cadence, SLO health, hygiene, decisions due for review, the decision log's integrity.

    \b
    Example:
      gtm-pipeline decisions packet --cadence weekly_ops
    """
    from gtm_pipeline.decisions import packets
    from gtm_pipeline.warehouse import utcnow

    settings = load_settings()
    line = _slo_line(settings)
    with _context() as dc:
        p = packets.build_packet(dc, cadence, as_of.date() if as_of else utcnow().date(), line)
    click.echo(p.markdown)
    click.echo(f"written to {p.path}")


@decisions.command()
@click.option("--flag", default=None, help="Show this flag's whole history (e.g. FF_ROUTING_V1).")
def flags(flag):
    """The flag store: current version of every flag, or one flag's history.

    \b
    Example:
      gtm-pipeline decisions flags --flag price_card.smb
    """
    from gtm_pipeline.decisions import flags as store

    with _context() as dc:
        rows = store.history(dc.con, flag) if flag else store.all_current(dc.con)
    if not rows:
        click.echo("no flags set yet" + (f" for {flag}" if flag else ""))
    for f in rows:
        click.echo(f"{f.flag} v{f.version} {json.dumps(f.value, sort_keys=True)}  ({f.reason}; {f.set_by}; "
                   f"{f.set_at:%Y-%m-%d %H:%M:%S})")


_IN_FORCE = {
    "price_book": "SELECT segment, card, card_version, list_price_multiplier, round(list_price_per_seat, 2) AS list, "
                  "round(net_price_per_seat, 2) AS net, round(card_cm_per_seat, 2) AS cm_per_seat, decision_id "
                  "FROM {view} ORDER BY segment",
    "bookings_outlook": "SELECT segment, horizon, card, round(forecast_at_current_prices, 0) AS at_current_prices, "
                        "round(forecast_at_card, 0) AS at_card, volume_response FROM {view} "
                        "ORDER BY segment, horizon",
    "channel_plan": "SELECT channel, status, round(budget_over_window, 2) AS budget, "
                    "round(expected_spend_per_week, 2) AS per_week, plan_version, "
                    "round(spent_since_plan, 2) AS spent_since_plan FROM {view} ORDER BY channel",
    "lead_icp": "SELECT icp_segment, routing_eligible, count(*) AS leads, any_value(filter_version) AS filter_version "
                "FROM {view} GROUP BY ALL ORDER BY 1",
}


def _columns(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    return "\n".join("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows])


@decisions.command(name="in-force")
@click.option("--view", "only", type=click.Choice(sorted(_IN_FORCE)), default=None, help="Show only this reader.")
def in_force(only):
    """What the applied decisions put in force: the price book and bookings outlook (price cards), the channel
    plan (budget split), the leads' ICP segment (audience filter) and the routing rule set (FF_ROUTING_V1).

    \b
    Example:
      gtm-pipeline decisions in-force --view channel_plan
    """
    from gtm_pipeline import keys
    from gtm_pipeline.decisions import flags as store
    from gtm_pipeline.warehouse import table_exists

    views = {"price_book": keys.PRICE_BOOK_VIEW, "bookings_outlook": keys.BOOKINGS_OUTLOOK_VIEW,
             "channel_plan": keys.CHANNEL_PLAN_VIEW, "lead_icp": keys.LEAD_ICP_VIEW}
    with _context() as dc:
        for name in [only] if only else sorted(_IN_FORCE):
            view = views[name]
            if not table_exists(dc.con, *view.split(".")):
                click.echo(f"{view}: not yet available (its inputs are not published; run gtm-pipeline refresh)")
                continue
            cur = dc.con.execute(_IN_FORCE[name].format(view=view))
            cols, rows = [d[0] for d in cur.description], cur.fetchall()
            click.echo(f"{view}:")
            click.echo(_columns(cols, [["-" if v is None else str(v) for v in r] for r in rows]))
        if not only:
            rules = store.routing_rule_set_in_force(dc.con, dc.contracts_dir)
            click.echo(f"routing rule set in force ({store.ROUTING_FLAG}): {rules.label}")


@decisions.command()
def validate():
    """Load and check every playbook in contracts/decisions and the roster; the first problem names file and field.

    \b
    Example:
      gtm-pipeline decisions validate
    """
    from gtm_pipeline.decisions import known_metric_tables
    from gtm_pipeline.decisions.playbook import load_playbooks, load_roster

    s = load_settings()
    pbs = load_playbooks(s.contracts_dir, known_metric_tables(s.contracts_dir))
    load_roster(s.contracts_dir, pbs)
    for pb in pbs.values():
        click.echo(f"ok: {pb.where}: {pb.node} v{pb.version}, owner {pb.owner}, approvers {', '.join(pb.approvers)}, "
                   f"{pb.reversibility} reversibility, {pb.risk_class} risk, {pb.cadence}")
    click.echo("ok: contracts/decisions/roster.yaml")


def register(main: click.Group) -> None:
    main.add_command(decisions)
