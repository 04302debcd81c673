"""The decision nodes' shared pre-checks (spec 002 §4: "SLO health green; no active SEV2+ incidents").

- `health_of(evaluation, history)` / `SloResource.health(...)`: green only if every covered asset (or every asset a
  node names) is published and fresh now, and no SLO is at page level (fast burn, SEV2). A slow burn (ticket, SEV3)
  is reported as a note without blocking, matching "no active SEV2+".
- `open_incidents(con)`: the open SEV1/SEV2 incidents of ``ops.incidents`` (any origin, not only SLOs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from gtm_pipeline import warehouse
from gtm_pipeline.slo.durations import human_duration
from gtm_pipeline.slo.evaluate import Evaluation
from gtm_pipeline.slo.history import History

_SEV_RANK = {"SEV1": 1, "SEV2": 2, "SEV3": 3, "SEV4": 4}


@dataclass(frozen=True)
class SloHealth:
    green: bool
    reasons: tuple[str, ...]      # why it is not green (empty when green)
    notes: tuple[str, ...]        # what is worth knowing but does not block (slow burn, warn window)
    checked_at: datetime          # naive UTC

    def __bool__(self) -> bool:
        return self.green

    def summary(self) -> str:
        if self.green:
            return "SLO health green" + (f" ({'; '.join(self.notes)})" if self.notes else "")
        return "SLO health red: " + "; ".join(self.reasons)


def health_of(evaluation: Evaluation, history: History | None = None,
              assets: Iterable[str] | None = None) -> SloHealth:
    """Judge ``evaluation``; with ``assets``, only the SLOs and assets a decision node reads."""
    wanted = set(assets) if assets is not None else None
    reasons: list[str] = []
    notes: list[str] = []
    for figs in evaluation.slos:
        name = figs.slo.name
        rows = [a for a in figs.assets if wanted is None or a.asset in wanted]
        pending = [k for k in figs.pending if wanted is None or k in wanted]
        if wanted is not None and not rows and not pending:
            continue
        for a in rows:
            if a.state == "stale":
                held = f", held back by {', '.join(a.blocking[:2])}" if a.blocking else ""
                reasons.append(f"{name}: {a.asset} is stale: its data is {human_duration(a.age)} old "
                               f"(threshold {human_duration(figs.slo.threshold)}){held}")
            elif a.state == "unknown":
                reasons.append(f"{name}: {a.asset} was never published (freshness unknown)")
            elif a.state == "warn":
                notes.append(f"{name}: {a.asset}'s data is {human_duration(a.age)} old")
        reasons += [f"{name}: {k} does not exist yet (freshness unknown)" for k in pending]
        levels = {a.level for a in rows}
        stored = history.alert_state(name) if history is not None else None
        if "page" in levels or (stored is not None and stored.level == "page" and wanted is None):
            reasons.append(f"{name}: error budget burning fast (page, SEV2"
                           + (f", incident {stored.incident_id})" if stored and stored.incident_id else ")"))
        elif "ticket" in levels:
            notes.append(f"{name}: error budget burning slowly (ticket, SEV3)")
    checked = datetime.fromtimestamp(evaluation.now, UTC).replace(tzinfo=None)
    return SloHealth(green=not reasons, reasons=tuple(reasons), notes=tuple(notes), checked_at=checked)


def open_incidents(con: duckdb.DuckDBPyConnection, min_severity: str = "SEV2") -> list[dict]:
    """Open (or acknowledged: someone is on it, still open) incidents at ``min_severity`` or worse (SEV1 is
    worst), newest first."""
    if min_severity not in _SEV_RANK:
        raise ValueError(f"min_severity {min_severity!r}: expected one of {', '.join(_SEV_RANK)}")
    if not warehouse.table_exists(con, "ops", "incidents"):
        return []
    allowed = [s for s, r in _SEV_RANK.items() if r <= _SEV_RANK[min_severity]]
    rows = con.execute(
        "SELECT incident_id, severity, origin, asset_key, rule, title, opened_at FROM ops.incidents "
        f"WHERE status IN ('open', 'acknowledged') AND severity IN ({', '.join('?' for _ in allowed)}) "
        "ORDER BY opened_at DESC",
        allowed).fetchall()
    cols = ("incident_id", "severity", "origin", "asset_key", "rule", "title", "opened_at")
    return [dict(zip(cols, r)) for r in rows]
