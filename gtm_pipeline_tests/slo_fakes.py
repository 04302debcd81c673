"""Small stand-ins for the metric layer, for the SLO tests: assets keyed and grouped like the real ones that publish
with the write-audit-publish metadata (``published``, ``published_at`` and ``data_time``, the timestamp the exporter
exports and the Prometheus rules age), and a helper that reports a publication at a chosen (simulated) time.
``defs`` (built on first access from the environment's settings) lets a subprocess such as ``gtm-pipeline slo
exporter --module slo_fakes`` load them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml
from dagster_duckdb import DuckDBResource

from gtm_pipeline.clock import to_epoch, utcnow

# Enough to exercise every selector of contracts/slos.yaml: group metrics with facts and derived metrics, forecast,
# attribution and attribution_validity.
METRICS = ("fact_bookings", "cac_by_channel", "payback", "forecast", "attribution", "attribution_validity")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).replace(tzinfo=None).isoformat()


def _metric(name: str) -> dg.AssetsDefinition:
    @dg.asset(key=["metrics", name], group_name="metrics", kinds={"duckdb"}, owners=["team:fp_a"],
              tags={"stage": "metrics"}, code_version="1",
              description=f"Test stand-in for metrics/{name}: one row, published at materialization.")
    def _asset() -> dg.MaterializeResult:
        now = utcnow()
        # Computed from data as new as the moment it ran (data time = publication time).
        return dg.MaterializeResult(metadata={"published": True, "published_at": now.isoformat(),
                                              "data_time": dg.MetadataValue.timestamp(to_epoch(now))})

    return _asset


def metric_assets(names=METRICS) -> list[dg.AssetsDefinition]:
    return [_metric(n) for n in names]


def fake_definitions(settings, names=METRICS) -> dg.Definitions:
    """The fake metric layer with the SLO stage applied exactly as gtm_pipeline.definitions applies it."""
    from gtm_pipeline.slo.defs import apply_slos

    stages = dg.Definitions(assets=metric_assets(names))
    return dg.Definitions.merge(apply_slos(stages, settings),
                                dg.Definitions(resources={"warehouse": DuckDBResource(
                                    database=str(settings.duckdb_path))}))


def publish(instance: dg.DagsterInstance, name: str, at: float, *, published: bool = True,
            data_time: float | None = None, blocked_inputs: list[str] | None = None) -> None:
    """Record a (possibly simulated-time) publication of metrics/<name> in the event log; its data is complete
    through ``data_time`` (default: the publication time)."""
    md: dict = {"published": published, "published_at": iso(at),
                "data_time": dg.MetadataValue.timestamp(at if data_time is None else data_time)}
    if blocked_inputs:
        md["blocked_inputs"] = dg.MetadataValue.json(blocked_inputs)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=["metrics", name], metadata=md))


def write_slo_file(path: Path, *, forecast_threshold: str = "4h", window: str = "28d",
                   alerting: list[dict] | None = None, evaluation_interval: str = "1m", resolve_after: str = "10m",
                   rule_interval: str = "30s", absent_for: str = "10m", report_interval: str = "15m") -> Path:
    """An SLO file shaped like contracts/slos.yaml, with the knobs the tests turn."""
    body = {
        "version": 1,
        "defaults": {"objective": 0.98, "window": window, "evaluation_interval": evaluation_interval,
                     "resolve_after": resolve_after, "report_interval": report_interval},
        "alerting": alerting or [
            {"severity": "page", "long": "1h", "short": "5m", "burn_rate": 14.4},
            {"severity": "page", "long": "6h", "short": "30m", "burn_rate": 6},
            {"severity": "ticket", "long": "1d", "short": "2h", "burn_rate": 3},
            {"severity": "ticket", "long": "3d", "short": "6h", "burn_rate": 1}],
        "prometheus": {"rule_interval": rule_interval, "absent_for": absent_for},
        "slos": [
            {"name": "metric_age", "threshold": "24h", "owner": "FP&A", "assets": [{"group": "metrics"}],
             "exclude": ["metrics/forecast", "metrics/attribution", "metrics/attribution_validity"]},
            {"name": "forecast_age", "threshold": forecast_threshold, "owner": "RevOps",
             "assets": [{"key": "metrics/forecast"}]},
            {"name": "attribution_age", "threshold": "24h", "owner": "Demand Gen",
             "assets": ["metrics/attribution", "metrics/attribution_validity"]},
        ],
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def __getattr__(name: str):
    if name == "defs":
        from gtm_pipeline.config import load_settings

        return fake_definitions(load_settings())
    raise AttributeError(name)


class Receiver:
    """A tiny local webhook receiver (127.0.0.1, free port) that records every POST with its arrival time.

    ``fail_next`` makes the next N requests answer 500 (to test retries). Use as a context manager; it stops its
    thread on exit."""

    def __init__(self):
        import http.server
        import json
        import threading
        import time

        self.posts: list[dict] = []
        self.fail_next = 0
        self._cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._cond:
                    if outer.fail_next > 0:
                        outer.fail_next -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    outer.posts.append({"at": time.time(), "path": self.path, "headers": dict(self.headers),
                                        "json": json.loads(body or b"null")})
                    outer._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def wait_for(self, predicate, timeout: float) -> dict | None:
        """The first recorded POST matching ``predicate``, waiting up to ``timeout`` seconds (a hang guard only)."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for p in self.posts:
                    if predicate(p):
                        return p
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
