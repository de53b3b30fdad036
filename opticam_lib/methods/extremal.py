"""Extremal Perturbations (Fong, Patrick & Vedaldi, ICCV 2019), the row "ExPerturbation" of the paper's tables.

R. Fong, M. Patrick, A. Vedaldi, "Understanding deep networks via extremal perturbations and smooth masks",
ICCV 2019 (reference [19] of the Opti-CAM paper), an instance of the paper's eq. (7): a mask optimised directly in
the input space, with an area constraint and a smooth parametrisation. The Opti-CAM paper says only that its implementation came from
TorchRay (section 5.2, footnote 6) and gives none of its settings. The defaults here are TorchRay's own (those of
its ``extremal_perturbation``), on the assumption that the paper kept them: area 0.1, the blur perturbation, 800
iterations, the "preserve" variant, step 7, sigma 21, 8 pyramid levels, maximum blur 20, SGD with learning rate
0.01 and momentum 0.9, area weight 300 growing by a factor 1.0035 per iteration, horizontal-flip jitter.

The method, in plain text (x the image, c the target class, f_c its logit):

- Smooth mask. The variable is a low-resolution parameter grid p in [0, 1]^(h x w), h = ceil(H / step),
  parameter (i, j) sitting at pixel (step * i, step * j). The mask at pixel u is a smooth max over the
  parameters v near u of translated, flat-topped kernels:

      m(u) = smax_v  k(|u - step * v| / sigma) * p(v),      k(z) = exp(-2 * max(z - 1/2, 0)^2),
      smax_v a_v = sum_v a_v * softmax_v(T * a_v),          T = 20 (the "coldness"),

  over the (2r + 1)^2 parameters around u, r = 1 + ceil(sigma / step), then clamped to [0, 1]. The mask is
  computed on a grid with a margin of sigma pixels on every side (the "full" mask) and cropped to H x W.

- Perturbation. A pyramid of L = ``num_levels`` increasingly perturbed copies of x: level l is x blurred by a
  Gaussian of standard deviation sigma_l = max_blur * (1 - l / (L - 1)) (zero padding at the borders, as
  TorchRay), or for the fade perturbation x * l / (L - 1) (to black). Level L - 1 is x itself, level 0 the most
  perturbed. The perturbed image at pixel u reads the pyramid at the fractional level m(u) * (L - 1), with
  linear interpolation between the two nearest levels: mask 1 keeps the pixel, mask 0 perturbs it fully.

- Area constraint (ranking). With M the number of pixels of the full mask and r_a the reference vector of M
  values whose first floor(M * (1 - a)) are 0 and the rest 1 (a mask of area a, sorted):

      R_a(m) = mean_i (sort(m)_i - r_a,i)^2,

  zero exactly when the mask takes value 1 on a fraction a of its pixels and 0 elsewhere.

- Energy, maximised over p with SGD (momentum and dampening 0.9, so the step follows a moving average of the
  gradient), p clamped to [0, 1] after each step, p = 1 at the start:

      preserve:  E(p) =  f_c(perturb(x; m)) - lambda_t * R_a(m)
      delete:    E(p) = -f_c(perturb(x; 1 - m)) - lambda_t * R_a(m)

  with lambda_t = 300 * 1.0035^t at iteration t = 0, 1, ... (the reward is TorchRay's "simple reward", the
  class logit). The image given to the network is flipped horizontally at every even iteration (jitter).

The saliency map is the cropped mask m (N, 1, H, W), in [0, 1] by construction, not renormalised.

What differs from TorchRay:

- the model's state is restored on exit, also after an exception: TorchRay sets ``requires_grad=False`` on
  every parameter and never restores it (and does not put the model in eval mode); here the optimisation runs
  inside ``hooks.frozen``, and gradients are taken with ``torch.autograd.grad`` w.r.t. the mask parameters only,
  so no ``.grad`` appears on any parameter;
- a batch of N images is optimised at once, one parameter grid and one target per image (TorchRay takes one
  image and one target, and batches over areas). The energies are summed, every image's energy depends on its
  own parameters only and the SGD update is element-wise, so each image gets exactly what it would get alone
  (the network runs in eval mode, so BatchNorm does not mix the images);
- the returned mask is generated from the final parameters (TorchRay returns the mask of the last iteration,
  i.e. from the parameters before the last update);
- an optional random jitter (the images flipped together with probability 1/2 at each iteration, from a
  ``torch.Generator`` seeded by ``seed``: the coin an image draws alone); the default is TorchRay's deterministic alternate flip, and the
  whole computation is then deterministic whatever the seed;
- no debug plots, contrastive reward, dual variant or several areas per call.

Cost: ``iterations`` x (one forward + one backward pass through the network, on N images), plus the mask
generator, whose intermediate tensor has (2r + 1)^2 = 81 channels at the full-mask resolution (260 x 260 for a
224 x 224 image) per image. The paper reports T = 152.96 s per batch of 8 images on ResNet50 and 83.20 s on
VGG16 (Table 1, GPU), by far the slowest method of the table.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from opticam_lib.errors import InputError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import (
    Targets,
    prepare,
    require_autograd,
    require_graph,
    validate_choice,
    validate_number,
    validate_positive_int,
)
from opticam_lib.models.classifier import Classifier

PERTURBATIONS: tuple[str, ...] = ("blur", "fade")
VARIANTS: tuple[str, ...] = ("preserve", "delete")
JITTERS: tuple[str, ...] = ("flip", "random", "none")
COLDNESS = 20.0  # T of the smooth max (TorchRay's value)


# ---------------------------------------------------------------------------------------------------------------
# checks


def _check_area(area: object) -> float:
    return validate_number(area, "area", low=0.0, high=1.0, closed_low=False)


# ---------------------------------------------------------------------------------------------------------------
# perturbation


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels, zero padding (as TorchRay's ``imsmooth``).

    The 1-D kernel has taps i = -w..w, w = ceil(4 sigma), proportional to exp(-i^2 / (2 sigma^2)) and summing
    to 1; outside the image the signal is 0, so the borders darken for large sigma. ``sigma = 0`` returns a copy.

    Args:
        images: (N, C, H, W) float.
        sigma: >= 0.
    Returns:
        (N, C, H, W), same dtype and device.
    """
    sigma = validate_number(sigma, "sigma", low=0.0, closed_low=True)
    if sigma == 0:
        return images.clone()
    width = math.ceil(4 * sigma)
    taps = torch.arange(-width, width + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=images.device, dtype=images.dtype)
    c = images.shape[1]
    out = F.conv2d(images, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(width, 0), groups=c)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, width), groups=c)


def perturbation_pyramid(
    images: Tensor, num_levels: int = 8, max_blur: float = 20.0, perturbation: str = "blur"
) -> Tensor:
    """The L = ``num_levels`` increasingly perturbed copies of each image.

    Level l (0 <= l < L) is ``gaussian_blur(x, max_blur * (1 - l / (L - 1)))`` for ``"blur"`` and
    ``x * l / (L - 1)`` for ``"fade"`` (to black): level 0 is the most perturbed, level L - 1 the image itself.

    Args:
        images: (N, C, H, W) float in [0, 1].
    Returns:
        (N, L, C, H, W) in the images' dtype (the blur of float16 / bfloat16 images is computed in float32), no
        graph.
    """
    num_levels = validate_positive_int(num_levels, "num_levels")
    if num_levels < 2:
        raise InputError(f"num_levels must be at least 2, got {num_levels}")
    validate_choice(perturbation, "perturbation", PERTURBATIONS)
    max_blur = validate_number(max_blur, "max_blur", low=0.0, closed_low=False)
    levels = []
    # half-precision depthwise convolution is very slow on a CPU (and no more exact elsewhere): blur in float32
    low = images.dtype in (torch.float16, torch.bfloat16)
    with torch.no_grad():
        for level in range(num_levels):
            t = level / (num_levels - 1)
            if perturbation == "blur":
                blurred = gaussian_blur(images.float() if low else images, (1 - t) * max_blur)
                levels.append(blurred.to(images.dtype))
            else:
                levels.append(images * t)
    return torch.stack(levels, dim=1)


def apply_perturbation(pyramid: Tensor, masks: Tensor) -> Tensor:
    """Read the pyramid at the fractional level ``mask * (L - 1)`` of each pixel, linear in between.

    Args:
        pyramid: (N, L, C, H, W) from ``perturbation_pyramid``.
        masks: (N, 1, H, W) in [0, 1]; 1 keeps the pixel (level L - 1), 0 perturbs it fully (level 0).
    Returns:
        (N, C, H, W), differentiable in ``masks`` (through the interpolation weight).
    """
    n, levels, c, h, w = pyramid.shape
    if tuple(masks.shape) != (n, 1, h, w):
        raise InputError(
            f"masks must have shape {(n, 1, h, w)} to match the pyramid, got {tuple(masks.shape)}"
        )
    pos = masks.clamp(0, 1) * (levels - 1)
    lower = pos.detach().floor().clamp(max=levels - 1)
    frac = pos - lower
    lower = lower.long()
    upper = (lower + 1).clamp(max=levels - 1)
    index0 = lower[:, :, None].expand(n, 1, c, h, w)
    index1 = upper[:, :, None].expand(n, 1, c, h, w)
    y0 = pyramid.gather(1, index0)[:, 0]
    y1 = pyramid.gather(1, index1)[:, 0]
    return (1 - frac) * y0 + frac * y1


# ---------------------------------------------------------------------------------------------------------------
# smooth masks


class SmoothMaskGenerator:
    """Maps a low-resolution parameter grid p (N, 1, h, w) in [0, 1] to a smooth mask (N, 1, H, W) in [0, 1].

    ``m(u) = clamp(smax_v k(|u - (margin + step v)| / sigma) p(v), 0, 1)`` on the full grid (with a margin of
    ``sigma`` pixels around the image), over the (2r + 1)^2 parameters v nearest to u, r = 1 + ceil(sigma / step),
    parameters outside the grid counting as 0; ``k(z) = exp(-2 max(z - 1/2, 0)^2)`` is 1 within sigma / 2 of a
    parameter's centre; ``smax_v a_v = sum_v a_v softmax(T a)_v`` with T = ``coldness``.

    Attributes:
        size: (H, W) of the cropped mask (the image size).
        param_shape: (h, w) = (ceil(H / step), ceil(W / step)) of the parameter grid.
        full_shape: spatial size of the full mask (with the margin).
        margin: the crop offset, round(sigma).
    """

    def __init__(
        self,
        size: tuple[int, int],
        step: int = 7,
        sigma: float = 21.0,
        coldness: float = COLDNESS,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.step = validate_positive_int(step, "step")
        self.sigma = validate_number(sigma, "sigma", low=0.0, closed_low=False)
        self.coldness = validate_number(coldness, "coldness", low=0.0, closed_low=False)
        self.size = (int(size[0]), int(size[1]))
        self.radius = 1 + math.ceil(self.sigma / self.step)
        # room for the margin plus the kernel's reach
        self.padding = 1 + math.ceil(2 * self.sigma / self.step)
        self.param_shape = tuple(math.ceil(z / self.step) for z in self.size)
        window = 2 * self.radius + 1
        self.margin = round(self.sigma)
        # One window position per cell of the zero-padded parameter grid, each cell covering step x step pixels
        # of the full mask; the last step - 1 rows and columns are dropped (TorchRay's geometry). For some
        # step/sigma pairs (e.g. step 4, sigma 6) that full mask ends before margin + H, and TorchRay's crop
        # comes out smaller than the image; extra zero parameters at the bottom/right end fix that (none are
        # needed for the defaults, so the geometry, and the area constraint, are TorchRay's there).
        self._extra = []
        cells = []
        for z, size_z in zip(self.param_shape, self.size):
            c = z + 2 * self.padding - window + 1
            short = self.margin + size_z - (self.step * c - self.step + 1)
            extra = max(0, math.ceil(short / self.step))
            self._extra.append(extra)
            cells.append(c + extra)
        self._cells = tuple(cells)
        self.full_shape = tuple(self.step * z - self.step + 1 for z in self._cells)
        # kernel weight of window element (ky, kx) at each full-grid pixel: (window^2, H_full, W_full)
        offsets = torch.arange(window, dtype=torch.float64)
        dists = []
        for axis in range(2):
            u = torch.arange(self.full_shape[axis], dtype=torch.float64)
            grid_index = (
                torch.div(u, self.step, rounding_mode="floor")[None, :] + offsets[:, None] - self.padding
            )
            dists.append(u[None, :] - (self.sigma + self.step * grid_index))  # (window, H_full or W_full)
        dy, dx = dists
        dist = torch.sqrt(dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2) / self.sigma
        weight = torch.exp(-2 * (dist - 0.5).clamp(min=0) ** 2)
        self.weight = weight.reshape(1, window * window, *self.full_shape).to(device=device, dtype=dtype)

    def __call__(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Generate the masks.

        Args:
            params: (N, 1, h, w) with (h, w) = ``param_shape``, normally in [0, 1].
        Returns:
            (cropped, full): (N, 1, H, W) and (N, 1, *full_shape), both in [0, 1], differentiable in ``params``.
        """
        if params.dim() != 4 or params.shape[1] != 1 or tuple(params.shape[2:]) != self.param_shape:
            raise InputError(
                f"mask parameters must have shape (N, 1, {self.param_shape[0]}, {self.param_shape[1]}), "
                f"got {tuple(params.shape)}"
            )
        n = params.shape[0]
        window = 2 * self.radius + 1
        pad = self.padding
        padded = F.pad(params, (pad, pad + self._extra[1], pad, pad + self._extra[0]))
        cells = F.unfold(padded, window).view(n, window * window, *self._cells)
        values = cells.repeat_interleave(self.step, dim=2).repeat_interleave(self.step, dim=3)
        values = values[:, :, : self.full_shape[0], : self.full_shape[1]] * self.weight
        full = (values * torch.softmax(self.coldness * values, dim=1)).sum(dim=1, keepdim=True).clamp(0, 1)
        m = self.margin
        cropped = full[:, :, m : m + self.size[0], m : m + self.size[1]]
        return cropped, full


# ---------------------------------------------------------------------------------------------------------------
# area constraint


def area_reference(
    numel: int, area: float, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Tensor:
    """r_a: ``numel`` values, the first floor(numel * (1 - area)) equal to 0 and the rest to 1 (area in
    (0, 1)). -> (numel,) of ``dtype``, values in {0, 1}, ascending."""
    numel = validate_positive_int(numel, "numel")
    area = _check_area(area)
    ref = torch.ones(numel, device=device, dtype=dtype)
    ref[: int(numel * (1 - area))] = 0
    return ref


def area_loss(masks: Tensor, area: float) -> Tensor:
    """The ranking area constraint ``R_a(m) = mean_i (sort(m)_i - r_a,i)^2`` of each mask.

    Args:
        masks: (N, ...) values in [0, 1]; everything after the batch dimension is one mask.
        area: a in (0, 1), the fraction of the mask meant to be 1.
    Returns:
        (N,) >= 0; zero exactly when the sorted mask equals r_a. Differentiable in ``masks``.
    """
    flat = masks.flatten(1)
    ref = area_reference(flat.shape[1], area, flat.device, flat.dtype)
    return ((flat.sort(dim=1).values - ref) ** 2).mean(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# the optimisation


@dataclass
class ExtremalResult:
    """What ``optimize_extremal`` returns.

    Attributes:
        maps: (N, 1, H, W) in [0, 1], the cropped masks m (the saliency maps).
        full_masks: (N, 1, *SmoothMaskGenerator.full_shape) in [0, 1], the masks with their margin (260 x 260
            for 224 x 224 images), on which the area constraint is measured.
        params: (N, 1, h, w) in [0, 1], the optimised parameter grids.
        scores: (N, T) the class logit f_c of the perturbed (and possibly flipped) image at each iteration.
        area_losses: (N, T) R_a(m) at each iteration.
        targets: (N,) the class c of each image.
        seconds: wall-clock time.
    """

    maps: Tensor
    full_masks: Tensor
    params: Tensor
    scores: Tensor
    area_losses: Tensor
    targets: Tensor
    seconds: float


def optimize_extremal(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    *,
    area: float = 0.1,
    iterations: int = 800,
    perturbation: str = "blur",
    variant: str = "preserve",
    step: int = 7,
    sigma: float = 21.0,
    num_levels: int = 8,
    max_blur: float = 20.0,
    lr: float = 0.01,
    momentum: float = 0.9,
    area_weight: float = 300.0,
    area_growth: float = 1.0035,
    jitter: str = "flip",
    seed: int = 0,
    progress: bool = True,
) -> ExtremalResult:
    """Extremal perturbation masks for a batch of images, one parameter grid and one target per image.

    Args:
        classifier: the model (its device is used).
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image (None: the predicted class).
        area: a in (0, 1), the fraction of the (full) mask that should be 1 (TorchRay: 0.1).
        iterations: SGD steps (TorchRay's ``max_iter``, 800).
        perturbation: ``"blur"`` (Gaussian blur pyramid, TorchRay's default) or ``"fade"`` (to black).
        variant: ``"preserve"`` (keep the region that maximises the class logit, TorchRay's default) or ``"delete"``
            (remove the region that minimises it; the map is then the deleted region).
        step: spacing in pixels of the mask parameters (7).
        sigma: kernel size of the smooth mask in pixels, also its margin (21).
        num_levels: levels of the perturbation pyramid (8).
        max_blur: standard deviation of the strongest blur in pixels (20; unused by ``"fade"``).
        lr: SGD learning rate (TorchRay: 0.01).
        momentum: SGD momentum, also used as dampening (TorchRay: 0.9), in [0, 1).
        area_weight: lambda_0 of the area constraint (300).
        area_growth: lambda_t = area_weight * area_growth^t (1.0035).
        jitter: ``"flip"`` (TorchRay: mirror the perturbed images at every even iteration), ``"random"`` (the
            images mirrored with probability 1/2 at each iteration, seeded by ``seed``: the same coin for every
            image, the one it draws alone, so a map does not depend on its batch) or ``"none"``.
        seed: seed of the random jitter (the default ``"flip"`` uses no randomness).
        progress: show a progress bar.
    Returns:
        ``ExtremalResult``; ``maps`` is (N, 1, H, W) in [0, 1].
    """
    require_autograd("Extremal perturbation")
    images, targets = prepare(classifier, images, targets)
    area = _check_area(area)
    iterations = validate_positive_int(iterations, "iterations")
    validate_choice(perturbation, "perturbation", PERTURBATIONS)
    validate_choice(variant, "variant", VARIANTS)
    validate_choice(jitter, "jitter", JITTERS)
    step = validate_positive_int(step, "step")
    sigma = validate_number(sigma, "sigma", low=0.0, closed_low=False)
    num_levels = validate_positive_int(num_levels, "num_levels")
    if num_levels < 2:
        raise InputError(f"num_levels must be at least 2, got {num_levels}")
    max_blur = validate_number(max_blur, "max_blur", low=0.0, closed_low=False)
    lr = validate_number(lr, "lr", low=0.0, closed_low=False)
    momentum = validate_number(momentum, "momentum", low=0.0, high=1.0, closed_low=True)
    area_weight = validate_number(area_weight, "area_weight", low=0.0, closed_low=True)
    area_growth = validate_number(area_growth, "area_growth", low=0.0, closed_low=False)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")

    start_time = time.perf_counter()
    device, dtype = images.device, images.dtype
    n = images.shape[0]
    size = (images.shape[2], images.shape[3])
    generator = SmoothMaskGenerator(size, step, sigma, device=device, dtype=dtype)
    pyramid = perturbation_pyramid(images, num_levels, max_blur, perturbation)
    rng = torch.Generator().manual_seed(seed)
    sign = 1.0 if variant == "preserve" else -1.0

    params = torch.ones(n, 1, *generator.param_shape, device=device, dtype=dtype)
    velocity: Tensor | None = None
    scores = torch.empty(n, iterations)
    losses = torch.empty(n, iterations)
    weight = area_weight

    bar = tqdm(range(iterations), desc="Extremal perturbation", disable=not progress, leave=False)
    with frozen(classifier.model):
        for it in bar:
            p = params.clone().requires_grad_(True)
            with torch.enable_grad():
                mask, full = generator(p)
                x = apply_perturbation(pyramid, mask if variant == "preserve" else 1 - mask)
                if jitter == "flip" and it % 2 == 0:
                    x = x.flip(3)
                elif jitter == "random":
                    # one coin for the batch, the one each image draws alone: its flips never depend on its batch
                    if bool(torch.rand(1, generator=rng) < 0.5):
                        x = x.flip(3)
                logits = classifier.validate_logits(classifier.model(x), "outputs for perturbed images")
                score = logits.gather(1, targets[:, None])[:, 0]
                # else only the area term would move the mask
                require_graph(score, classifier.name, "Extremal perturbation")
                loss = area_loss(full, area)
                energy = sign * score - weight * loss
                (grad,) = torch.autograd.grad(energy.sum(), p)
            with torch.no_grad():
                loss_grad = -grad  # SGD minimises the loss -E
                if velocity is None:  # as torch.optim.SGD: the first buffer is the gradient itself
                    velocity = loss_grad.clone()
                else:  # momentum = dampening (TorchRay): a moving average of the gradient
                    velocity = momentum * velocity + (1 - momentum) * loss_grad
                params = (params - lr * velocity).clamp(0, 1)
                scores[:, it] = score.detach().float().cpu()
                losses[:, it] = loss.detach().float().cpu()
            weight *= area_growth
            if progress:
                bar.set_postfix(
                    score=f"{float(score.detach().mean()):.3f}",
                    area_loss=f"{float(loss.detach().mean()):.4f}",
                )
    bar.close()
    with torch.no_grad():
        maps, full = generator(params)
    return ExtremalResult(
        maps=maps.detach(),
        full_masks=full.detach(),
        params=params.detach(),
        scores=scores,
        area_losses=losses,
        targets=targets,
        seconds=time.perf_counter() - start_time,
    )


def extremal_perturbation(
    classifier: Classifier, images: Tensor, targets: Targets = None, **options: Any
) -> Tensor:
    """Extremal perturbation maps (N, 1, H, W) in [0, 1] for images (N, 3, H, W) in [0, 1].

    The library's common calling convention; ``options`` (TorchRay's defaults; the paper names none) are those
    of ``optimize_extremal``, which also returns the full masks and the per-iteration history.
    """
    return optimize_extremal(classifier, images, targets, **options).maps


# help() and registry.validate_options see optimize_extremal's keywords (and the maps it returns)
extremal_perturbation.__signature__ = inspect.signature(optimize_extremal).replace(  # type: ignore[attr-defined]
    return_annotation="Tensor"
)
