"""Issue 13's GPU goals, measured side by side in one process, written to ONE JSON (ratios and seconds, not tests).

1. Overhead: one Opti-CAM iteration against the floor (one forward + backward to the input of the same batch,
   parameters frozen), at each ``--batches`` size, in fp32 and bf16 (autocast). Goal: at most 3 % over the floor.
   The feature pass (once per call) is timed apart and taken out; the ratio with it spread over 100 iterations
   is reported too.
2. The paper's setting (``--graph-batch`` 8 images x ``--graph-iterations`` 100): seconds per call eager against
   ``graph=True`` (the iteration captured in a CUDA graph; on a CPU the same masked step runs eagerly), each call
   complete (feature pass and capture included), and with bf16 + folded batch norm. Goal: at most 0.3 s.
3. Throughput: bf16 + channels-last + folded batch norm (``fast_copy`` once), at ``--throughput-batch``, beside fp32;
   projected minutes for 50,000 images x 100 iterations. Goal: at most 12 minutes (moonshot 10).
4. Agreement: fp32 maps (TF32 off) against bf16 (+ channels-last + folded BN) maps on the offline model
   efficientnet_lite0 (pretrained, from its wheel) and the sample photographs: Pearson r per map (goal >= 0.99) and
   AG (goal: within 1 point). Beside them, a baseline: the same fp32 run with the other upsampling method, whose
   maps differ only by float round-off, amplified by 100 iterations of optimisation.

The JSON is written after every section (atomically), and a section that fails is recorded under "errors" while
the next ones run: a run cut short keeps what it measured.

The architecture of 1-3 has random weights (``--model resnet50``, as the issue's measurements): the time of a
pass does not depend on the weights, except on a CPU, where tiny (denormal) floats are slow: there denormals are
flushed to zero (``torch.set_flush_denormal``) and efficientnet_lite0 gets its offline weights. Opti-CAM runs every iteration (``tol=None``), the paper's T. Pairs are
interleaved (A, B, A, B, ...) and the median of the paired ratios is reported.

On a GPU (about 2-4 minutes on an H100; every section at its issue setting)::

    python benchmarks/bench_gpu.py --device cuda --json benchmarks/results/gpu_h100.json

On a CPU (small settings, a few minutes on 2 cores)::

    OMP_NUM_THREADS=1 python benchmarks/bench_gpu.py --device cpu --model efficientnet_lite0 --batches 8 \\
        --repeats 3 --graph-iterations 10 --throughput-batch 8 --throughput-iterations 5 \\
        --agreement-iterations 30 --json benchmarks/results/cpu_efficientnet_lite0.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from opticam_lib import load_classifier, optimize
from opticam_lib.hooks import frozen
from opticam_lib.images import load_samples
from opticam_lib.methods.feature_pass import features
from opticam_lib.metrics.classification import average_gain, masked_probabilities
from opticam_lib.models.fast import fast_copy, strict_fp32
from opticam_lib.paper.tables import paper_table
from opticam_lib.paths import atomic_write

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
GOALS = {
    "overhead_ratio": 1.03,
    "paper_setting_s": 0.3,
    "projected_minutes": 12.0,
    "pearson_r": 0.99,
    "ag_points": 1.0,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    """Wall-clock seconds of ``fn()``, the GPU synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({model}, {torch.get_num_threads()} threads)"


def batch_of(n: int, size: int, device: torch.device, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n smooth random images (N, 3, size, size) in [0, 1] and random targets (timing does not depend on them)."""
    gen = torch.Generator().manual_seed(n)
    low = torch.rand(n, 3, max(size // 8, 1), max(size // 8, 1), generator=gen)
    images = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).to(device), torch.randint(0, classes, (n,), generator=gen).to(device)


def floor_step(clf, images: torch.Tensor, targets: torch.Tensor, amp_dtype: torch.dtype | None) -> None:
    """One bare forward + backward to the input (parameters frozen): the least an iteration can cost."""
    x = images.clone().requires_grad_(True)
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        score = clf.model(x).float().gather(1, targets[:, None]).sum()
    torch.autograd.grad(score, x)


def median_quartiles(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2]}


def overhead(clf, device, batches, precisions, size, iterations, repeats, upsampling: str) -> list[dict]:
    """Goal 1: (loop per iteration) / floor, per batch size and precision, for the default (eager) loop and for
    ``graph=True``; interleaved: floor, eager call, graph call, feature pass, then again."""
    rows = []
    for batch in batches:
        images, targets = batch_of(batch, size, device, clf.num_classes)
        for name in precisions:
            amp_dtype = PRECISIONS[name]
            opts = dict(
                iterations=iterations,
                upsampling=upsampling,
                tol=None,
                progress=False,
                amp=amp_dtype is not None,
                amp_dtype=amp_dtype,
            )

            def floor_block(x=images, t=targets, a=amp_dtype) -> None:
                with frozen(clf.model):
                    for _ in range(iterations):
                        floor_step(clf, x, t, a)

            def call(graph: bool, x=images, t=targets, o=opts) -> None:
                optimize(clf, x, t, graph=graph, **o)

            def feature_pass(x=images) -> None:
                features(clf, x)

            floor_block()  # warm-up: cuDNN autotuning, allocator, the graph's fallback message
            call(False)
            call(True)
            floors, feats = [], []
            wholes: dict[str, list[float]] = {"eager": [], "graph": []}
            for _ in range(repeats):
                floors.append(timed(device, floor_block) / iterations)
                wholes["eager"].append(timed(device, lambda: call(False)))
                wholes["graph"].append(timed(device, lambda: call(True)))
                feats.append(timed(device, feature_pass))
            for variant, whole in wholes.items():
                loops = [max(w - fe, 0.0) / iterations for w, fe in zip(whole, feats, strict=True)]
                ratios = [lo / fl for lo, fl in zip(loops, floors, strict=True)]
                at_100 = [(lo + fe / 100) / fl for lo, fe, fl in zip(loops, feats, floors, strict=True)]
                row = {
                    "batch": batch,
                    "precision": name,
                    "loop": variant,
                    "floor_s": statistics.median(floors),
                    "iteration_s": statistics.median(loops),
                    "feature_pass_s": statistics.median(feats),
                    "ratio": median_quartiles(ratios),
                    "ratio_at_100_iterations": statistics.median(at_100),
                    "pair_ratios": ratios,
                }
                rows.append(row)
                print(
                    f"  overhead batch {batch:4d} {name} {variant:5s}: floor {row['floor_s'] * 1e3:8.2f} ms, "
                    f"iteration {row['iteration_s'] * 1e3:8.2f} ms -> x{row['ratio']['median']:.3f} "
                    f"(feature pass spread over 100 iterations: x{row['ratio_at_100_iterations']:.3f})",
                    flush=True,
                )
    return rows


def paper_setting(clf, device, batch, size, iterations, repeats, upsampling: str) -> dict:
    """Goal 2: one complete call (batch x iterations) eager against graph-captured, seconds."""
    images, targets = batch_of(batch, size, device, clf.num_classes)
    base = dict(iterations=iterations, upsampling=upsampling, tol=None, progress=False)
    folded, info = fast_copy(clf)
    variants: dict[str, tuple] = {
        "eager_fp32": (clf, {}),
        "graph_fp32": (clf, {"graph": True}),
        "eager_bf16_folded": (folded, {"amp": True, "amp_dtype": torch.bfloat16}),
        "graph_bf16_folded": (folded, {"amp": True, "amp_dtype": torch.bfloat16, "graph": True}),
    }
    for model, extra in variants.values():  # warm-up (and the one fallback message, if any)
        optimize(model, images, targets, **{**base, **extra, "iterations": 3})
    times: dict[str, list[float]] = {k: [] for k in variants}
    maps: dict[str, torch.Tensor] = {}
    loops: dict[str, str] = {}
    for _ in range(repeats):
        for key, (model, extra) in variants.items():
            out: dict = {}

            def call(m=model, e=extra, o=out) -> None:
                o["r"] = optimize(m, images, targets, **base, **e)

            times[key].append(timed(device, call))
            maps[key] = out["r"].maps
            loops[key] = out["r"].loop  # measured: "graph" only when the iteration was captured and replayed
    row = {
        "batch": batch,
        "iterations": iterations,
        "folded_pairs": len(info.folded),
        "seconds": {k: statistics.median(v) for k, v in times.items()},
        "all_seconds": times,
        "graph_vs_eager_max_abs_map_difference": float((maps["graph_fp32"] - maps["eager_fp32"]).abs().max()),
        "loops": loops,
        "graph_captured": all(loops[k] == "graph" for k in loops if k.startswith("graph")),
    }
    row["speedup_graph_fp32"] = row["seconds"]["eager_fp32"] / row["seconds"]["graph_fp32"]
    for k, s in row["seconds"].items():
        print(f"  paper setting {batch} x {iterations}: {k:18s} {s:7.3f} s per call", flush=True)
    return row


def throughput(
    clf, device, batch, size, iterations, repeats, images_total, iterations_total, upsampling: str
) -> list[dict]:
    """Goal 3: image-iterations per second, fp32 default against channels-last + folded BN in fp32, bf16 (and fp16
    on a GPU)."""
    images, targets = batch_of(batch, size, device, clf.num_classes)
    fast, _ = fast_copy(clf, channels_last=True)
    variants = {
        "fp32": (clf, {}),
        "fp32_channels_last_folded": (fast, {}),
        "bf16_channels_last_folded": (fast, {"amp": True, "amp_dtype": torch.bfloat16}),
    }
    if device.type == "cuda":  # float16 autocast: 3 more mantissa bits than bfloat16, as fast on a GPU
        variants["fp16_channels_last_folded"] = (fast, {"amp": True, "amp_dtype": torch.float16})
    rows = []
    for key, (model, extra) in variants.items():
        x = images.contiguous(memory_format=torch.channels_last) if "channels_last" in key else images
        opts = dict(iterations=iterations, upsampling=upsampling, tol=None, progress=False, **extra)
        optimize(model, x, targets, **{**opts, "iterations": 2})
        calls, feats = [], []
        for _ in range(repeats):
            calls.append(timed(device, lambda m=model, o=opts, x=x: optimize(m, x, targets, **o)))
            feats.append(timed(device, lambda m=model, x=x: features(m, x)))
        call, feat = statistics.median(calls), statistics.median(feats)
        per_iteration = max(call - feat, 0.0) / iterations
        per_batch = feat + iterations_total * per_iteration
        minutes = images_total / batch * per_batch / 60
        rows.append(
            {
                "variant": key,
                "batch": batch,
                "iteration_s": per_iteration,
                "feature_pass_s": feat,
                "image_iterations_per_s": batch / per_iteration if per_iteration > 0 else float("inf"),
                "projected_minutes": minutes,
            }
        )
        print(
            f"  throughput {key:26s} batch {batch}: {rows[-1]['image_iterations_per_s']:9.1f} image-iterations/s, "
            f"{images_total:,} images x {iterations_total} iterations in {minutes:6.1f} min",
            flush=True,
        )
    return rows


def pearson(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Pearson r of each pair of maps (N, 1, H, W) -> N values (NaN for a constant map)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1).div(a.norm(dim=1) * b.norm(dim=1)).tolist()


def agreement(device, n_images, iterations, upsampling: str) -> dict:
    """Goal 3's check: fp32 maps (TF32 off) against folded / bf16 / fp16 maps (PyTorch's defaults, as a user runs
    them), on the offline efficientnet_lite0 (pretrained) and the sample photographs, with the default early stop
    (tol 1e-10); and a baseline: fp32 (TF32 off) with the other upsampling method, the same maps up to round-off."""
    clf = load_classifier("efficientnet_lite0", device=device)
    samples = load_samples(size=clf.input_size)
    images, labels = samples.images[:n_images].to(device), samples.labels[:n_images].to(device)
    base = dict(iterations=iterations, upsampling=upsampling, progress=False)
    fast, _ = fast_copy(clf, channels_last=True)
    other = "interpolate" if upsampling == "matrix" else "matrix"
    with strict_fp32():
        ref = optimize(clf, images, labels, **base)
        baseline = optimize(clf, images, labels, **{**base, "upsampling": other})
    fast_images = images.contiguous(memory_format=torch.channels_last)
    variants = {
        f"baseline_fp32_{other}": baseline,
        "fp32_channels_last_folded": optimize(fast, fast_images, labels, **base),
        "bf16": optimize(clf, images, labels, amp=True, amp_dtype=torch.bfloat16, **base),
        "bf16_channels_last_folded": optimize(
            fast, fast_images, labels, amp=True, amp_dtype=torch.bfloat16, **base
        ),
    }
    if device.type == "cuda":
        variants["fp16_channels_last_folded"] = optimize(
            fast, fast_images, labels, amp=True, amp_dtype=torch.float16, **base
        )
    p, o = masked_probabilities(clf, images, ref.maps, labels)
    ag_ref = average_gain(p, o)
    out = {
        "model": clf.name,
        "images": images.shape[0],
        "iterations": iterations,
        "reference": f"fp32 with TF32 off, upsampling {upsampling!r}",
        "AG_fp32": ag_ref,
        "iterations_fp32": ref.iterations.tolist(),
    }
    for key, res in variants.items():
        r = pearson(ref.maps, res.maps)
        p2, o2 = masked_probabilities(clf, images, res.maps, labels)
        ag = average_gain(p2, o2)
        out[key] = {
            "pearson_r": r,
            "min_pearson_r": min(r),
            "AG": ag,
            "AG_difference": ag - ag_ref,
            "iterations": res.iterations.tolist(),  # per image, after the early stop (off under amp)
        }
        print(
            f"  agreement fp32 vs {key}: Pearson r min {min(r):.4f} (median {statistics.median(r):.4f}); "
            f"AG {ag_ref:.2f} vs {ag:.2f}",
            flush=True,
        )
    return out


def paper_T() -> dict[str, float]:
    """The paper's Table 1 T (s per batch of 8, 100 iterations) of Opti-CAM, per model."""
    out = {}
    for model in ("resnet50", "vgg16_bn"):
        try:
            out[model] = float(paper_table("1", model)["Opti-CAM"]["T"])
        except Exception:
            pass
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="resnet50", help="architecture for sections 1-3 (random weights)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batches", default="64,256", help="batch sizes of the overhead section")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--iterations", type=int, default=5, help="Opti-CAM iterations per timed call (overhead)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs per measurement")
    ap.add_argument("--graph-batch", type=int, default=8)
    ap.add_argument("--graph-iterations", type=int, default=100)
    ap.add_argument("--graph-repeats", type=int, default=3)
    ap.add_argument("--throughput-batch", type=int, default=256)
    ap.add_argument("--throughput-iterations", type=int, default=20)
    ap.add_argument("--throughput-repeats", type=int, default=3)
    ap.add_argument("--agreement-images", type=int, default=10, help="sample photographs (at most 10)")
    ap.add_argument("--agreement-iterations", type=int, default=100)
    ap.add_argument(
        "--upsampling",
        default="matrix",
        choices=["matrix", "interpolate"],
        help="how Opti-CAM's map is upsampled (maps.upsample): matrix products (the GPU path) or F.interpolate",
    )
    ap.add_argument(
        "--skip", default="", help="comma-separated sections to skip: overhead,graph,throughput,agreement"
    )
    ap.add_argument(
        "--json", default=None, help="where to write the one JSON (default: benchmarks/results/<device>.json)"
    )
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False on this machine")
    skip = {s for s in args.skip.split(",") if s}
    torch.manual_seed(0)
    flush = device.type == "cpu" and torch.set_flush_denormal(True)  # denormals make CPU timings meaningless
    pretrained = args.model == "efficientnet_lite0"  # the one model whose weights install offline
    report: dict = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "threads": torch.get_num_threads(),
        "model": args.model,
        "pretrained": pretrained,
        "flush_denormal": bool(flush),
        "tf32": {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
        "size": args.size,
        "upsampling": args.upsampling,
        "goals": GOALS,
        "paper_T": paper_T(),
    }
    print(
        f"[{report['device']}] torch {report['torch']}, {args.model} "
        f"({'offline' if pretrained else 'random'} weights), {args.size} px",
        flush=True,
    )
    t_start = time.perf_counter()
    path = Path(args.json) if args.json else Path("benchmarks/results") / f"{device.type}_{args.model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section: a run cut short (a timeout, a failure) keeps what it measured
        report["seconds_total"] = time.perf_counter() - t_start
        report["verdicts"] = verdicts(report)
        atomic_write(path, json.dumps(report, indent=1) + "\n")

    clf = load_classifier(args.model, device=device, pretrained=pretrained)
    sections: dict[str, tuple[str, Callable[[], object]]] = {
        "overhead": (
            "overhead",
            lambda: overhead(
                clf,
                device,
                [int(b) for b in args.batches.split(",")],
                [p for p in args.precisions.split(",") if p],
                args.size,
                args.iterations,
                args.repeats,
                args.upsampling,
            ),
        ),
        "graph": (
            "paper_setting",
            lambda: paper_setting(
                clf,
                device,
                args.graph_batch,
                args.size,
                args.graph_iterations,
                args.graph_repeats,
                args.upsampling,
            ),
        ),
        "throughput": (
            "throughput",
            lambda: throughput(
                clf,
                device,
                args.throughput_batch,
                args.size,
                args.throughput_iterations,
                args.throughput_repeats,
                50_000,
                100,
                args.upsampling,
            ),
        ),
        "agreement": (
            "agreement",
            lambda: agreement(device, args.agreement_images, args.agreement_iterations, args.upsampling),
        ),
    }
    for name, (key, run) in sections.items():
        if name in skip:
            continue
        try:
            report[key] = run()
        except Exception as err:  # recorded; the next sections still run
            traceback.print_exc()
            report.setdefault("errors", {})[key] = f"{type(err).__name__}: {err}"
            print(f"  section {name} failed: {report['errors'][key]}", flush=True)
        save()
    save()
    for goal, verdict in report["verdicts"].items():
        print(f"  goal {goal}: {verdict}")
    print(f"wrote {path} ({report['seconds_total']:.0f} s)")
    return report


def verdicts(report: dict) -> dict[str, str]:
    """One line per goal: the measured value beside the goal (only for the sections that ran)."""
    out = {}
    if "overhead" in report:
        for variant in ("eager", "graph"):
            rows = [r for r in report["overhead"] if r["loop"] == variant]
            if rows:
                worst = max(r["ratio"]["median"] for r in rows)
                out[f"1 overhead ({variant})"] = (
                    f"worst x{worst:.3f} over the floor (goal <= x{GOALS['overhead_ratio']})"
                )
    if "paper_setting" in report:
        ps = report["paper_setting"]
        best = min(ps["seconds"].values())
        out["2 paper setting"] = (
            f"{ps['batch']} x {ps['iterations']}: best {best:.3f} s per call, eager fp32 "
            f"{ps['seconds']['eager_fp32']:.3f} s (goal <= {GOALS['paper_setting_s']} s on a GPU); "
            + (
                "the graph was captured"
                if ps.get("graph_captured")
                else f"NO graph captured: {ps.get('loops')}"
            )
        )
    if "throughput" in report:
        best = min(r["projected_minutes"] for r in report["throughput"])
        out["3 throughput"] = (
            f"50,000 x 100 in {best:.1f} min projected (goal <= {GOALS['projected_minutes']} min)"
        )
    if "agreement" in report:
        for key, ag in report["agreement"].items():
            if isinstance(ag, dict) and "min_pearson_r" in ag:
                label = "round-off baseline" if key.startswith("baseline") else "agreement"
                out[f"3 {label} {key}"] = (
                    f"min Pearson r {ag['min_pearson_r']:.4f} (goal >= {GOALS['pearson_r']}), AG difference "
                    f"{ag['AG_difference']:+.2f} points (goal within {GOALS['ag_points']})"
                )
    for key, error in report.get("errors", {}).items():
        out[f"failed {key}"] = error
    return out


if __name__ == "__main__":
    main()
