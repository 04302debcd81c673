"""What every decision step works in: the warehouse, the playbooks and roster, the folders, the clock, the SLO gate's
health source and the log's key (`DecisionContext`), and `open_context`, which builds one from the settings.

Kept apart from the package ``__init__`` so that the package's own modules import these names from here, never
from the package (whose ``__init__`` only re-exports them for callers outside).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.config import Settings
from gtm_pipeline.decisions.anchor import Anchor, anchor_for
from gtm_pipeline.decisions.flags import ensure_flags
from gtm_pipeline.decisions.gates import HealthFn
from gtm_pipeline.decisions.in_force import action_flags
from gtm_pipeline.decisions.in_force import install as install_flag_readers
from gtm_pipeline.decisions.log import ensure_log
from gtm_pipeline.decisions.playbook import Playbook, Roster, load_playbooks, load_roster
from gtm_pipeline.warehouse import utcnow


@dataclass
class DecisionContext:
    """What every lifecycle step needs: the warehouse, the playbooks and roster, where files go, a clock, the SLO
    file and health source the gates judge by (no health source: the SLO gate fails closed), and the log's key."""

    con: duckdb.DuckDBPyConnection
    playbooks: dict[str, Playbook]
    roster: Roster
    contracts_dir: Path
    data_dir: Path
    clock: Callable[[], datetime] = utcnow
    slo_file: Path | None = None
    health_fn: HealthFn | None = None
    log_key: str | None = field(default=None, repr=False)

    @property
    def head(self) -> Anchor:
        """The log's anchor: the checkpoint file under the data folder and the chain key."""
        return anchor_for(self.data_dir, self.log_key)

    @property
    def memo_dir(self) -> Path:
        return Path(self.data_dir) / "memos"

    @property
    def packet_dir(self) -> Path:
        return Path(self.data_dir) / "packets"


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
    playbooks = load_playbooks(settings.contracts_dir, known_metric_tables(settings.contracts_dir))
    roster = load_roster(settings.contracts_dir, playbooks)
    key = settings.decision_log_key if log_key is _FROM_SETTINGS else log_key
    anchor_for(settings.data_dir, key)  # a too short key fails here, before anything is written
    ensure_log(con)
    ensure_flags(con)
    # The readers of the flags (price book, channel plan, lead ICP segment) follow every apply and reverse.
    install_flag_readers(con, action_flags(playbooks))
    kw = {"clock": clock} if clock is not None else {}
    return DecisionContext(con=con, playbooks=playbooks, roster=roster, contracts_dir=Path(settings.contracts_dir),
                           data_dir=Path(settings.data_dir), slo_file=settings.slo_file, health_fn=health_fn,
                           log_key=key, **kw)
