"""Notebooks 00-01: predictions on the sample photos, and the feature maps A^k behind a CAM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_images, validate_positive_int
from opticam_lib.models.classifier import Classifier
from opticam_lib.plots import GRID_DPI, draw_boxes, to_numpy_image

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd


def prediction_table(
    classifier: Classifier,
    images: Tensor,
    labels: Sequence[int] | Tensor,
    names: Sequence[str] | None = None,
    k: int = 5,
) -> pd.DataFrame:
    """Top-1 / top-k predictions against the ground truth, one row per image, as a pandas DataFrame.

    Columns: ``image``, ``truth`` (class name), ``top-1`` (class name), ``p(top-1)``, ``p(truth)``,
    ``rank of truth`` (1..C), ``top-1 correct``, ``in top-k`` (bool).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        labels: N ground-truth class ids.
    """
    import pandas as pd

    images = validate_images(images)
    k = validate_positive_int(k, "k")
    labels = torch.as_tensor(labels).long().cpu()
    if labels.shape != (images.shape[0],):
        raise InputError(
            f"labels must give one class per image ({images.shape[0]}), got {tuple(labels.shape)}"
        )
    probs = classifier.predict(images).cpu()
    order = probs.argsort(dim=1, descending=True)
    rows = []
    for i in range(images.shape[0]):
        c = int(labels[i])
        rank = int((order[i] == c).nonzero()[0, 0]) + 1
        top1 = int(order[i, 0])
        rows.append(
            {
                "image": names[i] if names is not None else f"image {i}",
                "truth": classifier.categories[c],
                "top-1": classifier.categories[top1],
                "p(top-1)": round(float(probs[i, top1]), 3),
                "p(truth)": round(float(probs[i, c]), 3),
                "rank of truth": rank,
                "top-1 correct": rank == 1,
                f"in top-{k}": rank <= k,
            }
        )
    return pd.DataFrame(rows)


def show_samples(
    images: Tensor,
    titles: Sequence[str],
    boxes: Sequence[Tensor] | None = None,
    cols: int = 4,
    size: float = 2.6,
) -> Figure:
    """A grid of photos with a title each (e.g. their ground-truth class) and their boxes drawn in green
    (``plots.draw_boxes``; ``GRID_DPI`` like every photo grid).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        titles: N strings.
        boxes: N tensors (M, 4) of xyxy pixel boxes, or None.
    """
    n = images.shape[0]
    cols = min(validate_positive_int(cols, "cols"), n)
    rows = -(-n // cols)
    fig = Figure(figsize=(size * cols, (size + 0.3) * rows), layout="constrained", dpi=GRID_DPI)
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(to_numpy_image(images[i]))
        ax.set_title(titles[i], fontsize=10)
        draw_boxes(ax, None if boxes is None else boxes[i], color="lime", lw=2)
    return fig


def top_channels(activations: Tensor, n: int = 8) -> list[int]:
    """The ``n`` channels with the largest mean activation: activations (K, h, w) -> n channel ids."""
    if activations.dim() != 3:
        raise InputError(f"activations must be (K, h, w) for one image, got {tuple(activations.shape)}")
    return activations.mean(dim=(1, 2)).argsort(descending=True)[:n].tolist()


def pre_activation(classifier: Classifier, images: Tensor, layer: str | None = None) -> Tensor:
    """The feature maps of ``layer`` *before* its activation function: the input of its ``act`` sub-module.

    EfficientNet-Lite's ``bn2`` is BatchNorm followed by ReLU6 (timm's ``BatchNormAct2d``), so its output
    A^k = min(max(z, 0), 6) hides every value z above 6; this returns z itself, (N, K, h, w), with no graph.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        layer: a layer with an ``act`` sub-module (default: the classifier's target layer).
    Raises:
        InputError: the layer has no ``act`` sub-module.
    """
    from opticam_lib.hooks import frozen

    images = validate_images(images)
    module = classifier.layer(layer)
    act = getattr(module, "act", None)
    if not isinstance(act, torch.nn.Module):
        raise InputError(
            f"layer {layer or classifier.target_layer!r} has no 'act' sub-module: its output is already what "
            "the next layer sees (capture it with hooks.capture)"
        )
    seen: list[Tensor] = []

    def hook(_m: torch.nn.Module, inputs: tuple) -> None:
        seen.append(inputs[0].detach().clone())  # clone: an in-place activation would overwrite it

    handle = act.register_forward_pre_hook(hook)
    try:
        with frozen(classifier.model), torch.no_grad():
            classifier.model(images.to(classifier.device))
    finally:
        handle.remove()
    return seen[-1]


def show_feature_maps(
    image: Tensor,
    activations: Tensor,
    channels: Sequence[int],
    cols: int = 5,
    size: float = 2.2,
    clamp: tuple[float, float] | None = None,
    cmap: str = "viridis",
) -> Figure:
    """The image, then the feature maps A^k of the given channels at their own resolution, on one colour scale
    shared by all the maps (the colour bar on the right).

    Args:
        image: (3, H, W) float in [0, 1].
        activations: (K, h, w) feature maps of that image.
        channels: channel ids to show.
        clamp: (low, high) of an activation that clamps its input (ReLU6: (0, 6)) when ``activations`` are
            the values before it (``pre_activation``): a white dot marks every cell the activation sets to
            ``high``, the colour bar marks both bounds, and each title counts the clamped cells.
        cmap: the colour map (feature maps are not saliency: a colour map of their own).
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    panels = 1 + len(channels)
    cols = min(cols, panels)
    rows = -(-panels // cols)
    fig = Figure(figsize=(size * cols + 0.9, (size + 0.25) * rows), layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    axes.flat[0].imshow(to_numpy_image(image))
    axes.flat[0].set_title("image", fontsize=10)
    h, w = activations.shape[-2:]
    shown = activations[list(channels)].detach().float().cpu()
    low = float(shown.min()) if clamp is not None else min(0.0, float(shown.min()))
    norm = Normalize(low, max(float(shown.max()), low + 1e-6))
    for ax, k, a in zip(axes.flat[1:], channels, shown):
        ax.imshow(a.numpy(), cmap=cmap, norm=norm)
        if clamp is None:
            ax.set_title(f"A^{k}  ({h}×{w}, max {float(a.max()):.2f})", fontsize=9)
            continue
        rr, cc = np.nonzero(a.numpy() >= clamp[1])
        ax.scatter(cc, rr, s=12, c="white", edgecolors="black", linewidths=0.5)
        ax.set_title(f"channel {k}: {len(rr)} of {h * w} cells ≥ {clamp[1]:g}", fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes.flat), shrink=0.8, aspect=30)
    bar.ax.tick_params(labelsize=8)
    if clamp is None:
        bar.set_label("A^k", fontsize=8)
    else:
        for bound in clamp:
            if norm.vmin <= bound <= norm.vmax:
                bar.ax.axhline(bound, color="black", lw=1.2)
        bar.set_label(f"value before the clamp to [{clamp[0]:g}, {clamp[1]:g}] (lines)", fontsize=8)
    return fig


def show_masks(
    image: Tensor, masks: Tensor, titles: Sequence[str], scores: Sequence[str], size: float = 2.2
) -> Figure:
    """Score-CAM's masking (eq. 3) for a few channels: the mask n(up(A^k)) above, the masked image below.

    Args:
        image: (3, H, W) float in [0, 1].
        masks: (M, 1, H, W) float in [0, 1].
        titles: M titles for the masks (e.g. the channel id).
        scores: M titles for the masked images (e.g. the class score u_k).
    """
    m = masks.shape[0]
    fig = Figure(figsize=(size * (m + 1), size * 2 + 0.5), layout="constrained")
    axes = np.array(fig.subplots(2, m + 1, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(to_numpy_image(image))
    axes[0, 0].set_title("image x", fontsize=10)
    axes[1, 0].imshow(np.zeros((*image.shape[-2:], 3)))
    axes[1, 0].set_title("baseline x_b = 0", fontsize=10)
    for j in range(m):
        axes[0, j + 1].imshow(masks[j, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(titles[j], fontsize=10)
        axes[1, j + 1].imshow(to_numpy_image(image * masks[j].to(image.device)))
        axes[1, j + 1].set_title(scores[j], fontsize=10)
    return fig
