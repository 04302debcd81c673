"""Launch commands: launches validate, launches check ID, launches apply ID (docs/launches.md)."""

from __future__ import annotations

from contextlib import contextmanager

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings
from gtm_pipeline.launches.contract import load_launches, load_regimes

# Imports of the decision layer and the launch gate are function-local: `gtm-pipeline --help` imports every command
# module, and they load Dagster and pandas (~2.5 s); each command loads only what it runs.


@contextmanager
def _context():
    # Read-write even for a check: the check's verdict is an entry of the decision log. The decision layer is
    # imported here, not at module level: it pulls in Dagster, and `gtm-pipeline --help` must stay quick.
    from gtm_pipeline.decisions import open_context

    con = connect()
    try:
        yield open_context(con, load_settings())
    finally:
        con.close()


@click.group()
def launches() -> None:
    """Launch gates: a launch applies only when every item of its contract has evidence.

    \b
    Example:
      gtm-pipeline launches validate
      gtm-pipeline launches check ai_sdr_assistant
      gtm-pipeline launches apply ai_sdr_assistant --by pat@example.com
    """


@launches.command()
def validate():
    """Load and check every launch contract (contracts/launches/*.yaml) and the regimes they name
    (contracts/compliance/regimes.yaml); the first problem names file and field.

    \b
    Example:
      gtm-pipeline launches validate
    """
    s = load_settings()
    regimes = load_regimes(s.contracts_dir)
    click.echo(f"ok: contracts/compliance/regimes.yaml: version {regimes.version}, regimes "
               f"{', '.join(f'{k} (as of {r.as_of})' for k, r in regimes.regimes.items())}")
    found = load_launches(s.contracts_dir)
    for la in found.values():
        click.echo(f"ok: {la.where}: {la.spec.title} (owner {la.spec.owner}; regions {', '.join(la.spec.regions)}; "
                   f"flag {la.spec.rollback.flag})")
    if not found:
        click.echo("no launch contracts in contracts/launches")


def _print_items(items) -> None:
    for i in items:
        mark = "ok     " if i.passed else "MISSING"
        click.echo(f"  {mark} {i.field}: {i.detail}" + (f" [{i.digest[:19]}…]" if i.digest else ""))


@launches.command()
@click.argument("launch_id")
def check(launch_id):
    """Judge every item of a launch on its evidence now and log the verdict with the evidence hashes (exit 2 when
    an item is missing, naming the file and the field).

    \b
    Example:
      gtm-pipeline launches check ai_sdr_assistant
    """
    from gtm_pipeline.launches import gate

    with _context() as dc:
        result = gate.check(dc, launch_id)
    click.echo(f"{result.launch.where}: {result.launch.spec.title}")
    _print_items(result.items)
    if not result.passed:
        raise gate.LaunchBlocked(result.refusal())
    click.echo(f"gate passed: {result.decision_id} ({'already logged' if result.state == 'duplicate' else 'logged'}); "
               f"apply with gtm-pipeline launches apply {launch_id} --by NAME")


@launches.command()
@click.argument("launch_id")
@click.option("--by", "person", required=True, help="Who launches (recorded in the decision log), e.g. "
                                                     "pat@example.com.")
def apply(launch_id, person):
    """Launch: every item is judged again and its evidence hash compared with the passing check's; then the launch's
    rollback flag flips to launched (exit 2 on a refusal, which is logged too).

    \b
    Example:
      gtm-pipeline launches apply ai_sdr_assistant --by pat@example.com
    """
    from gtm_pipeline.launches import gate

    with _context() as dc:
        fv = gate.apply(dc, launch_id, person=person)
    click.echo(f"launched {launch_id}: {fv.flag} v{fv.version} = {fv.value}")


def register(main: click.Group) -> None:
    main.add_command(launches)
