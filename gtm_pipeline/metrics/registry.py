"""The computations behind the metric layer: one registered function per table of schema ``metrics``.

A computation produces the *base* of a metric: its inputs aggregated to the metric's grain, as DuckDB SQL (or, for
the few that need numerical work, a small pandas frame). The metric contract (`contracts/metrics/<name>.yaml`)
supplies what the business defines: the formula that turns base columns into the published figure, the
parameters, the qa_tests, the owner and the break action. Keeping the two apart lets a contract change a formula or
a threshold without touching code, and lets the loader check, before anything runs, that every name a contract uses
exists in the base (see `gtm_pipeline.metrics.contract`).

A computation may only read the inputs it declares (``reads``); `BuildContext.table` refuses anything else, and the
contract loader checks that the contract's ``inputs`` list the same names, so lineage in the contract, in Dagster
and in the SQL cannot drift apart.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TypeAlias

import duckdb
import pandas as pd

from gtm_pipeline.errors import GtmPipelineError

CLEAN_PREFIX = "clean."
# Modules that register computations (imported on first use, so importing this module stays cheap).
_MODULES = ("facts", "unit_economics", "funnel", "routing", "elasticity", "attribution", "forecast", "experiments",
            "ttv", "enrichment", "scoring", "lifecycle")

Base: TypeAlias = str | pd.DataFrame


@dataclass(frozen=True)
class BuildContext:
    """What a computation may use: its declared inputs, the evaluation time and (for facts) the day window."""

    name: str
    reads: tuple[str, ...]
    now: datetime                         # naive UTC
    window: tuple[date, date] | None = None  # inclusive day range of a partitioned fact
    contracts_dir: Path | None = None     # for computations driven by other contracts (experiment readouts)

    def table(self, input_name: str) -> str:
        """Qualified table of a declared input: ``clean.lead`` -> clean.lead, ``fact_costs`` -> metrics.fact_costs."""
        if input_name not in self.reads:
            raise GtmPipelineError(
                f"metrics/{self.name}: the computation reads {input_name!r}, which it does not declare; "
                f"add it to reads= in gtm_pipeline/metrics and to inputs in contracts/metrics/{self.name}.yaml")
        return input_name if input_name.startswith(CLEAN_PREFIX) else f"metrics.{input_name}"


@dataclass(frozen=True)
class Computation:
    name: str
    reads: tuple[str, ...]
    columns: tuple[str, ...]
    build: Callable[[duckdb.DuckDBPyConnection, BuildContext], Base]
    partition_column: str | None = None   # a DATE column: the table is published one day-window at a time
    kinds: frozenset[str] = field(default_factory=lambda: frozenset({"duckdb", "sql"}))
    order_by: str | None = None           # SQL ORDER BY for previews ("latest values" first)

    @property
    def partitioned(self) -> bool:
        return self.partition_column is not None

    def input_table(self, input_name: str) -> str:
        return BuildContext(self.name, self.reads, datetime.min).table(input_name)


_REGISTRY: dict[str, Computation] = {}


def computation(name: str, *, reads: tuple[str, ...] | list[str], columns: tuple[str, ...] | list[str],
                partition_column: str | None = None, kinds: set[str] | None = None, order_by: str | None = None):
    """Register ``fn(con, ctx) -> SQL | DataFrame`` as the computation of ``metrics.<name>``."""

    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name].build is not fn:
            raise AssertionError(f"computation {name!r} is registered twice")
        _REGISTRY[name] = Computation(name=name, reads=tuple(reads), columns=tuple(columns), build=fn,
                                      partition_column=partition_column,
                                      kinds=frozenset(kinds or {"duckdb", "sql"}), order_by=order_by)
        return fn

    return deco


def computations() -> dict[str, Computation]:
    """Every registered computation, by table name."""
    for mod in _MODULES:
        importlib.import_module(f"gtm_pipeline.metrics.{mod}")
    return dict(_REGISTRY)
