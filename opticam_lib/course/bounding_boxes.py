r"""The bounding-box study of section 5.4 (Table 5): is the box what the classifier uses?

Two kinds of rows, each scored with AD, AG and AI (eq. 13-15, ``opticam_lib.metrics``):

- **regions as maps**: the box B itself (``S := B``) and its complement (``S := I \ B``), 0/1 masks; in the
  controlled world also the object's pixels, the context cue, or any other known region;
- **a method's map S split by the box**: S itself, ``B ∩ S`` (the map inside the box, zero outside) and
  ``S \ B`` (the map outside the box), three masks of the same image.

The paper (VGG16, ImageNet val) finds the complement better than the box, and every map worse once cut to the
box: the object's box is not the only evidence. ``box_study`` computes the table, ``format_box_table`` prints it
in the paper's layout beside the paper's numbers, ``metrics.localization.inside_fraction`` says how much of each map lies in the box
(EP).

For the controlled world (``opticam_lib.world``), where what the model uses is measured (``world.evidence``, in ``world/reliance.py``),
``reliance_per_image`` gives each scene's dependence on the object and on the context, ``mass_table`` where each
map puts its mass against the area of each part, and ``context_agreement`` whether a map's share of context, scene
by scene, follows the model's.

Convention: maps (N, 1, H, W) in [0, 1]; regions (N, 1, H, W) in {0, 1}; images (N, 3, H, W) in [0, 1], masked
by multiplication (black outside), as everywhere in the library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_images, validate_targets
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.metrics.localization import inside_fraction
from opticam_lib.models.classifier import Classifier

if TYPE_CHECKING:  # annotations only: matplotlib is imported where it is used
    from matplotlib.figure import Figure

#: the three masks of Table 5, in its column order: S, B ∩ S, S \ B
PARTS: tuple[str, ...] = ("S", "B_and_S", "S_minus_B")


PART_LABELS: dict[str, str] = {"S": "S", "B_and_S": "B∩S", "S_minus_B": "S\\B"}


METRICS: tuple[str, ...] = ("AD", "AG", "AI")


#: our row names -> the paper's (``opticam_lib.paper.tables.paper_table("5", "vgg16_bn")``)
PAPER_ROWS: dict[str, str] = {"S := B": "$S := B$", "S := I \\ B": "$S := I \\setminus B$"}


def _check_regions(regions: Tensor, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(regions, Tensor) or tuple(regions.shape) != (n, 1, h, w):
        shape = tuple(regions.shape) if isinstance(regions, Tensor) else type(regions).__name__
        raise InputError(f"regions must be (N, 1, H, W) = {(n, 1, h, w)}, like the images; got {shape}")
    r = regions.detach().float().cpu()
    if not bool(((r == 0) | (r == 1)).all()):
        raise InputError("regions must be 0/1 masks (1 inside the box)")
    return r


def _check_map(name: str, maps: Tensor, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(maps, Tensor) or tuple(maps.shape) != (n, 1, h, w):
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise InputError(f"the maps of {name!r} must be (N, 1, H, W) = {(n, 1, h, w)}; got {shape}")
    m = maps.detach().float().cpu()
    if not torch.isfinite(m).all() or float(m.min()) < 0 or float(m.max()) > 1:
        raise InputError(f"the maps of {name!r} must be finite and in [0, 1]")
    return m


def split_by_region(maps: Tensor, regions: Tensor) -> dict[str, Tensor]:
    """Table 5's three masks of a map: {"S": S, "B_and_S": S ⊙ B, "S_minus_B": S ⊙ (1 - B)}, each (N, 1, H, W)."""
    if maps.shape != regions.shape:
        raise InputError(
            f"maps {tuple(maps.shape)} and regions {tuple(regions.shape)} must have the same shape"
        )
    return {"S": maps, "B_and_S": maps * regions, "S_minus_B": maps * (1 - regions)}


@dataclass
class BoxStudy:
    """The bounding-box study of a set of images (``box_study``).

    Attributes:
        p: (N,) probability of the target class on each image.
        o: {row: {part: (N,) probability on the image masked by that part}}; region rows have part "S" only.
        inside: {row: (N,) share of the map's mass inside the box}.
        kinds: {row: "region" or "method"}.
        targets: (N,) the classes.
    """

    p: Tensor
    o: dict[str, dict[str, Tensor]]
    inside: dict[str, Tensor]
    kinds: dict[str, str]
    targets: Tensor
    notes: dict[str, str] = field(default_factory=dict)

    def rows(self) -> dict[str, dict[str, float]]:
        """{row: {"AD_S", "AG_S", "AI_S", "AD_B_and_S", ...}}: Table 5's cells in percent (keys as the paper's)."""
        out: dict[str, dict[str, float]] = {}
        for name, parts in self.o.items():
            row: dict[str, float] = {}
            for part, o in parts.items():
                for k, v in classification_metrics(self.p, o).items():
                    row[f"{k}_{part}"] = v
            out[name] = row
        return out

    def metric(self, row: str, metric: str = "AD", part: str = "S") -> float:
        """One cell, e.g. ``study.metric("Grad-CAM", "AG", "S_minus_B")``."""
        if row not in self.o:
            raise InputError(f"no row {row!r}; rows: {', '.join(self.o)}")
        if part not in self.o[row]:
            raise InputError(f"row {row!r} has no part {part!r} (regions used as maps have only 'S')")
        if metric not in METRICS:
            raise InputError(f"metric must be one of {METRICS}; got {metric!r}")
        return classification_metrics(self.p, self.o[row][part])[metric]


def box_study(
    classifier: Classifier,
    images: Tensor,
    targets: int | Sequence[int] | Tensor | None,
    regions: Tensor,
    maps: Mapping[str, Tensor] | None = None,
    extra_regions: Mapping[str, Tensor] | None = None,
    region_rows: bool = True,
    batch_size: int = 64,
) -> BoxStudy:
    """Table 5 on a set of images: the box and its complement as maps, and each method's map split by the box.

    Args:
        classifier: the model (AD/AG/AI follow the probability of ``targets``).
        images: (N, 3, H, W) float in [0, 1].
        targets: class c of each image (the paper: the ground truth); None: the predicted class.
        regions: (N, 1, H, W) in {0, 1}, B: 1 inside the box (``box_masks``), or any known region.
        maps: {method name: (N, 1, H, W) maps in [0, 1]}; each gives the row's three parts S, B∩S, S\\B.
        extra_regions: {row name: (N, 1, H, W) in [0, 1]} more masks used as maps, scored like ``S := B``
            (e.g. the object's pixels or the context cue of the controlled world).
        region_rows: add the rows ``S := B`` and ``S := I \\ B`` first.
        batch_size: images per forward pass.
    Returns:
        a ``BoxStudy``; ``.rows()`` gives the table.
    """
    images = validate_images(images)
    targets = validate_targets(targets, classifier, images.to(classifier.device)).cpu()
    box = _check_regions(regions, images)
    maps = dict(maps or {})
    extra = dict(extra_regions or {})
    if not maps and not extra and not region_rows:
        raise InputError("nothing to study: give maps, extra_regions or region_rows=True")
    checked = {name: _check_map(name, m, images) for name, m in maps.items()}
    extra_checked = {name: _check_map(name, m, images) for name, m in extra.items()}
    clash = (set(checked) & set(extra_checked)) | ((set(checked) | set(extra_checked)) & set(PAPER_ROWS))
    if clash:
        raise InputError(f"row names used twice: {sorted(clash)}")

    def prob(masks: Tensor) -> Tensor:
        return class_probability(classifier, images * masks, targets, batch_size=batch_size)

    p = class_probability(classifier, images, targets, batch_size=batch_size)
    o: dict[str, dict[str, Tensor]] = {}
    inside: dict[str, Tensor] = {}
    kinds: dict[str, str] = {}
    region_maps: dict[str, Tensor] = {}
    if region_rows:
        region_maps.update({"S := B": box, "S := I \\ B": 1 - box})
    region_maps.update(extra_checked)
    for name, m in region_maps.items():
        o[name] = {"S": prob(m)}
        inside[name] = inside_fraction(m, box)
        kinds[name] = "region"
    for name, m in checked.items():
        o[name] = {part: prob(masks) for part, masks in split_by_region(m, box).items()}
        inside[name] = inside_fraction(m, box)
        kinds[name] = "method"
    return BoxStudy(p=p, o=o, inside=inside, kinds=kinds, targets=targets)


def format_box_table(
    study: BoxStudy | Mapping[str, Mapping[str, float]],
    paper: Mapping[str, Mapping[str, float | None]] | None = None,
    paper_label: str = "paper",
) -> str:
    """Table 5's layout as text: AD, AG, AI, each for S, B∩S and S\\B; the paper's row under ours when given.

    Args:
        study: a ``BoxStudy`` or its ``rows()``.
        paper: the paper's rows (``opticam_lib.paper.tables.paper_table("5", "vgg16_bn")``); our row names map to the
            paper's through ``PAPER_ROWS`` (the region rows) or are the same (the methods).
    """
    rows = study.rows() if isinstance(study, BoxStudy) else study
    w = 7
    top = f"{'':<20}" + "".join(f"{m + ('↓' if m == 'AD' else '↑'):^{3 * w}}" for m in METRICS)
    head = f"{'METHOD':<20}" + "".join(f"{PART_LABELS[p]:>{w}}" for _ in METRICS for p in PARTS)
    lines = [top, head]

    def cells(row: Mapping[str, float | None]) -> str:
        out = ""
        for m in METRICS:
            for part in PARTS:
                v = row.get(f"{m}_{part}")
                out += f"{'-':>{w}}" if v is None else f"{float(v):>{w}.1f}"
        return out

    for name, row in rows.items():
        lines.append(f"{name:<20}{cells(row)}")
        if paper is not None:
            ref = paper.get(PAPER_ROWS.get(name, name))
            if ref is not None:
                lines.append(f"{'  ' + paper_label:<20}{cells(ref)}")
    return "\n".join(lines)


def reliance_per_image(probabilities: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """Each scene's measured dependence on its object and on its context, from ``world.evidence`` probabilities.

    Args:
        probabilities: ``Evidence.probabilities``: {condition: (N, C)}, with ``both``, ``swapped`` and ``context``.
        labels: (N,) the object classes (``Evidence.labels``).
    Returns:
        {"context": P(both) - P(swapped), "object": P(both) - P(context only)}: (N,) each, in [-1, 1], the drop of
        the true-class probability when the context names another class, or when the object is removed.
    """
    missing = {"both", "swapped", "context"} - set(probabilities)
    if missing:
        raise InputError(f"evidence must include the conditions {sorted(missing)}")
    lab = torch.as_tensor(labels).long()[:, None]
    pc = {k: probabilities[k].gather(1, lab)[:, 0] for k in ("both", "swapped", "context")}
    return {"context": pc["both"] - pc["swapped"], "object": pc["both"] - pc["context"]}


def mass_table(
    maps: Mapping[str, Tensor], object_masks: Tensor, context_masks: Tensor
) -> dict[str, dict[str, float]]:
    """Where each map's mass lies, against the area of each part (``world.map_mass``), averaged over images.

    Args:
        maps: {name: (N, 1, S, S) maps}; object_masks, context_masks: (N, 1, S, S) in {0, 1}.
    Returns:
        {name: {"object", "context", "elsewhere": mean share of the mass, "object_x", "context_x": that share
        over the part's mean area (1: no preference; 2: twice as dense as a uniform map)}}, with a first row
        "area" (the uniform map).
    """
    from opticam_lib.world.reliance import map_mass

    area = map_mass(torch.ones_like(object_masks, dtype=torch.float32), object_masks, context_masks).mean()
    out = {"area": {**area, "object_x": 1.0, "context_x": 1.0}}
    for name, m in maps.items():
        mm = map_mass(m, object_masks, context_masks).mean()
        out[name] = {
            **mm,
            "object_x": mm["object"] / area["object"],
            "context_x": mm["context"] / area["context"],
        }
    return out


def context_share(maps: Tensor, object_masks: Tensor, context_masks: Tensor) -> Tensor:
    """Per image, the map's density on the context relative to object + context: (N,) in [0, 1].

    ``d_ctx / (d_obj + d_ctx)`` with d the mean map value over the part's pixels, so that the size of each part
    does not count (a uniform map scores 0.5 everywhere); 0.5 where the map is zero on both.
    """
    m = maps.detach().float().cpu()
    om, cm = object_masks.float().cpu(), (context_masks.float().cpu() * (1 - object_masks.float().cpu()))
    d_obj = (m * om).flatten(1).sum(1) / om.flatten(1).sum(1).clamp(min=1)
    d_ctx = (m * cm).flatten(1).sum(1) / cm.flatten(1).sum(1).clamp(min=1)
    total = d_obj + d_ctx
    return torch.where(total > 0, d_ctx / total.clamp(min=1e-12), torch.full_like(total, 0.5))


def context_agreement(
    maps: Mapping[str, Tensor], object_masks: Tensor, context_masks: Tensor, reliance: Mapping[str, Tensor]
) -> dict[str, float]:
    """Spearman rank correlation, over scenes, between a map's ``context_share`` and the model's own share.

    The model's share is ``c / (c + o)`` with c, o the context and object reliance of ``reliance_per_image``
    (negative values counted as 0; 0.5 where both are 0). Positive: the map leans on the context in the scenes
    where the model does. A map that ignores the image (uniform) gives NaN (no variation).

    Returns:
        {name: rho in [-1, 1] or NaN}.
    """
    from scipy.stats import spearmanr

    c = reliance["context"].clamp(min=0)
    o = reliance["object"].clamp(min=0)
    model = torch.where(c + o > 0, c / (c + o).clamp(min=1e-12), torch.full_like(c, 0.5)).numpy()
    out = {}
    for name, m in maps.items():
        share = context_share(m, object_masks, context_masks).numpy()
        if np.ptp(share) == 0 or np.ptp(model) == 0:
            out[name] = float("nan")
        else:
            out[name] = float(spearmanr(share, model)[0])
    return out


def show_masked(
    images: Tensor,
    masks: Mapping[str, Tensor],
    row_titles: Sequence[str] | None = None,
    boxes: Sequence[Tensor] | None = None,
    size: float = 2.2,
) -> Figure:
    """What the classifier sees: one row per image, one column per mask, each panel the image ⊙ mask.

    Args:
        images: (N, 3, H, W) in [0, 1]; masks: {column title: (N, 1, H, W) in [0, 1]}.
        row_titles: N labels; boxes: N tensors (M, 4) xyxy drawn in green on every panel.
    Returns:
        a matplotlib Figure.
    """
    import matplotlib.patches
    from matplotlib.figure import Figure

    from opticam_lib.plots import to_numpy_image

    n = images.shape[0]
    if not masks:
        raise InputError("show_masked needs at least one mask")
    fig = Figure(figsize=(size * len(masks), size * n + 0.3), layout="constrained")
    axes = np.array(fig.subplots(n, len(masks), squeeze=False))
    for i in range(n):
        for j, (name, m) in enumerate(masks.items()):
            ax = axes[i, j]
            ax.imshow(to_numpy_image(images[i] * m[i].to(images.dtype)))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[i], fontsize=9)
            if boxes is not None:
                for x0, y0, x1, y1 in torch.as_tensor(boxes[i]).reshape(-1, 4).tolist():
                    ax.add_patch(
                        matplotlib.patches.Rectangle(
                            (x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.5
                        )
                    )
    return fig


def plot_mass(table: Mapping[str, Mapping[str, float]]) -> Figure:
    """Bars of ``mass_table``: per map, the share of its mass on the object and on the context cue; the first
    group ("area") is what a uniform map would get. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    names = list(table)
    x = np.arange(len(names))
    fig = Figure(figsize=(1.1 * len(names) + 2, 3.4), layout="constrained")
    ax = fig.subplots()
    for k, (part, colour) in enumerate([("object", "tab:red"), ("context", "tab:blue")]):
        values = [table[n][part] for n in names]
        ax.bar(x + (k - 0.5) * 0.38, values, width=0.38, color=colour, label=f"share on the {part}")
        ax.axhline(table["area"][part] if "area" in table else 0, color=colour, lw=1, ls=":")
    ax.set_xticks(x, names, rotation=20, fontsize=9)
    ax.set_ylabel("share of the map's mass")
    ax.legend(fontsize=9, loc="upper right")
    ax.set_title("where the maps lie (dotted: the part's area, what a uniform map gets)", fontsize=10)
    return fig
