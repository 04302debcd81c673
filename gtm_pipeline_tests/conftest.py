"""Shared fixtures: temporary settings, a small generated landing folder and a warehouse built from it.

Every test that touches files works under pytest's tmp_path (never the project's data/ folder), so tests can run
while a demo or `dagster dev` uses the default DuckDB file.
"""

from __future__ import annotations

import os
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
IN_CI = os.environ.get("CI", "").lower() == "true"

SMALL_DAYS = 8
SMALL_SEED = 11
SMALL_START = date(2026, 8, 1)


def require(condition: bool, what: str) -> None:
    """Skip locally when a real component is missing; in CI (CI=true) a missing component is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(autouse=True)
def _no_dagster_instance_leaks_between_tests():
    """Entering a Dagster instance (directly or through a sensor/schedule context) sets a process-wide "current"
    state storage that is only reset on exit; a test that forgets to exit would break every later test that builds
    Definitions ("undefined DagsterInstance weakref"). Restore it after each test."""
    from dagster._core.storage.defs_state.base import _current_storage  # no public API resets it

    token = _current_storage.set(None)
    yield
    _current_storage.reset(token)


@pytest.fixture
def env_settings(tmp_path, monkeypatch):
    """Point every setting at tmp_path; returns the resolved Settings."""
    from gtm_pipeline.config import load_settings

    data = tmp_path / "data"
    monkeypatch.setenv("GTM_PIPELINE_DATA_DIR", str(data))
    monkeypatch.setenv("GTM_PIPELINE_LANDING_DIR", str(data / "landing"))
    monkeypatch.setenv("GTM_PIPELINE_DUCKDB", str(data / "gtm.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return load_settings()


@pytest.fixture(scope="session")
def small_landing(tmp_path_factory) -> Path:
    """A small generated landing folder (with defects), shared read-only by the session's tests."""
    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate

    out = tmp_path_factory.mktemp("landing_small")
    # Drift early enough to fall inside the small window; more missing owners so every kind shows up.
    defects = DefectRates(drift_day_offset=3, extra_key_day_offset=5, missing_owner=0.05)
    generate(out, GenerateConfig(days=SMALL_DAYS, seed=SMALL_SEED, start=SMALL_START, scale=0.5, defects=defects),
             progress=False)
    return out


@pytest.fixture(scope="session")
def small_warehouse(small_landing, tmp_path_factory) -> Path:
    """A DuckDB file with every day of ``small_landing`` ingested and cleaned (plain functions, no Dagster)."""
    from gtm_pipeline.clean import clean_days
    from gtm_pipeline.clean.contract import load_entity_contracts
    from gtm_pipeline.config import CONTRACTS_DIR_DEFAULT
    from gtm_pipeline.ingest.landing import landing_days, load_landing_spec
    from gtm_pipeline.ingest.stage import ingest_days

    path = tmp_path_factory.mktemp("wh_small") / "gtm.duckdb"
    spec = load_landing_spec(CONTRACTS_DIR_DEFAULT)
    contracts = load_entity_contracts(CONTRACTS_DIR_DEFAULT)
    with duckdb.connect(str(path)) as con:
        days = landing_days(small_landing)
        for source in spec.sources:
            ingest_days(con, spec, small_landing, source, days)
        for entity in spec.entities():
            clean_days(con, spec, contracts[entity], days)
    return path


@pytest.fixture
def warehouse_copy(small_warehouse, tmp_path) -> Path:
    """A private, writable copy of the small warehouse."""
    dst = tmp_path / "gtm.duckdb"
    shutil.copy(small_warehouse, dst)
    return dst
