"""Time to quality of Opti-CAM's solvers: how many passes, and seconds, until the paper's quality is reached.

The reference is the paper's recipe (Adam, lr 0.1, u = 0.5) run to ``--reference`` iterations (100, the paper's),
scored by AD, AG and AI (eq. 13-15). Each candidate solver then runs for ``--budget`` iterations with the maps
scored after every iteration; it *reaches* the reference at the first iteration where AG >= reference AG - 1 and
AD <= reference AD + 1. Reported for each solver on each set: that number of passes (one forward + backward of
the batch per iteration; the one feature pass every solver shares is not counted) and the optimisation seconds
until then (the scoring of the checkpoints excluded), and AG/AD/AI after 10 and 20 passes.

Sets: (a) the sample photos with ``efficientnet_lite0`` and their ground-truth classes; (b) ``--world-n`` images
of the controlled world (``world_cnn``, their labels). Candidates are options of ``opticam_lib.optimize``:
larger Adam steps, a cosine schedule, SGD with momentum and iRprop+ (``optimizer="rprop"``). Others tried in a
research probe (per-image backtracking line searches, sign and mirror ascent, L-BFGS, a Grad-CAM warm start, Adam
then a line search) did no better than iRprop+ and are not in the library; see the README's Speed section.

    python benchmarks/bench_time_to_quality.py                     # both sets, about 5 minutes on 2 CPU cores
    python benchmarks/bench_time_to_quality.py --sets world --world-n 256 --json outputs/ttq.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from opticam_lib import load_classifier
from opticam_lib.course.beyond import QualityCurve, time_to_quality
from opticam_lib.images import load_samples
from opticam_lib.paths import atomic_write
from opticam_lib.world import generate

REFERENCE = {"lr": 0.1}  # the paper's recipe: Adam, lr 0.1, u = 0.5, constant step
CANDIDATES: dict[str, dict] = {
    "Adam lr 0.5": {"lr": 0.5},
    "Adam lr 0.5, cosine": {"lr": 0.5, "schedule": "cosine"},
    "SGD lr 50, momentum 0.9": {"optimizer": "sgd", "lr": 50.0, "momentum": 0.9},
    "iRprop+ (optimizer='rprop')": {"optimizer": "rprop"},
}


def reached(curve: QualityCurve, ag: float, ad: float) -> tuple[int, float] | None:
    """(passes, seconds) at the first checkpoint with AG >= ag - 1 and AD <= ad + 1; None if none."""
    return curve.reaching_quality(ag, ad, margin=1.0)


def at(curve: QualityCurve, passes: int) -> dict | None:
    if passes not in curve.iterations:
        return None
    i = curve.iterations.index(passes)
    return {"AG": curve.AG[i], "AD": curve.AD[i], "AI": curve.AI[i]}


def run_set(name: str, clf, images: torch.Tensor, labels: torch.Tensor, args) -> dict:
    ref = time_to_quality(clf, images, labels, {"reference": REFERENCE}, iterations=args.reference, every=1)
    r = ref["reference"]
    out = {
        "model": clf.name,
        "images": int(images.shape[0]),
        "reference": {
            "settings": "Adam, lr 0.1, u = 0.5",
            "iterations": args.reference,
            "AG": r.AG[-1],
            "AD": r.AD[-1],
            "AI": r.AI[-1],
            "seconds": r.seconds[-1],
            "reached_at": reached(r, r.AG[-1], r.AD[-1]),
        },
        "solvers": {},
    }
    candidates = {n: o for n, o in CANDIDATES.items() if args.only is None or n in args.only}
    curves = time_to_quality(clf, images, labels, candidates, iterations=args.budget, every=1)
    for label, curve in curves.items():
        hit = reached(curve, r.AG[-1], r.AD[-1])
        out["solvers"][label] = {
            "options": curve.options,
            "passes_to_reference": None if hit is None else hit[0],
            "seconds_to_reference": None if hit is None else hit[1],
            "at_10": at(curve, 10),
            "at_20": at(curve, 20),
            "final": {"passes": curve.iterations[-1], "AG": curve.AG[-1], "AD": curve.AD[-1]},
        }
    print(
        f"\n{name}: {clf.name}, {images.shape[0]} images; reference (the paper's recipe, {args.reference} it.):"
    )
    ref_o = out["reference"]
    print(f"  AG {ref_o['AG']:.1f}  AD {ref_o['AD']:.1f}  AI {ref_o['AI']:.1f}  in {ref_o['seconds']:.1f} s")
    print(f"  {'solver':<30}{'passes':>8}{'seconds':>9}   AG/AD @10     AG/AD @20")
    for label, row in out["solvers"].items():
        p = row["passes_to_reference"]
        s = row["seconds_to_reference"]
        cell = [f"{v['AG']:5.1f}/{v['AD']:4.1f}" if v else "      -   " for v in (row["at_10"], row["at_20"])]
        print(
            f"  {label:<30}{(str(p) if p else f'>{args.budget}'):>8}{(f'{s:.1f}' if s else '-'):>9}   "
            f"{cell[0]}    {cell[1]}"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="samples,world", help="samples, world or both (comma-separated)")
    ap.add_argument("--reference", type=int, default=100, help="iterations of the reference (paper: 100)")
    ap.add_argument("--budget", type=int, default=60, help="iterations for each candidate")
    ap.add_argument("--world-n", type=int, default=64, help="images of the controlled world")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--samples-limit", type=int, default=None, help="first N sample photos (default all)")
    ap.add_argument("--only", default=None, help="comma-separated candidate labels (default all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default="outputs/bench_time_to_quality.json")
    args = ap.parse_args()
    if args.only is not None:
        args.only = [s.strip() for s in args.only.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "budget": args.budget,
        "rule": "reached: AG >= reference AG - 1 and AD <= reference AD + 1; passes = forward+backward passes of "
        "the batch (the shared feature pass not counted); seconds exclude the checkpoints' scoring",
        "sets": {},
    }
    for name in [s.strip() for s in args.sets.split(",")]:
        if name == "samples":
            clf = load_classifier("efficientnet_lite0")
            s = load_samples()
            n = len(s) if args.samples_limit is None else args.samples_limit
            report["sets"]["samples"] = run_set("samples", clf, s.images[:n], s.labels[:n], args)
        elif name == "world":
            clf = load_classifier("world_cnn")
            b = generate(None, args.world_n, seed=args.world_seed)
            report["sets"]["world"] = run_set("world", clf, b.images, b.labels, args)
        else:
            raise SystemExit(f"unknown set {name!r}: samples or world")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(report, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
