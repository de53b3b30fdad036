"""SHA-256 digests that say which weights, which images and which code a cached result was computed from: the keys
of the course's shipped caches (``course/channel_cache.py``, ``course/ablation_cache.py``) and of ``reproduce``'s
records.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from opticam_lib.models.classifier import Classifier


def model_digest(classifier: Classifier) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes and values), in key order."""
    h = hashlib.sha256()
    for key, value in sorted(classifier.model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def tensor_digest(t: Tensor) -> str:
    """SHA-256 of a tensor's exact values, dtype and shape (any device; bfloat16 and float16 hashed through
    float32, which holds them exactly): the key of a computation on exactly these numbers. Use ``image_digests``
    to recognise images that only differ by round-off."""
    x = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{x.dtype}|{tuple(x.shape)}|".encode())
    h.update((x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy().tobytes())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_digests(images: Tensor) -> list[str]:
    """SHA-256 of each image (N, 3, H, W) float in [0, 1], quantised to 8 bits (robust to float round-off)."""
    q = (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return [hashlib.sha256(q[i].contiguous().numpy().tobytes()).hexdigest() for i in range(q.shape[0])]


#: the packages whose code computes ``reproduce``'s numbers: not ``course`` (the notebooks' helpers, which it never
#: imports), so a notebook-side edit does not invalidate a long run's records
DIGESTED_PACKAGES = ("", "methods", "metrics", "models", "paper", "world")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the library code that computes ``reproduce``'s numbers: the ``.py`` files of
    ``DIGESTED_PACKAGES`` (hidden files and broken links skipped), by relative path, line endings made ``\\n``
    (a Windows checkout of the same code gives the same digest). It changes when that code is edited or upgraded;
    the versions of torch, timm and the other dependencies are not part of it."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for package in DIGESTED_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            if path.name.startswith(".") or not path.is_file():
                continue
            h.update(path.relative_to(root).as_posix().encode() + b"|")
            h.update(path.read_bytes().replace(b"\r\n", b"\n"))
            h.update(b"|")
    return h.hexdigest()
