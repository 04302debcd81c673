"""The benchmark's tables: one per size (every stage against the floor and the reference script, with Dagster's
event time and peak memory), the summary across sizes, the scaling between them, and the cost of one new day."""

from __future__ import annotations

import math

from gtm_pipeline.bench.config import (
    REFERENCE_STAGES,
    STAGES,
    IncrementResult,
    SizeResult,
    label,
)

# The stages where the reference script does the pipeline's own work (read, type, deduplicate, label); its
# contracts and metrics sections are a subset (summary counts, CAC by channel only), so their ratios say less.
LIKE_FOR_LIKE = ("ingest", "clean")


def fmt_load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _x(a: float, b: float) -> str:
    """``a / b`` as "12.3x"; "-" when there is nothing to divide by."""
    return f"{a / b:.1f}x" if b else "-"


def _agreement(r: SizeResult) -> str:
    ref = r.reference_counts.get("clean_rows", 0)
    if ref == r.clean_rows:
        return f"{ref:,}, as the pipeline's"
    # Expected only when the clean stage split the days into batches (docs/bench.md, "Reference").
    return f"{ref:,} against the pipeline's {r.clean_rows:,}"


def size_table(r: SizeResult) -> str:
    lines = [f"   {'stage':<12}{'seconds':>10}{'share':>8}{'x floor':>9}{'reference s':>13}{'x ref':>8}"
             f"{'Dagster events':>24}{'peak RSS':>12}"]
    for s in STAGES:
        t = r.stages.get(s, 0.0)
        ref = r.reference.get(s)
        ev = f"{r.events.get(s, 0):,} in {r.event_seconds.get(s, 0.0):.2f}s"
        lines.append(f"   {s:<12}{t:>10.2f}{(t / r.total if r.total else 0):>8.0%}{_x(t, r.floor):>9}"
                     f"{('-' if ref is None else f'{ref:.2f}'):>13}{_x(t, ref or 0.0):>8}{ev:>24}"
                     f"{_mib(r.stage_peak_rss.get(s, 0)):>12}")
    pipe_lfl = sum(r.stages.get(s, 0.0) for s in LIKE_FOR_LIKE)
    ref_lfl = sum(r.reference.get(s, 0.0) for s in LIKE_FOR_LIKE)
    lines += [
        f"   {'total':<12}{r.total:>10.2f}        of which storing Dagster events "
        f"{sum(r.event_seconds.values()):.2f}s",
        f"   {'rows/s':<12}{r.rows_per_second:>10,.0f}",
        f"   {'peak RSS':<12}{_mib(r.peak_rss):>10}",
        f"   {'floor':<12}{r.floor:>10.2f}   (floor process peak RSS {_mib(r.floor_peak_rss)})",
        f"   {'total/floor':<12}{r.ratio:>9.1f}x",
        f"   {'reference':<12}{r.reference_total:>10.2f}   (reference.sql; its process peak RSS "
        f"{_mib(r.reference_peak_rss)}; clean rows: {_agreement(r)})",
        f"   {'total/reference':<16}{r.reference_ratio:>5.1f}x   ingest+clean against the reference's: "
        f"{_x(pipe_lfl, ref_lfl)}",
        f"   load average {fmt_load(r.load_before)} before, {fmt_load(r.load_after)} after",
    ]
    if r.failed_steps:
        lines.append(f"   failed steps: {', '.join(r.failed_steps)} (clean_opportunity is expected: the generated "
                     f"out-of-range day blocks its publication; see the run's log in the work folder otherwise)")
    return "\n".join(lines)


def summary_table(sizes: list[SizeResult]) -> str:
    head = (f"{'size':>6} {'raw rows':>12} " + " ".join(f"{s:>9}" for s in STAGES)
            + f" {'total s':>8} {'events s':>8} {'rows/s':>9} {'peak RSS':>10} {'floor s':>8} {'x floor':>7}"
              f" {'ref s':>7} {'x ref':>6}  load avg (1m, after)")
    lines = ["throughput (seconds per stage)", head]
    for r in sizes:
        lines.append(f"{label(r.target_rows):>6} {r.raw_rows:>12,} "
                     + " ".join(f"{r.stages.get(s, 0.0):>9.2f}" for s in STAGES)
                     + f" {r.total:>8.2f} {sum(r.event_seconds.values()):>8.2f} {r.rows_per_second:>9,.0f} "
                       f"{_mib(r.peak_rss):>10} {r.floor:>8.2f} {r.ratio:>6.1f}x {r.reference_total:>7.2f} "
                       f"{r.reference_ratio:>5.1f}x  {r.load_after[0]:.2f}")
    lines.append(f"x floor: total / the floor (DuckDB reading every landing file once); x ref: total / reference.sql "
                 f"(the same reading, typing, deduplication and labelling in plain SQL, stages "
                 f"{', '.join(REFERENCE_STAGES)})")
    return "\n".join(lines)


def scaling_lines(sizes: list[SizeResult]) -> str:
    """Time growth against data growth between consecutive sizes: an exponent <= 1 means doubling the data at most
    doubles the time."""
    lines = []
    for a, b in zip(sizes, sizes[1:]):
        data, t = b.raw_rows / a.raw_rows, b.total / a.total if a.total else math.inf
        exp = math.log(t) / math.log(data) if data > 1 and t > 0 else float("nan")
        lines.append(f"scaling {label(a.target_rows)} -> {label(b.target_rows)}: data x{data:.2f}, time x{t:.2f} "
                     f"(exponent {exp:.2f}; <= 1 means doubling the data at most doubles the time)")
    return "\n".join(lines)


def increment_table(incs: list[IncrementResult]) -> str:
    lines = [f"incremental cost of one new day (fastest of {len(incs[0].attempts) if incs else 0} attempts)",
             f"{'history':>8} {'history rows':>13} {'day rows':>9} {'daily s':>8} {'refresh s':>10} {'total s':>8}"
             f" {'events s':>9}  load avg (1m)"]
    for i in incs:
        lines.append(f"{i.history_days:>7}d {i.history_rows:>13,} {i.day_rows:>9,} {i.daily:>8.2f} "
                     f"{i.refresh:>10.2f} {i.total:>8.2f} {i.daily_event_seconds + i.refresh_event_seconds:>9.2f}"
                     f"  {i.load[0]:.2f}")
    if len(incs) > 1 and incs[0].total:
        a, b = incs[0], incs[-1]
        lines.append(f"ratio {b.history_days}d / {a.history_days}d: {b.total / a.total:.2f} "
                     f"(daily {b.daily / a.daily:.2f}, refresh {b.refresh / a.refresh:.2f}; 1.00 = the new day costs "
                     f"the same whatever the history)")
    return "\n".join(lines)
