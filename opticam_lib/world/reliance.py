"""What a trained world model truly uses (``evidence``: object against context, measured by re-rendering
scenes), and where a saliency map puts its mass (``map_mass``: object, context, elsewhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.models.classifier import Classifier
from opticam_lib.world.scenes import CONDITIONS, WorldBatch, WorldConfig, generate, render

MASS_PARTS: tuple[str, ...] = ("object", "context", "elsewhere")


@dataclass
class Evidence:
    """How much a classifier relies on the object and on the context (``evidence``).

    ``conditions[name]`` holds, for each rendering of the same scenes:
    ``accuracy`` (prediction = object class), ``probability`` (mean probability of the object class) and
    ``follows_context`` (prediction = the class the context names; NaN without context). The renderings:

    - ``natural``: as generated (the context agrees in a fraction ``context_agreement`` of images);
    - ``both``: object and agreeing context;  ``swapped``: object and the context of another class;
    - ``object``: object only (context patch replaced by background);  ``context``: agreeing context only;
    - ``neither``: background and distractors only.

    Summaries: ``context_reliance = P(both) - P(swapped)`` (drop of the true-class probability when the context
    names another class) and ``object_reliance = P(both) - P(context)`` (drop when the object is removed).
    """

    conditions: dict[str, dict[str, float]]
    n: int
    seed: int
    config: WorldConfig
    labels: Tensor | None = field(default=None, repr=False)  # (N,) object classes of the scenes
    alpha: Tensor | None = field(default=None, repr=False)  # (N,) object contrast of the scenes
    probabilities: dict[str, Tensor] = field(default_factory=dict, repr=False)  # condition -> (N, C)
    context_labels: dict[str, Tensor] = field(default_factory=dict, repr=False)  # condition -> (N,), -1: none

    def by_contrast(self, condition: str = "swapped", bins: int = 4) -> list[dict[str, float]]:
        """Accuracy and context-following of one condition in ``bins`` groups of scenes of equal size, from the
        faintest objects to the clearest: where the object is faint, a model must (and does) follow the context.
        """
        if condition not in self.probabilities or self.alpha is None:
            raise InputError(f"condition {condition!r} was not scored")
        pred = self.probabilities[condition].argmax(dim=1)
        order = self.alpha.argsort()
        rows = []
        for chunk in order.tensor_split(bins):
            ctx = self.context_labels[condition][chunk]
            has = ctx >= 0
            rows.append(
                {
                    "alpha_min": round(float(self.alpha[chunk].min()), 4),
                    "alpha_max": round(float(self.alpha[chunk].max()), 4),
                    "accuracy": round(float((pred[chunk] == self.labels[chunk]).float().mean()), 4),
                    "follows_context": round(float((pred[chunk] == ctx)[has].float().mean()), 4)
                    if has.any()
                    else math.nan,
                    "n": len(chunk),
                }
            )
        return rows

    @property
    def context_reliance(self) -> float:
        """P(both) - P(swapped), in [-1, 1]: the drop of the mean object-class probability when the context
        names another class (KeyError when those conditions were not scored)."""
        return self.conditions["both"]["probability"] - self.conditions["swapped"]["probability"]

    @property
    def object_reliance(self) -> float:
        """P(both) - P(context), in [-1, 1]: the drop of the mean object-class probability when the object is
        removed (KeyError when those conditions were not scored)."""
        return self.conditions["both"]["probability"] - self.conditions["context"]["probability"]

    def as_dict(self) -> dict:
        """JSON-able: conditions, the two summaries (when scored), n, seed and the config."""
        out: dict = {"conditions": self.conditions}
        if {"both", "swapped", "context"} <= set(self.conditions):
            out["context_reliance"] = round(self.context_reliance, 4)
            out["object_reliance"] = round(self.object_reliance, 4)
        if "swapped" in self.probabilities:
            out["swapped_by_contrast"] = self.by_contrast("swapped")
        return {**out, "n": self.n, "seed": self.seed, "config": self.config.to_dict()}

    def table(self) -> str:
        """A small text table, one row per condition."""
        lines = [f"{'condition':<10} {'accuracy':>9} {'P(class)':>9} {'follows ctx':>12}"]
        for name, c in self.conditions.items():
            fc = "" if math.isnan(c["follows_context"]) else f"{c['follows_context']:.3f}"
            lines.append(f"{name:<10} {c['accuracy']:>9.3f} {c['probability']:>9.3f} {fc:>12}")
        if {"both", "swapped", "context"} <= set(self.conditions):
            lines.append(
                f"context reliance {self.context_reliance:+.3f}, object reliance {self.object_reliance:+.3f}"
            )
        return "\n".join(lines)


@torch.no_grad()
def class_probabilities(classifier: Classifier, batch: WorldBatch, chunk: int = 500) -> Tensor:
    """The classifier's softmax over the scenes of ``batch``, ``chunk`` images at a time: (N, C) float in [0, 1],
    on the CPU."""
    probs = [classifier.predict(batch.images[i : i + chunk]).cpu() for i in range(0, len(batch), chunk)]
    return torch.cat(probs)


def evidence(
    classifier: Classifier,
    config: WorldConfig | None = None,
    n: int = 1000,
    seed: int = 12345,
    conditions: Sequence[str] = CONDITIONS,
) -> Evidence:
    """Measure, on ``n`` new scenes, how much ``classifier`` relies on the object and on the context.

    Args:
        config: the world to test in (default: the one the model was trained in, ``classifier.extra``).
        seed: the scenes; the swapped contexts use the same seed.
        conditions: which renderings to score (default all of ``CONDITIONS``; the summaries need
            ``both``, ``swapped`` and ``context``).
    """
    config = config or classifier.extra.get("world_config") or WorldConfig()
    if config.num_classes != classifier.num_classes:
        raise InputError(f"config has {config.num_classes} classes, the classifier {classifier.num_classes}")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise InputError(f"unknown conditions {sorted(unknown)}; choose from {', '.join(CONDITIONS)}")
    base = generate(config, n, seed)
    variants = {
        "natural": lambda: base,
        "both": base.agreeing_context,
        "swapped": lambda: base.swapped_context(seed),
        "object": base.object_only,
        "context": lambda: render(config, base.params, include_object=False, context_labels=base.labels),
        "neither": base.neither,
    }
    out: dict[str, dict[str, float]] = {}
    probabilities: dict[str, Tensor] = {}
    context_labels: dict[str, Tensor] = {}
    for name in conditions:
        b = variants[name]()
        p = class_probabilities(classifier, b)
        pred = p.argmax(dim=1)
        has_ctx = b.context_labels >= 0
        follows = float((pred == b.context_labels)[has_ctx].float().mean()) if has_ctx.any() else math.nan
        out[name] = {
            "accuracy": round(float((pred == b.labels).float().mean()), 4),
            "probability": round(float(p.gather(1, b.labels[:, None]).mean()), 4),
            "follows_context": round(follows, 4) if not math.isnan(follows) else math.nan,
        }
        probabilities[name] = p
        context_labels[name] = b.context_labels
    return Evidence(
        conditions=out,
        n=n,
        seed=seed,
        config=config,
        labels=base.labels,
        alpha=base.params["object_alpha"],
        probabilities=probabilities,
        context_labels=context_labels,
    )


@dataclass
class MapMass:
    """Fractions of each saliency map's total mass on the object, on the context cue and elsewhere: (N,) each,
    summing to 1 per image (a map with no mass counts as uniform)."""

    object: Tensor
    context: Tensor
    elsewhere: Tensor

    def as_tensor(self) -> Tensor:
        """(N, 3), columns in ``MASS_PARTS`` order."""
        return torch.stack([self.object, self.context, self.elsewhere], dim=1)

    def mean(self) -> dict[str, float]:
        """{part: mean fraction over the batch}."""
        return {p: float(getattr(self, p).mean()) for p in MASS_PARTS}


def map_mass(maps: Tensor, object_masks: WorldBatch | Tensor, context_masks: Tensor | None = None) -> MapMass:
    """Where a saliency map's mass lies: on the object, on the context cue, elsewhere.

    Args:
        maps: (N, 1, S, S) non-negative saliency maps.
        object_masks: a ``WorldBatch`` (its masks are used), or (N, 1, S, S) {0, 1} object masks.
        context_masks: (N, 1, S, S) {0, 1} context masks (when ``object_masks`` is a tensor).

    ``map_mass(torch.ones_like(maps), batch)`` gives the area fractions: what a uniform map would score.
    """
    if isinstance(object_masks, WorldBatch):
        object_masks, context_masks = object_masks.object_masks, object_masks.context_masks
    if context_masks is None:
        raise InputError("give a WorldBatch, or both object_masks and context_masks")
    if maps.dim() == 3:
        maps = maps[:, None]
    if maps.shape != object_masks.shape or maps.shape != context_masks.shape:
        raise InputError(
            f"maps {tuple(maps.shape)}, object masks {tuple(object_masks.shape)} and context masks "
            f"{tuple(context_masks.shape)} must have the same shape (N, 1, S, S)"
        )
    m = maps.detach().float().cpu().clamp(min=0)
    total = m.flatten(1).sum(dim=1)
    m = torch.where(total[:, None, None, None] > 0, m, torch.ones_like(m))
    total = m.flatten(1).sum(dim=1)
    om, cm = object_masks.float().cpu(), context_masks.float().cpu()
    obj = (m * om).flatten(1).sum(dim=1) / total
    ctx = (m * cm * (1 - om)).flatten(1).sum(dim=1) / total
    return MapMass(object=obj, context=ctx, elsewhere=(1 - obj - ctx).clamp(min=0))
