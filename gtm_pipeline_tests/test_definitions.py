"""The asset graph reads well in the UI: every definition loads, validates without deprecation warnings, and
carries what the UI shows (description with grain/source/owner, group = stage = key prefix, owners, kinds, code
version); every check, job, schedule and sensor explains itself."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import REPO
from procs import venv_tool

STAGES = ("ingest", "clean", "contracts", "metrics", "decisions", "slo")
# How descriptions state their grain: "Grain: ...", "one row per ...", "one evaluation per ...".
GRAIN = re.compile(r"\bgrain\b|\bone row\b|\bone\b[^.]{0,80}\bper\b", re.I)


@pytest.fixture(scope="module")
def repo_def():
    from gtm_pipeline.definitions import defs

    return defs.get_repository_def()


@pytest.fixture(scope="module")
def asset_graph():
    from gtm_pipeline.definitions import defs

    return defs.resolve_asset_graph()


def test_definitions_load(repo_def, asset_graph):
    keys = asset_graph.get_all_asset_keys()
    assert keys, "no assets loaded"
    groups = {asset_graph.get(k).group_name for k in keys}
    # The first three stages exist from the foundation on; later stages add their own groups.
    assert {"ingest", "clean", "contracts"} <= groups
    assert groups <= set(STAGES), f"asset groups outside the stages {STAGES}: {sorted(groups - set(STAGES))}"


def test_every_asset_is_documented_for_the_ui(asset_graph):
    problems = []
    for key in sorted(asset_graph.get_all_asset_keys()):
        node = asset_graph.get(key)
        name = key.to_user_string()
        if node.is_external:
            continue
        desc = node.description or ""
        if not desc.strip():
            problems.append(f"{name}: no description (state the grain, the source and the owner)")
        else:
            if not GRAIN.search(desc):
                problems.append(f"{name}: the description does not state the grain ('Grain: ...', 'one row per ...')")
            if not re.search(r"\bowner", desc, re.I):
                problems.append(f"{name}: the description does not name the owner")
        if node.group_name != key.path[0]:
            problems.append(f"{name}: group {node.group_name!r} differs from its key prefix {key.path[0]!r}")
        if not node.owners:
            problems.append(f"{name}: no owners")
        if not node.kinds:
            problems.append(f"{name}: no kinds (duckdb, pandas, ...)")
        if not node.code_version:
            problems.append(f"{name}: no code_version")
        if not [t for t in node.tags if not t.startswith("dagster/")]:
            problems.append(f"{name}: no tags (e.g. stage, source or entity)")
    assert not problems, "\n".join(problems)


def test_every_check_has_a_description(asset_graph):
    missing = [f"{ck.asset_key.to_user_string()}:{ck.name}" for ck in sorted(asset_graph.asset_check_keys, key=str)
               if not (asset_graph.get(ck).description or "").strip()]
    assert not missing, f"asset checks without a description: {missing}"


def test_jobs_schedules_sensors_have_descriptions(repo_def):
    undocumented = []
    for job in repo_def.get_all_jobs():
        if not job.name.startswith("__") and not (job.description or "").strip():
            undocumented.append(f"job {job.name}")
    for sched in repo_def.schedule_defs:
        if not (sched.description or "").strip():
            undocumented.append(f"schedule {sched.name}")
    for sensor in repo_def.sensor_defs:
        if not (sensor.description or "").strip():
            undocumented.append(f"sensor {sensor.name}")
    assert not undocumented, f"add a description to: {undocumented}"
    assert repo_def.sensor_defs, "expected at least the landing sensor"


def test_definitions_validate_cli(tmp_path):
    """`dagster definitions validate` is what CI and a deploy run first; it must pass with no deprecation warning."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_"))}
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update({"DAGSTER_HOME": str(tmp_path / "dagster_home"), "GTM_PIPELINE_DATA_DIR": str(tmp_path / "data")})
    res = subprocess.run([venv_tool("dagster"), "definitions", "validate", "-w", "workspace.yaml"], cwd=str(REPO),
                         env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Validation successful" in out
    # Dagster's own notice that the validate command itself is superseded by `dg check defs` is not about our code.
    ours = [ln for ln in out.splitlines() if "deprecat" in ln.lower() and "definitions_validate_command" not in ln]
    assert not ours, "\n".join(ours)


def test_the_pipeline_keeps_itself_fresh(repo_def, asset_graph):
    """Every asset has something that refreshes it by default: the landing sensor's daily job for the day partitions,
    the refresh automation (running by default) for what is built over all days, schedules for their cadences."""
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.definitions import defs
    from gtm_pipeline.orchestration.automation import OWN_CADENCE, uncovered_assets

    sensor = repo_def.get_sensor_def(keys.AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert repo_def.get_sensor_def(keys.LANDING_SENSOR).default_status == dg.DefaultSensorStatus.RUNNING
    selected = sensor.asset_selection.resolve(asset_graph)
    for key in asset_graph.materializable_asset_keys:
        node = asset_graph.get(key)
        automated = node.partitions_def is None and key not in OWN_CADENCE
        assert (node.automation_condition is not None) == automated, key.to_user_string()
        assert (key in selected) == automated, key.to_user_string()
    assert uncovered_assets(defs) == []


def test_an_asset_nothing_refreshes_is_caught():
    """The attack on the test above: assets added without a trigger, or with one that is off by default."""
    import dagster as dg

    from gtm_pipeline import keys
    from gtm_pipeline.orchestration.automation import apply_automation, uncovered_assets

    daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")

    @dg.asset(key=["clean", "lead"], partitions_def=daily)
    def lead(): ...

    @dg.asset(key=["metrics", "funnel"], deps=[lead])
    def funnel(): ...

    @dg.asset(key=keys.REVIEW_PACKET_KEY, deps=[funnel])
    def packet(): ...

    @dg.asset(key=["metrics", "added_later"], deps=[lead])
    def added_later(): ...

    daily_job = dg.define_asset_job(keys.DAILY_JOB, selection=[lead])
    packet_job = dg.define_asset_job("packet_job", selection=[packet])

    def landing(running: bool = True):
        status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED

        @dg.sensor(name=keys.LANDING_SENSOR, job=daily_job, default_status=status)
        def _landing():
            return dg.SkipReason("nothing new")

        return _landing

    def schedule(running: bool = True):
        return dg.ScheduleDefinition(name="weekly", job=packet_job, cron_schedule="0 10 * * 2",
                                     default_status=dg.DefaultScheduleStatus.RUNNING if running
                                     else dg.DefaultScheduleStatus.STOPPED)

    stages = dg.Definitions(assets=[lead, funnel, packet], jobs=[daily_job, packet_job],
                            sensors=[landing()], schedules=[schedule()])
    assert uncovered_assets(apply_automation(stages)) == []
    # Nothing at all: the metric and the packet are reported (the day partitions have no landing sensor either).
    assert uncovered_assets(dg.Definitions(assets=[lead, funnel, packet])) == [
        "clean/lead", "decisions/review_packet", "metrics/funnel"]
    # An asset merged in after the automation was applied: no condition, nothing refreshes it.
    late = dg.Definitions.merge(apply_automation(stages), dg.Definitions(assets=[added_later]))
    assert uncovered_assets(late) == ["metrics/added_later"]
    # Triggers that exist but are off by default cover nothing.
    stopped = dg.Definitions(assets=[lead, funnel, packet], jobs=[daily_job, packet_job],
                             sensors=[landing(running=False)], schedules=[schedule(running=False)])
    assert uncovered_assets(apply_automation(stopped)) == ["clean/lead", "decisions/review_packet"]
    automated = apply_automation(stages)  # the conditions are there, but their sensor is stopped by default
    off = dg.Definitions(assets=automated.assets, jobs=automated.jobs, schedules=automated.schedules, sensors=[
        landing(), dg.AutomationConditionSensorDefinition(keys.AUTOMATION_SENSOR, target=dg.AssetSelection.all())])
    assert uncovered_assets(off) == ["metrics/funnel"]


def test_every_asset_key_named_once_in_keys_is_defined(asset_graph):
    # A stage's defs.py that forgets an asset leaves no error anywhere else: the moved quarantine stage once dropped
    # the conservation ledger and only the repair job's selection noticed. Every key constant must be in the graph.
    import dagster as dg

    from gtm_pipeline import keys

    named = {name: v for name, v in vars(keys).items() if name.endswith("_KEY") and isinstance(v, dg.AssetKey)}
    assert "CONSERVATION_KEY" in named
    missing = sorted(name for name, k in named.items() if not asset_graph.has(k))
    assert not missing, f"keys.py names assets no stage defines: {missing}; add them to their stage's defs.py"
