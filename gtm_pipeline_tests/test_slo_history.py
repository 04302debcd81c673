"""The SLO history: publication times come from Dagster's event log (published versions only), persist across
restarts of every process and event-log resets, and a period in which nothing evaluated is reconstructed from the
publication timeline instead of being assumed good."""

from __future__ import annotations

import time

import dagster as dg
import pytest
from slo_fakes import METRICS, publish, write_slo_file

from gtm_pipeline.slo.contract import load_slo_file, resolve_coverage
from gtm_pipeline.slo.evaluate import evaluate
from gtm_pipeline.slo.health import health_of
from gtm_pipeline.slo.history import History

H, D = 3600.0, 86400.0
T0 = 1_900_000_000.0  # simulated "now" (2030), far from the real clock on purpose
INDEX = {f"metrics/{m}": "metrics" for m in METRICS}


@pytest.fixture
def slo_file(tmp_path):
    return load_slo_file(write_slo_file(tmp_path / "slos.yaml"))


@pytest.fixture
def coverage(slo_file):
    return resolve_coverage(slo_file, INDEX)


def _publish_all(inst, at):
    for m in METRICS:
        publish(inst, m, at)


def test_history_survives_restart_and_event_log_reset(tmp_path, slo_file, coverage):
    path = tmp_path / "history.sqlite"
    with dg.instance_for_test() as inst:
        _publish_all(inst, T0 - 2 * H)
        publish(inst, "forecast", T0 - 30 * H)   # an older forecast, then the one 2h ago is newest
        with History(path) as h:
            before = evaluate(slo_file, coverage, h, inst, now=T0)
    # New processes, and a brand-new (empty) Dagster instance: the history still knows every publication.
    with dg.instance_for_test() as fresh_instance, History(path) as h:
        after = evaluate(slo_file, coverage, h, fresh_instance, now=T0)
    for b, a in zip(before.slos, after.slos):
        assert [(x.asset, x.last_published, x.window) for x in b.assets] == \
               [(x.asset, x.last_published, x.window) for x in a.assets]
    assert after.get("forecast_age").assets[0].last_published == pytest.approx(T0 - 2 * H)


def test_a_gap_in_evaluation_is_reconstructed_not_assumed_good(tmp_path, slo_file, coverage):
    """Evaluated at T0 (fresh), then nothing evaluates for two days while the forecast is stale for most of them."""
    with dg.instance_for_test() as inst, History(tmp_path / "h.sqlite") as h:
        _publish_all(inst, T0 - 1 * H)
        first = evaluate(slo_file, coverage, h, inst, now=T0)
        assert first.get("forecast_age").state == "fresh"
        # During the gap: one late forecast at T0+30h; other metrics refreshed daily.
        publish(inst, "forecast", T0 + 30 * H)
        for day in (1, 2):
            for m in METRICS:
                if m != "forecast":
                    publish(inst, m, T0 + day * D - 1 * H)
        later = evaluate(slo_file, coverage, h, inst, now=T0 + 2 * D)
    fc = later.get("forecast_age").assets[0]
    # Stale from T0+3h to T0+30h (27h) and from T0+34h to T0+48h (14h): 41h of staleness, not zero.
    assert fc.window.bad == pytest.approx(41 * H)
    assert fc.budget_remaining == pytest.approx(1 - 41 * H / (0.02 * 28 * D))
    assert fc.budget_remaining < 0                       # 41h > the 13.44h budget
    # Nothing evaluated between the first publication (T0-1h) and T0+2d but the two instants: all reconstructed.
    assert later.reconstructed["forecast_age"] == pytest.approx(2 * D + 1 * H, abs=1)
    assert later.get("metric_age").assets[0].window.bad == 0                    # daily refreshes kept them fresh


def test_blocked_publish_keeps_the_previous_version_and_its_age(tmp_path, slo_file, coverage):
    # Real time here: a blocked publish is dated by its event, which the event log stamps with the clock.
    now = time.time()
    with dg.instance_for_test() as inst, History(tmp_path / "h.sqlite") as h:
        _publish_all(inst, now - 5 * H)
        publish(inst, "forecast", now, published=False)   # audit failed: the previous version stays
        ev = evaluate(slo_file, coverage, h, inst, now=now + 1)
    fc = ev.get("forecast_age").assets[0]
    assert fc.last_published == pytest.approx(now - 5 * H)
    assert fc.state == "stale"
    assert "metrics/forecast" in ev.blocked


def test_materialization_without_the_publish_convention_counts_at_its_time(tmp_path, slo_file, coverage):
    with dg.instance_for_test() as inst, History(tmp_path / "h.sqlite") as h:
        inst.report_runless_asset_event(dg.AssetMaterialization(["metrics", "payback"]))
        ev = evaluate(slo_file, coverage, h, inst)
        rec = inst.get_latest_materialization_event(dg.AssetKey(["metrics", "payback"]))
    pb = next(a for a in ev.get("metric_age").assets if a.asset == "metrics/payback")
    assert pb.last_published == pytest.approx(rec.timestamp)
    assert pb.state == "fresh"


def test_sync_is_incremental_and_idempotent(tmp_path, slo_file, coverage):
    from gtm_pipeline.slo.source import sync_asset

    with dg.instance_for_test() as inst, History(tmp_path / "h.sqlite") as h:
        for i in range(3):
            publish(inst, "forecast", T0 - i * H)
        assert sync_asset(h, inst, "metrics/forecast") == 3
        assert sync_asset(h, inst, "metrics/forecast") == 0
        publish(inst, "forecast", T0 + H)
        assert sync_asset(h, inst, "metrics/forecast") == 1
        assert h.publications("metrics/forecast") == [T0 - 2 * H, T0 - H, T0, T0 + H]
        assert h.publications("metrics/forecast", since=T0 - 0.5 * H) == [T0 - H, T0, T0 + H]


def test_never_materialized_is_unknown_and_not_green(tmp_path, slo_file, coverage):
    with dg.instance_for_test() as inst, History(tmp_path / "h.sqlite") as h:
        for m in METRICS:
            if m != "attribution":
                publish(inst, m, T0 - H)
        ev = evaluate(slo_file, coverage, h, inst, now=T0)
        result = health_of(ev, h)
    att = next(a for a in ev.get("attribution_age").assets if a.asset == "metrics/attribution")
    assert (att.state, att.attainment, att.level) == ("unknown", None, "ok")
    assert not result.green
    assert result.reasons == ("attribution_age: metrics/attribution was never published (freshness unknown)",)


def test_prune_keeps_the_publication_in_force(tmp_path):
    with History(tmp_path / "h.sqlite") as h:
        h.add_events("a", [(T0 - 40 * D, 0, "r1", 1), (T0 - 35 * D, 0, "r2", 2), (T0 - 1 * D, 0, "r3", 3)], [], 3)
        h.prune(keep_after=T0 - 30 * D)
        assert h.publications("a") == [T0 - 35 * D, T0 - 1 * D]
