"""Freshness is data age (docs/design.md §6), attacked where the first version broke: recomputing over unchanged inputs
must not make a metric younger, a blocked input partition must hold everything downstream back and be named, a future
timestamp in a delivery must not make it look fresh, and the one clock must honour GTM_PIPELINE_NOW."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from gtm_pipeline import clock
from gtm_pipeline.clean import clean_days
from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.datatime import DataTime, asset_data_time, combine, delivery_cutoff
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.generate import DefectRates, GenerateConfig, generate
from gtm_pipeline.ingest.landing import Source, Table, load_landing_spec
from gtm_pipeline.ingest.stage import ingest_days
from gtm_pipeline.metrics import run_layer
from gtm_pipeline.slo.contract import load_slo_file
from gtm_pipeline.slo.evaluate import evaluate
from gtm_pipeline.slo.history import History
from gtm_pipeline.slo.report import as_json
from gtm_pipeline.slo.sli import Version, asset_figures, split

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = REPO / "contracts"
START = date(2026, 3, 2)
DAYS = 10
LAST = START + timedelta(days=DAYS - 1)
END_OF_LAST = datetime.combine(LAST + timedelta(days=1), datetime.min.time())
H = 3600.0


def _days(n: int = DAYS) -> list[str]:
    return [(START + timedelta(days=i)).isoformat() for i in range(n)]


def _load(con, landing: Path, days: list[str]) -> None:
    spec = load_landing_spec(CONTRACTS)
    for source in spec.sources:
        ingest_days(con, spec, landing, source, days)
    contracts = load_entity_contracts(CONTRACTS)
    for e in spec.entities():
        clean_days(con, spec, contracts[e], days)


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dt") / "landing"
    generate(root, GenerateConfig(days=DAYS, seed=3, start=START, scale=0.5, defects=DefectRates.none()),
             progress=False)
    return root


@pytest.fixture
def warehouse(landing, tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _load(con, landing, _days())
    yield con
    con.close()


def _dt(con, key: str) -> DataTime:
    return asset_data_time(con, key)


# -- the clock ---------------------------------------------------------------------------------------------------
def test_clock_honours_gtm_pipeline_now(monkeypatch):
    monkeypatch.setenv(clock.ENV, "2026-11-03T09:30:00+01:00")
    assert clock.utcnow() == datetime(2026, 11, 3, 8, 30)
    monkeypatch.setenv(clock.ENV, "2026-11-03T09:30:00Z")
    assert clock.now_epoch() == datetime(2026, 11, 3, 9, 30).replace(tzinfo=UTC).timestamp()
    monkeypatch.setenv(clock.ENV, "yesterday")
    with pytest.raises(GtmPipelineError, match="GTM_PIPELINE_NOW='yesterday' is not an ISO-8601 time"):
        clock.utcnow()
    monkeypatch.delenv(clock.ENV)
    assert abs((clock.utcnow() - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 5


# -- raw and clean data times ------------------------------------------------------------------------------------
def test_a_day_partitioned_table_is_complete_through_its_newest_delivery(warehouse):
    for key in ("raw/crm", "clean/opportunity", "clean/ad_spend"):
        assert _dt(warehouse, key) == DataTime(END_OF_LAST), key


def test_metrics_are_as_old_as_their_oldest_input(warehouse, monkeypatch):
    monkeypatch.setenv(clock.ENV, (END_OF_LAST + timedelta(hours=2)).isoformat())
    out = run_layer(warehouse, CONTRACTS)
    published = {n: o for n, o in out.items() if o.published}
    # (cac_by_channel itself is blocked here: a channel spent and won nothing in 10 days, an infinite CAC)
    assert "fact_pipeline" in published and "cac_per_sqo" in published
    for name, o in published.items():
        assert o.data_time.at is not None and o.data_time.at <= END_OF_LAST, name
        assert not o.data_time.partial, name
    rows = warehouse.execute("SELECT DISTINCT data_time FROM ops.publications WHERE asset_key = 'metrics/cac_per_sqo'"
                             ).fetchall()
    assert rows == [(END_OF_LAST,)]


def test_recomputing_over_unchanged_inputs_does_not_make_a_metric_younger(warehouse, monkeypatch):
    t0 = END_OF_LAST + timedelta(hours=1)
    monkeypatch.setenv(clock.ENV, t0.isoformat())
    first = run_layer(warehouse, CONTRACTS, only=["fact_pipeline", "fact_bookings", "forecast"])["forecast"]
    monkeypatch.setenv(clock.ENV, (t0 + timedelta(hours=30)).isoformat())
    again = run_layer(warehouse, CONTRACTS, only=["fact_pipeline", "fact_bookings", "forecast"])["forecast"]
    assert again.published and again.published_at > first.published_at      # it did recompute and republish ...
    assert again.data_time == first.data_time                                # ... over the same data: not younger
    slo = load_slo_file(CONTRACTS / "slos.yaml").get("forecast_age")
    now = clock.to_epoch(t0 + timedelta(hours=30))
    versions = [Version(clock.to_epoch(o.published_at), clock.to_epoch(o.data_time.at)) for o in (first, again)]
    fig = asset_figures(slo, "metrics/forecast", versions, now, (), (3600,))
    assert fig.state == "stale" and fig.age == pytest.approx(31 * H)


def _rewrite_amount(path: Path, value: str) -> None:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    rows[1][rows[0].index("amount")] = value
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def test_a_blocked_day_holds_every_downstream_asset_back_and_is_named(landing, tmp_path, monkeypatch):
    local = tmp_path / "landing"
    shutil.copytree(landing, local)
    # A middle day that delivered opportunities: one amount far beyond the contract's range blocks its publication.
    bad_day = next(d for d in reversed(_days()[1:-1])
                   if len((local / "crm" / d / "opportunities.csv").read_text(encoding="utf-8").splitlines()) > 1)
    opp = local / "crm" / bad_day / "opportunities.csv"
    _rewrite_amount(opp, "99999999999")

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    _load(con, local, _days())
    held = _dt(con, "clean/opportunity")
    assert held.blocking == (f"clean/opportunity@{bad_day}",)
    assert held.at == datetime.fromisoformat(bad_day)           # complete only through the day before
    assert _dt(con, "clean/lead").blocking == ()                 # other entities are not held back

    monkeypatch.setenv(clock.ENV, (END_OF_LAST + timedelta(hours=1)).isoformat())
    out = run_layer(con, CONTRACTS)
    fp = out["fact_pipeline"]
    assert fp.published and fp.data_time.partial
    assert fp.data_time.blocking == (f"clean/opportunity@{bad_day}",)
    assert fp.data_time.at == datetime.fromisoformat(bad_day)
    # Downstream of downstream: the blocked day travels through the metrics that read metrics.
    downstream = [n for n, o in out.items() if o.published and f"clean/opportunity@{bad_day}" in o.data_time.blocking]
    assert "forecast" in downstream and len(downstream) >= 5
    # Metrics that read no opportunity data are not held back.
    for name in ("dq_reason_coverage", "routing_health"):
        assert out[name].published and out[name].data_time == DataTime(END_OF_LAST), name

    # The repair: the file is fixed and the day re-run; everything catches up and nothing is named any more.
    _rewrite_amount(opp, "1200")
    spec = load_landing_spec(CONTRACTS)
    ingest_days(con, spec, local, "crm", [bad_day])
    clean_days(con, spec, load_entity_contracts(CONTRACTS)["opportunity"], [bad_day])
    assert _dt(con, "clean/opportunity") == DataTime(END_OF_LAST)
    fp2 = run_layer(con, CONTRACTS, only=["fact_pipeline"])["fact_pipeline"]
    assert fp2.data_time == DataTime(END_OF_LAST)
    con.close()


def test_a_future_event_timestamp_cannot_make_a_delivery_fresh(tmp_path):
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.crm_deals (changed_at VARCHAR, _partition DATE)")
    con.execute("INSERT INTO raw.crm_deals VALUES ('2026-03-02 13:45:00', '2026-03-02'), "
                "('2031-01-01 00:00:00', '2026-03-02'), ('not a time', '2026-03-02')")
    t = Table(source="crm", name="deals", format="csv", columns=("changed_at",), entity="opportunity", to_entity={},
              event_time="changed_at")
    src = Source(name="crm", description="", owner="", tables=(t,), cutoff="newest_event")
    ingested = datetime(2026, 3, 2, 14, 0)
    assert delivery_cutoff(con, src, "2026-03-02", ingested) == ingested     # capped: not 2031
    con.execute("DELETE FROM raw.crm_deals WHERE changed_at LIKE '2031%'")
    assert delivery_cutoff(con, src, "2026-03-02", ingested) == datetime(2026, 3, 2, 13, 45)
    eod = Source(name="crm", description="", owner="", tables=(t,), cutoff="end_of_day")
    assert delivery_cutoff(con, eod, "2026-03-02", ingested) == datetime(2026, 3, 3)


def test_a_derived_time_is_unknown_while_an_input_never_published():
    assert combine([DataTime(datetime(2026, 3, 3)), DataTime(None)]).at is None
    assert combine([DataTime(datetime(2026, 3, 3), ("clean/a@2026-03-01",)),
                    DataTime(datetime(2026, 3, 5))]) == DataTime(datetime(2026, 3, 3), ("clean/a@2026-03-01",))


# -- the SLI over data time --------------------------------------------------------------------------------------
def test_a_version_that_is_stale_when_published_counts_as_stale_from_the_start():
    # Published hourly for a day, every time over data 30 hours old: never fresh under a 24 h threshold.
    vs = [Version(i * H, -30 * H) for i in range(24)]
    got = split(vs, 24 * H, 0.0, 24 * H)
    assert got.good == 0 and got.bad == pytest.approx(24 * H)
    # The same republishing over data 1 hour old at the start: fresh for 23 hours, then stale.
    vs = [Version(i * H, -1 * H) for i in range(24)]
    got = split(vs, 24 * H, 0.0, 24 * H)
    assert got.good == pytest.approx(23 * H) and got.bad == pytest.approx(1 * H)


def _materialize(instance, key: str, metadata: dict) -> None:
    @dg.asset(key=dg.AssetKey.from_user_string(key))
    def _a():
        return dg.MaterializeResult(metadata=metadata)

    assert dg.materialize([_a], instance=instance).success


def test_slo_report_json_gives_data_time_age_status_and_blocking_input(tmp_path, monkeypatch):
    slo_file = load_slo_file(CONTRACTS / "slos.yaml")
    from gtm_pipeline.slo.contract import Coverage

    coverage = Coverage(assets={"forecast_age": ("metrics/forecast",)}, pending={})
    now = datetime(2026, 3, 10, 12, 0)
    with dg.instance_for_test() as instance, History(tmp_path / "h.sqlite") as h:
        # Republished a minute ago, but over data complete only through 03-08 because of a blocked day.
        _materialize(instance, "metrics/forecast", {
            "published": True, "published_at": (now - timedelta(minutes=1)).isoformat(),
            "data_time": dg.MetadataValue.timestamp(clock.to_epoch(datetime(2026, 3, 8))),
            "blocked_inputs": dg.MetadataValue.json(["clean/opportunity@2026-03-08"])})
        ev = evaluate(slo_file, coverage, h, instance, now=clock.to_epoch(now))
        fc = ev.get("forecast_age").assets[0]
        assert fc.state == "stale" and fc.age == pytest.approx(60 * H)
        out = as_json(ev, h)
        slo = next(s for s in out["slos"] if s["slo"] == "forecast_age")
        assert slo["data_time"] == "2026-03-08T00:00:00Z" and slo["status"] == "stale"
        assert slo["age_seconds"] == pytest.approx(60 * H)
        assert slo["blocking_inputs"] == ["clean/opportunity@2026-03-08"]
        assert {"attainment", "budget_remaining", "burn_rates"} <= set(slo)
        # A write-audit-publish version that names no data time is not vouched for: stale, not fresh.
        _materialize(instance, "metrics/forecast", {"published": True, "published_at": now.isoformat()})
        ev = evaluate(slo_file, coverage, h, instance, now=clock.to_epoch(now) + 60)
        assert ev.get("forecast_age").assets[0].state == "stale"
