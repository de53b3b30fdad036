"""The classification metrics of section 5.3.1: average drop, average increase, average gain (eq. 13-15)
on the class probabilities of the image (p) and of the image masked by its saliency map (o).

Masking: ``x ⊙ S`` with S (N, 1, H, W) in [0, 1], black where S = 0 (the paper's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from opticam_lib.hooks import eval_mode
from opticam_lib.inputs import validate_images, validate_maps, validate_targets
from opticam_lib.models.classifier import Classifier


@torch.no_grad()
def class_probability(
    classifier: Classifier, images: Tensor, targets: Tensor, batch_size: int = 64
) -> Tensor:
    """Softmax probability of class ``targets[i]`` for each image. images (N, 3, H, W) in [0, 1] -> (N,) in [0, 1]."""
    out = []
    with eval_mode(classifier.model):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(classifier.device)
            probs = torch.softmax(classifier.model(x).float(), dim=1)
            out.append(probs.gather(1, targets[start : start + batch_size, None].to(probs.device))[:, 0])
    return torch.cat(out).cpu()


def masked_probabilities(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """p and o of eq. (13)-(15): class probability on each image and on the image masked by its map.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps: (N, 1, H, W) float in [0, 1].
        targets: class c per image (None: the predicted class).
    Returns:
        p (N,), o (N,), float in [0, 1], on the CPU.
    """
    images = validate_images(images).to(classifier.device)
    maps = validate_maps(maps, images).to(classifier.device)
    targets = validate_targets(targets, classifier, images)
    return class_probability(classifier, images, targets), class_probability(
        classifier, images * maps, targets
    )


def average_drop(p: Tensor, o: Tensor) -> float:
    """Eq. (13): AD (%) = mean([p - o]_+ / p) * 100; lower is better. p, o: (N,) in [0, 1]."""
    p, o = p.double(), o.double()
    return float(((p - o).clamp(min=0) / p.clamp(min=1e-12)).mean() * 100)


def average_increase(p: Tensor, o: Tensor) -> float:
    """Eq. (14): AI (%) = mean(1[p < o]) * 100, the share of images whose probability rises; higher is better."""
    return float((p < o).double().mean() * 100)


def average_gain(p: Tensor, o: Tensor) -> float:
    """Eq. (15): AG (%) = mean([o - p]_+ / (1 - p)) * 100; higher is better. Symmetric to AD."""
    p, o = p.double(), o.double()
    return float(((o - p).clamp(min=0) / (1 - p).clamp(min=1e-12)).mean() * 100)


def classification_metrics(p: Tensor, o: Tensor) -> dict[str, float]:
    """{"AD": eq. 13, "AG": eq. 15, "AI": eq. 14}, in percent."""
    return {"AD": average_drop(p, o), "AG": average_gain(p, o), "AI": average_increase(p, o)}
