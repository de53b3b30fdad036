"""Notebook 07's option grids at convergence, computed once and shipped: a cache of ``run_grid`` runs.

Every ablation of notebook 07 runs Opti-CAM to convergence (the paper's 100 Adam iterations). Fourteen such runs
on four photos take about 5 minutes on 2 CPU cores, more than a notebook's budget, so
``python -m opticam_lib precompute --ablations`` runs the notebook's grids (``ablations.ablation_grids``) with
``run_grid`` itself and saves, for every run, what ``run_grid`` needs to rebuild its rows without optimising:
the class probabilities before and after masking at each checkpoint and Opti-CAM's variable u at the last one
(the maps are recomputed from u: one forward pass). ``load_ablation_cache`` hands the runs back as a
``GridCache`` only for the same model weights, images and labels, and otherwise says how to rebuild the file; a
test recomputes one run and compares. The learning-rate study is not cached: the notebook runs it live.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from opticam_lib.course.ablations import (
    DEFAULTS,
    GRID_OPTIONS,
    AblationSettings,
    GridCache,
    _Run,
    ablation_grids,
    run_content,
    run_grid,
    run_key,
)
from opticam_lib.course.channel_cache import (
    _machine,
    read_cache_file,
    validate_cache_key,
)
from opticam_lib.digests import image_digests, model_digest
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.inputs import validate_images, validate_targets
from opticam_lib.models.classifier import Classifier
from opticam_lib.paths import atomic_write

CACHE_DIR = Path(__file__).resolve().parents[1] / "data" / "ablations"


ABLATION_META_KEYS = ("model", "model_sha256", "images", "names", "labels", "iterations", "checkpoints", "seconds",
                      "total_seconds", "machine", "date", "command")  # fmt: skip


def ablation_cache_path(model: str) -> Path:
    """``opticam_lib/data/ablations/<model>.pt``."""
    return CACHE_DIR / f"{model}.pt"


def ablation_command(model: str) -> str:
    """The shell command that rebuilds ``model``'s ablation cache (``precompute --ablations``)."""
    return f"python -m opticam_lib precompute --ablations --model {model}"


def build_ablation_cache(
    classifier: Classifier,
    images: Tensor,
    labels: Tensor,
    settings: AblationSettings,
    names: list[str] | None = None,
    path: str | Path | None = None,
    progress: bool = True,
) -> GridCache:
    """Run every grid of ``ablation_grids`` for ``settings.iterations`` iterations and save the runs.

    Args:
        images: (N, 3, H, W) float in [0, 1]; labels: (N,) ground-truth classes.
        settings: ``ablation_settings(profile)``: the iteration count and the checkpoints (those up to it).
        path: where to write (default ``ablation_cache_path(model)``); written under a temporary name first.
    Returns:
        the ``GridCache`` holding the runs (as ``load_ablation_cache`` would give them back).
    """
    images = validate_images(images)
    labels = validate_targets(labels, classifier, images.to(classifier.device)).cpu()
    cps = tuple(c for c in settings.checkpoints if c <= settings.iterations)
    cache = GridCache()
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    for study, grid in ablation_grids(classifier).items():
        t0 = time.perf_counter()
        run_grid(
            classifier,
            images,
            labels,
            grid,
            iterations=settings.iterations,
            checkpoints=cps,
            cache=cache,
            keep_maps=False,
            progress=progress,
        )
        seconds[study] = time.perf_counter() - t0
    runs = []
    for key, run in cache.runs.items():
        options = dict(key[-len(GRID_OPTIONS) :])
        runs.append(
            {
                "options": options,
                "p": run.p.cpu().float(),
                "p_target": run.p_target.cpu().float(),
                "o": {int(c): v.cpu().float() for c, v in run.o.items()},
                "o_target": {int(c): v.cpu().float() for c, v in run.o_target.items()},
                "u": {int(c): v.cpu().float() for c, v in run.u.items() if c == max(run.o)},
                "targets": run.targets.long(),
            }
        )
    path = Path(path) if path is not None else ablation_cache_path(classifier.name)
    meta = {
        "model": classifier.name,
        "model_sha256": model_digest(classifier),
        "images": image_digests(images),
        "names": list(names) if names is not None else [],
        "labels": [int(v) for v in labels.tolist()],
        "iterations": int(settings.iterations),
        "checkpoints": [int(c) for c in cps],
        "seconds": seconds,
        "total_seconds": time.perf_counter() - start,
        "machine": _machine(),
        "date": datetime.date.today().isoformat(),
        "command": ablation_command(classifier.name),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save({"meta": meta, "runs": runs}, tmp))  # never a partial file
    return cache


def load_ablation_cache(
    classifier: Classifier, images: Tensor, labels: Tensor, path: str | Path | None = None
) -> tuple[GridCache, dict[str, Any]]:
    """The shipped runs for exactly these model weights, images and labels, as a ``GridCache`` for ``run_grid``.

    ``run_grid`` then uses a stored run when its options and checkpoints match, and optimises otherwise. Pass the
    same ``images`` tensor to ``run_grid`` (the cache is keyed by the tensor, as ``GridCache`` always is).

    Returns:
        (cache, meta): meta says how and where the file was made (``seconds``, ``machine``, ``date``,
        ``command``, ``iterations``, ``checkpoints``).
    Raises:
        MissingDataError: no file, an unreadable one, or one made for other weights, images or labels (the
            message says which, and the command that rebuilds it).
    """
    images = validate_images(images)
    labels = validate_targets(labels, classifier, images.to(classifier.device)).cpu()
    path = Path(path) if path is not None else ablation_cache_path(classifier.name)
    command = ablation_command(classifier.name)
    if not path.is_file():
        raise MissingDataError(f"no ablation cache at {path}; build it (about 5 minutes) with: {command}")
    meta, runs = read_cache_file(path, command, "ablation cache", "runs", ABLATION_META_KEYS)
    expected = {"labels": ([int(v) for v in labels.tolist()], "other labels")}
    validate_cache_key(meta, path, command, classifier, images, expected)
    try:
        return _grid_cache(classifier, images, labels, runs, path, command), meta
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # well-formed, but a run lacks a part
        raise MissingDataError(
            f"{path} is not a whole ablation cache (a run lacks {e}); rebuild it with: {command}"
        ) from e


def _grid_cache(
    classifier: Classifier, images: Tensor, labels: Tensor, runs: Any, path: Path, command: str
) -> GridCache:
    """The stored ``runs`` (a list of dicts, as ``build_ablation_cache`` writes them) as a ``GridCache``."""
    cache = GridCache()
    n = images.shape[0]
    content = run_content(classifier, images)
    for r in runs:
        options = {**DEFAULTS, **r["options"]}
        if set(r["options"]) != set(GRID_OPTIONS):
            raise InputError(f"{path}: a run lacks options; rebuild with: {command}")
        for name in ("p", "p_target", "targets"):
            if not isinstance(r[name], Tensor) or r[name].shape[0] != n:
                raise InputError(
                    f"{path}: {name} of a run is not one value per image; rebuild with: {command}"
                )
        for o in (*r["o"].values(), *r["o_target"].values()):
            if not (isinstance(o, Tensor) and o.shape == (n,) and torch.isfinite(o).all()):
                raise InputError(f"{path}: a stored probability is not finite; rebuild with: {command}")
        run = _Run(
            p=r["p"].to(classifier.device),
            o={int(c): v.to(classifier.device) for c, v in r["o"].items()},
            p_target=r["p_target"].to(classifier.device),
            o_target={int(c): v.to(classifier.device) for c, v in r["o_target"].items()},
            maps={},
            targets=r["targets"],
            labels=labels,
            u={int(c): v for c, v in r["u"].items()},
        )
        cache.runs[run_key(classifier, images, labels, options, content)] = run
    return cache


def cache_note(meta: dict[str, Any], path: str | Path | None = None) -> str:
    """One line saying where the cached runs come from."""
    where = Path(path).name if path is not None else f"{meta['model']}.pt"
    return (
        f"{len(meta.get('seconds', {}))} studies of Opti-CAM runs ({meta['iterations']} iterations each) loaded "
        f"from {where}: computed {meta['date']} with `{meta['command']}` in {meta['total_seconds']:.0f} s on "
        f"{meta['machine']}; keyed by the model's weights, the {len(meta['images'])} images and their labels"
    )
