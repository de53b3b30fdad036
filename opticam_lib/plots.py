"""Figures any user of the library wants: overlays of a map on its image, grids of maps, an objective's
history. Pure functions: each returns a figure (or an array) and shows nothing. Images (3, H, W) and maps
(1, H, W) are float in [0, 1]."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor


def to_numpy_image(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) numpy float in [0, 1]."""
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def overlay(image: Tensor, saliency: Tensor, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a saliency map over its image.

    Args:
        image: (3, H, W) float in [0, 1].
        saliency: (1, H, W) or (H, W) float in [0, 1].
    Returns:
        (H, W, 3) numpy float in [0, 1].
    """
    heat = matplotlib.colormaps[cmap](saliency.detach().float().cpu().reshape(image.shape[-2:]).numpy())[
        ..., :3
    ]
    return (1 - alpha) * to_numpy_image(image) + alpha * heat


def save_overlay(path, image: Tensor, saliency: Tensor, alpha: float = 0.5) -> None:
    """Write ``overlay(image, saliency)`` as a PNG (no axes, at the image's resolution)."""
    import matplotlib.pyplot as plt

    plt.imsave(path, np.clip(overlay(image, saliency, alpha), 0, 1))


def grid_figure(rows: int, cols: int, size: float = 2.4) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(size * cols, size * rows), layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def show_maps(
    images: Tensor,
    maps: Mapping[str, Tensor],
    row_titles: Sequence[str] | None = None,
    boxes: Sequence[Tensor] | None = None,
    alpha: float = 0.5,
    size: float = 2.4,
) -> Figure:
    """A grid: one row per image, the image first, then one column per method's map overlaid on it.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps: {method name: (N, 1, H, W) float in [0, 1]}.
        row_titles: N labels shown left of each row (e.g. the class name).
        boxes: N tensors (M, 4) xyxy pixels drawn on the image column.
    """
    n = images.shape[0]
    fig, axes = grid_figure(n, 1 + len(maps), size)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]))
        if row_titles is not None:
            axes[i, 0].set_title(row_titles[i], fontsize=10)
        if boxes is not None:
            for x0, y0, x1, y1 in boxes[i].tolist():
                axes[i, 0].add_patch(
                    matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=2)
                )
        for j, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(overlay(images[i], m[i], alpha))
            if i == 0:
                axes[i, j].set_title(name, fontsize=11)
    return fig


def plot_history(history: Tensor, labels: Sequence[str] | None = None, ylabel: str = "objective F") -> Figure:
    """The objective per iteration of every image: history (N, T), NaN after an image stopped."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    h = history.detach().cpu().float()
    for i in range(h.shape[0]):
        ax.plot(torch.arange(1, h.shape[1] + 1), h[i], label=labels[i] if labels else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if labels:
        ax.legend(fontsize=8, loc="lower right")
    return fig
