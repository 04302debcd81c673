"""Run the pipeline's jobs in-process against a persistent Dagster instance (what `gtm-pipeline demo` does).

Runs are recorded in ``$DAGSTER_HOME`` (by default ``data/dagster_home``), so `dagster dev` started with the same
``DAGSTER_HOME`` shows the demo's materializations, checks and lineage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.config import Settings
from gtm_pipeline.errors import GtmPipelineError, RunFailed
from gtm_pipeline.landing import landing_days

# Where `make ui` serves the Dagster UI (a run's page is <UI_URL>/runs/<run id>).
UI_URL = "http://127.0.0.1:3000"
# Dagster's error for a step stopped by a failed blocking check (dagster/_core/execution/plan/execute_step.py).
_BLOCKING_CHECK_ERROR = "DagsterAssetCheckFailedError"


@dataclass(frozen=True)
class Blocked:
    """A blocking check that failed: it stopped its step, and what depends on that step, for these days."""

    asset: str                # "clean/opportunity"
    check: str                # "ranges_in_bounds"
    days: tuple[str, ...]     # the days it blocked (the check's blocked_days, else the run's partitions)

    def more(self) -> str | None:
        """The command that lists the rows behind the block, if the asset is a clean table."""
        stage, _, entity = self.asset.partition("/")
        if stage != keys.CLEAN or not entity:
            return None
        rule = {c: r for r, c in keys.RULE_CHECKS.items()}.get(self.check)
        return (f"gtm-pipeline quarantine list --entity {entity}" + (f" --rule {rule}" if rule else "")
                + (f" --day {self.days[0]}" if len(self.days) == 1 else ""))

    def describe(self) -> str:
        more = self.more()
        return (f"check {self.check} on {self.asset} blocked {_days_text(self.days)}"
                + (f"; the rows: '{more}'" if more else ""))


def _days_text(days: tuple[str, ...]) -> str:
    if not days:
        return "its partition"
    if len(days) == 1:
        return f"day {days[0]}"
    return f"days {', '.join(days)}" if len(days) <= 5 else f"{len(days)} days, {days[0]} .. {days[-1]}"


@dataclass
class RunOutcome:
    job: str
    success: bool
    run_id: str
    failed_steps: list[str]
    failed_checks: list[str]
    blocked: list[Blocked] = field(default_factory=list)
    # Failed steps other than those a blocking check stopped: step -> the root error's first line.
    step_errors: dict[str, str] = field(default_factory=dict)

    @property
    def only_blocked(self) -> bool:
        """Failed only because blocking checks stopped their steps: the data is held back, nothing is broken."""
        return not self.success and bool(self.blocked) and not self.step_errors

    @property
    def status(self) -> str:
        return "ok" if self.success else "blocked" if self.only_blocked else "failed"

    def problems(self) -> list[str]:
        """One line per blocking check and per failed step, naming asset, check or step, days and the next command."""
        lines = [f"blocked: {b.describe()}" for b in self.blocked]
        lines += [f"failed: step {step}: {err}" for step, err in self.step_errors.items()]
        if not self.success and not lines:
            lines.append("failed: the run failed outside its steps; see its log")
        return lines

    def where(self) -> str:
        return f"run {self.run_id} in the Dagster UI ('make ui', then {UI_URL}/runs/{self.run_id})"

    def failure(self, what: str) -> RunFailed:
        """The error a command raises for an unsuccessful run (the CLI exits 1); ``what`` names the run."""
        verb = "was blocked" if self.only_blocked else "failed"
        return RunFailed("\n  ".join([f"{what} {verb} (run {self.run_id}):", *self.problems(),
                                       f"more: {self.where()}"]))


# The instance configuration written into a new DAGSTER_HOME; storage is Dagster's local default (SQLite files under
# DAGSTER_HOME). deploy/postgres/dagster.yaml is the production counterpart with the same queue, monitoring and
# retries (docs/operations.md, "Dead runs").
DAGSTER_YAML = """\
# Written by gtm-pipeline when this folder was created; edit freely, it is not overwritten.
#
# Runs requested by sensors, schedules, declarative automation, backfills and the UI wait in the run queue that the
# daemon drains, one at a time: every step writes the same DuckDB file, which takes one writing process at a time
# (docs/operations.md). Runs executed in-process by the CLI (demo, run, refresh) do not go through the queue.
concurrency:
  runs:
    max_concurrent_runs: 1

# Dead runs are marked failed: with one run at a time, a run left "started" would hold the queue forever. The code
# server marks a run failed as soon as its worker process dies (kill -9, the OOM killer); run monitoring, in the
# daemon, covers what the code server cannot see: a run that never starts, a cancel that never completes, and a run
# whose worker died together with its code server (only max_runtime_seconds ends that one; raise it, or tag a run
# dagster/max_runtime_seconds, for a backfill longer than two hours). The local run launcher cannot resume a run.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 7200
  max_resume_run_attempts: 0
  poll_interval_seconds: 30

# A run whose worker crashed is re-executed once, from the step it died in (re-running a day replaces it: nothing
# is lost or doubled). A run that failed in a step is never retried: bad data, a blocking check or a bug fail the
# same way again (the repair sensor keeps its own bounded attempts). A DuckDB write lock held for longer than the
# warehouse resource waits is retried by the step itself (gtm_pipeline/defs/resources.py).
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false

telemetry:
  enabled: false
"""
# What earlier versions wrote: such a file is brought up to date (anything else is the operator's and left alone).
_EARLIER_DAGSTER_YAML = (
    "telemetry:\n  enabled: false\n",
    """\
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
""",
)


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
    failed_steps, step_errors = [], {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            failed_steps.append(ev.step_key)
            err = ev.step_failure_data.error if ev.step_failure_data else None
            if err is None or err.cls_name != _BLOCKING_CHECK_ERROR:
                step_errors[ev.step_key] = _root_error(err)
    evaluations = result.get_asset_check_evaluations()
    failed_checks = sorted({f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed})
    run_days = (partition_key,) if partition_key else _day_range(*partition_range) if partition_range else ()
    blocked = [Blocked(e.asset_key.to_user_string(), e.check_name, _blocked_days(e) or run_days)
               for e in evaluations if not e.passed and e.blocking and e.severity.value == "ERROR"]
    return RunOutcome(job=job_name, success=result.success, run_id=result.run_id, failed_steps=failed_steps,
                      failed_checks=failed_checks, blocked=sorted(blocked, key=lambda b: (b.asset, b.check)),
                      step_errors=step_errors)


def _day_range(first: str, last: str) -> tuple[str, ...]:
    from datetime import date, timedelta

    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return tuple((a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1))


def _blocked_days(evaluation) -> tuple[str, ...]:
    """The days a check says it blocked (the clean stage's range check reports ``blocked_days``), else its partition."""
    md = evaluation.metadata.get("blocked_days")
    days = getattr(md, "value", None)
    if isinstance(days, list) and days:
        return tuple(str(d) for d in days)
    return (evaluation.partition,) if evaluation.partition else ()


def _root_error(err) -> str:
    """The first line of the innermost cause of a step's error (Dagster wraps user errors in its own)."""
    if err is None:
        return "no error recorded; see the run's log"
    while err.cause is not None:
        err = err.cause
    # The message starts with the exception's qualified name ("_duckdb.CatalogException: Catalog Error: ...").
    lines = (err.message or "").strip().splitlines()
    return (lines[0] if lines else err.cls_name)[:300]


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
    cons = q("SELECT sum(records), sum(clean), sum(quarantined), sum(held), "
             "sum(rejected_ingest) + sum(rejected_clean), sum(lost) FROM ops.conservation")
    if cons and cons[0][0] is not None:
        r, c, qq, h, j, lost = (int(x or 0) for x in cons[0])
        lines.append(f"ledger:     {r:,} records = {c:,} clean + {qq:,} quarantined + {h:,} held + {j:,} rejected; "
                     f"lost: {lost}")
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
