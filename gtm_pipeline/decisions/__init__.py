"""Decision nodes (spec 002 §4-5): playbooks, rules, the tamper-evident decision log, approvals, the flag store,
reversals, monitoring, memos and review packets -- plain modules, no Dagster decorators. The Dagster wiring is in
`gtm_pipeline.decisions.defs`, the commands in `gtm_pipeline.cli.decisions`; see docs/decisions.md.

* `playbook`: load and validate ``contracts/decisions/*.yaml`` and the roster;
* `inputs`: the only SQL that reads the metric layer for decisions;
* `rules`: the four playbooks' thresholds as functions of metric rows;
* `gates`: the shared pre-checks (SLO health, open incidents, input data time); `nodes`: pre-checks + inputs +
  rules -> proposals, and `recheck` at approve/apply; `refusals`: the roster and the gates at approve and apply;
* `log`: the append-only, keyed hash chain; `anchor`: its checkpoint file, key and Prometheus gauge; `verify`;
  `flags`: the versioned flag store; `in_force`: the views that read the flags (what an apply changes);
* `lifecycle`: propose, approve, reject, apply, reverse; `monitoring`: watch plans after apply;
* `memo`, `packets`: markdown for people.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.config import Settings
from gtm_pipeline.decisions.gates import HealthFn
from gtm_pipeline.decisions.lifecycle import DecisionContext
from gtm_pipeline.decisions.playbook import load_playbooks, load_roster


def known_metric_tables(contracts_dir: Path) -> set[str]:
    return {p.stem for p in (Path(contracts_dir) / "metrics").glob("*.yaml")}


class _Default(enum.Enum):
    """The "not given" value of ``open_context(log_key=...)``, where None means "no key"."""

    FROM_SETTINGS = enum.auto()


_FROM_SETTINGS = _Default.FROM_SETTINGS


def open_context(con: duckdb.DuckDBPyConnection, settings: Settings,
                 clock: Callable[[], datetime] | None = None, *, health_fn: HealthFn | None = None,
                 log_key: str | None | _Default = _FROM_SETTINGS) -> DecisionContext:
    """A `DecisionContext` over ``con`` with the playbooks and roster of ``settings.contracts_dir``, its SLO file,
    and the decision log's key (``settings.decision_log_key`` unless ``log_key`` is given). ``health_fn`` is the SLO
    health source of the gates at approve and apply; without one the SLO gate fails closed."""
    from gtm_pipeline.decisions import flags, in_force, log
    from gtm_pipeline.decisions.anchor import anchor_for

    playbooks = load_playbooks(settings.contracts_dir, known_metric_tables(settings.contracts_dir))
    roster = load_roster(settings.contracts_dir, playbooks)
    key = settings.decision_log_key if log_key is _FROM_SETTINGS else log_key
    anchor_for(settings.data_dir, key)  # a too short key fails here, before anything is written
    log.ensure_log(con)
    flags.ensure_flags(con)
    # The readers of the flags (price book, channel plan, lead ICP segment) follow every apply and reverse.
    in_force.install(con, in_force.action_flags(playbooks))
    kw = {"clock": clock} if clock is not None else {}
    return DecisionContext(con=con, playbooks=playbooks, roster=roster, contracts_dir=Path(settings.contracts_dir),
                           data_dir=Path(settings.data_dir), slo_file=settings.slo_file, health_fn=health_fn,
                           log_key=key, **kw)


__all__ = ["DecisionContext", "known_metric_tables", "open_context"]
