"""The metric layer (spec 002 §2-3): fact tables and derived metrics in DuckDB schema ``metrics``, each published by
write-audit-publish against its metric contract in ``contracts/metrics/``.

* `registry`: the computations (one per table) and what they may read;
* `contract`: loading and validating metric contracts;
* `publish`: write a candidate, audit it with the contract's qa_tests, publish atomically or block and page;
* `facts`, `unit_economics`, `funnel`, `routing`, `elasticity`, `attribution`, `forecast`: the computations.

`run_layer` runs every metric (or a chosen few) in dependency order without Dagster, for tests and the CLI; the
Dagster assets in `gtm_pipeline.metrics.defs` call `publish.run_metric` one metric at a time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from gtm_pipeline.metrics.contract import MetricContract, load_metric_contracts
from gtm_pipeline.metrics.publish import PublishOutcome, run_metric
from gtm_pipeline.metrics.registry import computations

__all__ = ["MetricContract", "PublishOutcome", "load_metric_contracts", "run_layer", "run_metric"]


def run_layer(con: duckdb.DuckDBPyConnection, contracts_dir: Path, *, only: list[str] | None = None,
              now: datetime | None = None, run_id: str | None = None) -> dict[str, PublishOutcome]:
    """Write, audit and publish the metric layer (or the metrics in ``only``) in dependency order."""
    contracts = load_metric_contracts(contracts_dir)
    comps = computations()
    out: dict[str, PublishOutcome] = {}
    for name, contract in contracts.items():
        if only is None or name in only:
            out[name] = run_metric(con, contract, comps[name], run_id=run_id, now=now)
    return out
