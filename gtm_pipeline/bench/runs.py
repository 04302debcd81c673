"""The benchmark's subprocess side: each job runs in a fresh ``python -m gtm_pipeline.bench <job.json>`` so that its
peak memory is its own, and writes its result as JSON for the parent (`gtm_pipeline.bench.orchestrate`).

Jobs: ``generate`` (landing files), ``floor`` (DuckDB reading them once), ``reference`` (reference.sql over them),
``pipeline`` (the whole asset graph, stage by stage), ``increment`` (a history, then one new day) and ``retime``
(that new day again).
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import date
from pathlib import Path

# Imports of Dagster, pandas and the pipeline's stages are function-local: each job is its own subprocess, and its
# peak memory and times are the benchmark's figures, so a job loads only what it measures (`generate` and `floor`
# without Dagster's ~1 s and ~40 MB; `pipeline` loads it before timing, in `_start_pipeline_process`).
from gtm_pipeline.bench.config import REFERENCE_STAGES, SAMPLE_SECONDS, STAGES
from gtm_pipeline.bench.floor import job_floor
from gtm_pipeline.bench.reference import SETUP, run_reference
from gtm_pipeline.bench.sampling import SelfSampler, ru_maxrss
from gtm_pipeline.config import load_settings


def job_generate(job: dict) -> dict:
    from gtm_pipeline.generate import GenerateConfig, generate

    t0 = time.perf_counter()
    manifest = generate(Path(job["out"]), GenerateConfig(days=job["days"], seed=job["seed"],
                                                         start=date.fromisoformat(job["start"]),
                                                         scale=job["scale"]), progress=False)
    seconds = time.perf_counter() - t0
    by_day: dict[str, int] = {}
    for tables in manifest["row_counts"].values():
        for days in tables.values():
            for d, n in days.items():
                by_day[d] = by_day.get(d, 0) + n
    files = manifest["files"]
    return {"rows": int(manifest["totals"]["rows"]), "files": len(files),
            "bytes": sum(f["bytes"] for f in files.values()), "rows_by_day": by_day, "seconds": seconds}


def job_reference(job: dict) -> dict:
    """reference.sql over the landing files, into its own DuckDB file, with the pipeline's memory limit."""
    database = Path(job["database"])
    database.unlink(missing_ok=True)
    res = run_reference(Path(job["landing"]), database=str(database),
                        memory_limit=load_settings().duckdb_memory_limit)
    seconds = {s: res.seconds.get(s, 0.0) for s in REFERENCE_STAGES}
    seconds["ingest"] += res.seconds.get(SETUP, 0.0)  # creating the macros: milliseconds, part of reading
    return {"stages": seconds, "total": sum(seconds.values()), "counts": res.as_dict(), "ru_maxrss": ru_maxrss()}


def stage_selections(defs) -> dict[str, list]:
    """Asset keys of each stage: partitioned ingest; partitioned clean (its multi-assets also publish the
    quarantine tables); the conservation ledger (contracts); the metric layer; everything else (decisions)."""
    from gtm_pipeline import keys

    graph = defs.resolve_asset_graph()
    out: dict[str, list] = {s: [] for s in STAGES}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_materializable:
            continue
        group = node.group_name
        if node.is_partitioned:
            out["ingest" if group == keys.INGEST else "clean"].append(key)
        elif group == keys.CONTRACTS:
            out["contracts"].append(key)
        elif group == keys.METRICS:
            out["metrics"].append(key)
        else:
            out["decisions"].append(key)
    return out


def _quiet() -> dict:
    return {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


class EventClock:
    """Time spent storing Dagster events in the instance: every run, step, planned and per-partition
    materialization and check event goes through ``DagsterInstance.handle_new_event``, which writes it to the event
    log storage (SQLite under DAGSTER_HOME by default) with its index updates.

    Measurement only: wraps this instance's ``handle_new_event`` so a stage's wall time splits into Dagster's
    bookkeeping and the rest (asset bodies, mostly DuckDB)."""

    def __init__(self, instance):
        self.seconds = 0.0
        self.count = 0
        original = instance.handle_new_event

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
                self.count += 1

        instance.handle_new_event = timed


def run_stages(stages: tuple[str, ...], partition_range: tuple[str, str] | None) -> dict:
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.definitions import defs
    from gtm_pipeline.orchestration.runner import run_job

    sel = stage_selections(defs)
    instance = dg.DagsterInstance.get()
    clock = EventClock(instance)
    out: dict = {"stages": {}, "events": {}, "event_seconds": {}, "stage_peak_rss": {}, "failed_steps": [],
                 "step_errors": {}}
    with SelfSampler() as sampler:
        for stage in stages:
            sampler.reset()
            e0, n0 = clock.seconds, clock.count
            t0 = time.perf_counter()
            if sel[stage]:
                partitioned = stage in ("ingest", "clean")
                res = run_job(keys.DAILY_JOB if partitioned else keys.REFRESH_JOB,
                              partition_range=partition_range if partitioned else None,
                              asset_selection=sel[stage], run_config=_quiet(), instance=instance, defs=defs)
                out["failed_steps"] += res.failed_steps
                out["step_errors"].update(res.step_errors)
            out["stages"][stage] = time.perf_counter() - t0
            out["event_seconds"][stage] = clock.seconds - e0
            out["events"][stage] = clock.count - n0
            time.sleep(SAMPLE_SECONDS)
            out["stage_peak_rss"][stage] = sampler.reset()
    return out


def _start_pipeline_process() -> None:
    from gtm_pipeline.orchestration.runner import ensure_dagster_home

    ensure_dagster_home(load_settings())
    import dagster  # noqa: F401 - imported before timing: interpreter and library start-up are not pipeline work

    import gtm_pipeline.definitions  # noqa: F401 - likewise: loading the definitions is start-up, not a stage


def job_pipeline(job: dict) -> dict:
    _start_pipeline_process()
    out = run_stages(STAGES, (job["first"], job["last"]))
    return {**out, "clean_rows": clean_rows(), "ru_maxrss": ru_maxrss()}


def clean_rows() -> int:
    """Rows in the clean tables after a run: what the reference script's clean row count is held against. The
    entities' tables only: ``clean.<entity>_history`` holds the same records again, as versions."""
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.quarantine.snapshot import connect_reader
    from gtm_pipeline.warehouse import existing_tables

    settings = load_settings()
    entities = load_landing_spec(settings.contracts_dir).entities()
    with connect_reader(settings.duckdb_path) as con:
        tables = existing_tables(con, "clean")
        return sum(con.execute(f'SELECT count(*) FROM clean."{e}"').fetchall()[0][0] for e in entities if e in tables)


def job_increment(job: dict) -> dict:
    _start_pipeline_process()
    t0 = time.perf_counter()
    history = run_stages(STAGES, (job["first"], job["last"]))
    setup = time.perf_counter() - t0
    gen, landing, day = Path(job["generated"]), Path(job["landing"]), job["new_day"]
    for src in (p for p in gen.iterdir() if p.is_dir()):
        if (src / day).is_dir():
            shutil.copytree(src / day, landing / src.name / day)
    new_day = time_new_day(day)
    return {"setup": setup, **new_day, "step_errors": {**history["step_errors"], **new_day["step_errors"]}}


def time_new_day(day: str) -> dict:
    """``daily_ingest_job`` for ``day`` then ``refresh_job``, timed (re-running a day replaces it: idempotent)."""
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.definitions import defs
    from gtm_pipeline.orchestration.runner import run_job

    instance = dg.DagsterInstance.get()
    clock = EventClock(instance)
    t0 = time.perf_counter()
    daily = run_job(keys.DAILY_JOB, partition_range=(day, day), run_config=_quiet(), instance=instance, defs=defs)
    t1, e1 = time.perf_counter(), clock.seconds
    refresh = run_job(keys.REFRESH_JOB, run_config=_quiet(), instance=instance, defs=defs)
    t2 = time.perf_counter()
    return {"daily": t1 - t0, "refresh": t2 - t1, "daily_event_seconds": e1,
            "refresh_event_seconds": clock.seconds - e1,
            "daily_steps": step_seconds(instance, daily.run_id),
            "refresh_steps": step_seconds(instance, refresh.run_id),
            "step_errors": {**daily.step_errors, **refresh.step_errors}}


def job_retime(job: dict) -> dict:
    _start_pipeline_process()
    return time_new_day(job["new_day"])


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of each step of a run, from its event log (step start to success or failure), largest first."""
    starts: dict[str, float] = {}
    out: dict[str, float] = {}
    for rec in instance.all_logs(run_id):
        ev = rec.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            starts[ev.step_key] = rec.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in starts:
            out[ev.step_key] = round(rec.timestamp - starts[ev.step_key], 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


JOBS = {"generate": job_generate, "floor": job_floor, "reference": job_reference, "pipeline": job_pipeline,
        "increment": job_increment, "retime": job_retime}


def main(argv: list[str]) -> int:
    """``python -m gtm_pipeline.bench <job.json>``: run the job it names, write its result where it says."""
    job = json.loads(Path(argv[0]).read_text())
    result = JOBS[job["kind"]](job)
    Path(job["result"]).write_text(json.dumps(result, default=str))
    return 0
