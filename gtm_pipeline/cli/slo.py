"""Freshness SLO commands: slo report, slo health, slo validate, slo exporter, slo rules (docs/slo.md)."""

from __future__ import annotations

import importlib
import json
import signal
import threading
from pathlib import Path

import click

from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ingest.landing import load_landing_spec

# Imports of the SLO modules, the runner and the contracts are function-local: `gtm-pipeline --help` imports every
# command module, and each command loads only what it runs, so --help starts in about half a second (gtm_pipeline.slo
# loads Dagster, ~1.2 s; the entity contracts and the exporter pandas too, ~1 s more).

_MODULE_HELP = ("Python module whose top-level `defs` holds the Dagster definitions the SLOs cover "
                "(default: the project's).")


def _context(module: str):
    """(settings, slo file, coverage) for the definitions in ``module``."""
    from gtm_pipeline.slo.contract import load_slo_file
    from gtm_pipeline.slo.evaluate import coverage_for

    settings = load_settings()
    try:
        defs = importlib.import_module(module).defs
    except (ImportError, AttributeError) as e:
        raise GtmPipelineError(f"--module {module}: cannot load Dagster definitions ({e}); name a module with a "
                               f"top-level `defs`, e.g. gtm_pipeline.definitions") from e
    slo_file = load_slo_file(settings.slo_file)
    return settings, slo_file, coverage_for(slo_file, defs.resolve_asset_graph())


def _instance(settings):
    import dagster as dg

    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    ensure_dagster_home(settings)
    return dg.DagsterInstance.get()


@click.group()
def slo() -> None:
    """Freshness SLOs: report, health, exporter for Prometheus, generated rules.

    \b
    Example:
      gtm-pipeline slo report
      gtm-pipeline slo exporter --host 127.0.0.1 --port 9464
      gtm-pipeline slo rules --out data/prometheus
    """


@slo.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of a table.")
@click.option("--module", default="gtm_pipeline.definitions", show_default=True, help=_MODULE_HELP)
def report(as_json, module):
    """Attainment, error budget left and burn rates of every SLO and covered asset, from the SLO history.

    \b
    Example:
      gtm-pipeline slo report
      gtm-pipeline slo report --json | jq '.slos[] | {slo, attainment, budget_remaining}'
    """
    from gtm_pipeline.slo.evaluate import evaluate
    from gtm_pipeline.slo.history import History
    from gtm_pipeline.slo.report import as_json as to_json
    from gtm_pipeline.slo.report import render

    settings, slo_file, coverage = _context(module)
    with History(settings.slo_history_path) as h:
        ev = evaluate(slo_file, coverage, h, _instance(settings))
        click.echo(json.dumps(to_json(ev, h), indent=2) if as_json else render(ev, h, _blocked_days(settings)))


def _blocked_days(settings) -> dict[str, str]:
    """Blocked partition ("clean/opportunity@2026-08-16") -> its sentence with check and rows, from the warehouse;
    empty when there is none yet or it is busy (the report then names the day without the check)."""
    import duckdb

    from gtm_pipeline.orchestration.runner import blocked_in_warehouse

    if not settings.duckdb_path.exists():
        return {}
    try:
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
            found = blocked_in_warehouse(con)
    except duckdb.Error:
        return {}
    out: dict[str, list[str]] = {}
    for b in found:
        out.setdefault(f"{b.asset}@{b.days[0]}", []).append(b.describe())
    return {k: "\n  ".join(v) for k, v in out.items()}  # one line per check, as render indents them


@slo.command()
@click.option("--asset", "assets", multiple=True,
              help="Judge only these assets (repeatable), e.g. --asset metrics/forecast; default: every SLO.")
@click.option("--module", default="gtm_pipeline.definitions", show_default=True, help=_MODULE_HELP)
def health(assets, module):
    """The decision nodes' pre-check: SLO health green and no open SEV2+ incident. Exits 1 when not green.

    \b
    Example:
      gtm-pipeline slo health --asset metrics/forecast && echo "safe to decide"
    """
    import duckdb

    from gtm_pipeline.slo.evaluate import evaluate
    from gtm_pipeline.slo.health import health_of, open_incidents
    from gtm_pipeline.slo.history import History

    settings, slo_file, coverage = _context(module)
    with History(settings.slo_history_path) as h:
        result = health_of(evaluate(slo_file, coverage, h, _instance(settings)), h, assets=list(assets) or None)
    click.echo(result.summary())
    blocking = not result.green
    if settings.duckdb_path.exists():
        try:
            with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
                incidents = open_incidents(con, "SEV2")
        except duckdb.Error as e:
            click.echo(f"open incidents: unknown, the warehouse is busy ({str(e).splitlines()[0][:120]})")
            incidents = []
            blocking = True
        for inc in incidents:
            click.echo(f"open {inc['severity']} {inc['incident_id']}: {inc['title']}")
        blocking = blocking or bool(incidents)
    raise SystemExit(1 if blocking else 0)


@slo.command()
@click.option("--module", default="gtm_pipeline.definitions", show_default=True, help=_MODULE_HELP)
def validate(module):
    """Check contracts/slos.yaml against the asset graph and list what each SLO covers.

    \b
    Example:
      gtm-pipeline slo validate
    """
    from gtm_pipeline.slo.contract import human_duration

    _settings, slo_file, coverage = _context(module)
    for s in slo_file.slos:
        keys = coverage.assets.get(s.name, ())
        waiting = coverage.pending.get(s.name, ())
        click.echo(f"{s.name}: {s.statement} over {human_duration(s.window)}, owner {s.owner}: {len(keys)} asset(s)"
                   + (f", {len(waiting)} not defined yet ({', '.join(waiting)})" if waiting else ""))
        for k in keys:
            click.echo(f"  {k}")
    click.echo(f"{slo_file.where}: valid")


@slo.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True,
              help="Port for /metrics (0 picks a free one).")
@click.option("--module", default="gtm_pipeline.definitions", show_default=True, help=_MODULE_HELP)
@click.option("--warehouse-min-interval", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Read the warehouse's blocked days, incidents and quarantine at most this often (seconds); "
                   "scrapes in between serve the stored snapshot.")
def exporter(host, port, module, warehouse_min_interval):
    """Serve /metrics for Prometheus: data times and publication timestamps, SLO objectives and thresholds, SLI
    figures, error budget and burn rates, and the warehouse's blocked publications, open incidents and quarantined
    rows. Reads Dagster's event log and the SLO history at each scrape; the warehouse only on a short read-only
    connection when no run holds its write lock (else the last snapshot, with its time), so it always answers.
    Stops on Ctrl-C / SIGTERM.

    \b
    Example:
      gtm-pipeline slo exporter --host 127.0.0.1 --port 9464
      curl -s http://127.0.0.1:9464/metrics | grep -E '^gtm_(slo_burn_rate|publication_blocked)'
    """
    from gtm_pipeline.clean.contract import load_entity_contracts
    from gtm_pipeline.slo.exporter import SloCollector, serve
    from gtm_pipeline.slo.history import History

    settings, slo_file, coverage = _context(module)
    owners = {name: c.owner for name, c in load_entity_contracts(settings.contracts_dir).items()}
    source_owners = {name: s.owner for name, s in load_landing_spec(settings.contracts_dir).sources.items()}
    history = History(settings.slo_history_path)
    collector = SloCollector(slo_file, coverage, history, lambda: _instance(settings), database=settings.duckdb_path,
                             owners=owners, source_owners=source_owners,
                             warehouse_min_interval=warehouse_min_interval)
    from gtm_pipeline.decisions.anchor import decision_log_collector

    # The decision log's anchored head (its checkpoint file, never the warehouse): a head that goes backwards in
    # Prometheus is a rolled-back log (docs/decisions.md).
    server = serve(collector, host, port, decision_log_collector(settings.data_dir))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"serving http://{host}:{server.server_port}/metrics ({len(slo_file.slos)} SLOs, "
               f"{sum(len(v) for v in coverage.assets.values())} covered assets, warehouse {settings.duckdb_path})",
               err=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    history.close()


@slo.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write gtm_slo_rules.yml, prometheus.yml and alertmanager.yml (default: data/prometheus).")
@click.option("--exporter", "exporter_addr", default="127.0.0.1:9464", show_default=True,
              help="host:port of `gtm-pipeline slo exporter`, scraped by the generated prometheus.yml.")
@click.option("--alertmanager", default="127.0.0.1:9093", show_default=True,
              help="host:port of Alertmanager, where the generated prometheus.yml sends alerts.")
@click.option("--page-webhook-url", default="http://127.0.0.1:5001/page", show_default=True,
              help="Alertmanager webhook receiver for pages (fast burn, open SEV1/SEV2 incident).")
@click.option("--ticket-webhook-url", default="http://127.0.0.1:5001/ticket", show_default=True,
              help="Alertmanager webhook receiver for tickets (slow burn, blocked publication, absent SLIs or "
                   "stale warehouse figures: SEV3).")
@click.option("--scrape-interval", default="15s", show_default=True, help="Prometheus scrape interval.")
@click.option("--group-wait", default="30s", show_default=True,
              help="Alertmanager: how long to wait before the first notification of a new alert group.")
@click.option("--group-interval", default="5m", show_default=True,
              help="Alertmanager: how long to wait before notifying about changes (incl. resolution) of a group.")
def rules(out_dir, exporter_addr, alertmanager, page_webhook_url, ticket_webhook_url, scrape_interval, group_wait,
          group_interval):
    """Write Prometheus recording rules and multi-window, multi-burn-rate alerts (page, ticket, SLI absent) from
    contracts/slos.yaml, the alerts on blocked publications, open SEV1/SEV2 incidents and stale warehouse figures,
    a prometheus.yml that scrapes the exporter and loads them, and an Alertmanager example that routes pages and
    tickets to separate webhooks and lets a page inhibit the ticket of the same SLO and asset.

    \b
    Example:
      gtm-pipeline slo rules --out data/prometheus
      promtool check rules data/prometheus/gtm_slo_rules.yml
    """
    from gtm_pipeline.slo.contract import load_slo_file
    from gtm_pipeline.slo.rules import write_all

    settings = load_settings()
    slo_file = load_slo_file(settings.slo_file)
    out = out_dir or settings.data_dir / "prometheus"
    for p in write_all(slo_file, out, exporter=exporter_addr, alertmanager=alertmanager, page_url=page_webhook_url,
                       ticket_url=ticket_webhook_url, scrape_interval=scrape_interval, group_wait=group_wait,
                       group_interval=group_interval):
        click.echo(f"wrote {p}")


def register(main: click.Group) -> None:
    main.add_command(slo)
