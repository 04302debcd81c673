"""What the benchmark measures and how it is asked to: sizes, histories, the result records, and their parsing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from gtm_pipeline.errors import GtmPipelineError

# Raw rows per delivery day grow a little slower than the generator's scale (web traffic follows channel budgets):
# rows/day ~= ROWS_PER_DAY_AT_SCALE_1 * scale ** SCALE_EXPONENT, fitted on 90-day runs at scale 2.69 (1.01M rows) and
# 13.45 (4.14M rows). The benchmark prints the rows actually written.
ROWS_PER_DAY_AT_SCALE_1 = 4_681
SCALE_EXPONENT = 0.879
STAGES = ("ingest", "clean", "contracts", "metrics", "decisions")
# The stages the reference script (reference.sql) has a section for; its "setup" (macros) counts as ingest.
REFERENCE_STAGES = ("ingest", "clean", "contracts", "metrics")
DEFAULT_SIZES = (1_000_000, 5_000_000, 20_000_000)
QUICK_SIZES = (10_000, 20_000)
QUICK_DAYS = 3
QUICK_HISTORY = (2, 4)
QUICK_HISTORY_SCALE = 0.2
SAMPLE_SECONDS = 0.1
FLOOR_ROUNDS = 3       # reads of the landing files for the floor (the fastest counts)
INCREMENT_ROUNDS = 3   # timings of the new day per history (the first right after the history is materialized)

Echo = Callable[[str], None]


@dataclass
class SizeResult:
    target_rows: int
    days: int
    scale: float
    raw_rows: int = 0            # rows the generator wrote (every record of every landing file)
    files: int = 0
    landing_bytes: int = 0
    stages: dict[str, float] = field(default_factory=dict)   # stage -> seconds
    event_seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds storing Dagster events
    events: dict[str, int] = field(default_factory=dict)           # stage -> Dagster events stored
    stage_peak_rss: dict[str, int] = field(default_factory=dict)   # stage -> bytes (the pipeline process)
    total: float = 0.0
    rows_per_second: float = 0.0
    peak_rss: int = 0            # bytes, the pipeline subprocess tree
    floor: float = 0.0           # seconds, DuckDB reading every landing file once
    floor_rows: int = 0
    floor_peak_rss: int = 0
    ratio: float = 0.0           # total / floor
    reference: dict[str, float] = field(default_factory=dict)  # REFERENCE_STAGES -> seconds of reference.sql
    reference_total: float = 0.0
    reference_ratio: float = 0.0  # total / reference_total
    reference_peak_rss: int = 0
    reference_counts: dict = field(default_factory=dict)  # what the script found (clean, quarantined, duplicate rows)
    clean_rows: int = 0           # rows in the pipeline's clean tables after the run
    generate_seconds: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    failed_steps: list[str] = field(default_factory=list)
    step_errors: dict[str, str] = field(default_factory=dict)  # steps that broke (not a blocking check) -> error


@dataclass
class IncrementResult:
    history_days: int
    scale: float
    history_rows: int = 0
    day_rows: int = 0
    daily: float = 0.0           # daily_ingest_job for the new day
    refresh: float = 0.0         # refresh_job
    total: float = 0.0
    setup: float = 0.0           # materializing the history (not part of the figure)
    daily_event_seconds: float = 0.0   # of which storing Dagster events
    refresh_event_seconds: float = 0.0
    daily_steps: dict[str, float] = field(default_factory=dict)    # step -> seconds, from the run's event log
    refresh_steps: dict[str, float] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    new_day: str = ""
    attempts: list[dict] = field(default_factory=list)  # every timing of the new day (the fastest one counts)
    step_errors: dict[str, str] = field(default_factory=dict)  # steps that broke (not a blocking check) -> error


@dataclass
class BenchConfig:
    sizes: tuple[int, ...] = DEFAULT_SIZES
    days: int = 90
    history: tuple[int, ...] = (90, 365)
    history_scale: float = 1.0
    seed: int = 7
    out: Path | None = None
    keep: bool = False
    skip_sizes: bool = False
    skip_increment: bool = False
    increment_rounds: int = INCREMENT_ROUNDS


def scale_for(rows: int, days: int) -> float:
    """The generator scale that writes about ``rows`` raw rows over ``days`` days."""
    if rows <= 0 or days <= 0:
        raise GtmPipelineError(f"bench: sizes and days must be positive, got rows={rows}, days={days}")
    return round((rows / (ROWS_PER_DAY_AT_SCALE_1 * days)) ** (1 / SCALE_EXPONENT), 4)


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1e6,5e6,2e7' or '1M,5M,20M' -> (1000000, 5000000, 20000000)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        mult = 1
        if part[-1].lower() in "km":
            mult = 1_000 if part[-1].lower() == "k" else 1_000_000
            part = part[:-1]
        try:
            value = int(float(part) * mult)
        except ValueError as e:
            raise GtmPipelineError(f"--sizes: {part!r} is not a number of rows; use e.g. 1e6,5e6,2e7 or 1M,5M,20M") \
                from e
        if value < 1_000:
            raise GtmPipelineError(f"--sizes: {value} rows is too small to measure; use at least 1000")
        out.append(value)
    if not out:
        raise GtmPipelineError("--sizes: no size given; use e.g. 1e6,5e6,2e7")
    return tuple(out)


def parse_days_list(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise GtmPipelineError(f"--history: {text!r} must be day counts separated by commas, e.g. 90,365") from e
    if not out or any(d < 1 for d in out):
        raise GtmPipelineError(f"--history: {text!r} must be positive day counts, e.g. 90,365")
    return out


def label(rows: int) -> str:
    if rows >= 1_000_000:
        return f"{rows / 1e6:g}M"
    return f"{rows / 1e3:g}k"


def start_for(days: int, today: date | None = None) -> date:
    """First day such that ``days`` delivery days end before today (daily partitions exist only up to today)."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=days + 1)
