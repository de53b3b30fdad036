"""Notebook 09: the sanity checks' figures (appendix G, Fig. A6-A7): the cascade of randomised layers and
the maps of models trained on true and permuted labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.metrics.sanity import MEASURES, PASS_THRESHOLD, ModelComparison, RandomizationResult
from opticam_lib.plots import OVERLAY_ALPHA, draw_boxes, overlay, saliency_colorbar, to_numpy_image

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
"""One marker per method of the cascade plot (in the table's order)."""
LINE_STYLES = ("-", "--", ":", "-.")
"""One line style per method, cycled: two methods with the same means still show both lines."""


def line_labels(
    table: pd.DataFrame, measures: Sequence[str] = MEASURES, atol: float = 1e-6
) -> dict[str, str]:
    """The legend's label of each method of a ``randomization_table``: its name, and, when its mean similarity
    equals an earlier method's at every step of every measure (within ``atol``), ``"(same line as X)"`` (the
    controls Fake-CAM and the edge detector both stay at 1, one line drawn over the other)."""
    t = table[table["measure"].isin(list(measures))]
    curves: dict[str, np.ndarray] = {}
    for method, g in t.groupby("method", sort=False):
        curves[str(method)] = g.sort_values(["measure", "position"])["mean"].to_numpy(dtype=float)
    labels = {}
    for i, (method, values) in enumerate(curves.items()):
        same = [
            other
            for other, v in list(curves.items())[:i]
            if v.shape == values.shape and np.allclose(v, values, atol=atol, rtol=0)
        ]
        labels[method] = f"{method} (same line as {same[0]})" if same else method
    return labels


def plot_cascade(table: pd.DataFrame, measures: Sequence[str] = MEASURES, title: str = "") -> Figure:
    """Fig. A6: one panel per measure, the mean similarity to the original maps (± one standard deviation over
    the images, shaded) against the cascade step, one line per method (its own colour, marker and line style;
    the legend says when two methods draw the same line, see ``line_labels``)."""
    missing = {"method", "step", "position", "measure", "mean", "std"} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}: pass randomization_table(...)")
    steps = table.sort_values("position").drop_duplicates("position")["step"].tolist()
    labels = line_labels(table, measures)
    fig = Figure(figsize=(3.6 * len(measures) + 2.2, 3.6), layout="constrained")
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures):
        t = table[table["measure"] == measure]
        for j, (method, g) in enumerate(t.groupby("method", sort=False)):
            g = g.sort_values("position")
            (line,) = ax.plot(
                g["position"],
                g["mean"],
                marker=MARKERS[j % len(MARKERS)],
                ls=LINE_STYLES[j % len(LINE_STYLES)],
                markersize=7 - 3 * (j % 2),  # a small marker inside a large one: both show where lines meet
                label=labels[method],
            )
            ax.fill_between(
                g["position"], g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.12
            )
        ax.set_xticks(range(len(steps)), steps, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhline(PASS_THRESHOLD, color="grey", ls="--", lw=0.8)
        ax.set_title(measure, fontsize=10)
        ax.set_xlabel("randomised down to")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("similarity to the original maps")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title="method")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def show_cascade(
    images: Tensor,
    results: Sequence[RandomizationResult],
    index: int | Sequence[int] = (0, 1),
    size: float = 1.6,
    alpha: float = OVERLAY_ALPHA,
    classes: Sequence[str] | None = None,
    boxes: Tensor | Sequence[Tensor] | None = None,
) -> Figure:
    """Fig. A7: one row per (image, method): the image, then the map at each step of the cascade, overlaid
    (``plots.overlay``), with one colour bar.

    Args:
        images: (N, 3, H, W) in [0, 1], the images of the results.
        results: ``parameter_randomization_test`` results with the same steps.
        index: the image(s) to show.
        classes: N class names (the explained class of each image), written at the start of each row.
        boxes: N object boxes, each (4,) or (M, 4) xyxy pixels (e.g. ``WorldBatch.boxes``), outlined on the
            image and on every map, so the reader sees whether a map lies on the object.
    """

    if not results:
        raise InputError("no results to show")
    idx = [index] if isinstance(index, int) else list(index)
    steps = results[0].steps
    if any(r.steps != steps for r in results):
        raise InputError("all results must have the same cascade steps")
    if any(not 0 <= i < images.shape[0] for i in idx):
        raise InputError(f"index out of range for {images.shape[0]} images: {idx}")
    _check_annotations(images, classes, boxes)
    rows = [(i, r) for i in idx for r in results]
    fig = Figure(figsize=(size * (len(steps) + 1) + 1.4, size * len(rows) + 0.6), layout="constrained")
    axes = np.array(fig.subplots(len(rows), len(steps) + 1, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, (i, r) in enumerate(rows):
        axes[row, 0].imshow(to_numpy_image(images[i]))
        name = f"#{i} {classes[i]}" if classes is not None else f"#{i}"
        axes[row, 0].set_ylabel(f"{name}\n{r.method}", fontsize=8)
        for col, m in enumerate(r.maps, start=1):
            axes[row, col].imshow(overlay(images[i], m[i], alpha))
            if row == 0:
                axes[row, col].set_title(steps[col - 1], fontsize=8)
        for ax in axes[row]:
            draw_boxes(ax, None if boxes is None else boxes[i], lw=1)
    axes[0, 0].set_title("image" + (", object box" if boxes is not None else ""), fontsize=8)
    saliency_colorbar(fig, axes[:, 1:], shrink=0.6)
    return fig


def _check_annotations(images: Tensor, classes: Sequence[str] | None, boxes) -> None:
    """Refuse class names or boxes that are not one per image."""
    n = images.shape[0]
    for what, value in (("classes", classes), ("boxes", boxes)):
        if value is not None and len(value) != n:
            raise InputError(f"{what} must give one entry per image ({n}), got {len(value)}")


def show_comparison(
    images: Tensor,
    comparisons: Sequence[ModelComparison],
    index: Sequence[int] = (0, 1, 2),
    size: float = 1.6,
    classes: Sequence[str] | None = None,
    boxes: Tensor | Sequence[Tensor] | None = None,
    alpha: float = OVERLAY_ALPHA,
) -> Figure:
    """The label-permutation maps: one row per image, the image then, per method, the map of each model
    (``plots.overlay``), with one colour bar. ``size``: inches per panel.

    Args:
        classes: N class names (the explained class), written above each image.
        boxes: N object boxes, each (4,) or (M, 4) xyxy pixels, outlined on the image and on every map.
    """
    if not comparisons:
        raise InputError("no comparisons to show")
    _check_annotations(images, classes, boxes)
    idx = list(index)
    cols = 1 + 2 * len(comparisons)
    fig = Figure(figsize=(size * cols + 0.8, (size + 0.25) * len(idx) + 0.4), layout="constrained")
    axes = np.array(fig.subplots(len(idx), cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for row, i in enumerate(idx):
        axes[row, 0].imshow(to_numpy_image(images[i]))
        if classes is not None:
            axes[row, 0].set_title(f"#{i} {classes[i]}", fontsize=8)
        for j, c in enumerate(comparisons):
            for k, (maps, who) in enumerate(((c.maps_a, "true labels"), (c.maps_b, c.label))):
                ax = axes[row, 1 + 2 * j + k]
                ax.imshow(overlay(images[i], maps[i], alpha))
                if row == 0:
                    ax.set_title(f"{c.method}\n{who}", fontsize=8)
        for ax in axes[row]:
            draw_boxes(ax, None if boxes is None else boxes[i], lw=1)
    saliency_colorbar(fig, axes[:, 1:], shrink=0.7)
    return fig
