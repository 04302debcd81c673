"""gtm-pipeline: a Decision OS for go-to-market teams, on Dagster and DuckDB."""

__version__ = "0.1.0"
