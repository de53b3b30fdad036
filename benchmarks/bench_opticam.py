"""Opti-CAM speed, measured side by side in one process on the same batch (ratios, not absolute times).

1. Overhead per iteration: one Opti-CAM iteration against the floor, one bare forward plus backward to the
   input of the same model on the same batch (parameters frozen). Target: at most 10% over the floor.
2. Opti-CAM at 100 iterations against pytorch-grad-cam's ScoreCAM, same model, same layer, same image.
   Target: Opti-CAM at least 4 times faster.

Runs are interleaved (A, B, A, B, ...) and medians compared, because these machines are noisy.

    python benchmarks/bench_opticam.py                 # efficientnet_lite0 on the CPU
    python benchmarks/bench_opticam.py --device cuda --json outputs/bench_opticam_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from opticam_lib import load_classifier, optimize
from opticam_lib.hooks import frozen
from opticam_lib.images import load_samples


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
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of each measurement")
    ap.add_argument("--skip-scorecam", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    clf = load_classifier(args.model, device=device, pretrained=args.model == "efficientnet_lite0")
    samples = load_samples(size=clf.input_size)
    images = samples.images[: args.batch].to(device)
    targets = samples.labels[: args.batch].to(device)
    report: dict = {
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
    floors, iters = [], []
    for _ in range(args.repeats):
        floors.append(
            timed(lambda: [floor_step(clf, images, targets) for _ in range(args.iterations)], device)
        )
        iters.append(
            timed(
                lambda: optimize(clf, images, targets, iterations=args.iterations, tol=None, progress=False),
                device,
            )
        )
    floor = statistics.median(floors) / args.iterations
    per_iter = statistics.median(iters) / args.iterations  # includes the one-off feature pass, amortised
    report["floor_s_per_iteration"] = floor
    report["opticam_s_per_iteration"] = per_iter
    report["overhead_ratio"] = per_iter / floor
    print(f"[{report['device']}] {clf.name}, batch {images.shape[0]}:")
    print(f"  floor (forward + backward to input): {floor:.4f} s   Opti-CAM iteration: {per_iter:.4f} s")
    print(f"  overhead: {100 * (per_iter / floor - 1):+.1f}% (target <= +10%)")

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
        for _ in range(max(1, args.repeats - 1)):
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
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
