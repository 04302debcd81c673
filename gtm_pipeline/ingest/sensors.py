"""Ingest stage sensor: new or changed delivery days in the landing folder request `daily_ingest_job` runs.

A day's fingerprint is the sha256 of (source, file name, size, mtime) of every file under
``<landing>/<source>/<day>/``; the cursor keeps the last fingerprint seen per day. A run is requested per contiguous
range of new or changed days (one run for a range: the ingest and clean assets have a single-run backfill policy),
with ``run_key`` = the range's fingerprint, so a tick evaluated twice never launches a second run.

With no cursor yet (first tick after a deploy, or after `gtm-pipeline demo`), days whose raw partitions are already
materialized in the instance count as seen: starting the UI after the demo does not re-ingest 90 days.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from gtm_pipeline import keys
from gtm_pipeline.config import load_settings
from gtm_pipeline.ingest.landing import landing_days, load_landing_spec
from gtm_pipeline.orchestration.partitions import daily_partitions
from gtm_pipeline.orchestration.resources import GtmProject

LANDING_SENSOR = keys.LANDING_SENSOR
DEFAULT_INTERVAL_SECONDS = 60


def day_fingerprints(landing_dir: Path, sources: list[str]) -> dict[str, str]:
    """day -> short sha256 over the (source, file, size, mtime_ns) of every file delivered that day."""
    out: dict[str, str] = {}
    for day in landing_days(landing_dir):
        h = hashlib.sha256()
        for source in sorted(sources):
            ddir = landing_dir / source / day
            if not ddir.is_dir():
                continue
            for f in sorted(ddir.iterdir()):
                if f.is_file():
                    st = f.stat()
                    h.update(f"{source}/{f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        out[day] = h.hexdigest()[:16]
    return out


def _ranges(days: list[str], all_keys: Sequence[str]) -> list[list[str]]:
    """Split sorted partition keys into runs of consecutive partitions."""
    pos = {k: i for i, k in enumerate(all_keys)}
    groups: list[list[str]] = []
    for d in days:
        if groups and pos[d] == pos[groups[-1][-1]] + 1:
            groups[-1].append(d)
        else:
            groups.append([d])
    return groups


def _already_ingested(instance: dg.DagsterInstance, landing_dir: Path, sources: list[str]) -> set[str]:
    """Days whose every delivered source has its raw partition materialized (read from Dagster's event log)."""
    materialized = {s: set(instance.get_materialized_partitions(keys.raw_key(s))) for s in sources}
    done = set()
    for day in landing_days(landing_dir):
        delivered = [s for s in sources if (landing_dir / s / day).is_dir()]
        if delivered and all(day in materialized[s] for s in delivered):
            done.add(day)
    return done


@dg.sensor(
    name=LANDING_SENSOR,
    job_name=keys.DAILY_JOB,
    minimum_interval_seconds=load_settings().sensor_interval_seconds or DEFAULT_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Watches the landing folder (<landing>/<source>/<YYYY-MM-DD>/) and requests one daily_ingest_job run per "
        "contiguous range of new or changed delivery days (fingerprint = file names, sizes and mtimes; run_key = "
        "fingerprint, so a day is never ingested twice for the same files). Skips, saying why, when nothing is new "
        "or when files fall outside the daily partitions (set GTM_PIPELINE_START_DATE for older exports)."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, project: GtmProject):
    landing = project.landing_path
    sources = sorted(load_landing_spec(project.contracts_path).sources)
    current = day_fingerprints(landing, sources)
    if not current:
        return dg.SkipReason(f"no delivery days in {landing} yet: run 'gtm-pipeline generate' or "
                             f"'gtm-pipeline import' to land files")
    if context.cursor:
        seen: dict[str, str] = json.loads(context.cursor)
    else:
        done = _already_ingested(context.instance, landing, sources)
        seen = {d: fp for d, fp in current.items() if d in done}
        if done:
            context.log.info(f"first tick: {len(done)} day(s) already materialized in this instance count as seen")
    changed = sorted(d for d, fp in current.items() if seen.get(d) != fp)
    if not changed:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"no new or changed delivery days in {landing} ({len(current)} day(s) watched, "
                                      f"last {max(current)})"),
            cursor=json.dumps(current, sort_keys=True))
    all_keys = daily_partitions.get_partition_keys()
    valid = set(all_keys)
    outside = [d for d in changed if d not in valid]
    inside = [d for d in changed if d in valid]
    new_cursor = dict(seen)
    run_requests = []
    for group in _ranges(inside, all_keys):
        fp = hashlib.sha256("".join(f"{d}={current[d]};" for d in group).encode()).hexdigest()[:16]
        run_requests.append(dg.RunRequest(
            run_key=f"landing:{group[0]}..{group[-1]}:{fp}",
            tags={"dagster/asset_partition_range_start": group[0],
                  "dagster/asset_partition_range_end": group[-1],
                  "gtm/trigger": LANDING_SENSOR},
        ))
        new_cursor.update({d: current[d] for d in group})
    # Days outside the partitions are remembered too: they are reported once, not on every tick.
    new_cursor.update({d: current[d] for d in outside})
    note = None
    if outside:
        note = (f"{len(outside)} delivery day(s) outside the daily partitions ({outside[0]} .. {outside[-1]}; "
                f"partitions start {all_keys[0] if all_keys else '?'}): set GTM_PIPELINE_START_DATE={outside[0]} "
                f"before starting Dagster to ingest them")
        context.log.warning(note)
    if not run_requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(note), cursor=json.dumps(new_cursor, sort_keys=True))
    context.log.info("requesting " + ", ".join(
        f"{r.tags['dagster/asset_partition_range_start']}..{r.tags['dagster/asset_partition_range_end']}"
        for r in run_requests))
    return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(new_cursor, sort_keys=True))
