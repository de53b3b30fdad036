"""Figures any user of the library wants: overlays of a map on its image, grids of maps, an objective's
history. Pure functions: each returns a figure (or an array) and shows nothing. Images (3, H, W) and maps
(1, H, W) are float in [0, 1].

One colour convention everywhere: ``SALIENCY_CMAP`` ('inferno', perceptually uniform: brightness grows with the
value, so the order of the colours reads the same in greyscale and for colour-blind readers), drawn over the
photo in greyscale (so every colour in an overlay comes from the map, none from the photo), with a colour bar
that says what 0 and 1 mean (``saliency_colorbar``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_unit_interval

SALIENCY_CMAP = "inferno"
"""The one colour map of saliency maps, alone or overlaid (perceptually uniform; dark = 0, bright = 1)."""
OVERLAY_ALPHA = 0.55
"""The map's weight in an overlay: ``(1 - alpha) * grey photo + alpha * colour of the map``."""
GRID_DPI = 80
"""Dots per inch of a grid of maps: photos of 224 pixels in panels of 2.4 inches keep almost all their pixels,
and a notebook of several grids stays small (the PNGs are stored in the notebook)."""
SALIENCY_LABEL = "saliency"
"""The colour bar's title; its ticks say '0 least' and '1 most' (every method's map is scaled to [0, 1] per
image, so the ends are the least and the most salient pixels of each map)."""


def to_numpy_image(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) numpy float in [0, 1]."""
    return image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W, 3) its luma (ITU-R BT.601 weights) repeated on the three channels."""
    luma = image @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=-1)


def overlay(
    image: Tensor,
    saliency: Tensor,
    alpha: float = OVERLAY_ALPHA,
    cmap: str = SALIENCY_CMAP,
    grey: bool = True,
) -> np.ndarray:
    """Blend a saliency map over its image.

    Args:
        image: (3, H, W) float in [0, 1].
        saliency: (1, H, W) or (H, W) float in [0, 1].
        alpha: the map's weight (0: the photo only, 1: the map only).
        cmap: a matplotlib colour map (default ``SALIENCY_CMAP``).
        grey: blend over the photo in greyscale, so that the colours come from the map alone.
    Returns:
        (H, W, 3) numpy float in [0, 1].
    """
    heat = matplotlib.colormaps[cmap](checked_map(saliency, image).float().cpu().numpy())[..., :3]
    photo = to_numpy_image(image)
    return (1 - alpha) * (to_grey(photo) if grey else photo) + alpha * heat


def checked_map(saliency: object, image: Tensor, what: str = "saliency") -> Tensor:
    """``saliency`` as the (H, W) map of ``image`` (3, H, W), detached; an ``InputError`` naming the likely mistake
    for a map of another size (not upsampled yet?), NaN values, or values outside [0, 1] (not normalised yet?),
    which a plot would silently clip under its [0, 1] colour bar."""
    if not isinstance(saliency, Tensor):
        raise InputError(f"{what} must be a torch.Tensor (1, H, W) or (H, W), got {type(saliency).__name__}")
    height, width = image.shape[-2:]
    s = saliency.detach()
    if s.dim() == 3 and s.shape[0] == 1:
        s = s[0]
    if s.dim() != 2:
        raise InputError(f"{what} must have shape (1, H, W) or (H, W), got {tuple(saliency.shape)}")
    if tuple(s.shape) != (height, width):
        hint = (
            ": upsample it to the image's size first (opticam_lib.methods.maps.upsample or to_saliency)"
            if s.shape[0] < height and s.shape[1] < width
            else ""
        )
        raise InputError(f"{what} is {s.shape[0]} x {s.shape[1]} but its image is {height} x {width}{hint}")
    validate_unit_interval(
        s,
        what,
        "must lie in [0, 1], the colour bar's range",
        ": normalise it first (opticam_lib.methods.maps.normalize)",
    )
    return s


def saliency_colorbar(
    fig: Figure,
    axes: Axes | Sequence[Axes] | np.ndarray,
    label: str = SALIENCY_LABEL,
    cmap: str = SALIENCY_CMAP,
    vmin: float = 0.0,
    vmax: float = 1.0,
    end_labels: tuple[str, str] = ("least", "most"),
    **kwargs: Any,
) -> Colorbar:
    """One vertical colour bar beside ``axes`` (one or several) for maps drawn with ``cmap`` on [vmin, vmax],
    ``label`` written above it.

    For [0, 1] the ends carry ``end_labels`` after their values: by default 'least' and 'most' salient, within
    each map (a range-normalised map spans both); a mask that multiplies the image says ``("hides", "keeps")``.
    ``kwargs`` go to ``Figure.colorbar`` (e.g. ``shrink``, ``aspect``, ``pad``).
    """
    ax = list(np.asarray(axes, dtype=object).flat) if not isinstance(axes, Axes) else axes
    mappable = ScalarMappable(norm=Normalize(vmin, vmax), cmap=cmap)
    kwargs.setdefault("shrink", 0.8)
    kwargs.setdefault("aspect", 25)
    bar = fig.colorbar(mappable, ax=ax, **kwargs)
    if (vmin, vmax) == (0.0, 1.0):
        low, high = end_labels
        bar.set_ticks([0.0, 0.5, 1.0], labels=[f"0 {low}", "0.5", f"1 {high}"])
    bar.ax.tick_params(labelsize=8)
    # above the bar (fits however short the figure is), starting at its left edge: clear of the maps on its left
    title = bar.ax.set_title(label, fontsize=8, pad=7)
    title.set_horizontalalignment("left")
    title.set_x(0.0)
    return bar


def save_overlay(path: str | Path, image: Tensor, saliency: Tensor, alpha: float = OVERLAY_ALPHA) -> None:
    """Write ``overlay(image, saliency)`` as a PNG (no axes, at the image's resolution): image (3, H, W) float in
    [0, 1], saliency (1, H, W) or (H, W) float in [0, 1]."""
    import matplotlib.pyplot as plt

    plt.imsave(path, np.clip(overlay(image, saliency, alpha), 0, 1))


def draw_boxes(ax: Axes, boxes: Tensor | np.ndarray | None, color: str = "cyan", lw: float = 1.5) -> None:
    """Outline boxes on ``ax``: boxes (4,) or (M, 4), xyxy in pixels (x1, y1 exclusive); None draws nothing."""
    if boxes is None:
        return
    for x0, y0, x1, y1 in np.asarray(torch.as_tensor(boxes).detach().cpu(), dtype=float).reshape(-1, 4):
        # pixel i covers [i - 0.5, i + 0.5] in imshow's coordinates
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=lw))


def grid_figure(rows: int, cols: int, size: float = 2.4) -> tuple[Figure, np.ndarray]:
    """An empty ``rows`` x ``cols`` grid of axes without ticks (``size`` inches per panel, constrained layout,
    ``GRID_DPI``)."""
    fig = Figure(figsize=(size * cols, size * rows), layout="constrained", dpi=GRID_DPI)
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def show_maps(
    images: Tensor,
    maps: Mapping[str, Tensor],
    row_titles: Sequence[str] | None = None,
    boxes: Sequence[Tensor] | None = None,
    alpha: float = OVERLAY_ALPHA,
    size: float = 2.4,
    colorbar: bool = True,
) -> Figure:
    """A grid: one row per image, the image first, then one column per method's map overlaid on it
    (``overlay``: ``SALIENCY_CMAP`` over the photo in greyscale), and one colour bar for all the maps.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps: {method name: (N, 1, H, W) float in [0, 1]}.
        row_titles: N labels shown above each row's image (e.g. the class name).
        boxes: N tensors (M, 4) xyxy pixels drawn on the image column.
        colorbar: draw the colour bar (``saliency_colorbar``) right of the maps.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise InputError(
            f"images must be a tensor (N, 3, H, W), got {getattr(images, 'shape', type(images).__name__)}"
        )
    n = images.shape[0]
    for name, m in maps.items():
        if not isinstance(m, Tensor) or m.dim() not in (3, 4) or m.shape[0] != n:
            raise InputError(
                f"maps[{name!r}] must hold one map per image, (N, 1, H, W) with N = {n}, got "
                f"{tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__}"
            )
    for label, given in (("row_titles", row_titles), ("boxes", boxes)):
        if given is not None and len(given) != n:
            raise InputError(f"{label} must have one entry per image ({n}), got {len(given)}")
    fig, axes = grid_figure(n, 1 + len(maps), size)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]))
        if row_titles is not None:
            axes[i, 0].set_title(row_titles[i], fontsize=10)
        if boxes is not None:
            draw_boxes(axes[i, 0], boxes[i], color="lime", lw=2)
        for j, (name, m) in enumerate(maps.items(), start=1):
            try:
                axes[i, j].imshow(overlay(images[i], m[i], alpha))
            except InputError as e:
                raise InputError(f"maps[{name!r}] of image {i}: {e}") from None
            if i == 0:
                axes[i, j].set_title(name, fontsize=11)
    if colorbar and maps:
        saliency_colorbar(fig, axes[:, 1:], shrink=min(0.9, 0.6 + 0.1 * n))
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
