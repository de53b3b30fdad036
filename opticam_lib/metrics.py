"""Classification metrics of saliency maps: AD, AI, AG (eq. 13-15), insertion and deletion (RISE, section 5.3.2).

Masking is element-wise multiplication of the raw [0, 1] image by the map (black where the map is 0), as in
the authors' code. p is the class probability on the image, o on the masked image; class c is the target
(the ground truth in the paper's tables).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .checks import check_images, check_maps, check_positive_int, check_targets
from .hooks import eval_mode
from .models import Classifier


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
    images = check_images(images).to(classifier.device)
    maps = check_maps(maps, images).to(classifier.device)
    targets = check_targets(targets, classifier, images)
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


# --------------------------------------------------------------------------------------------------------------
# Insertion and deletion (Petsiuk et al. 2018, as used in the paper's Table 3)


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
    images = check_images(images).to(classifier.device)
    maps = check_maps(maps, images).to(classifier.device)
    targets = check_targets(targets, classifier, images)
    n, _, h, w = images.shape
    steps = check_positive_int(steps if steps is not None else h, "steps")
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
