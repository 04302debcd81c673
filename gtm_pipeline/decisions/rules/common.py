"""What the four playbooks' rules share: the inclusive comparisons, the Outcome, and how an item is held."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EPS = 1e-9
INSUFFICIENT_DATA = "insufficient data"
UNALLOCATED = "unallocated"   # budget_split key: money freed by pauses that no shifted channel needs


def ge(a: float, b: float) -> bool:
    return a >= b - EPS


def le(a: float, b: float) -> bool:
    return a <= b + EPS


@dataclass
class Outcome:
    """The result of one rule evaluation for one subject (a segment, the budget split, the audience filter...)."""

    subject: str
    action: dict[str, Any] | None          # the structured action (None: no action)
    summary: str                           # the chosen action in words, or why none
    reasons: list[str] = field(default_factory=list)     # each threshold test, passed or not, with its numbers
    figures: dict[str, Any] = field(default_factory=dict)  # the numbers behind the decision (memo, metadata)
    options: list[str] = field(default_factory=list)     # options considered (memo)
    # Items the rules could not judge: {item: {"reason": "insufficient data", "detail": "3 SQOs < min_sqos 10"}}.
    # Also copied to figures["held"] so that the memo and the asset metadata list them.
    held: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def proposes(self) -> bool:
        return self.action is not None


def num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if x != x else x


def hold(held: dict[str, dict[str, str]], reasons: list[str], item: str, detail: str) -> None:
    held[item] = {"reason": INSUFFICIENT_DATA, "detail": detail}
    reasons.append(f"{item}: held -- {INSUFFICIENT_DATA}: {detail}")


def held_note(held: dict) -> str:
    return f"; held ({INSUFFICIENT_DATA}): {', '.join(held)}" if held else ""


def finish(o: Outcome) -> Outcome:
    if o.held:
        o.figures["held"] = dict(o.held)
    return o
