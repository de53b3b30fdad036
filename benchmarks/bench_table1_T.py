"""The paper's T column (seconds per batch of 8 images) for Grad-CAM, Score-CAM and Opti-CAM, on this device.

Architectures can have random weights (``--random``): the time of a forward/backward pass does not depend on
the weights, so this needs no download. Opti-CAM runs all 100 iterations (no early stop) so that the time is
the worst case the paper's T column reports.

    python benchmarks/bench_table1_T.py --device cuda --models resnet50,vgg16_bn --random
    python benchmarks/bench_table1_T.py --models efficientnet_lite0 --iterations 10   # a quick CPU look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from opticam_lib import gradcam, load_classifier, optimize, scorecam

PAPER_T = {  # Table 1, seconds per batch of 8 on the authors' GPU
    "resnet50": {"Grad-CAM": 0.03, "Score-CAM": 15.22, "Opti-CAM": 4.15},
    "vgg16_bn": {"Grad-CAM": 0.02, "Score-CAM": 3.11, "Opti-CAM": 3.94},
}


def timed(device: torch.device, fn, *args, **kwargs) -> float:
    """Wall-clock seconds of fn(*args, **kwargs), synchronising the GPU before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vgg16_bn")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--random", action="store_true", help="random weights (no download needed)")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--scorecam-batch", type=int, default=128)
    ap.add_argument("--amp", action="store_true", help="also time Opti-CAM with autocast + channels-last")
    ap.add_argument("--methods", default="gradcam,scorecam,opticam")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 224, 224, generator=gen).to(device)
    results = []
    for model in args.models.split(","):
        clf = load_classifier(model, device=device, pretrained=not args.random)
        targets = torch.arange(8, device=device) * 100 + 1
        gradcam(clf, images, targets)  # warm-up (cuDNN autotuning, allocator)
        optimize(clf, images, targets, iterations=2, progress=False)
        row = {"model": model, "device": name, "random_weights": args.random, "iterations": args.iterations}
        methods = args.methods.split(",")
        if "gradcam" in methods:
            row["Grad-CAM"] = timed(device, gradcam, clf, images, targets)
        if "scorecam" in methods:
            row["Score-CAM"] = timed(
                device, scorecam, clf, images, targets, batch_size=args.scorecam_batch, progress=False
            )
        if "opticam" in methods:
            row["Opti-CAM"] = timed(
                device, optimize, clf, images, targets, iterations=args.iterations, tol=None, progress=False
            )
        if args.amp and "opticam" in methods:
            clf.model.to(memory_format=torch.channels_last)
            optimize(clf, images, targets, iterations=2, progress=False, amp=True)
            row["Opti-CAM (amp, channels-last)"] = timed(
                device,
                optimize,
                clf,
                images,
                targets,
                iterations=args.iterations,
                tol=None,
                progress=False,
                amp=True,
            )
        results.append(row)
        paper = PAPER_T.get(model, {})
        print(f"{model} on {name} (T = s per batch of 8; paper's T in brackets):")
        for k, v in row.items():
            if isinstance(v, float):
                base = k.split(" (")[0]
                ref = f" [paper {paper[base]:.2f}]" if base in paper else ""
                print(f"  {k:<32}{v:8.2f}{ref}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "paper_T": PAPER_T}, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
