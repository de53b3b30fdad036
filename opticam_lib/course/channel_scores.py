"""Notebook 02: Score-CAM channel by channel (eq. 3-4), and what its K forward passes cost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_images, validate_positive_int
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.maps import is_constant
from opticam_lib.methods.masking import channel_scores
from opticam_lib.models.classifier import Classifier

if TYPE_CHECKING:  # annotations only
    from matplotlib.axes import Axes
    from matplotlib.text import Annotation


@dataclass
class ChannelScores:
    """Score-CAM's eq. (3) for one image: ``u_k = f(x ⊙ n(up(A^k)))_c - f(x_b)_c`` for each channel.

    Attributes:
        scores: (K,) u_k for every channel of the layer.
        constant: (K,) bool, channels whose feature map is constant over the image: n(A^k) = 0 (eq. 4 with the
            convention n(const) := 0 of section 3.1), the masked image is the black baseline, so u_k = 0 exactly.
        passes: masked forward passes made (K minus the constant channels skipped).
        activations: (1, K, h, w) the feature maps A^k.
        seconds: wall-clock time of the call.
    """

    scores: Tensor
    constant: Tensor
    passes: int
    activations: Tensor
    seconds: float

    @property
    def weights(self) -> Tensor:
        """Score-CAM's channel weights ``softmax(u)`` (K,), summing to 1."""
        return torch.softmax(self.scores, dim=0)


def constant_channels(activations: Tensor) -> Tensor:
    """(N, K, h, w) -> (N, K) bool: feature maps whose span is rounding at their own resolution
    (``maps.is_constant``, the test ``maps.normalize`` zeros by). Upsampling can shrink a one-pixel bump of about
    1e-5 below it, so a few maps that are not constant here still give an all-zero mask."""
    return is_constant(activations)


def scorecam_scores(
    classifier: Classifier,
    image: Tensor,
    target: int,
    layer: str | None = None,
    batch_size: int = 64,
    skip_constant: bool = True,
) -> ChannelScores:
    """Eq. (3)-(4) for one image, every channel of ``layer``: the scores u_k behind Score-CAM's weights.

    The computation of ``masking.scorecam`` (``masking.channel_scores``: black baseline, bilinear ``up``, range
    ``n``), returned with what a notebook wants to look at. With ``skip_constant`` the channels whose feature map is
    constant (all zero after a ReLU, typically) are not forwarded: their mask is all zero, the masked image is
    the baseline, and u_k = 0 exactly. ``softmax(scores)`` then gives the weights of ``scorecam``'s map.

    Args:
        image: (3, H, W) or (1, 3, H, W) float in [0, 1].
        target: the class c.
    """
    if image.dim() == 3:
        image = image[None]
    image = validate_images(image).to(classifier.device)
    if image.shape[0] != 1:
        raise InputError(f"scorecam_scores takes one image, got a batch of {image.shape[0]}")
    if not 0 <= int(target) < classifier.num_classes:
        raise InputError(f"target class {target} out of range 0..{classifier.num_classes - 1}")
    batch_size = validate_positive_int(batch_size, "batch_size")
    start_time = time.perf_counter()
    acts, _ = features(classifier, image, layer)
    k = acts.shape[1]
    constant = constant_channels(acts)[0]
    todo = (~constant).nonzero()[:, 0] if skip_constant else torch.arange(k, device=acts.device)
    scores = channel_scores(classifier, image, torch.tensor([int(target)]), acts, todo, batch_size)[0]
    return ChannelScores(
        scores=scores.cpu(),
        constant=constant.cpu(),
        passes=len(todo),
        activations=acts.cpu(),
        seconds=time.perf_counter() - start_time,
    )


def fit_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``y = slope * x + intercept`` through measured points; returns (slope, intercept)."""
    if len(x) != len(y) or len(x) < 2:
        raise InputError("fit_line needs at least two (x, y) points of equal count")
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(slope), float(intercept)


def plot_cost(
    passes: Sequence[int],
    seconds: Sequence[float],
    labels: Sequence[str],
    predict: dict[str, int] | None = None,
    title: str = "",
) -> Figure:
    """Seconds against forward passes for measured runs, the fitted line, and predictions at other counts.

    Args:
        passes, seconds, labels: one entry per measured run (e.g. Score-CAM at a layer with K channels).
        predict: {label: passes} drawn as hollow points on the fitted line (predicted, not measured).
    """
    if not (len(passes) == len(seconds) == len(labels)):
        raise InputError("passes, seconds and labels must have the same length")
    slope, intercept = fit_line(passes, seconds)
    xs = list(passes) + list((predict or {}).values())
    grid = np.linspace(0, max(xs) * 1.05, 50)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(
        grid,
        slope * grid + intercept,
        color="tab:gray",
        lw=1,
        ls="--",
        label=f"fit: {slope * 1000:.0f} ms/pass",
    )
    ax.scatter(passes, seconds, color="tab:blue", zorder=3, label="measured here")
    points = [(float(x), float(y), str(text)) for x, y, text in zip(passes, seconds, labels)]
    for text, x in (predict or {}).items():
        y = slope * x + intercept
        ax.scatter([x], [y], facecolors="none", edgecolors="tab:red", s=60, zorder=3)
        points.append((float(x), float(y), f"{text}\n(predicted {y:.0f} s)"))
    ax.set_xlabel("masked forward passes (one per channel)")
    ax.set_ylabel("seconds on this machine")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    if title:
        ax.set_title(title, fontsize=11)
    ax.set_ylim(top=max(max(seconds), *(y for _, y, _ in points)) * 1.12)
    place_labels(fig, ax, points)
    return fig


# Where a point's label may go, in order of preference: (dx, dy) in points, horizontal and vertical alignment.
_LABEL_SPOTS = (
    ((8, -4), "left", "top"),
    ((8, 4), "left", "bottom"),
    ((-8, 4), "right", "bottom"),
    ((-8, -4), "right", "top"),
    ((0, 10), "center", "bottom"),
    ((0, -10), "center", "top"),
    ((14, 18), "left", "bottom"),
    ((14, 32), "left", "bottom"),
    ((-14, 18), "right", "bottom"),
    ((14, -18), "left", "top"),
)


def place_labels(
    fig: Figure, ax: Axes, points: Sequence[tuple[float, float, str]], fontsize: float = 9
) -> list[Annotation]:
    """Annotate each (x, y, text) of ``points`` on ``ax`` at the first of a few spots around it (right-below,
    right-above, left-above, ...) where the label lies inside the axes and overlaps neither the legend nor a
    label placed before it (the last spot tried is kept when none fits). Draws the figure once to measure;
    returns the annotations, one per point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # settle the (constrained) layout before measuring
    frame = ax.get_window_extent(renderer)
    placed = []
    boxes = [ax.get_legend().get_window_extent(renderer)] if ax.get_legend() is not None else []
    for x, y, text in points:
        inside_spots, chosen = [], None
        for offset, ha, va in _LABEL_SPOTS:
            note = ax.annotate(
                text, (x, y), textcoords="offset points", xytext=offset, ha=ha, va=va, fontsize=fontsize
            )
            box = note.get_window_extent(renderer)
            note.remove()
            if box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1:
                inside_spots.append((offset, ha, va))
                if not any(box.overlaps(b) for b in boxes):
                    chosen = (offset, ha, va)
                    break
        offset, ha, va = chosen or (inside_spots[0] if inside_spots else _LABEL_SPOTS[0])
        leader = {"arrowstyle": "-", "lw": 0.6, "color": "tab:gray"} if abs(offset[1]) > 10 else None
        note = ax.annotate(
            text,
            (x, y),
            textcoords="offset points",
            xytext=offset,
            ha=ha,
            va=va,
            fontsize=fontsize,
            arrowprops=leader,
        )
        note.update_positions(renderer)
        boxes.append(Text.get_window_extent(note, renderer))  # the label, not its leader line
        placed.append(note)
    return placed


def plot_channel_scores(scores: Tensor, constant: Tensor | None = None, top: int = 10) -> Figure:
    """Score-CAM's channel scores and weights for one image: where the softmax puts its weight.

    Left: the scores u_k (eq. 3) sorted from largest to smallest (constant channels, u_k = 0, in grey).
    Right: the share of the total weight ``softmax(u)`` carried by the n largest weights, against n (log axis),
    with the share of the ``top`` largest marked.

    Args:
        scores: (K,) u_k.
        constant: (K,) bool, channels whose feature map is constant (optional, drawn in grey).
    """
    u = scores.detach().float().cpu()
    order = u.argsort(descending=True)
    weights = torch.softmax(u, dim=0)[order]
    share = weights.cumsum(0).numpy()
    n = np.arange(1, len(u) + 1)
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    colors = np.where(constant[order].numpy(), "tab:gray", "tab:blue") if constant is not None else "tab:blue"
    left.bar(n, u[order].numpy(), width=1.0, color=colors)
    left.axhline(0, color="black", lw=0.8)
    left.set_xlabel("channels, sorted by score")
    left.set_ylabel("score $u_k$ (logit difference)")
    left.set_title(
        "eq. (3): one score per channel"
        + (" (grey: constant map, $u_k = 0$)" if constant is not None else ""),
        fontsize=10,
    )
    left.grid(alpha=0.3)
    right.plot(n, share, color="tab:orange")
    right.set_xscale("log")
    top = min(top, len(u))
    right.scatter([top], [share[top - 1]], color="tab:red", zorder=3)
    right.annotate(
        f"top {top}: {share[top - 1]:.0%}",
        (top, share[top - 1]),
        textcoords="offset points",
        xytext=(8, -14),
        fontsize=9,
    )
    right.set_xlabel("n largest weights")
    right.set_ylabel("share of softmax(u)")
    right.set_ylim(0, 1.02)
    right.set_title("softmax weights: how few channels carry the map", fontsize=10)
    right.grid(alpha=0.3)
    return fig
