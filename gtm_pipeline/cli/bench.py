"""The benchmark command: throughput, peak memory and the cost of one new day (docs/bench.md)."""

from __future__ import annotations

from pathlib import Path

import click

from gtm_pipeline import bench as b


@click.command()
@click.option("--sizes", default="1e6,5e6,2e7", show_default=True,
              help="Raw rows in total across sources, one run per size, e.g. 1e6,5e6,2e7 or 1M,5M,20M.")
@click.option("--days", type=click.IntRange(1, 3660), default=90, show_default=True,
              help="Delivery days per size; the generator's scale is derived from the size and the days.")
@click.option("--history", default="90,365", show_default=True,
              help="History lengths in days for the incremental measurement (one new day on top of each).")
@click.option("--history-scale", type=click.FloatRange(0.01, 1000), default=1.0, show_default=True,
              help="Generator scale of the incremental histories (1.0 is about 4.1k raw rows a day).")
@click.option("--seed", type=int, default=7, show_default=True, help="Generator seed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work folder (default: <data dir>/bench); its work sub-folders are deleted at the end, "
                   "results.json stays.")
@click.option("--keep", is_flag=True,
              help="Keep the work folders, and reuse landing files already generated with the same settings.")
@click.option("--quick", is_flag=True,
              help="Tiny sizes and histories (a smoke test of a minute or so), overriding --sizes/--days/--history.")
@click.option("--skip-increment", is_flag=True, help="Measure the sizes only.")
@click.option("--skip-sizes", is_flag=True, help="Measure the incremental cost only.")
def bench(sizes, days, history, history_scale, seed, out_dir, keep, quick, skip_increment, skip_sizes):
    """Benchmark the whole asset graph at three sizes against DuckDB's own floor and a reference script, and the cost
    of one new day.

    Per size, for each stage (ingest, clean, contracts, metrics, decisions) and in total: seconds, the ratio to the
    floor (DuckDB reading the same landing files once) and to the reference script (the same reading, typing,
    deduplication and contract labelling in plain DuckDB SQL: gtm_pipeline/bench/reference.sql), the seconds spent
    storing Dagster events, and peak resident memory; raw rows per second. Then one new day on top of each history
    length, and the ratio of their costs. The load average is printed next to every figure: other work on the
    machine slows every stage.

    \b
    Example:
      gtm-pipeline bench                                   # 1M, 5M and 20M raw rows; 90 and 365 days of history
      gtm-pipeline bench --sizes 1M --history 30,60 --keep
      gtm-pipeline bench --quick
    """
    if quick:
        cfg = b.BenchConfig(sizes=b.QUICK_SIZES, days=b.QUICK_DAYS, history=b.QUICK_HISTORY,
                            history_scale=b.QUICK_HISTORY_SCALE, increment_rounds=2,
                            seed=seed, out=out_dir, keep=keep, skip_sizes=skip_sizes, skip_increment=skip_increment)
    else:
        cfg = b.BenchConfig(sizes=b.parse_sizes(sizes), days=days, history=b.parse_days_list(history),
                            history_scale=history_scale, seed=seed, out=out_dir, keep=keep, skip_sizes=skip_sizes,
                            skip_increment=skip_increment)
    b.run_bench(cfg, echo=click.echo)


def register(main: click.Group) -> None:
    main.add_command(bench)
