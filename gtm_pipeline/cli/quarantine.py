"""Commands for quarantined records: list, show, repair, release, backfill (docs/quarantine-repair.md)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gtm_pipeline.cli import output
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError, RunFailed

# Imports of the quarantine, routing and contract modules are function-local: `gtm-pipeline --help` imports every
# command module, and these load pandas and Dagster (gtm_pipeline.quarantine.repair alone ~2 s; --help: about half
# a second without them).


def connect(read_only: bool = False):
    """The warehouse, waiting briefly if a run or the sensor holds its lock; a clear error if it stays locked."""
    import duckdb

    s = load_settings()
    if not s.duckdb_path.exists():
        raise GtmPipelineError(f"{s.duckdb_path}: no warehouse yet; run the pipeline first "
                               f"('gtm-pipeline demo' or 'gtm-pipeline run --from <day>')")
    last = None
    for attempt in range(6):
        try:
            return duckdb.connect(str(s.duckdb_path), read_only=read_only)
        except duckdb.IOException as e:  # another process holds the write lock
            last = e
            time.sleep(0.25 * 2 ** attempt)
    raise GtmPipelineError(f"{s.duckdb_path}: locked by another process (a pipeline run in progress?); retry when "
                           f"it finishes ({str(last).splitlines()[0][:160]})") from last


def _contracts():
    from gtm_pipeline.clean.contract import load_entity_contracts

    return load_entity_contracts(load_settings().contracts_dir)


def filter_options(fn):
    """--id, --entity, --table, --rule, --column, --day, --status: which quarantine rows a command works on."""
    opts = [
        click.option("--status", default=None,
                     help="Only rows with this status: open, held, repaired, released, applied or rejected."),
        click.option("--day", default=None, help="Only rows of this delivery day (YYYY-MM-DD)."),
        click.option("--column", default=None, help="Only rows that broke a rule on this column, e.g. stage."),
        click.option("--rule", default=None,
                     help="Only rows that broke this rule kind (type, required, enum, range, row_check, held) or "
                          "this full rule name (row_check:<name>)."),
        click.option("--table", default=None,
                     help="Only this quarantine table: an entity name or missing_owner."),
        click.option("--entity", default=None, help="Only rows of this entity, e.g. opportunity."),
        click.option("--id", "ids", multiple=True, help="Only this quarantine id (repeatable)."),
    ]
    for o in opts:
        fn = o(fn)
    return fn


def _filters(ids, entity, table, rule, column, day, status, default_status=None):
    from gtm_pipeline.quarantine.rows import Filters

    return Filters(ids=tuple(ids), entity=entity, table=table, rule=rule, column=column, day=day,
                   status=status or (None if ids else default_status))


def _actor_option(fn):
    return click.option("--actor", default=None,
                        help="Who is repairing, for the audit trail (default: your OS user name).")(fn)


@click.group()
def quarantine():
    """Inspect quarantined records, repair them, release them and backfill just the affected days.

    \b
    Example:
      gtm-pipeline quarantine list --entity opportunity --status open
    """


@quarantine.command(name="list")
@filter_options
@click.option("--samples", "n_samples", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Sample rows to show per (table, rule, status).")
@click.option("--export", "export", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the selected rows (one entity) as an editable CSV for 'repair --csv'.")
def list_(ids, entity, table, rule, column, day, status, n_samples, export):
    """Count quarantined rows by table, day, rule and status, and show samples with their ids.

    \b
    Example:
      gtm-pipeline quarantine list --table missing_owner --day 2026-08-03
      gtm-pipeline quarantine list --entity opportunity --rule enum --export fixes.csv
    """
    from gtm_pipeline.quarantine.rows import ensure_repair_tables, export_template, samples, select_rows, summarize

    contracts = _contracts()
    with connect() as con:
        ensure_repair_tables(con, contracts)
        rows = select_rows(con, contracts, _filters(ids, entity, table, rule, column, day, status))
    if rows.empty:
        click.echo("no quarantined rows match")
        return
    click.echo(f"{len(rows)} row(s)\n")
    click.echo(summarize(rows).to_string(index=False))
    if n_samples:
        click.echo("\nsamples:")
        click.echo(samples(rows, n_samples).to_string(index=False))
    if export:
        n = export_template(rows, contracts, export)
        click.echo(f"\nwrote {n} row(s) to {export}: edit the values, then "
                   f"'gtm-pipeline quarantine repair --csv {export}'")


@quarantine.command()
@click.argument("quarantine_id")
def show(quarantine_id):
    """Show one quarantined row: lineage, rules broken, original and repaired values, status and audit trail.

    \b
    Example:
      gtm-pipeline quarantine show 3f9a0c1d2e4b5a67
    """
    import json

    from gtm_pipeline.quarantine import rows

    contracts = _contracts()
    with connect() as con:
        row, audit = rows.show(con, contracts, quarantine_id)
    click.echo(f"quarantine_id: {row['quarantine_id']}  ({row['entity']}, table quarantine.{row['quarantine_table']})")
    click.echo(f"record:        {row['_file']}:{row['_line']}  (delivery day {str(row['_partition'])[:10]}, "
               f"source {row['_source']}/{row['_table']})")
    click.echo(f"status:        {row['status']}")
    click.echo(f"rule:          {row['rule']}  ({', '.join(row['rules'])}); break action {row['break_action']}")
    click.echo(f"reason:        {row['reason']}")
    click.echo(f"contract:      {row['entity']}@{row['contract_version']}")
    if isinstance(row.get("applied_run_id"), str):
        click.echo(f"taken in by:   run {row['applied_run_id']} at {row['applied_at']}")
    if isinstance(row.get("release_id"), str):
        click.echo(f"released:      {row['release_id']} at {row['released_at']}")
    original = json.loads(row["payload"])
    fixed = rows.effective_payload(row)
    click.echo("\nvalues (original -> repaired):")
    for col in contracts[row["entity"]].columns:
        a, b = original.get(col), fixed.get(col)
        mark = f"  ->  {b!r}" if a != b else ""
        click.echo(f"  {col:<18} {a!r}{mark}")
    click.echo("\naudit trail:" if len(audit) else "\naudit trail: no repairs yet")
    if len(audit):
        click.echo(audit.to_string(index=False))


@quarantine.command(name="repair")
@filter_options
@click.option("--route", "use_route", is_flag=True,
              help="Assign a missing owner through the routing rules (unroutable rows go to the routing DLQ).")
@click.option("--enum-map", "enum_map", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Map bad enum values with a mapping file: YAML {column: {bad: good}} or CSV column,bad,good.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Apply a CSV of corrected rows keyed by quarantine_id (other columns: values to set).")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --route: the rule set to use (default: the one with status: current in contracts/routing).")
@click.option("--seed", type=int, default=0, show_default=True, help="With --route: seed of the random tie-breaker.")
@_actor_option
def repair_cmd(ids, entity, table, rule, column, day, status, use_route, enum_map, csv_file, rules_file, seed, actor):
    """Repair quarantined rows one of three ways; each repaired row is re-validated against the current contract.

    A row that passes becomes 'repaired' (release it next); one that still fails stays 'open' with the new reason.
    Every change is audited in quarantine.repairs (who, when, column, before, after).

    \b
    Example:
      gtm-pipeline quarantine repair --route --table missing_owner --day 2026-08-03
      gtm-pipeline quarantine repair --enum-map stage_fixes.yaml --entity opportunity
      gtm-pipeline quarantine repair --csv fixes.csv --actor jane
    """
    from gtm_pipeline.quarantine import repair, rows
    from gtm_pipeline.routing import engine as routing

    chosen = [m for m, on in (("--route", use_route), ("--enum-map", enum_map), ("--csv", csv_file)) if on]
    if len(chosen) != 1:
        raise GtmPipelineError("quarantine repair: choose exactly one of --route, --enum-map FILE or --csv FILE "
                               f"(got {', '.join(chosen) or 'none'})")
    if rules_file and not use_route:
        raise GtmPipelineError("quarantine repair: --rules only applies with --route")
    s = load_settings()
    contracts = _contracts()
    actor = actor or rows.default_actor()
    with connect() as con:
        rows.ensure_repair_tables(con, contracts)
        if csv_file:
            report = repair.repair_by_csv(con, contracts, csv_file, actor=actor)
        else:
            selected = rows.select_rows(con, contracts, _filters(ids, entity, table, rule, column, day, status,
                                                                 default_status="open"))
            if use_route:
                rs = (routing.load_rule_set(rules_file, s.contracts_dir) if rules_file
                      else routing.current_rule_set(s.contracts_dir))
                click.echo(f"routing with rule set {rs.label} ({rs.where}), seed {seed}")
                report = repair.repair_by_route(con, contracts, selected, rs, actor=actor, seed=seed)
            else:
                report = repair.repair_by_enum_map(con, contracts, selected, repair.load_enum_map(enum_map),
                                                   actor=actor, source=str(enum_map))
    click.echo(report.summary())
    for o in report.outcomes[:30]:
        change = "; ".join(f"{c}: {b!r} -> {a!r}" for c, (b, a) in o.changes.items())
        extra = f"  [{o.reason}]" if o.reason else ""
        click.echo(f"  {o.quarantine_id}  {o.status:<8} {change}{extra}")
    if len(report.outcomes) > 30:
        click.echo(f"  ... and {len(report.outcomes) - 30} more (see quarantine.repairs)")
    for qid, dlq, why in report.unrouted[:30]:
        click.echo(f"  {qid}  unrouted -> {dlq}: {why}")
    if report.count("repaired"):
        click.echo("next: gtm-pipeline quarantine release" + (f" --day {day}" if day else ""))


@quarantine.command(name="release")
@filter_options
@_actor_option
def release_cmd(ids, entity, table, rule, column, day, status, actor):
    """Release repaired rows for re-entry: the backfill sensor then re-cleans just their days.

    Each row is re-validated against the current contract first; one that fails now goes back to 'open'.

    \b
    Example:
      gtm-pipeline quarantine release --day 2026-08-03
    """
    from gtm_pipeline.quarantine import release, rows

    contracts = _contracts()
    with connect() as con:
        rows.ensure_repair_tables(con, contracts)
        selected = rows.select_rows(con, contracts, _filters(ids, entity, table, rule, column, day, status,
                                                             default_status="repaired"))
        rep = release.release(con, contracts, selected, actor=actor or rows.default_actor())
    click.echo(f"release {rep.release_id}: {len(rep.released)} released, {len(rep.refused)} refused "
               f"(failing the current contract, back to open), {len(rep.skipped)} skipped (not repaired)")
    for qid, why in rep.refused[:30]:
        click.echo(f"  refused {qid}: {why}")
    for d, ents in sorted(rep.days.items()):
        click.echo(f"  day {d}: {', '.join(ents)}")
    if rep.released:
        click.echo("The repair_backfill_sensor picks this up within a minute while 'dagster dev' runs; or now: "
                   "gtm-pipeline quarantine backfill")


@quarantine.command(name="backfill")
@click.option("--no-refresh", is_flag=True, help="Only re-clean the affected days; skip the downstream refresh.")
def backfill_cmd(no_refresh):
    """Run the repair backfill now, in-process: the affected day partitions only, then the downstream refresh.

    The same runs the repair_backfill_sensor would request; they are recorded in the Dagster instance. Exits 1 when
    a run failed, or when released rows stay held because their day's publication is blocked (naming the day, the
    entity and the check).

    \b
    Example:
      gtm-pipeline quarantine backfill
    """
    from gtm_pipeline.definitions import build_definitions
    from gtm_pipeline.orchestration.runner import ensure_dagster_home, run_job
    from gtm_pipeline.quarantine.backfill_now import run_backfill_in_process

    s = load_settings()
    ensure_dagster_home(s)
    if not s.duckdb_path.exists():
        raise GtmPipelineError(f"{s.duckdb_path}: no warehouse yet; run the pipeline first")
    # The command prints what each run did and what holds a day back; -v shows the runs' own log. The definitions
    # are built now, so their resources follow the settings just loaded.
    out = run_backfill_in_process(s.duckdb_path, definitions=build_definitions(s), run=run_job,
                                  refresh=not no_refresh, run_config=output.run_config())
    if not out.runs and not out.held:
        click.echo("nothing to backfill: no released repairs waiting and nothing downstream to refresh")
        return
    if not out.runs:
        click.echo("nothing to backfill now: no released repairs waiting except those a blocked day holds")
    lines = []
    for req, run_id, ok in out.runs:
        ents = ", ".join(req.entities)
        what = f"day {req.day}: {ents}" if req.day else f"refresh downstream of {ents}"
        res = out.outcomes[run_id]
        click.echo(f"  {res.status:<6} {what} (run {run_id})"
                   + (f"; failed steps: {', '.join(res.failed_steps)}" if res.failed_steps else ""))
        # A day a blocking check holds back fails its re-clean and keeps the released rows held: its held line below
        # says which check, once.
        if not ok and not (res.only_blocked and req.day in out.held_days):
            lines += [f"{what}: {p}" for p in res.problems()] + [f"more: {res.where()}"]
    if out.runs:
        click.echo(f"{out.applied} of {out.pending_before} released row(s) taken in")
    if out.children:
        click.echo(f"{out.children} row(s) held for a parent in quarantine published with their day (the parent "
                   f"is in clean now)")
    lines += out.held
    if lines:
        broken = any(not out.outcomes[r].only_blocked for _, r, ok in out.runs if not ok)
        raise RunFailed(f"quarantine backfill {'failed' if broken else 'was blocked'}:\n  " + "\n  ".join(lines))


def register(main: click.Group) -> None:
    main.add_command(quarantine)
