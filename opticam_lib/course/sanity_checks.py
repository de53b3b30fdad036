"""Notebook 09: the sanity checks' figures (appendix G, Fig. A6-A7): the cascade of randomised layers and
the maps of models trained on true and permuted labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.metrics.sanity import MEASURES, PASS_THRESHOLD, ModelComparison, RandomizationResult


def plot_cascade(table, measures: Sequence[str] = MEASURES, title: str = "") -> Figure:
    """Fig. A6: one panel per measure, the mean similarity to the original maps (± one standard deviation over
    the images, shaded) against the cascade step, one line per method."""
    missing = {"method", "step", "position", "measure", "mean", "std"} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}: pass randomization_table(...)")
    steps = table.sort_values("position").drop_duplicates("position")["step"].tolist()
    fig = Figure(figsize=(3.6 * len(measures) + 1.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    for ax, measure in zip(axes, measures):
        t = table[table["measure"] == measure]
        for method, g in t.groupby("method", sort=False):
            g = g.sort_values("position")
            (line,) = ax.plot(g["position"], g["mean"], marker="o", label=method)
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
    alpha: float = 0.55,
) -> Figure:
    """Fig. A7: one row per (image, method): the image, then the map at each step of the cascade, overlaid.

    Args:
        images: (N, 3, H, W) in [0, 1], the images of the results.
        results: ``parameter_randomization_test`` results with the same steps.
        index: the image(s) to show.
    """
    from opticam_lib.plots import overlay, to_numpy_image

    if not results:
        raise InputError("no results to show")
    idx = [index] if isinstance(index, int) else list(index)
    steps = results[0].steps
    if any(r.steps != steps for r in results):
        raise InputError("all results must have the same cascade steps")
    if any(not 0 <= i < images.shape[0] for i in idx):
        raise InputError(f"index out of range for {images.shape[0]} images: {idx}")
    rows = [(i, r) for i in idx for r in results]
    fig = Figure(figsize=(size * (len(steps) + 1) + 0.8, size * len(rows) + 0.6), layout="constrained")
    axes = np.array(fig.subplots(len(rows), len(steps) + 1, squeeze=False))
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, (i, r) in enumerate(rows):
        axes[row, 0].imshow(to_numpy_image(images[i]))
        axes[row, 0].set_ylabel(f"#{i} {r.method}", fontsize=8)
        for col, m in enumerate(r.maps, start=1):
            axes[row, col].imshow(overlay(images[i], m[i], alpha))
            if row == 0:
                axes[row, col].set_title(steps[col - 1], fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    return fig


def show_comparison(
    images: Tensor,
    comparisons: Sequence[ModelComparison],
    index: Sequence[int] = (0, 1, 2),
    size: float = 1.6,
):
    """The label-permutation maps: one row per image, the image then, per method, the map of each model.
    ``size``: inches per panel."""
    from opticam_lib.plots import overlay, to_numpy_image

    if not comparisons:
        raise InputError("no comparisons to show")
    idx = list(index)
    cols = 1 + 2 * len(comparisons)
    fig = Figure(figsize=(size * cols, (size + 0.1) * len(idx) + 0.4), layout="constrained")
    axes = np.array(fig.subplots(len(idx), cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for row, i in enumerate(idx):
        axes[row, 0].imshow(to_numpy_image(images[i]))
        for j, c in enumerate(comparisons):
            for k, (maps, who) in enumerate(((c.maps_a, "true labels"), (c.maps_b, c.label))):
                ax = axes[row, 1 + 2 * j + k]
                ax.imshow(overlay(images[i], maps[i], 0.55))
                if row == 0:
                    ax.set_title(f"{c.method}\n{who}", fontsize=8)
    return fig
