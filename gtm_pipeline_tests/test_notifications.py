"""Owner notifications leave the building: delivered to a real local webhook, every attempt recorded, retried with
backoff while the receiver fails, never lost and never sent twice, and never blocking the pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest
from click.testing import CliRunner
from slo_fakes import Receiver

from gtm_pipeline.cli import main
from gtm_pipeline.ops.notifications import backoff, deliver_pending
from gtm_pipeline.slo.notify import post_json
from gtm_pipeline.warehouse import ensure_base, notify_owner

T0 = datetime(2026, 11, 3, 9, 0)


@pytest.fixture
def con(monkeypatch):
    monkeypatch.setenv("GTM_PIPELINE_NOW", T0.isoformat())  # notifications are queued at T0
    c = duckdb.connect()
    ensure_base(c)
    yield c
    c.close()


def _queue(con, n=1, channel="owner"):
    return [notify_owner(con, owner="RevOps", subject=f"opportunity 2026-08-16 blocked #{i}", body="3 rows out of "
                         "range", asset_key="clean/opportunity", incident_id="INC-1", channel=channel)
            for i in range(n)]


def _state(con):
    return con.execute("SELECT notification_id, status, attempts, sent_to, last_error IS NOT NULL "
                       "FROM ops.notifications ORDER BY sent_at, rowid").fetchall()


def test_a_notification_reaches_both_webhooks_once(con):
    [nid] = _queue(con)
    with Receiver() as rx:
        out = deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=rx.url + "/slack", post=post_json)
        assert (out.sent, out.failed) == (1, 0)
        hook = rx.wait_for(lambda p: p["path"] == "/hook", timeout=10)
        slack = rx.wait_for(lambda p: p["path"] == "/slack", timeout=10)
        assert hook["json"]["notification_id"] == nid and hook["json"]["recipient"] == "RevOps"
        assert hook["headers"]["Idempotency-Key"] == nid
        assert "opportunity 2026-08-16 blocked" in slack["json"]["text"] and slack["json"]["blocks"]
        again = deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=rx.url + "/slack",
                                post=post_json)
        assert again.sent == 0 and len(rx.posts) == 2           # nothing is sent twice
    assert _state(con) == [(nid, "sent", 1, ["webhook", "slack"], False)]


def test_a_failing_receiver_loses_nothing_and_is_retried_with_backoff(con, monkeypatch):
    ids = _queue(con, 3)
    with Receiver() as rx:
        rx.fail_next = 100
        now = T0
        out = deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=None, post=post_json, now=now)
        assert (out.sent, out.failed) == (0, 3) and "500" in out.errors["webhook"]
        assert [(s, a) for _, s, a, _, _ in _state(con)] == [("failed", 1)] * 3
        # Not due again before the backoff has passed: no attempt, no count.
        out = deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=None, post=post_json,
                              now=now + timedelta(seconds=10))
        assert (out.sent, out.failed, out.waiting) == (0, 0, 3)
        now += backoff(1)
        deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=None, post=post_json, now=now)
        assert [a for _, _, a, _, _ in _state(con)] == [2, 2, 2]
        assert backoff(2) == 2 * backoff(1) and backoff(50) == timedelta(hours=1)
        # The receiver recovers: everything arrives, in order, exactly once.
        rx.fail_next = 0
        now += backoff(2)
        out = deliver_pending(con, webhook_url=rx.url + "/hook", slack_webhook_url=None, post=post_json, now=now)
        assert out.sent == 3
        assert [p["json"]["notification_id"] for p in rx.posts] == ids
    assert {s for _, s, _, _, err in _state(con)} == {"sent"}


def test_an_unreachable_receiver_is_an_error_on_the_row_not_an_exception(con):
    _queue(con)
    out = deliver_pending(con, webhook_url="http://127.0.0.1:9/nothing-listens", slack_webhook_url=None,
                          post=post_json, timeout=1, now=T0)
    assert out.failed == 1
    [(status, err)] = con.execute("SELECT status, last_error FROM ops.notifications").fetchall()
    assert status == "failed" and err.startswith("webhook: ")


def test_without_a_target_notifications_wait_and_say_why(con):
    _queue(con, 2)
    out = deliver_pending(con, webhook_url=None, slack_webhook_url=None, post=post_json, now=T0)
    assert out.waiting == 2 and out.sent == 0
    errs = {r[0] for r in con.execute("SELECT last_error FROM ops.notifications").fetchall()}
    assert errs == {"no webhook configured (set GTM_PIPELINE_ALERT_WEBHOOK_URL or GTM_PIPELINE_SLACK_WEBHOOK_URL)"}


def test_slo_state_changes_are_not_posted_twice(con):
    _queue(con, 1, channel="slo")
    with Receiver() as rx:
        out = deliver_pending(con, webhook_url=rx.url, slack_webhook_url=None, post=post_json, now=T0)
        assert out.sent == 0 and rx.posts == []
    assert con.execute("SELECT status FROM ops.notifications").fetchall() == [("via_slo_outbox",)]


def test_rows_queued_before_delivery_existed_are_delivered(con):
    con.execute("INSERT INTO ops.notifications (sent_at, recipient, channel, subject, body, asset_key, incident_id) "
                "VALUES (TIMESTAMP '2026-11-01 00:00:00', 'FP&A', 'owner', 'old', 'b', 'metrics/ltv', NULL)")
    con.execute("UPDATE ops.notifications SET status = NULL, attempts = NULL")
    with Receiver() as rx:
        assert deliver_pending(con, webhook_url=rx.url, slack_webhook_url=None, post=post_json, now=T0).sent == 1
        assert rx.posts[0]["json"]["subject"] == "old" and rx.posts[0]["json"]["notification_id"].startswith("NTF-")


def test_cli_lists_and_delivers(env_settings, monkeypatch):
    monkeypatch.setenv("GTM_PIPELINE_NOW", T0.isoformat())
    env_settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(env_settings.duckdb_path)) as c:
        ensure_base(c)
        _queue(c, 2)
    runner = CliRunner()
    res = runner.invoke(main, ["notifications", "list"])
    assert res.exit_code == 0 and "2 pending" in res.output and "opportunity 2026-08-16 blocked" in res.output
    with Receiver() as rx:
        rx.fail_next = 1
        monkeypatch.setenv("GTM_PIPELINE_ALERT_WEBHOOK_URL", rx.url)
        res = runner.invoke(main, ["notifications", "deliver"])
        assert res.exit_code == 1 and "sent 1, failed 1" in res.output
    res = runner.invoke(main, ["notifications", "list", "--status", "failed"])
    assert "last error: webhook: HTTP Error 500" in res.output
