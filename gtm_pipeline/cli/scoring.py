"""Scoring commands: scoring validate, scoring explain ID (docs/metrics.md, "Scoring")."""

from __future__ import annotations

import click

from gtm_pipeline.config import load_settings

# Imports of the scoring package and DuckDB are function-local: `gtm-pipeline --help` imports every command module,
# and each command loads only what it runs.


@click.group()
def scoring() -> None:
    """ICP fit and engagement scoring: the model in contracts/scoring/ and why a lead scores what it does.

    \b
    Example:
      gtm-pipeline scoring validate
      gtm-pipeline scoring explain L0004508
    """


@scoring.command()
def validate():
    """Load and check every scoring model (contracts/scoring/*.yaml) and say which one is active.

    \b
    Example:
      gtm-pipeline scoring validate
    """
    from gtm_pipeline.scoring.contract import load_active_model, load_model

    s = load_settings()
    for f in sorted((s.contracts_dir / "scoring").glob("*.yaml")):
        m = load_model(f, s.contracts_dir)
        click.echo(f"ok: {m.where}: {m.spec.model_version} (owner {m.spec.owner}; fit max {m.spec.fit_max:g}, "
                   f"engagement max {m.spec.engagement_max:g}, total cap {m.spec.total_cap:g})"
                   + (" [active]" if m.spec.active else ""))
    load_active_model(s.contracts_dir)


@scoring.command()
@click.argument("record_id")
def explain(record_id):
    """Print every point of a lead's score (or an account's fit) and why: group, matched value, learned lift and
    shrinkage or the override with who and why, decay, caps hit, grade, and whether the published row agrees.

    \b
    Example:
      gtm-pipeline scoring explain L0004508     # a lead: fit + engagement, grade like A1
      gtm-pipeline scoring explain A0000208     # an account: fit only
    """
    from gtm_pipeline.cli.metrics import connect_read_only
    from gtm_pipeline.scoring.explain import explain as explain_one
    from gtm_pipeline.scoring.explain import render

    s = load_settings()
    with connect_read_only(s) as con:
        for line in render(explain_one(con, s.contracts_dir, record_id)):
            click.echo(line)


def register(main: click.Group) -> None:
    main.add_command(scoring)
