"""Resources: the only way asset bodies reach the warehouse and the project's files (docs/style.md rule 5)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from gtm_pipeline.config import DECISION_LOG_KEY_ENV, Settings, load_settings
from gtm_pipeline.decisions import open_context


class WarehouseResource(DuckDBResource):
    """DuckDBResource with a memory limit, so a long backfill spills to disk instead of growing without bound.

    Set with ``SET`` after connecting rather than in ``connection_config``: DuckDB refuses a second connection to an
    open database with a different configuration, and other code opens the same file with DuckDBResource's own."""

    memory_limit: str = "1GB"
    # A write lock that outlasts DuckDBResource's own connect backoff (10 tries over about 100 s) is transient: a CLI
    # run outside the run queue, or a shell with the file open. The step is retried this many times, this long apart
    # (RetryRequested: a step retry in the same run); any other error fails the step at once, since it would fail
    # the same way again. Run-level retries (dagster.yaml run_retries) are only for crashed run workers.
    lock_retries: int = 2
    lock_retry_wait_seconds: float = 30.0

    @contextmanager
    def get_connection(self):
        # Upstream closes the connection only when the body returns normally: a step that raises would keep the file
        # open (and its write lock) for the rest of the process. Leaving the upstream context manager without the
        # exception makes it close the connection either way; the exception still propagates.
        upstream = super().get_connection()
        try:
            con = upstream.__enter__()
        except duckdb.IOException as e:
            if "lock" not in str(e).lower() or self.lock_retries <= 0:
                raise
            raise dg.RetryRequested(max_retries=self.lock_retries, seconds_to_wait=self.lock_retry_wait_seconds) \
                from e
        try:
            con.execute(f"SET memory_limit = '{self.memory_limit.replace(chr(39), '')}'")
            yield con
        finally:
            upstream.__exit__(None, None, None)


class GtmProject(dg.ConfigurableResource):
    """Where the landing files and the contracts are."""

    landing_dir: str
    contracts_dir: str

    @property
    def landing_path(self) -> Path:
        return Path(self.landing_dir)

    @property
    def contracts_path(self) -> Path:
        return Path(self.contracts_dir)


class DecisionStore(dg.ConfigurableResource):
    """Where the decision nodes read playbooks (contracts/decisions) and write memos, packets and the log's head
    file (the data folder); see docs/decisions.md."""

    contracts_dir: str
    data_dir: str
    # The decision log's HMAC key. Bound as dg.EnvVar, so the Dagster instance stores only the variable's name.
    log_key: str | None = None

    def context(self, con):

        settings = load_settings({"GTM_PIPELINE_DATA_DIR": self.data_dir,
                                  "GTM_PIPELINE_CONTRACTS_DIR": self.contracts_dir})
        return open_context(con, settings, log_key=self.log_key)


def default_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    s = settings or load_settings()
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "warehouse": WarehouseResource(database=str(s.duckdb_path), memory_limit=s.duckdb_memory_limit),
        "project": GtmProject(landing_dir=str(s.landing_dir), contracts_dir=str(s.contracts_dir)),
        "decisions": DecisionStore(contracts_dir=str(s.contracts_dir), data_dir=str(s.data_dir),
                                   log_key=dg.EnvVar(DECISION_LOG_KEY_ENV) if s.decision_log_key else None),
    }
