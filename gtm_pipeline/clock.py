"""The one clock of the product (docs/design.md §6): every command, asset, sensor and exporter asks it for the time.

``GTM_PIPELINE_NOW`` (ISO-8601; a value without a zone is UTC) freezes it, so a test or an operator's drill can
replay days in seconds instead of sleeping. Unset, it is the system clock. The variable is read on every call, so a
drill can move time forward between steps of one process.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from gtm_pipeline.errors import GtmPipelineError

ENV = "GTM_PIPELINE_NOW"


def parse_instant(text: str, what: str = ENV) -> datetime:
    """ISO-8601 text -> naive UTC datetime (an offset is converted; no offset means UTC)."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as e:
        raise GtmPipelineError(f"{what}={text!r} is not an ISO-8601 time; use e.g. 2026-11-03T09:30:00Z") from e
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def utcnow() -> datetime:
    """Now as naive UTC (DuckDB TIMESTAMP columns hold UTC without a zone)."""
    frozen = os.environ.get(ENV)
    if frozen:
        return parse_instant(frozen)
    return datetime.now(UTC).replace(tzinfo=None)


def to_epoch(dt: datetime) -> float:
    """Naive UTC (or aware) datetime -> epoch seconds."""
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def from_epoch(t: float) -> datetime:
    """Epoch seconds -> naive UTC datetime."""
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None)


def iso_z(t: float | None) -> str | None:
    """Epoch seconds -> ISO-8601 UTC with a Z (what JSON readers get), None stays None."""
    return None if t is None else from_epoch(t).isoformat() + "Z"


def now_epoch() -> float:
    return to_epoch(utcnow())
