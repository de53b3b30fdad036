"""Opti-CAM on one photo at a time, as the explorer widget runs it: seconds per photo and the quality reached.

For each sample photo alone (a batch of one, its ground-truth class), each recipe runs in turn on that photo
(interleaved, so a slow spell of the machine slows every recipe alike): the paper's recipe (Adam, lr 0.1,
100 iterations) and iRprop+ (``optimizer="rprop"``, its default first step 0.5) at 30 and 40 iterations. Timed:
the whole ``optimize`` call (feature pass included), as the explorer waits for it. Reported per recipe: the
median seconds per photo with its quartiles, and AD / AG / AI (eq. 13-15) over the photos, from each photo's
masked probability.

    python benchmarks/bench_one_photo.py --json benchmarks/results/cpu_one_photo.json   # about 2 minutes, 2 cores
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
from opticam_lib.images import load_samples
from opticam_lib.metrics import class_probability, classification_metrics
from opticam_lib.paths import atomic_write

RECIPES: dict[str, dict] = {
    "Adam lr 0.1, 100 iterations (the paper's)": {"lr": 0.1, "iterations": 100},
    "iRprop+, 30 iterations": {"optimizer": "rprop", "iterations": 30},
    "iRprop+, 40 iterations": {"optimizer": "rprop", "iterations": 40},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--limit", type=int, default=None, help="first N sample photos (default all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply every recipe's iterations (a quick check)"
    )
    ap.add_argument("--json", default="outputs/bench_one_photo.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = load_classifier(args.model)
    samples = load_samples()
    n = len(samples) if args.limit is None else args.limit
    images, labels = samples.images[:n], samples.labels[:n]
    recipes = {
        name: {**options, "iterations": max(1, round(args.scale * options["iterations"]))}
        for name, options in RECIPES.items()
    }
    seconds: dict[str, list[float]] = {name: [] for name in RECIPES}
    masked: dict[str, list[float]] = {name: [] for name in RECIPES}
    for i in range(n):
        image, target = images[i : i + 1], labels[i : i + 1]
        for name, options in recipes.items():
            t0 = time.perf_counter()
            result = optimize(clf, image, target, progress=False, **options)
            seconds[name].append(time.perf_counter() - t0)
            masked[name].append(float(class_probability(clf, image * result.maps, target)[0]))
        print(f"photo {i + 1}/{n}: " + ", ".join(f"{seconds[k][-1]:.2f} s" for k in RECIPES), file=sys.stderr)
    p = class_probability(clf, images, labels)
    rows = {}
    for name, options in recipes.items():
        q1, median, q3 = statistics.quantiles(seconds[name], n=4) if n > 1 else [seconds[name][0]] * 3
        metrics = classification_metrics(p, torch.tensor(masked[name]))
        rows[name] = {
            "options": options,
            "seconds_per_photo": {"median": median, "q1": q1, "q3": q3},
            "seconds": seconds[name],
            **{k: metrics[k] for k in ("AD", "AG", "AI")},
        }
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "model": clf.name,
        "photos": n,
        "recipes": rows,
    }
    print(
        f"{clf.name}, {n} photos, one at a time (median seconds per photo [quartiles]; AD/AG/AI over the photos)"
    )
    for name, row in rows.items():
        s = row["seconds_per_photo"]
        print(
            f"  {name:<44}{s['median']:6.2f} s [{s['q1']:.2f}, {s['q3']:.2f}]   "
            f"AD {row['AD']:5.1f}  AG {row['AG']:5.1f}  AI {row['AI']:5.1f}"
        )
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
