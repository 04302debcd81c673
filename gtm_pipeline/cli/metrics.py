"""Metric layer commands: metrics validate, metrics status, metrics show, metrics refresh (docs/metrics.md)."""

from __future__ import annotations

import click

from gtm_pipeline.cli import output
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.warehouse import table_exists

# Imports of the pipeline's stages are function-local: `gtm-pipeline --help` imports every command module, and
# each command loads only what it runs, so --help starts in about half a second (Dagster alone costs ~1.2 s,
# pandas ~1.3 s).


def connect_read_only(settings):
    """The warehouse read-only, or a clear error when there is none yet or a run holds it (for reading commands)."""
    import duckdb

    if not settings.duckdb_path.exists():
        raise GtmPipelineError(f"{settings.duckdb_path}: no warehouse yet; run 'gtm-pipeline demo' first")
    try:
        return duckdb.connect(str(settings.duckdb_path), read_only=True)
    except duckdb.IOException as e:
        raise GtmPipelineError(f"{settings.duckdb_path}: cannot open the warehouse while a run writes to it ({e}); "
                               f"try again when the run has finished") from e


@click.group()
def metrics() -> None:
    """The metric layer: contracts, what is published, and republishing.

    \b
    Example:
      gtm-pipeline metrics validate
      gtm-pipeline metrics status
      gtm-pipeline metrics show payback --limit 10
    """


@metrics.command()
def validate():
    """Load and check every metric contract (contracts/metrics/*.yaml); report the first problem with file and fix.

    \b
    Example:
      gtm-pipeline metrics validate
    """
    from gtm_pipeline.metrics.contract import load_metric_contracts

    contracts = load_metric_contracts(load_settings().contracts_dir)
    for c in contracts.values():
        click.echo(f"{c.name:24s} {c.kind:6s} grain ({', '.join(c.grain)}); checks: {', '.join(c.check_names())}")
    click.echo(f"ok: {len(contracts)} metric contracts")


@metrics.command()
def status():
    """Per metric: when the version readers see was published, its rows, and any open incident (blocked publish).

    \b
    Example:
      gtm-pipeline metrics status
    """
    from gtm_pipeline.metrics.contract import load_metric_contracts
    from gtm_pipeline.metrics.publish import asset_key_text, incident_key

    s = load_settings()
    contracts = load_metric_contracts(s.contracts_dir)
    with connect_read_only(s) as con:
        has_ops = table_exists(con, "ops", "publications") and table_exists(con, "ops", "incidents")
        click.echo(f"{'metric':24s} {'published_at (UTC)':26s} {'rows':>9s}  open incident")
        for name in contracts:
            at = inc = None
            if has_ops:
                at = con.execute("SELECT max(published_at) FROM ops.publications WHERE asset_key = ?",
                                 [asset_key_text(name)]).fetchone()[0]
                row = con.execute("SELECT incident_id, title FROM ops.incidents WHERE dedup_key = ? AND "
                                  "status IN ('open', 'acknowledged')", [incident_key(name)]).fetchone()
                inc = f"{row[0]}: {row[1]}" if row else ""
            rows = con.execute(f'SELECT count(*) FROM metrics."{name}"').fetchone()[0] \
                if table_exists(con, "metrics", name) else None
            click.echo(f"{name:24s} {str(at or 'never'):26s} {'-' if rows is None else f'{rows:,}':>9s}  {inc or ''}")


@metrics.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True, help="Rows to print.")
def show(name, limit):
    """Print the published rows of one metric table (latest first), e.g. payback, routing_health, forecast.

    \b
    Example:
      gtm-pipeline metrics show cac_by_channel
    """
    import pandas as pd

    from gtm_pipeline.metrics.contract import load_metric_contracts
    from gtm_pipeline.metrics.registry import computations

    s = load_settings()
    contracts = load_metric_contracts(s.contracts_dir)
    if name not in contracts:
        raise GtmPipelineError(f'unknown metric "{name}"; known: {", ".join(contracts)}')
    comp = computations()[name]
    with connect_read_only(s) as con:
        if not table_exists(con, "metrics", name):
            raise GtmPipelineError(f"metrics.{name} has never been published; see 'gtm-pipeline metrics status'")
        order = comp.order_by or ", ".join(f'"{g}"' for g in contracts[name].grain)
        df = con.execute(f'SELECT * EXCLUDE (_published_at) FROM metrics."{name}" ORDER BY {order} '
                         f"LIMIT {int(limit)}").df()
    with pd.option_context("display.max_columns", 50, "display.width", 200):
        click.echo(df.to_string(index=False))


@metrics.command()
@click.argument("names", nargs=-1)
def refresh(names):
    """Recompute and publish (write, audit, publish) the metric layer, or only NAMES, through Dagster.

    Runs the refresh job restricted to the metric assets, so every publish is recorded in Dagster's event log.
    Exits 1 when the run failed, naming the failed step. A failed audit is not a failure: write-audit-publish keeps
    the last good version and opens an incident ('gtm-pipeline metrics status').

    \b
    Example:
      gtm-pipeline metrics refresh                 # the whole metric layer
      gtm-pipeline metrics refresh payback forecast
    """
    from gtm_pipeline import keys
    from gtm_pipeline.metrics.contract import load_metric_contracts
    from gtm_pipeline.metrics.registry import computations
    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    s = load_settings()
    contracts = load_metric_contracts(s.contracts_dir)
    comps = computations()
    unknown = [n for n in names if n not in contracts]
    if unknown:
        raise GtmPipelineError(f"unknown metric(s) {unknown}; known: {', '.join(contracts)}")
    chosen = [n for n in (names or contracts) if not comps[n].partitioned]
    if not chosen:
        raise GtmPipelineError(f"{', '.join(names)}: day-partitioned; rebuild with 'gtm-pipeline run --from <day>'")
    ensure_dagster_home(s)
    out = output.run(keys.REFRESH_JOB, asset_selection=[keys.metric_key(n) for n in chosen])
    click.echo(f"{keys.REFRESH_JOB} ({len(chosen)} metrics): {out.status} (run {out.run_id})")
    output.echo_notes(out)  # a metric not published, and why
    for c in out.failed_checks:
        click.echo(f"  check failed: {c}")
    if not out.success:
        raise out.failure(f"metrics refresh {' '.join(chosen)}")


def register(main: click.Group) -> None:
    main.add_command(metrics)
