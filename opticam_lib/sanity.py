"""Sanity checks (appendix G, after Adebayo et al. 2018): model parameter randomisation in cascade, and the
similarity measures used to compare maps: Spearman rank correlation (with and without absolute values), HOG
similarity and SSIM.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .errors import InputError
from .models import Classifier


def randomize_module(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``module`` in place: weights ~ N(0, 1/fan_in), biases 0; BatchNorm,
    LayerNorm and GroupNorm to weight 1, bias 0, running statistics reset."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
            for name, p in m.named_parameters(recurse=False):
                if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
                    p.fill_(1.0 if name == "weight" else 0.0)
                elif name == "bias":
                    p.zero_()
                else:
                    fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                    p.copy_(torch.randn(p.shape, generator=generator) / np.sqrt(max(fan_in, 1)))


def cascading_randomization(
    classifier: Classifier, layers: Sequence[str], seed: int = 0
) -> Iterator[tuple[str, Classifier]]:
    """Yield ``("original", classifier)`` then, for each name in ``layers`` (from the top of the network down),
    a copy of the classifier with that layer and all those before it in the list randomised (cascade).

    The caller's classifier is never modified (each step works on a deep copy).
    """
    for name in layers:
        classifier.layer(name)  # fail early on an unknown name
    gen = torch.Generator().manual_seed(seed)
    current = copy.deepcopy(classifier)
    yield "original", classifier
    for name in layers:
        randomize_module(current.layer(name), gen)
        current.model.eval()
        yield name, copy.deepcopy(current)


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two maps (any shape, same size), ties given their average rank."""
    from scipy.stats import spearmanr

    x = a.detach().float().cpu().flatten().numpy()
    y = b.detach().float().cpu().flatten().numpy()
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def hog_similarity(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of the HOG descriptors of two (H, W) maps (as in Adebayo et al.)."""
    from skimage.feature import hog

    side = min(a.shape[-2:])
    cell = max(1, min(16, side // 4))  # 16-pixel cells at 224 px; smaller for small maps (3x3-cell blocks)
    ha = hog(a.detach().float().cpu().reshape(a.shape[-2:]).numpy(), pixels_per_cell=(cell, cell))
    hb = hog(b.detach().float().cpu().reshape(b.shape[-2:]).numpy(), pixels_per_cell=(cell, cell))
    if np.std(ha) == 0 or np.std(hb) == 0:
        return 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity of two (H, W) maps in [0, 1] (skimage, data_range 1)."""
    from skimage.metrics import structural_similarity

    x = a.detach().float().cpu().reshape(a.shape[-2:]).numpy()
    y = b.detach().float().cpu().reshape(b.shape[-2:]).numpy()
    return float(structural_similarity(x, y, data_range=1.0))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "rank correlation (abs)": lambda a, b: spearman(a.abs(), b.abs()),
    "rank correlation (no abs)": spearman,
    "HOG similarity": hog_similarity,
    "SSIM": ssim,
}


@dataclass
class RandomizationResult:
    """Maps and similarities of one method through the cascade."""

    steps: list[str]  # "original", then each randomised layer
    maps: list[Tensor]  # per step, (N, 1, H, W)
    similarity: dict[str, np.ndarray]  # measure -> (steps, N) similarity to the original maps


def parameter_randomization_test(
    classifier: Classifier,
    method: Callable[..., Tensor],
    images: Tensor,
    targets: Tensor,
    layers: Sequence[str],
    seed: int = 0,
    **options,
) -> RandomizationResult:
    """The model parameter randomisation test (appendix G): maps of ``method`` for the original classifier and
    for each step of ``cascading_randomization``, with every similarity of ``SIMILARITIES`` to the original.

    The target layer of the method stays the classifier's own (so the map is always read at the same place).
    """
    if images.shape[0] != targets.shape[0]:
        raise InputError("one target per image is needed")
    steps, maps = [], []
    for name, clf in cascading_randomization(classifier, layers, seed):
        steps.append(name)
        maps.append(method(clf, images, targets, **options).detach().cpu())
    sims = {
        k: np.array([[fn(m[i], maps[0][i]) for i in range(images.shape[0])] for m in maps])
        for k, fn in SIMILARITIES.items()
    }
    return RandomizationResult(steps, maps, sims)
