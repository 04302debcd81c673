"""Settings: the one place where the environment is read.

Asset bodies never read ``os.environ``; resources get their values from here (docs/style.md rule 5).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from gtm_pipeline.errors import GtmPipelineError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR_DEFAULT = PROJECT_ROOT / "contracts"
DATA_DIR_DEFAULT = PROJECT_ROOT / "data"

# The first day of the daily partitions. Generated demo data starts later than this; real exports that are older
# (the Olist and Maven sample sets are from 2016-2018) need GTM_PIPELINE_START_DATE set before Dagster loads.
DEFAULT_START_DATE = "2025-01-01"

# Where SLO state changes are posted (a generic JSON body, and a Slack-compatible one). Secrets: the Dagster resource
# receives them as EnvVar, so the UI shows the variable's name, never the URL.
ALERT_WEBHOOK_ENV = "GTM_PIPELINE_ALERT_WEBHOOK_URL"
SLACK_WEBHOOK_ENV = "GTM_PIPELINE_SLACK_WEBHOOK_URL"
# The key of the decision log's HMAC chain (docs/decisions.md, "The decision log"). A secret that lives only in the
# environment of the processes that write or verify the log: never in the repository, the warehouse or the Dagster
# instance.
DECISION_LOG_KEY_ENV = "GTM_PIPELINE_DECISION_LOG_KEY"
# The time of day, in America/New_York, of each review cadence's packet (issue 14 §6; docs/decisions.md, "Memos and
# review packets"). The days are the spec's and fixed (Tuesday; first Wednesday; 10 days before the quarter starts);
# the defaults are the spec's times, and the quarterly plan's, which the spec leaves open, is 09:00.
REVIEW_TIME_ENVS = {"weekly_ops": "GTM_PIPELINE_WEEKLY_OPS_AT",
                    "monthly_business_review": "GTM_PIPELINE_MONTHLY_REVIEW_AT",
                    "quarterly_plan": "GTM_PIPELINE_QUARTERLY_PLAN_AT",
                    "biweekly_architecture": "GTM_PIPELINE_ARCHITECTURE_SYNC_AT"}
REVIEW_TIME_DEFAULTS = {"weekly_ops": time(10, 0), "monthly_business_review": time(13, 0),
                        "quarterly_plan": time(9, 0), "biweekly_architecture": time(14, 0)}


@dataclass(frozen=True)
class ReviewTimes:
    """When each review cadence's packet is built, in America/New_York (cron has minute resolution: no seconds)."""

    weekly_ops: time = REVIEW_TIME_DEFAULTS["weekly_ops"]
    monthly_business_review: time = REVIEW_TIME_DEFAULTS["monthly_business_review"]
    quarterly_plan: time = REVIEW_TIME_DEFAULTS["quarterly_plan"]
    biweekly_architecture: time = REVIEW_TIME_DEFAULTS["biweekly_architecture"]

    def of(self, cadence: str) -> time:
        if cadence not in REVIEW_TIME_ENVS:
            raise GtmPipelineError(f"review cadence {cadence!r} has no time of day; one of "
                                   f"{', '.join(REVIEW_TIME_ENVS)}")
        return getattr(self, cadence)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    landing_dir: Path
    duckdb_path: Path
    contracts_dir: Path
    start_date: str
    # Freshness SLOs (docs/slo.md): the SLO file, the evaluation history (SQLite, deliberately not in DuckDB so the
    # sensor and the exporter never wait for the warehouse's write lock) and the alert webhooks (below).
    slo_file: Path
    slo_history_path: Path
    # DuckDB's memory limit for the pipeline's connections: beyond it DuckDB spills to disk instead of holding a whole
    # backfill's transaction in memory (docs/bench.md; DuckDB's own default is 80% of the machine's RAM).
    duckdb_memory_limit: str = "1GB"
    alert_webhook_url: str | None = None
    slack_webhook_url: str | None = None
    decision_log_key: str | None = field(default=None, repr=False)
    # How often the landing sensor and the refresh automation sensor tick, in seconds (GTM_PIPELINE_SENSOR_INTERVAL).
    # None keeps their defaults (60 s and 30 s); the end-to-end tests set it low so that a day flows through quickly.
    sensor_interval_seconds: int | None = None
    # The review packets' times of day (GTM_PIPELINE_WEEKLY_OPS_AT, ..._MONTHLY_REVIEW_AT, ..._QUARTERLY_PLAN_AT).
    review_times: ReviewTimes = field(default_factory=ReviewTimes)

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Resolve settings from environment variables (or ``env`` in tests), with project-relative defaults."""
    env = dict(os.environ) if env is None else env
    data_dir = Path(env.get("GTM_PIPELINE_DATA_DIR", str(DATA_DIR_DEFAULT)))
    return Settings(
        data_dir=data_dir,
        landing_dir=Path(env.get("GTM_PIPELINE_LANDING_DIR", str(data_dir / "landing"))),
        duckdb_path=Path(env.get("GTM_PIPELINE_DUCKDB", str(data_dir / "gtm.duckdb"))),
        contracts_dir=Path(env.get("GTM_PIPELINE_CONTRACTS_DIR", str(CONTRACTS_DIR_DEFAULT))),
        start_date=env.get("GTM_PIPELINE_START_DATE", DEFAULT_START_DATE),
        duckdb_memory_limit=env.get("GTM_PIPELINE_DUCKDB_MEMORY_LIMIT", "1GB"),
        slo_file=Path(env.get("GTM_PIPELINE_SLO_FILE")
                      or Path(env.get("GTM_PIPELINE_CONTRACTS_DIR", str(CONTRACTS_DIR_DEFAULT))) / "slos.yaml"),
        slo_history_path=Path(env.get("GTM_PIPELINE_SLO_HISTORY") or data_dir / "slo" / "history.sqlite"),
        alert_webhook_url=env.get(ALERT_WEBHOOK_ENV) or None,
        slack_webhook_url=env.get(SLACK_WEBHOOK_ENV) or None,
        decision_log_key=env.get(DECISION_LOG_KEY_ENV) or None,
        sensor_interval_seconds=_seconds(env, "GTM_PIPELINE_SENSOR_INTERVAL"),
        review_times=ReviewTimes(**{c: _time_of_day(env, name, REVIEW_TIME_DEFAULTS[c])
                                    for c, name in REVIEW_TIME_ENVS.items()}),
    )


def _seconds(env: dict[str, str], name: str) -> int | None:
    text = env.get(name)
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise GtmPipelineError(f"{name}={text!r}: expected a whole number of seconds >= 1, e.g. {name}=5; "
                               f"unset it to keep the default")
    return int(text)


_HH_MM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


def _time_of_day(env: dict[str, str], name: str, default: time) -> time:
    """``HH:MM`` on a 24-hour clock (``9:00`` too); anything else fails here, when the definitions load, rather than
    as a schedule that never fires."""
    text = env.get(name, "").strip()
    if not text:
        return default
    m = _HH_MM.fullmatch(text)
    if m is None:
        raise GtmPipelineError(f"{name}={text!r}: expected a time of day HH:MM (24-hour clock, America/New_York), "
                               f"e.g. {name}=16:30; unset it to keep the default ({default:%H:%M})")
    return time(int(m.group(1)), int(m.group(2)))
