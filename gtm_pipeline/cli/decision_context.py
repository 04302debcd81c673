"""What the decision commands share: the decision context over the warehouse (with the SLO health source of the
gates), the chain warning shown before the log's contents, and the decision id and --by parameters."""

from __future__ import annotations

from contextlib import contextmanager

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings

# Imports of gtm_pipeline.decisions, the warehouse, the definitions and keys are function-local: `gtm-pipeline
# --help` imports every command module, and the decision layer loads Dagster and pandas (~2.5 s; keys alone loads
# Dagster, ~1 s); --help takes about half a second without them.


def _slo_health(settings, assets: list[str] | None = None):
    """SLO health over the Dagster instance ``DAGSTER_HOME`` names: the check the node assets run."""
    import dagster as dg

    from gtm_pipeline.definitions import defs
    from gtm_pipeline.orchestration.runner import ensure_dagster_home
    from gtm_pipeline.slo import health

    ensure_dagster_home(settings)
    return health(dg.DagsterInstance.get(), defs, assets=assets, settings=settings)


def health_fn(settings):
    """SLO health for the gates at approve and apply: the same check the node assets run, over the Dagster instance
    ``DAGSTER_HOME`` names (loaded only when a gate asks). Any error fails the gate closed."""
    def health(assets: list[str]):
        return _slo_health(settings, assets)
    return health


@contextmanager
def open_decisions():
    """The decision context over the warehouse (with `health_fn` for the gates); the connection closes after."""
    from gtm_pipeline.decisions import open_context

    # Read-write even to read: the first use creates the decisions tables, and DuckDB lets no read-only
    # connection in while another process writes anyway (connect() waits briefly for the lock).
    settings = load_settings()
    con = connect()
    try:
        yield open_context(con, settings, health_fn=health_fn(settings))
    finally:
        con.close()


def chain_warning(dc) -> None:
    """Say on stderr when the log does not verify (or cannot: no key), before showing what it holds."""
    from gtm_pipeline.decisions import log

    report = log.verify(dc.con, dc.head)
    if report.status == "tampered":
        click.echo(f"WARNING: decisions.log does not verify -- {report.first}. What follows may be forged; run "
                   f"'gtm-pipeline decisions verify'.", err=True)
    elif report.status in ("unkeyed", "unverified"):
        click.echo(f"warning: decisions.log is {report.status} ({report.warnings[0].split('. ')[0]}); see "
                   f"'gtm-pipeline decisions verify'.", err=True)


def slo_line(settings) -> str:
    """SLO health for packets run from the command line (fails closed: 'unknown' with the reason)."""
    try:
        return _slo_health(settings).summary()
    except Exception as e:  # the packet still renders and says why
        return f"SLO health unknown: {type(e).__name__}: {e}"


decision_id_argument = click.argument("decision_id")
by_option = click.option("--by", "person", required=True,
                         help="Who acts (a person listed in contracts/decisions/roster.yaml).")
