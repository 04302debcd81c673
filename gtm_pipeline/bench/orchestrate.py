"""The benchmark's parent process: plans the sizes and histories, starts one subprocess per measurement, samples its
memory, and prints the tables (`gtm_pipeline.bench.report`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gtm_pipeline.bench.config import (
    FLOOR_ROUNDS,
    BenchConfig,
    Echo,
    IncrementResult,
    SizeResult,
    label,
    scale_for,
    start_for,
)
from gtm_pipeline.bench.report import (
    fmt_load,
    increment_table,
    scaling_lines,
    size_table,
    summary_table,
)
from gtm_pipeline.bench.sampling import TreeSampler
from gtm_pipeline.config import load_settings
from gtm_pipeline.errors import GtmPipelineError, RunFailed


def _child_env(work: Path, start) -> dict[str, str]:
    env = dict(os.environ)
    data = work / "data"
    env.update({
        "GTM_PIPELINE_DATA_DIR": str(data),
        "GTM_PIPELINE_LANDING_DIR": str(work / "landing"),
        "GTM_PIPELINE_DUCKDB": str(data / "gtm.duckdb"),
        "DAGSTER_HOME": str(work / "dagster_home"),
    })
    if start is not None:
        env["GTM_PIPELINE_START_DATE"] = start.isoformat()
    for k in ("GTM_PIPELINE_ALERT_WEBHOOK_URL", "GTM_PIPELINE_SLACK_WEBHOOK_URL", "GTM_PIPELINE_SLO_HISTORY"):
        env.pop(k, None)  # a benchmark never posts alerts and keeps its SLO history in its own folder
    return env


def _run_child(job: dict, env: dict[str, str] | None, workdir: Path) -> tuple[dict, int]:
    """Run ``python -m gtm_pipeline.bench job.json`` and return (its result, the tree's sampled peak RSS)."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_file = workdir / f"job-{job['kind']}.json"
    result_file = workdir / f"result-{job['kind']}.json"
    result_file.unlink(missing_ok=True)
    job_file.write_text(json.dumps({**job, "result": str(result_file)}, default=str))
    log = workdir / f"log-{job['kind']}.txt"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gtm_pipeline.bench", str(job_file)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=str(workdir))
        with TreeSampler(proc.pid) as sampler:
            code = proc.wait()
    if code != 0 or not result_file.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise GtmPipelineError(f"bench: the {job['kind']} subprocess failed (exit {code}); its log is {log}:\n{tail}")
    return json.loads(result_file.read_text()), sampler.peak


def _generate(landing: Path, days: int, scale: float, seed: int, start, work: Path) -> dict:
    """Generate into ``landing`` unless it already holds exactly this config (with --keep)."""
    cfg = {"days": days, "scale": float(scale), "seed": seed, "start": start.isoformat()}
    marker = landing / "_bench_config.json"
    if marker.exists() and json.loads(marker.read_text()).get("config") == cfg:
        return json.loads(marker.read_text())
    shutil.rmtree(landing, ignore_errors=True)
    res, _ = _run_child({"kind": "generate", "out": str(landing), **cfg}, None, work)
    marker.write_text(json.dumps({"config": cfg, **res}))
    return {"config": cfg, **res}


def _size_run(cfg: BenchConfig, root: Path, rows: int, days: int, echo: Echo) -> SizeResult:
    scale = scale_for(rows, days)
    start = start_for(days)
    work = root / f"size-{label(rows)}"
    res = SizeResult(target_rows=rows, days=days, scale=scale)
    echo(f"\n== {label(rows)} raw rows: {days} days at scale {scale:g} ({work})")
    gen = _generate(work / "landing", days, scale, cfg.seed, start, work)
    res.raw_rows, res.files, res.landing_bytes = gen["rows"], gen["files"], gen["bytes"]
    res.generate_seconds = gen["seconds"]
    echo(f"   landing: {res.raw_rows:,} rows in {res.files:,} files, {res.landing_bytes / 2**20:,.0f} MiB "
         f"(generated in {res.generate_seconds:.0f}s)")
    _reset_warehouse(work)
    res.load_before = os.getloadavg()
    floor, floor_peak = _run_child({"kind": "floor", "landing": str(work / "landing")}, None, work)
    res.floor, res.floor_rows = floor["seconds"], floor["rows"]
    res.floor_peak_rss = max(floor_peak, floor["ru_maxrss"])
    echo(f"   floor: DuckDB read all {res.files:,} files in {res.floor:.2f}s, best of {FLOOR_ROUNDS} "
         f"({res.floor_rows:,} rows)")
    ref, ref_peak = _run_child({"kind": "reference", "landing": str(work / "landing"),
                                "database": str(work / "reference.duckdb")}, _child_env(work, start), work)
    res.reference, res.reference_total, res.reference_counts = ref["stages"], ref["total"], ref["counts"]
    res.reference_peak_rss = max(ref_peak, ref["ru_maxrss"])
    (work / "reference.duckdb").unlink(missing_ok=True)
    echo(f"   reference: reference.sql in {res.reference_total:.2f}s ({ref['counts']['clean_rows']:,} clean rows)")
    pipe, peak = _run_child({"kind": "pipeline", "first": start.isoformat(),
                             "last": (start + timedelta(days=days - 1)).isoformat()},
                            _child_env(work, start), work)
    res.load_after = os.getloadavg()
    res.stages = pipe["stages"]
    res.failed_steps = pipe["failed_steps"]
    res.step_errors = pipe["step_errors"]
    res.event_seconds, res.events, res.stage_peak_rss = pipe["event_seconds"], pipe["events"], pipe["stage_peak_rss"]
    res.clean_rows = pipe["clean_rows"]
    res.total = sum(res.stages.values())
    res.rows_per_second = res.raw_rows / res.total if res.total else 0.0
    res.peak_rss = max(peak, pipe["ru_maxrss"], *res.stage_peak_rss.values())
    res.ratio = res.total / res.floor if res.floor else math.inf
    res.reference_ratio = res.total / res.reference_total if res.reference_total else math.inf
    echo(size_table(res))
    if not cfg.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def _reset_warehouse(work: Path) -> None:
    for p in (work / "data", work / "dagster_home"):
        shutil.rmtree(p, ignore_errors=True)
    (work / "dagster_home").mkdir(parents=True)
    (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def _increment_run(cfg: BenchConfig, root: Path, history: int, echo: Echo) -> IncrementResult:
    start = start_for(history + 1)
    work = root / f"increment-{history}d"
    res = IncrementResult(history_days=history, scale=cfg.history_scale)
    echo(f"\n== one new day on top of {history} days of history (scale {cfg.history_scale:g}, {work})")
    gen_dir = work / "generated"
    gen = _generate(gen_dir, history + 1, cfg.history_scale, cfg.seed, start, work)
    _reset_warehouse(work)
    landing = work / "landing"
    shutil.rmtree(landing, ignore_errors=True)
    new_day = (start + timedelta(days=history)).isoformat()
    for src in (p for p in gen_dir.iterdir() if p.is_dir()):
        for d in (p for p in src.iterdir() if p.is_dir() and p.name != new_day):
            shutil.copytree(d, landing / src.name / d.name)
    res.day_rows = gen["rows_by_day"].get(new_day, 0)
    res.history_rows = gen["rows"] - res.day_rows
    out, _ = _run_child({"kind": "increment", "first": start.isoformat(),
                         "last": (start + timedelta(days=history - 1)).isoformat(), "new_day": new_day,
                         "generated": str(gen_dir), "landing": str(landing)},
                        _child_env(work, start), work)
    res.setup = out["setup"]
    res.new_day = new_day
    echo(f"   history {res.history_rows:,} rows materialized in {res.setup:.1f}s (not counted); new day {new_day}: "
         f"{res.day_rows:,} rows")
    _record_attempt(res, out, echo)
    return res


def _record_attempt(res: IncrementResult, out: dict, echo: Echo) -> None:
    """Keep the fastest attempt: the one least disturbed by other work on the machine."""
    total = out["daily"] + out["refresh"]
    load = os.getloadavg()
    res.step_errors.update(out.get("step_errors", {}))
    res.attempts.append({"total": round(total, 3), "load": load[0]})
    echo(f"   new day ({res.history_days}d): daily_ingest_job {out['daily']:.2f}s + refresh_job {out['refresh']:.2f}s "
         f"= {total:.2f}s, load average {fmt_load(load)}  (largest refresh steps: "
         + ", ".join(f"{k} {v:.2f}s" for k, v in list(out["refresh_steps"].items())[:3]) + ")")
    if res.total and res.total <= total:
        return
    res.daily, res.refresh, res.total, res.load = out["daily"], out["refresh"], total, load
    res.daily_steps, res.refresh_steps = out["daily_steps"], out["refresh_steps"]
    res.daily_event_seconds, res.refresh_event_seconds = out["daily_event_seconds"], out["refresh_event_seconds"]


def _retime(root: Path, res: IncrementResult, echo: Echo) -> None:
    work = root / f"increment-{res.history_days}d"
    out, _ = _run_child({"kind": "retime", "new_day": res.new_day},
                        _child_env(work, start_for(res.history_days + 1)), work)
    _record_attempt(res, out, echo)


def run_bench(cfg: BenchConfig, echo: Echo = print) -> dict:
    """Run the benchmark; print tables through ``echo``; return (and write) the JSON result."""
    root = Path(cfg.out) if cfg.out else load_settings().data_dir / "bench"
    root.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    echo(f"gtm-pipeline bench: {os.cpu_count()} cores, load average {fmt_load(os.getloadavg())}; "
         f"work folder {root}")
    sizes = [] if cfg.skip_sizes else [_size_run(cfg, root, rows, cfg.days, echo) for rows in cfg.sizes]
    increments: list[IncrementResult] = []
    if not cfg.skip_increment:
        for h in cfg.history:
            increments.append(_increment_run(cfg, root, h, echo))
        # Then the same new day again on each history, interleaved, so every history meets the same load; the
        # fastest attempt counts (re-running a day replaces it).
        echo(f"\n== the new day again, {cfg.increment_rounds - 1} more round(s), histories interleaved")
        for _ in range(cfg.increment_rounds - 1):
            for inc in increments:
                _retime(root, inc, echo)
        if not cfg.keep:
            for inc in increments:
                shutil.rmtree(root / f"increment-{inc.history_days}d", ignore_errors=True)
    echo("")
    if sizes:
        echo(summary_table(sizes))
        if len(sizes) > 1:
            echo(scaling_lines(sizes))
    if increments:
        echo(increment_table(increments))
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "config": {**asdict(cfg), "out": str(root)},
        "sizes": [asdict(s) for s in sizes],
        "increments": [asdict(i) for i in increments],
        "increment_ratio": (increments[-1].total / increments[0].total
                            if len(increments) > 1 and increments[0].total else None),
    }
    result_file = root / "results.json"
    result_file.write_text(json.dumps(result, indent=2, default=str) + "\n")
    echo(f"\nresults: {result_file}")
    broken = bench_failures(sizes, increments)
    if broken:
        raise RunFailed("bench: steps broke (not a blocking check), so the figures do not measure the whole "
                        "pipeline:\n  " + "\n  ".join(broken) + "\n  more: run again with --keep to keep the runs' "
                        "logs and Dagster instance in the work folder")
    return result


def bench_failures(sizes: list[SizeResult], increments: list[IncrementResult]) -> list[str]:
    """One line per step that broke in a measured run; a blocking check's failed step is the data's finding."""
    out = [f"{label(s.target_rows)}: step {step}: {err}" for s in sizes for step, err in s.step_errors.items()]
    return out + [f"new day on {i.history_days}d: step {step}: {err}" for i in increments
                  for step, err in i.step_errors.items()]
