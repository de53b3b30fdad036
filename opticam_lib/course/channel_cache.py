"""Score-CAM's and Ablation-CAM's channel weights on the sample photos, computed once and shipped: a cache.

At the paper's layer of ``efficientnet_lite0`` (``bn2``, K = 1,280 channels) each of the two methods needs 1,280
forward passes per photo, several minutes for the ten photos on 2 CPU cores: more than a notebook's budget.
Their maps, though, are cheap once the per-channel values are known (one forward pass for the feature maps).
So ``python -m opticam_lib precompute`` computes those values (Score-CAM's u_k of eq. 3, Ablation-CAM's w_k) with
the library's own ``masking.channel_scores`` and ``masking.ablation_weights`` and saves them in
``opticam_lib/data/channel_weights/``, keyed by the model's weights, the layer, the images and the target
classes. ``cached_channel_weights`` hands them back only when all four match, and otherwise says how to rebuild
them; a test recomputes one photo and compares. The file also records how long the computation took, where.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from opticam_lib.digests import image_digests, model_digest
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.inputs import prepare, validate_choice
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.masking import ablation_weights, channel_scores
from opticam_lib.models.classifier import Classifier
from opticam_lib.paths import atomic_write, writable_file

CACHE_DIR = Path(__file__).resolve().parents[1] / "data" / "channel_weights"
CACHED_METHODS: tuple[str, ...] = ("scorecam", "ablationcam")


def validate_cache_key(
    meta: dict,
    path: Path,
    command: str,
    classifier: Classifier,
    images: Tensor,
    expected: dict[str, tuple[object, str]],
) -> None:
    """Refuse a cache file made for anything else: ``expected`` maps a meta key to (the value it must have, how to
    name a mismatch); the images' and the model's digests are always checked (the model's last, being the costliest).

    Raises:
        MissingDataError: naming every mismatch and the command that rebuilds the file.
    """
    problems = [label for key, (value, label) in expected.items() if meta.get(key) != value]
    if meta.get("images") != image_digests(images):
        problems.append("other images")
    if not problems and meta.get("model_sha256") != model_digest(classifier):
        problems.append("other model weights")
    if problems:
        raise MissingDataError(f"{path} was made for {', '.join(problems)}; rebuild it with: {command}")


CHANNEL_META_KEYS = ("model", "model_sha256", "layer", "images", "names", "targets", "seconds", "machine", "date",
                     "command")  # fmt: skip


def read_cache_file(
    path: Path, command: str, what: str, part: str, meta_keys: tuple[str, ...]
) -> tuple[dict[str, Any], Any]:
    """(meta, saved[part]) of a cache file written by this library (``torch.load(..., weights_only=True)``).

    Raises:
        MissingDataError: the file cannot be read, or is not a whole ``what`` (no ``meta`` dict holding every key
            of ``meta_keys``, or no ``part``): the message names what is missing and the command that rebuilds it.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable: say which file and how to replace it
        raise MissingDataError(
            f"{path} cannot be read ({type(e).__name__}): it is truncated or not {what} of this library; "
            f"rebuild it with: {command}"
        ) from e
    meta = saved.get("meta") if isinstance(saved, dict) else None
    missing = [k for k in meta_keys if k not in meta] if isinstance(meta, dict) else ["meta"]
    if not isinstance(saved, dict) or part not in saved:
        missing.append(part)
    if missing:
        raise MissingDataError(
            f"{path} is not a whole {what} (it lacks {', '.join(missing)}); rebuild it with: {command}"
        )
    return meta, saved[part]


def cache_path(model: str, layer: str) -> Path:
    """``opticam_lib/data/channel_weights/<model>_<layer>.pt``."""
    return CACHE_DIR / f"{model}_{layer.replace('.', '-')}.pt"


def precompute_command(model: str, layer: str) -> str:
    """The shell command that rebuilds the channel-weight cache of ``model`` at ``layer``."""
    return f"python -m opticam_lib precompute --model {model} --layer {layer}"


@dataclass
class ChannelCache:
    """Per-channel values of Score-CAM and Ablation-CAM for a set of images.

    Attributes:
        weights: {method: (N, K) float32}: Score-CAM's u_k (before the softmax), Ablation-CAM's w_k.
        meta: model, model digest, layer, image digests and names, targets, and for each method the seconds it
            took and on what machine (``seconds``, ``machine``), the date and the command.
        path: the file.
    """

    weights: dict[str, Tensor]
    meta: dict
    path: Path

    def seconds(self, method: str) -> float:
        """Wall-clock seconds the K forward passes per image took when the cache was built."""
        return float(self.meta["seconds"][method])

    def note(self) -> str:
        """One line saying where these numbers come from."""
        m = self.meta
        spent = ", ".join(f"{k} {v:.0f} s" for k, v in m["seconds"].items())
        return (
            f"channel weights from {self.path.name}: computed {m['date']} with `{m['command']}` "
            f"({spent} on {m['machine']}); keyed by the model's weights, layer {m['layer']!r}, "
            f"the {len(m['images'])} images and their target classes"
        )


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def build_channel_cache(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    names: list[str] | None = None,
    layer: str | None = None,
    methods: tuple[str, ...] = CACHED_METHODS,
    path: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ChannelCache:
    """Compute every channel's value for ``methods`` and save them (``torch.save``; loaded with weights_only).

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: one class per image.
        layer: the target layer (default the classifier's).
        path: where to write (default ``cache_path(model, layer)``).
    """
    for m in methods:
        validate_choice(m, "method", CACHED_METHODS)
    layer = layer or classifier.target_layer
    if path is not None:
        path = writable_file(path, "--out", "channel_weights.pt")  # before the minutes of work, not after
    images, targets = prepare(classifier, images, targets)
    acts, logits = features(classifier, images, layer)
    weights: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for m in methods:
        start = time.perf_counter()
        if m == "scorecam":
            w = channel_scores(classifier, images, targets, acts, batch_size=batch_size, progress=progress)
        else:
            w = ablation_weights(
                classifier, images, targets, acts, logits, layer, batch_size=batch_size, progress=progress
            )
        seconds[m] = time.perf_counter() - start
        weights[m] = w.float().cpu()
    path = Path(path) if path is not None else cache_path(classifier.name, layer)
    meta = {
        "model": classifier.name,
        "model_sha256": model_digest(classifier),
        "layer": layer,
        "images": image_digests(images),
        "names": list(names) if names is not None else [],
        "targets": [int(t) for t in targets.tolist()],
        "seconds": seconds,
        "machine": _machine(),
        "date": datetime.date.today().isoformat(),
        "command": precompute_command(classifier.name, layer),
    }
    path = writable_file(path, "--out", "channel_weights.pt")
    # never a partial file
    atomic_write(path, lambda tmp: torch.save({"meta": meta, "weights": weights}, tmp))
    return ChannelCache(weights, meta, path)


def cached_channel_weights(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    layer: str | None = None,
    path: str | Path | None = None,
) -> ChannelCache:
    """The shipped channel values for exactly these model weights, layer, images and targets.

    Raises:
        MissingDataError: no cache file, or one made for other weights, layer, images or targets (the message
            says which, and the command that rebuilds it).
    """
    layer = layer or classifier.target_layer
    classifier.layer(layer)  # an unknown layer is an InputError that lists the known ones
    images, targets = prepare(classifier, images, targets)
    path = Path(path) if path is not None else cache_path(classifier.name, layer)
    command = precompute_command(classifier.name, layer)
    if not path.is_file():
        raise MissingDataError(f"no channel-weight cache at {path}; build it (minutes) with: {command}")
    meta, weights = read_cache_file(path, command, "channel-weight cache", "weights", CHANNEL_META_KEYS)
    expected = {
        "layer": (layer, f"layer {meta.get('layer')!r}, not {layer!r}"),
        "targets": ([int(t) for t in targets.tolist()], "other target classes"),
    }
    validate_cache_key(meta, path, command, classifier, images, expected)
    if (
        not isinstance(weights, dict)
        or not isinstance(meta["seconds"], dict)
        or set(weights) - set(meta["seconds"])
    ):
        raise MissingDataError(f"{path} is not a whole channel-weight cache; rebuild it with: {command}")
    for m, w in weights.items():
        if (
            not isinstance(w, Tensor)
            or w.dim() != 2
            or w.shape[0] != images.shape[0]
            or not torch.isfinite(w).all()
        ):
            raise InputError(
                f"{path}: the {m} weights are not a finite (N, K) tensor; rebuild with: {command}"
            )
    return ChannelCache(dict(weights), meta, path)
