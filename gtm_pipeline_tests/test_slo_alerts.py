"""Alert levels, state changes and their delivery: one incident and one webhook per state change, no flapping, no
loss while the warehouse is write-locked, retries after a failed post."""

from __future__ import annotations

import subprocess
import sys

import duckdb
import pytest
from slo_fakes import METRICS, Receiver, write_slo_file

from gtm_pipeline.slo.alerts import advance, step
from gtm_pipeline.slo.contract import load_slo_file, resolve_coverage
from gtm_pipeline.slo.evaluate import evaluate
from gtm_pipeline.slo.health import health_of, open_incidents
from gtm_pipeline.slo.history import AlertState, History
from gtm_pipeline.slo.notify import deliver

H, D, M = 3600.0, 86400.0, 60.0
T0 = 1_900_000_000.0
INDEX = {f"metrics/{m}": "metrics" for m in METRICS}


@pytest.mark.parametrize("prev,level,now,expected_level,changed", [
    (None, "ok", 0, "ok", False),
    (None, "page", 0, "page", True),                                           # rises at once
    (AlertState("s", "ticket", 0, None, None, "I"), "page", 60, "page", True),  # escalation at once
    (AlertState("s", "page", 0, None, None, "I"), "ok", 60, "page", False),     # steps down only after the hold...
    (AlertState("s", "page", 0, "ok", 60, "I"), "ok", 60 + 599, "page", False),
    (AlertState("s", "page", 0, "ok", 60, "I"), "ok", 60 + 600, "ok", True),    # ...of resolve_after (600 s)
    (AlertState("s", "page", 0, "ok", 60, "I"), "page", 300, "page", False),    # back up: the hold restarts
    (AlertState("s", "page", 0, "ok", 60, "I"), "ticket", 660, "ticket", True),  # de-escalation to where it is
])
def test_step(prev, level, now, expected_level, changed):
    state, did = step(prev, "s", level, now, resolve_after=600)
    assert (state.level, did) == (expected_level, changed)
    if level == state.level:
        assert state.lower_since is None


def test_hovering_at_the_threshold_does_not_flap():
    state, changes = None, []
    for i, level in enumerate(["page", "ok", "page", "ok", "ok", "page", "ok"] * 3):
        state, did = step(state, "s", level, i * M, resolve_after=600)
        changes += [state.level] if did else []
    assert changes == ["page"]


class Sim:
    """A forecast and its SLOs on simulated time, evaluated every ``tick`` like the sensor would."""

    def __init__(self, tmp_path, **slo_kwargs):
        self.slo_file = load_slo_file(write_slo_file(tmp_path / "slos.yaml", **slo_kwargs))
        self.coverage = resolve_coverage(self.slo_file, INDEX)
        self.history = History(tmp_path / "h.sqlite")
        self.changes: list[dict] = []
        # Every asset published in time; the other metrics stay fresh throughout.
        self.history.add_events("metrics/forecast", [], [], 0)

    def publish(self, asset: str, at: float) -> None:
        self.history.add_events(asset, [(at, at, f"run-{at}", 0)], [], 0)

    def run(self, start: float, end: float, tick: float = 5 * M, refresh_others=True):
        t = start
        while t <= end:
            if refresh_others:
                for m in METRICS:
                    if m != "forecast":
                        self.publish(f"metrics/{m}", t)
            ev = evaluate(self.slo_file, self.coverage, self.history, None, now=t)
            self.changes += advance(self.history, ev)
            t += tick
        return ev


def test_forecast_stale_beyond_4h_pages_once_and_resolves_once(tmp_path):
    sim = Sim(tmp_path)
    for h in range(24):                       # hourly forecast until T0, then nothing for 5 hours
        sim.publish("metrics/forecast", T0 - 24 * H + h * H)
    sim.publish("metrics/forecast", T0)
    ev = sim.run(T0, T0 + 5 * H)              # age reaches 5h: stale for the last hour
    assert [(c["slo"], c["from"], c["to"], c["severity"]) for c in sim.changes] == \
           [("forecast_age", "ok", "page", "SEV2")]
    opened = sim.changes[0]
    # Page after ~17 min of staleness (28.8% of 1h), at the first 5-minute tick past it.
    assert opened["at"] - (T0 + 4 * H) == pytest.approx(20 * M)
    assert opened["assets"][0]["asset"] == "metrics/forecast" and opened["assets"][0]["state"] == "stale"
    fc = ev.get("forecast_age")
    assert fc.budget_remaining == pytest.approx(1 - 1 * H / (0.02 * 28 * D))
    assert not health_of(ev, sim.history).green
    # A fresh forecast: the fast burn ends after the 5m short window, the incident resolves after resolve_after.
    sim.publish("metrics/forecast", T0 + 5 * H + 1)
    ev = sim.run(T0 + 5 * H + 5 * M, T0 + 7 * H)
    assert [(c["from"], c["to"], c["kind"]) for c in sim.changes] == [("ok", "page", "opened"),
                                                                      ("page", "ok", "resolved")]
    resolved = sim.changes[1]
    assert resolved["resolves_incident_id"] == opened["incident_id"]
    # The 6h/30m page pair holds until the 30m window is < 12% stale (26.4 min), then the 10-minute hold: 40 min.
    assert resolved["at"] - (T0 + 5 * H) == pytest.approx(40 * M)
    assert health_of(ev, sim.history).green
    assert len(sim.history.outbox()) == 2                         # both waiting for delivery, each once


def test_a_long_outage_escalates_then_steps_down_without_flapping(tmp_path):
    sim = Sim(tmp_path)
    sim.publish("metrics/forecast", T0)
    sim.run(T0, T0 + 7 * H)                                     # stale for 3 hours
    for h in range(7, 17):                                     # hourly again from 7h on
        sim.publish("metrics/forecast", T0 + h * H + 1)
    sim.run(T0 + 7 * H + 5 * M, T0 + 16 * H)
    # Page; after recovery the slow burn (6h/3d pair) still holds until the 6h window is clean, then all clears.
    assert [(c["from"], c["to"]) for c in sim.changes] == [("ok", "page"), ("page", "ticket"), ("ticket", "ok")]


def test_delivery_posts_each_change_once_and_retries_failures(tmp_path):
    sim = Sim(tmp_path)
    sim.publish("metrics/forecast", T0)
    sim.run(T0, T0 + 5 * H)
    wh = tmp_path / "wh.duckdb"
    with Receiver() as rx:
        rx.fail_next = 1                                         # the generic webhook fails once
        d1 = deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=rx.url + "/generic",
                     slack_webhook_url=rx.url + "/slack")
        assert "webhook" in d1.waiting and d1.delivered["incident"] == 1
        d2 = deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=rx.url + "/generic",
                     slack_webhook_url=rx.url + "/slack")
        d3 = deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=rx.url + "/generic",
                     slack_webhook_url=rx.url + "/slack")
        posts = list(rx.posts)
    assert d2.delivered == {"incident": 0, "webhook": 1, "slack": 0} and not d2.waiting
    assert d3.delivered == {"incident": 0, "webhook": 0, "slack": 0}
    assert sorted(p["path"] for p in posts) == ["/generic", "/slack"]
    generic = next(p for p in posts if p["path"] == "/generic")
    assert generic["json"]["to"] == "page" and generic["json"]["severity"] == "SEV2"
    assert generic["headers"]["Idempotency-Key"] == generic["json"]["event_id"]
    slack = next(p for p in posts if p["path"] == "/slack")["json"]
    assert slack["text"].startswith(":rotating_light: [SEV2] forecast_age: fast burn (opened)")
    assert "`metrics/forecast` stale" in slack["blocks"][1]["text"]["text"]
    with duckdb.connect(str(wh)) as con:
        rows = con.execute("SELECT severity, status, dedup_key, origin FROM ops.incidents").fetchall()
        assert rows == [("SEV2", "open", "slo:forecast_age:page", "slo")]
        assert [i["severity"] for i in open_incidents(con, "SEV2")] == ["SEV2"]
        assert con.execute("SELECT count(*) FROM ops.notifications WHERE channel = 'slo'").fetchone()[0] == 1


def test_a_write_locked_warehouse_delays_the_incident_not_the_page(tmp_path):
    sim = Sim(tmp_path)
    sim.publish("metrics/forecast", T0)
    sim.run(T0, T0 + 5 * H)
    wh = tmp_path / "wh.duckdb"
    holder = subprocess.Popen(  # another process holds DuckDB's write lock, as a running job does
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "c.execute('CREATE TABLE IF NOT EXISTS t (x INT)'); print('locked', flush=True); sys.stdin.read()", str(wh)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Receiver() as rx:
            d = deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=rx.url,
                        slack_webhook_url=None)
            assert "incident" in d.waiting and "busy" in d.waiting["incident"]
            assert d.delivered["webhook"] == 1 and len(rx.posts) == 1
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    d = deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url="http://127.0.0.1:9/unused",
                slack_webhook_url=None)
    assert d.delivered == {"incident": 1, "webhook": 0, "slack": 0} and not d.waiting
    assert deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=None,
                   slack_webhook_url=None).delivered["incident"] == 0
    with duckdb.connect(str(wh)) as con:
        assert con.execute("SELECT count(*) FROM ops.incidents").fetchone()[0] == 1


def test_resolution_closes_the_incident(tmp_path):
    sim = Sim(tmp_path, resolve_after="0s")
    sim.publish("metrics/forecast", T0)
    sim.run(T0, T0 + 5 * H)
    sim.publish("metrics/forecast", T0 + 5 * H + 1)
    sim.run(T0 + 5 * H + 20 * M, T0 + 5 * H + 20 * M)         # 30m window still 12%+ stale: still paging
    assert [c["to"] for c in sim.changes] == ["page"]
    sim.run(T0 + 5 * H + 30 * M, T0 + 5 * H + 30 * M)
    assert [c["to"] for c in sim.changes] == ["page", "ok"]
    wh = tmp_path / "wh.duckdb"
    deliver(sim.history, connect=lambda: duckdb.connect(str(wh)), webhook_url=None, slack_webhook_url=None)
    with duckdb.connect(str(wh)) as con:
        rows = con.execute("SELECT incident_id, status, resolved_at IS NOT NULL FROM ops.incidents").fetchall()
        assert rows == [(sim.changes[0]["incident_id"], "resolved", True)]
        assert open_incidents(con, "SEV2") == []
        # The resolution names what the SLO engine saw: the recovery, the worst asset's data age and the burns.
        resolution = con.execute("SELECT resolved_by, resolution FROM ops.incidents").fetchone()
        assert resolution[1].startswith("forecast_age recovered at "), resolution
        assert "worst asset metrics/forecast fresh (data 0.5h old" in resolution[1], resolution
        assert "burn 5m 0x" in resolution[1] and "error budget left" in resolution[1], resolution
