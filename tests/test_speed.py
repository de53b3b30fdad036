"""opticam_lib.course.speed (notebook 04) and the two timing figures of opticam_lib.plots.

No test asserts on a duration: machines differ and are shared. The tests check structure (how many timings,
in which order the functions ran, what is synchronised), that the slow variants compute the same maps as the
library, and what they leave behind in the model.
"""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from opticam_lib import optimize, wrap_classifier
from opticam_lib.course.figures import plot_scaling, time_bars
from opticam_lib.course.speed import (
    IterationTiming,
    Timing,
    cpu_supports_bf16,
    device_name,
    forward_backward,
    forward_pass,
    full_precision,
    map_agreement,
    masked_forward_passes,
    naive_optimize,
    opticam_cost_model,
    opticam_iteration_times,
    opticam_variants,
    parameter_grads,
    synchronize,
    time_call,
    time_interleaved,
)
from opticam_lib.errors import InputError
from opticam_lib.methods.opti_cam import masked_score


def small_cnn(seed: int = 0):
    """Conv-BN-ReLU twice -> GAP -> Linear(6, 4); target layer ``body.5`` (6 channels, 8 x 8)."""
    torch.manual_seed(seed)
    body = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
    )
    for m in body.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net = nn.Sequential()
    net.add_module("body", body)
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(6, 4))
    return wrap_classifier(net.eval(), "body.5", num_classes=4, input_size=16, linear_head="fc")


@pytest.fixture
def clf():
    return small_cnn()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    low = torch.rand(3, 3, 4, 4, generator=g)
    return nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)


TARGETS = torch.tensor([0, 2, 3])


def _state(clf):
    return [p.requires_grad for p in clf.model.parameters()], [m.training for m in clf.model.modules()]


# --- timers -------------------------------------------------------------------------------------------------


def test_synchronize_is_skipped_on_cpu(monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("torch.cuda.synchronize must not be called for a CPU device")

    monkeypatch.setattr(torch.cuda, "synchronize", boom)
    assert synchronize("cpu") is False
    assert synchronize(None) is False
    assert synchronize(torch.device("cpu")) is False
    timing = time_call(lambda: 1, device="cpu", repeats=2)
    assert timing.value == 1


def test_time_call_synchronises_cuda_around_each_timed_call(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    ran = []
    timing = time_call(lambda x: ran.append(x) or x * 2, 21, device="cuda", repeats=3, warmup=2)
    assert len(ran) == 5  # 2 warm-up + 3 timed calls
    assert calls == ["sync"] * 6  # before and after each timed call, none around warm-up
    assert isinstance(timing, Timing) and len(timing.times) == 3 and timing.value == 42
    assert timing.best <= timing.median


def test_time_call_passes_keyword_arguments_and_checks_repeats():
    timing = time_call(lambda a, b=0: a + b, 1, b=2, repeats=1, warmup=0)
    assert timing.value == 3 and len(timing.times) == 1
    with pytest.raises(InputError, match="repeats"):
        time_call(lambda: None, repeats=0)
    assert "median" in repr(timing)


def test_time_interleaved_alternates():
    order = []
    out = time_interleaved(
        {"A": lambda: order.append("A") or "a", "B": lambda: order.append("B") or "b"}, repeats=2
    )
    assert order == ["A", "B", "A", "B", "A", "B"]  # warm-up round, then two timed rounds
    assert set(out) == {"A", "B"} and len(out["A"].times) == 2
    assert out["A"].value == "a" and out["B"].value == "b"


def test_device_name_on_cpu():
    name = device_name("cpu")
    assert "CPU" in name and "cores" in name


# --- the passes ----------------------------------------------------------------------------------------------


def test_forward_pass_matches_model(clf, images):
    with torch.no_grad():
        want = clf.model(images)
    assert torch.allclose(forward_pass(clf, images), want)


def test_forward_backward_frozen_leaves_no_grad(clf, images):
    clf.model.train()  # the helper must run in eval mode and give the flag back
    before = _state(clf)
    g = forward_backward(clf, images, TARGETS, freeze=True)
    assert g.shape == images.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    assert parameter_grads(clf) == (0, 0.0)
    assert _state(clf) == before


def test_forward_backward_unfrozen_accumulates_parameter_grads(clf, images):
    g1 = forward_backward(clf, images, TARGETS, freeze=False)
    count, total = parameter_grads(clf)
    assert count == len(list(clf.model.parameters())) and total > 0
    g2 = forward_backward(clf, images, TARGETS, freeze=False)
    assert parameter_grads(clf)[1] == pytest.approx(2 * total, rel=1e-4)  # .backward() adds up
    assert torch.allclose(g1, g2) and torch.allclose(g1, forward_backward(clf, images, TARGETS, freeze=True))
    clf.model.zero_grad(set_to_none=True)
    assert parameter_grads(clf) == (0, 0.0)


def test_masked_forward_passes_are_scorecam_scores(clf, images):
    """Eq. (3) with the black baseline equals F(e_k) - F(0) of eq. (5)."""
    from opticam_lib.methods.feature_pass import features

    acts, _ = features(clf, images[:1])
    k = acts.shape[1]
    scores = masked_forward_passes(clf, images[0], 2, channels=4, batch_size=3)
    assert scores.shape == (4,)
    eye = torch.eye(k)[:4]
    t = torch.tensor([2] * 4)
    f_e = masked_score(clf, images[:1].expand(4, -1, -1, -1), eye, acts.expand(4, -1, -1, -1), t)
    f_0 = masked_score(clf, images[:1], torch.zeros(1, k), acts, torch.tensor([2]))
    assert torch.allclose(scores, f_e - f_0, atol=1e-5)


def test_masked_forward_passes_name_a_class_out_of_range(clf, images):
    with pytest.raises(InputError, match="999"):
        masked_forward_passes(clf, images[0], 999, channels=4)


# --- Opti-CAM per iteration and the slow variants -----------------------------------------------------------


def test_opticam_iteration_times_structure(clf, images):
    timing = opticam_iteration_times(clf, images, TARGETS, iterations=4)
    assert isinstance(timing, IterationTiming)
    assert len(timing.stamps) == 4 and len(timing.per_iteration) == 3
    assert timing.stamps == sorted(timing.stamps) and timing.total >= timing.stamps[-1]
    assert timing.result.iterations.tolist() == [4, 4, 4]  # no early stop
    want = optimize(clf, images, TARGETS, iterations=4, tol=None, progress=False)
    assert torch.allclose(timing.result.maps, want.maps, atol=1e-6)
    one = opticam_iteration_times(clf, images, TARGETS, iterations=1)
    assert one.per_iteration == [] and one.seconds_per_iteration == one.stamps[0]


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("freeze", [True, False])
def test_naive_optimize_matches_the_library(clf, images, recompute, freeze):
    before = _state(clf)
    want = optimize(clf, images, TARGETS, iterations=5, tol=None, progress=False)
    got = naive_optimize(clf, images, TARGETS, iterations=5, recompute_features=recompute, freeze=freeze)
    assert torch.allclose(got.maps, want.maps, atol=1e-5)
    assert torch.allclose(got.u, want.u, atol=1e-4)
    assert torch.allclose(got.history, want.history, atol=1e-5)
    assert _state(clf) == before
    count, total = parameter_grads(clf)
    if freeze:
        assert count == 0
    else:  # the authors' defect, reproduced on purpose
        assert count > 0 and total > 0
    clf.model.zero_grad(set_to_none=True)


def test_cost_model():
    cost = opticam_cost_model(forward_s=0.01, backward_s=0.02, iterations=100, channels=2048, images=8)
    assert set(cost) == {"Grad-CAM", "Score-CAM", "Opti-CAM"}
    assert cost["Grad-CAM"] == pytest.approx(8 * 0.03)
    assert cost["Score-CAM"] == pytest.approx(8 * 2049 * 0.01)
    assert cost["Opti-CAM"] == pytest.approx(8 * (0.01 + 100 * 0.03))


# --- figures -------------------------------------------------------------------------------------------------


def test_plot_scaling_and_time_bars():
    fig = plot_scaling(
        {"Score-CAM": ([8, 16, 32], [0.1, 0.2, 0.4]), "Opti-CAM": ([1, 10], [0.05, 0.5])},
        "number of passes",
        marks={"ResNet50": 2048, "T = 100": 100},
        lines={"Score-CAM fit": ([1, 2048], [0.0125, 25.6])},
        logx=True,
        logy=True,
        title="cost",
    )
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    drawn = fig.axes[0].get_lines()
    assert len(drawn) == 2 + 1 + 2  # two series, one fitted line, two marks
    assert drawn[2].get_linestyle() == "--" and drawn[2].get_color() == drawn[0].get_color()
    bars = time_bars(
        {
            "Grad-CAM": {"ours": 0.5, "paper, ResNet50": 0.03},
            "Opti-CAM": {"ours": 80.0, "paper, ResNet50": 4.15, "paper, VGG16": None},
        }
    )
    assert isinstance(bars, Figure)
    assert len(bars.axes[0].patches) == 4  # None draws no bar
    labels = [t.get_text() for t in bars.axes[0].texts]
    assert "80" in labels and "4.15" in labels


def test_full_precision_restores_the_flags():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with full_precision():
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
    with pytest.raises(RuntimeError), full_precision():
        raise RuntimeError("boom")
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_map_agreement():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 8, 8, generator=g)
    same = map_agreement(a, a.clone())
    assert same == {"max": 0.0, "mean": 0.0, "correlation": pytest.approx(1.0)}
    other = map_agreement(a, 1 - a)
    assert other["correlation"] == pytest.approx(-1.0, abs=1e-5) and other["max"] > 0
    flat = torch.zeros_like(a)
    assert map_agreement(flat, flat)["correlation"] == 1.0
    assert map_agreement(flat, a)["correlation"] == 0.0
    with pytest.raises(ValueError):
        map_agreement(a, a[:1])


def test_opticam_variants_agree(clf, images):
    variants = opticam_variants(clf, images, TARGETS)
    assert list(variants) == [
        "library: features once, frozen",
        "features recomputed, frozen",
        "features once, trainable (authors)",
        "features recomputed, trainable",
    ]
    results = {name: run(3) for name, run in variants.items()}
    base = results["library: features once, frozen"]
    for r in results.values():
        assert r.history.shape == (3, 3)
        assert map_agreement(r.maps, base.maps)["max"] < 1e-5
    assert parameter_grads(clf)[0] > 0  # the trainable variants leave gradients behind
    clf.model.zero_grad(set_to_none=True)


def test_cpu_supports_bf16_answers_a_bool_or_none(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    fake = tmp_path / "cpuinfo"
    fake.write_text("model name\t: test\nflags\t\t: fpu avx2 avx512_bf16\n")
    monkeypatch.setattr(
        builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k)
    )
    assert cpu_supports_bf16() is True
    fake.write_text("flags\t\t: fpu avx2\n")
    assert cpu_supports_bf16() is False


# ---- the committed benchmark results (notebook 04, section 8) --------------------------------------------------------


def _bench_json(device_type: str, date: str) -> dict:
    return {
        "device": "NVIDIA H100" if device_type == "cuda" else "CPU",
        "device_type": device_type,
        "torch": "2.11",
        "date": date,
        "command": f"python benchmarks/bench_gpu.py --device {device_type}",
        "model": "resnet50",
        "overhead": [{"batch": 64, "precision": "bf16", "loop": "eager", "ratio": {"median": 1.02}}],
        "paper_setting": {"batch": 2, "iterations": 10, "seconds": {"eager_fp32": 1.0, "graph_fp32": 0.5}},
        "throughput": [{"variant": "bf16", "batch": 256, "projected_minutes": 11.5}],
        "agreement": {
            "model": "efficientnet_lite0",
            "AG_fp32": 30.0,
            "bf16": {"min_pearson_r": 0.995, "AG_difference": -0.3},
        },
    }


def test_load_bench_results_reads_only_bench_jsons_gpu_first(tmp_path):
    import json

    from opticam_lib.course.speed import find_results_folder, load_bench_results

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "a_cpu.json").write_text(json.dumps(_bench_json("cpu", "2026-01-02")))
    (results / "b_gpu.json").write_text(json.dumps(_bench_json("cuda", "2026-01-03")))
    (results / "other.json").write_text(json.dumps({"something": 1}))  # not one of bench_gpu.py's: skipped
    assert find_results_folder(tmp_path / "benchmarks") == results  # found from a folder below the root too
    loaded = load_bench_results(results)
    assert [r["file"] for r in loaded] == ["b_gpu.json", "a_cpu.json"]
    assert load_bench_results(tmp_path / "missing") == []
    # a cut-short file
    (results / "c_cut.json").write_text(json.dumps(_bench_json("cuda", "2026-01-04"))[:40])
    with pytest.warns(UserWarning, match=r"c_cut\.json cannot be read .* skipped"):
        assert [r["file"] for r in load_bench_results(results)] == ["b_gpu.json", "a_cpu.json"]


def test_seconds_per_batch_of_8_scales_to_the_papers_setting():
    from opticam_lib.course.speed import bench_results_figure, bench_results_table, seconds_per_batch_of_8

    result = _bench_json("cuda", "2026-01-03")
    # 2 images x 10 iterations in 1.0 s -> 8 images x 100 iterations: x4 images, x10 iterations
    assert seconds_per_batch_of_8(result) == {"eager_fp32": 40.0, "graph_fp32": 20.0}
    assert seconds_per_batch_of_8({"device": "x"}) == {}
    rows = bench_results_table([result])
    values = [r["value"] for r in rows]
    assert values == ["x1.020", "40.00 s", "20.00 s", "11.5 min", "0.9950, -0.30 pts"]
    # a round-off baseline has no goal; a section that failed is a row of its own
    result["agreement"]["baseline_fp32_interpolate"] = {"min_pearson_r": 0.96, "AG_difference": 2.0}
    result["errors"] = {"throughput": "RuntimeError: out of memory"}
    rows = bench_results_table([result])
    assert rows[-2]["goal"] == "(round-off baseline)" and rows[-2]["value"] == "0.9600, +2.00 pts"
    assert rows[-1] == {
        "device": "NVIDIA H100 (resnet50)",
        "what": "throughput: failed",
        "value": "RuntimeError: out of memory",
        "goal": "",
    }
    del result["agreement"]["baseline_fp32_interpolate"], result["errors"]
    fig = bench_results_figure([result], {"resnet50": 4.15})
    left, right = fig.axes
    assert [p.get_width() for p in left.patches] == [4.15, 40.0, 20.0]
    assert [p.get_width() for p in right.patches] == [1.02]


def test_bench_results_table_shows_the_map_step_rows():
    from opticam_lib.course.speed import bench_results_figure, bench_results_table

    result = {
        "device": "CPU",
        "device_type": "cpu",
        "command": "python benchmarks/bench_map_step.py",
        "model": "efficientnet_lite0",
        "rows": [
            {"batch": 8, "variant": "interpolate", "percent_of_floor": {"median": 4.31}},
            {"batch": 8, "variant": "matrix", "percent_of_floor": {"median": 1.62}},
        ],
    }
    rows = bench_results_table([result])
    assert [(r["what"], r["value"]) for r in rows] == [
        ("map's fwd + bwd / floor, batch 8, interpolate", "4.31 %"),
        ("map's fwd + bwd / floor, batch 8, matrix", "1.62 %"),
    ]
    fig = bench_results_figure([result], {"resnet50": 4.15})  # nothing of its own to plot: no error
    assert len(fig.axes) == 2
