"""Insertion and deletion (section 5.3.2, after RISE): pixels inserted into a blurred image or deleted to
black in the order of the saliency map, the class probability along the way, and its area under the curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from opticam_lib.inputs import validate_images, validate_maps, validate_positive_int, validate_targets
from opticam_lib.metrics.classification import class_probability
from opticam_lib.models.classifier import Classifier


def gaussian_blur(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blurred substrate for insertion: a Gaussian blur (klen 11, sigma 5), replicate padding."""
    ax = torch.arange(kernel_size, dtype=images.dtype, device=images.device) - (kernel_size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    c = images.shape[1]
    pad = kernel_size // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, kernel_size), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, kernel_size, 1), groups=c)


def _curve(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None,
    mode: str,
    steps: int | None,
    batch_size: int,
    progress: bool,
) -> Tensor:
    images = validate_images(images).to(classifier.device)
    maps = validate_maps(maps, images).to(classifier.device)
    targets = validate_targets(targets, classifier, images)
    n, _, h, w = images.shape
    steps = validate_positive_int(steps if steps is not None else h, "steps")
    per_step = math.ceil(h * w / steps)  # 224 pixels a step at 224 x 224, as in the paper
    substrate = torch.zeros_like(images) if mode == "deletion" else gaussian_blur(images)
    counts = torch.clamp(torch.arange(steps + 1, device=images.device) * per_step, max=h * w)
    curves = torch.empty(n, steps + 1)
    bar = tqdm(total=n * (steps + 1), desc=mode.capitalize(), disable=not progress, leave=False)
    for i in range(n):
        order = torch.argsort(maps[i].flatten(), descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(h * w, device=order.device)
        for start in range(0, steps + 1, batch_size):
            k = counts[start : start + batch_size]
            chosen = (rank[None, :] < k[:, None]).float().view(-1, 1, h, w)  # the k most salient pixels
            if mode == "deletion":  # remove them: set to zero
                x = images[i : i + 1] * (1 - chosen) + substrate[i : i + 1] * chosen
            else:  # insert them into the blurred image
                x = substrate[i : i + 1] * (1 - chosen) + images[i : i + 1] * chosen
            t = targets[i : i + 1].expand(x.shape[0])
            curves[i, start : start + len(k)] = class_probability(classifier, x, t, batch_size)
            bar.update(len(k))
    bar.close()
    return curves


def deletion_curve(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Tensor:
    """Class probability as the most salient pixels are set to zero, ``steps`` at a time (default H steps:
    224 pixels a step at 224 x 224). Targets default to the predicted class, as in the paper.
    Returns (N, steps + 1) probabilities, the first on the intact image."""
    return _curve(classifier, images, maps, targets, "deletion", steps, batch_size, progress)


def insertion_curve(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Tensor:
    """Class probability as the most salient pixels are copied into a blurred version of the image.
    Returns (N, steps + 1) probabilities, the first on the blurred image, the last on the intact image."""
    return _curve(classifier, images, maps, targets, "insertion", steps, batch_size, progress)


def area_under_curve(curves: Tensor) -> Tensor:
    """Trapezoidal area under each curve (N, S+1) over the fraction of pixels in [0, 1] -> (N,) in [0, 1]."""
    s = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / s
