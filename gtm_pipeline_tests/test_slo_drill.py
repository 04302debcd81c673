"""The freshness drill: a month of deliveries replayed on the frozen clock (``GTM_PIPELINE_NOW``) in minutes.

Everything is the product's own path: generated exports are copied into the landing folder at their delivery time,
the daily job ingests and cleans the day, the metric layer refreshes through write-audit-publish, the hourly
forecast schedule is asked every simulated hour, and the real SLO sensor ticks (it writes incidents and posts to a
local webhook receiver). Only the clock is simulated.

Scenario (docs/design.md §6, issue "freshness that tells the truth" §2):
1. 28 days of steady deliveries: each day's exports land at 00:05 the next day (an ``end_of_day`` cut-off, so the
   data is complete through midnight) and the metric layer has republished by 00:12. MetricAge and AttributionAge
   keep P(age < 24h) >= 0.98 with budget left: the data is 12 minutes past its 24 hours once a day, 0.8% of the time.
   ForecastAge < 4h cannot hold on daily deliveries (the newest facts are up to a day old however often the forecast
   recomputes), and the drill checks that the product says so instead of painting it green: the hourly schedule
   never republishes yesterday's facts as new and the forecast SLO reports its true attainment.
2. Deliveries stop for 2 days while refreshes keep running: MetricAge passes 48 h, the fast burn pages (SEV2
   incident, webhook), the slow-burn pairs are over their limit too.
3. Deliveries resume (the backlog lands at once): the page steps down to the ticket once the short windows clear,
   and to ok after the slow pair's short window; each step waits ``resolve_after``; the incident resolves itself
   with evidence.
The figures (attainment, age at the end of the outage, minutes from outage to page, minutes from resume to
resolve) are printed and recorded as test properties.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta

import dagster as dg
import duckdb
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from slo_fakes import Receiver

from gtm_pipeline import keys
from gtm_pipeline.cli import main

pytestmark = pytest.mark.slow

START = date(2026, 8, 1)
STEADY_DAYS = 28
OUTAGE_DAYS = 2
DELIVERED_AT = timedelta(minutes=5)      # after the end of the delivery day
REFRESHED_AT = timedelta(minutes=12)
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# A representative slice of each SLO's assets (the whole metric layer would only repeat them, at 3x the run time).
# The cost ratios are left out: a channel with spend and no win or SQO is an infinite cost, which rightly blocks
# their publication (contracts/metrics) and would make the drill about that block instead of about freshness.
COVER = {"metric_age": ["metrics/fact_pipeline", "metrics/fact_bookings", "metrics/fact_costs"],
         "forecast_age": ["metrics/forecast"],
         "attribution_age": ["metrics/attribution", "metrics/attribution_validity"]}


def _drill_slo_file(path):
    """contracts/slos.yaml as shipped (objectives, thresholds, window, burn-rate pairs, resolve_after), covering the
    drill's slice, evaluated hourly between the drill's ticks (the SLI is exact at any tick rate: it is read off
    the publication timeline, not sampled)."""
    body = yaml.safe_load((REPO / "contracts" / "slos.yaml").read_text())
    body["defaults"]["evaluation_interval"] = "1h"   # observed stretches join across gaps up to 3x this
    for slo in body["slos"]:
        slo["assets"] = [{"key": k} for k in COVER[slo["name"]]]
        slo.pop("exclude", None)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


class Drill:
    def __init__(self, tmp_path, monkeypatch, receiver: Receiver):
        from gtm_pipeline.config import load_settings
        from gtm_pipeline.definitions import build_definitions
        from gtm_pipeline.generate import DefectRates, GenerateConfig, generate

        self.mp = monkeypatch
        self.supply = tmp_path / "supply"
        days = STEADY_DAYS + OUTAGE_DAYS + 1
        generate(self.supply, GenerateConfig(days=days, seed=5, start=START, scale=0.1, defects=DefectRates.none()),
                 progress=False)
        self.days = [(START + timedelta(days=i)).isoformat() for i in range(days)]
        monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(_drill_slo_file(tmp_path / "slos.yaml")))
        monkeypatch.setenv("GTM_PIPELINE_ALERT_WEBHOOK_URL", receiver.url + "/slo")
        self.settings = load_settings()
        self.defs = build_definitions(self.settings)
        self.instance = dg.DagsterInstance.get()
        self.sensor = self.defs.resolve_sensor_def(keys.SLO_SENSOR)
        self.schedule = self.defs.resolve_schedule_def(keys.FORECAST_SCHEDULE)
        graph = self.defs.resolve_asset_graph()
        covered = [dg.AssetKey.from_user_string(k) for ks in COVER.values() for k in ks]
        self.refresh_selection = sorted(
            (k for k in dg.AssetSelection.assets(*covered).upstream().resolve(graph)
             if graph.get(k).partitions_def is None), key=lambda k: k.to_user_string())
        self.now: datetime = datetime.combine(START, datetime.min.time())
        self.levels: list[tuple[datetime, str, str]] = []    # (at, slo, new level)
        self.forecast_runs = 0
        self.forecast_skips: list[str] = []

    def at(self, when: datetime) -> None:
        assert when >= self.now, "the drill's clock only moves forward"
        self.now = when
        self.mp.setenv("GTM_PIPELINE_NOW", when.isoformat())

    def deliver(self, day: str) -> None:
        for source in self.supply.iterdir():
            if (source / day).is_dir():
                shutil.copytree(source / day, self.settings.landing_dir / source.name / day)

    def run(self, job: str, **kw) -> None:
        from gtm_pipeline.orchestration.runner import run_job

        out = run_job(job, instance=self.instance, defs=self.defs, run_config=QUIET, **kw)
        assert out.success, f"{job} failed at {self.now}: {out.failed_steps} {out.failed_checks}"

    def daily(self, day: str) -> None:
        self.run(keys.DAILY_JOB, partition_key=day)

    def refresh(self) -> None:
        self.run(keys.REFRESH_JOB, asset_selection=self.refresh_selection)

    def forecast_hour(self) -> None:
        """What the hourly schedule does at this hour (asked for real; its run executed in-process)."""
        ctx = dg.build_schedule_context(instance=self.instance, scheduled_execution_time=self.now)
        data = self.schedule.evaluate_tick(ctx)
        if data.run_requests:
            self.run(keys.FORECAST_JOB)
            self.forecast_runs += 1
        else:
            self.forecast_skips.append(str(data.skip_message))

    def tick(self) -> None:
        before = self.states()
        ctx = dg.build_sensor_context(instance=self.instance, definitions=self.defs,
                                      resources=dict(self.defs.resources))
        self.sensor.evaluate_tick(ctx)
        for slo, level in self.states().items():
            if before.get(slo, "ok") != level:
                self.levels.append((self.now, slo, level))

    def states(self) -> dict[str, str]:
        from gtm_pipeline.slo.history import History

        with History(self.settings.slo_history_path) as h:
            return {s: (st.level if (st := h.alert_state(s)) else "ok") for s in COVER}

    def report(self) -> dict:
        res = CliRunner().invoke(main, ["slo", "report", "--json"], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return {s["slo"]: s for s in json.loads(res.output)["slos"]}

    def first(self, slo: str, level: str, after: datetime) -> datetime | None:
        return next((t for t, s, lv in self.levels if s == slo and lv == level and t >= after), None)

    def incidents(self) -> list[tuple]:
        with duckdb.connect(str(self.settings.duckdb_path), read_only=True) as con:
            return con.execute("SELECT rule, severity, status, opened_at, resolved_at, resolution FROM ops.incidents "
                               "WHERE origin = 'slo' ORDER BY opened_at").fetchall()


def _walk(drill: Drill, start: datetime, end: datetime, step: timedelta, deliveries: bool, backlog=()) -> list[str]:
    """Walk the clock from ``start`` to ``end`` visiting only the instants where something happens: at midnight+5m
    the previous day's exports land (if ``deliveries``; otherwise they pile up in the returned backlog), at
    midnight+12m the metric layer refreshes (always: refreshes keep running in an outage), every hour the forecast
    schedule is asked, and every ``step`` the SLO sensor ticks."""
    events = set()
    t = start
    while t < end:
        midnight = datetime.combine(t.date(), datetime.min.time())
        for e in (midnight + DELIVERED_AT, midnight + REFRESHED_AT):
            if start <= e < end:
                events.add(e)
        t = midnight + timedelta(days=1)
    t = start
    while t < end:
        events.add(t)
        t += step
    h = start.replace(minute=0, second=0) + (timedelta(hours=1) if start.minute or start.second else timedelta(0))
    while h < end:
        events.add(h)
        h += timedelta(hours=1)
    pending = list(backlog)
    for t in sorted(events):
        midnight = datetime.combine(t.date(), datetime.min.time())
        drill.at(t)
        if t == midnight + DELIVERED_AT:
            day = (t.date() - timedelta(days=1)).isoformat()
            if day in drill.days:
                pending.append(day)
            if deliveries:
                for d in pending:
                    drill.deliver(d)
                    drill.daily(d)
                pending.clear()
        if t == midnight + REFRESHED_AT:
            drill.refresh()
        if t.minute == 0 and t.second == 0:
            drill.forecast_hour()
        if (t - start) % step == timedelta(0):
            drill.tick()
    return pending


def test_a_month_of_deliveries_an_outage_and_the_recovery(env_settings, tmp_path, monkeypatch, record_property):
    with Receiver() as rx:
        drill = Drill(tmp_path, monkeypatch, rx)
        day0 = datetime.combine(START, datetime.min.time()) + timedelta(days=1)    # day 1's exports land then
        steady_end = day0 + timedelta(days=STEADY_DAYS)
        outage_end = steady_end + timedelta(days=OUTAGE_DAYS)

        # 1. A month of steady deliveries.
        _walk(drill, day0, steady_end, timedelta(hours=3), deliveries=True)
        rep = drill.report()
        for slo in ("metric_age", "attribution_age"):
            s = rep[slo]
            assert s["attainment"] >= 0.98 and s["budget_remaining"] > 0, (slo, s["attainment"], s["budget_remaining"])
            assert s["alert_level"] == "ok" and s["state"] != "stale", s
            for a in s["assets"]:
                assert a["data_time"] == f"{(steady_end - timedelta(days=1)).date()}T00:00:00Z", a
        steady = {s: rep[s]["attainment"] for s in COVER}
        fields = {"data_time", "age_seconds", "status", "attainment", "budget_remaining", "burn_rates",
                  "blocking_inputs"}
        for s in rep.values():
            assert fields <= set(s) and all(fields <= set(a) for a in s["assets"]), s
        # ForecastAge < 4h cannot hold on daily deliveries, and the product says so: about 4 h of each day fresh.
        fc = rep["forecast_age"]
        assert fc["attainment"] < 0.25 and fc["alert_level"] == "page", fc
        assert drill.forecast_runs == 0, "the hourly forecast republished facts that were not newer"
        assert drill.forecast_skips and all("no newer data" in m for m in drill.forecast_skips[-24:])
        assert not [i for i in drill.incidents() if i[0] != "freshness_slo:forecast_age"], drill.incidents()

        # 2. Deliveries stop for two days; refreshes keep running.
        # Fine ticks while the alert is expected, hourly ones for the rest of the outage.
        pending = _walk(drill, steady_end, steady_end + timedelta(hours=3), timedelta(minutes=5), deliveries=False)
        pending = _walk(drill, steady_end + timedelta(hours=3), outage_end, timedelta(hours=1), deliveries=False,
                        backlog=pending)
        assert pending == drill.days[STEADY_DAYS:STEADY_DAYS + OUTAGE_DAYS]
        rep = drill.report()
        m = rep["metric_age"]
        assert m["age_seconds"] >= 48 * 3600 and m["state"] == "stale", m
        assert m["data_time"] == f"{(steady_end - timedelta(days=1)).date()}T00:00:00Z"
        assert m["alert_level"] == "page" and m["incident_id"], m
        assert m["burn_rates"]["1d"] > 3 and m["burn_rates"]["2h"] > 3          # the slow-burn pair is over too
        assert m["burn_rates"]["3d"] > 1 and m["burn_rates"]["6h"] > 1
        went_stale = steady_end                                  # midnight: 24 h since the data time in force
        paged = drill.first("metric_age", "page", steady_end)
        assert paged is not None
        opened = [i for i in drill.incidents() if i[0] == "freshness_slo:metric_age"]
        assert [(i[1], i[2]) for i in opened] == [("SEV2", "open")]
        hooks = [p["json"] for p in rx.posts if p["json"].get("slo") == "metric_age"]
        assert [(h["to"], h["severity"]) for h in hooks] == [("page", "SEV2")]
        age_at_outage_end = m["age_seconds"]
        budget_after_outage = m["budget_remaining"]

        # 3. Deliveries resume: the backlog lands at once; the alert steps down and resolves.
        resume = outage_end
        _walk(drill, resume, resume + timedelta(hours=8), timedelta(minutes=5), deliveries=True, backlog=pending)
        rep = drill.report()
        m = rep["metric_age"]
        assert m["state"] == "fresh" and m["alert_level"] == "ok", m
        assert m["data_time"] == f"{resume.date()}T00:00:00Z"
        ticket = drill.first("metric_age", "ticket", resume)
        ok = drill.first("metric_age", "ok", resume)
        assert ticket is not None and ok is not None and ticket < ok
        inc = [i for i in drill.incidents() if i[0] == "freshness_slo:metric_age"]
        assert [(i[1], i[2]) for i in inc] == [("SEV2", "resolved"), ("SEV3", "resolved")], inc
        assert all("recovered" in (i[5] or "") or "stepped down" in (i[5] or "") for i in inc), inc
        hooks = [p["json"] for p in rx.posts if p["json"].get("slo") == "metric_age"]
        assert [h["to"] for h in hooks] == ["page", "ticket", "ok"]

    figures = {
        "attainment_after_28_days": steady,
        "metric_age_at_outage_end_hours": round(age_at_outage_end / 3600, 2),
        "budget_remaining_after_outage": round(budget_after_outage, 3),
        "minutes_stale_to_page": (paged - went_stale).total_seconds() / 60,
        "minutes_missed_delivery_to_page": (paged - steady_end - DELIVERED_AT).total_seconds() / 60,
        "minutes_resume_to_ticket": (ticket - resume).total_seconds() / 60,
        "minutes_resume_to_ok": (ok - resume).total_seconds() / 60,
        "forecast_runs": drill.forecast_runs,
    }
    for k, v in figures.items():
        record_property(k, v)
    print("\nfreshness drill: " + json.dumps(figures, default=str))
