"""Resources: the only way asset bodies reach the warehouse and the project's files (STYLE rule 5)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from gtm_pipeline.config import Settings, load_settings


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


def default_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    s = settings or load_settings()
    s.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "warehouse": DuckDBResource(database=str(s.duckdb_path)),
        "project": GtmProject(landing_dir=str(s.landing_dir), contracts_dir=str(s.contracts_dir)),
    }
