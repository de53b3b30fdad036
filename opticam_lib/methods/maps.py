"""Turning feature maps into saliency maps: the combination (eq. 1, 8), upsampling and normalisation (eq. 4, 16-18).

These are the only homes of those equations; every method uses them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from opticam_lib.inputs import validate_choice

Normalization = Literal["range", "max", "sigmoid"]
NORMALIZATIONS: tuple[str, ...] = ("range", "max", "sigmoid")


def combine(weights: Tensor, activations: Tensor, activation: str = "relu") -> Tensor:
    """Eq. (1) / (8): ``S = h(sum_k w_k A^k)``.

    Args:
        weights: (N, K) channel weights, or (N, K, h, w) per-location weights (HiRes-CAM, Layer-CAM).
        activations: (N, K, h, w) feature maps A^k.
        activation: h, ``"relu"`` (Grad-CAM and most CAMs) or ``"identity"`` (CAM, Opti-CAM).
    Returns:
        (N, 1, h, w) saliency map, not normalised.
    """
    validate_choice(activation, "activation", ("relu", "identity"))
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    s = (weights * activations).sum(dim=1, keepdim=True)
    return F.relu(s) if activation == "relu" else s


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``up`` in eq. (3), (5), (10): bilinear upsampling of (N, C, h, w) to (N, C, H, W), align_corners=False."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def normalize(maps: Tensor, method: str = "range", eps: float = 1e-12) -> Tensor:
    """``n`` in eq. (4) and (16)-(18), per map over its spatial dimensions. (N, C, H, W) -> same, in [0, 1].

    - ``"range"`` (eq. 4, 16): ``(A - min A) / (max A - min A)``;
    - ``"max"`` (eq. 17): ``A / max A`` (negative values clipped to 0 so the result stays in [0, 1]);
    - ``"sigmoid"`` (eq. 18): ``1 / (1 + exp(-a_ij))`` element-wise.

    A constant map gives zeros under ``"range"`` and a map with ``max A <= 0`` gives zeros under ``"max"``:
    never NaN (the authors' code divides by zero there, FACTS.md section 2). Gradients flow through all three.
    """
    validate_choice(method, "normalization", NORMALIZATIONS)
    if method == "sigmoid":
        return torch.sigmoid(maps)
    flat = maps.flatten(2)
    hi = flat.max(dim=2).values[..., None, None]
    if method == "max":
        safe = torch.where(hi > eps, hi, torch.ones_like(hi))
        return torch.where(hi > eps, maps.clamp(min=0) / safe, torch.zeros_like(maps))
    lo = flat.min(dim=2).values[..., None, None]
    span = hi - lo
    safe = torch.where(span > eps, span, torch.ones_like(span))
    return torch.where(span > eps, (maps - lo) / safe, torch.zeros_like(maps))


def to_saliency(maps: Tensor, size: tuple[int, int], method: str = "range") -> Tensor:
    """``n(up(S))``: (N, 1, h, w) raw maps -> (N, 1, H, W) in [0, 1] at input resolution."""
    return normalize(upsample(maps, size), method)
