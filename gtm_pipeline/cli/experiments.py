"""Experiment commands: experiments validate, experiments readout ID, experiments backlog (docs/experiments.md)."""

from __future__ import annotations

import click

from gtm_pipeline.cli.metrics import connect_read_only
from gtm_pipeline.clock import utcnow
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError

# Imports of gtm_pipeline.experiments are function-local: it loads pandas and numpy (~1 s), and `gtm-pipeline
# --help` imports every command module.


def _experiments(settings):
    from gtm_pipeline.experiments.contract import load_experiments, metric_columns

    return load_experiments(settings.contracts_dir, metric_columns(settings.contracts_dir))


@click.group()
def experiments() -> None:
    """Experiment contracts, readouts and the backlog.

    \b
    Example:
      gtm-pipeline experiments validate
      gtm-pipeline experiments readout lead_form_short
      gtm-pipeline experiments backlog
    """


@experiments.command()
def validate():
    """Load and check every experiment contract (contracts/experiments/*.yaml); the first problem names file and field.

    \b
    Example:
      gtm-pipeline experiments validate
    """
    exps = _experiments(load_settings())
    for e in exps.values():
        click.echo(f"ok: {e.where}: {e.title} ({e.unit}, {len(e.arms)} arms, {e.primary_metric.label}, {e.method})")
    if not exps:
        click.echo("no experiment contracts in contracts/experiments")


def _fmt(x: float | None, spec: str = "+.4f") -> str:
    return "-" if x is None or x != x or abs(x) == float("inf") else format(x, spec)


@experiments.command()
@click.argument("experiment_id")
@click.option("--looks", default=7, show_default=True, help="How many of the latest looks to print.")
def readout(experiment_id, looks):
    """The latest looks of one experiment, computed now from the warehouse (metrics.experiment_readout holds
    every look as the metric layer last published it).

    \b
    Example:
      gtm-pipeline experiments readout lead_form_short --looks 3
    """
    from gtm_pipeline.experiments.readout import readout as compute

    s = load_settings()
    exps = _experiments(s)
    if experiment_id not in exps:
        raise GtmPipelineError(f"no experiment {experiment_id!r} in contracts/experiments; known: "
                               f"{', '.join(sorted(exps)) or 'none'}")
    exp = exps[experiment_id]
    with connect_read_only(s) as con:
        result = compute(con, exp, utcnow().date())
    click.echo(f"{exp.experiment}: {exp.title} -- {exp.primary_metric.label} by {exp.unit}, {exp.method}, "
               f"threshold {exp.decision_threshold:+g}, owner {exp.owner}")
    if not result:
        click.echo(f"no look yet: the experiment starts {exp.starts}")
        return
    for lk in result[-looks:]:
        arms = ", ".join(f"{a.arm} {a.n:,} ({_fmt(a.mean, '.4f')})" for a in lk.arms)
        comps = "; ".join(f"{c.arm} {_fmt(c.estimate.estimate)} [{_fmt(c.estimate.ci_low)}, "
                          f"{_fmt(c.estimate.ci_high)}] p {c.p_min:.3g}" for c in lk.comparisons)
        guards = "".join(f"; guardrail {g.metric} {_fmt(g.estimate.estimate)}{' BREACH' if g.breached else ''}"
                         for g in lk.guardrails)
        click.echo(f"look {lk.look:>3} {lk.as_of:%Y-%m-%d}: {arms}; {comps}; SRM p {lk.srm_p:.3g}{guards}")
    click.echo(f"verdict: {result[-1].verdict}")


@experiments.command()
def backlog():
    """Every experiment ranked by P(win) x $ impact per year / weeks of runtime, with where each figure comes from.

    \b
    Example:
      gtm-pipeline experiments backlog
    """
    from gtm_pipeline.experiments.backlog import backlog as rank

    s = load_settings()
    exps = _experiments(s)
    with connect_read_only(s) as con:
        items = rank(con, exps, utcnow())
    for i, it in enumerate(items, 1):
        score = "-" if it.score is None else f"${it.score:,.0f}/week"
        impact = "-" if it.impact_per_year is None else f"${it.impact_per_year:,.0f}/year"
        click.echo(f"{i}. {it.experiment}: score {score}; P(win) {it.p_win:.2f}, impact {impact}, "
                   f"{it.weeks:.1f} weeks ({it.units_per_week:,.0f} units/week); {it.status}")
        click.echo(f"   {it.why}")
    if not items:
        click.echo("no experiment contracts in contracts/experiments")


def register(main: click.Group) -> None:
    main.add_command(experiments)
