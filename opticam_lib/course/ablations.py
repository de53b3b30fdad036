"""Ablations of Opti-CAM (notebook 07): what each choice does to AD, AG and AI (eq. 13-15).

The paper studies the objective (Mask, Diff, IOMask, IODiff: Tables 6 and A12), the normalisation n (range, max,
sigmoid: eq. 16-18), the layer (Table A13), the learning rate and number of iterations (Fig. A5), the target class
(ground truth, most probable, second, least: Table A9) and the input normalisation (appendix H, Table A14).
``run_grid`` runs any grid of those options over a set of images and returns a tidy table; the plotting
functions draw it. Opti-CAM itself is ``opti_cam.optimize``; the metrics are ``metrics.classification_metrics``.

Cost: every configuration is one ``optimize`` call, i.e. ``iterations`` x (forward + backward) per image (twice
the forward batch for IOMask/IODiff). Metrics at intermediate iteration counts (``checkpoints``) come from the
same run, for one extra forward pass per image and checkpoint, and a ``cache`` shared between calls lets several
studies reuse a configuration they have in common (e.g. the default Mask/range/last layer/lr 0.1 run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise, product
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor, nn

from opticam_lib.digests import model_digest, tensor_digest
from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_choice, validate_images, validate_positive_int, validate_targets
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import DEFAULT_LR, OPTIMIZERS, optimize, saliency_map
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.models.classifier import Classifier, InputNormalized
from opticam_lib.paper.tables import paper_table
from opticam_lib.profiles import Profile, profile

if TYPE_CHECKING:  # annotations only: pandas is imported where it is used
    import pandas as pd

#: the target-class rules of Table A9 (the paper's "Most (Mis.)" column needs misclassified ImageNet images)
TARGET_RULES: tuple[str, ...] = ("ground_truth", "most", "second", "least")


#: options ``run_grid`` understands: ``optimize``'s own, plus ``target`` and ``input_normalization``
GRID_OPTIONS: tuple[str, ...] = (
    "objective",
    "normalization",
    "layer",
    "optimizer",
    "lr",
    "selector",
    "activation",
    "init",
    "target",
    "input_normalization",
)


#: what the default Opti-CAM run uses for each option (the paper's choices; layer None = the model's default)
DEFAULTS: dict[str, Any] = {
    "objective": "mask",
    "normalization": "range",
    "layer": None,
    "optimizer": "adam",
    "lr": None,  # None: the optimizer's default (DEFAULT_LR: Adam 0.1, the paper's; iRprop+ 0.5)
    "selector": "logit",
    "activation": "identity",
    "init": "constant",
    "target": "ground_truth",
    "input_normalization": True,
}


METRICS: tuple[str, ...] = ("AD", "AG", "AI")

#: iterations of every ablation under both profiles: the paper's 100, where Adam at lr 0.1 is close to convergence
#: on the sample photos (AG +0.7 points from 100 to 120 iterations, notebook 05)
CONVERGED_ITERATIONS = 100


_ARROWS = {"AD": "↓", "AG": "↑", "AI": "↑"}


@dataclass(frozen=True)
class AblationSettings:
    """How big the ablation studies are under a profile.

    Attributes:
        images: names of the sample photos to use (None: all of them).
        iterations: Opti-CAM iterations of every option grid (paper: 100; Table A12 used 50).
        lrs: learning rates of the lr x iterations study (Fig. A5).
        checkpoints: iteration counts at which the lr x iterations study measures AD/AG/AI; the largest is the
            number of iterations run, and ``iterations`` is one of them (so the default run is shared).
    """

    images: tuple[str, ...] | None
    iterations: int
    lrs: tuple[float, ...]
    checkpoints: tuple[int, ...]


def ablation_settings(p: Profile | None = None) -> AblationSettings:
    """The ablation sizes for profile ``p`` (default: the active profile).

    Both run every configuration to convergence (the paper's 100 iterations; Adam at lr 0.1). ``laptop``: four
    photos (two the model classifies correctly, two it does not), learning rates 0.01 / 0.1 / 1 measured at 1 to
    100 iterations; the option grids come from the shipped cache (``ablation_cache``), since they cost about 5
    minutes on 2 CPU cores. ``paper``: every image, learning rates 0.001 to 1.
    """
    p = p or profile()
    if p.name == "paper":
        return AblationSettings(
            images=None,
            iterations=p.iterations,
            lrs=(0.001, 0.01, 0.1, 1.0),
            checkpoints=tuple(sorted({1, 10, 25, 50, p.iterations})),
        )
    return AblationSettings(
        images=("chelsea", "coffee", "motorcycle", "clock"),
        iterations=CONVERGED_ITERATIONS,
        lrs=(0.01, p.lr, 1.0),
        checkpoints=(1, 10, 25, 50, CONVERGED_ITERATIONS),
    )


def candidate_layers(classifier: Classifier, count: int = 4) -> list[str]:
    """The default target layer and ``count - 1`` earlier ones, for the layer study (Table A13) and its dropdown.

    A target inside a numbered stack (VGG's ``features.42``, the ReLU before the last max pooling): the layers of
    its type that end earlier stages, each just before a pooling layer (VGG16-BN: ``features.32``, ``.22``,
    ``.12``), as the paper's Table A13 compares. Otherwise (``bn2``, ``layer4``): the last blocks of the nearest
    numbered stack at or before the target's top-level module (efficientnet_lite0: ``blocks.5``, ``.4``, ``.3``);
    never the head after it (VGG's ``classifier.5`` gave no feature maps).
    """
    target = classifier.target_layer
    names = [target]
    prefix, _, index = target.rpartition(".")
    if prefix and index.isdigit():
        stack = list(classifier.net.get_submodule(prefix).named_children())
        kind = type(classifier.net.get_submodule(target))
        pools = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
        ends = [
            f"{prefix}.{n}"
            for (n, m), (_, after) in pairwise(stack)
            if n.isdigit() and int(n) < int(index) and isinstance(m, kind) and isinstance(after, pools)
        ]
        if ends:
            return names + list(reversed(ends))[: count - 1]
    children = [n for n, _ in classifier.net.named_children()]
    top = target.split(".")[0]
    if top in children:  # nothing after the target's own top-level module (the pooling, the head)
        children = children[: children.index(top) + 1]
    for n in reversed(children):
        mods = dict(classifier.net.named_children())[n]
        subs = [f"{n}.{s}" for s, _ in mods.named_children()]
        if len(subs) > 2 and all(s.split(".")[-1].isdigit() for s in subs):
            names += list(reversed(subs))[1:count]
            break
    return names


def ablation_grids(classifier: Classifier) -> dict[str, dict[str, list]]:
    """The grids of notebook 07, one per study (the notebook and ``build_ablation_cache`` both read them here).

    ``objective_normalization``: Table 6; ``in_out``: Table A12; ``layer``: Table A13 (the default layer and
    three earlier blocks, ``candidate_layers``); ``target``: Table A9; ``input_normalization``: Table A14.
    The learning-rate study (Fig. A5) is ``{"lr": settings.lrs}`` with checkpoints, and is not cached.
    """
    return {
        "objective_normalization": {
            "objective": ["mask", "diff"],
            "normalization": ["range", "max", "sigmoid"],
        },
        "in_out": {"objective": ["mask", "diff", "iomask", "iodiff"]},
        "layer": {"layer": candidate_layers(classifier)},
        "target": {"target": list(TARGET_RULES)},
        "input_normalization": {"input_normalization": [True, False]},
    }


def choose_targets(
    classifier: Classifier, images: Tensor, labels: Tensor | Sequence[int], rule: str
) -> Tensor:
    """The class each image's map explains, by one of the rules of Table A9.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        labels: (N,) ground-truth classes.
        rule: ``"ground_truth"``, ``"most"`` (the predicted class), ``"second"`` (second most probable) or
            ``"least"`` (least probable), by ``classifier``'s own probabilities.
    Returns:
        (N,) long tensor of class ids, on the CPU.
    """
    images = validate_images(images)
    labels = validate_targets(labels, classifier, images).cpu()
    if rule == "ground_truth":
        return labels
    if rule not in TARGET_RULES:
        raise InputError(f"unknown target rule {rule!r}; choose one of: {', '.join(TARGET_RULES)}")
    probs = classifier.predict(images).cpu()
    if rule == "least":
        return probs.argmin(dim=1)
    order = probs.argsort(dim=1, descending=True, stable=True)
    return order[:, 0 if rule == "most" else 1]


def without_input_normalization(classifier: Classifier) -> Classifier:
    """The same network fed raw [0, 1] pixels: the paper's appendix H (Table A14).

    Every classifier here is ``InputNormalized(net, mean, std)``; this returns a ``Classifier`` whose model is
    ``InputNormalized(net, None, None)`` around the *same* ``net`` (weights shared, nothing copied), so the
    network sees x instead of (x - mean) / std, for the maps and for the metrics alike. It is what
    ``load_classifier(name, normalize=False)`` or ``wrap_classifier(net, layer, mean=None, std=None)`` build.
    """
    if not isinstance(classifier.model, InputNormalized):
        raise InputError("the classifier's model is not an InputNormalized wrapper")
    model = InputNormalized(classifier.net, None, None).to(classifier.device)
    # the wrapper's flag only: train() would reset every module of net
    model.training = classifier.model.training
    return replace(classifier, model=model, name=f"{classifier.name} (no input normalisation)")


@dataclass
class AblationResult:
    """What ``run_grid`` returns.

    Attributes:
        table: pandas DataFrame, one row per configuration and checkpoint: the grid's option columns,
            ``iterations``, ``AD``, ``AG``, ``AI`` (percent, eq. 13-15) and ``n`` (images).
        per_image: the same keys with one row per image: ``image`` (index), ``map_class`` (the class the map
            explains), ``eval_class`` (the class the metrics follow), ``p`` and ``o`` (its probability before
            and after masking, in [0, 1]).
        maps: {configuration (tuple of the grid's option values, in ``keys`` order): (N, 1, H, W) maps in
            [0, 1] after the last iteration}.
        keys: the grid's option names, in column order.
    """

    table: Any
    per_image: Any
    maps: dict[tuple, Tensor]
    keys: tuple[str, ...]

    def best(self, metric: str = "AG") -> dict[str, Any]:
        """The row (as a dict) with the best value of ``metric`` (lowest for AD, highest otherwise)."""
        if metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        t = self.table
        i = t[metric].idxmin() if metric == "AD" else t[metric].idxmax()
        return t.loc[i].to_dict()


@dataclass
class _Run:
    p: Tensor  # (N,) probability of the ground truth on the image
    o: dict[int, Tensor]  # checkpoint -> (N,) probability of the ground truth on the masked image
    p_target: Tensor  # the same two for the class the map explains
    o_target: dict[int, Tensor]
    maps: dict[int, Tensor]  # checkpoint -> (N, 1, H, W)
    targets: Tensor
    labels: Tensor
    u: dict[int, Tensor] = field(default_factory=dict)  # checkpoint -> (N, K) Opti-CAM's variable, on the CPU


@dataclass
class GridCache:
    """Runs already made, shared between ``run_grid`` calls on the same images: keyed by the resolved options
    (defaults filled in); each entry keeps o and the maps at every checkpoint it measured."""

    runs: dict[tuple, _Run] = field(default_factory=dict)
    hits: int = 0


def _configs(
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
) -> tuple[tuple[str, ...], list[dict]]:
    if isinstance(grid, Mapping):
        if not grid:
            raise InputError(
                "the grid is empty: give at least one option, e.g. {'objective': ['mask', 'diff']}"
            )
        keys = tuple(grid)
        values = []
        for k in keys:
            v = grid[k]
            if isinstance(v, str) or not isinstance(v, Sequence) or len(v) == 0:
                raise InputError(f"grid[{k!r}] must be a non-empty list of values, got {v!r}")
            values.append(list(v))
        configs = [dict(zip(keys, combo)) for combo in product(*values)]
    else:
        configs = [dict(c) for c in grid]
        if not configs:
            raise InputError("the grid is empty: give at least one configuration")
        keys = tuple(dict.fromkeys(k for c in configs for k in c))
    unknown = [k for k in keys if k not in GRID_OPTIONS]
    if unknown:
        raise InputError(f"unknown grid option {unknown[0]!r}; options: {', '.join(GRID_OPTIONS)}")
    return keys, configs


def run_grid(
    classifier: Classifier,
    images: Tensor,
    labels: Tensor | Sequence[int],
    grid: Mapping[str, Sequence] | Sequence[Mapping[str, Any]],
    *,
    iterations: int,
    checkpoints: Sequence[int] | None = None,
    evaluate_on: str = "ground_truth",
    cache: GridCache | None = None,
    keep_maps: bool = True,
    progress: bool = False,
) -> AblationResult:
    """Run Opti-CAM for every combination of options in ``grid`` and measure AD, AG, AI (eq. 13-15).

    Args:
        classifier: the model (with its input normalisation inside).
        images: (N, 3, H, W) float in [0, 1].
        labels: (N,) ground-truth classes.
        grid: either {option: [values]} (every combination is run) or a list of {option: value} configurations.
            Options: ``objective``, ``normalization``, ``layer``, ``lr``, ``selector``, ``activation``, ``init``
            (those of ``optimize``), ``target`` (a rule of ``TARGET_RULES``) and ``input_normalization``
            (False: ``without_input_normalization``). Options left out take ``DEFAULTS``.
        iterations: Adam steps of every run; every run makes all of them (no early stop, ``tol=None``).
        checkpoints: iteration counts (each <= ``iterations``) at which to measure; default ``(iterations,)``.
        evaluate_on: the class the metrics follow: ``"ground_truth"`` (as in Table A9: maps for other classes
            judged by what they do to the true class) or ``"target"`` (the class the map explains).
        cache: a ``GridCache`` to reuse runs between calls on the same images and labels.
        keep_maps: keep the final maps in the result (N x H x W floats per configuration).
    Returns:
        ``AblationResult``; ``table`` has one row per configuration and checkpoint.
    """
    import pandas as pd

    images = validate_images(images)
    labels = validate_targets(labels, classifier, images.to(classifier.device)).cpu()
    iterations = validate_positive_int(iterations, "iterations")
    cps = sorted({validate_positive_int(c, "checkpoint") for c in (checkpoints or (iterations,))})
    if cps[-1] > iterations:
        raise InputError(f"checkpoints must be <= iterations ({iterations}), got {cps[-1]}")
    if evaluate_on not in ("ground_truth", "target"):
        raise InputError(f"evaluate_on must be 'ground_truth' or 'target', got {evaluate_on!r}")
    keys, configs = _configs(grid)
    cache = cache if cache is not None else GridCache()
    variants: dict[bool, Classifier] = {}

    def model_for(normalized: bool) -> Classifier:
        if normalized not in variants:
            variants[normalized] = classifier if normalized else without_input_normalization(classifier)
        return variants[normalized]

    records, per_image, maps_out = [], [], {}
    n = images.shape[0]
    content = run_content(classifier, images)  # once: the weights and images do not change during the grid
    for cfg in configs:
        opts = {**DEFAULTS, **cfg}
        validate_choice(opts["optimizer"], "optimizer", OPTIMIZERS)
        # the optimizer's own default step, so that lr=None and lr=0.1 share one Adam run
        if opts["lr"] is None:
            opts["lr"] = DEFAULT_LR[opts["optimizer"]]
        if not isinstance(opts["input_normalization"], bool):
            raise InputError(
                f"input_normalization must be True or False, got {opts['input_normalization']!r}"
            )
        clf = model_for(opts["input_normalization"])
        layer = opts["layer"] if opts["layer"] is not None else classifier.target_layer
        ident = run_key(classifier, images, labels, opts, content)
        run = cache.runs.get(ident)
        if run is not None and all(c in run.o for c in cps):
            cache.hits += 1
        else:
            run = _run_one(clf, images, labels, opts, layer, iterations, cps, keep_maps, progress)
            cache.runs[ident] = run
        if keep_maps and cps[-1] not in run.maps and cps[-1] in run.u:  # a run loaded from disk: maps from u
            acts, _ = features(clf, images.to(clf.device), layer)
            u = run.u[cps[-1]].to(acts.device)
            size = tuple(images.shape[-2:])
            run.maps[cps[-1]] = saliency_map(u, acts, size, opts["normalization"], opts["activation"]).cpu()
        follow = run.labels if evaluate_on == "ground_truth" else run.targets
        p = run.p if evaluate_on == "ground_truth" else run.p_target
        for c in cps:
            o = run.o[c] if evaluate_on == "ground_truth" else run.o_target[c]
            row = {k: opts[k] if k == "lr" else cfg.get(k, DEFAULTS[k]) for k in keys}
            records.append({**row, "iterations": c, **classification_metrics(p, o), "n": n})
            for i in range(n):
                per_image.append(
                    {
                        **row,
                        "iterations": c,
                        "image": i,
                        "map_class": int(run.targets[i]),
                        "eval_class": int(follow[i]),
                        "p": float(p[i]),
                        "o": float(o[i]),
                    }
                )
        if keep_maps and cps[-1] in run.maps:
            maps_out[tuple(cfg.get(k, DEFAULTS[k]) for k in keys)] = run.maps[cps[-1]]
    table = pd.DataFrame.from_records(records, columns=[*keys, "iterations", *METRICS, "n"])
    per = pd.DataFrame.from_records(
        per_image, columns=[*keys, "iterations", "image", "map_class", "eval_class", "p", "o"]
    )
    return AblationResult(table=table, per_image=per, maps=maps_out, keys=keys)


def run_content(classifier: Classifier, images: Tensor) -> tuple[str, str]:
    """(SHA-256 of the classifier's weights, SHA-256 of the images' exact values and dtype): what a run was made
    on, for ``run_key``."""
    return model_digest(classifier), tensor_digest(images)


def run_key(
    classifier: Classifier,
    images: Tensor,
    labels: Tensor,
    opts: Mapping[str, Any],
    content: tuple[str, str] | None = None,
) -> tuple:
    """The key of one run in a ``GridCache``: the classifier's weights and the images' values (``run_content``,
    or ``content`` when already computed: object ids would be reused by another tensor, and miss a change in
    place), the labels and every option of ``GRID_OPTIONS`` resolved (``opts`` has the defaults filled in; layer
    None = the model's own)."""
    resolved = {**opts}
    if resolved.get("layer") is None:
        resolved["layer"] = classifier.target_layer
    weights, pixels = content if content is not None else run_content(classifier, images)
    return (
        classifier.name,
        weights,
        pixels,
        tuple(images.shape),
        tuple(int(v) for v in labels.tolist()),
        *((k, resolved[k]) for k in GRID_OPTIONS),
    )


def _run_one(
    clf: Classifier,
    images: Tensor,
    labels: Tensor,
    opts: dict[str, Any],
    layer: str,
    iterations: int,
    cps: list[int],
    keep_maps: bool,
    progress: bool,
) -> _Run:
    x = images.to(clf.device)
    rule = opts["target"]
    if isinstance(rule, str):
        targets = choose_targets(clf, images, labels, rule)
    else:
        raise InputError(f"target must be one of {', '.join(TARGET_RULES)}, got {rule!r}")
    lab = labels.to(clf.device)
    tgt = targets.to(clf.device)
    p = class_probability(clf, x, lab)
    p_t = class_probability(clf, x, tgt)
    o, o_t, maps, us = {}, {}, {}, {}
    wanted = set(cps)

    def measure(step: int, m: Tensor) -> None:
        m = m.to(clf.device)
        o[step] = class_probability(clf, x * m, lab)
        o_t[step] = class_probability(clf, x * m, tgt)
        if keep_maps:
            maps[step] = m.detach().cpu()

    def callback(step: int, partial) -> None:
        if step in wanted and step not in o:
            measure(step, partial.maps)
            us[step] = partial.u.detach().cpu()

    optimize(
        clf,
        x,
        tgt,
        layer=layer,
        objective=opts["objective"],
        normalization=opts["normalization"],
        selector=opts["selector"],
        activation=opts["activation"],
        init=opts["init"],
        optimizer=opts["optimizer"],
        lr=float(opts["lr"]),
        iterations=iterations,
        tol=None,
        callback=callback,
        callback_every=1,
        progress=progress,
    )
    return _Run(
        p=p, o=o, p_target=p_t, o_target=o_t, maps=maps, targets=targets.cpu(), labels=labels.cpu(), u=us
    )


def paper_rows(
    table: str, model: str, rows: Mapping[str, str], columns: Sequence[str] = METRICS
) -> pd.DataFrame:
    """Rows of one of the paper's tables, renamed to our labels.

    Args:
        table, model: as in ``paper.paper_table`` (e.g. ``"6"``, ``"vgg16_bn"``).
        rows: {our label: the paper's row name}, e.g. ``{"mask, range": "Opti-CAM (mask, range)"}``.
    Returns:
        a DataFrame indexed by our labels with ``columns``; NaN where the paper has no number.
    """
    import pandas as pd

    data = paper_table(table, model)
    missing = [r for r in rows.values() if r not in data]
    if missing:
        raise InputError(f"table {table} ({model}) has no row {missing[0]!r}; rows: {', '.join(data)}")
    out = {
        ours: {c: np.nan if data[theirs].get(c) is None else float(data[theirs][c]) for c in columns}
        for ours, theirs in rows.items()
    }
    return pd.DataFrame.from_dict(out, orient="index", columns=list(columns))


def paper_target_classes(method: str = "Opti-CAM", model: str = "resnet50") -> pd.DataFrame:
    """Table A9 for one method as a DataFrame indexed by ``TARGET_RULES``, columns AD, AG, AI."""
    import pandas as pd

    data = paper_table("A9", model)
    if method not in data or method == "":
        known = ", ".join(m for m in data if m)
        raise InputError(f"table A9 has no method {method!r}; methods: {known}")
    row = data[method]
    return pd.DataFrame(
        {m: [float(row[f"{m}_{r}"]) for r in TARGET_RULES] for m in METRICS}, index=list(TARGET_RULES)
    )


def side_by_side(
    ours: pd.DataFrame,
    paper: pd.DataFrame,
    ours_title: str = "ours",
    paper_title: str = "paper",
    columns: Sequence[str] = METRICS,
) -> str:
    """Our rows and the paper's, one line per label, as text (``-`` where one side has no number).

    Args:
        ours, paper: DataFrames indexed by row label with the ``columns`` (e.g. from ``table.set_index``
            and ``paper_rows``). Rows are printed in the order of ``ours``, then the paper's other rows.
    """
    labels = list(ours.index) + [r for r in paper.index if r not in ours.index]
    width = max([len(str(r)) for r in labels] + [8]) + 2
    w = 7

    def cells(frame, label) -> str:
        if label not in frame.index:
            return "".join(f"{'-':>{w}}" for _ in columns)
        vals = [frame.loc[label].get(c, np.nan) for c in columns]
        return "".join(f"{'-':>{w}}" if pd_isna(v) else f"{float(v):>{w}.1f}" for v in vals)

    span = w * len(columns)
    lines = [
        f"{'':<{width}}{ours_title[:span]:>{span}}   |{paper_title[: span + 12]:>{span}}",
        f"{'':<{width}}"
        + "".join(f"{c:>{w}}" for c in columns)
        + "   |"
        + "".join(f"{c:>{w}}" for c in columns),
    ]
    for label in labels:
        lines.append(f"{label!s:<{width}}{cells(ours, label)}   |{cells(paper, label)}")
    return "\n".join(lines)


def pd_isna(v: object) -> bool:
    """True for None and NaN."""
    return v is None or (isinstance(v, float) and np.isnan(v))


def plot_study(
    table: pd.DataFrame, x: str, hue: str | None = None, metrics: Sequence[str] = METRICS, title: str = ""
) -> Figure:
    """One bar chart per metric: the metric for each value of option ``x`` (bars grouped by ``hue``).

    Args:
        table: ``AblationResult.table`` (one checkpoint per configuration; filter it first otherwise).
        x, hue: option columns of the table.
    """
    import seaborn as sns

    missing = {x, *([hue] if hue else []), *metrics} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}; it has {list(table.columns)}")
    data = table.copy()
    data[x] = data[x].astype(str)
    if hue:
        data[hue] = data[hue].astype(str)
    fig = Figure(figsize=(3.6 * len(metrics), 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for i, (ax, m) in enumerate(zip(axes, metrics)):
        sns.barplot(data=data, x=x, y=m, hue=hue, ax=ax, legend=bool(hue) and i == len(metrics) - 1)
        ax.set_title(f"{m} {_ARROWS.get(m, '')} (%)")
        ax.set_ylabel("")
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=9)
        if m == "AI":
            ax.set_ylim(0, 100)
    if hue and axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), title=hue, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_lr_iterations(table: pd.DataFrame, metrics: Sequence[str] = METRICS, title: str = "") -> Figure:
    """Fig. A5 as heat maps: one panel per metric, learning rate (rows) x iterations (columns), values written in.

    Args:
        table: ``AblationResult.table`` of a grid over ``lr`` with several ``checkpoints``.
    """
    missing = {"lr", "iterations", *metrics} - set(table.columns)
    if missing:
        raise InputError(f"the table lacks columns {sorted(missing)}: run a grid over 'lr' with checkpoints")
    fig = Figure(figsize=(4.2 * len(metrics), 0.55 * table["lr"].nunique() + 2.0), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        piv = table.pivot_table(index="lr", columns="iterations", values=m, aggfunc="mean")
        values = piv.to_numpy(dtype=float)
        cmap = "viridis_r" if m == "AD" else "viridis"
        im = ax.imshow(
            values, cmap=cmap, aspect="auto", vmin=0, vmax=max(100.0 if m == "AI" else 1.0, np.nanmax(values))
        )
        for (r, c), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(
                    c,
                    r,
                    f"{v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if sum(im.cmap(im.norm(v))[:3]) < 1.5 else "black",
                )
        ax.set_xticks(range(piv.shape[1]), [str(c) for c in piv.columns])
        ax.set_yticks(range(piv.shape[0]), [f"{r:g}" for r in piv.index])
        ax.set_xlabel("iterations")
        ax.set_ylabel("learning rate η")
        ax.set_title(f"{m} {_ARROWS.get(m, '')} (%)")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
