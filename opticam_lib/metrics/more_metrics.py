"""The paper's "more metrics" (section 5.3.3, Table 4): AOPC, Max-Sensitivity (MS) and ADCC.

The paper: "We use the code and suggested parameters of package Quantus to measure AOPC and MS. In particular,
patch size 14 and number of evaluation regions 10 for AOPC; lower bound 0.2 and number of samples 10 for MS.
For ADCC, we use the official code." Here AOPC and MS run Quantus (an optional dependency, the ``quantus``
extra: ``pip install quantus``); ADCC is implemented from its authors' definition and needs nothing more.

AOPC (Samek et al. 2016, the paper's [64]; higher is better). Quantus has no metric named AOPC: the paper's is
``quantus.RegionPerturbation(patch_size=14, regions_evaluation=10, order="morf")``, Samek et al.'s own
procedure (RegionPerturbation implements their paper, which defines AOPC). The image is cut into 14 x 14
patches, ranked by the sum of the map over each patch, and the most relevant first ("morf": most relevant
first, the order in which AOPC is defined) are replaced one after another by Quantus' "black" baseline, the
smallest value of the image over all channels. Quantus returns, per image, the curve
``p(x) - p(x^(k))`` for k = 1..L (L = 10 regions), p the softmax probability of the class. Samek et al.'s
eq. (12) averages over k = 0..L, the k = 0 term being zero:

    AOPC = 1 / (L + 1) * sum_{k=1..L} (p(x) - p(x^(k)))   in [-1, 1]; Table 4 shows it x 100.

We compute it from Quantus' curves ourselves: Quantus' own area helper (``get_auc_score``) is the trapezoid
area of the curve, not AOPC, and calls ``np.trapz``, which current NumPy no longer has.

MS (Max-Sensitivity, Yeh et al. 2019, the paper's [65]; lower is better): ``quantus.MaxSensitivity(
nr_samples=10, lower_bound=0.2)``, per image the largest of ``||S(x + e) - S(x)||_2 / ||S(x)||_2`` over 10
draws of uniform noise e in [-0.2, 0.2] on every input value, S(x + e) being the method's map of the noisy image
for the same class.

Units. Quantus adds its noise to, and takes its "black" from, whatever the model takes as input. The paper's
models (torchvision's ResNet50 and VGG16) take ImageNet-normalised tensors ``(x - mean_c) / std_c``, so its bound
0.2 is in those units: ``0.2 * std_c`` = 0.0458, 0.0448, 0.0450 in [0, 1] pixel units for R, G, B (about 11.5
of 255 grey levels; ``noise_bounds``). Our classifiers take raw pixels in [0, 1] and normalise inside, each with
its own statistics (efficientnet_lite0 uses mean = std = 0.5, where 0.2 would be 0.1 in pixels), so we hand
Quantus raw pixels and draw its noise per channel with those pixel bounds: the same perturbation of the image
as in the paper, whatever the model. Had we passed Quantus' own ``lower_bound=0.2`` on raw pixels, the noise
would be 4.4 times the paper's. The noisy image is **clipped to [0, 1]** (our methods refuse other values; the
paper's noise could leave the pixel range, and a clipped pixel gets less noise, which can only lower MS a
little). The "black" baseline is then the image's smallest pixel value (0 for most photos): the paper's was
the smallest normalised value over all channels, e.g. -0.485 / 0.229 = -2.12 for a pure black red pixel,
which is black in red and within 0.07 of black in green and blue.

ADCC (Poppi et al. 2021, "Revisiting the evaluation of class activation mapping for explainability", the
paper's [21]; their harmonic mean, higher is better, although the paper's Table 4 marks it with a down arrow):

    ADCC = 3 / (1 / Coherency + 1 / (1 - Complexity) + 1 / (1 - AverageDrop))   in [0, 1]; Table 4: x 100.

- Coherency: the Pearson correlation between the map S of the image and the map S' the same method gives to
  the image masked by its own map, ``x ⊙ S`` (same class), rescaled to [0, 1] as in the authors' code:
  ``(r + 1) / 2``. A map that is constant (the correlation is undefined) gets 0, as the authors' code gives a
  map with NaN values (what min-max normalisation makes of a constant map).
- Complexity: the L1 norm of the map over the number of pixels, ``sum |S| / (H W)`` in [0, 1].
- AverageDrop: ``[p - o]_+ / p`` of the image (eq. 13 of the paper for one image), p and o the class
  probability on ``x`` and on ``x ⊙ S``. (The authors' code divides by the largest class probability of the
  image, which is p when the class is the predicted one.)

Each is computed per image and ADCC per image, then averaged over the images; a component at 0 (a map that is
1 everywhere, a masked image with probability 0, perfectly anti-correlated maps) makes the harmonic mean 0.

Every function here takes images (N, 3, H, W) float in [0, 1] and maps (N, 1, H, W) float in [0, 1], restores
the model's train/eval mode and ``requires_grad`` flags, leaves no ``.grad``, and draws MS's noise from its own
seeded generator (NumPy's global one is left alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError, MissingDependencyError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import validate_images, validate_maps, validate_positive_int, validate_targets
from opticam_lib.methods.maps import is_constant
from opticam_lib.methods.registry import Method, display_name, get_method, validate_options
from opticam_lib.metrics.classification import class_probability, drops
from opticam_lib.models.classifier import IMAGENET_STD, Classifier

#: the paper's settings (section 5.3.3): AOPC patch size and regions, MS noise bound and samples
AOPC_PATCH_SIZE = 14
AOPC_REGIONS = 10
MS_LOWER_BOUND = 0.2
MS_SAMPLES = 10
QUANTUS_INSTALL = "pip install quantus"


def require_quantus(what: str = "AOPC and Max-Sensitivity") -> None:
    """Raise the ``MissingDependencyError`` of a missing Quantus now (before any work), naming ``what`` needs it."""
    _import_quantus(what)


def _import_quantus(metric: str) -> Any:
    """The ``quantus`` module, or a ``MissingDependencyError`` that says how to install it."""
    try:
        import quantus
    except ImportError as err:
        raise MissingDependencyError(
            f"{metric} runs Quantus, as the paper did (section 5.3.3), an optional dependency that is not "
            f"installed: {QUANTUS_INSTALL} (or pip install 'opticam_lib[quantus]'). ADCC needs no Quantus."
        ) from err
    return quantus


def noise_bounds(
    lower_bound: float = MS_LOWER_BOUND, units: Sequence[float] = IMAGENET_STD
) -> tuple[float, ...]:
    """MS's noise half-width per channel in [0, 1] pixel units: ``lower_bound * units_c``, the bound given in
    the normalised units of a model whose input std is ``units`` (the paper's: ImageNet's; 0.2 -> 0.0458,
    0.0448, 0.0450)."""
    if isinstance(lower_bound, bool) or not isinstance(lower_bound, int | float) or not lower_bound > 0:
        raise InputError(f"lower_bound must be a positive number, got {lower_bound!r}")
    if len(units) != 3 or not all(isinstance(u, int | float) and u > 0 for u in units):
        raise InputError(f"units must be three positive numbers (one std per channel), got {units!r}")
    return tuple(float(lower_bound) * float(u) for u in units)


def _pixel_noise(
    arr: np.ndarray,
    indices: np.ndarray,
    bounds: Sequence[float] = (),
    rng: np.random.Generator | None = None,
    **_: Any,
) -> np.ndarray:
    """Quantus' ``perturb_func`` for MS: uniform noise in [-bounds_c, bounds_c] on channel c of the flattened
    channel-first images ``arr`` (B, C*H*W) at ``indices`` (B, I), then clipped to [0, 1]. One draw of
    ``rng.uniform(-1, 1, (1, C*H*W))`` per call (per MS sample), the same for every image: the noise an image
    gets alone, so its MS does not depend on the rest of its batch (a row per image tied it to its position)."""
    n, f = arr.shape
    scale = np.repeat(np.asarray(bounds, dtype=np.float64), f // len(bounds))[None, :]
    rng = rng if rng is not None else np.random.default_rng()
    noise = np.broadcast_to(rng.uniform(low=-1.0, high=1.0, size=(1, f)) * scale, arr.shape)
    rows = np.arange(n)[:, None]
    out = arr.copy()
    out[rows, indices] = np.clip(arr[rows, indices] + noise[rows, indices], 0.0, 1.0)
    return out


class _Model(nn.Module):
    """The classifier as Quantus calls it: float32 (N, 3, H, W) in [0, 1] -> logits (N, C) in float32 (inputs
    cast to the model's own dtype and device)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier  # a plain attribute, not a sub-module: its mode stays the caller's
        self.dtype = next(
            (p.dtype for p in classifier.model.parameters() if p.is_floating_point()), torch.float32
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(device=self.classifier.device, dtype=self.dtype)
        return self.classifier.validate_logits(self.classifier.model(x)).float()


def _checked(
    classifier: Classifier, images: Tensor, maps: Tensor | None, targets: object
) -> tuple[Tensor, Tensor | None, Tensor]:
    images = validate_images(images).to(classifier.device).float()
    if maps is not None:
        maps = validate_maps(maps, images).to(classifier.device)
    targets = validate_targets(targets, classifier, images)  # type: ignore[arg-type]
    return images, maps, targets


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _flat_maps(maps: Tensor) -> Tensor:
    """(N, 1, H, W) -> (N,) bool: maps of one value everywhere (0 included) up to rounding (``maps.is_constant``,
    the test ``normalize`` zeros by): they rank no pixel above another (a rounding-level ripple would rank them
    by noise), and Quantus refuses a batch of exactly constant ones (an assertion) while scoring one among
    others."""
    return is_constant(maps).any(dim=1)


def aopc_curves(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    patch_size: int = AOPC_PATCH_SIZE,
    regions: int = AOPC_REGIONS,
) -> Tensor:
    """Quantus' region perturbation curves, most relevant patches first (the paper's AOPC setting).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps: (N, 1, H, W) float in [0, 1]; patches are ranked by the sum of the map over them.
        targets: class per image (None: the predicted class).
        patch_size: side of the square patches (the paper: 14).
        regions: number of patches removed one after the other (the paper: 10).
    Returns:
        (N, regions) float64 on the CPU: ``p(x) - p(x^(k))`` for k = 1..regions, p the softmax probability of the
        class, x^(k) the image with its k most relevant patches set to the image's smallest (normalised) value.
        A row is NaN when its map has one value everywhere up to rounding, 0 or not (it ranks no patch).
    Raises:
        MissingDependencyError: Quantus is not installed.
        InputError: bad images, maps, targets or settings.
    """
    quantus = _import_quantus("AOPC")
    images, maps, targets = _checked(classifier, images, maps, targets)
    patch_size = validate_positive_int(patch_size, "patch_size")
    regions = validate_positive_int(regions, "regions")
    h, w = images.shape[-2:]
    available = -(-h // patch_size) * -(-w // patch_size)
    if regions > available:
        raise InputError(
            f"regions={regions} but a {h} x {w} image has only {available} patches of {patch_size}"
        )
    assert maps is not None
    zero = _flat_maps(maps).cpu()
    out = torch.full((images.shape[0], regions), float("nan"), dtype=torch.float64)
    keep = (~zero).nonzero().flatten()
    if len(keep) == 0:
        return out
    metric = quantus.RegionPerturbation(
        patch_size=patch_size,
        regions_evaluation=regions,
        order="morf",
        perturb_baseline="black",
        disable_warnings=True,
        display_progressbar=False,
    )
    x = _numpy(images[keep.to(images.device)])
    a = maps[keep.to(maps.device)].detach().float().cpu().numpy()
    y = targets[keep.to(targets.device)].cpu().numpy()
    net = _Model(classifier).eval()
    with frozen(classifier.model):
        curves = metric(
            model=net,
            x_batch=x,
            y_batch=y,
            a_batch=a,
            channel_first=True,
            softmax=True,
            device=str(classifier.device),
            batch_size=max(len(keep), 1),
        )
    out[keep] = torch.as_tensor(np.asarray(curves, dtype=np.float64))
    return out


def aopc_from_curves(curves: Tensor) -> Tensor:
    """Samek et al.'s AOPC (eq. 12 of their paper) from the curves of ``aopc_curves``: (N, L) -> (N,) in
    [-1, 1], ``sum_k curves[:, k] / (L + 1)`` (the k = 0 term, p(x) - p(x), is zero); NaN rows stay NaN.

    The paper computed AOPC with Quantus and does not state the normalisation; 1 / (L + 1) is Samek et al.'s, the
    library's choice (averaging the L steps instead would give (L + 1) / L times these values)."""
    if not isinstance(curves, Tensor) or curves.dim() != 2 or curves.shape[1] == 0:
        raise InputError(
            f"curves must be a (N, L) tensor with L >= 1, got {getattr(curves, 'shape', curves)}"
        )
    return curves.double().sum(dim=1) / (curves.shape[1] + 1)


def aopc(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    patch_size: int = AOPC_PATCH_SIZE,
    regions: int = AOPC_REGIONS,
) -> Tensor:
    """AOPC per image (Table 4's first column, x 100 there; higher is better): ``aopc_from_curves`` of
    ``aopc_curves``. images (N, 3, H, W), maps (N, 1, H, W), both in [0, 1] -> (N,) float64 in [-1, 1]."""
    return aopc_from_curves(
        aopc_curves(classifier, images, maps, targets, patch_size=patch_size, regions=regions)
    )


def _explainer(classifier: Classifier, method: str | Method, options: dict) -> Callable[..., np.ndarray]:
    """Quantus' ``explain_func``: Quantus passes the bare ``nn.Module`` and the noisy images as NumPy; we run the
    method on our ``Classifier`` (closed over here) after clamping away float round-off outside [0, 1]."""
    fn = get_method(method)
    validate_options(fn, options, display_name(method))

    def explain(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_: Any) -> np.ndarray:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=classifier.device).clamp(0, 1)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=classifier.device)
        maps = fn(classifier, x, t, **options)
        return maps.detach().float().cpu().numpy()

    return explain


def max_sensitivity(
    classifier: Classifier,
    images: Tensor,
    method: str | Method,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: Tensor | None = None,
    samples: int = MS_SAMPLES,
    lower_bound: float = MS_LOWER_BOUND,
    units: Sequence[float] = IMAGENET_STD,
    seed: int | None = 0,
    **options: Any,
) -> Tensor:
    """Max-Sensitivity per image with Quantus (Table 4's MS; lower is better).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        method: a registered method name or a function ``fn(classifier, images, targets, **options)``.
        targets: class per image (None: the predicted class).
        maps: the method's maps of ``images``, (N, 1, H, W) in [0, 1], if already computed (else computed here).
        samples: noise draws per image (the paper: 10).
        lower_bound: half-width of the uniform noise in units of ``units`` (the paper: 0.2 in ImageNet-normalised
            units); the noise on channel c is uniform in [-lower_bound * units_c, lower_bound * units_c] pixel
            units (``noise_bounds``), then the image is clipped to [0, 1].
        units: the per-channel std that defines the unit of ``lower_bound`` (ImageNet's, as the paper's models).
        seed: seeds the noise (``numpy.random.default_rng(seed)``, NumPy's global generator is not touched);
            None: fresh entropy.
        options: passed to the method (e.g. ``iterations=100`` for Opti-CAM).
    Returns:
        (N,) float64 on the CPU, >= 0: ``max_s ||S(x + e_s) - S(x)||_2 / ||S(x)||_2``. NaN for an image whose
        map has one value everywhere up to rounding (0: the ratio is undefined; another value: Quantus refuses uniform
        maps).
    Raises:
        MissingDependencyError: Quantus is not installed.
        InputError: bad images, maps, targets or settings.
    """
    quantus = _import_quantus("Max-Sensitivity")
    images, maps, targets = _checked(classifier, images, maps, targets)
    samples = validate_positive_int(samples, "samples")
    bounds = noise_bounds(lower_bound, units)
    fn = get_method(method)
    validate_options(fn, options, display_name(method))
    if maps is None:
        maps = fn(classifier, images, targets, **options).detach()
        maps = validate_maps(maps, images, name=f"the maps of {display_name(method)}")
    zero = _flat_maps(maps).cpu()
    out = torch.full((images.shape[0],), float("nan"), dtype=torch.float64)
    keep = (~zero).nonzero().flatten()
    if len(keep) == 0:
        return out
    metric = quantus.MaxSensitivity(
        nr_samples=samples,
        lower_bound=float(lower_bound),  # recorded only: _pixel_noise draws with the per-channel bounds
        perturb_func=_pixel_noise,
        perturb_func_kwargs={"bounds": bounds, "rng": np.random.default_rng(seed)},
        disable_warnings=True,
        display_progressbar=False,
    )
    net = _Model(classifier).eval()
    idx = keep.to(images.device)
    with frozen(classifier.model):
        scores = metric(
            model=net,
            x_batch=_numpy(images[idx]),
            y_batch=targets[keep.to(targets.device)].cpu().numpy(),
            a_batch=maps[keep.to(maps.device)].detach().float().cpu().numpy(),
            channel_first=True,
            explain_func=_explainer(classifier, fn, options),
            device=str(classifier.device),
            batch_size=max(len(keep), 1),
        )
    out[keep] = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    return out


def complexity(maps: Tensor) -> Tensor:
    """ADCC's complexity: the L1 norm of each map over its number of pixels. (N, 1, H, W) in [0, 1] -> (N,)
    float64 in [0, 1] (lower is better: fewer pixels lit)."""
    if not isinstance(maps, Tensor) or maps.dim() != 4 or maps.shape[1] != 1:
        raise InputError(f"maps must be a (N, 1, H, W) tensor, got {getattr(maps, 'shape', type(maps))}")
    return maps.detach().double().abs().flatten(1).sum(dim=1).cpu() / (maps.shape[-2] * maps.shape[-1])


def coherency(maps: Tensor, maps_of_masked: Tensor) -> Tensor:
    """ADCC's coherency: the Pearson correlation r of each map with the map of its masked image, as ``(r + 1) / 2``.

    Args:
        maps: (N, 1, H, W), the maps of the images.
        maps_of_masked: (N, 1, H, W), the same method's maps of ``images * maps`` for the same classes.
    Returns:
        (N,) float64 in [0, 1] (higher is better); 0 where either map is constant (r undefined).
    """
    for name, m in (("maps", maps), ("maps_of_masked", maps_of_masked)):
        if not isinstance(m, Tensor) or m.dim() != 4 or m.shape[1] != 1:
            raise InputError(f"{name} must be a (N, 1, H, W) tensor, got {getattr(m, 'shape', type(m))}")
    if maps.shape != maps_of_masked.shape:
        raise InputError(f"maps {tuple(maps.shape)} and maps_of_masked {tuple(maps_of_masked.shape)} differ")
    a = maps.detach().double().flatten(1).cpu()
    b = maps_of_masked.detach().double().flatten(1).cpu()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    defined = (na > 0) & (nb > 0)
    r = (a * b).sum(dim=1) / (na * nb).clamp(min=1e-300)
    return torch.where(defined, ((r.clamp(-1.0, 1.0) + 1) / 2), torch.zeros_like(r))


def harmonic_adcc(coh: Tensor, comp: Tensor, avg_drop: Tensor) -> Tensor:
    """ADCC from its parts, ``3 / (1/coh + 1/(1 - comp) + 1/(1 - avg_drop))``: (N,) each in [0, 1] -> (N,)
    float64 in [0, 1]; 0 where a term of the harmonic mean is 0 (its limit)."""
    terms = torch.stack([coh.double(), 1 - comp.double(), 1 - avg_drop.double()]).cpu()
    if (terms < -1e-9).any() or (terms > 1 + 1e-9).any():
        raise InputError("coherency, complexity and average drop must lie in [0, 1]")
    terms = terms.clamp(0.0, 1.0)
    zero = (terms == 0).any(dim=0)
    value = 3 / (1 / terms.clamp(min=1e-300)).sum(dim=0)
    return torch.where(zero, torch.zeros_like(value), value)


@dataclass
class ADCCResult:
    """ADCC and its parts, per image (each (N,) float64 on the CPU, in [0, 1]).

    Attributes:
        adcc: the harmonic mean per image (higher is better); ``adcc.mean()`` x 100 is Table 4's column.
        coherency: ``(r + 1) / 2``, r the Pearson correlation of S and the map of ``x ⊙ S`` (higher is better).
        complexity: ``sum |S| / (H W)`` (lower is better).
        drop: ``[p - o]_+ / p`` (lower is better).
        maps_of_masked: (N, 1, H, W), the method's maps of the masked images.
    """

    adcc: Tensor
    coherency: Tensor
    complexity: Tensor
    drop: Tensor
    maps_of_masked: Tensor


def adcc(
    classifier: Classifier,
    images: Tensor,
    method: str | Method,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: Tensor | None = None,
    **options: Any,
) -> ADCCResult:
    """ADCC (Poppi et al. 2021) per image, with its three parts.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        method: a registered method name or a function ``fn(classifier, images, targets, **options)``; it is run
            once more on the masked images ``images * maps`` (coherency).
        targets: class per image (None: the predicted class), used for the maps and the probabilities.
        maps: the method's maps of ``images``, (N, 1, H, W) in [0, 1], if already computed (else computed here).
        options: passed to the method.
    Raises:
        InputError: bad images, maps or targets.
    """
    images, maps, targets = _checked(classifier, images, maps, targets)
    fn = get_method(method)
    validate_options(fn, options, display_name(method))
    if maps is None:
        maps = validate_maps(fn(classifier, images, targets, **options).detach(), images)
    masked = images * maps
    again = validate_maps(
        fn(classifier, masked, targets, **options).detach(), images, name="the maps of the masked images"
    )
    p = class_probability(classifier, images, targets)
    o = class_probability(classifier, masked, targets)
    coh, comp, dr = coherency(maps, again), complexity(maps), drops(p, o)
    return ADCCResult(harmonic_adcc(coh, comp, dr), coh, comp, dr, again.cpu())


def table4_scores(
    classifier: Classifier,
    images: Tensor,
    method: str | Method,
    targets: int | Sequence[int] | Tensor | None = None,
    *,
    maps: Tensor | None = None,
    metrics: Sequence[str] = ("AOPC", "MS", "ADCC"),
    patch_size: int = AOPC_PATCH_SIZE,
    regions: int = AOPC_REGIONS,
    samples: int = MS_SAMPLES,
    lower_bound: float = MS_LOWER_BOUND,
    seed: int | None = 0,
    **options: Any,
) -> dict[str, Tensor]:
    """Table 4's three metrics per image for one method, in the paper's settings.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        method: a registered method name or a function.
        targets: class per image (None: the predicted class).
        maps: the method's maps of ``images`` (N, 1, H, W) in [0, 1] if already computed.
        metrics: any of ``"AOPC"``, ``"MS"``, ``"ADCC"`` (ADCC alone needs no Quantus).
        patch_size, regions: AOPC's (the paper: 14 and 10; ``aopc_curves``).
        samples, lower_bound, seed: MS's (the paper: 10 and 0.2; ``max_sensitivity``).
        options: passed to the method.
    Returns:
        {"AOPC": (N,) in [-1, 1], "MS": (N,) >= 0, "ADCC": (N,) in [0, 1], "coherency", "complexity", "drop"
        (N,) in [0, 1]} for the metrics asked, float64 on the CPU; Table 4 shows AOPC and ADCC x 100.
    """
    unknown = [m for m in metrics if m not in ("AOPC", "MS", "ADCC")]
    if unknown or not metrics:
        raise InputError(f"unknown metrics {unknown or metrics!r}; choose among 'AOPC', 'MS', 'ADCC'")
    if any(m in ("AOPC", "MS") for m in metrics):
        require_quantus()  # before any work
    images, maps, targets = _checked(classifier, images, maps, targets)
    fn = get_method(method)
    validate_options(fn, options, display_name(method))
    if maps is None:
        maps = validate_maps(fn(classifier, images, targets, **options).detach(), images)
    out: dict[str, Tensor] = {}
    if "AOPC" in metrics:
        out["AOPC"] = aopc(classifier, images, maps, targets, patch_size=patch_size, regions=regions)
    if "MS" in metrics:
        out["MS"] = max_sensitivity(
            classifier,
            images,
            fn,
            targets,
            maps=maps,
            samples=samples,
            lower_bound=lower_bound,
            seed=seed,
            **options,
        )
    if "ADCC" in metrics:
        r = adcc(classifier, images, fn, targets, maps=maps, **options)
        out.update(ADCC=r.adcc, coherency=r.coherency, complexity=r.complexity, drop=r.drop)
    return out


def table4_row(scores: dict[str, Tensor]) -> dict[str, float]:
    """Average per-image scores into Table 4's columns: AOPC and ADCC in percent, MS as is (NaN images
    skipped)."""
    row: dict[str, float] = {}
    for key, scale in (("AOPC", 100.0), ("MS", 1.0), ("ADCC", 100.0)):
        if key in scores:
            v = scores[key].double()
            v = v[~torch.isnan(v)]
            row[key] = float(v.mean() * scale) if len(v) else float("nan")
    return row
