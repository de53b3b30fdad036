"""Insertion and deletion (section 5.3.2, after RISE): pixels inserted into a blurred image, or deleted, in the
order of the saliency map; the class probability along the way, and its area under the curve.

Two substrates (what a pixel becomes when deleted, and what the image is before insertion):

- ``"rise"`` (default), RISE's own evaluation code (Petsiuk et al. 2018, ``evaluation.py``). The paper cites RISE
  for these metrics and says only that deletion sets a pixel "to zero" (section 5.3.2); that it used RISE's code is
  our assumption, and ``"black"`` below is the other reading. RISE's code works on the network's *normalised* tensor, so deletion sets pixels to 0 there, which is the dataset's mean
  colour in [0, 1] pixels; insertion starts from that tensor blurred by RISE's ``gkern(11, 5)`` (an 11 x 11
  Gaussian of sigma 5, made by ``scipy.ndimage.gaussian_filter`` of a unit impulse, so its reflected tails fold back
  into the window) with zero padding, i.e. mean-colour padding in [0, 1] pixels.
- ``"black"``: the course's earlier choice: deletion to black pixels (0 in [0, 1]); insertion from a separable
  truncated Gaussian (11 taps, sigma 5, normalised) with replicate padding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from opticam_lib.errors import InputError
from opticam_lib.inputs import prepare, validate_choice, validate_maps, validate_positive_int
from opticam_lib.metrics.classification import class_probability, real_tensor, validate_probabilities
from opticam_lib.models.classifier import Classifier

SUBSTRATES: tuple[str, ...] = ("rise", "black")


def rise_kernel(klen: int = 11, nsig: float = 5.0) -> Tensor:
    """RISE's ``gkern(klen, nsig)``: ``scipy.ndimage.gaussian_filter`` of a (klen, klen) unit impulse: (klen, klen)
    float32 summing to 1."""
    from scipy.ndimage import gaussian_filter

    impulse = torch.zeros(klen, klen, dtype=torch.float64).numpy()
    impulse[klen // 2, klen // 2] = 1
    return torch.from_numpy(gaussian_filter(impulse, nsig)).float()


def rise_substrates(classifier: Classifier, images: Tensor) -> tuple[Tensor, Tensor]:
    """(deletion substrate, insertion substrate) of RISE for ``images`` (N, 3, H, W) in [0, 1], both in [0, 1] pixels.

    Deletion: the classifier's mean colour everywhere (0 in its normalised tensor; black for a classifier without
    input normalisation). Insertion: the normalised tensor blurred by ``rise_kernel`` with zero padding, mapped back.
    """
    model = classifier.model
    mean = getattr(model, "mean", None)
    std = getattr(model, "std", None)
    if mean is None or not getattr(model, "normalized", False):
        mean = torch.zeros(1, images.shape[1], 1, 1, device=images.device)
        std = torch.ones(1, images.shape[1], 1, 1, device=images.device)
    mean, std = mean.to(images.device, images.dtype), std.to(images.device, images.dtype)
    z = (images - mean) / std
    k = rise_kernel().to(images.device, images.dtype)
    c = images.shape[1]
    blurred = F.conv2d(z, k.expand(c, 1, *k.shape), padding=k.shape[-1] // 2, groups=c)
    return mean.expand_as(images).clone(), blurred * std + mean


def _blurred_substrate(images: Tensor, kernel_size: int = 11, sigma: float = 5.0) -> Tensor:
    """The ``"black"`` substrate's blur for insertion: a separable truncated Gaussian (``kernel_size`` taps,
    ``sigma``), normalised, replicate padding. (RISE's own blur is ``rise_substrates``.)"""
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
    substrate: str = "rise",
) -> Tensor:
    validate_choice(substrate, "substrate", SUBSTRATES)
    batch_size = validate_positive_int(batch_size, "batch_size")
    images, targets = prepare(classifier, images, targets)  # checked, on the model's device and float dtype
    maps = validate_maps(maps, images).to(classifier.device)
    n, _, h, w = images.shape
    steps = validate_positive_int(steps if steps is not None else h, "steps")
    per_step = math.ceil(h * w / steps)  # 224 pixels a step at 224 x 224, as in the paper
    # every pixel gone before the last step: a flat tail would skew the area
    if per_step * (steps - 1) >= h * w:
        top = min(steps - 1, h * w)
        usable = next(k for k in range(top, 0, -1) if math.ceil(h * w / k) * (k - 1) < h * w)
        raise InputError(
            f"steps={steps} is too many for {h} x {w} images: at {per_step} pixel(s) a step every pixel is "
            f"{'deleted' if mode == 'deletion' else 'inserted'} after {math.ceil(h * w / per_step)} steps and the "
            f"rest of the curve would be flat, lowering its area; use {usable} steps (the largest number up to "
            f"{steps} that reaches the last pixel exactly at the last step; not every smaller number does) or the "
            f"default, {h} ({w} pixels a step)"
        )
    if substrate == "rise":
        deleted, blurred = rise_substrates(classifier, images)
        substrate = deleted if mode == "deletion" else blurred
    else:
        substrate = torch.zeros_like(images) if mode == "deletion" else _blurred_substrate(images)
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
            if mode == "deletion":  # remove them: set them to the substrate
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
    substrate: str = "rise",
) -> Tensor:
    """Class probability as the most salient pixels are deleted, ``steps`` at a time (default H steps: 224 pixels
    a step at 224 x 224). Deleted pixels take the ``substrate``: ``"rise"`` (default) the mean colour, ``"black"``
    zero. Targets default to the predicted class, as in the paper.

    images (N, 3, H, W) float in [0, 1] (any float dtype: cast to the model's, as the methods do); maps
    (N, 1, H, W) in [0, 1]; ``steps`` and ``batch_size`` (images per forward pass) positive ints.
    Returns (N, steps + 1) float32 probabilities in [0, 1], the first on the intact image."""
    return _curve(classifier, images, maps, targets, "deletion", steps, batch_size, progress, substrate)


def insertion_curve(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: int | Sequence[int] | Tensor | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    substrate: str = "rise",
) -> Tensor:
    """Class probability as the most salient pixels are copied into a blurred version of the image
    (``substrate``: ``"rise"``, the default, or ``"black"``; see the module docstring). Arguments as
    ``deletion_curve``.
    Returns (N, steps + 1) float32 probabilities in [0, 1], the first on the blurred image, the last on the intact
    image."""
    return _curve(classifier, images, maps, targets, "insertion", steps, batch_size, progress, substrate)


def area_under_curve(curves: Tensor) -> Tensor:
    """Trapezoidal area under each curve (N, S+1) over the fraction of pixels in [0, 1] -> (N,) in [0, 1].

    ``curves``: (N, T) or one curve (T,) (its area is then a 0-dim tensor), T = S + 1 >= 2 points taken as evenly
    spaced over [0, 1] (RISE's rule; the curves here change ``ceil(HW / S)`` pixels a step, so when S does not
    divide H x W the last step is shorter and the area is slightly off: -1.5 % for a linear curve at 32 x 32 with
    S = 40; the defaults, S = H at 224 x 224 and the laptop profile's 28, divide it), N >= 1, finite
    probabilities in [0, 1]; a tensor (a float one keeps its dtype), a list or a NumPy array (float64). Anything
    else is an ``InputError``."""
    shape = "(N, T) or (T,)"
    curves = real_tensor(curves, "curves", shape)
    if curves.dim() not in (1, 2):
        raise InputError(f"curves must have shape {shape}, got {tuple(curves.shape)}")
    if curves.shape[-1] < 2:
        raise InputError(
            f"curves must have at least 2 points (T >= 2), got shape {tuple(curves.shape)}: a curve of S steps"
            " has S + 1 points"
        )
    if curves.dim() == 1:
        return area_under_curve(curves[None])[0]
    if curves.shape[0] == 0:
        raise InputError(f"curves is empty: at least one curve is needed, got shape {tuple(curves.shape)}")
    validate_probabilities(curves, "curves")
    s = curves.shape[1] - 1
    return (curves.sum(dim=1) - (curves[:, 0] + curves[:, -1]) / 2) / s
