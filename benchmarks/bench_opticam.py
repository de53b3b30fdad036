"""Opti-CAM speed, measured side by side in one process on the same batch (ratios, not absolute times).

1. Overhead per iteration: one Opti-CAM iteration against the floor, one bare forward plus backward to the
   input of the same model on the same batch (parameters frozen). Target: at most 10% over the floor.
2. Opti-CAM at 100 iterations against pytorch-grad-cam's ScoreCAM, same model, same layer, same image.
   Target: Opti-CAM at least 4 times faster.

Runs are interleaved (A, B, A, B, ...): each pair gives a ratio and the median ratio is reported with its
quartiles, because these machines are noisy (on the 2-core CI machine one pair alone varies by +-15%).

    python benchmarks/bench_opticam.py                 # efficientnet_lite0 on the CPU
    python benchmarks/bench_opticam.py --device cuda --json outputs/bench_opticam_cuda.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from opticam_lib import load_classifier, optimize
from opticam_lib.hooks import frozen
from opticam_lib.images import load_samples
from opticam_lib.methods.feature_pass import features
from opticam_lib.paths import atomic_write


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def floor_step(clf, images: torch.Tensor, targets: torch.Tensor) -> None:
    """One bare forward + backward to the input: the least one Opti-CAM iteration can cost."""
    with frozen(clf.model):
        x = images.clone().requires_grad_(True)
        score = clf.model(x).gather(1, targets[:, None]).sum()
        torch.autograd.grad(score, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8, help="images per batch for the overhead test")
    ap.add_argument("--iterations", type=int, default=10, help="Opti-CAM iterations per timed run (overhead)")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved floor/Opti-CAM pairs (overhead test)")
    ap.add_argument("--scorecam-repeats", type=int, default=2, help="interleaved Opti-CAM/ScoreCAM pairs")
    ap.add_argument("--skip-scorecam", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    clf = load_classifier(args.model, device=device, pretrained=args.model == "efficientnet_lite0")
    samples = load_samples(size=clf.input_size)
    images = samples.images[: args.batch].to(device)
    targets = samples.labels[: args.batch].to(device)
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "torch": torch.__version__,
        "model": clf.name,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "batch": images.shape[0],
    }

    # 1. overhead per iteration
    floor_step(clf, images, targets)  # warm-up
    optimize(clf, images, targets, iterations=2, tol=None, progress=False)
    floors, iters, feats = [], [], []
    for _ in range(args.repeats):  # one pair per repeat: floor block, Opti-CAM block, feature pass
        floors.append(
            timed(lambda: [floor_step(clf, images, targets) for _ in range(args.iterations)], device)
            / args.iterations
        )
        iters.append(
            timed(
                lambda: optimize(clf, images, targets, iterations=args.iterations, tol=None, progress=False),
                device,
            )
            / args.iterations
        )
        feats.append(timed(lambda: features(clf, images), device))
    # ratios within each pair (measured seconds apart), so that the machine's drift cancels; then the median
    ratios = [it / fl for it, fl in zip(iters, floors, strict=True)]
    # the loop alone: the one-off feature pass (no graph, once per call) taken out
    loops = [(it - fe / args.iterations) / fl for it, fe, fl in zip(iters, feats, floors, strict=True)]
    # at the paper's 100 iterations the feature pass is spread over 100 iterations
    at_100 = [lo + fe / 100 / fl for lo, fe, fl in zip(loops, feats, floors, strict=True)]
    quart = lambda xs: statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3  # noqa: E731
    report["floor_s_per_iteration"] = statistics.median(floors)
    report["opticam_s_per_iteration"] = statistics.median(iters)
    report["feature_pass_s"] = statistics.median(feats)
    report["iterations_per_call"] = args.iterations
    report["repeats"] = args.repeats
    report["overhead_ratio"] = statistics.median(ratios)
    report["overhead_ratio_quartiles"] = quart(ratios)
    report["overhead_ratio_loop"] = statistics.median(loops)
    report["overhead_ratio_at_100_iterations"] = statistics.median(at_100)
    report["pair_ratios"] = ratios
    pct = lambda r: f"{100 * (r - 1):+.1f}%"  # noqa: E731
    q = report["overhead_ratio_quartiles"]
    print(f"[{report['device']}] {clf.name}, batch {images.shape[0]}, {args.repeats} interleaved pairs:")
    print(
        f"  floor (forward + backward to input): {report['floor_s_per_iteration']:.4f} s   "
        f"Opti-CAM iteration: {report['opticam_s_per_iteration']:.4f} s (medians)"
    )
    print(
        f"  overhead, median of paired ratios, {args.iterations} iterations per call, feature pass included: "
        f"{pct(report['overhead_ratio'])} (quartiles {pct(q[0])} .. {pct(q[2])}; target <= +10%)"
    )
    print(
        f"  one-off feature pass {report['feature_pass_s']:.4f} s; loop alone {pct(report['overhead_ratio_loop'])}; "
        f"at the paper's 100 iterations {pct(report['overhead_ratio_at_100_iterations'])}"
    )

    # 2. Opti-CAM (100 iterations) against pytorch-grad-cam's ScoreCAM, one image
    if not args.skip_scorecam:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        one, c = images[:1], int(targets[0])
        layer = clf.layer()

        def peer() -> None:
            with ScoreCAM(model=clf.model, target_layers=[layer]) as sc:
                sc.batch_size = 16
                sc(input_tensor=one, targets=[ClassifierOutputTarget(c)])

        ours, theirs = [], []
        for _ in range(args.scorecam_repeats):
            ours.append(
                timed(lambda: optimize(clf, one, [c], iterations=100, tol=None, progress=False), device)
            )
            theirs.append(timed(peer, device))
        report["opticam100_s"] = statistics.median(ours)
        report["gradcam_lib_scorecam_s"] = statistics.median(theirs)
        report["speedup_vs_scorecam"] = report["gradcam_lib_scorecam_s"] / report["opticam100_s"]
        print(
            f"  one image: Opti-CAM 100 it. {report['opticam100_s']:.2f} s, pytorch-grad-cam ScoreCAM "
            f"{report['gradcam_lib_scorecam_s']:.2f} s -> {report['speedup_vs_scorecam']:.1f}x (target >= 4x)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.json), json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
