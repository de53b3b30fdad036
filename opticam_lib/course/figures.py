"""Figures only the course's notebooks draw: panels, scaling and time bars, metric bars, the extremal
history, LIME's superpixel weights, and the Opti-CAM pipeline (the paper's Fig. 1) from a real run. Functions
returning figures; only ``pipeline_figure`` runs a model (Opti-CAM on the image it draws)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_choice
from opticam_lib.models.classifier import Classifier
from opticam_lib.plots import GRID_DPI, SALIENCY_CMAP, overlay, saliency_colorbar, to_numpy_image


def metrics_bars(
    rows: Sequence[Mapping[str, float | str]], metrics: Sequence[str] = ("AD", "AG", "AI")
) -> Figure:
    """One bar chart per metric, one bar per method: rows like ``Evaluation.row()``."""
    fig = Figure(figsize=(3.2 * len(metrics), 3.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    names = [str(r["method"]) for r in rows]
    arrows = {"AD": "↓", "AG": "↑", "AI": "↑"}
    for ax, m in zip(axes, metrics):
        ax.barh(names, [float(r[m]) for r in rows], color="tab:blue")
        ax.set_title(f"{m} {arrows.get(m, '')} (%)")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    return fig


#: the axis label of each Opti-CAM objective (``optimize``'s ``objective``) in ``opticam_panel``
OBJECTIVE_LABELS = {
    "mask": "objective F (eq. 10)",
    "diff": "objective F, Diff (eq. 19)",
    "iomask": "objective F, In/Out Mask (eq. A1)",
    "iodiff": "objective F, In/Out Diff (eq. A2)",
}


def opticam_panel(
    image: Tensor,
    saliency: Tensor,
    history: Tensor,
    title: str = "",
    probabilities: tuple[float, float] | None = None,
    objective: str = "mask",
) -> Figure:
    """Opti-CAM on one image: the image, its map overlaid, the masked image, and the objective per iteration.

    Args:
        image: (3, H, W) float in [0, 1].
        saliency: (1, H, W) float in [0, 1]: the mask that multiplies the image (its colour bar says so: under
            the max or sigmoid normalisation it need not reach 0 or 1).
        history: (T,) objective per iteration (NaN after an early stop).
        probabilities: (p, o), class probability before and after masking, shown in the titles.
        objective: the objective ``history`` holds (``optimize``'s ``objective``), which labels its axis.
    """
    validate_choice(objective, "objective", tuple(OBJECTIVE_LABELS))
    fig = Figure(figsize=(11, 2.9), layout="constrained")
    axes = fig.subplots(1, 4, width_ratios=[1, 1, 1, 1.5])
    axes[0].imshow(to_numpy_image(image))
    axes[0].set_title(title or "image", fontsize=12)
    axes[1].imshow(overlay(image, saliency))
    axes[1].set_title("Opti-CAM map", fontsize=12)
    axes[2].imshow(to_numpy_image(image * saliency.to(image.device)))
    axes[2].set_title(
        "masked image" + (f"\np {probabilities[0]:.2f} → o {probabilities[1]:.2f}" if probabilities else "")
    )
    for ax in axes[:3]:
        ax.set_axis_off()
    saliency_colorbar(fig, axes[1], label="mask", end_labels=("hides", "keeps"), shrink=0.8)
    h = history.detach().cpu().float()
    axes[3].plot(torch.arange(1, h.numel() + 1), h, marker=".", color="tab:orange")
    axes[3].set_xlabel("iteration", fontsize=11)
    axes[3].set_ylabel(OBJECTIVE_LABELS[objective], fontsize=11)
    axes[3].grid(alpha=0.3)
    return fig


def plot_scaling(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str = "seconds",
    title: str = "",
    marks: Mapping[str, float] | None = None,
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """Measured cost against a size (notebook 04): e.g. seconds against channels K or iterations T.

    Args:
        series: {label: (x values, y values)} measured points, drawn with markers joined by solid lines.
        lines: {label: (x values, y values)} models or fits, drawn dashed without markers; the i-th line takes
            the colour of the i-th series (so a measurement and its fit match).
        marks: {label: x} vertical dotted lines with a label (e.g. ``{"ResNet50: 2048 channels": 2048}``).
        logx, logy: logarithmic axes.
    """
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = [f"C{i}" for i in range(10)]
    for i, (label, (x, y)) in enumerate(series.items()):
        ax.plot(list(x), list(y), marker="o", color=colors[i % 10], label=label)
    for i, (label, (x, y)) in enumerate((lines or {}).items()):
        ax.plot(list(x), list(y), ls="--", lw=1.2, color=colors[i % 10], label=label)
    for label, x in (marks or {}).items():  # a dotted vertical line, labelled along its left side
        ax.axvline(x, color="0.4", ls=":", lw=1)
        ax.annotate(
            label, (x, 0.03), xycoords=ax.get_xaxis_transform(), xytext=(-2, 0), textcoords="offset points",
            rotation=90, ha="right", va="bottom", fontsize=8,
        )  # fmt: skip
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def time_bars(
    rows: Mapping[str, Mapping[str, float | None]], unit: str = "T: seconds per batch of 8", log: bool = True
) -> Figure:
    """Grouped horizontal bars: one group per method, one bar per source (notebook 04's T column).

    Args:
        rows: {method: {source: seconds}}, e.g. ``{"Opti-CAM": {"ours (CPU)": 80.0, "paper, ResNet50": 4.15}}``;
            None (no number) draws no bar.
        log: logarithmic time axis (T spans several orders of magnitude).
    """
    methods = list(rows)
    sources = list(dict.fromkeys(s for r in rows.values() for s in r))
    fig = Figure(figsize=(7, 0.9 + 0.45 * len(methods) * len(sources)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(1, len(sources))
    for j, source in enumerate(sources):
        ys = [i + (j - (len(sources) - 1) / 2) * height for i in range(len(methods))]
        values = [rows[m].get(source) for m in methods]
        shown = [(y, v) for y, v in zip(ys, values) if v is not None]
        if not shown:
            continue
        bars = ax.barh([y for y, _ in shown], [v for _, v in shown], height=height * 0.9, label=source)
        ax.bar_label(
            bars, labels=[f"{v:.0f}" if v >= 100 else f"{v:.3g}" for _, v in shown], fontsize=8, padding=2
        )
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(unit, fontsize=11)
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def show_perturbation(
    image: Tensor,
    mask: Tensor,
    blurred: Tensor,
    perturbed: Tensor,
    blurred_title: str = "most blurred level",
    size: float = 1.8,
) -> Figure:
    """A blur perturbation in one row: the image, the mask m alone (with its colour bar: 1 keeps the pixel,
    0 blurs it), the most blurred copy, and the image perturbed with m.

    Args:
        image, blurred, perturbed: (3, H, W) float in [0, 1].
        mask: (1, H, W) or (H, W) float in [0, 1].
        blurred_title: the title of the blurred panel (e.g. its blur radius).
        size: inches per panel.
    """
    panels = {"image x": image, "blurred": blurred, "perturbed with m": perturbed}
    for name, t in panels.items():
        if t.dim() != 3 or t.shape[0] != 3 or t.shape[-2:] != image.shape[-2:]:
            raise InputError(
                f"{name} must be (3, {image.shape[-2]}, {image.shape[-1]}), got {tuple(t.shape)}"
            )
    m = mask.detach().float().cpu()
    if m.numel() != image.shape[-2] * image.shape[-1]:
        raise InputError(f"mask must be (1, H, W) or (H, W) like the image, got {tuple(mask.shape)}")
    fig = Figure(figsize=(4 * size + 1.0, size + 0.5), layout="constrained")
    axes = fig.subplots(1, 4)
    for ax in axes:
        ax.set_axis_off()
    axes[0].imshow(to_numpy_image(image))
    axes[0].set_title("image x", fontsize=9)
    axes[1].imshow(m.reshape(image.shape[-2:]).numpy(), cmap=SALIENCY_CMAP, vmin=0, vmax=1)
    axes[1].set_title("mask m", fontsize=9)
    axes[2].imshow(to_numpy_image(blurred))
    axes[2].set_title(blurred_title, fontsize=9)
    axes[3].imshow(to_numpy_image(perturbed))
    axes[3].set_title("perturbed with m", fontsize=9)
    bar = saliency_colorbar(fig, axes[1], label="m", shrink=0.9)
    bar.set_ticks([0.0, 0.5, 1.0], labels=["0 blur", "0.5", "1 keep"])
    return fig


def plot_extremal_history(
    scores: Tensor,
    area_losses: Tensor,
    labels: Sequence[str] | None = None,
    area_weights: Tensor | None = None,
) -> Figure:
    """Extremal perturbation's optimisation (notebook 06): the class score and the area loss per iteration.

    Args:
        scores: (N, T) the class logit of the perturbed image at each iteration (``ExtremalResult.scores``).
        area_losses: (N, T) R_a(m) at each iteration (``ExtremalResult.area_losses``).
        labels: N names for the legend.
        area_weights: (T,) lambda_t; when given, a third panel shows lambda_t * R_a(m), the penalty's size.
    """
    panels = [(scores, "class score f_c (logit)"), (area_losses, "area loss R_a(m)")]
    if area_weights is not None:
        panels.append((area_losses * area_weights.reshape(1, -1), "penalty lambda_t R_a(m)"))
    fig = Figure(figsize=(3.6 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (values, title) in zip(axes, panels):
        v = values.detach().cpu().float()
        for i in range(v.shape[0]):
            ax.plot(torch.arange(1, v.shape[1] + 1), v[i], label=labels[i] if labels else None)
        ax.set_xlabel("iteration")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if labels:
        axes[0].legend(fontsize=8)
    return fig


def plot_superpixel_weights(image: Tensor, segments: Tensor, weights: Tensor, title: str = "") -> Figure:
    """LIME's view of an image (notebook 06): the superpixel grid, and one weight per superpixel painted on it.

    Args:
        image: (3, H, W) float in [0, 1].
        segments: (H, W) long superpixel ids 0..F-1 (``attribution.grid_superpixels``).
        weights: (F,) the surrogate's coefficients (any sign; a diverging colour map centred at 0).
    """
    seg = segments.detach().cpu()
    w = weights.detach().cpu().double().reshape(-1)
    fig = Figure(figsize=(7.6, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    edges = (seg[1:, :] != seg[:-1, :])[:, :-1] | (seg[:, 1:] != seg[:, :-1])[:-1, :]
    shown = to_numpy_image(image).copy()
    shown[:-1, :-1][edges.numpy()] = (1.0, 1.0, 1.0)
    left.imshow(shown)
    left.set_title(f"{int(seg.max()) + 1} superpixels", fontsize=10)
    painted = w[seg].numpy()
    bound = float(w.abs().max()) or 1.0
    im = right.imshow(painted, cmap="RdBu_r", vmin=-bound, vmax=bound)
    right.set_title(title or "surrogate weight b_k per superpixel", fontsize=10)
    fig.colorbar(im, ax=right, shrink=0.8)
    for ax in (left, right):
        ax.set_axis_off()
    return fig


#: the panels of ``pipeline_figure``, left to right (the forward path of the paper's Fig. 1)
PIPELINE_PANELS: tuple[str, ...] = (
    "image x",
    "feature maps A^k",
    "weights softmax(u)",
    "map S(x; u)",
    "n(up(S))",
    "masked image",
    "class score F",
)


def _montage(maps: Tensor, cols: int = 2) -> np.ndarray:
    """(M, h, w) maps, each scaled to [0, 1] on its own, tiled in a grid with 1-pixel gaps (NaN: drawn blank)."""
    m = maps.detach().float().cpu()
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    m = (m - lo) / (hi - lo).clamp_min(1e-12)
    count, h, w = m.shape
    rows = -(-count // cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    for i in range(count):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = m[i].numpy()
    return out


def pipeline_figure(
    classifier: Classifier,
    image: Tensor,
    target: int | None = None,
    *,
    iterations: int = 100,
    channels: int = 4,
    bars: int = 16,
    class_name: str | None = None,
) -> Figure:
    """The paper's Fig. 1 drawn from a real run of Opti-CAM on one image: the forward path left to right (image
    x, feature maps A^k, weights softmax(u*), map S(x; u*) at the layer's resolution (eq. 8), n(up(S)) at the
    image's, the masked image, the class score F per iteration (eq. 10)) and the gradient path back from F to u
    (eq. 9), drawn as an arrow under the panels.

    Args:
        classifier: the model; its target layer gives A^k.
        image: (3, H, W) or (1, 3, H, W) float in [0, 1].
        target: the class c (None: the predicted class).
        iterations: Adam iterations (the paper's 100 by default).
        channels: how many feature maps to show: those that add the most to S, the largest w_k * sum_ij A^k_ij
            (the channels with the largest weights alone are often a single bright cell).
        bars: how many of the largest weights to draw.
        class_name: the class's name in the score panel (default: the classifier's category name).
    Returns:
        a Figure whose axes are titled after ``PIPELINE_PANELS``, in that order.
    """
    from matplotlib.patches import ConnectionPatch

    from opticam_lib.methods.feature_pass import features
    from opticam_lib.methods.maps import combine
    from opticam_lib.methods.opti_cam import optimize

    if (
        not isinstance(image, Tensor)
        or image.dim() not in (3, 4)
        or (image.dim() == 4 and image.shape[0] != 1)
    ):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError(f"pipeline_figure draws one image: (3, H, W) or (1, 3, H, W), got {shape}")
    if channels < 1 or bars < 1:
        raise InputError(f"channels and bars must be at least 1, got {channels} and {bars}")
    x = (image if image.dim() == 4 else image[None]).to(classifier.device)
    result = optimize(
        classifier, x, None if target is None else [int(target)], iterations=iterations, progress=False
    )
    c = int(result.targets[0])
    acts, logits = features(classifier, x)
    acts = classifier.to_grid(acts) if acts.dim() == 3 else acts
    k_total = acts.shape[1]
    w = result.weights[0].detach().float().cpu()
    top = w.argsort(descending=True)
    share = w * acts[0].detach().float().cpu().clamp_min(0).sum(dim=(1, 2))  # what each channel adds to S
    shown = share.argsort(descending=True)[: min(channels, k_total)]
    with torch.no_grad():
        small = combine(result.weights, acts, "identity")[0, 0].float().cpu()  # eq. 8, h = identity
    mask = result.maps[0].float().cpu()
    name = class_name or (classifier.categories[c] if c < len(classifier.categories) else f"class {c}")
    history = result.history[0].detach().float().cpu()
    history = history[torch.isfinite(history)]

    fig = Figure(figsize=(16, 4.3), layout="constrained", dpi=GRID_DPI)
    axes = fig.subplots(1, 7, width_ratios=[1, 1, 1.25, 1, 1, 1, 1.45])
    img = to_numpy_image(x[0].cpu())
    axes[0].imshow(img)
    axes[0].set_title("image x", fontsize=10)
    axes[1].imshow(_montage(acts[0, shown]), cmap="viridis")  # NaN gaps are left blank (white)
    axes[1].set_title(f"feature maps A^k\n{len(shown)} of {k_total}, most in S", fontsize=10)
    nb = min(bars, k_total)
    axes[2].bar(range(nb), w[top[:nb]].numpy(), color="tab:blue")
    axes[2].axhline(1 / k_total, color="0.3", ls="--", lw=1, label="start: 1/K (u = 0.5)")
    axes[2].set_title(f"weights softmax(u)\nthe {nb} largest at u* (eq. 8)", fontsize=10)
    axes[2].set_xlabel("channel (by weight)", fontsize=9)
    axes[2].legend(fontsize=8, loc="upper right")
    axes[2].tick_params(labelsize=8)
    axes[2].xaxis.get_major_locator().set_params(integer=True)
    axes[3].imshow(small.numpy(), cmap=SALIENCY_CMAP)
    axes[3].set_title(f"map S(x; u) = Σ_k w_k A^k\n{small.shape[0]}×{small.shape[1]} (eq. 8)", fontsize=10)
    axes[4].imshow(mask[0].numpy(), cmap=SALIENCY_CMAP, vmin=0, vmax=1)
    axes[4].set_title(f"n(up(S))\nin [0, 1], {mask.shape[-2]}×{mask.shape[-1]}", fontsize=10)
    axes[5].imshow(to_numpy_image(x[0].cpu() * mask))
    axes[5].set_title("masked image\nx ⊙ n(up(S))", fontsize=10)
    axes[6].plot(torch.arange(1, history.numel() + 1), history, color="tab:orange", label="F: masked image")
    axes[6].axhline(float(logits[0, c]), color="0.3", ls=":", lw=1, label="g_c(f(x)): image")
    axes[6].set_title(f"class score F = g_c(f(masked))\nlogit of '{name}' (eq. 10)", fontsize=10)
    axes[6].set_xlabel("iteration", fontsize=9)
    axes[6].legend(fontsize=8, loc="lower right")
    axes[6].tick_params(labelsize=8)
    axes[6].grid(alpha=0.3)
    for ax in (axes[0], axes[1], axes[3], axes[4], axes[5]):
        ax.set_xticks([])
        ax.set_yticks([])
    for a, b in pairwise(axes):  # the forward path
        fig.add_artist(
            ConnectionPatch((1.02, 0.5), (-0.02, 0.5), "axes fraction", "axes fraction", axesA=a, axesB=b,
                            arrowstyle="-|>", color="0.25", lw=1.2, mutation_scale=12)
        )  # fmt: skip
    back = ConnectionPatch(
        (0.5, -0.22), (0.5, -0.22), "axes fraction", "axes fraction", axesA=axes[6], axesB=axes[2],
        arrowstyle="-|>", color="tab:blue", lw=2, mutation_scale=16, connectionstyle="arc3,rad=0.12",
    )  # fmt: skip
    fig.add_artist(back)
    fig.text(
        0.62, 0.015, "gradient ∂F/∂u by backpropagation through the fixed network → Adam step on u (eq. 9)",
        color="tab:blue", ha="center", va="bottom", fontsize=10,
    )  # fmt: skip
    fig.get_layout_engine().set(h_pad=0.3, wspace=0.06, rect=(0, 0.08, 1, 0.92))  # room for the arrows
    return fig
