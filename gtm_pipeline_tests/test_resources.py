"""The warehouse resource releases the DuckDB file even when the code using it raises."""

from __future__ import annotations

import duckdb
import pytest

from gtm_pipeline.orchestration.resources import WarehouseResource


def test_connection_is_closed_when_the_body_raises(tmp_path):
    path = tmp_path / "w.duckdb"
    wh = WarehouseResource(database=str(path))
    with pytest.raises(RuntimeError, match="boom"):
        with wh.get_connection() as con:
            con.execute("CREATE TABLE t AS SELECT 1 AS x")
            raise RuntimeError("boom")
    # A read-only connection with another configuration is refused while a writer is still open in this process.
    with duckdb.connect(str(path), read_only=True) as ro:
        assert ro.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_connection_applies_the_memory_limit(tmp_path):
    wh = WarehouseResource(database=str(tmp_path / "w.duckdb"), memory_limit="512MB")
    with wh.get_connection() as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert limit.replace(" ", "").upper().startswith(("512MB", "488.2MIB", "488MIB"))
