"""Sanity checks (appendix G, after Adebayo et al. 2018, the paper's [67]).

- **Model parameter randomisation, in cascade**: layers are re-initialised one after the other from the top of
  the network down (``cascading_randomization``); at each step the maps of a method are compared with its maps
  for the trained model (``parameter_randomization_test``). The paper randomises 5 layers of ResNet50, so 6
  models in all (the original and 5 steps), and compares maps by Spearman rank correlation with and without
  absolute values, HOG similarity and SSIM (Fig. A6, Fig. A7).
- **Label permutation** (data randomisation): the maps of a model trained on true labels against those of the
  same architecture trained on randomly permuted labels (``compare_models``); the paper reports SSIM 0.013 for
  Opti-CAM on ResNet50.

A method *passes* when its maps change as the model does; a method whose maps stay the same after
randomisation (an edge detector, Fake-CAM) explains the image, not the model. ``verdicts`` states the criterion
used in the course and computes it. The caller's model is never modified (randomisation works on deep copies),
and the randomised weights are a deterministic function of the seed.

Maps are (N, 1, H, W) float in [0, 1], as every method of this library returns. For such maps ``|S| = S``, so the
rank correlations with and without absolute values coincide; they differ only for signed maps (e.g. raw
gradients, as in Adebayo et al.).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opticam_lib.errors import InputError
from opticam_lib.inputs import Targets, validate_images, validate_targets
from opticam_lib.models.classifier import Classifier, copy_of

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd


def randomize_module(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise every parameter of ``module`` **in place** (use on a copy): weights ~ N(0, 1/fan_in),
    biases 0; BatchNorm, LayerNorm and GroupNorm to weight 1, bias 0, BatchNorm running statistics reset.

    The draws come from ``generator`` only (never the global RNG), in the order of ``module.modules()``, so the
    result is a deterministic function of the generator's state.

    Raises:
        InputError: the module has no parameters (randomising it would change nothing).
    """
    if not any(True for _ in module.parameters()):
        raise InputError(f"{type(module).__name__} has no parameters: randomising it changes nothing")
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
                    draw = torch.randn(p.shape, generator=generator, dtype=torch.float32)
                    p.copy_((draw / math.sqrt(max(fan_in, 1))).to(p.dtype))


def cascading_randomization(
    classifier: Classifier, layers: Sequence[str], seed: int = 0
) -> Iterator[tuple[str, Classifier]]:
    """Yield ``("original", classifier)`` then, for each name in ``layers`` (from the top of the network down),
    a copy of the classifier with that layer and everything above it randomised (cascade): the layers before it
    in the list, and every module with parameters that comes after it in the network's module order, so no
    trained layer is left between two steps (VGG16-BN's step ``features.30`` also randomises the convolutions
    34, 37 and the batch norms 31 to 41 that sit between it and ``features.40``).

    The caller's classifier is never modified: the cascade works on a deep copy, and each yielded step is a
    copy of its own (modifying one leaves the next steps alone). The same ``seed`` gives the same weights.
    Hooks the caller registered on the model are copied with it, so they also run on every randomised copy (a hook
    that is a bound method runs on a deep copy of its object: what it records stays in that copy); the library's
    own hooks are never left on a model.

    Raises:
        InputError: empty ``layers``, an unknown or repeated name, or a layer without parameters.
    """
    layers = list(layers)
    if not layers:
        raise InputError("give at least one layer to randomise, from the top of the network down")
    if len(set(layers)) != len(layers):
        raise InputError(f"a layer appears twice in the cascade: {layers}")
    for name in layers:  # fail before any work: unknown names, parameter-free layers
        if not any(True for _ in classifier.layer(name).parameters()):
            raise InputError(f"layer {name!r} has no parameters: randomising it changes nothing")
    gen = torch.Generator().manual_seed(int(seed))
    current = copy_of(classifier, "to randomise its layers")
    position = {n: i for i, (n, _) in enumerate(current.net.named_modules())}
    done: set[str] = set()

    def randomize(name: str, module: nn.Module) -> None:
        randomize_module(module, gen)
        done.update(f"{name}.{sub}" if sub else name for sub, _ in module.named_modules())

    yield "original", classifier
    for name in layers:
        randomize(name, current.layer(name))
        for other, module in current.net.named_modules():  # what sits above it and is still trained
            if position[other] > position[name] and other not in done:
                if any(True for _ in module.parameters(recurse=False)):
                    randomize(other, module)
        current.model.eval()
        yield name, copy.deepcopy(current)


#: five layers from the top, per model (the paper: "5 layers of ResNet50"; it does not say which)
CASCADES: dict[str, list[str]] = {
    "resnet50": ["fc", "layer4", "layer3", "layer2", "layer1"],
    "vgg16_bn": ["classifier.6", "classifier.3", "classifier.0", "features.40", "features.30"],
    "efficientnet_lite0": ["classifier", "conv_head", "blocks.6", "blocks.5", "blocks.4"],
    "world_cnn": ["fc", "features.3", "features.2", "features.1", "features.0"],
    "world_cnn_permuted": ["fc", "features.3", "features.2", "features.1", "features.0"],
}


def default_cascade(classifier: Classifier) -> list[str]:
    """The five layers randomised in cascade for a registered model, top first (``CASCADES``).

    Raises:
        InputError: a model without a default; pass the layer names yourself (``classifier.layer_names()``).
    """
    if classifier.name not in CASCADES:
        raise InputError(
            f"no default cascade for {classifier.name!r}; give the layers from the top down, e.g. "
            f"{classifier.layer_names()[-5:][::-1]} (all names: classifier.layer_names())"
        )
    return list(CASCADES[classifier.name])


def _flat(a: Tensor) -> np.ndarray:
    return a.detach().float().cpu().flatten().numpy()


def _plane(a: Tensor, what: str) -> np.ndarray:
    x = a.detach().float().cpu()
    if x.dim() < 2 or x[..., 0, 0].numel() != 1:
        raise InputError(f"{what} compares one map at a time: (H, W) or (1, H, W), got {tuple(a.shape)}")
    return x.reshape(x.shape[-2:]).numpy()


def _same_size(a: Tensor, b: Tensor) -> None:
    if a.numel() != b.numel():
        raise InputError(f"the two maps differ in size: {tuple(a.shape)} and {tuple(b.shape)}")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values given the average of their ranks (``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each run of equal values
    ends = np.r_[starts[1:], xs.size]
    avg = (starts + ends + 1) / 2.0  # mean of the ranks start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two maps (any shape, same number of pixels), in [-1, 1].

    The Pearson correlation of the ranks, ties given their average rank. A constant map has no order: two
    constant maps give 1.0 (the same map up to a constant), one constant map against a varying one gives 0.0.
    """
    _same_size(a, b)
    x, y = _flat(a), _flat(b)
    cx, cy = np.ptp(x) == 0, np.ptp(y) == 0
    if cx or cy:
        return 1.0 if cx and cy else 0.0
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float(np.clip((rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry)), -1.0, 1.0))


def hog_similarity(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of the HOG descriptors of two (H, W) maps (as in Adebayo et al.), in [-1, 1].

    9 orientations, 3x3-cell blocks, cells of 16 pixels at 224 px (a quarter of the side for small maps).
    Two maps without any gradient give 1.0; one of them alone gives 0.0.
    """
    from skimage.feature import hog

    _same_size(a, b)
    x, y = _plane(a, "hog_similarity"), _plane(b, "hog_similarity")
    side = min(x.shape)
    if side < 12:
        raise InputError(f"maps of {x.shape} are too small for HOG (3x3 blocks of cells need 12 px or more)")
    cell = max(4, min(16, side // 4))
    ha = hog(x, pixels_per_cell=(cell, cell))
    hb = hog(y, pixels_per_cell=(cell, cell))
    ca, cb = np.std(ha) == 0, np.std(hb) == 0
    if ca or cb:
        return 1.0 if ca and cb else 0.0
    return float(np.corrcoef(ha, hb)[0, 1])


def ssim(a: Tensor, b: Tensor) -> float:
    """Structural similarity (Wang et al. 2004) of two (H, W) maps in [0, 1] (skimage, data range 1, 7x7
    window), in [-1, 1]; 1 for identical maps."""
    from skimage.metrics import structural_similarity

    _same_size(a, b)
    x, y = _plane(a, "ssim"), _plane(b, "ssim")
    return float(structural_similarity(x, y, data_range=1.0))


SIMILARITIES: dict[str, Callable[[Tensor, Tensor], float]] = {
    "rank correlation (abs)": lambda a, b: spearman(a.abs(), b.abs()),
    "rank correlation (no abs)": spearman,
    "HOG similarity": hog_similarity,
    "SSIM": ssim,
}


MEASURES: tuple[str, ...] = tuple(SIMILARITIES)


def similarities(maps_a: Tensor, maps_b: Tensor) -> dict[str, np.ndarray]:
    """Every measure of ``SIMILARITIES`` between ``maps_a[i]`` and ``maps_b[i]``: (N, 1, H, W) twice ->
    {measure: (N,) array}."""
    if maps_a.shape != maps_b.shape or maps_a.dim() != 4:
        raise InputError(
            f"maps must both be (N, 1, H, W) of the same shape, got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}"
        )
    a, b = maps_a.detach().cpu(), maps_b.detach().cpu()
    return {k: np.array([fn(a[i], b[i]) for i in range(a.shape[0])]) for k, fn in SIMILARITIES.items()}


def edge_detector(classifier: Classifier, images: Tensor, targets: Targets = None) -> Tensor:
    """A control "method" that ignores the model and the class: the Sobel gradient magnitude of the grey image,
    range-normalised. Same convention as every method: (N, 3, H, W) in [0, 1] -> (N, 1, H, W) in [0, 1].

    It must *fail* the randomisation test (its maps cannot change with the weights); Adebayo et al. found some
    gradient-based methods to behave like it.
    """
    from opticam_lib.methods.maps import normalize

    images = validate_images(images).detach().float().cpu()
    grey = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2])[:, None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(2, 3))
    return normalize(torch.sqrt(gx**2 + gy**2), "range")


@dataclass
class RandomizationResult:
    """Maps and similarities of one method through the cascade.

    Attributes:
        steps: ``"original"``, then each randomised layer (top first).
        maps: per step, (N, 1, H, W) in [0, 1], on the CPU.
        similarity: measure -> (steps, N) array, similarity of each step's maps to the original ones.
        method: the method's name.
        seed: the seed of the randomisation.
    """

    steps: list[str]
    maps: list[Tensor]
    similarity: dict[str, np.ndarray]
    method: str = "method"
    seed: int = 0

    def table(self) -> pd.DataFrame:
        """Long (tidy) pandas DataFrame: one row per (step, measure): ``method, step, position, measure, mean,
        std, n`` (position 0 = original)."""
        import pandas as pd

        rows = []
        for measure, values in self.similarity.items():
            for pos, step in enumerate(self.steps):
                v = values[pos]
                rows.append(
                    {
                        "method": self.method,
                        "step": step,
                        "position": pos,
                        "measure": measure,
                        "mean": float(np.mean(v)),
                        "std": float(np.std(v)),
                        "n": int(v.size),
                    }
                )
        return pd.DataFrame.from_records(rows)


def parameter_randomization_test(
    classifier: Classifier,
    method: str | Callable[..., Tensor],
    images: Tensor,
    targets: Tensor | Sequence[int] | None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    name: str | None = None,
    **options: Any,
) -> RandomizationResult:
    """The model parameter randomisation test (appendix G): maps of ``method`` for the original classifier and
    for each step of ``cascading_randomization``, with every similarity of ``SIMILARITIES`` to the original.

    Args:
        method: a registered name (``"opticam"``) or a function with the library's convention.
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image, the same at every step (the paper: the ground truth); None: the
            prediction of the *original* model, kept for the randomised ones.
        layers: names from the top down (default ``default_cascade(classifier)``).
        options: passed to the method (e.g. ``iterations=30`` for Opti-CAM). The method's target layer stays the
            classifier's own, so the map is always read at the same place.
    """
    from opticam_lib.methods.registry import display_name, get_method

    fn = get_method(method)
    images = validate_images(images)
    targets = validate_targets(targets, classifier, images.to(classifier.device)).cpu()
    if isinstance(layers, str):  # list("fc") would be the layers "f" and "c"
        raise InputError(f"layers must be a list of layer names from the top down, got the string {layers!r}")
    layers = default_cascade(classifier) if layers is None else list(layers)
    steps, maps = [], []
    for step, clf in cascading_randomization(classifier, layers, seed):
        steps.append(step)
        maps.append(fn(clf, images, targets, **options).detach().float().cpu())
    per_step = [similarities(m, maps[0]) for m in maps]
    sims = {k: np.stack([s[k] for s in per_step]) for k in SIMILARITIES}
    return RandomizationResult(steps, maps, sims, name or display_name(method), int(seed))


def randomization_table(
    results: Sequence[RandomizationResult | ModelComparison]
    | Mapping[str, RandomizationResult | ModelComparison],
) -> pd.DataFrame:
    """One tidy pandas DataFrame for several methods: rows (method, step, measure), columns ``method, step,
    position, measure, mean, std, n`` (see ``RandomizationResult.table``; ``ModelComparison`` results give one
    step, their label)."""
    import pandas as pd

    items = list(results.values()) if isinstance(results, Mapping) else list(results)
    if not items:
        raise InputError("no results: run parameter_randomization_test for at least one method")
    return pd.concat([r.table() for r in items], ignore_index=True)


#: the course's pass criterion (the paper gives none; Adebayo et al. judge by eye)
PASS_THRESHOLD = 0.5


def verdicts(
    table: pd.DataFrame, threshold: float = PASS_THRESHOLD, steps: Sequence[str] | None = None
) -> pd.DataFrame:
    """Which methods pass, by an explicit criterion.

    **Criterion.** At a cascade step, a method passes when, for *every* measure, the mean similarity of its maps
    to the original maps (over the images) is below ``threshold`` (default 0.5: the maps share less than half
    of their rank order, gradient structure and local structure with the originals). A method whose maps do not
    change (similarity 1) fails at every step.

    Args:
        table: ``randomization_table(...)`` (or ``compare_models(...).table()``: one step, "permuted").
        steps: the steps to judge (default: every step but "original").
    Returns:
        pandas DataFrame, one row per (method, step): ``method, step, worst`` (the largest mean similarity over
        the measures, and the measure it comes from), ``passes`` (bool).
    """
    import pandas as pd

    if not 0 < threshold <= 1:
        raise InputError(f"threshold must lie in (0, 1], got {threshold}")
    missing = {"method", "step", "measure", "mean"} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}: pass randomization_table(...)")
    t = table[table["step"] != "original"]
    if steps is not None:
        unknown = set(steps) - set(t["step"])
        if unknown:
            raise InputError(f"unknown steps {sorted(unknown)}; the table has {sorted(set(t['step']))}")
        t = t[t["step"].isin(list(steps))]
    rows = []
    for (method, step), g in t.groupby(["method", "step"], sort=False):
        worst = g.loc[g["mean"].idxmax()]
        rows.append(
            {
                "method": method,
                "step": step,
                "worst measure": worst["measure"],
                "worst": float(worst["mean"]),
                "passes": bool(g["mean"].max() < threshold),
            }
        )
    return pd.DataFrame.from_records(rows)


@dataclass
class ModelComparison:
    """Maps of one method for two models on the same images and targets, and their similarities."""

    maps_a: Tensor  # (N, 1, H, W) in [0, 1], first model (e.g. trained on true labels)
    maps_b: Tensor  # (N, 1, H, W) in [0, 1], second model (e.g. trained on permuted labels)
    similarity: dict[str, np.ndarray]  # measure -> (N,)
    method: str = "method"
    label: str = "permuted"

    def table(self) -> pd.DataFrame:
        """Tidy pandas DataFrame in the layout of ``randomization_table`` (step = ``label``), so ``verdicts``
        applies."""
        import pandas as pd

        rows = [
            {
                "method": self.method,
                "step": self.label,
                "position": 1,
                "measure": k,
                "mean": float(np.mean(v)),
                "std": float(np.std(v)),
                "n": int(v.size),
            }
            for k, v in self.similarity.items()
        ]
        return pd.DataFrame.from_records(rows)


def compare_models(
    model_a: Classifier,
    model_b: Classifier,
    method: str | Callable[..., Tensor],
    images: Tensor,
    targets: Tensor | Sequence[int],
    label: str = "permuted",
    name: str | None = None,
    **options: Any,
) -> ModelComparison:
    """The label-permutation check: ``method``'s maps for ``model_a`` and ``model_b`` (same architecture,
    e.g. ``world_cnn`` and ``world_cnn_permuted``) on the same images and target classes, compared by every
    measure. The paper: SSIM 0.013 for Opti-CAM between ResNet50 and its permuted-label twin.

    Raises:
        InputError: the models have different classes or input sizes, or targets are missing.
    """
    from opticam_lib.methods.registry import display_name, get_method

    if model_a.num_classes != model_b.num_classes or model_a.input_size != model_b.input_size:
        raise InputError(
            f"{model_a.name} and {model_b.name} differ in classes or input size: compare twins of one architecture"
        )
    if targets is None:
        raise InputError("give the target classes (the same for both models, e.g. the ground truth)")
    fn = get_method(method)
    images = validate_images(images)
    targets = validate_targets(targets, model_a, images.to(model_a.device)).cpu()
    a = fn(model_a, images, targets, **options).detach().float().cpu()
    b = fn(model_b, images, targets, **options).detach().float().cpu()
    return ModelComparison(a, b, similarities(a, b), name or display_name(method), label)
