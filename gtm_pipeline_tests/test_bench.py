"""The benchmark command (docs/bench.md): `gtm-pipeline bench --quick` runs end to end on tiny data and prints the
tables the issue asks for (every stage against the floor and the reference script, Dagster's event time, peak memory,
one new day on two histories), with numbers that are positive and add up. No wall-clock bound is asserted anywhere:
speed is what the command reports, not what a test decides."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gtm_pipeline import bench
from gtm_pipeline.errors import GtmPipelineError


@pytest.mark.parametrize("text,expected", [
    ("1e6,5e6,2e7", (1_000_000, 5_000_000, 20_000_000)),
    ("1M, 5M,20M", (1_000_000, 5_000_000, 20_000_000)),
    ("250k", (250_000,)),
])
def test_sizes_parse(text, expected):
    assert bench.parse_sizes(text) == expected


@pytest.mark.parametrize("text,message", [("lots", "is not a number of rows"), ("10", "too small"), (",", "no size")])
def test_bad_sizes_name_the_option_and_the_fix(text, message):
    with pytest.raises(GtmPipelineError, match=message) as e:
        bench.parse_sizes(text)
    assert "--sizes" in str(e.value)


def test_scale_grows_with_the_size_and_shrinks_with_the_days():
    assert bench.scale_for(2_000_000, 90) > bench.scale_for(1_000_000, 90)
    assert bench.scale_for(1_000_000, 180) < bench.scale_for(1_000_000, 90)
    assert bench.scale_for(bench.ROWS_PER_DAY_AT_SCALE_1 * 365, 365) == pytest.approx(1.0)


@pytest.mark.slow
def test_quick_bench_prints_the_tables_and_consistent_numbers(tmp_path):
    out = tmp_path / "bench"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GTM_PIPELINE_", "DAGSTER_HOME"))}
    env["GTM_PIPELINE_DATA_DIR"] = str(tmp_path / "data")
    cli = Path(sys.executable).parent / "gtm-pipeline"
    proc = subprocess.run([str(cli), "bench", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout

    # One table per size, each with every stage, the total, rows/s, peak RSS, the floor and the ratio.
    for size in ("10k", "20k"):
        assert f"== {size} raw rows" in text
    for stage in bench.STAGES:
        assert len(re.findall(rf"^\s+{stage}\s+\d+\.\d\d\s+\d+%", text, flags=re.M)) == 2, stage
    for label in ("total", "rows/s", "peak RSS", "floor", "total/floor", "reference", "total/reference"):
        assert len(re.findall(rf"^\s+{re.escape(label)}\s", text, flags=re.M)) >= 2, label
    assert "throughput (seconds per stage)" in text and "incremental cost of one new day" in text
    assert re.search(r"^ratio 4d / 2d: \d+\.\d\d", text, flags=re.M)
    assert "load average" in text
    # Every stage row shows its ratio to the floor; those the reference script has a section for, its ratio to that.
    for stage in bench.STAGES:
        row = re.findall(rf"^\s+{stage}\s+\d+\.\d\d\s+\d+%\s+(\S+)\s+(\S+)\s+(\S+)", text, flags=re.M)
        assert all(x.endswith("x") for x, _, _ in row), (stage, row)
        if stage in bench.REFERENCE_STAGES:
            assert all(float(ref) >= 0 and x_ref.endswith("x") for _, ref, x_ref in row), (stage, row)
        else:
            assert all(ref == "-" and x_ref == "-" for _, ref, x_ref in row), (stage, row)

    # The JSON result agrees with itself.
    result = json.loads((out / "results.json").read_text())
    assert len(result["sizes"]) == 2 and len(result["increments"]) == 2
    for s in result["sizes"]:
        assert set(s["stages"]) == set(bench.STAGES)
        assert all(t > 0 for t in s["stages"].values())
        assert s["total"] == pytest.approx(sum(s["stages"].values()))
        assert s["raw_rows"] > 0 and s["files"] > 0
        assert s["rows_per_second"] == pytest.approx(s["raw_rows"] / s["total"])
        assert s["floor"] > 0 and s["ratio"] == pytest.approx(s["total"] / s["floor"])
        assert s["peak_rss"] >= max(s["stage_peak_rss"].values()) > 0
        assert 0 <= sum(s["event_seconds"].values()) <= s["total"]
        # The reference script ran every one of its stages; the total/reference ratio is the pipeline's over it.
        assert set(s["reference"]) == set(bench.REFERENCE_STAGES)
        assert s["reference_total"] == pytest.approx(sum(s["reference"].values())) and s["reference_total"] > 0
        assert s["reference_ratio"] == pytest.approx(s["total"] / s["reference_total"])
        assert s["reference_peak_rss"] > 0 and s["reference_counts"]["clean_rows"] > 0
        # ... and published the rows the pipeline published (one clean batch at these sizes: no batch boundary).
        assert s["reference_counts"]["clean_rows"] == s["clean_rows"]
        # The floor read every record the generator wrote, less the lines no reader can parse.
        assert 0.99 * s["raw_rows"] <= s["floor_rows"] <= s["raw_rows"]
    small, large = result["sizes"]
    assert large["raw_rows"] > small["raw_rows"]
    for i in result["increments"]:
        assert i["daily"] > 0 and i["refresh"] > 0 and i["day_rows"] > 0
        assert i["total"] == pytest.approx(i["daily"] + i["refresh"])
        assert len(i["attempts"]) == 2 and i["total"] == pytest.approx(min(a["total"] for a in i["attempts"]), abs=1e-3)
    a, b = result["increments"]
    assert b["history_rows"] > a["history_rows"]
    assert result["increment_ratio"] == pytest.approx(b["total"] / a["total"])
    assert math.isfinite(result["increment_ratio"])

    # The command deletes its own work folders and keeps the result.
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
