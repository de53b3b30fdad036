"""Studies of the evaluation metrics themselves (notebook 05): Fake-CAM against AD/AI, the paper's tables side by
side with ours, insertion/deletion for several methods, and the selectivity study of appendix F.1 (Fig. A4).

The metrics have one home each (``opticam_lib.metrics``: eq. 13-15, insertion/deletion); this module only runs them
over several methods and draws the results. Every plotting function returns a matplotlib Figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_images, validate_maps, validate_targets
from opticam_lib.methods.registry import PROGRESS_METHODS, display_name
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.metrics.curves import area_under_curve, deletion_curve, insertion_curve
from opticam_lib.metrics.evaluation import Evaluation
from opticam_lib.metrics.more_metrics import (
    AOPC_PATCH_SIZE,
    AOPC_REGIONS,
    MS_SAMPLES,
    aopc,
    table4_row,
    table4_scores,
)
from opticam_lib.models.classifier import Classifier
from opticam_lib.paper.tables import paper_table

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

#: columns printed with 2 decimals, as the paper prints them (Table 4's MS, Table 1's T)
TWO_DECIMALS: tuple[str, ...] = ("MS", "T")
#: the paper's exponents in appendix F.1 (Fig. A4)
PAPER_ALPHAS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1, 1.5, 2, 3, 5, 10)


# --------------------------------------------------------------------------------------------------------------
# Our numbers next to the paper's


def _row(r: Evaluation | Mapping) -> Mapping:
    return r.row() if isinstance(r, Evaluation) else r


def with_paper(
    rows: Sequence[Evaluation | Mapping],
    table: str = "1",
    model: str = "resnet50",
    columns: Sequence[str] = ("AD", "AG", "AI"),
    ours: str = "ours",
) -> str:
    """Our rows and the paper's numbers for the same methods, side by side, as text.

    Args:
        rows: ``Evaluation`` objects or dicts with ``"method"`` (the paper's name, e.g. ``"Grad-CAM"``) and
            one value per column; a ``"note"`` key (e.g. ``"2 images"``) is printed at the end of the line.
        table, model: which of the paper's tables to print beside ours (``opticam_lib.paper.tables.paper_table``).
        columns: the columns to show, e.g. ``("AD", "AG", "AI")`` for Table 1, ``("I", "D")`` for Table 3.
    Returns:
        one line per row: method, our columns, the paper's columns (``-`` where the paper has no number, or where
        ours is missing or NaN). ``MS`` and ``T`` get 2 decimals (the paper's), every other column 1.
    """
    if not rows:
        raise InputError("with_paper needs at least one row")
    paper = paper_table(table, model)
    w = 7

    def cell(v: object, c: str) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return f"{'-':>{w}}"
        return f"{float(v):>{w}.{2 if c in TWO_DECIMALS else 1}f}"  # type: ignore[arg-type]

    head = f"{'METHOD':<14}" + "".join(f"{c:>{w}}" for c in columns)
    head += "   |" + "".join(f"{c:>{w}}" for c in columns)
    top = f"{'':<14}{ours:>{w * len(columns)}}   |{f'paper, Table {table}, {model}':>{w * len(columns)}}"
    lines = [top, head]
    for r in rows:
        d = _row(r)
        name = str(d["method"])
        mine = "".join(cell(d.get(c), c) for c in columns)
        theirs = "".join(cell(paper.get(name, {}).get(c), c) for c in columns)
        note = f"   {d['note']}" if d.get("note") else ""
        lines.append(f"{name:<14}{mine}   |{theirs}{note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# p against o: what AD, AG and AI each look at


def plot_p_vs_o(evaluations: Sequence[Evaluation], cols: int = 4) -> Figure:
    """One panel per method: each image is a dot at (p, o), the class probability before and after masking.

    Above the diagonal the image counts for AI (eq. 14) and its height above it, over 1 - p, for AG (eq. 15);
    below it, its depth under it, over p, counts for AD (eq. 13). The panel title gives the three averages.
    """
    if not evaluations:
        raise InputError("plot_p_vs_o needs at least one Evaluation")
    cols = min(cols, len(evaluations))
    rows = -(-len(evaluations) // cols)
    fig = Figure(figsize=(2.9 * cols, 3.0 * rows), layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes[len(evaluations) :]:
        ax.set_axis_off()
    for ax, e in zip(axes, evaluations):
        p, o = e.p.double().numpy(), e.o.double().numpy()
        ax.fill_between([0, 1], [0, 1], [1, 1], color="tab:green", alpha=0.08)
        ax.fill_between([0, 1], [0, 0], [0, 1], color="tab:red", alpha=0.08)
        ax.plot([0, 1], [0, 1], color="grey", lw=1)
        up = o > p
        ax.scatter(p[up], o[up], s=22, color="tab:green", label="o > p (AI)", zorder=3)
        ax.scatter(p[~up], o[~up], s=22, color="tab:red", label="o ≤ p", zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"{e.method}\nAD {e.AD:.1f}  AG {e.AG:.1f}  AI {e.AI:.0f}", fontsize=10)
        ax.set_xlabel("p (image)", fontsize=9)
        ax.set_ylabel("o (masked image)", fontsize=9)
        ax.tick_params(labelsize=8)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Insertion and deletion for several methods (section 5.3.2, Table 3)


@dataclass
class CurveStudy:
    """Insertion and deletion curves of several methods on the same images.

    Attributes:
        insertion, deletion: {method: (N, S+1) class probability as pixels are inserted / deleted}.
        targets: (N,) the class followed by the curves.
        steps: S, the number of steps (the paper: 224 steps of 224 pixels at 224 x 224).
    """

    insertion: dict[str, Tensor]
    deletion: dict[str, Tensor]
    targets: Tensor
    steps: int

    def auc(self) -> dict[str, Tensor]:
        """{method: (N, 2)} the area under the insertion (column 0) and deletion (column 1) curve of each image."""
        return {
            m: torch.stack([area_under_curve(self.insertion[m]), area_under_curve(self.deletion[m])], dim=1)
            for m in self.insertion
        }

    def rows(self) -> list[dict[str, float | str]]:
        """One row per method, ``{"method", "I", "D"}``: mean areas in percent, as in the paper's Table 3."""
        return [
            {"method": m, "I": float(a[:, 0].mean() * 100), "D": float(a[:, 1].mean() * 100)}
            for m, a in self.auc().items()
        ]


def insertion_deletion(
    classifier: Classifier,
    images: Tensor,
    maps_by_method: Mapping[str, Tensor],
    targets: int | Sequence[int] | Tensor | None = None,
    steps: int | None = None,
    progress: bool = False,
    substrate: str = "rise",
) -> CurveStudy:
    """Insertion and deletion curves (``metrics.insertion_curve`` / ``deletion_curve``) of every method's maps.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps_by_method: {method name: (N, 1, H, W) in [0, 1]}.
        targets: the class to follow; None: the predicted class, as in the paper (section 5.3.2).
        steps: number of steps (None: H, i.e. 224 pixels a step at 224 x 224, as in the paper).
        substrate: ``"rise"`` (RISE's mean colour and blur, the default) or ``"black"`` (``metrics.curves``).
    Cost: 2 x (steps + 1) forward passes per image and method.
    """
    images = validate_images(images)
    if not maps_by_method:
        raise InputError("maps_by_method is empty: give at least one {method: maps}")
    t = validate_targets(targets, classifier, images.to(classifier.device))
    ins, dele = {}, {}
    for name, maps in maps_by_method.items():
        validate_maps(maps, images, f"maps of {name!r}")
        ins[name] = insertion_curve(
            classifier, images, maps, t, steps=steps, progress=progress, substrate=substrate
        )
        dele[name] = deletion_curve(
            classifier, images, maps, t, steps=steps, progress=progress, substrate=substrate
        )
    s = next(iter(ins.values())).shape[1] - 1
    return CurveStudy(insertion=ins, deletion=dele, targets=t.cpu(), steps=s)


def plot_curves(study: CurveStudy, index: int = 0, title: str = "") -> Figure:
    """Insertion (left) and deletion (right) curves of image ``index``, one line per method, AUC in the legend."""
    n = next(iter(study.insertion.values())).shape[0]
    if not 0 <= index < n:
        raise InputError(f"index must be in 0..{n - 1}, got {index}")
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    auc = study.auc()
    for ax, kind, curves, col, arrow in (
        (axes[0], "insertion", study.insertion, 0, "↑"),
        (axes[1], "deletion", study.deletion, 1, "↓"),
    ):
        for name, c in curves.items():
            y = c[index].numpy()
            x = np.linspace(0, 1, y.shape[0])
            (line,) = ax.plot(x, y, lw=2, label=f"{name} (AUC {float(auc[name][index, col]) * 100:.1f})")
            ax.fill_between(x, 0, y, color=line.get_color(), alpha=0.08)
        ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}")
        ax.set_ylabel("class probability")
        ax.set_title(f"{kind.capitalize()} {arrow}")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Selectivity (appendix F.1, Fig. A4)


def selectivity(
    classifier: Classifier,
    images: Tensor,
    maps_by_method: Mapping[str, Tensor],
    targets: int | Sequence[int] | Tensor | None = None,
    alphas: Sequence[float] = (0.1, 0.5, 1, 2, 5),
    batch_size: int = 32,
) -> pd.DataFrame:
    """AD, AG and AI (eq. 13-15) of every method's maps raised element-wise to each exponent alpha (Fig. A4).

    alpha < 1 makes a map more uniform (more of the image shows through), alpha > 1 more selective; the order
    of the pixels is unchanged. p is computed once; each (method, alpha) costs one forward pass per image.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        maps_by_method: {method name: (N, 1, H, W) float in [0, 1]}.
        targets: class c of each image (the paper: the ground truth); None: the predicted class.
        alphas: positive exponents (the paper's: ``PAPER_ALPHAS``).
    Returns:
        a pandas DataFrame in long form, one row per (method, alpha), columns ``method, alpha, AD, AG, AI``.
    """
    import pandas as pd

    images = validate_images(images).to(classifier.device)
    if not maps_by_method:
        raise InputError("maps_by_method is empty: give at least one {method: maps}")
    alphas = [float(a) for a in alphas]
    if not alphas or any(not np.isfinite(a) or a <= 0 for a in alphas):
        raise InputError(f"alphas must be positive numbers, got {alphas}")
    t = validate_targets(targets, classifier, images)
    p = class_probability(classifier, images, t, batch_size)
    records = []
    for name, maps in maps_by_method.items():
        maps = validate_maps(maps, images, f"maps of {name!r}").to(classifier.device)
        for a in alphas:
            o = class_probability(classifier, images * maps.pow(a), t, batch_size)
            records.append({"method": name, "alpha": a, **classification_metrics(p, o)})
    return pd.DataFrame.from_records(records, columns=["method", "alpha", "AD", "AG", "AI"])


def plot_selectivity(table: pd.DataFrame, metrics: Sequence[str] = ("AD", "AG", "AI")) -> Figure:
    """Fig. A4: one panel per metric, the metric against alpha (log scale), one line per method (seaborn)."""
    import seaborn as sns

    missing = {"method", "alpha", *metrics} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}: pass the output of selectivity()")
    arrows = {"AD": "↓", "AG": "↑", "AI": "↑"}
    fig = Figure(figsize=(4.0 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for i, (ax, m) in enumerate(zip(axes, metrics)):
        sns.lineplot(
            data=table, x="alpha", y=m, hue="method", marker="o", ax=ax, legend=(i == len(metrics) - 1)
        )
        ax.set_xscale("log")
        ticks = sorted(table["alpha"].unique())
        ax.set_xticks(ticks, [f"{a:g}" for a in ticks])
        ax.minorticks_off()
        ax.axvline(1.0, color="grey", ls="--", lw=1)
        ax.set_xlabel("exponent α (map ** α)")
        ax.set_ylabel(f"{m} (%)")
        ax.set_title(f"{m} {arrows.get(m, '')}")
        ax.grid(alpha=0.3)
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), title="method", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Table 4: AOPC, Max-Sensitivity and ADCC for several methods (section 5.3.3)


@dataclass
class Table4Study:
    """Table 4's metrics for several methods (``table4_study``).

    Attributes:
        rows: one dict per method, ``{"method": paper name, "AOPC": %, "MS": ratio, "ADCC": %}``, NaN where a
            metric was not run for that method (printed ``-`` by ``with_paper``); which images each metric used
            is in ``images`` and ``subset`` (the rows carry no note: say it beside the table).
        scores: per method, the per-image tensors of ``metrics.more_metrics.table4_scores`` (AOPC on every image;
            MS, ADCC, coherency, complexity, drop on the subset).
        images: number of images AOPC used; subset: the indices MS and ADCC used; samples: MS's noise draws.
    """

    rows: list[dict]
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    images: int = 0
    subset: list[int] = field(default_factory=list)
    samples: int = MS_SAMPLES


def table4_study(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    maps: Mapping[str, Tensor],
    *,
    explain: Sequence[str] = (),
    subset: Sequence[int] | None = None,
    samples: int = MS_SAMPLES,
    patch_size: int = AOPC_PATCH_SIZE,
    regions: int = AOPC_REGIONS,
    options: Mapping[str, Mapping] | None = None,
) -> Table4Study:
    """AOPC for every method from its maps on all images; MS and ADCC, which explain new images (noisy ones, masked
    ones), only for the methods in ``explain`` and on the images of ``subset`` (both cost new maps).

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: (N,) classes.
        maps: {method key (``"gradcam"``): its maps (N, 1, H, W) in [0, 1] of ``images``}.
        explain: method keys (a subset of ``maps``) for which MS and ADCC are computed.
        subset: image indices for MS and ADCC (default: all).
        samples: MS's noise draws per image (the paper: 10).
        patch_size, regions: AOPC's patches (the paper: 14 pixels, 10 regions).
        options: per method key, options for its new maps (e.g. ``{"opticam": {"iterations": 100}}``).
    """
    images = validate_images(images)
    targets = validate_targets(targets, classifier, images.to(classifier.device)).cpu()
    unknown = [m for m in explain if m not in maps]
    if unknown:
        raise InputError(f"explain lists {unknown} without maps; give their maps too")
    idx = list(range(images.shape[0])) if subset is None else [int(i) for i in subset]
    options = options or {}
    rows, scores = [], {}
    for method, m in maps.items():
        m = validate_maps(m, images)
        per = {"AOPC": aopc(classifier, images, m, targets, patch_size=patch_size, regions=regions)}
        if method in explain:
            opts = {"progress": False} if method in PROGRESS_METHODS else {}
            opts.update(options.get(method, {}))
            per.update(
                table4_scores(
                    classifier,
                    images[idx],
                    method,
                    targets[idx],
                    maps=m[idx],
                    metrics=("MS", "ADCC"),
                    samples=samples,
                    **opts,
                )
            )
        row = {"AOPC": float("nan"), "MS": float("nan"), "ADCC": float("nan"), **table4_row(per)}
        rows.append({"method": display_name(method), **row})
        scores[display_name(method)] = per
    return Table4Study(rows, scores, images.shape[0], idx, samples)
