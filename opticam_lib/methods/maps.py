"""Turning feature maps into saliency maps: the combination (eq. 1), upsampling and normalisation (eq. 4, 16-18).

These are the only homes of those equations; every method uses them. Opti-CAM's eq. (8), the combination with
softmax(u) as the weights, is ``opti_cam.saliency_map``, built on ``combine``.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_choice

Normalization = Literal["range", "max", "sigmoid"]
NORMALIZATIONS: tuple[str, ...] = ("range", "max", "sigmoid")
_CPU = torch.device("cpu")


def combine(weights: Tensor, activations: Tensor, activation: str = "relu") -> Tensor:
    """Eq. (1): ``S = h(sum_k w_k A^k)`` (with w = softmax(u) it is eq. (8), ``opti_cam.saliency_map``).

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


@functools.lru_cache(maxsize=64)
def interpolation_matrix(
    size_in: int, size_out: int, device: torch.device = _CPU, dtype: torch.dtype = torch.float32
) -> Tensor:
    """R (size_out, size_in): 1-D linear interpolation with align_corners=False, as a matrix.

    Row i holds the two weights ``1 - l`` and ``l`` of output pixel i on input pixels ``i0`` and
    ``min(i0 + 1, size_in - 1)``, where ``s = max((i + 0.5) * size_in / size_out - 0.5, 0)``, ``i0 = floor(s)`` and
    ``l = s - i0`` (PyTorch's rule). Every row sums to 1, every entry is in [0, 1]. Built once per
    (size_in, size_out, device, dtype) and cached; do not modify it in place.
    """
    if size_in < 1 or size_out < 1:
        raise InputError(f"interpolation sizes must be positive, got {size_in} -> {size_out}")
    # cached: an inference tensor made here would break every later backward pass through it
    with torch.inference_mode(False):
        return _interpolation_matrix(size_in, size_out, device, dtype)


def _interpolation_matrix(size_in: int, size_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    scale = size_in / size_out
    src = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=size_in - 1)
    i1 = (i0 + 1).clamp(max=size_in - 1)
    lam = src - i0
    r = torch.zeros(size_out, size_in, dtype=torch.float64)
    rows = torch.arange(size_out)
    r.index_put_((rows, i0), 1 - lam, accumulate=True)
    r.index_put_((rows, i1), lam, accumulate=True)
    return r.to(device=device, dtype=dtype)


UPSAMPLINGS: tuple[str, ...] = ("interpolate", "matrix")


def resolve_upsampling(method: str, device: torch.device | str) -> str:
    """``optimize``'s ``upsampling="auto"``: ``"matrix"`` on a CUDA device, ``"interpolate"`` elsewhere; any other
    ``method`` of ``UPSAMPLINGS`` is returned as is.

    On a GPU the bilinear kernel's backward pass is most of Opti-CAM's cost over the floor (issue 13: x1.15 per
    iteration with it, x1.02 with the matrix products, ResNet50 at batch 256 on an H200); on a CPU the two cost
    the same, and the kernel made every number the course records (see ``upsample``).
    """
    method = validate_choice(method, "upsampling", (*UPSAMPLINGS, "auto"))
    if method != "auto":
        return method
    return "matrix" if torch.device(device).type == "cuda" else "interpolate"


def upsample(maps: Tensor, size: tuple[int, int], method: str = "interpolate") -> Tensor:
    """``up`` in eq. (3), (5), (10): bilinear resizing of (N, C, h, w) to (N, C, H, W), align_corners=False.

    Two ways to compute the same numbers (within float round-off: about 1e-7 of the values' size in float32):

    - ``"interpolate"`` (default): ``F.interpolate(mode="bilinear", align_corners=False)``, PyTorch's kernel.
    - ``"matrix"``: two small matrix products, ``R_H S R_W^T`` with ``R_H`` (H, h) and ``R_W`` (W, w) from
      ``interpolation_matrix``, always in float32 or wider (also under autocast). Its backward pass is two matrix
      products too, much cheaper than the bilinear kernel's on a GPU (issue 13's fast path:
      ``optimize(..., upsampling="matrix")``).

    The default stays the kernel because Opti-CAM amplifies round-off: 100 Adam iterations from maps that differ
    by 1e-7 end at visibly different maps (AG 55.1 against 53.6 on four sample photos, measured on this
    course's CPU), so the course's recorded numbers are reproducible only with the computation that made them.
    Values stay within the input's range (convex combinations of input pixels).
    """
    if maps.dim() != 4:
        raise InputError(f"maps must have shape (N, C, h, w), got {tuple(maps.shape)}")
    method = validate_choice(method, "upsampling", UPSAMPLINGS)
    height, width = int(size[0]), int(size[1])
    if tuple(maps.shape[-2:]) == (height, width):
        return maps
    if method == "interpolate":
        return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    dtype = maps.dtype if maps.dtype == torch.float64 else torch.float32
    rows = interpolation_matrix(maps.shape[-2], height, maps.device, dtype)
    cols = interpolation_matrix(maps.shape[-1], width, maps.device, dtype)
    with torch.autocast(maps.device.type, enabled=False):
        return rows @ maps.to(dtype) @ cols.T


def normalize(maps: Tensor, method: str = "range", eps: float | None = None, rtol: float = 1e-5) -> Tensor:
    """``n`` in eq. (4) and (16)-(18), per map over its spatial dimensions. (N, C, H, W) -> same, in [0, 1].

    - ``"range"`` (eq. 4, 16): ``(A - min A) / (max A - min A)``;
    - ``"max"`` (eq. 17): ``A / max A`` (negative values clipped to 0 so the result stays in [0, 1]);
    - ``"sigmoid"`` (eq. 18): ``1 / (1 + exp(-a_ij))`` element-wise.

    A constant map gives zeros under ``"range"`` and a map with ``max A <= 0`` gives zeros under ``"max"``:
    never NaN (the authors' code divides by zero there). "Constant" is relative
    (``is_constant``): a span ``max A - min A`` at most ``eps + rtol * max(|max A|, |min A|)`` is rounding, not
    signal (bilinear upsampling of a constant 1 x 1 grid varies by about 1e-8), and is not stretched to [0, 1].
    ``eps`` defaults to the smallest normal number of float32 (float64 for float64 maps), so the scale of a map
    never matters: maps of a model whose logits are scaled by 1e-12 normalise as those of the unscaled model.
    Gradients flow through all three.
    """
    validate_choice(method, "normalization", NORMALIZATIONS)
    if method == "sigmoid":
        return torch.sigmoid(maps)
    eps = _floor(maps, eps)
    flat = maps.flatten(2)
    hi = flat.max(dim=2).values[..., None, None]
    if method == "max":
        safe = torch.where(hi > eps, hi, torch.ones_like(hi))
        return torch.where(hi > eps, maps.clamp(min=0) / safe, torch.zeros_like(maps))
    lo = flat.min(dim=2).values[..., None, None]
    varies, span = _signal_span(lo, hi, eps, rtol)
    return torch.where(varies, (maps - lo) / span, torch.zeros_like(maps))


def is_constant(maps: Tensor, eps: float | None = None, rtol: float = 1e-5) -> Tensor:
    """(N, C, h, w) -> (N, C) bool: the maps whose span is rounding, not signal, which ``normalize`` (eq. 4, 16)
    turns into zeros (see there for ``eps`` and ``rtol``)."""
    if maps.dim() != 4:
        raise InputError(f"maps must have shape (N, C, h, w), got {tuple(maps.shape)}")
    flat = maps.flatten(2)
    hi, lo = flat.max(dim=2).values, flat.min(dim=2).values
    return ~_signal_span(lo, hi, _floor(maps, eps), rtol)[0]


def _floor(maps: Tensor, eps: float | None) -> float:
    """``eps`` or, when None, the smallest normal number of float32 or of the maps' dtype if wider (float16's,
    6e-5, would zero a float16 map of values near 1e-6, which float32 arithmetic normalises as any other)."""
    if eps is not None:
        return float(eps)
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    return float(torch.finfo(torch.promote_types(dtype, torch.float32)).tiny)


def _signal_span(lo: Tensor, hi: Tensor, eps: float, rtol: float) -> tuple[Tensor, Tensor]:
    """Eq. (16)'s denominator made safe: ``varies`` where ``hi - lo`` is more than rounding (see ``normalize``),
    and the span there (1 elsewhere, so that nothing divides by zero)."""
    span = hi - lo
    varies = span > eps + rtol * torch.maximum(hi.abs(), lo.abs()).detach()
    return varies, torch.where(varies, span, torch.ones_like(span))


def to_saliency(
    maps: Tensor, size: tuple[int, int], method: str = "range", upsampling: str = "interpolate"
) -> Tensor:
    """``n(up(S))``: (N, 1, h, w) raw maps -> (N, 1, H, W) in [0, 1] at input resolution (``upsampling``: see
    ``upsample``).

    With ``upsampling="matrix"`` and the range normalisation (eq. 16), the map is normalised before it is
    upsampled (``range_normalized_upsample``): the same values within float round-off, and a backward pass of
    two small matrix products instead of about ten full-resolution operations (Opti-CAM's cost over the floor).
    """
    method = validate_choice(method, "normalization", NORMALIZATIONS)
    upsampling = validate_choice(upsampling, "upsampling", UPSAMPLINGS)
    if upsampling == "matrix" and method == "range" and maps.dim() == 4 and maps.shape[-2:] != tuple(size):
        return range_normalized_upsample(maps, size)
    return normalize(upsample(maps, size, upsampling), method)


def range_normalized_upsample(
    maps: Tensor, size: tuple[int, int], eps: float | None = None, rtol: float = 1e-5
) -> Tensor:
    """``n(up(S))`` for the range normalisation (eq. 16) and ``up`` as matrix products, normalised at low resolution.

    ``up(S) = R_H S R_W^T`` is linear and each row of R sums to 1, so with ``lo``, ``hi`` the extremes of up(S),
    ``(up(S) - lo) / (hi - lo) = up((S - lo) / (hi - lo))``. The extremes are located on up(S) without a graph,
    then computed differentiably from the two rows of R that make them (``lo = R_H[i] S R_W[j]^T``): the gradient
    is the one of ``normalize(upsample(S, size, "matrix"))``, and the backward pass never touches a full-resolution
    tensor but the output's gradient. A map whose span is rounding (see ``normalize``) gives zeros, as there.

    Args:
        maps: (N, C, h, w) raw maps (any sign).
        size: (H, W) of the output.
    Returns:
        (N, C, H, W) float32 (float64 for float64 maps) in [0, 1]: exactly when no gradient is recorded, within
        float round-off (about 1e-7) otherwise.
    """
    if maps.dim() != 4:
        raise InputError(f"maps must have shape (N, C, h, w), got {tuple(maps.shape)}")
    height, width = int(size[0]), int(size[1])
    dtype = maps.dtype if maps.dtype == torch.float64 else torch.float32
    rows = interpolation_matrix(maps.shape[-2], height, maps.device, dtype)
    cols = interpolation_matrix(maps.shape[-1], width, maps.device, dtype)
    with torch.autocast(maps.device.type, enabled=False):
        s = maps.to(dtype)
        with torch.no_grad():
            flat = (rows @ s @ cols.T).flatten(2)  # (N, C, H*W), only to locate the extremes
            where_hi, where_lo = flat.max(dim=2).indices, flat.min(dim=2).indices

        def value_at(index: Tensor) -> Tensor:  # (N, C) -> (N, C, 1, 1): up(S) at that pixel, differentiably
            return rows[index // width][..., None, :] @ s @ cols[index % width][..., :, None]

        lo, hi = value_at(where_lo), value_at(where_hi)
        varies, span = _signal_span(lo, hi, _floor(s, eps), rtol)
        out = rows @ torch.where(varies, (s - lo) / span, torch.zeros_like(s)) @ cols.T
        # [0, 1] up to round-off (about 1e-7) inside a graph, where a clamp would only cost time; exactly without
        return out if out.requires_grad else out.clamp_(0, 1)
