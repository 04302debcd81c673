"""The benchmark's reference script (`gtm_pipeline/bench/reference.sql`) does the pipeline's work up to the clean
tables in plain DuckDB SQL. Its timings only mean something if it gets the pipeline's results, so on generated data
with every planted defect (malformed and latin-1 lines, wrong types, bad enums, duplicates in the same file and the
next day's, missing owners, an out-of-range day that blocks publication, a renamed column, an extra key) the
pipeline, run through its own runner and Dagster, and the script must agree on: clean rows per entity and day,
quarantine rows per table and rule, duplicates per entity and day, and CAC by channel.
"""

from __future__ import annotations

import math
from datetime import date

import dagster as dg
import pytest

from gtm_pipeline import keys
from gtm_pipeline.bench.reference import run_reference, sections
from gtm_pipeline.errors import GtmPipelineError

START = date(2026, 8, 1)
# Long and large enough that opportunities close (CAC has wins to divide by) and that the generator's
# out-of-range day falls inside the window; small enough for one Dagster run of each job.
DAYS = 25
SCALE = 0.6
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """Generate the landing files, run the pipeline (daily_ingest_job over every day, then the metric assets CAC
    reads) and the reference script on them; returns (the pipeline's figures, the reference's result)."""
    from gtm_pipeline.config import load_settings
    from gtm_pipeline.definitions import build_definitions
    from gtm_pipeline.generate import DefectRates, GenerateConfig, generate
    from gtm_pipeline.orchestration.runner import run_job

    root = tmp_path_factory.mktemp("bench_reference")
    with pytest.MonkeyPatch.context() as mp:
        data = root / "data"
        for name, value in {"GTM_PIPELINE_DATA_DIR": data, "GTM_PIPELINE_LANDING_DIR": data / "landing",
                            "GTM_PIPELINE_DUCKDB": data / "gtm.duckdb", "DAGSTER_HOME": root / "dagster_home"}.items():
            mp.setenv(name, str(value))
        (root / "dagster_home").mkdir()
        (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        settings = load_settings()
        # The conftest's defect mix: drift early enough to fall in the window, more missing owners.
        defects = DefectRates(drift_day_offset=3, extra_key_day_offset=5, missing_owner=0.05)
        generate(settings.landing_dir, GenerateConfig(days=DAYS, seed=11, start=START, scale=SCALE, defects=defects),
                 progress=False)
        defs = build_definitions()
        with dg.DagsterInstance.ephemeral() as instance:
            last = date.fromordinal(START.toordinal() + DAYS - 1).isoformat()
            daily = run_job(keys.DAILY_JOB, partition_range=(START.isoformat(), last), instance=instance, defs=defs,
                            run_config=QUIET)
            assert daily.success or daily.only_blocked, daily.problems()
            metrics = [keys.metric_key(m) for m in ("fact_costs", "fact_bookings", "cac_by_channel")]
            refresh = run_job(keys.REFRESH_JOB, asset_selection=metrics, instance=instance, defs=defs,
                              run_config=QUIET)
            assert not refresh.step_errors, refresh.problems()
        pipeline = _pipeline_figures(settings)
        reference = run_reference(settings.landing_dir)
    return pipeline, reference


def _pipeline_figures(settings) -> dict:
    from gtm_pipeline.ingest.landing import load_landing_spec
    from gtm_pipeline.quarantine.snapshot import connect_reader

    spec = load_landing_spec(settings.contracts_dir)
    entity_of = {(t.source, t.name): t.entity for t in spec.tables()}
    out: dict = {"clean": {}, "quarantine": {}, "duplicates": {}, "cac": {}}
    with connect_reader(settings.duckdb_path) as con:
        for e in spec.entities():
            for day, n in con.execute(f"SELECT strftime(_partition, '%Y-%m-%d'), count(*) FROM clean.{e} "
                                      f"GROUP BY 1").fetchall():
                out["clean"][(e, day)] = n
        for table in (*spec.entities(), "missing_owner"):
            for entity, rule, n in con.execute(f"SELECT entity, rule, count(*) FROM quarantine.{table} "
                                               f"GROUP BY ALL").fetchall():
                out["quarantine"][(table, entity, rule)] = n
        for source, table, day, n in con.execute(
                "SELECT _source, _table, strftime(_partition, '%Y-%m-%d'), count(*) FROM raw.rejects "
                "WHERE stage = 'clean' AND rule = 'unique' GROUP BY ALL").fetchall():
            key = (entity_of[(source, table)], day)
            out["duplicates"][key] = out["duplicates"].get(key, 0) + n
        # Published if its audit passed; otherwise the candidate it kept (the same computation, not shown to readers).
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'metrics'").fetchall()}
        cac = "_candidate_cac_by_channel" if "_candidate_cac_by_channel" in tables else "cac_by_channel"
        for channel, cost, wins, value in con.execute(
                f"SELECT channel, marketing_cost, wins, cac FROM metrics.{cac}").fetchall():
            out["cac"][channel] = (float(cost), int(wins), None if value is None else float(value))
    return out


def _differences(pipeline: dict, reference: dict) -> dict:
    return {k: (pipeline.get(k), reference.get(k)) for k in sorted(set(pipeline) | set(reference))
            if pipeline.get(k) != reference.get(k)}


@pytest.mark.slow
def test_clean_rows_per_entity_and_day_are_equal(both):
    pipeline, ref = both
    assert len({e for e, _ in pipeline["clean"]}) == 11  # every entity published rows
    diff = _differences(pipeline["clean"], ref.clean_counts)
    assert not diff, f"(entity, day): (pipeline, reference) rows differ: {diff}"


@pytest.mark.slow
def test_quarantine_rows_per_table_and_rule_are_equal(both):
    pipeline, ref = both
    rules = {rule for _, _, rule in pipeline["quarantine"]}
    # The planted defects reach every break action: quarantine, a blocked day (range, held) and missing owners.
    assert {"type", "enum", "range", "held", "required"} <= rules, rules
    assert ("missing_owner", "opportunity", "required") in pipeline["quarantine"]
    diff = _differences(pipeline["quarantine"], ref.quarantine_totals)
    assert not diff, f"(table, entity, rule): (pipeline, reference) rows differ: {diff}"


@pytest.mark.slow
def test_duplicates_per_entity_and_day_are_equal(both):
    pipeline, ref = both
    assert sum(pipeline["duplicates"].values()) > 0
    diff = _differences(pipeline["duplicates"], ref.duplicates)
    assert not diff, f"(entity, day): (pipeline, reference) duplicates differ: {diff}"


@pytest.mark.slow
def test_cac_by_channel_is_equal(both):
    pipeline, ref = both
    # The metric layer also lists channels that carry only sales cost (the reps'); the reference computes CAC from
    # marketing cost and wins only, so those rows (no marketing cost, no win) have no counterpart.
    ours = {c: v for c, v in pipeline["cac"].items() if v[0] or v[1]}
    assert ours["all"][1] > 0, "the data set needs wins for CAC to be a number"
    assert set(ours) == set(ref.cac_by_channel), (sorted(ours), sorted(ref.cac_by_channel))
    for channel, (cost, wins, cac) in ours.items():
        r_cost, r_wins, r_cac = ref.cac_by_channel[channel]
        assert wins == r_wins and math.isclose(cost, r_cost, rel_tol=1e-9), (channel, ours[channel], (r_cost, r_wins))
        assert (cac is None) == (r_cac is None) and (cac is None or math.isclose(cac, r_cac, rel_tol=1e-9)), channel


def test_the_script_has_the_stages_the_bench_times():
    assert [name for name, _ in sections()] == ["setup", "ingest", "clean", "contracts", "metrics"]


def test_a_missing_export_names_the_section_and_the_folder(tmp_path):
    (tmp_path / "crm" / "2026-08-01").mkdir(parents=True)
    with pytest.raises(GtmPipelineError, match=r"section 'ingest' of reference.sql failed on .*No files found") as e:
        run_reference(tmp_path)
    assert "needs at least one file of each" in str(e.value)


def test_a_header_it_cannot_read_by_position_stops_it(small_landing, tmp_path):
    import shutil

    landing = tmp_path / "landing"
    shutil.copytree(small_landing, landing)
    leads = landing / "crm" / "2026-08-02" / "leads.csv"
    lines = leads.read_text().split("\n", 1)
    leads.write_text(lines[0].replace("lead_id,created_at", "created_at,lead_id") + "\n" + lines[1])
    with pytest.raises(GtmPipelineError, match=r"reads CSV columns by position.*crm/2026-08-02/leads.csv "
                                               r"\(lead_id, created_at\)"):
        run_reference(landing)
