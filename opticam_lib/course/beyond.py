"""What the paper leaves open, measured (notebook 11): time-to-quality curves of Opti-CAM's optimiser and
schedule, several classes of one image in one batch, per-image early stopping, and the exercise's checker.

Every study here calls ``opti_cam.optimize`` (Adam or SGD, constant / cosine / step learning rate, per-image
early stop); the quality is the paper's average gain AG (eq. 15), with the average drop AD beside it, measured on
the maps at regular checkpoints of the optimisation.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import Targets, prepare, validate_positive_int
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import DEFAULT_LR, OptiCAMResult, initial_u, optimize, saliency_map
from opticam_lib.metrics.classification import class_probability, classification_metrics, gains
from opticam_lib.metrics.evaluation import Evaluation, score_maps, warm_up
from opticam_lib.models.classifier import Classifier

if TYPE_CHECKING:  # annotations only: ipywidgets is imported where it is used
    import ipywidgets


@dataclass
class QualityCurve:
    """AG and AD of one optimiser setting at checkpoints of the optimisation.

    Attributes:
        name: the setting's label.
        options: the ``optimize`` options of this setting.
        iterations: checkpoints (0 = the starting map, uniform weights), ascending.
        seconds: optimisation time up to each checkpoint (features included; the checkpoints' own evaluation
            excluded), 0 at iteration 0.
        AG, AD, AI: eq. (15), (13) and (14) in percent at each checkpoint, over all images.
        result: the final ``OptiCAMResult``.
        evaluations: {iteration: Evaluation} at the checkpoints ``time_to_quality`` was asked to ``keep``: the
            maps of that checkpoint with AD/AG/AI and T from the optimisation time up to it (a Table 1 row).
    """

    name: str
    options: dict
    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    AG: list[float] = field(default_factory=list)
    AD: list[float] = field(default_factory=list)
    AI: list[float] = field(default_factory=list)
    result: OptiCAMResult | None = None
    evaluations: dict[int, Evaluation] = field(default_factory=dict)

    def first_reaching(self, level: float) -> tuple[int, float] | None:
        """(iteration, seconds) of the first checkpoint with AG >= ``level``; None if no checkpoint reaches it."""
        i = first_reaching(self.iterations, self.AG, level)
        return None if i is None else (i, self.seconds[self.iterations.index(i)])

    def reaching_quality(self, ag: float, ad: float, margin: float = 1.0) -> tuple[int, float] | None:
        """(iteration, seconds) of the first checkpoint after the start with AG >= ``ag - margin`` and
        AD <= ``ad + margin`` (percent): the time-to-quality rule of ``benchmarks/bench_time_to_quality.py``,
        with (ag, ad) a reference's final values. None if no checkpoint gets there."""
        for it, sec, g, d in zip(self.iterations, self.seconds, self.AG, self.AD):
            if it > 0 and g >= ag - margin and d <= ad + margin:
                return it, sec
        return None

    def at(self, iteration: int) -> dict[str, float] | None:
        """AG, AD, AI and seconds at checkpoint ``iteration``; None if it is not a checkpoint."""
        if iteration not in self.iterations:
            return None
        i = self.iterations.index(iteration)
        return {"AG": self.AG[i], "AD": self.AD[i], "AI": self.AI[i], "seconds": self.seconds[i]}


def first_reaching(iterations: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """The first entry of ``iterations`` whose value is at least ``level`` (curves need not be monotone);
    None when none is. ``iterations`` and ``values`` have the same length."""
    if len(iterations) != len(values):
        raise InputError(f"{len(iterations)} iterations but {len(values)} values")
    for it, v in zip(iterations, values):
        if v >= level:
            return int(it)
    return None


def time_to_quality(
    classifier: Classifier,
    images: Tensor,
    targets: Targets,
    settings: Mapping[str, Mapping],
    *,
    iterations: int = 30,
    every: int = 5,
    keep: Sequence[int] = (),
) -> dict[str, QualityCurve]:
    """Run Opti-CAM once per setting and measure AG/AD every ``every`` iterations.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image (None: the predicted class).
        settings: {label: options for ``optimize``} (e.g. ``{"Adam 0.1": {"lr": 0.1}, "SGD": {"optimizer":
            "sgd", "lr": 4.0}}``). Early stopping is off (``tol=None``) unless a setting sets ``tol``.
        iterations: iterations per setting; every: checkpoint spacing.
        keep: checkpoints (multiples of ``every``, or ``iterations``) whose maps are kept as an ``Evaluation``
            in ``curve.evaluations``: the same maps a run of that many iterations gives, so one run serves both
            a Table 1 row and the curve beyond it (notebook 05), with the same ``tol`` (time_to_quality's default
            is None, ``optimize``'s 1e-10: set it in the setting to match). Its T is the optimisation time up to
            that checkpoint (features included, the checkpoints' scoring left out; the model warmed up first, as
            ``evaluate`` does) per batch of 8 images, for all N images in one batch.
    Returns:
        {label: QualityCurve}, with a checkpoint at iteration 0 (the setting's start: uniform weights by
        default, on its own layer, normalisation and activation), every ``every`` iterations and at the end.
    """
    iterations = validate_positive_int(iterations, "iterations")
    every = validate_positive_int(every, "every")
    if isinstance(keep, str | bytes) or not isinstance(keep, Sequence | set | frozenset):
        raise InputError(f"keep must be a list of checkpoint iterations (e.g. keep=[100]), got {keep!r}")
    keep = sorted({validate_positive_int(k, "keep") for k in keep})
    off = [k for k in keep if k > iterations or (k % every and k != iterations)]
    if off:
        raise InputError(
            f"keep={off} are not checkpoints: give multiples of every={every} up to iterations={iterations}, "
            "or iterations itself"
        )
    if not settings:
        raise InputError("give at least one setting")
    images, targets = prepare(classifier, images, targets)
    # as evaluate does: the first setting's clock must not pay a first pass's one-off costs
    warm_up(classifier, images[:8])
    p = class_probability(classifier, images, targets)

    def scores(maps: Tensor) -> dict[str, float]:
        return classification_metrics(p, class_probability(classifier, images * maps, targets))

    acts_of: dict[str | None, Tensor] = {}

    def start_scores(options: Mapping[str, Any]) -> dict[str, float]:
        """Iteration 0: the setting's own start (its layer, init, normalisation, activation), not optimised."""
        layer = options.get("layer")
        if layer not in acts_of:
            acts_of[layer] = features(classifier, images, layer)[0]
        acts = acts_of[layer]
        u0 = initial_u(options.get("init", "constant"), *acts.shape[:2], options.get("seed"), acts.device)
        upsampling = options.get("upsampling", "auto")
        start_map = saliency_map(
            u0,
            acts,
            tuple(images.shape[-2:]),
            options.get("normalization", "range"),
            options.get("activation", "identity"),
            upsampling if upsampling != "auto" else "interpolate",
        )
        return scores(start_map)

    curves = {}
    for name, options in settings.items():
        options = {"tol": None, "progress": False, **options}
        for key in ("iterations", "callback", "callback_every"):
            if key in options:
                raise InputError(f"setting {name!r}: {key!r} is set by time_to_quality")
        start = start_scores(options)
        curve = QualityCurve(name, dict(options), [0], [0.0], [start["AG"]], [start["AD"]], [start["AI"]])
        clock = {"start": 0.0, "eval": 0.0}  # the checkpoints' own evaluation time is left out

        def kept(maps: Tensor, seconds: float, step: int, options=options) -> Evaluation:
            return score_maps(
                classifier, "Opti-CAM", images, targets, maps, seconds, {**options, "iterations": step}, p=p
            )

        def checkpoint(step: int, partial: OptiCAMResult, curve=curve, clock=clock, kept=kept) -> None:
            entered = time.perf_counter()
            seconds = entered - clock["start"] - clock["eval"]
            if step in keep:
                row = curve.evaluations[step] = kept(partial.maps, seconds, step)
                s = {"AG": row.AG, "AD": row.AD, "AI": row.AI}
            else:
                s = scores(partial.maps)
            curve.iterations.append(step)
            curve.seconds.append(seconds)
            curve.AG.append(s["AG"])
            curve.AD.append(s["AD"])
            curve.AI.append(s["AI"])
            clock["eval"] += time.perf_counter() - entered

        clock["start"] = time.perf_counter()
        curve.result = optimize(
            classifier,
            images,
            targets,
            iterations=iterations,
            callback=checkpoint,
            callback_every=every,
            **options,
        )
        for k in keep:  # every image stopped early (tol) before k: its maps are the final ones
            if k not in curve.evaluations:
                curve.evaluations[k] = kept(curve.result.maps, curve.seconds[-1], k)
        curves[name] = curve
    return curves


def plot_time_to_quality(
    curves: Mapping[str, QualityCurve], reference: float | None = None, reference_label: str = "reference"
) -> Figure:
    """Two panels: AG against iterations and against seconds, one line per setting; ``reference`` a dashed AG
    level."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for name, c in curves.items():
        axes[0].plot(c.iterations, c.AG, marker="o", ms=3, label=name)
        axes[1].plot(c.seconds, c.AG, marker="o", ms=3, label=name)
    for ax, xlabel in zip(axes, ("iterations", "seconds of optimisation (this machine)")):
        if reference is not None:
            ax.axhline(reference, color="grey", ls="--", lw=1, label=reference_label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("AG (%) ↑")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


@dataclass
class ClassMaps:
    """Opti-CAM for the top-k classes of one image, one row per class.

    Attributes:
        classes: (k,) class ids, most probable first; names: their names.
        p: (k,) probability of each class on the image; o: on the image masked by that class's map.
        maps: (k, 1, H, W) in [0, 1]; result: the ``OptiCAMResult`` of the batch.
    """

    classes: Tensor
    names: list[str]
    p: Tensor
    o: Tensor
    maps: Tensor
    result: OptiCAMResult


def explain_top_classes(classifier: Classifier, image: Tensor, k: int = 3, **options: Any) -> ClassMaps:
    """Opti-CAM maps of one image (3, H, W) in [0, 1] for its ``k`` most probable classes, in one batch: the
    image is repeated k times with one target each (``optimize`` takes one target per image). ``options`` go to
    ``optimize``."""
    k = validate_positive_int(k, "k")
    if not isinstance(image, Tensor) or image.dim() != 3:
        raise InputError(f"image must be one (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    if k > classifier.num_classes:
        raise InputError(f"k={k} but the classifier has {classifier.num_classes} classes")
    x = image[None].to(classifier.device)
    top = classifier.top(x, k)[0]
    classes = torch.tensor([c for c, _, _ in top], device=classifier.device)
    batch = x.expand(k, -1, -1, -1)
    options.setdefault("progress", False)
    result = optimize(classifier, batch, classes, **options)
    p = class_probability(classifier, batch, classes)
    o = class_probability(classifier, batch * result.maps, classes)
    return ClassMaps(classes.cpu(), [n for _, n, _ in top], p.cpu(), o.cpu(), result.maps.cpu(), result)


def map_overlap(a: Tensor, b: Tensor) -> float:
    """Soft intersection over union of two maps in [0, 1] of the same shape: sum(min) / sum(max), in [0, 1]
    (1: identical maps; 0: disjoint). Two all-zero maps give 1."""
    if a.shape != b.shape:
        raise InputError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    hi = torch.maximum(a, b).sum()
    return 1.0 if float(hi) == 0 else float(torch.minimum(a, b).sum() / hi)


@dataclass
class EarlyStop:
    """One batch optimised twice: for every iteration, and with per-image early stopping.

    Attributes:
        used: (N,) iterations each image ran with early stopping; budget: the iteration budget.
        seconds_full, seconds_early: wall-clock time of the two runs, features included (same batch, same
            machine; with ``full=`` the first is the curve's run, timed when it ran, its checkpoints' scoring left
            out but their maps' construction included).
        forwards_full, forwards_early: image-iterations (forward + backward passes) of each run.
        AG_full, AG_early, AD_full, AD_early: eq. (15) and (13) in percent.
        full, early: the two ``OptiCAMResult``.
    """

    used: Tensor
    budget: int
    seconds_full: float
    seconds_early: float
    forwards_full: int
    forwards_early: int
    AG_full: float
    AG_early: float
    AD_full: float
    AD_early: float
    full: OptiCAMResult
    early: OptiCAMResult


def early_stop_study(
    classifier: Classifier,
    images: Tensor,
    targets: Targets,
    *,
    tol: float,
    patience: int = 3,
    iterations: int = 30,
    full: QualityCurve | None = None,
    **options: Any,
) -> EarlyStop:
    """Optimise ``images`` for ``iterations`` with ``tol=None``, then with early stopping (an image stops after
    ``patience`` iterations in a row whose objective changed by less than ``tol``), and compare.

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: one class per image (None: the predicted class).
        full: a curve of ``time_to_quality`` that already ran these images and targets for ``iterations``
            without early stopping and with these ``options``: its run is the comparison (its seconds leave
            the checkpoints' scoring out), instead of a second identical optimisation. An ``InputError`` when it
            ran something else (other options, targets or iterations, or maps that do not score as the curve
            says on these images).
        options: further options of ``optimize`` for both runs (``lr``, ``optimizer``...).
    """
    if not (isinstance(tol, int | float) and tol > 0):
        raise InputError(f"tol must be a positive number, got {tol!r}")
    iterations = validate_positive_int(iterations, "iterations")
    images, targets = prepare(classifier, images, targets)
    options.setdefault("progress", False)
    p = class_probability(classifier, images, targets)
    if full is None:
        run = optimize(classifier, images, targets, iterations=iterations, tol=None, **options)
        scores = classification_metrics(p, class_probability(classifier, images * run.maps, targets))
        seconds_full = run.seconds
    else:
        run, o = _same_run(full, "full", classifier, images, targets, p, iterations, options)
        scores = classification_metrics(p, o)
        seconds_full = full.seconds[-1]
    early = optimize(
        classifier, images, targets, iterations=iterations, tol=tol, patience=patience, **options
    )
    s_early = classification_metrics(p, class_probability(classifier, images * early.maps, targets))
    return EarlyStop(
        used=early.iterations,
        budget=iterations,
        seconds_full=seconds_full,
        seconds_early=early.seconds,
        forwards_full=int(run.iterations.sum()),
        forwards_early=int(early.iterations.sum()),
        AG_full=scores["AG"],
        AG_early=s_early["AG"],
        AD_full=scores["AD"],
        AD_early=s_early["AD"],
        full=run,
        early=early,
    )


# what a run's options say about its maps: optimize's own bookkeeping and its stopping rule are compared apart
_NOT_COMPARED = ("progress", "tol", "patience", "callback", "callback_every", "iterations")


def _effective_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``optimize``'s options as it runs them: its defaults filled in, ``lr=None`` resolved to the optimiser's
    default learning rate, sequences as tuples; the keys of ``_NOT_COMPARED`` left out."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(optimize).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    merged = {**defaults, **options}
    if merged.get("lr") is None:
        merged["lr"] = DEFAULT_LR.get(str(merged.get("optimizer")).lower())
    return {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items() if k not in _NOT_COMPARED}


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and torch.equal(a.cpu(), b.cpu())
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def _same_run(
    curve: QualityCurve,
    name: str,
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    p: Tensor,
    iterations: int,
    options: Mapping[str, Any],
) -> tuple[OptiCAMResult, Tensor]:
    """``curve``'s run and o (N,), the class probabilities on ``images`` masked by its maps, after checking that it is the run these arguments
    describe: the same targets, ``iterations``, no early stop, the same options (defaults filled in), and maps of
    these images' size that score on these images as the curve recorded. An ``InputError`` naming the first
    difference otherwise (``name``: the argument that holds the curve)."""
    if not isinstance(curve, QualityCurve) or curve.result is None or not curve.iterations:
        raise InputError(f"{name} must be a curve returned by time_to_quality, got {type(curve).__name__}")
    run = curve.result
    if run.targets.shape != targets.shape or not torch.equal(run.targets.cpu(), targets.cpu()):
        raise InputError(
            f"{name} ran other images or classes: targets {run.targets.tolist()}, here {targets.tolist()}"
        )
    if curve.options.get("tol") is not None:
        raise InputError(
            f"{name} stopped early (tol={curve.options['tol']!r}); the comparison needs tol=None"
        )
    if curve.iterations[-1] != iterations or int(run.iterations.max()) != iterations:
        raise InputError(f"{name} ran {curve.iterations[-1]} iterations, here iterations={iterations}")
    ran, asked = _effective_options(curve.options), _effective_options(options)
    for key in sorted(set(ran) | set(asked)):
        if not _same_value(ran.get(key), asked.get(key)):
            raise InputError(f"{name} ran with {key}={ran.get(key)!r}, here {key}={asked.get(key)!r}")
    want = (len(images), 1, *images.shape[-2:])
    if tuple(run.maps.shape) != want:
        raise InputError(f"{name} ran other images: maps {tuple(run.maps.shape)}, these images need {want}")
    maps = run.maps.to(images.device)
    o = class_probability(classifier, images * maps, targets)
    scores = classification_metrics(p, o)
    if abs(scores["AG"] - curve.AG[-1]) > 1e-3 or abs(scores["AD"] - curve.AD[-1]) > 1e-3:
        raise InputError(
            f"{name} ran other images or another classifier: its maps score AG {scores['AG']:.4f} here, "
            f"{curve.AG[-1]:.4f} in the curve"
        )
    return run, o


@dataclass
class OneAtATime:
    """The same Opti-CAM optimisation of each image, in one batch and alone (a batch of one).

    Attributes:
        names: the images' names; AG_batch, AG_alone: (N,) each image's gain (the terms of eq. 15) in percent.
        change: (N,) the largest change of a pixel of the map, in [0, 1]; overlap: (N,) ``map_overlap`` of the
            two maps, in [0, 1] (1: identical).
        seconds: the time of the N runs alone.
    """

    names: list[str]
    AG_batch: Tensor
    AG_alone: Tensor
    change: Tensor
    overlap: Tensor
    seconds: float

    def rows(self) -> list[dict]:
        """One row per image, for ``format_rows``."""
        return [
            {
                "image": name,
                "AG in the batch": float(b),
                "AG alone": float(a),
                "largest pixel change": float(c),
                "overlap": float(o),
            }
            for name, b, a, c, o in zip(self.names, self.AG_batch, self.AG_alone, self.change, self.overlap)
        ]


def one_at_a_time(
    classifier: Classifier,
    images: Tensor,
    targets: Targets,
    batched: QualityCurve,
    names: Sequence[str] | None = None,
) -> OneAtATime:
    """Run ``batched``'s optimisation (a curve of ``time_to_quality`` on these images and targets, no early stop)
    again on each image alone, and compare the maps and gains with the batch's.

    Nothing but the batch size differs, so any difference comes from floating-point round-off: a batch of one
    runs other kernels, whose sums round in another order. A tensor ``init`` gives each image its own row; a
    random ``init`` starts every image, alone or in the batch, from the same draw.

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: one class per image (None: the predicted class).
        batched: the curve of the batch's run (``time_to_quality(...)[label]``), checked as ``early_stop_study``
            checks ``full``.
        names: N names for the report (default: "image 0"...).
    """
    images, targets = prepare(classifier, images, targets)
    n = len(images)
    if names is None:
        names = [f"image {i}" for i in range(n)]
    elif isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise InputError(f"names must be a list of {n} names, got {names!r}")
    names = [str(v) for v in names]
    if len(names) != n:
        raise InputError(f"{len(names)} names for {n} images")
    if not isinstance(batched, QualityCurve):
        raise InputError(f"batched must be a curve returned by time_to_quality, got {type(batched).__name__}")
    options = {k: v for k, v in batched.options.items() if k not in ("tol", "progress")}
    p = class_probability(classifier, images, targets)
    iterations = batched.iterations[-1] if batched.iterations else 0
    batch, o_batch = _same_run(batched, "batched", classifier, images, targets, p, iterations, options)
    init = options.pop("init", "constant")
    start = time.perf_counter()
    alone = []
    for i in range(n):
        own = init[i : i + 1] if isinstance(init, Tensor) and init.dim() == 2 else init
        result = optimize(
            classifier, images[i : i + 1], targets[i : i + 1], iterations=iterations, tol=None, progress=False,
            init=own, **options,
        )  # fmt: skip
        alone.append(result.maps)
    seconds = time.perf_counter() - start
    alone = torch.cat(alone)
    batch_maps = batch.maps.to(alone.device)
    ag_batch = gains(p, o_batch) * 100
    ag_alone = gains(p, class_probability(classifier, images * alone, targets)) * 100
    diff = (batch_maps - alone).abs().flatten(1).amax(dim=1).cpu()
    overlap = torch.tensor([map_overlap(a, b) for a, b in zip(batch_maps.cpu(), alone.cpu())])
    return OneAtATime(names, ag_batch.float(), ag_alone.float(), diff, overlap, seconds)


def curves_table(curves: Mapping[str, QualityCurve], level: float) -> list[dict]:
    """One row per setting: final AG and AD, its time, and the first checkpoint reaching AG ``level``."""
    rows = []
    for name, c in curves.items():
        hit = c.first_reaching(level)
        rows.append(
            {
                "setting": name,
                "AG": c.AG[-1],
                "AD": c.AD[-1],
                "seconds": c.seconds[-1],
                "iterations to level": None if hit is None else hit[0],
                "seconds to level": None if hit is None else hit[1],
            }
        )
    return rows


def quality_table(
    curves: Mapping[str, QualityCurve], reference: QualityCurve, at: Sequence[int] = (10, 20)
) -> list[dict]:
    """One row per setting: passes and seconds until the reference's final quality (``reaching_quality``), and
    AG/AD after each of the ``at`` passes (None where that is not a checkpoint). For ``format_rows``."""
    ag, ad = reference.AG[-1], reference.AD[-1]
    rows = []
    for name, c in curves.items():
        hit = c.reaching_quality(ag, ad)
        row: dict = {"setting": name, "passes to ref.": None, "seconds to ref.": None}
        if hit is not None:
            row["passes to ref."], row["seconds to ref."] = hit
        for n in at:
            q = c.at(n)
            row[f"AG@{n}"] = None if q is None else q["AG"]
            row[f"AD@{n}"] = None if q is None else q["AD"]
        row["AG end"], row["AD end"] = c.AG[-1], c.AD[-1]
        rows.append(row)
    return rows


def format_rows(rows: Sequence[Mapping], digits: int = 1) -> str:
    """A plain-text table of ``rows`` (dicts with the same keys); None shows as ``—``."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v) -> str:
        if v is None:
            return "—"
        if isinstance(v, float | np.floating):
            return f"{v:.{digits}f}"
        return str(v)

    table = [[str(k) for k in keys]] + [[cell(r[k]) for k in keys] for r in rows]
    widths = [max(len(row[j]) for row in table) for j in range(len(keys))]
    lines = [
        "  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def image_from_upload(
    value: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None, size: int = 224
) -> tuple[Tensor, str]:
    """The first file of an ipywidgets ``FileUpload.value`` as ((3, size, size) float in [0, 1], file name).

    ``value`` is what ipywidgets 8 gives: a sequence of dicts with ``"name"`` and ``"content"`` (bytes or
    memoryview), or ipywidgets 7's {file name: such dict}; None or empty before any upload. The bytes are
    written to a temporary file and read by ``images.load_image`` (same conversions and the same clear errors
    as for a path). Raises InputError when nothing was uploaded.
    """
    import tempfile
    from pathlib import Path

    from opticam_lib.images import load_image

    files = list(value.values()) if isinstance(value, Mapping) else list(value or ())
    if not files:
        raise InputError("no file uploaded yet: choose an image file with the upload button")
    first = files[0]
    name = str(first.get("name", "upload"))
    content = first.get("content")
    if content is None:
        raise InputError(f"the upload of {name!r} has no content")
    suffix = Path(name).suffix or ".img"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(bytes(content))
        try:
            image = load_image(path, size)
        except InputError as err:
            raise InputError(str(err).replace(str(path), name)) from None
    return image, name


def image_picker(show: Callable[[Tensor, str], object], description: str = "your image") -> ipywidgets.VBox:
    """An ipywidgets file picker: choosing an image file calls ``show(image (3, 224, 224) in [0, 1], name)`` and
    displays what it returns (e.g. a figure) below the button; an error is shown in words beside the button, naming
    the file, and the previous file's figure is cleared.

    Returns the widget box; ``box.controls`` maps ``"upload"``, ``"status"``, ``"output"`` to the widgets.
    """
    import html as _html

    import ipywidgets as w

    from opticam_lib.course.widgets import clear_figure, show_result

    upload = w.FileUpload(
        accept="image/*", multiple=False, description=description, layout=w.Layout(width="260px")
    )
    status = w.HTML(
        "<i>choose a photo (JPEG, PNG, ...): it is explained here, nothing leaves this machine</i>"
    )
    out = w.Output()

    def changed(*_):
        name = None
        try:
            image, name = image_from_upload(upload.value)
            status.value = f"<i>running on {_html.escape(name)}…</i>"
            show_result(out, show(image, name))  # not `with out: display(...)`: see widgets.show_figure
        except Exception as err:  # show it where the user looks, without the previous file's figure below it
            where = "" if name is None or name in str(err) else f"{name}: "
            status.value = f"<span style='color:#b00'>error: {_html.escape(where + str(err))}</span>"
            clear_figure(out)
            return
        status.value = f"{_html.escape(name)}: done"

    upload.observe(changed, names="value")
    box = w.VBox([w.HBox([upload, status]), out])
    box.controls = {"upload": upload, "status": status, "output": out}
    return box


def explain_image(
    classifier: Classifier, image: Tensor, name: str = "your image", *, k: int = 3, **options: Any
) -> Figure:
    """One image (3, H, W) in [0, 1]: its ``k`` most probable classes, and Grad-CAM's and Opti-CAM's maps for the
    most probable one, with p and o (the class probability on the image and on the masked image) in the titles.
    ``options`` go to ``optimize``. The notebook's static figure and its file picker both call this."""
    from opticam_lib.methods.cam_family import gradcam
    from opticam_lib.plots import overlay, saliency_colorbar, to_numpy_image

    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        raise InputError(f"image must be one (3, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    x = image[None].to(classifier.device)
    top = classifier.top(x, k)[0]
    c = torch.tensor([top[0][0]], device=classifier.device)
    options.setdefault("progress", False)
    maps = {"Grad-CAM": gradcam(classifier, x, c), "Opti-CAM": optimize(classifier, x, c, **options).maps}
    p = float(class_probability(classifier, x, c)[0])
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(to_numpy_image(image))
    axes[0].set_title(f"{name}\n" + "\n".join(f"{n} {q:.2f}" for _, n, q in top), fontsize=8, loc="left")
    for ax, (method, m) in zip(axes[1:], maps.items()):
        o = float(class_probability(classifier, x * m, c)[0])
        ax.imshow(overlay(image, m[0].cpu()))
        ax.set_title(f"{method}: {top[0][1]}\np = {p:.2f} → o = {o:.2f}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    saliency_colorbar(fig, axes[1:], shrink=0.7)
    return fig
