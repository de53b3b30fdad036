"""The paper's T column (seconds per batch of 8 images) for Grad-CAM, Score-CAM and Opti-CAM, on this device.

Architectures have random weights by default: the time of a forward/backward pass does not depend on the
weights, so this needs no download (``--pretrained`` uses the downloaded ImageNet weights instead). Opti-CAM runs
all its iterations (no early stop), the worst case, as the paper's T column reports. Every method is run once
on one image before it is timed (cuDNN autotuning, allocator), and the device is synchronised around each timing.
The paper's T (Table 1, read from ``opticam_lib.paper``) is printed beside each measurement.

The issue's GPU check, one command (about 1-2 minutes on an H100)::

    python benchmarks/bench_table1_T.py --device cuda --models resnet50,vgg16_bn --batch 8 --iterations 100 \\
        --repeats 3 --json outputs/bench_table1_T_cuda.json

A quick look that it works on a CPU (tiny images, 1 image, 2 iterations; the numbers mean nothing)::

    python benchmarks/bench_table1_T.py --device cpu --batch 1 --size 64 --iterations 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from opticam_lib import gradcam, load_classifier, optimize, scorecam
from opticam_lib.paper.tables import paper_table
from opticam_lib.paths import atomic_write

METHODS = {"gradcam": "Grad-CAM", "scorecam": "Score-CAM", "opticam": "Opti-CAM"}


def paper_T(model: str) -> dict[str, float]:
    """{method: T} of the paper's Table 1 for ``model`` (empty when the paper did not use it)."""
    try:
        rows = paper_table("1", model)
    except Exception:
        return {}
    return {m: float(r["T"]) for m, r in rows.items() if isinstance(r.get("T"), (int, float))}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args, **kwargs) -> float:
    """Wall-clock seconds of fn(*args, **kwargs), synchronising the GPU before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    synchronize(device)
    return time.perf_counter() - t0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vgg16_bn")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pretrained", action="store_true", help="downloaded ImageNet weights (default: random)")
    ap.add_argument(
        "--random", action="store_true", help="random weights (the default; kept for old commands)"
    )
    ap.add_argument("--batch", type=int, default=8, help="images per batch (the paper's T: 8)")
    ap.add_argument("--size", type=int, default=224, help="image side (the paper: 224)")
    ap.add_argument("--iterations", type=int, default=100, help="Opti-CAM iterations (the paper: 100)")
    ap.add_argument("--repeats", type=int, default=1, help="timings per method; the median is reported")
    ap.add_argument(
        "--scorecam-batch", type=int, default=128, help="masked images per Score-CAM forward pass"
    )
    ap.add_argument("--amp", action="store_true", help="also time Opti-CAM with autocast + channels-last")
    ap.add_argument("--methods", default="gradcam,scorecam,opticam")
    ap.add_argument("--json", default=None, help="write the results there")
    args = ap.parse_args(argv)
    for name in ("batch", "size", "iterations", "repeats", "scorecam_batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    device = torch.device(args.device)
    name = device_name(device)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device)
    targets = (torch.arange(args.batch) * 100 + 1) % 1000
    targets = targets.to(device)
    runs = {
        "gradcam": lambda x, t: gradcam(clf, x, t),
        "scorecam": lambda x, t: scorecam(clf, x, t, batch_size=args.scorecam_batch, progress=False),
        "opticam": lambda x, t: optimize(clf, x, t, iterations=args.iterations, tol=None, progress=False),
    }
    results = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        clf = load_classifier(model, device=device, pretrained=args.pretrained)
        row: dict = {
            "model": model,
            "device": name,
            "torch": torch.__version__,
            "pretrained": args.pretrained,
            "batch": args.batch,
            "size": args.size,
            "iterations": args.iterations,
            "repeats": args.repeats,
        }
        for m in methods:
            runs[m](images[:1], targets[:1])  # warm-up on one image
            times = [timed(device, runs[m], images, targets) for _ in range(args.repeats)]
            row[METHODS[m]] = statistics.median(times)
        if args.amp and "opticam" in methods:
            clf.model.to(memory_format=torch.channels_last)

            def amp_run(x, t, clf=clf):
                return optimize(clf, x, t, iterations=args.iterations, tol=None, progress=False, amp=True)

            amp_run(images[:1], targets[:1])
            times = [timed(device, amp_run, images, targets) for _ in range(args.repeats)]
            row["Opti-CAM (amp, channels-last)"] = statistics.median(times)
        results.append(row)
        paper = paper_T(model)
        scale = (
            ""
            if (args.batch, args.size) == (8, 224)
            else f" (NOT the paper's setting: {args.batch} x {args.size} px)"
        )
        print(f"{model} on {name}, random weights: {not args.pretrained}{scale}")
        print(f"  {'METHOD':<32}{'T here (s)':>12}{'paper T (s)':>13}")
        for k, v in row.items():
            if isinstance(v, float):
                base = k.split(" (")[0]
                ref = f"{paper[base]:13.2f}" if base in paper else f"{'-':>13}"
                print(f"  {k:<32}{v:12.2f}{ref}")
    print(
        "T = seconds per batch; the paper's T: Table 1, seconds per batch of 8 on the authors' machine (unnamed) "
        "(ResNet50 / VGG16, 224 px, 100 iterations)."
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        paper_all = {m: paper_T(m) for m in args.models.split(",")}
        atomic_write(Path(args.json), json.dumps({"results": results, "paper_T": paper_all}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
