"""Commands for owner notifications (ops.notifications): what was sent to whom, and deliver what waits."""

from __future__ import annotations

import click

from gtm_pipeline.cli.quarantine import connect
from gtm_pipeline.config import load_settings
from gtm_pipeline.ops.notifications import deliver_pending, summary


@click.group()
def notifications():
    """Owner notifications (blocked publications, quarantined days, new incidents) and their delivery state.

    \b
    Example:
      gtm-pipeline notifications list
    """


@notifications.command(name="list")
@click.option("--status", type=click.Choice(["pending", "failed", "sent", "via_slo_outbox"]), default=None,
              help="Only notifications in this delivery state.")
@click.option("--limit", type=int, default=30, show_default=True, help="Show at most this many (newest first).")
def list_(status, limit):
    """Newest first: queued time, status, attempts, recipient, subject and the last delivery error.

    \b
    Example:
      gtm-pipeline notifications list --status failed
    """
    with connect() as con:  # read-write: a warehouse from before delivery existed gains its columns first
        counts = summary(con)
        rows = con.execute(
            "SELECT notification_id, sent_at, coalesce(status, 'pending'), coalesce(attempts, 0), recipient, "
            "subject, last_error FROM ops.notifications WHERE ? IS NULL OR coalesce(status, 'pending') = ? "
            "ORDER BY sent_at DESC LIMIT ?", [status, status, limit]).fetchall()
    click.echo(f"{'id':<17}{'queued':<17}{'status':<15}{'tries':>5}  {'recipient':<14}subject")
    for nid, at, st, tries, who, subject, err in rows:
        click.echo(f"{nid or '-':<17}{at:%Y-%m-%d %H:%M}  {st:<15}{tries:>5}  {who:<14}{subject[:90]}")
        if err and st != "sent":
            click.echo(f"{'':<17}last error: {err[:160]}")
    click.echo(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no notifications")


@notifications.command()
def deliver():
    """Deliver every due notification now (what the SLO sensor does on each tick), to the webhooks configured in
    GTM_PIPELINE_ALERT_WEBHOOK_URL and GTM_PIPELINE_SLACK_WEBHOOK_URL. Exits 1 if any attempt failed.

    \b
    Example:
      gtm-pipeline notifications deliver
    """
    # local: slo.notify loads Dagster (~1 s), and only this command needs it
    from gtm_pipeline.slo.notify import post_json

    s = load_settings()
    with connect() as con:
        out = deliver_pending(con, webhook_url=s.alert_webhook_url, slack_webhook_url=s.slack_webhook_url,
                              post=post_json)
    click.echo(f"sent {out.sent}, failed {out.failed} (retried with backoff), waiting {out.waiting}")
    for target, err in out.errors.items():
        click.echo(f"  {target}: {err}")
    if not (s.alert_webhook_url or s.slack_webhook_url):
        click.echo("no webhook configured: set GTM_PIPELINE_ALERT_WEBHOOK_URL or GTM_PIPELINE_SLACK_WEBHOOK_URL")
    if out.failed:
        raise SystemExit(1)


def register(main: click.Group) -> None:
    main.add_command(notifications)
