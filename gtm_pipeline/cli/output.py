"""What the CLI prints besides its commands' own output, in one place: how verbose it is (`-v`, `-vv`), which library
warnings it hides, how loud the in-process Dagster runs are, and the progress bar of a run.

By default a command prints only its own lines: Dagster's beta/preview warnings (about APIs this project pins and
uses on purpose) are hidden, Dagster's and this package's Python loggers are at WARNING, and the console log of an
in-process run is off (the command prints its own summary; the whole log is in the Dagster UI). `-v` shows INFO
(the run's log instead of the progress bar, and the hidden warnings), `-vv` DEBUG (every Dagster event).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:   # imported when a bar is drawn, not by every command
    from tqdm import tqdm

_VERBOSITY = "gtm_pipeline.verbosity"  # key in the root click context's meta
_LOGGERS = ("dagster", "gtm_pipeline")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _hidden_warnings() -> tuple[type[Warning], ...]:
    # The classes dagster exports as dagster.BetaWarning and dagster.PreviewWarning, from the small module that
    # defines them: importing dagster itself here would add a second to every command, --help included.
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    return BetaWarning, PreviewWarning


@contextlib.contextmanager
def configured(verbosity: int) -> Iterator[None]:
    """Apply ``verbosity`` for one command, and restore the warning filters and logger levels afterwards (a test
    runs many commands in one process)."""
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    before = [(lg, lg.level, list(lg.handlers)) for lg in loggers]
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    with warnings.catch_warnings():
        if verbosity <= 0:
            for category in _hidden_warnings():
                warnings.filterwarnings("ignore", category=category)
        for lg in loggers:
            lg.setLevel(level)
            if verbosity > 0 and not lg.handlers:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter(_FORMAT))
                lg.addHandler(handler)
        try:
            yield
        finally:
            for lg, lvl, handlers in before:
                lg.setLevel(lvl)
                lg.handlers[:] = handlers


def set_verbosity(ctx: click.Context, verbosity: int) -> None:
    ctx.find_root().meta[_VERBOSITY] = verbosity


def verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return int(ctx.find_root().meta.get(_VERBOSITY, 0)) if ctx is not None else 0


def run_config() -> dict:
    """Run config for the CLI's in-process runs: the console log at the CLI's level. Off by default because
    Dagster logs each expected finding (a blocked publication is a failed blocking check, with its stack trace) and
    the command prints its own summary; the warnings of the steps are kept apart (``RunOutcome.notes``)."""
    level = {0: "CRITICAL", 1: "INFO"}.get(verbosity(), "DEBUG")
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def progress_shown() -> bool:
    """A bar only for a person at a terminal: not with -v (the run's log shows progress), not into a file or a
    pipe. It is drawn on stderr, so a command's stdout (its --json output too) never carries it."""
    return verbosity() == 0 and sys.stderr.isatty()


# "web: 12/90 day(s) read (through 2026-08-12)", logged by the ingest assets over a range of days.
_DAYS_DONE = re.compile(r"^\w+: (\d+)/(\d+) day\(s\)")


class StepBar:
    """A tqdm bar on stderr over the steps of one run, naming the running step (and, for an ingest step over a
    range of days, how many days it has read); implements runner.RunWatcher."""

    def __init__(self, file=None):
        self._file = file
        self._own = None
        self._bar: tqdm | None = None

    def begin(self, job: str, steps: int) -> None:
        from tqdm import tqdm

        out = self._file
        if out is None:
            # Dagster points file descriptor 2 at the step's compute log while a step runs: the bar writes to a copy
            # of the terminal's descriptor taken now, so it reaches the terminal and stays out of the run's logs.
            try:
                out = self._own = os.fdopen(os.dup(sys.stderr.fileno()), "w", encoding="utf-8")
            except (AttributeError, OSError, ValueError):  # a stderr without a descriptor (captured by a test)
                out = sys.stderr
        self._bar = tqdm(total=steps, desc=job, unit="step", file=out, leave=False, dynamic_ncols=True)

    def _drawn(self) -> tqdm:
        assert self._bar is not None, "StepBar.begin() comes first"   # the runner calls it before the first step
        return self._bar

    def step_started(self, step: str) -> None:
        self._drawn().set_postfix_str(_asset(step), refresh=True)

    def step_done(self, step: str) -> None:
        self._drawn().update(1)

    def message(self, step: str | None, text: str) -> None:
        m = _DAYS_DONE.match(text or "")
        if m and step:
            self._drawn().set_postfix_str(f"{_asset(step)} {m.group(1)}/{m.group(2)} day(s)", refresh=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._own is not None:
            self._own.close()
            self._own = None


def _asset(step: str) -> str:
    return step.replace("__", "/")  # the step key of asset clean/opportunity is clean__opportunity


def run(job: str, **kwargs):
    """runner.run_job with the CLI's console log level and, for a person at a terminal, the progress bar."""
    # local: the runner loads Dagster (~1 s), and every command imports this module, --help included
    from gtm_pipeline.orchestration.runner import run_job

    return run_job(job, run_config=run_config(), watcher=StepBar() if progress_shown() else None, **kwargs)


def echo_notes(outcome, *, width: int = 240) -> None:
    """One line per warning a step of the run logged, shortened to ``width``: what explains the outcome (a node
    that proposed nothing and why, a metric held back). The messages name their node or asset themselves; -v
    shows them in full, in the run's log."""
    for _step, message in outcome.notes:
        text = " ".join((message or "").split())
        cut = len(text) > width
        click.echo(f"  note: {text[:width]}" + (" ... (-v shows all of it)" if cut else ""))
