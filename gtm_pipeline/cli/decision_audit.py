"""Decision commands about the record rather than one decision: verify the log's chain, build a review packet,
show the flag store and what the applied decisions put in force, validate the playbooks and roster. They join the
`decisions` group in `gtm_pipeline.cli.decisions`."""

from __future__ import annotations

import json

import click

from gtm_pipeline.cli.decision_context import open_decisions, slo_line
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError

# Imports of gtm_pipeline.decisions, the warehouse, the definitions and keys are function-local: `gtm-pipeline
# --help` imports every command module, and the decision layer loads Dagster and pandas (~2.5 s; keys alone loads
# Dagster, ~1 s); --help takes about half a second without them.


@click.command()
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

    with open_decisions() as dc:
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


@click.command()
@click.option("--cadence", type=click.Choice(["weekly_ops", "monthly_business_review", "quarterly_plan",
                                             "biweekly_architecture"]),
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
    line = slo_line(settings)
    with open_decisions() as dc:
        p = packets.build_packet(dc, cadence, as_of.date() if as_of else utcnow().date(), line)
    click.echo(p.markdown)
    click.echo(f"written to {p.path}")


@click.command()
@click.option("--flag", default=None, help="Show this flag's whole history (e.g. FF_ROUTING_V1).")
def flags(flag):
    """The flag store: current version of every flag, or one flag's history.

    \b
    Example:
      gtm-pipeline decisions flags --flag price_card.smb
    """
    from gtm_pipeline.decisions import flags as store

    with open_decisions() as dc:
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


@click.command(name="in-force")
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
    with open_decisions() as dc:
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


@click.command()
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


COMMANDS = [verify, packet, flags, in_force, validate]
