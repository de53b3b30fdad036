"""Localisation metrics of appendix B (eq. A1-A7 of appendix B): OM, LE, pixel-wise F1, BoxAcc, SP, EP, SM.

Each compares a saliency map with the ground-truth boxes of its image. The map is binarised at its mean, and the
predicted box B_p is the bounding box of the largest connected component (8-connectivity). Values are
fractions in [0, 1] per image (SM is unbounded); average them and multiply by 100 for the paper's tables.

Note: appendix B numbers its equations A1-A7 like appendix F does; here they are the localisation ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from .errors import InputError

BOXACC_THRESHOLDS: tuple[float, ...] = tuple(np.round(np.arange(0.0, 1.0, 0.05), 2))  # eta
BOXACC_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)  # delta, as in Choe et al. (2020)


def largest_component_box(binary: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), x1/y1 exclusive, of the largest 8-connected component of a (H, W) bool mask."""
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    sizes = ndimage.sum(binary, labels, index=np.arange(1, count + 1))
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def predicted_box(saliency: Tensor, threshold: float | None = None) -> tuple[int, int, int, int] | None:
    """B_p: box of the largest component of ``saliency > threshold`` (default: the map's mean). (H, W) or (1, H, W)."""
    s = saliency.detach().float().cpu().reshape(saliency.shape[-2:]).numpy()
    t = float(s.mean()) if threshold is None else threshold
    return largest_component_box(s > t)


def box_iou(a: Sequence[float] | None, b: Sequence[float]) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1) in pixels; 0 when ``a`` is None."""
    if a is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def union_mask(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """U = the union of the boxes (M, 4) xyxy as a (H, W) bool tensor (pixel centres inside a box)."""
    h, w = size
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    mask = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.reshape(-1, 4).tolist():
        mask |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return mask


@dataclass
class Localization:
    """Appendix B metrics of one image (fractions; SM in nats)."""

    OM: float  # eq. A1, lower is better
    LE: float  # eq. A2, lower is better
    F1: float  # from A3-A4, higher is better
    BoxAcc: dict  # {(eta, delta): 0 or 1}, eq. A5, aggregated over images by ``box_accuracy``
    SP: float  # eq. A6, 0 or 1
    EP: float  # energy pointing game = precision A3
    SM: float  # eq. A7, lower is better


def localize(
    saliency: Tensor,
    boxes: Tensor,
    correct: bool,
    probability: float,
    thresholds: Sequence[float] = BOXACC_THRESHOLDS,
    ious: Sequence[float] = BOXACC_IOUS,
) -> Localization:
    """All appendix B metrics for one map.

    Args:
        saliency: (1, H, W) or (H, W) float in [0, 1].
        boxes: (M, 4) ground-truth boxes xyxy in pixels of the same image.
        correct: whether the predicted class equals the ground truth (OM's indicator).
        probability: p^c, the predicted probability of the ground-truth class (SM).
    """
    s = saliency.detach().float().cpu().reshape(saliency.shape[-2:])
    if boxes.numel() == 0:
        raise InputError("an image has no ground-truth box")
    h, w = s.shape
    gt = boxes.reshape(-1, 4).tolist()
    bp = predicted_box(s)
    best = max(box_iou(bp, b) for b in gt)
    u = union_mask(boxes, (h, w))
    mass = float(s.sum())
    inside = float(s[u].sum())
    precision = inside / mass if mass > 0 else 0.0  # A3
    recall = inside / max(int(u.sum()), 1)  # A4
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    boxacc = {}
    for eta in thresholds:
        b_eta = predicted_box(s, float(eta))
        iou = max(box_iou(b_eta, b) for b in gt)
        for delta in ious:
            boxacc[(float(eta), float(delta))] = float(iou >= delta)
    flat = int(torch.argmax(s.flatten()))
    sp = float(u.flatten()[flat])
    area = 0 if bp is None else (bp[2] - bp[0]) * (bp[3] - bp[1])
    sm = float(np.log(max(0.05, area / (h * w))) - np.log(max(probability, 1e-12)))
    return Localization(
        OM=1 - best * float(correct), LE=1 - best, F1=f1, BoxAcc=boxacc, SP=sp, EP=precision, SM=sm
    )


def box_accuracy(results: Sequence[Localization]) -> float:
    """BoxAcc over a set of images: average over images, max over eta, then mean over delta (appendix B)."""
    keys = results[0].BoxAcc.keys()
    per_key = {k: float(np.mean([r.BoxAcc[k] for r in results])) for k in keys}
    deltas = sorted({d for _, d in keys})
    return float(np.mean([max(v for (e, d), v in per_key.items() if d == delta) for delta in deltas]))


def localization_table(
    maps: Tensor, boxes: Sequence[Tensor], predicted: Tensor, targets: Tensor, probabilities: Tensor
) -> dict[str, float]:
    """Table A7's columns in percent (SM as is) averaged over images.

    Args:
        maps: (N, 1, H, W) in [0, 1]; boxes: N tensors (M, 4); predicted, targets: (N,) class ids;
        probabilities: (N,) p^c of the ground-truth class.
    """
    rows = [
        localize(maps[i], boxes[i], bool(predicted[i] == targets[i]), float(probabilities[i]))
        for i in range(maps.shape[0])
    ]
    out = {k: 100 * float(np.mean([getattr(r, k) for r in rows])) for k in ("OM", "LE", "F1", "SP", "EP")}
    out["BA"] = 100 * box_accuracy(rows)
    out["SM"] = float(np.mean([r.SM for r in rows]))
    return out
