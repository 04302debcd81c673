"""Durations as the SLO file and Prometheus write them (``28d``, ``5m``) and as people read them (``1h02m``)."""

from __future__ import annotations

import re

from gtm_pipeline.errors import ContractError

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_seconds(value: object) -> int | None:
    m = _DURATION.match(str(value).strip()) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def not_a_duration(value: object) -> str:
    return (f"{value!r} is not a duration; write a positive whole number with one unit (s, m, h, d, w), "
            f"e.g. 30s, 5m, 4h, 28d")


def parse_duration(value: object, where: str) -> int:
    """'28d' -> seconds. Whole numbers with one unit (s, m, h, d, w), the subset Prometheus also accepts."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise ContractError(f"{where}: {not_a_duration(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest unit that divides exactly: 86400 -> '1d', 300 -> '5m' (valid in PromQL and in the YAML)."""
    s = int(round(seconds))
    for unit in ("w", "d", "h", "m"):
        if s and s % _UNIT_SECONDS[unit] == 0:
            return f"{s // _UNIT_SECONDS[unit]}{unit}"
    return f"{s}s"


def human_duration(seconds: float | None) -> str:
    """For people: 3725 -> '1h02m', 90061 -> '1d01h', 42 -> '42s'; None -> '-'."""
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"
