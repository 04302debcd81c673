"""The Prometheus exporter: what /metrics says about real event-log and warehouse state, names that pass `promtool
check metrics`, answers while another process holds DuckDB's write lock (serving the last warehouse snapshot, with
its time), drops what was repaired or resolved, and counts its own scrape errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from conftest import require
from prometheus_client.parser import text_string_to_metric_families
from slo_fakes import METRICS, publish, write_slo_file

from gtm_pipeline.clean.contract import load_entity_contracts
from gtm_pipeline.clock import to_epoch
from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
from gtm_pipeline.datatime import BLOCKED, PUBLISHED, record_partitions
from gtm_pipeline.slo.contract import load_slo_file, resolve_coverage
from gtm_pipeline.slo.exporter import SloCollector, serve
from gtm_pipeline.slo.history import History

H = 3600.0
INDEX = {f"metrics/{m}": "metrics" for m in METRICS}
OWNERS = {name: c.owner for name, c in load_entity_contracts(CONTRACTS_DIR_DEFAULT).items()}
# Holds DuckDB's write lock from another process (as a pipeline run does) after running the SQL in argv[2].
HOLDER = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); c.execute(sys.argv[2]); "
          "print('locked', flush=True); sys.stdin.read()")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def exporter(tmp_path):
    """An exporter over a test instance and the warehouse tmp_path/gtm.duckdb (read at every scrape; it need not
    exist); yields (instance, port, collector) and stops the server afterwards."""
    slo_file = load_slo_file(write_slo_file(tmp_path / "slos.yaml"))
    history = History(tmp_path / "history.sqlite")
    with dg.instance_for_test() as inst:
        collector = SloCollector(slo_file, resolve_coverage(slo_file, INDEX), history, lambda: inst,
                                 database=tmp_path / "gtm.duckdb", owners=OWNERS, warehouse_min_interval=0)
        server = serve(collector, "127.0.0.1", 0)
        try:
            yield inst, server.server_port, collector
        finally:
            server.shutdown()
            server.server_close()
            history.close()


def test_metrics_reflect_event_log_state(exporter):
    inst, port, _ = exporter
    now = time.time()
    for m in METRICS:
        if m != "attribution":          # attribution never published: exported as 0 (unknown)
            publish(inst, m, now - (5 if m == "forecast" else 1) * H)
    s = _samples(_scrape(port))
    fc = (("asset", "metrics/forecast"), ("slo", "forecast_age"))
    assert s[("gtm_asset_last_success_timestamp_seconds", fc)] == pytest.approx(now - 5 * H, abs=1e-3)
    assert s[("gtm_asset_last_success_timestamp_seconds", (("asset", "metrics/attribution"),
                                                           ("slo", "attribution_age")))] == 0
    assert s[("gtm_slo_objective_ratio", (("slo", "forecast_age"),))] == 0.98
    assert s[("gtm_slo_freshness_threshold_seconds", (("slo", "forecast_age"),))] == 14400
    assert s[("gtm_slo_window_seconds", (("slo", "metric_age"),))] == 28 * 86400
    assert s[("gtm_slo_burn_rate", (*fc[:1], ("slo", "forecast_age"), ("window", "1h")))] == pytest.approx(50, rel=1e-3)
    assert s[("gtm_slo_burn_rate", (*fc[:1], ("slo", "forecast_age"), ("window", "3d")))] == pytest.approx(
        1 / 72 / 0.02, rel=1e-3)
    assert s[("gtm_slo_sli_total_seconds", fc)] == pytest.approx(5 * H, rel=1e-3)
    assert s[("gtm_slo_sli_good_seconds", fc)] == pytest.approx(4 * H, rel=1e-3)
    assert s[("gtm_slo_error_budget_remaining_ratio", fc)] == pytest.approx(1 - H / (0.02 * 28 * 86400), rel=1e-3)
    assert s[("gtm_slo_attainment_ratio", fc)] == pytest.approx(0.8, rel=1e-3)
    assert s[("gtm_exporter_scrape_errors_total", ())] == 0
    # A new publication shows at the next scrape: the exporter keeps no state of its own.
    publish(inst, "forecast", now)
    assert _samples(_scrape(port))[("gtm_asset_last_success_timestamp_seconds", fc)] == pytest.approx(now, abs=1e-3)


def test_names_pass_promtool_check_metrics(exporter, tmp_path):
    require(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    inst, port, _ = exporter
    publish(inst, "forecast", time.time())
    with duckdb.connect(str(tmp_path / "gtm.duckdb")) as con:
        _ops_state(con)
        _landing_state(con, tmp_path / "landing")
    text = _scrape(port)
    assert "gtm_publication_blocked{" in text and "gtm_quarantine_rows{" in text   # the ops series are checked too
    assert "gtm_rejected_lines{" in text and "gtm_landing_file_not_read{" in text
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_answers_while_another_process_holds_the_duckdb_write_lock(exporter, tmp_path):
    inst, port, _ = exporter
    publish(inst, "forecast", time.time())
    holder = _hold(tmp_path / "gtm.duckdb", "CREATE TABLE IF NOT EXISTS t (x INT)")
    try:
        s = _samples(_scrape(port))
        assert s[("gtm_exporter_scrape_errors_total", ())] == 0
        assert s[("gtm_asset_last_success_timestamp_seconds",
                  (("asset", "metrics/forecast"), ("slo", "forecast_age")))] > 0
    finally:
        _release(holder)


def test_scrape_errors_are_counted_and_the_scrape_still_answers(tmp_path):
    slo_file = load_slo_file(write_slo_file(tmp_path / "slos.yaml"))

    def broken():
        raise RuntimeError("event log unreachable")

    with History(tmp_path / "h.sqlite") as h:
        collector = SloCollector(slo_file, resolve_coverage(slo_file, INDEX), h, broken)
        server = serve(collector, "127.0.0.1", 0)
        try:
            _scrape(server.server_port)
            s = _samples(_scrape(server.server_port))
        finally:
            server.shutdown()
            server.server_close()
    assert s[("gtm_exporter_scrape_errors_total", ())] == 2
    assert s[("gtm_slo_objective_ratio", (("slo", "forecast_age"),))] == 0.98     # static figures still served
    assert not [k for k in s if k[0] == "gtm_asset_last_success_timestamp_seconds"]  # absent, not stale


# --- the warehouse's operational series ---------------------------------------------------------------------------

T0 = datetime(2026, 8, 17, 6, 0)


def _hold(database: Path, sql: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(database), sql], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    holder.wait(timeout=30)


def _ops_state(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """A warehouse with two blocked days (one of them since published again), open incidents of every kind, one
    resolved, and quarantined rows in several statuses. Returns the incident ids by name."""
    from gtm_pipeline.ops.incidents import declare
    from gtm_pipeline.quarantine.rows import ensure_repair_tables
    from gtm_pipeline.warehouse import open_incident

    ensure_repair_tables(con, load_entity_contracts(CONTRACTS_DIR_DEFAULT))
    record_partitions(con, "clean/opportunity", [("2026-08-15", PUBLISHED, T0), ("2026-08-16", BLOCKED, None)],
                      run_id="r1", now=T0)
    record_partitions(con, "clean/activity", [("2026-08-14", BLOCKED, None)], run_id="r1", now=T0)
    record_partitions(con, "clean/activity", [("2026-08-14", PUBLISHED, T0)], run_id="r2", now=T0)  # re-run: clear
    ids = {}
    ids["metric"], _ = open_incident(con, severity="SEV2", origin="metric", asset_key="metrics/payback",
                                     rule="bounds", title="payback out of bounds", details={}, owner="FP&A",
                                     dedup_key="metric:payback", opened_at=T0)
    ids["contract"], _ = open_incident(con, severity="SEV3", origin="contract", asset_key="clean/opportunity",
                                       rule="range", title="opportunity: range", details={}, owner="RevOps",
                                       dedup_key="contract:opportunity:block_publish:range", opened_at=T0,
                                       entity="opportunity")
    ids["manual"] = declare(con, severity="SEV1", title="CRM export double-counts renewals", by="cro",
                            asset_key="metrics/payback", owner="CRO", now=T0)
    done, _ = open_incident(con, severity="SEV2", origin="metric", asset_key="metrics/cac", rule="positive",
                            title="old", details={}, owner="FP&A", dedup_key="metric:cac", opened_at=T0)
    con.execute("UPDATE ops.incidents SET status = 'resolved' WHERE incident_id = ?", [done])
    rows = [("opportunity", "open"), ("opportunity", "open"), ("opportunity", "held"), ("opportunity", "repaired"),
            ("opportunity", "applied"), ("activity", "rejected")]
    for i, (table, status) in enumerate(rows):
        con.execute(f"INSERT INTO quarantine.{table} (quarantine_id, entity, _partition, status) VALUES (?, ?, ?, ?)",
                    [f"q{i}", table, "2026-08-16", status])
    con.execute("INSERT INTO quarantine.missing_owner (quarantine_id, entity, _partition, status) "
                "VALUES ('m1', 'opportunity', '2026-08-16', 'open')")
    return ids


def _ops_samples(s: dict[tuple, float]) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for (name, labels), v in s.items():
        if name.startswith(("gtm_publication_blocked", "gtm_incident", "gtm_quarantine_rows")):
            out.setdefault(name, {})[tuple(v for _k, v in labels)] = v
    return out


def test_warehouse_series_follow_the_warehouse_and_drop_what_was_resolved(exporter, tmp_path):
    _inst, port, collector = exporter
    s = _samples(_scrape(port))
    # Not read yet (no warehouse): absent, not "nothing blocked"; the failed read is counted, the scrape answers.
    assert not [k for k in s if k[0] == "gtm_warehouse_snapshot_timestamp_seconds"]
    assert not [k for k in s if k[0] == "gtm_publication_blocked"]
    assert s[("gtm_exporter_warehouse_read_failures_total", ())] == 1
    assert s[("gtm_exporter_scrape_errors_total", ())] == 0

    db = tmp_path / "gtm.duckdb"
    with duckdb.connect(str(db)) as con:
        ids = _ops_state(con)
    before = time.time()
    s = _samples(_scrape(port))
    assert s[("gtm_warehouse_snapshot_timestamp_seconds", ())] >= before - 1
    ops = _ops_samples(s)
    # Labels sorted by name: blocked (asset, entity, owner, partition); incidents (origin, owner, rule, sev).
    assert ops["gtm_publication_blocked"] == {("clean/opportunity", "opportunity", "RevOps", "2026-08-16"): 1}
    assert ops["gtm_incidents_open"] == {("metric", "FP&A", "bounds", "SEV2"): 1,
                                         ("contract", "RevOps", "range", "SEV3"): 1,
                                         ("manual", "CRO", "manual", "SEV1"): 1}
    t0 = to_epoch(T0)
    assert ops["gtm_incident_open_timestamp_seconds"] == {
        ("metrics/payback", ids["metric"], "metric", "FP&A", "bounds", "SEV2"): t0,
        ("clean/opportunity", ids["contract"], "contract", "RevOps", "range", "SEV3"): t0,
        ("metrics/payback", ids["manual"], "manual", "CRO", "manual", "SEV1"): t0}
    # entity, owner, status, table: applied and rejected rows are out of quarantine.
    assert ops["gtm_quarantine_rows"] == {("opportunity", "RevOps", "open", "opportunity"): 2,
                                          ("opportunity", "RevOps", "held", "opportunity"): 1,
                                          ("opportunity", "RevOps", "repaired", "opportunity"): 1,
                                          ("opportunity", "RevOps", "open", "missing_owner"): 1}

    # Repaired and resolved: the day publishes, the incidents resolve, the rows are applied -> the series go.
    from gtm_pipeline.ops.incidents import acknowledge, resolve

    with duckdb.connect(str(db)) as con:
        record_partitions(con, "clean/opportunity", [("2026-08-16", PUBLISHED, T0)], run_id="r3", now=T0)
        resolve(con, ids["metric"], by="fpa", note="bounds fixed", now=T0)
        acknowledge(con, ids["manual"], by="cro", now=T0)          # acknowledged is still open: it stays
        con.execute("UPDATE quarantine.opportunity SET status = 'applied'")
        con.execute("UPDATE quarantine.missing_owner SET status = 'applied'")
    ops = _ops_samples(_samples(_scrape(port)))
    assert "gtm_publication_blocked" not in ops
    assert "gtm_quarantine_rows" not in ops
    assert ops["gtm_incidents_open"] == {("contract", "RevOps", "range", "SEV3"): 1, ("manual", "CRO", "manual",
                                                                                      "SEV1"): 1}
    assert {k[1] for k in ops["gtm_incident_open_timestamp_seconds"]} == {ids["contract"], ids["manual"]}


LANDING_DAY = "2026-08-16"


def _landing_state(con: duckdb.DuckDBPyConnection, landing: Path) -> None:
    """One crm day as delivered: a file under a name no table reads (crm/<day>/leads_extra.csv), a 0-byte export,
    and an opportunities file with one good line and two bad ones; ingested for real."""
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.ingest.stage import ingest_day

    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    day = landing / "crm" / LANDING_DAY
    day.mkdir(parents=True)
    header = ",".join(spec.table("crm/opportunities").columns)
    good = "O1,A1,L1,U1,2026-08-01 10:00:00,discovery,core,40,0.1,10,4320,USD,smb,na,software,11-50,email,2026-09-01"
    (day / "opportunities.csv").write_text(f"{header}\n{good}\nO2,A1\nO3,A1\n")
    (day / "leads_extra.csv").write_text("lead_id\nL-1\n")
    (day / "accounts.csv").write_bytes(b"")
    ingest_day(con, spec, landing, "crm", LANDING_DAY)


def test_rejected_lines_and_files_not_read_are_exported_and_go_when_the_day_is_fixed(exporter, tmp_path):
    _inst, port, collector = exporter
    collector.source_owners = {"crm": "RevOps"}
    db, landing = tmp_path / "gtm.duckdb", tmp_path / "landing"
    with duckdb.connect(str(db)) as con:
        _landing_state(con, landing)
    s = _samples(_scrape(port))
    lines = {tuple(v for _k, v in labels): n for (name, labels), n in s.items() if name == "gtm_rejected_lines"}
    assert lines == {("RevOps", "crm", "ingest", "opportunities"): 2}  # owner, source, stage, table
    files = {dict(labels)["file"]: dict(labels) | {"value": n} for (name, labels), n in s.items()
             if name == "gtm_landing_file_not_read"}
    assert files == {
        f"crm/{LANDING_DAY}/leads_extra.csv": {"file": f"crm/{LANDING_DAY}/leads_extra.csv", "hint": "crm/leads",
                                               "owner": "RevOps", "partition": LANDING_DAY, "source": "crm",
                                               "status": "unclaimed", "table": "", "value": 1.0},
        f"crm/{LANDING_DAY}/accounts.csv": {"file": f"crm/{LANDING_DAY}/accounts.csv", "hint": "", "owner": "RevOps",
                                            "partition": LANDING_DAY, "source": "crm", "status": "rejected",
                                            "table": "accounts", "value": 1.0}}
    # Fixed upstream and re-ingested: the stray file renamed to what it meant, the export re-delivered. Both go.
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.ingest.stage import ingest_day

    day = landing / "crm" / LANDING_DAY
    (day / "leads_extra.csv").rename(day / "leads.csv")
    (day / "accounts.csv").write_text(",".join(load_landing_spec(CONTRACTS_DIR_DEFAULT).table("crm/accounts").columns)
                                      + "\n")
    with duckdb.connect(str(db)) as con:
        ingest_day(con, load_landing_spec(CONTRACTS_DIR_DEFAULT), landing, "crm", LANDING_DAY)
    s = _samples(_scrape(port))
    assert not [k for k in s if k[0] == "gtm_landing_file_not_read"]
    assert [n for (name, _labels), n in s.items() if name == "gtm_rejected_lines"] == [2]
    with duckdb.connect(str(db), read_only=True) as con:  # the renamed file's line is read now (with drift)
        assert con.execute("SELECT lead_id FROM raw.crm_leads").fetchall() == [("L-1",)]


def test_a_snapshot_stored_before_rejects_were_read_is_served_without_them():
    from gtm_pipeline.slo.ops_state import OpsSnapshot

    old = {"at": 1.0, "blocked": [], "incidents": [], "quarantine": []}
    snap = OpsSnapshot.from_dict(old)
    assert snap.rejects == () and snap.files_not_read == ()
    assert OpsSnapshot.from_dict(snap.as_dict()) == snap


def test_a_locked_warehouse_serves_the_last_snapshot_and_its_time(exporter, tmp_path):
    _inst, port, collector = exporter
    db = tmp_path / "gtm.duckdb"
    with duckdb.connect(str(db)) as con:
        _ops_state(con)
    first = _samples(_scrape(port))
    t1 = first[("gtm_warehouse_snapshot_timestamp_seconds", ())]
    failures = first[("gtm_exporter_warehouse_read_failures_total", ())]
    # A run blocks another day and keeps the write lock: the exporter answers at once, with what it read before.
    holder = _hold(db, "INSERT INTO ops.partition_status VALUES ('clean/lead', DATE '2026-08-16', 'blocked', NULL, "
                       "now()::TIMESTAMP, 'r9')")
    try:
        t = time.perf_counter()
        s = _samples(_scrape(port))
        assert time.perf_counter() - t < 5
    finally:
        _release(holder)
    assert s[("gtm_warehouse_snapshot_timestamp_seconds", ())] == t1          # staleness is visible
    assert s[("gtm_exporter_warehouse_read_failures_total", ())] == failures + 1
    assert s[("gtm_exporter_scrape_errors_total", ())] == 0
    assert _ops_samples(s)["gtm_publication_blocked"] == _ops_samples(first)["gtm_publication_blocked"]
    assert ("gtm_slo_objective_ratio", (("slo", "forecast_age"),)) in s
    # Lock released: the next scrape reads the warehouse again and sees the run's blocked day.
    time.sleep(0.01)
    s = _samples(_scrape(port))
    assert s[("gtm_warehouse_snapshot_timestamp_seconds", ())] > t1
    assert {k[0] for k in _ops_samples(s)["gtm_publication_blocked"]} == {"clean/opportunity", "clean/lead"}


def test_the_slo_sensor_refreshes_the_snapshot_the_exporter_serves(env_settings, tmp_path, monkeypatch):
    """Scrapes that always collide with runs still get recent figures: the sensor stores them on its tick."""
    from slo_fakes import fake_definitions

    from gtm_pipeline import keys
    from gtm_pipeline.config import load_settings

    monkeypatch.setenv("GTM_PIPELINE_SLO_FILE", str(write_slo_file(tmp_path / "slos.yaml")))
    settings = load_settings()
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        _ops_state(con)
    defs = fake_definitions(settings)
    with dg.instance_for_test() as inst:
        sensor = defs.resolve_sensor_def(keys.SLO_SENSOR)
        sensor.evaluate_tick(dg.build_sensor_context(instance=inst, definitions=defs, resources=dict(defs.resources)))
        slo_file = load_slo_file(settings.slo_file)
        with History(settings.slo_history_path) as h:
            collector = SloCollector(slo_file, resolve_coverage(slo_file, INDEX), h, lambda: inst,
                                     database=settings.duckdb_path, owners=OWNERS, warehouse_min_interval=0)
            server = serve(collector, "127.0.0.1", 0)
            holder = _hold(settings.duckdb_path, "SELECT 1")
            try:
                s = _samples(_scrape(server.server_port))
            finally:
                _release(holder)
                server.shutdown()
                server.server_close()
    assert s[("gtm_exporter_warehouse_read_failures_total", ())] == 1     # the exporter itself never read it
    assert _ops_samples(s)["gtm_publication_blocked"] == {
        ("clean/opportunity", "opportunity", "RevOps", "2026-08-16"): 1}
