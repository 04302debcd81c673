"""Delivery of owner notifications (``ops.notifications``): a blocked publication, a quarantined day, a newly opened
incident reach a person, not only a table.

Every stage queues notifications inside its own transaction (`warehouse.notify_owner`), so a notification exists
exactly when its cause does. This module delivers them, out of band of the pipeline: the SLO sensor calls
`deliver_pending` on every tick, and `gtm-pipeline notifications deliver` does the same from a shell.

- Targets: the generic JSON webhook (``GTM_PIPELINE_ALERT_WEBHOOK_URL``) and the Slack-compatible webhook
  (``GTM_PIPELINE_SLACK_WEBHOOK_URL``); each notification goes to each configured target once (``sent_to``) and is
  ``sent`` when all have accepted it. With no target configured it stays ``pending`` and says so.
- A failed attempt marks it ``failed`` with the attempt count, the last error and the time of the next try
  (exponential backoff from 30 s, capped at 1 h). Nothing is ever dropped: a failed notification is retried until
  it is delivered, and a receiver that is down loses nothing.
- SLO state changes (channel ``slo``) are not posted again here: the SLO outbox (`gtm_pipeline.slo.notify`)
  delivers them with their own retries; their rows are marked ``via_slo_outbox``.
- Receivers can de-duplicate on ``notification_id`` (also the ``Idempotency-Key`` header) in case a crash lands
  between a receiver's 2xx and the status update.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from gtm_pipeline.clock import utcnow
from gtm_pipeline.warehouse import ensure_base, scalar

BACKOFF_BASE = 30.0      # seconds before the first retry
BACKOFF_CAP = 3600.0     # never wait longer than this between tries
BATCH = 200              # at most this many notifications per call (the rest wait for the next tick)
TARGETS = ("webhook", "slack")


@dataclass
class NotificationDelivery:
    sent: int = 0
    failed: int = 0
    waiting: int = 0                                    # due later (backoff) or no target configured
    errors: dict[str, str] = field(default_factory=dict)  # target -> last error this call


def backoff(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones: 30 s, 1 min, 2 min, ... capped at 1 h."""
    return timedelta(seconds=min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1)))


def json_body(row: dict) -> dict:
    return {"type": "owner_notification", "source": "gtm-pipeline", "notification_id": row["notification_id"],
            "recipient": row["recipient"], "channel": row["channel"], "subject": row["subject"],
            "body": row["body"], "asset_key": row["asset_key"], "incident_id": row["incident_id"],
            "queued_at": row["sent_at"].isoformat() + "Z" if row["sent_at"] else None}


def slack_body(row: dict) -> dict:
    icon = ":rotating_light:" if row["channel"] in ("page", "slo") else ":envelope:"
    text = f"{icon} *{row['subject']}*\nfor {row['recipient']}" + (
        f" · incident {row['incident_id']}" if row["incident_id"] else "")
    body = row["body"] or ""
    if len(body) > 2800:  # Slack's section text limit is 3000 characters
        body = body[:2800] + "\n…"
    return {"text": f"{icon} {row['subject']}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                       {"type": "section", "text": {"type": "mrkdwn", "text": f"```{body}```" if body else "-"}}]}


def _ensure_ids(con: duckdb.DuckDBPyConnection) -> None:
    # Rows queued before delivery existed have no id: give them one, so they are delivered like the rest.
    con.execute("UPDATE ops.notifications SET notification_id = 'NTF-' || substr(md5(concat_ws('|', sent_at, "
                "recipient, subject, asset_key, incident_id)), 1, 12), status = coalesce(status, 'pending'), "
                "attempts = coalesce(attempts, 0), sent_to = coalesce(sent_to, []) WHERE notification_id IS NULL")


def deliver_pending(con: duckdb.DuckDBPyConnection, *, webhook_url: str | None, slack_webhook_url: str | None,
                    post: Callable[..., None], timeout: float = 5.0,
                    now: datetime | None = None) -> NotificationDelivery:
    """Try every due notification once on each configured target it has not reached yet."""
    ensure_base(con)
    _ensure_ids(con)
    now = now or utcnow()
    con.execute("UPDATE ops.notifications SET status = 'via_slo_outbox' WHERE channel = 'slo' AND status <> "
                "'via_slo_outbox'")
    out = NotificationDelivery()
    urls = {"webhook": webhook_url, "slack": slack_webhook_url}
    configured = [t for t in TARGETS if urls[t]]
    cur = con.execute(  # queue order, also under a frozen clock
        "SELECT notification_id, sent_at, recipient, channel, subject, body, asset_key, incident_id, attempts, "
        "sent_to FROM ops.notifications WHERE status IN ('pending', 'failed') "
        "AND coalesce(next_attempt_at, sent_at) <= ? ORDER BY sent_at, rowid LIMIT ?", [now, BATCH])
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    if not configured:
        out.waiting = len(rows)
        if rows:
            con.execute("UPDATE ops.notifications SET last_error = 'no webhook configured (set "
                        "GTM_PIPELINE_ALERT_WEBHOOK_URL or GTM_PIPELINE_SLACK_WEBHOOK_URL)' WHERE status = 'pending'")
        return out
    for row in rows:
        done = list(row["sent_to"] or [])
        error = None
        for target in configured:
            if target in done:
                continue
            body = json_body(row) if target == "webhook" else slack_body(row)
            try:
                post(urls[target], body, event_id=row["notification_id"], timeout=timeout)
                done.append(target)
            except (urllib.error.URLError, OSError, ValueError) as e:
                error = f"{target}: {e}"
                out.errors[target] = str(e)
        attempts = int(row["attempts"] or 0) + 1
        if error is None:
            con.execute("UPDATE ops.notifications SET status = 'sent', attempts = ?, last_attempt_at = ?, "
                        "delivered_at = ?, sent_to = ?, last_error = NULL, next_attempt_at = NULL "
                        "WHERE notification_id = ?", [attempts, now, now, done, row["notification_id"]])
            out.sent += 1
        else:
            con.execute("UPDATE ops.notifications SET status = 'failed', attempts = ?, last_attempt_at = ?, "
                        "sent_to = ?, last_error = ?, next_attempt_at = ? WHERE notification_id = ?",
                        [attempts, now, done, error[:500], now + backoff(attempts), row["notification_id"]])
            out.failed += 1
    out.waiting += int(scalar(con, "SELECT count(*) FROM ops.notifications WHERE status IN ('pending', 'failed') "
                                   "AND next_attempt_at > ?", [now]))
    return out


def summary(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    ensure_base(con)
    return dict(con.execute("SELECT coalesce(status, 'pending'), count(*) FROM ops.notifications GROUP BY 1"
                            ).fetchall())
