"""Two model-agnostic baselines of the paper's Tables 1-3, via Captum: GradientShap [25] and LIME [24].

Same calling convention as ``opticam_lib.methods.cam_family``: ``method(classifier, images, targets=None, **options)`` with
images (N, 3, H, W) float in [0, 1], one class per image (None: the predicted class), and maps (N, 1, H, W)
float in [0, 1] at input resolution. Neither method looks inside the network: both explain the input pixels.

GradientShap (Lundberg & Lee 2017 [25]; Captum's ``GradientShap``, after SHAP's ``GradientExplainer``).
    Expected gradients: ``phi(x) = E_{x' ~ B, a ~ U(0, 1), e ~ N(0, s^2)} [(x + e - x') * grad f_c(x' + a (x + e - x'))]``
    with x' drawn from a set B of baseline images, a a random point on the straight path from x' to the
    (noisy) input and f_c the logit of class c. Each of the ``n_samples`` draws is one forward and one backward
    pass. With a single baseline and no noise it is a one-sample-per-step Monte-Carlo Integrated Gradients;
    for a linear model it is exact: ``phi = (x - x') * w_c``. The pixel attributions (N, 3, H, W) are summed over
    channels; ``reduce="positive"`` keeps the evidence for the class (ReLU), ``"abs"`` the magnitude of either
    sign; then min-max normalisation per image (``maps.normalize``, eq. 4).

LIME (Ribeiro et al. 2016 [24]; Captum's ``Lime``).
    A weighted linear surrogate over superpixels: ``n_samples`` binary vectors z in {0, 1}^F (each superpixel
    kept with probability 1/2, the first sample being the image itself, as in LIME's ``lime_image``) become
    images in which the superpixels with z_k = 0 are painted black; the class probability p_c of each is
    regressed on z by ridge regression weighted by LIME's exponential kernel on the cosine distance between z
    and the all-ones vector, ``pi(z) = sqrt(exp(-d(z, 1)^2 / 0.25^2))``. The map is the positive part of the
    per-superpixel weights, painted on their superpixels, then normalised to [0, 1]. Cost: ``n_samples``
    forward passes per image (in chunks of ``batch_size``) and one small ridge solve.

Settings chosen here, and how they may differ from the authors' (whose settings are not published):

- GradientShap: ``n_samples=50``, ``stdevs=1e-4`` as in Captum's torchvision tutorial ("Model interpretation
  for pretrained ResNet"); the black baseline (the course's masking convention) instead of the tutorial's
  two-image set ``[input * 0, input * 1]`` (whose second member is the image itself, which contributes zero
  attribution; ``baselines="black+white"`` gives black and a true white image instead); the
  logit, not the probability, as the explained output (like every other method of the library).
- LIME: a regular grid of ``cell`` x ``cell`` superpixels instead of the official quickshift segmentation
  (``kernel_size=4, max_dist=200, ratio=0.2``), so the map is coarse, like the paper's remark that LIME's
  superpixels are "too coarse"; absent superpixels black instead of the official default (each superpixel's mean
  colour); the official kernel width 0.25, 1000 samples, the class probability as the regressed output and
  ridge regression with ``alpha=1`` (``lime_base``'s default ``Ridge(alpha=1, fit_intercept=True)``), here
  solved in closed form in torch (``weighted_ridge``) rather than with Captum's default
  ``SkLearnLasso(alpha=0.01)``: it needs no scikit-learn, is exact and deterministic, and its weights are
  not sparsified by a Lasso penalty.

Captum is an optional dependency (the ``peers`` extra): it is imported inside the functions, and a missing
install raises ``MissingDependencyError`` with the ``pip install captum`` command.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from opticam_lib.errors import InputError, MissingDependencyError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import (
    Targets,
    prepare,
    require_autograd,
    require_graph,
    validate_choice,
    validate_images,
    validate_number,
    validate_positive_int,
)
from opticam_lib.methods.maps import normalize
from opticam_lib.models.classifier import Classifier

BASELINES: tuple[str, ...] = ("black", "black+white", "uniform")
REDUCTIONS: tuple[str, ...] = ("positive", "abs")
MAX_SUPERPIXELS = 10_000  # Captum warns above this many interpretable features; the ridge solve is O(F^3)
LIME_RIDGE_ALPHA = 1.0  # lime_base.LimeBase: Ridge(alpha=1, fit_intercept=True)


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _import_captum(method: str) -> Any:
    """``captum.attr``, or a ``MissingDependencyError`` that says how to install it."""
    try:
        import captum.attr as captum_attr
    except ImportError as err:
        raise MissingDependencyError(
            f"{method} wraps Captum, an optional dependency that is not installed: pip install captum "
            "(or pip install 'opticam_lib[peers]')"
        ) from err
    return captum_attr


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InputError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return seed


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators (Captum draws from both) and restore them on exit.

    The caller's random streams are left exactly as they were, also when an exception is raised.
    """
    devices = [device] if device.type == "cuda" else []
    # Captum's GradientShap draws from numpy's legacy global generator: it must be seeded and restored.
    state = np.random.get_state()  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed)  # noqa: NPY002
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


# ---------------------------------------------------------------------------------------------------------------
# GradientShap


def _baseline_set(baselines: str | Tensor, images: Tensor, n_samples: int, seed: int) -> Tensor:
    """The baseline distribution B as (B, 3, H, W) on the images' device and dtype."""
    _, _, h, w = images.shape
    if isinstance(baselines, Tensor):
        b = validate_images(baselines, "baselines")
        if tuple(b.shape[-2:]) != (h, w):
            raise InputError(
                f"baselines must have the images' size {(h, w)}, got {tuple(b.shape)} (shape (B, 3, H, W))"
            )
        return b.to(images.device, images.dtype)
    if not isinstance(baselines, str):
        raise InputError(
            f"baselines must be one of {', '.join(BASELINES)} or a (B, 3, H, W) tensor, got "
            f"{type(baselines).__name__}"
        )
    validate_choice(baselines, "baselines", BASELINES)
    if baselines == "black":
        return torch.zeros_like(images[:1])
    if baselines == "black+white":
        return torch.cat([torch.zeros_like(images[:1]), torch.ones_like(images[:1])])
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n_samples, 3, h, w, generator=g).to(images.device, images.dtype)


def gradientshap(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    *,
    n_samples: int = 50,
    stdevs: float = 1e-4,
    baselines: Literal["black", "black+white", "uniform"] | Tensor = "black",
    seed: int = 0,
    reduce: Literal["positive", "abs"] = "positive",
    batch_size: int = 32,
) -> Tensor:
    """GradientShap [25] (Captum's ``GradientShap``), as a saliency map.

    ``phi = E[(x + e - x') * grad f_c(x' + a (x + e - x'))]`` estimated with ``n_samples`` draws per image of a
    baseline x' from ``baselines``, a ~ U(0, 1) and Gaussian noise e of standard deviation ``stdevs``;
    f_c is the logit of the target class. Map: ``n(reduce(sum_channels phi))``.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image, or None for the predicted class.
        n_samples: draws per image, each one forward and one backward pass. Default 50 and ``stdevs=1e-4``
            follow Captum's torchvision tutorial, the documented image setting (the signature defaults of
            ``GradientShap.attribute``, 5 draws and no noise, are generic, not tuned for images).
        stdevs: standard deviation of the noise added to the input, in [0, 1] pixel units (0: none; then, with
            the black baseline, a linear model gives exactly ``x * w_c``).
        baselines: ``"black"`` (zeros: the course's masking convention, default), ``"black+white"`` (zeros and
            ones, each drawn with probability 1/2), ``"uniform"`` (``n_samples`` images of U(0, 1) noise drawn
            from ``seed``) or a (B, 3, H, W) tensor in [0, 1] of the images' size.
        seed: seeds the draws; each image is explained with the same seed, so an image's map does not depend
            on the rest of the batch. The caller's global torch / numpy random states are restored.
        reduce: ``"positive"`` (ReLU of the channel sum: evidence for the class, default) or ``"abs"``.
        batch_size: draws forwarded together (memory: ``batch_size`` images with their graph). Captum draws
            each call's samples together, so with the same ``seed`` another ``batch_size`` gives another (equally
            valid) sample of the draws: maps equal within Monte Carlo error, not exactly (efficientnet_lite0, 20
            draws, batch_size 20 against 7: at most 1e-3 apart with the black baseline, 0.9 with ``"uniform"``).
    Returns:
        (N, 1, H, W) float in [0, 1]; a constant map gives zeros.
    """
    require_autograd("GradientShap")
    images, targets = prepare(classifier, images, targets)
    n_samples = validate_positive_int(n_samples, "n_samples")
    batch_size = validate_positive_int(batch_size, "batch_size")
    stdevs = validate_number(stdevs, "stdevs", low=0.0, closed_low=True)
    seed = _check_seed(seed)
    validate_choice(reduce, "reduce", REDUCTIONS)
    base = _baseline_set(baselines, images, n_samples, seed)
    captum_attr = _import_captum("gradientshap")

    dtype = images.dtype  # the model's (``prepare``); Captum works in float32 (its noise is float32)

    def forward(x: Tensor) -> Tensor:
        return classifier.model(x.to(dtype)).float()

    explainer = captum_attr.GradientShap(forward)
    images, base = images.float(), base.float()
    phi = torch.zeros_like(images)
    with frozen(classifier.model):
        # Captum reads the logits without a check: a wrong output fails here, clearly
        with torch.enable_grad():
            out = forward(images.detach().requires_grad_(True))
            classifier.validate_logits(out.detach())
            require_graph(out, classifier.name, "GradientShap")
        for i in range(images.shape[0]):
            with _seeded(seed, images.device):
                for start in range(0, n_samples, batch_size):
                    m = min(batch_size, n_samples - start)
                    part = explainer.attribute(
                        images[i : i + 1], baselines=base, target=int(targets[i]), n_samples=m, stdevs=stdevs
                    )
                    phi[i] += part[0].detach() * m
    phi /= n_samples
    if not torch.isfinite(phi).all():
        raise InputError(
            f"GradientShap gave NaN or infinite attributions on {classifier.name!r}: the model's output or "
            "gradient is not finite on some baseline-to-image path (check its input normalisation)"
        )
    s = phi.sum(dim=1, keepdim=True)
    s = torch.relu(s) if reduce == "positive" else s.abs()
    return normalize(s, "range")


# ---------------------------------------------------------------------------------------------------------------
# LIME


def grid_superpixels(height: int, width: int, cell: int) -> Tensor:
    """Square superpixels on a regular grid: (height, width) long, ids 0..F-1 in row-major order.

    Pixel (i, j) belongs to superpixel ``(i // cell) * ceil(width / cell) + j // cell``; when the size is not a
    multiple of ``cell`` the last row / column of superpixels is narrower. F = ceil(H / cell) * ceil(W / cell).
    """
    height = validate_positive_int(height, "height")
    width = validate_positive_int(width, "width")
    cell = validate_positive_int(cell, "cell")
    cols = -(-width // cell)
    rows = torch.arange(height) // cell
    columns = torch.arange(width) // cell
    return rows[:, None] * cols + columns[None, :]


def lime_kernel(z: Tensor, kernel_width: float = 0.25) -> Tensor:
    """LIME's sample weight: ``sqrt(exp(-d^2 / kernel_width^2))`` with d the cosine distance of z to all-ones.

    Args:
        z: (S, F) binary (1: superpixel kept). For z with k ones, ``d = 1 - sqrt(k / F)``; an all-zero z has
            cosine similarity 0 (scikit-learn's convention in ``pairwise_distances``), hence d = 1.
    Returns:
        (S,) float64 in (0, 1]; 1 for the image itself.
    """
    z = z.double().reshape(len(z), -1)
    norm = z.norm(dim=1)
    cos = torch.where(norm > 0, z.sum(dim=1) / (norm * math.sqrt(z.shape[1])).clamp(min=1e-300), 0.0)
    d = 1 - cos
    return torch.sqrt(torch.exp(-(d**2) / kernel_width**2))


def weighted_ridge(x: Tensor, y: Tensor, weights: Tensor, alpha: float = 1.0) -> tuple[Tensor, Tensor]:
    """Weighted ridge regression with an unpenalised intercept, in closed form (float64).

    Minimises ``sum_i w_i (y_i - x_i . b - b0)^2 + alpha |b|^2``, as scikit-learn's
    ``Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight=w)``: centre x and y by their weighted means,
    solve ``(Xc^T W Xc + alpha I) b = Xc^T W yc``, then ``b0 = mean_w(y) - mean_w(x) . b``.

    Args:
        x: (S, F); y: (S,); weights: (S,) non-negative, not all zero.
    Returns:
        b (F,) and b0 (), float64, on x's device.
    """
    x, y, w = x.double(), y.double().reshape(-1), weights.double().reshape(-1).to(x.device)
    y = y.to(x.device)
    total = w.sum()
    x_mean = (w[:, None] * x).sum(dim=0) / total
    y_mean = (w * y).sum() / total
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc) + alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    coef = torch.linalg.solve(gram, xc.T @ (w * yc))
    return coef, y_mean - x_mean @ coef


class _WeightedRidge:
    """LIME's surrogate for Captum's ``LimeBase``: ``fit(DataLoader of (z, y, w))`` and ``representation()``.

    Captum only calls these two methods (it does not check the type), so no private Captum class is needed.
    """

    def __init__(self, alpha: float = LIME_RIDGE_ALPHA) -> None:
        self.alpha = alpha
        self.coef: Tensor | None = None
        self.intercept: Tensor | None = None

    def fit(self, train_data: Any, **kwargs: Any) -> dict[str, float]:
        xs, ys, ws = zip(*[(b[0], b[1], b[2]) for b in train_data])
        self.coef, self.intercept = weighted_ridge(torch.cat(xs), torch.cat(ys), torch.cat(ws), self.alpha)
        return {}

    def representation(self) -> Tensor:
        if self.coef is None:
            raise RuntimeError("the surrogate has not been fitted")
        return self.coef


def _lime_samples(seed: int) -> Callable[..., Iterator[Tensor]]:
    """Captum ``perturb_func``: the all-ones vector, then i.i.d. Bernoulli(1/2) vectors (1, F) from ``seed``.

    A generator function, so Captum starts a fresh, identically seeded stream at each ``attribute`` call; the
    draws do not touch the global random state.
    """

    def perturb(original_input: Tensor, **kwargs: Any) -> Iterator[Tensor]:
        f = int(kwargs["num_interp_features"])
        device = original_input.device
        g = torch.Generator().manual_seed(seed)
        yield torch.ones(1, f, dtype=torch.long, device=device)  # lime_image: data[0, :] = 1
        while True:
            yield torch.randint(0, 2, (1, f), generator=g).to(device)

    return perturb


def lime(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    *,
    n_samples: int = 1000,
    cell: int = 16,
    batch_size: int = 32,
    kernel_width: float = 0.25,
    seed: int = 0,
    progress: bool = True,
) -> Tensor:
    """LIME [24] (Captum's ``Lime``) on a grid of square superpixels, as a saliency map.

    For each image: ``n_samples`` binary vectors z over the F superpixels of ``grid_superpixels(H, W, cell)``
    (the first all ones, the rest Bernoulli(1/2)), each turned into the image with the superpixels z_k = 0
    painted black; the target's probability p_c of each is regressed on z by ridge regression (``alpha=1``)
    weighted by ``lime_kernel(z, kernel_width)``; map = ``n(relu(b))`` with b_k painted on superpixel k.

    Superpixels are ``cell`` x ``cell`` squares on a regular grid, not LIME's official quickshift segments:
    a grid is the same for every image, deterministic and cheap, and needs no segmentation library; it is
    coarse (the paper notes that LIME's superpixels are "too coarse" for high-resolution images).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image, or None for the predicted class.
        n_samples: perturbed images per image (LIME's ``num_samples``, official default 1000): the cost in
            forward passes.
        cell: superpixel side in pixels (16: 14 x 14 = 196 superpixels at 224 px); at most 10000 superpixels.
        batch_size: perturbed images forwarded together (Captum's ``perturbations_per_eval``).
        kernel_width: width of LIME's exponential kernel on the cosine distance (official 0.25).
        seed: seeds the binary vectors; each image uses the same seed, so its map does not depend on the rest
            of the batch. The caller's global torch / numpy random states are restored.
        progress: Captum's progress bar (``show_progress``), one per image.
    Returns:
        (N, 1, H, W) float in [0, 1], constant on each superpixel; all zeros when no weight is positive.
    """
    images, targets = prepare(classifier, images, targets)
    n_samples = validate_positive_int(n_samples, "n_samples")
    cell = validate_positive_int(cell, "cell")
    batch_size = validate_positive_int(batch_size, "batch_size")
    kernel_width = validate_number(kernel_width, "kernel_width", low=0.0, closed_low=False)
    seed = _check_seed(seed)
    n, _, h, w = images.shape
    segments = grid_superpixels(h, w, cell).to(images.device)
    features = int(segments.max()) + 1
    if features > MAX_SUPERPIXELS:
        raise InputError(
            f"cell={cell} gives {features} superpixels on {h} x {w} images (at most {MAX_SUPERPIXELS}): "
            "use a larger cell"
        )
    if features < 2:
        raise InputError(
            f"cell={cell} gives one superpixel on {h} x {w} images: the surrogate would have one weight and the map "
            "one value; use a smaller cell"
        )
    if n_samples < 2:
        raise InputError(
            f"n_samples={n_samples}: LIME's first sample is the image itself, so it needs at least 2 (the official "
            "default is 1000)"
        )
    captum_attr = _import_captum("lime")

    def probabilities(x: Tensor) -> Tensor:
        return torch.softmax(classifier.validate_logits(classifier.model(x)), dim=1)

    def similarity(_original: Tensor, _perturbed: Tensor, z: Tensor, **kwargs: Any) -> Tensor:
        return lime_kernel(z, kernel_width).float()

    explainer = captum_attr.Lime(
        probabilities,
        interpretable_model=_WeightedRidge(LIME_RIDGE_ALPHA),
        similarity_func=similarity,
        perturb_func=_lime_samples(seed),
    )
    weights = torch.zeros(n, features, device=images.device, dtype=images.dtype)
    with frozen(classifier.model), torch.no_grad():
        for i in range(n):
            with _seeded(seed, images.device):  # Captum's DataLoader draws a seed from the global generator
                coefs = explainer.attribute(
                    images[i : i + 1],
                    baselines=0.0,
                    target=int(targets[i]),
                    feature_mask=segments[None, None],
                    n_samples=n_samples,
                    perturbations_per_eval=batch_size,
                    return_input_shape=False,
                    show_progress=progress,
                )
            weights[i] = coefs.reshape(-1).to(weights)
    maps = torch.relu(weights)[:, segments][:, None]  # (N, 1, H, W)
    return normalize(maps, "range")
