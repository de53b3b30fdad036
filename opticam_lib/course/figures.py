"""Figures only the course's notebooks draw: panels, scaling and time bars, metric bars, the extremal
history, LIME's superpixel weights. Pure functions returning figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.plots import SALIENCY_CMAP, overlay, saliency_colorbar, to_numpy_image


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


def opticam_panel(
    image: Tensor,
    saliency: Tensor,
    history: Tensor,
    title: str = "",
    probabilities: tuple[float, float] | None = None,
) -> Figure:
    """Opti-CAM on one image: the image, its map overlaid, the masked image, and the objective per iteration.

    Args:
        image: (3, H, W) float in [0, 1].
        saliency: (1, H, W) float in [0, 1].
        history: (T,) objective per iteration (NaN after an early stop).
        probabilities: (p, o), class probability before and after masking, shown in the titles.
    """
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
    saliency_colorbar(fig, axes[1], shrink=0.8)
    h = history.detach().cpu().float()
    axes[3].plot(torch.arange(1, h.numel() + 1), h, marker=".", color="tab:orange")
    axes[3].set_xlabel("iteration", fontsize=11)
    axes[3].set_ylabel("objective F (eq. 10)", fontsize=11)
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
