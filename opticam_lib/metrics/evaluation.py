"""Run a method over a set of images and report the paper's Table 1 columns: AD, AG, AI and T.

T is the time per batch of 8 images, as in the paper: the method's wall-clock time over all batches,
divided by the number of images, times 8. It depends on the machine: always say which device gave it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from opticam_lib.hooks import frozen
from opticam_lib.inputs import prepare, validate_maps, validate_positive_int
from opticam_lib.methods.registry import Method, display_name, get_method, validate_options
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.models.classifier import Classifier
from opticam_lib.paths import atomic_write


@dataclass
class Evaluation:
    """One method on one set of images.

    Attributes:
        method: display name (``"Opti-CAM"``).
        model: classifier name.
        device: where it ran (``"cpu"``, ``"cuda"``).
        p, o: (N,) class probability on each image and on the masked image.
        AD, AG, AI: eq. (13), (15), (14), in percent.
        T: seconds per batch of 8 images.
        maps: (N, 1, H, W) maps when ``keep_maps`` was set.
    """

    method: str
    model: str
    device: str
    p: Tensor
    o: Tensor
    AD: float
    AG: float
    AI: float
    T: float
    targets: Tensor
    options: dict = field(default_factory=dict)
    maps: Tensor | None = None

    def row(self) -> dict[str, float | str]:
        """The table row: method, AD, AG, AI, T."""
        return {"method": self.method, "AD": self.AD, "AG": self.AG, "AI": self.AI, "T": self.T}

    def to_json(self) -> dict:
        """Everything but the maps, as plain Python values."""
        d = asdict(self)
        d.pop("maps")
        for k in ("p", "o", "targets"):
            d[k] = [float(x) if k != "targets" else int(x) for x in d[k]]
        d["options"] = {
            k: v if isinstance(v, int | float | str | bool | None) else repr(v)
            for k, v in self.options.items()
        }
        return d


def evaluate(
    classifier: Classifier,
    method: str | Method,
    images: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    batch_size: int = 8,
    keep_maps: bool = False,
    warmup: bool = True,
    **options: Any,
) -> Evaluation:
    """Maps of ``method`` for every image (in batches), then AD/AG/AI against ``targets`` and the time T.

    Args:
        method: a registered name (``"gradcam"``) or a function ``fn(classifier, images, targets, **options)``
            returning (n, 1, H, W) (or (n, H, W)) maps in [0, 1] of its n images; anything else, or maps of another
            shape, not finite or outside [0, 1], is an ``InputError`` naming the method.
        images: (N, 3, H, W) float in [0, 1], any float dtype (cast to the model's, as the methods do).
        targets: the class c of each image (the paper uses the ground truth); None: the predicted class.
        batch_size: images per call of the method (8 in the paper's T column).
        warmup: before the clock starts, run one untimed forward and backward pass of the classifier on the first
            batch (parameters frozen, nothing left in ``.grad``): the first pass through a model pays one-off costs
            (memory pools, kernel selection) that would otherwise be charged to whichever method runs first; a
            cold first call measured Grad-CAM at several times XGrad-CAM, the same computation.
        options: passed to the method (e.g. ``iterations=30`` for Opti-CAM); ``progress`` defaults to False.
    """
    batch_size = validate_positive_int(batch_size, "batch_size")
    fn = get_method(method)  # first: a tensor here means images and method were swapped, and it says so
    images, targets = prepare(classifier, images, targets)  # checked, on the model's device and float dtype
    name = display_name(method)
    validate_options(fn, options, name)
    if _accepts_progress(fn):
        options.setdefault("progress", False)
    if warmup:
        warm_up(classifier, images[:batch_size])
    maps = []
    seconds = 0.0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        t = targets[start : start + batch_size]
        _sync(classifier.device)
        t0 = time.perf_counter()
        m = fn(classifier, x, t, **options)
        _sync(classifier.device)
        seconds += time.perf_counter() - t0
        label = f"the maps of method {name!r} (images {start}..{start + x.shape[0] - 1})"
        maps.append(validate_maps(m, x, name=label).detach().to(classifier.device))
    return score_maps(
        classifier, name, images, targets, torch.cat(maps), seconds, options, keep_maps=keep_maps
    )


def score_maps(
    classifier: Classifier,
    method: str,
    images: Tensor,
    targets: Tensor,
    maps: Tensor,
    seconds: float,
    options: dict[str, Any],
    *,
    keep_maps: bool = True,
    p: Tensor | None = None,
) -> Evaluation:
    """The ``Evaluation`` of maps already computed: AD/AG/AI of ``images * maps`` and T from ``seconds``.

    Args:
        method: the display name for the row.
        images: (N, 3, H, W) float in [0, 1] and targets (N,) int, as ``prepare`` returns them.
        maps: (N, 1, H, W) float in [0, 1] on the classifier's device.
        seconds: the time the maps of all N images took (T = seconds / N * 8).
        options: the method's options, kept in the row.
        p: (N,) the class probabilities on ``images`` when already known (computed otherwise).
    Raises:
        InputError: maps of another shape than (N, 1, H, W), not finite, or outside [0, 1].
    """
    maps = validate_maps(maps, images, name=f"the maps of {method}")
    p = class_probability(classifier, images, targets) if p is None else p
    o = class_probability(classifier, images * maps, targets)
    return Evaluation(
        method=method,
        model=classifier.name,
        device=str(classifier.device),
        p=p,
        o=o,
        targets=targets.cpu(),
        T=seconds / images.shape[0] * 8,
        options=dict(options),
        maps=maps.detach().cpu() if keep_maps else None,
        **classification_metrics(p, o),
    )


def warm_up(classifier: Classifier, images: Tensor) -> None:
    """One untimed forward and backward pass to ``images`` ((n, 3, H, W) float in [0, 1]) with the classifier's
    parameters frozen and in eval mode (both restored): the one-off costs of a first pass are paid here."""
    if torch.is_inference_mode_enabled():  # no backward possible: the forward pass alone (a method that needs
        with frozen(classifier.model):  # gradients says so itself)
            classifier.validate_logits(classifier.model(images.to(classifier.device)))
        _sync(classifier.device)
        return
    x = images.to(classifier.device).detach().requires_grad_(True)
    with frozen(classifier.model), torch.enable_grad():  # also under a caller's torch.no_grad()
        out = classifier.validate_logits(classifier.model(x))
        # a network that cuts the graph: a gradient method says so, a gradient-free one runs
        if out.requires_grad:
            torch.autograd.grad(out.sum(), x)
    _sync(classifier.device)


def _accepts_progress(fn: Method) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "progress" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def format_table(rows: Sequence[Evaluation | dict], title: str = "") -> str:
    """The paper's Table 1 layout: METHOD, AD↓, AG↑, AI↑, T (one decimal, T two).

    The METHOD column is as wide as the longest name (at least 16 characters), so the numbers of every row
    line up under their headers whatever the names."""
    dicts = [r.row() if isinstance(r, Evaluation) else r for r in rows]
    width = max([16, *(len(str(d["method"])) + 2 for d in dicts)])
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'METHOD':<{width}}{'AD↓':>8}{'AG↑':>8}{'AI↑':>8}{'T':>9}")
    for d in dicts:
        lines.append(f"{d['method']!s:<{width}}{d['AD']:>8.1f}{d['AG']:>8.1f}{d['AI']:>8.1f}{d['T']:>9.2f}")
    return "\n".join(lines)


def save_json(rows: Sequence[Evaluation], path: str | Path, meta: dict | None = None) -> Path:
    """Write the evaluations (per-image p, o and the averages) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta or {}, "results": [r.to_json() for r in rows]}
    return atomic_write(path, json.dumps(payload, indent=2))
