"""The benchmarks run (they are not tests of speed: tiny settings, the numbers mean nothing here).

They are scripts that people run by hand, so nothing else would notice when a library change breaks them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from opticam_lib.paper.tables import paper_table

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_opticam_reports_paired_ratios(tmp_path: Path) -> None:
    report = run_script(
        "bench_opticam.py",
        *("--batch", "1", "--iterations", "2", "--repeats", "3", "--skip-scorecam"),
        tmp_path=tmp_path,
    )
    assert report["model"] == "efficientnet_lite0" and report["batch"] == 1 and report["repeats"] == 3
    assert len(report["pair_ratios"]) == 3 and all(r > 0 for r in report["pair_ratios"])
    assert report["overhead_ratio"] == pytest.approx(statistics.median(report["pair_ratios"]))
    assert report["floor_s_per_iteration"] > 0 and report["feature_pass_s"] > 0
    # taking the one-off feature pass out can only lower the ratio; spreading it over 100 iterations lies between
    assert report["overhead_ratio_loop"] <= report["overhead_ratio"] + 1e-9
    assert report["overhead_ratio_loop"] <= report["overhead_ratio_at_100_iterations"] + 1e-9
    assert "speedup_vs_scorecam" not in report


@pytest.mark.slow
def test_bench_table1_T_times_every_method_beside_the_paper(tmp_path: Path) -> None:
    report = run_script(
        "bench_table1_T.py",
        *("--device", "cpu", "--models", "resnet50", "--batch", "1", "--size", "32", "--iterations", "2"),
        *("--methods", "gradcam,opticam"),
        tmp_path=tmp_path,
    )
    (row,) = report["results"]
    assert row["model"] == "resnet50" and "CPU" in row["device"] and not row["pretrained"]
    assert (row["batch"], row["size"], row["iterations"]) == (1, 32, 2)
    assert row["Grad-CAM"] > 0 and row["Opti-CAM"] > 0 and "Score-CAM" not in row
    # the paper's T for ResNet50, read from opticam_lib's paper tables, is carried beside the measurement
    assert report["paper_T"]["resnet50"]["Opti-CAM"] == pytest.approx(
        paper_table("1", "resnet50")["Opti-CAM"]["T"]
    )


def test_bench_time_to_quality_reports_passes_to_the_reference(tmp_path: Path) -> None:
    report = run_script(
        "bench_time_to_quality.py",
        *("--sets", "world", "--world-n", "8", "--reference", "6", "--budget", "4"),
        tmp_path=tmp_path,
    )
    world = report["sets"]["world"]
    assert world["model"] == "world_cnn" and world["images"] == 8 and world["reference"]["iterations"] == 6
    ref = world["reference"]
    assert ref["reached_at"] is not None and ref["reached_at"][0] <= 6  # the reference reaches its own level
    assert set(world["solvers"]) == {
        "Adam lr 0.5",
        "Adam lr 0.5, cosine",
        "SGD lr 50, momentum 0.9",
        "iRprop+ (optimizer='rprop')",
    }
    for row in world["solvers"].values():
        p = row["passes_to_reference"]
        assert p is None or 1 <= p <= 4
        assert (p is None) == (row["seconds_to_reference"] is None)
        assert row["at_10"] is None and row["final"]["passes"] == 4  # a budget of 4 has no 10th pass
