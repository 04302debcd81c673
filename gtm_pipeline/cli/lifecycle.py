"""Lifecycle commands: lifecycle validate, lifecycle recycle ID (docs/metrics.md, "Lifecycle")."""

from __future__ import annotations

import click

from gtm_pipeline.config import load_settings

# Imports of the lifecycle package and DuckDB are function-local: `gtm-pipeline --help` imports every command
# module, and each command loads only what it runs.


@click.group()
def lifecycle() -> None:
    """Lifecycle stages of leads (contracts/lifecycle/stages.yaml): forward-only moves and audited recycles.

    \b
    Example:
      gtm-pipeline lifecycle validate
      gtm-pipeline lifecycle recycle L0004508 --reason bad_timing --by "ana@revops"
    """


@lifecycle.command()
def validate():
    """Load and compile contracts/lifecycle/stages.yaml and list the stages with their entry criteria.

    \b
    Example:
      gtm-pipeline lifecycle validate
    """
    from gtm_pipeline.lifecycle.contract import load_lifecycle

    lc = load_lifecycle(load_settings().contracts_dir)
    for s in lc.stages:
        exit_ = f"; exit: {s.exit.text}" if s.exit is not None else ""
        click.echo(f"{s.rank}. {s.name}: entry: {s.entry.text}{exit_}")
    click.echo(f"manual (explicit moves only): {', '.join(lc.manual)}")


@lifecycle.command()
@click.argument("lead_id")
@click.option("--reason", required=True, help="Why, as a dq_reason of contracts/entities/lead.yaml, e.g. bad_timing.")
@click.option("--by", "by", required=True, help='Who recycles the record, e.g. --by "ana@revops".')
def recycle(lead_id, reason, by):
    """Move a lead back to 'recycled', the only way backwards: appends who, when, why and the stage it left to
    ops.lifecycle_recycles; the next refresh of metrics.lifecycle_history shows it, and new evidence moves the
    lead forward again.

    \b
    Example:
      gtm-pipeline lifecycle recycle L0004508 --reason bad_timing --by "ana@revops"
      gtm-pipeline metrics refresh lifecycle_history
    """
    from gtm_pipeline.cli.quarantine import connect
    from gtm_pipeline.clock import utcnow
    from gtm_pipeline.lifecycle.recycle import recycle as recycle_one

    con = connect()
    try:
        r = recycle_one(con, load_settings().contracts_dir, lead_id, reason=reason, by=by, now=utcnow())
    finally:
        con.close()
    click.echo(f"recycled {r.lead_id} from {r.previous_stage} at {r.recycled_at:%Y-%m-%d %H:%M:%S} UTC "
               f"({r.reason}, by {r.recycled_by}); receipt {r.recycle_id} in ops.lifecycle_recycles")


def register(main: click.Group) -> None:
    main.add_command(lifecycle)
