"""The classification metrics of section 4: average drop, average increase, average gain (eq. 13-15)
on the class probabilities of the image (p) and of the image masked by its saliency map (o).

Masking: ``x ⊙ S`` with S (N, 1, H, W) in [0, 1], black where S = 0 (the paper's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.hooks import eval_mode
from opticam_lib.inputs import (
    model_dtype,
    prepare,
    validate_maps,
    validate_positive_int,
    validate_unit_interval,
)
from opticam_lib.models.classifier import Classifier

#: how far outside [0, 1] a probability may be (rounding) before it is refused
PROBABILITY_TOLERANCE = 1e-6


@torch.no_grad()
def class_probability(
    classifier: Classifier, images: Tensor, targets: Tensor | Sequence[int], batch_size: int = 64
) -> Tensor:
    """Softmax probability of class ``targets[i]`` for each image, ``batch_size`` images per forward pass.

    images (N, 3, H, W) float (cast to the model's dtype; their values are not checked: this is the low-level
    helper, ``masked_probabilities`` checks them), targets (N,) integer class ids, batch_size a positive int
    -> (N,) float32 in [0, 1], on the CPU.
    """
    batch_size = validate_positive_int(batch_size, "batch_size")
    if not isinstance(images, Tensor):
        raise InputError(f"images must be a torch.Tensor of shape (N, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1], got dtype {images.dtype}")
    n = images.shape[0]
    try:
        t = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"targets must be (N,) integer class ids, got {type(targets).__name__}") from None
    if t.dim() != 1 or t.shape[0] != n:
        raise InputError(f"targets must give one class per image ({n}), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise InputError(f"targets must be integer class ids, got dtype {t.dtype}")
    c = classifier.num_classes
    if n and (int(t.min()) < 0 or int(t.max()) >= c):
        bad = next(int(x) for x in t if not 0 <= int(x) < c)
        raise InputError(f"target class {bad} out of range: {classifier.name!r} has classes 0..{c - 1}")
    dtype = model_dtype(classifier)
    out = []
    with eval_mode(classifier.model):
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(classifier.device, dtype=dtype)
            probs = torch.softmax(classifier.validate_logits(classifier.model(x)).float(), dim=1)
            out.append(probs.gather(1, t[start : start + batch_size, None].long().to(probs.device))[:, 0])
    if not out:  # no image
        return torch.empty(0)
    return torch.cat(out).cpu()


def masked_probabilities(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """p and o of eq. (13)-(15): class probability on each image and on the image masked by its map.

    Args:
        images: (N, 3, H, W) float in [0, 1], any float dtype (cast to the model's, as the methods do).
        maps: (N, 1, H, W) (or (N, H, W)) in [0, 1], the size of the images.
        targets: class c per image (None: the predicted class).
    Returns:
        p (N,), o (N,), float32 in [0, 1], on the CPU.
    """
    images, targets = prepare(classifier, images, targets)
    maps = validate_maps(maps, images).to(classifier.device)
    return class_probability(classifier, images, targets), class_probability(
        classifier, images * maps, targets
    )


def real_tensor(value: object, name: str, shape: str) -> Tensor:
    """``value`` (a tensor, a list or a NumPy array of real numbers) as a float tensor: a float tensor keeps its
    dtype, the rest (lists, arrays, integer tensors) becomes float64. Anything else (strings, ragged lists, bool or complex values)
    is an ``InputError`` naming ``name`` and the expected ``shape`` (which the caller checks)."""
    if isinstance(value, Tensor):
        t = value.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError):
            raise InputError(
                f"{name} must be a tensor, list or array of numbers of shape {shape}, got {type(value).__name__}"
            ) from None
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t if isinstance(value, Tensor) and t.is_floating_point() else t.double()


def validate_probabilities(t: Tensor, name: str) -> Tensor:
    """``t`` (non-empty) finite and in [0, 1] (to ``PROBABILITY_TOLERANCE``), else an ``InputError``."""
    validate_unit_interval(t, name, "must be probabilities in [0, 1]", tolerance=PROBABILITY_TOLERANCE)
    return t


def probability_pair(p: object, o: object) -> tuple[Tensor, Tensor]:
    """p and o of eq. (13)-(15) checked: each (N,) with the same N >= 1, finite, in [0, 1] (tensors, lists or
    NumPy arrays) -> two float64 tensors on the CPU."""
    shape = "(N,), one probability per image"
    p, o = real_tensor(p, "p", shape), real_tensor(o, "o", shape)
    for t, name in ((p, "p"), (o, "o")):
        if t.dim() != 1:
            raise InputError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if p.shape != o.shape:
        raise InputError(
            f"p and o must have the same shape (N,), got p {tuple(p.shape)} and o {tuple(o.shape)}"
        )
    for t, name in ((p, "p"), (o, "o")):
        if t.shape[0] == 0:
            raise InputError(f"{name} is empty: at least one image is needed")
        validate_probabilities(t, name)
    return p.double().cpu(), o.double().cpu()


def drops(p: Tensor, o: Tensor) -> Tensor:
    """The terms of eq. (13), one per image: ``[p - o]_+ / p``.

    p, o: (N,) in [0, 1], N >= 1 (tensors, lists or NumPy arrays); an ``InputError`` otherwise.
    Returns: (N,) float64 in [0, 1] on the CPU."""
    p, o = probability_pair(p, o)
    return (p - o).clamp(min=0) / p.clamp(min=1e-12)


def average_drop(p: Tensor, o: Tensor) -> float:
    """Eq. (13): AD (%) = mean([p - o]_+ / p) * 100, the mean of ``drops``; lower is better.

    p, o: (N,) in [0, 1], N >= 1 (tensors, lists or NumPy arrays); an ``InputError`` otherwise."""
    return float(drops(p, o).mean() * 100)


def average_increase(p: Tensor, o: Tensor) -> float:
    """Eq. (14): AI (%) = mean(1[p < o]) * 100, the share of images whose probability rises; higher is better.

    p, o: (N,) in [0, 1], N >= 1 (tensors, lists or NumPy arrays); an ``InputError`` otherwise."""
    p, o = probability_pair(p, o)
    return float((p < o).double().mean() * 100)


def gains(p: Tensor, o: Tensor) -> Tensor:
    """The terms of eq. (15), one per image: ``[o - p]_+ / (1 - p)``.

    p, o: (N,) in [0, 1], N >= 1 (tensors, lists or NumPy arrays); an ``InputError`` otherwise.
    Returns: (N,) float64 in [0, 1] on the CPU."""
    p, o = probability_pair(p, o)
    return (o - p).clamp(min=0) / (1 - p).clamp(min=1e-12)


def average_gain(p: Tensor, o: Tensor) -> float:
    """Eq. (15): AG (%) = mean([o - p]_+ / (1 - p)) * 100, the mean of ``gains``; higher is better. Symmetric
    to AD.

    p, o: (N,) in [0, 1], N >= 1 (tensors, lists or NumPy arrays); an ``InputError`` otherwise."""
    return float(gains(p, o).mean() * 100)


def classification_metrics(p: Tensor, o: Tensor) -> dict[str, float]:
    """{"AD": eq. 13, "AG": eq. 15, "AI": eq. 14}, in percent. p, o: (N,) in [0, 1], N >= 1."""
    return {"AD": average_drop(p, o), "AG": average_gain(p, o), "AI": average_increase(p, o)}
