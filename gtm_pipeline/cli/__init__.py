"""The `gtm-pipeline` command. Each sub-module adds its commands to ``main``; errors the user can fix are printed
as one clear line (never a stack trace).

Exit codes (docs/operations.md, "Exit codes"): 0 the command did what it was asked (findings of non-blocking checks
are printed, not failures); 1 a run it started failed or a blocking check stopped it (`RunFailed`), or a check
command found what it checks not healthy (`slo health`, `decisions verify`); 2 a usage error (click's own) or a
problem to fix before anything runs (every other `GtmPipelineError`), e.g. a bad contract or a missing warehouse.

What else is printed (library warnings, Dagster's run log, progress) is decided in one place, ``cli/output.py``:
only the command's own output by default, more with -v/-vv."""

from __future__ import annotations

import importlib
import sys

import click

from gtm_pipeline.cli import output
from gtm_pipeline.errors import GtmPipelineError, RunFailed

# Command modules, in the order their commands are listed by --help.
_COMMAND_MODULES = ("data", "slo", "quarantine", "incidents", "notifications", "routing", "metrics", "decisions",
                    "experiments", "launches", "scoring", "lifecycle", "bench")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            with output.configured(ctx.params.get("verbose") or 0):
                return super().invoke(ctx)
        except GtmPipelineError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1 if isinstance(e, RunFailed) else 2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="gtm-pipeline")
@click.option("-v", "--verbose", count=True,
              help="Show more: -v the runs' INFO log and library warnings, -vv DEBUG (every Dagster event). "
                   "Default: only the command's own output.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """gtm-pipeline: raw GTM exports -> audited metrics -> logged, approvable, reversible decisions.

    \b
    Example:
      gtm-pipeline demo            # generate 90 days, run the whole graph, print what landed where
      gtm-pipeline -v run --from 2026-08-01   # with the run's log
      dagster dev -w workspace.yaml   # then watch it in the Dagster UI
    """
    output.set_verbosity(ctx, verbose)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(main)
