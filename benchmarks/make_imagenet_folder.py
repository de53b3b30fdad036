"""Write an ImageNet-style folder of N generated photographs (issue 13, goal 4: ``reproduce`` over >= 2,048 images).

Layout (a) of ``opticam_lib.images.load_imagenet_folder``: ``OUT/<wnid>/<wnid>_<k>.JPEG``, the class given by the
folder. Each image is one of the 10 offline sample photographs (``load_samples``) under a random crop (50-100 % of
the side), a horizontal flip and a brightness/contrast change, resized to ``--size``, labelled with the photograph's
ImageNet class: real content with its true class, so AD/AG/AI mean something, and nothing to download. Deterministic
from ``--seed``: the same N images byte for byte in every run.

    python benchmarks/make_imagenet_folder.py --out /tmp/imagenet-gen --n 2048
    python -m opticam_lib reproduce --table 1 --methods opticam --images /tmp/imagenet-gen:2048 ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from opticam_lib.errors import InputError
from opticam_lib.images import imagenet_wnids, load_samples


def variant(photo: torch.Tensor, gen: torch.Generator, size: int) -> torch.Tensor:
    """One random view of ``photo`` (3, S, S) in [0, 1]: crop, flip, brightness/contrast -> (3, size, size) in [0, 1]."""
    side = photo.shape[-1]
    crop = int(side * (0.5 + 0.5 * float(torch.rand((), generator=gen))))
    top = int(torch.randint(0, side - crop + 1, (), generator=gen))
    left = int(torch.randint(0, side - crop + 1, (), generator=gen))
    x = photo[:, top : top + crop, left : left + crop]
    if float(torch.rand((), generator=gen)) < 0.5:
        x = x.flip(-1)
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    brightness = 0.8 + 0.4 * float(torch.rand((), generator=gen))
    contrast = 0.8 + 0.4 * float(torch.rand((), generator=gen))
    mean = x.mean()
    return ((x - mean) * contrast + mean * brightness).clamp(0, 1)


def make_folder(out: Path, n: int, size: int = 224, seed: int = 0) -> list[Path]:
    """Write n JPEG images under ``out/<wnid>/``; returns their paths in writing order (round-robin over classes)."""
    if not (isinstance(n, int) and n >= 1):
        raise InputError(f"n must be a positive number of images, got {n!r}")
    if not (isinstance(size, int) and size >= 8):
        raise InputError(f"size must be an int >= 8, got {size!r}")
    samples = load_samples(size=max(size, 224))
    wnids = imagenet_wnids()
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for k in range(n):
        i = k % len(samples.labels)
        wnid = wnids[int(samples.labels[i])]
        image = variant(samples.images[i], gen, size)
        path = out / wnid / f"{wnid}_{k:06d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write (created)")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = make_folder(Path(args.out), args.n, args.size, args.seed)
    classes = len({p.parent.name for p in paths})
    print(f"wrote {len(paths)} images of {classes} classes under {args.out}")


if __name__ == "__main__":
    main()
