"""Commands that move data: generate, import, demo, run, refresh, contracts validate, ledger."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gtm_pipeline.cli import output
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.ingest.landing import load_landing_spec

# Imports of the pipeline's stages are function-local: `gtm-pipeline --help` imports every command module, and
# each command loads only what it runs, so --help starts in about half a second (Dagster alone costs ~1.2 s,
# pandas ~1.3 s).


@click.command()
@click.option("--days", type=click.IntRange(1, 3660), default=90, show_default=True, help="Number of delivery days.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed: the same seed gives the same bytes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Landing folder to write (default: the configured landing folder, data/landing).")
@click.option("--start", "start", type=click.DateTime(formats=["%Y-%m-%d"]), default="2026-08-01", show_default=True,
              help="First delivery day.")
@click.option("--scale", type=click.FloatRange(0.01, 10000), default=1.0, show_default=True,
              help="Volume multiplier (1.0 is about 3-5k raw rows a day).")
@click.option("--clean-data", is_flag=True, help="Inject no defects (default: inject the configured defect rates).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def generate(days, seed, out_dir, start, scale, clean_data, no_progress):
    """Write deterministic, seeded GTM exports (web, ads, crm, calendar, vendors) and a ground-truth manifest.

    \b
    Example:
      gtm-pipeline generate --days 90 --seed 7 --out data/landing
    """
    from gtm_pipeline.generate import DefectRates, GenerateConfig
    from gtm_pipeline.generate import generate as run_generate

    out = out_dir or load_settings().landing_dir
    cfg = GenerateConfig(days=days, seed=seed, start=start.date(), scale=scale,
                         defects=DefectRates.none() if clean_data else DefectRates())
    t0 = time.perf_counter()
    manifest = run_generate(out, cfg, progress=not no_progress)
    rows = sum(v for v in _walk_counts(manifest.get("row_counts", {})))
    click.echo(f"wrote {rows:,} rows for {days} days to {out} in {time.perf_counter() - t0:.1f}s "
               f"({len(manifest.get('defects', []))} injected defects; ground truth in {out / 'manifest.json'})")


def _walk_counts(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk_counts(v)
    elif isinstance(node, (int, float)):
        yield int(node)


@click.command(name="import")
@click.argument("mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--input", "input_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder holding the original export files the mapping names.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Landing folder to write (default: the configured landing folder).")
def import_(mapping, input_dir, out_dir):
    """Turn your own CRM / marketing exports into landing files through a declarative column mapping.

    \b
    Example:
      gtm-pipeline import contracts/mappings/maven_crm.yaml --input ../shared/datasets/maven_crm_sales_opportunities \\
          --out data/landing
    """
    from gtm_pipeline.importer.mapping import import_cli

    click.echo(import_cli(mapping, input_dir, out_dir or load_settings().landing_dir))


def _start_over(s) -> None:
    """``demo --regenerate``: delete the landing folder and the warehouse."""
    import shutil

    shutil.rmtree(s.landing_dir, ignore_errors=True)
    for p in (s.duckdb_path, Path(str(s.duckdb_path) + ".wal")):
        p.unlink(missing_ok=True)
    # The decision log's checkpoints anchor the log of the warehouse just deleted; kept, they would report the new,
    # empty log as a truncated one.
    (s.data_dir / "decisions" / "log_checkpoints.jsonl").unlink(missing_ok=True)


@click.command()
@click.option("--days", type=click.IntRange(1, 3660), default=90, show_default=True,
              help="Days to generate when the landing folder is empty.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed for generated data.")
@click.option("--regenerate", is_flag=True, help="Delete the warehouse and landing folder and start over.")
def demo(days, seed, regenerate):
    """Run the main job on the embedded default: generate data if needed, materialize the whole asset graph
    (ingest -> clean -> contracts -> metrics -> decisions) in DuckDB, and print what landed where.

    Exits 1 when a step of either run failed; days whose publication a blocking check held back are reported but
    are not a failure of the demo.

    \b
    Example:
      gtm-pipeline demo --days 90 --seed 7
    """
    import duckdb

    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.runner import ensure_dagster_home, landing_range, summary

    s = load_settings()
    if regenerate:
        _start_over(s)
    home = ensure_dagster_home(s)
    if not (s.landing_dir / "manifest.json").exists() and not any(s.landing_dir.glob("*/*")):
        click.echo(f"[1/3] generating {days} days of GTM exports into {s.landing_dir}")
        ctx = click.get_current_context()
        ctx.invoke(generate, days=days, seed=seed, out_dir=s.landing_dir, start=_dt("2026-08-01"), scale=1.0,
                   clean_data=False, no_progress=not output.progress_shown())
    else:
        click.echo(f"[1/3] using the landing files in {s.landing_dir}")
    first, last = landing_range(s)
    click.echo(f"[2/3] {keys.DAILY_JOB}: ingest, clean and contract-check {first} .. {last} (one run)")
    t0 = time.perf_counter()
    daily = output.run(keys.DAILY_JOB, partition_range=(first, last))
    # A blocked publication is a finding, not a failure of the demo: the generated data carries out-of-range days on
    # purpose, to show the block. The demo fails (exit 1) only on a step that broke, in either run.
    said = {"ok": "ok", "blocked": "finished with blocked publications (a finding, not a failure of the demo; "
                                   "generated data carries out-of-range rows on purpose)", "failed": "FAILED"}
    click.echo(f"      {said[daily.status]} in {time.perf_counter() - t0:.1f}s (run {daily.run_id[:8]})")
    for line in daily.problems():
        click.echo(f"      {line}")
    _echo_checks(daily.failed_checks)
    click.echo(f"[3/3] {keys.REFRESH_JOB}: conservation ledger, metric layer and decisions")
    t0 = time.perf_counter()
    refresh = output.run(keys.REFRESH_JOB)
    click.echo(f"      {said[refresh.status]} in {time.perf_counter() - t0:.1f}s (run {refresh.run_id[:8]})")
    for line in refresh.problems():
        click.echo(f"      {line}")
    _echo_checks(refresh.failed_checks)
    with duckdb.connect(str(s.duckdb_path), read_only=True) as con:
        click.echo("\nWhat landed where (DuckDB " + str(s.duckdb_path) + "):")
        click.echo(summary(con))
    click.echo(f"\nOpen the UI:  DAGSTER_HOME={home} dagster dev -w workspace.yaml")
    if daily.status == "failed":
        raise daily.failure(f"demo: {keys.DAILY_JOB} {first}..{last}")
    if not refresh.success:
        raise refresh.failure(f"demo: {keys.REFRESH_JOB}")


def _echo_checks(failed: list[str]) -> None:
    """One line per check name with the assets it flagged (findings on generated data are expected: defects)."""
    by_check: dict[str, list[str]] = {}
    for item in failed:
        asset, check = item.rsplit(":", 1)
        by_check.setdefault(check, []).append(asset.split("/")[-1])
    for check, assets in sorted(by_check.items()):
        click.echo(f"      findings: {check} on {', '.join(sorted(assets))}")


def _dt(text: str):
    from datetime import datetime

    return datetime.strptime(text, "%Y-%m-%d")


@click.command()
@click.option("--from", "first", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="First day.")
@click.option("--to", "last", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Last day (default: --from).")
def run(first, last):
    """Ingest, clean and contract-check a range of delivery days in one run (re-running a day replaces it).

    Exits 1 when the run failed or a blocking check held a day back, naming the check, asset and day.

    \b
    Example:
      gtm-pipeline run --from 2026-08-01 --to 2026-08-07
    """
    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    ensure_dagster_home(load_settings())
    a, b = first.date().isoformat(), (last or first).date().isoformat()
    out = output.run(keys.DAILY_JOB, partition_range=(a, b))
    click.echo(f"{keys.DAILY_JOB} {a}..{b}: {out.status} (run {out.run_id})")
    for c in out.failed_checks:
        click.echo(f"  check failed: {c}")
    if not out.success:
        raise out.failure(f"{keys.DAILY_JOB} {a}..{b}")


@click.command()
def refresh():
    """Recompute everything built over all days (ledger, metric layer, decisions). Exits 1 when the run failed.

    \b
    Example:
      gtm-pipeline refresh
    """
    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    ensure_dagster_home(load_settings())
    out = output.run(keys.REFRESH_JOB)
    click.echo(f"{keys.REFRESH_JOB}: {out.status} (run {out.run_id})")
    for c in out.failed_checks:
        click.echo(f"  check failed: {c}")
    if not out.success:
        raise out.failure(keys.REFRESH_JOB)


@click.group()
def contracts():
    """Validate and inspect the YAML contracts.

    \b
    Example:
      gtm-pipeline contracts validate
    """


@contracts.command()
def validate():
    """Load every contract (sources, entities) and report the first problem with file, field and fix.

    \b
    Example:
      gtm-pipeline contracts validate
    """
    from gtm_pipeline.clean.contract import load_entity_contracts

    s = load_settings()
    spec = load_landing_spec(s.contracts_dir)
    ents = load_entity_contracts(s.contracts_dir)
    click.echo(f"ok: {len(spec.tables())} source tables, {len(ents)} entity contracts")


@click.command()
@click.option("--day", default=None,
              help="Only this delivery day (YYYY-MM-DD), in detail: per table, its rejected lines (raw text "
                   "escaped) and the files not read.")
@click.option("--detail", is_flag=True,
              help="One line per table and delivery day (default: one line per table over all days).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON for scripts: per table and day (records, clean, quarantined, held, rejected, lost), "
                   "the files not read and the totals.")
def ledger(day, detail, as_json):
    """Show the conservation ledger: every file and line that arrived, and where each ended.

    By default one line per source table over all days (days, records = clean + quarantined + held + rejected,
    lost = 0); --day for one day's detail with its rejected lines, --detail for every table and day. Files rejected
    whole (0 bytes, unreadable) and unclaimed files (no table reads them; with the closest table) are listed below.

    \b
    Example:
      gtm-pipeline ledger
      gtm-pipeline ledger --day 2026-08-03
      gtm-pipeline ledger --detail
      gtm-pipeline ledger --json --day 2026-08-03
    """
    import json

    import duckdb

    from gtm_pipeline.quarantine import ledger as book

    s = load_settings()
    if not s.duckdb_path.exists():
        raise GtmPipelineError(f"{s.duckdb_path}: no warehouse yet; build one with 'gtm-pipeline demo' or "
                               f"'gtm-pipeline run --from DAY', or point GTM_PIPELINE_DUCKDB at yours")
    spec = load_landing_spec(s.contracts_dir)
    with duckdb.connect(str(s.duckdb_path), read_only=True) as con:
        out = (json.dumps(book.as_json(con, spec, day), indent=2) if as_json
               else book.render(con, spec, day, detail=detail))
    click.echo(out)


def register(main: click.Group) -> None:
    for cmd in (generate, import_, demo, run, refresh, contracts, ledger):
        main.add_command(cmd)
