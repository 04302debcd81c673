"""Decision nodes (spec 002 §4-5): playbooks, rules, the tamper-evident decision log, approvals, the flag store,
reversals, monitoring, memos and review packets -- plain modules, no Dagster decorators. The Dagster wiring is in
`gtm_pipeline.defs.decisions`, the commands in `gtm_pipeline.cli.decisions`; see docs/decisions.md.

* `playbook`: load and validate ``contracts/decisions/*.yaml`` and the roster;
* `inputs`: the only SQL that reads the metric layer for decisions;
* `rules`: the four playbooks' thresholds as functions of metric rows;
* `nodes`: pre-checks + inputs + rules -> proposals;
* `log`: the append-only hash-chained log and `verify`; `flags`: the versioned flag store;
* `lifecycle`: propose, approve, reject, apply, reverse; `monitoring`: watch plans after apply;
* `memo`, `packets`: markdown for people.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

import duckdb

from gtm_pipeline.config import Settings
from gtm_pipeline.decisions.lifecycle import DecisionContext
from gtm_pipeline.decisions.playbook import load_playbooks, load_roster


def known_metric_tables(contracts_dir: Path) -> set[str]:
    return {p.stem for p in (Path(contracts_dir) / "metrics").glob("*.yaml")}


def open_context(con: duckdb.DuckDBPyConnection, settings: Settings,
                 clock: Callable[[], datetime] | None = None) -> DecisionContext:
    """A `DecisionContext` over ``con`` with the playbooks and roster of ``settings.contracts_dir``."""
    from gtm_pipeline.decisions import flags, log

    playbooks = load_playbooks(settings.contracts_dir, known_metric_tables(settings.contracts_dir))
    roster = load_roster(settings.contracts_dir, playbooks)
    log.ensure_log(con)
    flags.ensure_flags(con)
    kw = {"clock": clock} if clock is not None else {}
    return DecisionContext(con=con, playbooks=playbooks, roster=roster, contracts_dir=Path(settings.contracts_dir),
                           data_dir=Path(settings.data_dir), **kw)


__all__ = ["DecisionContext", "known_metric_tables", "open_context"]
