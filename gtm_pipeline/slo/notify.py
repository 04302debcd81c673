"""Deliver stored SLO state changes: the incident row in ``ops.incidents`` (DuckDB), the generic JSON webhook and the
Slack-compatible webhook.

Each target is delivered in order and marked done in the history once it succeeded, so a change is never lost and
never sent twice by this process. If the warehouse is write-locked by a run, the incident waits for the next tick
while webhooks go out at once (paging must not wait for a batch job). Receivers that want exactly-once under a
crash between "sent" and "marked" can de-duplicate on ``event_id`` (also sent as the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from gtm_pipeline import warehouse
from gtm_pipeline.clock import from_epoch
from gtm_pipeline.slo.history import History, OutboxItem


@dataclass
class Delivery:
    delivered: dict[str, int] = field(default_factory=lambda: {"incident": 0, "webhook": 0, "slack": 0})
    waiting: dict[str, str] = field(default_factory=dict)   # target -> why it waits

    @property
    def pending(self) -> bool:
        return bool(self.waiting)


def apply_incident(con: duckdb.DuckDBPyConnection, change: dict) -> None:
    """Write one state change to ops.incidents (idempotent: open dedups on the key, resolve is a no-op twice)."""
    warehouse.ensure_base(con)
    at = from_epoch(change["at"])
    if change.get("resolves_dedup_key"):
        warehouse.resolve_incidents(con, change["resolves_dedup_key"], resolved_at=at,
                                    evidence=resolution_evidence(change))
    if change.get("dedup_key"):
        burning = [a["asset"] for a in change["assets"] if a["level"] != "ok" or a["state"] == "stale"]
        incident_id, new = warehouse.open_incident(
            con, severity=change["severity"], origin="slo", asset_key=", ".join(burning),
            rule=f"freshness_slo:{change['slo']}", title=change["title"],
            details={k: change[k] for k in ("statement", "from", "to", "attainment", "budget_remaining", "assets",
                                            "event_id")},
            owner=change["owner"], dedup_key=change["dedup_key"], incident_id=change["incident_id"], opened_at=at)
        if new:
            warehouse.notify_owner(con, owner=change["owner"], subject=change["title"],
                                   body=json.dumps(change, default=str), asset_key=", ".join(burning),
                                   incident_id=incident_id, channel="slo")


def resolution_evidence(change: dict) -> str:
    """Why the incident of the previous level closed, in the figures the SLO engine saw at that evaluation."""
    worst = change["assets"][0] if change["assets"] else None
    what = ("recovered" if change["to"] == "ok"
            else f"stepped down to {change['to']} ({change['severity']}; incident {change['incident_id']})")
    line = f"{change['slo']} {what} at {change['at_iso']}Z"
    if worst is not None:
        age = "never published" if worst["age_seconds"] is None else f"data {worst['age_seconds'] / 3600:.1f}h old"
        burns = ", ".join(f"{w} {r:g}x" for w, r in worst["burn_rates"].items())
        through = f", data time {worst['data_time']}Z" if worst["data_time"] else ""
        line += f": worst asset {worst['asset']} {worst['state']} ({age}{through}); burn {burns}"
    budget = change.get("budget_remaining")
    if budget is not None:
        line += f"; error budget left {budget:.1%}"
    return line


def slack_body(change: dict) -> dict:
    """A body Slack's incoming webhooks accept (``text`` plus blocks)."""
    icon = {"page": ":rotating_light:", "ticket": ":warning:", "ok": ":white_check_mark:"}[change["to"]]
    lines = []
    for a in change["assets"][:10]:
        age = "never published" if a["age_seconds"] is None else f"age {a['age_seconds'] / 3600:.1f}h"
        burns = ", ".join(f"{w} {r:g}x" for w, r in a["burn_rates"].items())
        lines.append(f"• `{a['asset']}` {a['state']} ({age}); burn {burns}")
    budget = change["budget_remaining"]
    context = (f"owner {change['owner']} · incident {change['incident_id'] or change['resolves_incident_id']} · "
               f"budget left {'-' if budget is None else f'{budget:.1%}'} · {change['at_iso']}Z")
    return {
        "text": f"{icon} {change['title']}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} *{change['title']}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines) or "no assets"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def post_json(url: str, body: dict, *, event_id: str, timeout: float) -> None:
    """POST ``body``; raise on a non-2xx answer or a network error."""
    req = urllib.request.Request(url, data=json.dumps(body, default=str).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Idempotency-Key": event_id,
                                          "User-Agent": "gtm-pipeline-slo"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the URL comes from settings
        if not 200 <= resp.status < 300:
            raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, None)


def deliver(history: History, *, connect: Callable[[], duckdb.DuckDBPyConnection] | None,
            webhook_url: str | None, slack_webhook_url: str | None, timeout: float = 5.0,
            post: Callable[..., None] = post_json) -> Delivery:
    """Deliver every pending outbox entry, target by target, in order; stop a target at its first failure."""
    out = Delivery()
    items: list[OutboxItem] = history.outbox(pending_only=True)
    if not items:
        return out
    con = None
    if connect is None:
        out.waiting["incident"] = "no warehouse configured"
    elif any(not i.done["incident"] for i in items):
        try:
            con = connect()
        except duckdb.Error as e:  # the write lock of a running job: retry next tick
            out.waiting["incident"] = f"warehouse busy ({str(e).splitlines()[0][:160]})"
    try:
        for item in items:
            if not item.done["incident"] and con is not None and "incident" not in out.waiting:
                try:
                    apply_incident(con, item.payload)
                    history.mark_done(item.seq, "incident")
                    out.delivered["incident"] += 1
                except duckdb.Error as e:
                    out.waiting["incident"] = f"incident write failed: {e}"
                    history.mark_failed(item.seq, f"incident: {e}")
            for target, url, body in (("webhook", webhook_url, item.payload),
                                      ("slack", slack_webhook_url, slack_body(item.payload))):
                if item.done[target] or target in out.waiting:
                    continue
                if not url:
                    history.mark_done(item.seq, target)  # nothing configured: nothing to send, now or later
                    continue
                try:
                    post(url, body, event_id=item.event_id, timeout=timeout)
                    history.mark_done(item.seq, target)
                    out.delivered[target] += 1
                except (urllib.error.URLError, OSError, ValueError) as e:
                    out.waiting[target] = f"{target} post failed: {e}"
                    history.mark_failed(item.seq, f"{target}: {e}")
    finally:
        if con is not None:
            con.close()
    return out
