"""Compare two ``python -m opticam_lib reproduce`` runs image by image (issue 13, goal 4): a GPU run over a large
generated folder against a CPU run over its first images. Writes one JSON.

Each run's ``records-*.jsonl`` holds one line per image, method and variant with p (the class probability on the
image) and o (on the image masked by the map). On the images both runs hold, this reports the largest |p - p'|
and |o - o'|, and AD / AG / AI (eq. 13-15) of each run on those images, so "the numbers equal a CPU run on a
subset" is checked on per-image values, not on averages alone. ``--seconds`` and ``--images`` (the big run's
wall-clock time and image count) add its images per second.

    python benchmarks/compare_reproduce.py outputs/rep_gpu outputs/rep_cpu --seconds 95.2 --images 2048 \\
        --json outputs/reproduce_compare.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from opticam_lib.errors import InputError
from opticam_lib.metrics.classification import classification_metrics
from opticam_lib.paths import atomic_write


def read_records(folder: Path) -> dict[tuple[str, str, int], dict]:
    """{(method, variant, image index): record} of every ``records-*.jsonl`` in ``folder``."""
    files = sorted(folder.glob("records-*.jsonl"))
    if not files:
        raise InputError(f"no records-*.jsonl in {folder}: is it the --out folder of a reproduce run?")
    out = {}
    for path in files:
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["method"], r["variant"], int(r["index"]))] = r
    return out


def compare(big: Path, small: Path) -> dict:
    """Per (method, variant): images in common, max |dp|, max |do|, and AD/AG/AI of each run on those images."""
    a, b = read_records(big), read_records(small)
    common = sorted(set(a) & set(b))
    if not common:
        raise InputError(f"the runs in {big} and {small} share no (method, variant, image)")
    out: dict[str, dict] = {}
    for method, variant in sorted({(m, v) for m, v, _ in common}):
        keys = [k for k in common if k[:2] == (method, variant)]
        pa = torch.tensor([a[k]["p"] for k in keys], dtype=torch.float64)
        oa = torch.tensor([a[k]["o"] for k in keys], dtype=torch.float64)
        pb = torch.tensor([b[k]["p"] for k in keys], dtype=torch.float64)
        ob = torch.tensor([b[k]["o"] for k in keys], dtype=torch.float64)
        out[f"{method}/{variant}"] = {
            "images": len(keys),
            "max_abs_p_difference": float((pa - pb).abs().max()),
            "max_abs_o_difference": float((oa - ob).abs().max()),
            "first": classification_metrics(pa, oa),
            "second": classification_metrics(pb, ob),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", help="--out folder of the big run (the GPU's)")
    ap.add_argument("second", help="--out folder of the small run (the CPU's, on the first images)")
    ap.add_argument("--seconds", type=float, default=None, help="wall-clock seconds of the first run")
    ap.add_argument("--images", type=int, default=None, help="images of the first run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    report: dict = {
        "first": args.first,
        "second": args.second,
        "methods": compare(Path(args.first), Path(args.second)),
    }
    if args.seconds and args.images:
        report.update(seconds=args.seconds, images=args.images, images_per_second=args.images / args.seconds)
        print(
            f"first run: {args.images} images in {args.seconds:.1f} s = {report['images_per_second']:.1f} images/s"
        )
    for name, m in report["methods"].items():
        print(
            f"{name}: {m['images']} images in common; max |p - p'| {m['max_abs_p_difference']:.2e}, "
            f"max |o - o'| {m['max_abs_o_difference']:.2e}; AG {m['first']['AG']:.2f} vs {m['second']['AG']:.2f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(args.json), json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
