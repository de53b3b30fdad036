"""Localisation metrics of appendix B (eq. A1-A7 of appendix B): OM, LE, pixel-wise F1, BoxAcc, SP, EP, SM.

Each compares a saliency map S with the ground-truth boxes B of its image (one or more boxes of the class; U is
their union, as a set of pixels). Values are fractions in [0, 1] per image (SM is unbounded, in nats); average
them over images and multiply by 100 for the paper's tables (``aggregate_localization``, or ``localization_scores``
in one call).

Definitions (appendix B.1), with the choices the paper leaves open made explicit:

- B_p, the predicted box: binarise S at its mean and take the bounding box of the largest 8-connected component.
  Pixels *equal* to the mean count as foreground (``S >= mean``), so a constant map (e.g. all zeros) gives the
  whole image rather than no box; for any map with two values or more the rule only decides ties.
- OM (A1) = 1 - max_B IoU(B, B_p) * 1[c_p = c];  LE (A2) = 1 - max_B IoU(B, B_p).
- P (A3) = sum_{p in U} S_p / sum_p S_p (the share of the map's mass inside U); R (A4) = sum_{p in U} S_p / |U|;
  F1 = 2PR / (P + R).  EP, the energy pointing game, is P.
- BoxAcc (A5): 1[max_B IoU(B_p^eta, B) >= delta] with B_p^eta from ``S > eta``; averaged over images, maximised
  over eta (``BOXACC_THRESHOLDS``, steps of 0.05: the paper does not list its set), averaged over delta
  (``BOXACC_IOUS`` = 0.3, 0.5, 0.7, as in Choe et al. 2020, the paper's [66]).
- SP (A6) = 1[p* in U], p* = argmax_p S_p. When several pixels share the maximum, ``ties="any"`` (default)
  counts a hit if any of them is in U; ``ties="first"`` uses the first in row-major order (``torch.argmax``).
  The paper's Fake-CAM row (SP 99.8 while EP is 28.5) cannot come from a first-index rule: Fake-CAM is 1
  everywhere but the top-left pixel, so that rule points at the image's corner; ``"any"`` fits it (100 on every box,
  against the paper's 99.8).
- SM (A7) = log max(0.05, |B_p| / hw) - log p^c, natural logarithms, where p^c is the probability of the true
  class **on the crop of B_p**: the image cut to the tightest box and resized (bilinear) to the input size, as
  Dabkowski & Gal (2017), who defined SM, do (``crop_probabilities``); the paper does not say on which image p^c
  is taken, and its Fake-CAM rows fit the crop (below), not the full image. So a small box pays only if
  the crop loses the class: Fake-CAM's box is the whole image (area term 0, crop = image), and in the paper's
  Tables A7/A8 it has the lowest SM because a tight crop of the other methods' boxes loses context. Computed with
  the full image's p^c instead, every method's SM would be at most Fake-CAM's.

Note: appendix B numbers its equations A1-A7 like appendix F does; here they are the localisation ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.images import boxes_to_mask
from opticam_lib.inputs import prepare, validate_images
from opticam_lib.metrics.classification import class_probability
from opticam_lib.models.classifier import Classifier

BOXACC_THRESHOLDS: tuple[float, ...] = tuple(float(v) for v in np.round(np.arange(0.0, 1.0, 0.05), 2))  # eta
BOXACC_IOUS: tuple[float, ...] = (0.3, 0.5, 0.7)  # delta, as in Choe et al. (2020)
COLUMNS: tuple[str, ...] = ("OM", "LE", "F1", "BA", "SP", "EP", "SM")  # Table A7's columns, in its order
LOWER_IS_BETTER: frozenset[str] = frozenset({"OM", "LE", "SM"})


def _as_map(saliency: Tensor) -> Tensor:
    """(H, W) float32 CPU copy of a (H, W) or (1, H, W) map; checks it is finite and non-negative."""
    if not isinstance(saliency, Tensor):
        raise InputError(f"a saliency map must be a torch.Tensor; got {type(saliency).__name__}")
    if saliency.dim() == 3 and saliency.shape[0] == 1:
        saliency = saliency[0]
    if saliency.dim() != 2 or saliency.numel() == 0:
        raise InputError(f"a saliency map must be (H, W) or (1, H, W); got {tuple(saliency.shape)}")
    s = saliency.detach().float().cpu()
    if not torch.isfinite(s).all():
        raise InputError("the saliency map has NaN or infinite values")
    if float(s.min()) < 0:
        raise InputError(
            f"the saliency map has negative values (min {float(s.min()):.3g}); maps are in [0, 1]"
        )
    return s


def _as_boxes(boxes: Tensor | Sequence[Sequence[float]], size: tuple[int, int] | None = None) -> Tensor:
    """Boxes as an (M, 4) float tensor of xyxy pixels, checked; with ``size`` (H, W), every box must cover at least
    one pixel centre of the map (a box given at another resolution, e.g. not rescaled to 224, is refused)."""
    b = torch.as_tensor(boxes, dtype=torch.float32).cpu()
    if b.dim() == 1:
        b = b[None]
    if b.dim() != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be (4,) or (M, 4) xyxy, got shape {tuple(b.shape)}")
    if b.shape[0] == 0:
        raise InputError("an image has no ground-truth box: localisation metrics need at least one")
    if not torch.isfinite(b).all() or bool(((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])).any()):
        raise InputError(f"boxes must be finite xyxy with x1 > x0 and y1 > y0; got {b.tolist()}")
    if size is not None:
        h, w = size
        outside = (b[:, 2] <= 0.5) | (b[:, 0] > w - 0.5) | (b[:, 3] <= 0.5) | (b[:, 1] > h - 0.5)
        if bool(outside.any()):
            raise InputError(
                f"box {b[outside][0].tolist()} covers no pixel of the {h} x {w} map: boxes must be in pixels of the "
                "map's resolution (rescale them with opticam_lib.images.scale_boxes)"
            )
    return b


def largest_component_box(binary: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1), x1/y1 exclusive, of the largest 8-connected component of a (H, W) bool mask.

    None when the mask is empty. Ties between components of equal size go to the first in scan order.
    """
    labels, count = ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    sizes = ndimage.sum(binary, labels, index=np.arange(1, count + 1))
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def predicted_box(saliency: Tensor, threshold: float | None = None) -> tuple[int, int, int, int] | None:
    """B_p, the box of the largest connected component of the binarised map.

    Args:
        saliency: (H, W) or (1, H, W), non-negative.
        threshold: None (default) binarises at the map's mean with ``S >= mean`` (appendix B's B_p; never empty);
            a number eta binarises with ``S > eta`` (A5's B_p^eta; None when no pixel exceeds eta).
    Returns:
        (x0, y0, x1, y1) in pixels, x1/y1 exclusive, or None.
    """
    s = _as_map(saliency).numpy()
    if threshold is None:
        return largest_component_box(s >= s.mean())
    return largest_component_box(s > threshold)


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
    """U = the union of the boxes (M, 4) xyxy as a (H, W) bool tensor (pixel centres inside a box; the rule of
    ``images.boxes_to_mask``)."""
    return boxes_to_mask(boxes, size)[0].bool()


def inside_fraction(maps: Tensor, regions: Tensor) -> Tensor:
    """EP = precision (A3) of a batch: the share of each map's mass inside its region.

    Args:
        maps: (N, 1, H, W) non-negative; regions: (N, 1, H, W) in {0, 1} (the union of the boxes, e.g.
            ``images.box_masks``, or any other region).
    Returns:
        (N,) float32 in [0, 1]; 0 for a map with no mass.
    """
    if maps.shape != regions.shape:
        raise InputError(
            f"maps {tuple(maps.shape)} and regions {tuple(regions.shape)} must have the same shape"
        )
    m = maps.detach().float().cpu()
    total = m.flatten(1).sum(1)
    inside = (m * regions.detach().float().cpu()).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total))


def energy_pointing_game(saliency: Tensor, boxes: Tensor) -> float:
    """EP = precision (A3) of one map: the share of its total mass inside the union of the boxes
    (``inside_fraction`` of that map and ``union_mask``).

    Args:
        saliency: (H, W) or (1, H, W), non-negative; boxes: (M, 4) xyxy in pixels.
    Returns:
        a fraction in [0, 1]; 0 for a map with no mass.
    """
    s = _as_map(saliency)
    u = union_mask(_as_boxes(boxes, tuple(s.shape)), tuple(s.shape))
    return float(inside_fraction(s[None, None], u[None, None])[0])


def pointing_game(saliency: Tensor, boxes: Tensor, ties: str = "any") -> float:
    """SP (A6): 1.0 when the map's maximum lies in the union of the boxes, else 0.0.

    Args:
        saliency: (H, W) or (1, H, W); boxes: (M, 4) xyxy in pixels.
        ties: ``"any"`` (a hit if any pixel holding the maximum is inside) or ``"first"`` (``torch.argmax``).
    """
    if ties not in ("any", "first"):
        raise InputError(f"ties must be 'any' or 'first'; got {ties!r}")
    s = _as_map(saliency)
    u = union_mask(_as_boxes(boxes, tuple(s.shape)), tuple(s.shape))
    if ties == "first":
        return float(u.flatten()[int(torch.argmax(s.flatten()))])
    return float(bool(u[s == s.max()].any()))


@dataclass
class Localization:
    """Appendix B metrics of one image (fractions in [0, 1]; SM in nats)."""

    OM: float  # eq. A1, lower is better
    LE: float  # eq. A2, lower is better
    F1: float  # from A3-A4, higher is better
    BoxAcc: dict  # {(eta, delta): 0 or 1}, eq. A5, aggregated over images by ``box_accuracy``
    SP: float  # eq. A6, 0 or 1
    EP: float  # energy pointing game = precision A3
    SM: float  # eq. A7, lower is better
    recall: float = 0.0  # R, eq. A4
    box: tuple[int, int, int, int] | None = None  # B_p


def localize(
    saliency: Tensor,
    boxes: Tensor,
    correct: bool,
    probability: float,
    thresholds: Sequence[float] = BOXACC_THRESHOLDS,
    ious: Sequence[float] = BOXACC_IOUS,
    ties: str = "any",
) -> Localization:
    """All appendix B metrics for one map.

    Args:
        saliency: (1, H, W) or (H, W) float, non-negative (maps are in [0, 1]).
        boxes: (M, 4) ground-truth boxes xyxy in pixels of the same image, M >= 1.
        correct: whether the predicted class equals the ground truth (OM's indicator).
        probability: p^c in [0, 1], the probability of the ground-truth class on the crop of this map's B_p
            (``crop_probabilities``; SM, eq. A7; below 1e-12 it counts as 1e-12).
        thresholds, ious: the sets of eta and delta of BoxAcc (A5).
        ties: how SP treats several pixels at the maximum (``pointing_game``).
    """
    s = _as_map(saliency)
    b = _as_boxes(boxes, tuple(s.shape))
    try:
        prob = float(probability)
    except (TypeError, ValueError):
        raise InputError(
            f"probability must be a number, the class probability p^c; got {probability!r}"
        ) from None
    if not 0 <= prob <= 1:
        raise InputError(f"probability must be the class probability p^c in [0, 1]; got {probability!r}")
    if not thresholds or not ious:
        raise InputError("BoxAcc needs at least one threshold eta and one IoU delta")
    h, w = s.shape
    gt = b.tolist()
    bp = predicted_box(s)
    best = max(box_iou(bp, g) for g in gt)
    u = union_mask(b, (h, w))
    mass = float(s.sum())
    inside = float(s[u].sum())
    precision = inside / mass if mass > 0 else 0.0  # A3
    recall = inside / max(int(u.sum()), 1)  # A4
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    boxacc = {}
    for eta in thresholds:
        b_eta = predicted_box(s, float(eta))
        iou = max(box_iou(b_eta, g) for g in gt)
        for delta in ious:
            boxacc[(float(eta), float(delta))] = float(iou >= delta)
    sp = pointing_game(s, b, ties)
    area = 0 if bp is None else (bp[2] - bp[0]) * (bp[3] - bp[1])
    sm = math.log(max(0.05, area / (h * w))) - math.log(max(prob, 1e-12))  # p^c = 0 (underflow): capped
    return Localization(
        OM=1 - best * float(bool(correct)),
        LE=1 - best,
        F1=f1,
        BoxAcc=boxacc,
        SP=sp,
        EP=precision,
        SM=sm,
        recall=recall,
        box=bp,
    )


def crop_box(image: Tensor, box: Sequence[int], size: tuple[int, int] | None = None) -> Tensor:
    """The image (3, H, W) cut to ``box`` (x0, y0, x1, y1; x1/y1 exclusive) and resized to ``size`` (default
    (H, W)) with bilinear interpolation (``align_corners=False``, no antialiasing): SM's input (eq. A7)."""
    import torch.nn.functional as F

    if image.dim() != 3:
        raise InputError(f"image must be (3, H, W); got {tuple(image.shape)}")
    h, w = image.shape[-2:]
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(f"the box {tuple(box)} is not inside the {w} x {h} image, or empty")
    crop = image[:, y0:y1, x0:x1][None].float()
    return F.interpolate(crop, size=size or (h, w), mode="bilinear", align_corners=False)[0]


def crop_probabilities(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    targets: Tensor | Sequence[int],
    batch_size: int = 32,
) -> Tensor:
    """p^c of SM (eq. A7): the probability of each image's class on the crop of its map's box B_p.

    Args:
        images: (N, 3, H, W) float in [0, 1]; maps: (N, 1, H, W) non-negative; targets: (N,) classes
            (the ground truth, as in the paper).
    Returns:
        (N,) float in [0, 1], on the CPU.
    """
    images = validate_images(images)
    if maps.dim() != 4 or maps.shape[1] != 1 or maps.shape[0] != images.shape[0]:
        raise InputError(f"maps must be (N, 1, H, W) with N = {images.shape[0]}; got {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) != tuple(images.shape[-2:]):
        raise InputError(
            f"maps {tuple(maps.shape[-2:])} and images {tuple(images.shape[-2:])} differ in size"
        )
    images, targets = prepare(classifier, images, targets)
    crops = torch.stack(
        [crop_box(images[i].cpu(), predicted_box(maps[i])) for i in range(images.shape[0])]  # never None
    )
    return class_probability(classifier, crops, targets, batch_size=batch_size)


def box_accuracy(results: Sequence[Localization]) -> float:
    """BoxAcc over a set of images: average over images, max over eta, then mean over delta (appendix B)."""
    if not results:
        raise InputError("box_accuracy needs at least one image")
    keys = results[0].BoxAcc.keys()
    per_key = {k: float(np.mean([r.BoxAcc[k] for r in results])) for k in keys}
    deltas = sorted({d for _, d in keys})
    return float(np.mean([max(v for (_, d), v in per_key.items() if d == delta) for delta in deltas]))


def localize_all(
    maps: Tensor,
    boxes: Sequence[Tensor],
    predicted: Tensor,
    targets: Tensor,
    crop_probs: Tensor,
    ties: str = "any",
) -> list[Localization]:
    """``localize`` for every image.

    Args:
        maps: (N, 1, H, W) non-negative; boxes: N tensors (M_i, 4) xyxy (M_i >= 1); predicted, targets: (N,)
        class ids; crop_probs: (N,) p^c of the ground-truth class on the crop of each map's B_p, in [0, 1]
        (``crop_probabilities``; ``localization_scores`` computes it for you).
    """
    probabilities = crop_probs
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise InputError(f"maps must be (N, 1, H, W); got {tuple(maps.shape)}")
    n = maps.shape[0]
    lengths = {"boxes": len(boxes), "predicted": len(predicted), "targets": len(targets)}
    lengths["probabilities"] = len(probabilities)
    wrong = {k: v for k, v in lengths.items() if v != n}
    if wrong:
        raise InputError(f"{n} maps but these inputs have another length: {wrong}")
    return [
        localize(maps[i], boxes[i], bool(predicted[i] == targets[i]), float(probabilities[i]), ties=ties)
        for i in range(n)
    ]


def aggregate_localization(rows: Sequence[Localization]) -> dict[str, float]:
    """Table A7's columns (``COLUMNS``) from per-image results: OM, LE, F1, SP, EP averaged and in percent, BA
    by ``box_accuracy`` in percent, SM averaged in nats."""
    if not rows:
        raise InputError("no images to aggregate: localisation metrics need at least one")
    out = {k: 100 * float(np.mean([getattr(r, k) for r in rows])) for k in ("OM", "LE", "F1", "SP", "EP")}
    out["BA"] = 100 * box_accuracy(rows)
    out["SM"] = float(np.mean([r.SM for r in rows]))
    return {k: out[k] for k in COLUMNS}


_RECORD_SCALARS = ("OM", "LE", "F1", "SP", "EP", "SM", "recall")  # a record's float fields


def localization_record(result: Localization) -> dict:
    """One image's ``Localization`` as a JSON-able dict (BoxAcc as a list of [eta, delta, hit]); the inverse of
    ``localization_from_record``. ``reproduce`` caches one per image and method."""
    record = {k: getattr(result, k) for k in _RECORD_SCALARS}
    record["BoxAcc"] = [[eta, delta, hit] for (eta, delta), hit in result.BoxAcc.items()]
    record["box"] = None if result.box is None else list(result.box)
    return record


def localization_from_record(record: Mapping) -> Localization:
    """The ``Localization`` of a dict written by ``localization_record``.

    Raises:
        InputError: a key is missing (a record of something else).
    """
    try:
        return Localization(
            **{k: float(record[k]) for k in _RECORD_SCALARS},
            BoxAcc={(float(e), float(d)): float(h) for e, d, h in record["BoxAcc"]},
            box=None if record.get("box") is None else tuple(int(v) for v in record["box"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"not a localisation record ({e!r}): {dict(record)!r:.200}") from None


def localization_scores(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    boxes: Sequence[Tensor],
    targets: Tensor | Sequence[int],
    ties: str = "any",
) -> dict[str, float]:
    """Table A7's columns for one method in one call: ``localize_with`` (the predicted classes and SM's crop
    probabilities computed here), then ``aggregate_localization``.

    Args:
        images: (N, 3, H, W) float in [0, 1]; maps: (N, 1, H, W) in [0, 1]; boxes: N tensors (M_i, 4) xyxy;
        targets: (N,) ground-truth classes.
    """
    return aggregate_localization(localize_with(classifier, images, maps, boxes, targets, ties))


def localize_with(
    classifier: Classifier,
    images: Tensor,
    maps: Tensor,
    boxes: Sequence[Tensor],
    targets: Tensor | Sequence[int],
    ties: str = "any",
) -> list[Localization]:
    """``localize_all`` with the classifier's part computed here: the predicted classes (OM) and SM's crop
    probabilities (``crop_probabilities``). Per image, so ``reproduce`` can cache each one.

    Args: as ``localization_scores``.
    """
    images, targets = prepare(classifier, images, targets)  # checked, in the model's device and dtype
    predicted = classifier.predict(images).argmax(dim=1).cpu()
    crop = crop_probabilities(classifier, images, maps, targets)
    boxes = [torch.as_tensor(b).cpu() for b in boxes]
    return localize_all(maps.detach().cpu(), boxes, predicted, targets.cpu(), crop, ties)


def best_method(table: Mapping[str, Mapping[str, float]], column: str, exclude: Sequence[str] = ()) -> str:
    """The row of ``table`` ({method: {column: value}}) that is best on ``column`` (lowest for OM, LE, SM)."""
    rows = {m: r[column] for m, r in table.items() if m not in exclude}
    if not rows:
        raise InputError("no rows left to compare")
    pick = min if column in LOWER_IS_BETTER else max
    return pick(rows, key=rows.get)


def format_localization(
    table: Mapping[str, Mapping[str, float]], paper: Mapping[str, Mapping[str, float | None]] | None = None
) -> str:
    """Table A7's layout as text: one line per method with our columns, then the paper's when given.

    Args:
        table: {method: {column: value}} from ``localization_scores`` or ``aggregate_localization`` (percent; SM
            in nats).
        paper: the paper's rows for the same methods (``opticam_lib.paper.tables.paper_table("A7", model)``).
    """
    arrows = {c: "↓" if c in LOWER_IS_BETTER else "↑" for c in COLUMNS}
    head = f"{'METHOD':<16}" + "".join(f"{c + arrows[c]:>7}" for c in COLUMNS)
    lines = [head + ("   | paper" if paper is not None else "")]
    for name, row in table.items():
        ours = "".join(f"{row[c]:>7.2f}" if c == "SM" else f"{row[c]:>7.1f}" for c in COLUMNS)
        theirs = ""
        if paper is not None:
            ref = paper.get(name)
            if ref is None:
                theirs = "   |  -"
            else:
                theirs = "   |" + "".join(
                    f"{'-':>7}"
                    if ref.get(c) is None
                    else f"{ref[c]:>7.2f}"
                    if c == "SM"
                    else f"{ref[c]:>7.1f}"
                    for c in COLUMNS
                )
        lines.append(f"{name:<16}{ours}{theirs}")
    return "\n".join(lines)
