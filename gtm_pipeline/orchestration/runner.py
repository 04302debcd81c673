"""Run the pipeline's jobs in-process against a persistent Dagster instance (what `gtm-pipeline demo` does).

Runs are recorded in ``$DAGSTER_HOME`` (by default ``data/dagster_home``), so `dagster dev` started with the same
``DAGSTER_HOME`` shows the demo's materializations, checks and lineage.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb

from gtm_pipeline import keys
from gtm_pipeline.config import Settings
from gtm_pipeline.datatime import BLOCKED, blocked_text, quarantine_command
from gtm_pipeline.errors import GtmPipelineError, RunFailed
from gtm_pipeline.ingest.landing import landing_days
from gtm_pipeline.warehouse import existing_tables, table_exists

log = logging.getLogger(__name__)

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
    rows: int | None = None   # the rows out of contract behind it (the check's violations), when known

    @property
    def rule(self) -> str | None:
        return {c: r for r, c in keys.RULE_CHECKS.items()}.get(self.check)

    def more(self) -> str | None:
        """The command that lists the rows behind the block, if the asset is a clean table."""
        return quarantine_command(self.asset, self.days, self.rule)

    def describe(self) -> str:
        return blocked_text(self.asset, self.days, check=self.check, rule=self.rule, rows=self.rows)


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
    # What the run's steps logged at WARNING or above, (step, message): a decision node's reason for proposing
    # nothing, a metric held back. The console log is quiet by default, so commands print what explains them.
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def only_blocked(self) -> bool:
        """Failed only because blocking checks stopped their steps: the data is held back, nothing is broken."""
        return not self.success and bool(self.blocked) and not self.step_errors

    @property
    def status(self) -> str:
        return "ok" if self.success else "blocked" if self.only_blocked else "failed"

    def problems(self) -> list[str]:
        """One line per blocking check and per failed step, naming asset, check or step, days and the next command."""
        lines = [b.describe() for b in self.blocked]
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
# warehouse resource waits is retried by the step itself (gtm_pipeline/orchestration/resources.py).
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false

telemetry:
  enabled: false
"""
_WITHOUT_POOLED_EVENTS = DAGSTER_YAML
DAGSTER_YAML = DAGSTER_YAML.replace("telemetry:\n", """\
# Events go to the same SQLite files and tables as Dagster's default, through a storage class that keeps its
# connections open (gtm_pipeline/orchestration/instance_storage.py): five times faster to write, which a 90-day
# build feels.
event_log_storage:
  module: gtm_pipeline.orchestration.instance_storage
  class: PooledSqliteEventLogStorage

telemetry:
""")
# What earlier versions wrote: such a file is brought up to date (anything else is the operator's and left alone).
_EARLIER_DAGSTER_YAML = (
    _WITHOUT_POOLED_EVENTS,
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


class RunWatcher(Protocol):
    """Follows an in-process run as it goes (the CLI's progress bar); the runner calls it from the run's thread."""

    def begin(self, job: str, steps: int) -> None: ...
    def step_started(self, step: str) -> None: ...
    def step_done(self, step: str) -> None: ...
    def message(self, step: str | None, text: str) -> None: ...
    def end(self) -> None: ...


# Dagster events after which a step runs no more in this run.
_STEP_DONE = frozenset({"STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"})


def run_job(job_name: str, *, partition_range: tuple[str, str] | None = None, partition_key: str | None = None,
            run_config: dict | None = None, instance=None, defs=None, asset_selection: list | None = None,
            tags: dict[str, str] | None = None, watcher: RunWatcher | None = None) -> RunOutcome:
    """Execute a job in-process; ``asset_selection`` runs a subset of its assets, ``tags`` are added to the run,
    ``watcher`` follows its steps and log messages as they happen."""
    import dagster as dg

    if defs is None:
        # Local: the CLI imports this module for its light helpers (ensure_dagster_home, summary); the definitions
        # load every asset, pandas included (~1.5 s more), and only a run needs them.
        from gtm_pipeline.definitions import defs
    job = defs.resolve_job_def(job_name)
    tags = dict(tags or {})
    if partition_range:
        tags.update({"dagster/asset_partition_range_start": partition_range[0],
                     "dagster/asset_partition_range_end": partition_range[1]})
    instance = instance or dg.DagsterInstance.get()
    # The run id is chosen here so that the listener is in place before the run's first event.
    run_id = str(uuid.uuid4())
    notes: list[tuple[str, str]] = []
    instance.add_event_listener(run_id, _listener(notes, watcher))
    planned = job.get_subset(asset_selection=set(asset_selection)) if asset_selection else job
    steps = len(planned.graph.node_dict)
    log.info("%s: run %s starts, %d step(s)%s", job_name, run_id, steps,
             f", days {partition_range[0]}..{partition_range[1]}" if partition_range else "")
    if watcher is not None:
        watcher.begin(job_name, steps)
    try:
        result = job.execute_in_process(instance=instance, tags=tags, partition_key=partition_key,
                                        run_config=run_config, raise_on_error=False, run_id=run_id,
                                        asset_selection=asset_selection)
    finally:
        if watcher is not None:
            watcher.end()
    failed_steps, step_errors = [], {}
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            failed_steps.append(ev.step_key)
            err = ev.step_failure_data.error if ev.step_failure_data else None
            if err is None or err.cls_name != _BLOCKING_CHECK_ERROR:
                step_errors[ev.step_key] = _root_error(err)
    log.info("%s: run %s %s", job_name, run_id, "succeeded" if result.success else "failed")
    evaluations = result.get_asset_check_evaluations()
    failed_checks = sorted({f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed})
    run_days = (partition_key,) if partition_key else _day_range(*partition_range) if partition_range else ()
    blocked = [Blocked(e.asset_key.to_user_string(), e.check_name, _blocked_days(e) or run_days, _violations(e))
               for e in evaluations if not e.passed and e.blocking and e.severity.value == "ERROR"]
    return RunOutcome(job=job_name, success=result.success, run_id=result.run_id, failed_steps=failed_steps,
                      failed_checks=failed_checks, blocked=sorted(blocked, key=lambda b: (b.asset, b.check)),
                      step_errors=step_errors, notes=notes)


def _listener(notes: list[tuple[str, str]], watcher: RunWatcher | None):
    """The instance's callback for every event of the run: keeps the steps' warnings and feeds the watcher."""
    state = {"watcher": watcher}

    def on_event(entry) -> None:
        ev = entry.dagster_event
        if ev is None and entry.level >= logging.WARNING:
            notes.append((entry.step_key or "", entry.user_message))
        w = state["watcher"]
        if w is None:
            return
        try:
            if ev is None:
                w.message(entry.step_key, entry.user_message)
            elif ev.event_type_value == "STEP_START":
                w.step_started(entry.step_key)
            elif ev.event_type_value in _STEP_DONE:
                w.step_done(entry.step_key)
        except Exception:  # noqa: BLE001 -- a broken progress display must never fail the run it shows
            state["watcher"] = None

    return on_event


def _violations(evaluation) -> int | None:
    md = evaluation.metadata.get("violations")
    value = getattr(md, "value", md)
    return int(value) if isinstance(value, int) else None


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


def blocked_in_warehouse(con: duckdb.DuckDBPyConnection) -> list[Blocked]:
    """The days whose publication is blocked now (``ops.partition_status``), one per asset, day and blocking check,
    with the rows out of contract behind each (the quarantined rows of a block-publish rule; the day's other rows
    wait as 'held' and are not counted)."""
    # Local: the entity contracts load pandas (~1 s) into every command that imports this module.
    from gtm_pipeline.clean.contract import BLOCK_PUBLISH

    days = con.execute("SELECT asset_key, strftime(partition_key, '%Y-%m-%d') FROM ops.partition_status "
                       "WHERE status = ? ORDER BY 1, 2", [BLOCKED]).fetchall()
    tables = existing_tables(con, "quarantine")
    out = []
    for asset, day in days:
        entity = asset.partition("/")[2]
        rows = con.execute(
            f"SELECT split_part(rule, ':', 1), count(*) FROM quarantine.{entity} WHERE _partition = ?::DATE "
            "AND break_action = ? AND status <> 'held' GROUP BY 1 ORDER BY 1", [day, BLOCK_PUBLISH]).fetchall() \
            if entity in tables else []
        out += [Blocked(asset, keys.RULE_CHECKS.get(kind, kind), (day,), n) for kind, n in rows] or [
            Blocked(asset, "", (day,))]
    return out


def _scores_line(q) -> str:
    """The demo's line on lead scoring: how many leads per fit grade, and the model that scored them."""
    grades = q("SELECT fit_grade, count(*) FROM metrics.lead_score GROUP BY 1 ORDER BY 1")
    version = q("SELECT min(model_version) FROM metrics.lead_score")
    top = q("SELECT grade, count(*) FROM metrics.lead_score WHERE grade IN ('A1', 'A2', 'B1') GROUP BY 1 ORDER BY 1")
    return (f"scores:     {sum(n for _, n in grades):,} leads scored by {version[0][0] if version else '?'}: fit "
            + ", ".join(f"{g} {n:,}" for g, n in grades)
            + (f"; ready for sales ({', '.join(f'{g} {n:,}' for g, n in top)})" if top else "")
            + " (gtm-pipeline scoring explain LEAD_ID)")


def summary(con: duckdb.DuckDBPyConnection) -> str:
    """What landed where, for the demo's closing print."""

    def q(sql: str):
        try:
            return con.execute(sql).fetchall()
        except duckdb.Error:
            return []

    lines = []
    raw = [(t,) for t in sorted(existing_tables(con, "raw") - {"rejects", "schema_drift"})]
    total_raw = 0
    for (t,) in raw:
        total_raw += q(f"SELECT count(*) FROM raw.{t}")[0][0]
    rej = dict(q("SELECT stage, count(*) FROM raw.rejects GROUP BY 1"))
    lines.append(f"raw:        {total_raw:>9,} rows in {len(raw)} tables; "
                 f"rejects: {rej.get('ingest', 0):,} unparseable, {rej.get('clean', 0):,} duplicates (raw.rejects)")
    clean = sorted(existing_tables(con, "clean"))
    histories = [t for t in clean if t.endswith("_history") and t.removesuffix("_history") in clean]
    parts = [f"{t}={q(f'SELECT count(*) FROM clean.{t}')[0][0]:,}" for t in clean if t not in histories]
    lines.append("clean:      " + ", ".join(parts))
    if histories:
        # clean.<entity>_history repeats the current rows as versions: only the superseded ones are news.
        old = sum(q(f"SELECT count(*) FROM clean.{t} WHERE valid_to IS NOT NULL")[0][0] for t in histories)
        if old:
            lines.append(f"history:    {old:,} superseded version(s): a later delivery updated the record "
                         f"(clean.<entity>_history)")
    quarantine = [(t,) for t in sorted(existing_tables(con, "quarantine"))]
    qparts = []
    for (t,) in quarantine:
        n = q("SELECT count(*) FILTER (WHERE status = 'open'), count(*) FILTER (WHERE status = 'held') "
              f"FROM quarantine.{t}")
        if n and (n[0][0] or n[0][1]):
            qparts.append(f"{t}={n[0][0]:,}" + (f" (+{n[0][1]:,} held)" if n[0][1] else ""))
    lines.append("quarantine: " + (", ".join(qparts) or "empty"))
    try:
        lines.extend(f"blocked:    {b.describe()}" for b in blocked_in_warehouse(con))
    except duckdb.Error:
        pass  # a warehouse from before ops.partition_status: nothing recorded as blocked
    inc = q("SELECT severity, count(*) FROM ops.incidents WHERE status IN ('open', 'acknowledged') "
            "GROUP BY 1 ORDER BY 1")
    lines.append("incidents:  " + (", ".join(f"{s}={n}" for s, n in inc) or "none open") + " (ops.incidents)")
    cons = q("SELECT sum(records), sum(clean), sum(quarantined), sum(held), "
             "sum(rejected_ingest) + sum(rejected_clean), sum(lost) FROM ops.conservation")
    if cons and cons[0][0] is not None:
        r, c, qq, h, j, lost = (int(x or 0) for x in cons[0])
        lines.append(f"ledger:     {r:,} records = {c:,} clean + {qq:,} quarantined + {h:,} held + {j:,} rejected; "
                     f"lost: {lost}")
    metrics = sorted(existing_tables(con, "metrics"))
    if metrics:
        lines.append(f"metrics:    {len(metrics)} tables in schema metrics")
    if "lead_score" in metrics:
        lines.append(_scores_line(q))
    proposals = q("SELECT node, chosen_action FROM decisions.log WHERE event = 'proposed' ORDER BY entry_id")
    if proposals:
        lines.append(f"decisions:  {len(proposals)} proposal(s) in the decision log (gtm-pipeline decisions list):")
        lines.extend(f"            {node}: {action}" for node, action in proposals)
    elif table_exists(con, "decisions", "log"):
        lines.append("decisions:  no proposal (the thresholds imply none, or a pre-check failed: "
                     "'gtm-pipeline decisions evaluate' says which)")
    return "\n".join(lines)
