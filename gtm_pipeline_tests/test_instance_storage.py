"""The pooled SQLite event log: the same files and tables as Dagster's default storage, a bounded number of open
connections, and an event that survives its writer being killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from gtm_pipeline.orchestration import instance_storage as instance_storage
from gtm_pipeline.orchestration.instance_storage import PooledSqliteEventLogStorage
from gtm_pipeline.orchestration.runner import DAGSTER_YAML

MATERIALIZATIONS = dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION)


def _event(run_id: str, day: str) -> EventLogEntry:
    m = dg.AssetMaterialization(asset_key=["clean", "lead"], partition=day, metadata={"rows": 1})
    ev = DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value, job_name="j",
                      event_specific_data=StepMaterializationData(m))
    return EventLogEntry(error_info=None, level=20, user_message="", run_id=run_id, timestamp=time.time(),
                         step_key="s", job_name="j", dagster_event=ev)


def test_it_writes_what_the_default_storage_reads_and_back(tmp_path):
    pooled = PooledSqliteEventLogStorage(str(tmp_path))
    for i in range(3):
        pooled.store_event(_event("run-a", f"2026-08-0{i + 1}"))
    stock = SqliteEventLogStorage(str(tmp_path))
    assert len(stock.get_event_records(MATERIALIZATIONS)) == 3
    assert len(stock.get_logs_for_run("run-a")) == 3
    stock.store_event(_event("run-b", "2026-08-04"))
    assert len(pooled.get_event_records(MATERIALIZATIONS)) == 4
    partitions = pooled.get_materialized_partitions(dg.AssetKey(["clean", "lead"]))
    assert partitions == {"2026-08-01", "2026-08-02", "2026-08-03", "2026-08-04"}
    pooled.dispose()


def test_open_connections_are_bounded_however_many_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(instance_storage, "MAX_SHARDS", 3)
    pooled = PooledSqliteEventLogStorage(str(tmp_path))
    for i in range(10):
        pooled.store_event(_event(f"run-{i}", "2026-08-01"))
    assert set(pooled._engines) == {"index", "run-7", "run-8", "run-9"}
    # An evicted shard opens again when it is read: nothing is lost by closing it.
    assert len(pooled.get_logs_for_run("run-0")) == 1
    pooled.wipe()
    assert set(pooled._engines) <= {"index"} and pooled.get_logs_for_run("run-9") == []


_WRITER = """
import os, signal, sys, time
sys.path[:0] = [{tests!r}]
from test_instance_storage import _event
from gtm_pipeline.orchestration.instance_storage import PooledSqliteEventLogStorage
s = PooledSqliteEventLogStorage({base!r})
for i in range(50):
    s.store_event(_event("run-k", f"2026-08-{{i % 28 + 1:02d}}"))
print("stored", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_stored_event_survives_a_kill_9_of_its_writer(tmp_path):
    code = _WRITER.format(tests=os.path.dirname(__file__), base=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL and "stored" in res.stdout, res.stderr
    assert len(SqliteEventLogStorage(str(tmp_path)).get_logs_for_run("run-k")) == 50


def test_the_cli_instance_uses_it(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text(DAGSTER_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert instance.event_log_storage._base_dir == str(tmp_path / "history" / "runs")
