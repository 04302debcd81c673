"""Run the pipeline's jobs in-process against a persistent Dagster instance (what `gtm-pipeline demo` does).

Runs are recorded in ``$DAGSTER_HOME`` (by default ``data/dagster_home``), so `dagster dev` started with the same
``DAGSTER_HOME`` shows the demo's materializations, checks and lineage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from gtm_pipeline.config import Settings
from gtm_pipeline.errors import GtmPipelineError
from gtm_pipeline.landing import landing_days


@dataclass
class RunOutcome:
    job: str
    success: bool
    run_id: str
    failed_steps: list[str]
    failed_checks: list[str]


# The instance configuration written into a new DAGSTER_HOME; storage is Dagster's local default (SQLite files under
# DAGSTER_HOME). deploy/postgres/dagster.yaml is the production counterpart with the same run queue.
DAGSTER_YAML = """\
# Written by gtm-pipeline when this folder was created; edit freely, it is not overwritten.
#
# Runs requested by sensors, schedules, declarative automation, backfills and the UI wait in the run queue that the
# daemon drains, one at a time: every step writes the same DuckDB file, which takes one writing process at a time
# (docs/operations.md). Runs executed in-process by the CLI (demo, run, refresh) do not go through the queue.
concurrency:
  runs:
    max_concurrent_runs: 1

telemetry:
  enabled: false
"""
# What earlier versions wrote: such a file is brought up to date (anything else is the operator's and left alone).
_EARLIER_DAGSTER_YAML = ("telemetry:\n  enabled: false\n",)


def ensure_dagster_home(settings: Settings) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    cfg = home / "dagster.yaml"
    if not cfg.exists() or cfg.read_text() in _EARLIER_DAGSTER_YAML:
        cfg.write_text(DAGSTER_YAML)
    return home


def run_job(job_name: str, *, partition_range: tuple[str, str] | None = None, partition_key: str | None = None,
            run_config: dict | None = None, instance=None, defs=None, asset_selection: list | None = None,
            tags: dict[str, str] | None = None) -> RunOutcome:
    """Execute a job in-process; ``asset_selection`` runs a subset of its assets, ``tags`` are added to the run."""
    import dagster as dg

    if defs is None:
        from gtm_pipeline.definitions import defs
    job = defs.resolve_job_def(job_name)
    tags = dict(tags or {})
    if partition_range:
        tags.update({"dagster/asset_partition_range_start": partition_range[0],
                     "dagster/asset_partition_range_end": partition_range[1]})
    instance = instance or dg.DagsterInstance.get()
    result = job.execute_in_process(instance=instance, tags=tags, partition_key=partition_key, run_config=run_config,
                                    raise_on_error=False, asset_selection=asset_selection)
    failed_steps = [ev.step_key for ev in result.all_events if ev.event_type_value == "STEP_FAILURE"]
    failed_checks = sorted({f"{e.asset_key.to_user_string()}:{e.check_name}"
                            for e in result.get_asset_check_evaluations() if not e.passed})
    return RunOutcome(job=job_name, success=result.success, run_id=result.run_id, failed_steps=failed_steps,
                      failed_checks=failed_checks)


def landing_range(settings: Settings) -> tuple[str, str]:
    days = landing_days(settings.landing_dir)
    if not days:
        raise GtmPipelineError(f"{settings.landing_dir}: no landing files found. Generate some with "
                               f"'gtm-pipeline generate --out {settings.landing_dir}' or import your exports with "
                               f"'gtm-pipeline import'.")
    if days[0] < settings.start_date:
        raise GtmPipelineError(
            f"{settings.landing_dir}: files start on {days[0]}, before the first partition {settings.start_date}. "
            f"Set GTM_PIPELINE_START_DATE={days[0]} (before starting Dagster) and run again.")
    return days[0], days[-1]


def summary(con: duckdb.DuckDBPyConnection) -> str:
    """What landed where, for the demo's closing print."""

    def q(sql: str):
        try:
            return con.execute(sql).fetchall()
        except duckdb.Error:
            return []

    lines = []
    raw = q("""SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'
               AND table_name NOT IN ('rejects', 'schema_drift') ORDER BY 1""")
    total_raw = 0
    for (t,) in raw:
        total_raw += q(f"SELECT count(*) FROM raw.{t}")[0][0]
    rej = dict(q("SELECT stage, count(*) FROM raw.rejects GROUP BY 1"))
    lines.append(f"raw:        {total_raw:>9,} rows in {len(raw)} tables; rejects: {rej.get('ingest', 0):,} unparseable, "
                 f"{rej.get('clean', 0):,} duplicates (raw.rejects)")
    clean = q("SELECT table_name FROM information_schema.tables WHERE table_schema = 'clean' ORDER BY 1")
    parts = []
    for (t,) in clean:
        parts.append(f"{t}={q(f'SELECT count(*) FROM clean.{t}')[0][0]:,}")
    lines.append("clean:      " + ", ".join(parts))
    quarantine = q("SELECT table_name FROM information_schema.tables WHERE table_schema = 'quarantine' ORDER BY 1")
    qparts = []
    for (t,) in quarantine:
        n = q(f"SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'held') FROM quarantine.{t}")
        if n and (n[0][0] or n[0][1]):
            qparts.append(f"{t}={n[0][0]:,}" + (f" (+{n[0][1]:,} held)" if n[0][1] else ""))
    lines.append("quarantine: " + (", ".join(qparts) or "empty"))
    blocked = q("SELECT asset_key, title FROM ops.incidents WHERE status IN ('open', 'acknowledged') AND "
                "(rule = 'range' OR dedup_key LIKE 'contract:%:block_publish:%') ORDER BY 1")
    for _, title in blocked:
        lines.append(f"blocked:    {title}")
    inc = q("SELECT severity, count(*) FROM ops.incidents WHERE status IN ('open', 'acknowledged') "
            "GROUP BY 1 ORDER BY 1")
    lines.append("incidents:  " + (", ".join(f"{s}={n}" for s, n in inc) or "none open") + " (ops.incidents)")
    cons = q("SELECT sum(records), sum(clean), sum(quarantined), sum(rejected_ingest) + sum(rejected_clean), "
             "sum(lost) FROM ops.conservation")
    if cons and cons[0][0] is not None:
        r, c, qq, j, lost = (int(x) for x in cons[0])
        lines.append(f"ledger:     {r:,} records = {c:,} clean + {qq:,} quarantined/held + {j:,} rejected; lost: {lost}")
    metrics = q("SELECT table_name FROM information_schema.tables WHERE table_schema = 'metrics' ORDER BY 1")
    if metrics:
        lines.append(f"metrics:    {len(metrics)} tables in schema metrics")
    proposals = q("SELECT node, chosen_action FROM decisions.log WHERE event = 'proposed' ORDER BY entry_id")
    if proposals:
        lines.append(f"decisions:  {len(proposals)} proposal(s) in the decision log (gtm-pipeline decisions list):")
        lines.extend(f"            {node}: {action}" for node, action in proposals)
    elif q("SELECT 1 FROM information_schema.tables WHERE table_schema = 'decisions' AND table_name = 'log'"):
        lines.append("decisions:  no proposal (the thresholds imply none, or a pre-check failed: see the run's log)")
    return "\n".join(lines)
