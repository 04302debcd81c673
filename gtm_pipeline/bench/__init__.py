"""Benchmark: throughput, peak memory and the cost of one new day, against DuckDB's own floor and a reference script
(docs/bench.md).

For each size (raw rows across all sources) the benchmark
1. generates the landing files (seeded; ``scale`` derived from the generator's rows per day at scale 1),
2. measures the *floor*: a fresh DuckDB connection reads every landing file of that size once (one plain aggregate
   per export, over a glob) -- the same bytes the pipeline reads, with nothing else done to them (``floor.py``),
3. runs the *reference*: ``reference.sql``, the same reading, typing, deduplication and contract labelling as the
   pipeline up to the clean tables, and CAC by channel, as one plain DuckDB script (``reference.py``),
4. materializes the whole asset graph stage by stage, each stage one in-process Dagster run of its assets:
   ingest, clean (with the quarantine outputs of the clean multi-assets), contracts (the conservation ledger),
   metrics, decisions (with everything else built over all days) (``runs.py``).

Why stage by stage instead of reading step timings from one run's event log: a stage here is a set of steps that
run one after another anyway (the in-process executor), a separate run gives each stage one wall-clock figure
including its share of Dagster's per-run overhead (~0.3-1 s), and the total is then exactly what a user waits for.

Every measurement runs in a fresh subprocess with its own settings and ``DAGSTER_HOME``, so its peak resident memory
is its own: the parent (``orchestrate.py``) samples the child's process tree with psutil every 100 ms and takes the
larger of that and the child's own ``ru_maxrss``. Generation runs in a subprocess of its own, never counted.

Incremental cost: for each history length (90 and 365 days by default) the benchmark materializes that history
untimed, then adds the next day's folders to the landing folder and times ``daily_ingest_job`` for that one day plus
``refresh_job`` (everything built over all days). Both times and their ratio are printed (``report.py``).

Run as ``gtm-pipeline bench``; the parent calls this package as ``python -m gtm_pipeline.bench <job.json>`` for the
subprocesses.
"""

from gtm_pipeline.bench.config import (
    DEFAULT_SIZES,
    INCREMENT_ROUNDS,
    QUICK_DAYS,
    QUICK_HISTORY,
    QUICK_HISTORY_SCALE,
    QUICK_SIZES,
    REFERENCE_STAGES,
    ROWS_PER_DAY_AT_SCALE_1,
    SCALE_EXPONENT,
    STAGES,
    BenchConfig,
    IncrementResult,
    SizeResult,
    label,
    parse_days_list,
    parse_sizes,
    scale_for,
    start_for,
)
from gtm_pipeline.bench.floor import floor_queries
from gtm_pipeline.bench.orchestrate import bench_failures, run_bench
from gtm_pipeline.bench.report import (
    increment_table,
    scaling_lines,
    size_table,
    summary_table,
)
from gtm_pipeline.bench.runs import stage_selections, step_seconds

__all__ = [
    "DEFAULT_SIZES", "INCREMENT_ROUNDS", "QUICK_DAYS", "QUICK_HISTORY", "QUICK_HISTORY_SCALE", "QUICK_SIZES",
    "REFERENCE_STAGES", "ROWS_PER_DAY_AT_SCALE_1", "SCALE_EXPONENT", "STAGES", "BenchConfig", "IncrementResult",
    "SizeResult", "bench_failures", "floor_queries", "increment_table", "label", "parse_days_list", "parse_sizes",
    "run_bench", "scale_for", "scaling_lines", "size_table", "stage_selections", "start_for", "step_seconds",
    "summary_table",
]
