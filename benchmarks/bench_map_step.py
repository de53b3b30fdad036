"""What an Opti-CAM iteration adds to the floor: the map's forward and backward pass, side by side in one process.

One iteration is the floor (one forward + backward of the masked images to the input, parameters frozen) plus the
map: softmax(u), the combination (eq. 8), upsampling and range normalisation (eq. 16), the product with the
images, and the backward pass of all that to u. This benchmark times the map alone, for each way of computing
it, interleaved with the floor on the same batch (a slow spell of the machine slows every variant alike), and
reports each as a fraction of the floor:

- ``interpolate``: ``normalize(F.interpolate(S))``, the CPU default (PyTorch's bilinear kernel, which made every
  number the course records);
- ``matrix, normalised after``: ``normalize(R_H S R_W^T)``, the matrix path as it was before it normalised first;
- ``matrix``: ``maps.range_normalized_upsample``, normalised at low resolution (the matrix path today, the GPU
  default).

The network's gradient at the masked images is replaced by a fixed random tensor of the same shape: the map's
backward pass costs the same whatever that gradient holds.

    python benchmarks/bench_map_step.py --json benchmarks/results/cpu_map_step.json   # about a minute, 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from opticam_lib import load_classifier
from opticam_lib.course.speed import device_name
from opticam_lib.hooks import frozen
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.maps import combine, normalize, upsample
from opticam_lib.methods.opti_cam import saliency_map
from opticam_lib.paths import atomic_write


def map_variants(
    acts: torch.Tensor, size: tuple[int, int]
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """{name: u (N, K) -> mask (N, 1, H, W)} for the three ways of computing n(up(S(u)))."""
    return {
        "interpolate": lambda u: saliency_map(u, acts, size, upsampling="interpolate"),
        "matrix, normalised after": lambda u: normalize(
            upsample(combine(torch.softmax(u, dim=1), acts, "identity"), size, "matrix")
        ),
        "matrix": lambda u: saliency_map(u, acts, size, upsampling="matrix"),
    }


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call (the GPU synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure(clf, batch: int, size: tuple[int, int], repeats: int, maps_per_round: int) -> list[dict]:
    """One row per map variant at this batch size: its median time and its percentage of the floor (quartiles),
    each round timing the floor and then every variant."""
    device = clf.device
    gen = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, 3, *size, generator=gen).to(device)
    targets = torch.randint(0, clf.num_classes, (batch,), generator=gen).to(device)
    acts, _ = features(clf, images)
    grad_out = torch.randn(batch, 3, *size, generator=gen).to(device)
    variants = map_variants(acts, size)

    def floor() -> None:
        x = images.clone().requires_grad_(True)
        score = clf.model(x).gather(1, targets[:, None]).sum()
        torch.autograd.grad(score, x)

    def map_pass(make: Callable[[torch.Tensor], torch.Tensor]) -> None:
        for _ in range(maps_per_round):
            u = torch.zeros(batch, acts.shape[1], device=device).requires_grad_(True)
            torch.autograd.grad(images * make(u), u, grad_out)

    with frozen(clf.model):
        floor()  # warm-up
        for make in variants.values():
            map_pass(make)
        floors: list[float] = []
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            floors.append(timed(floor, device))
            for name, make in variants.items():
                seconds[name].append(timed(lambda m=make: map_pass(m), device) / maps_per_round)
    rows = []
    for name, values in seconds.items():
        percents = [100 * v / f for v, f in zip(values, floors, strict=True)]
        q1, median, q3 = statistics.quantiles(percents, n=4) if len(percents) > 1 else [percents[0]] * 3
        rows.append(
            {
                "batch": batch,
                "variant": name,
                "floor_ms": 1e3 * statistics.median(floors),
                "map_ms": 1e3 * statistics.median(values),
                "percent_of_floor": {"median": median, "q1": q1, "q3": q3},
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds per batch size")
    ap.add_argument("--maps-per-round", type=int, default=5, help="map passes timed together in each round")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timings synchronise the GPU)")
    ap.add_argument("--json", default="outputs/bench_map_step.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = load_classifier(args.model, device=args.device)
    device = clf.device
    size = (args.size, args.size)
    rows = [
        row
        for batch in (int(b) for b in args.batches.split(","))
        for row in measure(clf, batch, size, args.repeats, args.maps_per_round)
    ]
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "model": clf.name,
        "size": args.size,
        "rows": rows,
    }
    print(
        f"{clf.name} at {args.size} x {args.size}: the map's forward + backward pass, as a fraction of the floor"
    )
    for row in rows:
        f = row["percent_of_floor"]
        print(
            f"  batch {row['batch']:3d}  {row['variant']:<26}{row['map_ms']:8.2f} ms  "
            f"{f['median']:5.2f} % of the floor ({row['floor_ms']:.1f} ms) "
            f"[{f['q1']:.2f}, {f['q3']:.2f}]"
        )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
