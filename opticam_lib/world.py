"""A controlled world where the truth is known: generated images, and a small CNN and a small ViT trained on them.

Saliency methods are hard to judge because nobody knows what a real classifier looks at. The paper argues
(section 5.4, Table 5) that classifiers use the context around the object, so bounding boxes are a poor ground
truth. Here the evidence is known by construction and measured on the trained models:

- every image has one **object** (class = shape and colour, e.g. "red disc") with its box and pixel mask, and a
  **context cue**: a striped patch in the background whose stripe orientation names a class. The cue agrees
  with the object's class in a chosen fraction of images (``context_agreement``, 0.9 by default). The object's
  contrast varies log-uniformly from nearly invisible to solid (``object_contrast``), so a model that uses the
  context gains where the object is faint; small **distractors** (the classes' shapes in the wrong colours)
  add clutter, and pixel noise and colour jitter blur the object's colour;
- ``generate(config, n, seed)`` renders a batch in vectorised torch, deterministic from the seed (thousands of
  images a second on a CPU); ``stream`` yields batches from ``(seed, index)``: nothing is stored;
- a batch re-renders itself without its context (``object_only``), without its object (``context_only``), with
  another class's context (``swapped_context``) or with any context (``with_context``), pixel noise unchanged;
- ``evidence(classifier)`` measures how much a trained model relies on the object and on the context, and
  ``map_mass(maps, batch)`` says which fraction of a saliency map lies on the object, on the context and
  elsewhere, so a map can be compared with what the model truly uses, not only with the box;
- three trained models, weights in ``opticam_lib/data`` (float16): ``world_cnn`` (ends in global average
  pooling and one linear layer, so CAM applies exactly), ``world_vit`` (timm ViT, class token, 8x8 patches) and
  ``world_cnn_permuted`` (the CNN trained on randomly permuted labels of a fixed training set, for the sanity
  checks of appendix G). ``load_classifier("world_cnn")`` loads them.

Reproduce the weights (a few minutes on 2 CPU cores each)::

    python -m opticam_lib.world train --arch cnn
    python -m opticam_lib.world train --arch vit
    python -m opticam_lib.world train --arch cnn --permuted-labels
    python -m opticam_lib.world speed          # generator speed, into the report
    python -m opticam_lib.world evidence --model world_cnn

Each training run writes its numbers (test accuracy with agreeing and swapped context, the evidence, training
time, steps, seed, config) into ``opticam_lib/data/world_report.json``.

Importing this module registers the three models and reads no file; weights are read when a model is loaded,
timm is imported when a ViT is built and tqdm when a model is trained.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError, MissingWeightsError
from .models import Classifier, InputNormalized, ModelSpec, register_model

__all__ = [
    "COLOURS",
    "CONDITIONS",
    "MASS_PARTS",
    "MODELS",
    "PALETTE",
    "SHAPES",
    "Evidence",
    "MapMass",
    "TrainResult",
    "WorldBatch",
    "WorldCNN",
    "WorldConfig",
    "batch_at",
    "build_network",
    "build_vit",
    "classifier_from_checkpoint",
    "evidence",
    "generate",
    "generator_speed",
    "load_checkpoint",
    "main",
    "make_classifier",
    "map_mass",
    "read_report",
    "render",
    "shape_masks",
    "stream",
    "train",
    "weights_file",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
REPORT_PATH = DATA_DIR / "world_report.json"

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "plus", "ring", "diamond", "hourglass", "frame")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple")
PALETTE = torch.tensor(
    [
        [0.90, 0.10, 0.10],
        [0.10, 0.75, 0.15],
        [0.15, 0.30, 0.95],
        [0.95, 0.85, 0.10],
        [0.90, 0.15, 0.85],
        [0.10, 0.85, 0.90],
        [1.00, 0.55, 0.05],
        [0.50, 0.20, 0.70],
    ]
)
MAX_CLASSES = len(SHAPES)
CONDITIONS: tuple[str, ...] = ("natural", "both", "swapped", "object", "context", "neither")
MASS_PARTS: tuple[str, ...] = ("object", "context", "elsewhere")
_CANDIDATES = 12  # placement tries per image (vectorised rejection sampling)


# --------------------------------------------------------------------------------------------------------------
# Configuration


def _pair(value: Sequence[float], name: str, top: float = 1.0, closed: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (0 < lo <= hi and (hi <= top if closed else hi < top)):
        raise InputError(
            f"{name} must satisfy 0 < low <= high {'<=' if closed else '<'} {top}, got {value!r}"
        )
    return lo, hi


@dataclass(frozen=True)
class WorldConfig:
    """What the generated world looks like. Every size is a fraction of the image side.

    Attributes:
        size: image side S in pixels (images are S x S).
        num_classes: K object classes, 2 to 8; class i is the shape ``SHAPES[i]`` in the colour ``COLOURS[i]``.
        colour_by_class: True (default): the object has its class's colour; False: its colour is drawn at random
            from the 8 colours of ``PALETTE``, so only its shape names the class (the small CNN then learns the
            stripes first, and within 800 steps uses nothing else: a pure shortcut model).
        context_agreement: probability that the context cue names the object's class; otherwise it names one
            of the K-1 other classes, uniformly. 1/K makes the context independent of the class, 0 misleading.
        object_size: range of the object's diameter.
        object_contrast: range of the object's opacity alpha over the plain background, drawn log-uniformly
            (perceived contrast is logarithmic): the object's pixels are ``alpha * colour + (1 - alpha) * grey``.
            Faint objects are where a model needs the context.
        context_size: range of the side of the striped context patch.
        stripe_period: period of the context stripes (orientation ``c * 180 / K`` degrees for class c).
        distractors: number of distractors per image: small shapes of the K classes (in a colour other than
            their class's when ``colour_by_class``), never over the object; 0 for none.
        distractor_size: range of a distractor's diameter (keep it below ``object_size``).
        noise: standard deviation of the Gaussian pixel noise (before clipping to [0, 1]).
        colour_jitter: the object's colour varies by up to this much per channel.
    """

    size: int = 64
    num_classes: int = 4
    colour_by_class: bool = True
    context_agreement: float = 0.9
    object_size: tuple[float, float] = (0.25, 0.42)
    object_contrast: tuple[float, float] = (0.01, 1.0)
    context_size: tuple[float, float] = (0.3, 0.45)
    stripe_period: float = 0.1
    distractors: int = 2
    distractor_size: tuple[float, float] = (0.1, 0.17)
    noise: float = 0.05
    colour_jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 16 <= self.size <= 512:
            raise InputError(f"size must be an integer between 16 and 512 pixels, got {self.size!r}")
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or not 2 <= self.num_classes <= MAX_CLASSES
        ):
            raise InputError(
                f"num_classes must be an integer from 2 to {MAX_CLASSES}, got {self.num_classes!r}"
            )
        if not 0.0 <= float(self.context_agreement) <= 1.0:
            raise InputError(f"context_agreement must lie in [0, 1], got {self.context_agreement!r}")
        for name in ("object_size", "context_size", "distractor_size"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        object.__setattr__(
            self, "object_contrast", _pair(self.object_contrast, "object_contrast", closed=True)
        )
        if self.object_size[1] > 0.8:
            raise InputError(
                f"object_size must stay below 0.8 so the object fits with its context: {self.object_size}"
            )
        if (
            isinstance(self.distractors, bool)
            or not isinstance(self.distractors, int)
            or self.distractors < 0
        ):
            raise InputError(f"distractors must be a non-negative integer, got {self.distractors!r}")
        if not 0 < self.stripe_period < 1:
            raise InputError(f"stripe_period must lie in (0, 1), got {self.stripe_period!r}")
        if self.noise < 0 or self.colour_jitter < 0:
            raise InputError("noise and colour_jitter must be non-negative")

    @property
    def categories(self) -> list[str]:
        """The K class names: ``["disc", "square", ...]`` (``["red disc", ...]`` when ``colour_by_class``)."""
        if self.colour_by_class:
            return [f"{COLOURS[i]} {SHAPES[i]}" for i in range(self.num_classes)]
        return list(SHAPES[: self.num_classes])

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        """Inverse of ``to_dict``; unknown keys are refused."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown WorldConfig fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# --------------------------------------------------------------------------------------------------------------
# Seeds


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (a stable hash: same parts, same seed, on any machine)."""
    import hashlib

    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


# --------------------------------------------------------------------------------------------------------------
# Rendering


def _grid(size: int) -> tuple[Tensor, Tensor]:
    c = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    return c[None, None, :], c[None, :, None]  # x (1, 1, S), y (1, S, 1)


def shape_masks(shapes: Tensor, centres: Tensor, radii: Tensor, size: int) -> Tensor:
    """Rasterise shapes: ``shapes`` (M,) indices into ``SHAPES``, ``centres`` (M, 2) xy in pixels, ``radii`` (M,)
    half-diameters in pixels. -> (M, S, S) bool, a pixel is in when its centre is."""
    x, y = _grid(size)
    out = torch.zeros(shapes.shape[0], size, size, dtype=torch.bool)
    for s in shapes.unique().tolist():
        idx = (shapes == s).nonzero()[:, 0]
        r = radii[idx][:, None, None]
        dx = (x - centres[idx, 0][:, None, None]) / r
        dy = (y - centres[idx, 1][:, None, None]) / r
        ax, ay = dx.abs(), dy.abs()
        name = SHAPES[s]
        if name == "disc":
            m = dx * dx + dy * dy <= 1.0
        elif name == "square":
            m = torch.maximum(ax, ay) <= 0.8
        elif name == "triangle":
            m = (dy >= -0.9) & (dy <= 0.75) & (ax <= (dy + 0.9) * 0.6)
        elif name == "plus":
            m = ((ax <= 0.33) & (ay <= 1.0)) | ((ay <= 0.33) & (ax <= 1.0))
        elif name == "ring":
            d2 = dx * dx + dy * dy
            m = (d2 <= 1.0) & (d2 >= 0.3)
        elif name == "diamond":
            m = ax + ay <= 1.0
        elif name == "hourglass":
            m = (ay <= 0.9) & (ax <= 0.15 + 0.75 * ay)
        else:  # frame
            mx = torch.maximum(ax, ay)
            m = (mx <= 0.85) & (mx >= 0.45)
        out[idx] = m
    return out


def _stripes(labels: Tensor, phase: Tensor, config: WorldConfig) -> Tensor:
    """(N,) context classes -> (N, S, S) long in {0, 1}: stripes at ``c * 180 / K`` degrees."""
    x, y = _grid(config.size)
    theta = labels.float() * math.pi / config.num_classes
    period = config.stripe_period * config.size
    proj = x * torch.cos(theta)[:, None, None] + y * torch.sin(theta)[:, None, None]
    t = proj / period + phase[:, None, None]
    return (t - t.floor() < 0.5).long()  # not torch.frac, which is negative for negative t


def _box_mask(boxes: Tensor, size: int) -> Tensor:
    """(N, 4) xyxy pixel boxes -> (N, S, S) bool (pixel centres inside)."""
    x, y = _grid(size)
    b = boxes[:, :, None, None]
    return (x >= b[:, 0]) & (x < b[:, 2]) & (y >= b[:, 1]) & (y < b[:, 3])


def _overlap(a: Tensor, b: Tensor) -> Tensor:
    """Do boxes a (..., 4) and b (..., 4) xyxy intersect?"""
    return (
        (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])
    )


def _first_valid(valid: Tensor) -> Tensor:
    """(N, M) bool -> (N,) index of the first True per row (0 when none)."""
    m = valid.shape[1]
    score = valid.float() * (m - torch.arange(m, dtype=torch.float32))
    return score.argmax(dim=1)


def _mask_boxes(masks: Tensor) -> Tensor:
    """(N, S, S) bool -> (N, 4) xyxy boxes (x1, y1 exclusive) of each mask; zeros for an empty mask."""
    s = masks.shape[-1]
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, S) over x, over y
    ar = torch.arange(s)
    big = s + 1
    x0 = torch.where(cols, ar, big).min(dim=1).values
    x1 = torch.where(cols, ar, -1).max(dim=1).values + 1
    y0 = torch.where(rows, ar, big).min(dim=1).values
    y1 = torch.where(rows, ar, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def _sample_params(config: WorldConfig, n: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Everything random about n images (the latent scene), drawn from ``gen`` in a fixed order."""
    s, k = config.size, config.num_classes

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    labels = torch.randint(0, k, (n,), generator=gen)
    agrees = torch.rand(n, generator=gen) < config.context_agreement
    offset = torch.randint(1, k, (n,), generator=gen)
    context_labels = torch.where(agrees, labels, (labels + offset) % k)

    radius = uniform(n, lo=config.object_size[0], hi=config.object_size[1]) * s / 2
    cx = radius + 1 + uniform(n) * (s - 2 * radius - 2)
    cy = radius + 1 + uniform(n) * (s - 2 * radius - 2)
    centre = torch.stack([cx, cy], dim=1)
    obj_box = torch.stack([cx - radius, cy - radius, cx + radius, cy + radius], dim=1)
    colour_index = labels if config.colour_by_class else torch.randint(0, len(PALETTE), (n,), generator=gen)
    base_colour = (
        PALETTE[colour_index] + uniform(n, 3, lo=-config.colour_jitter, hi=config.colour_jitter)
    ).clamp(0, 1)
    lo_c, hi_c = math.log(config.object_contrast[0]), math.log(config.object_contrast[1])
    alpha = torch.exp(uniform(n, lo=lo_c, hi=hi_c))

    # context patch: candidates, keep the first that misses the object's box
    side = (uniform(n, _CANDIDATES, lo=config.context_size[0], hi=config.context_size[1]) * s).round()
    px = (uniform(n, _CANDIDATES) * (s - side + 1)).floor()
    py = (uniform(n, _CANDIDATES) * (s - side + 1)).floor()
    cand = torch.stack([px, py, px + side, py + side], dim=2)
    pick = _first_valid(~_overlap(cand, obj_box[:, None, :]))
    context_box = cand[torch.arange(n), pick]
    phase = uniform(n)
    background = uniform(n, lo=0.4, hi=0.6)
    colour = alpha[:, None] * base_colour + (1 - alpha[:, None]) * background[:, None]
    stripe_lo = background - uniform(n, lo=0.2, hi=0.3)
    stripe_hi = background + uniform(n, lo=0.2, hi=0.3)

    d = config.distractors
    d_shape = torch.randint(0, k, (n, d), generator=gen)
    if config.colour_by_class:  # never the shape's own colour
        d_colour = (d_shape + torch.randint(1, k, (n, d), generator=gen)) % k
    else:
        d_colour = torch.randint(0, len(PALETTE), (n, d), generator=gen)
    d_radius = uniform(n, d, lo=config.distractor_size[0], hi=config.distractor_size[1]) * s / 2
    dcx = d_radius[..., None] + uniform(n, d, _CANDIDATES) * (s - 2 * d_radius[..., None])
    dcy = d_radius[..., None] + uniform(n, d, _CANDIDATES) * (s - 2 * d_radius[..., None])
    r3 = d_radius[..., None]
    dbox = torch.stack([dcx - r3 - 1, dcy - r3 - 1, dcx + r3 + 1, dcy + r3 + 1], dim=3)  # (n, d, C, 4)
    dpick = _first_valid((~_overlap(dbox, obj_box[:, None, None, :])).reshape(n * d, _CANDIDATES))
    rows = torch.arange(n * d)
    d_centre = torch.stack(
        [dcx.reshape(n * d, _CANDIDATES)[rows, dpick], dcy.reshape(n * d, _CANDIDATES)[rows, dpick]], dim=1
    )
    noise = torch.randn(n, 3, s, s, generator=gen) * config.noise
    return {
        "labels": labels,
        "context_labels": context_labels,
        "object_centre": centre,
        "object_radius": radius,
        "object_colour": colour,  # as drawn: alpha * base colour + (1 - alpha) * background
        "object_base_colour": base_colour,
        "object_alpha": alpha,
        "object_colour_index": colour_index,
        "context_box": context_box,
        "context_phase": phase,
        "background": background,
        "stripe_lo": stripe_lo,
        "stripe_hi": stripe_hi,
        "distractor_shape": d_shape,
        "distractor_colour": d_colour,
        "distractor_radius": d_radius,
        "distractor_centre": d_centre.reshape(n, d, 2),
        "noise": noise,
    }


@dataclass
class WorldBatch:
    """A batch of generated images and its ground truth.

    Attributes:
        images: (N, 3, S, S) float in [0, 1].
        labels: (N,) long, the object's class.
        boxes: (N, 4) float, the object's box xyxy in pixels, x1/y1 exclusive (the box of ``object_masks``).
        object_masks: (N, 1, S, S) float in {0, 1}, the object's pixels.
        context_masks: (N, 1, S, S) float in {0, 1}, the visible pixels of the context cue.
        context_agrees: (N,) bool, the context cue names the object's class.
        context_labels: (N,) long, the class the context cue names; -1 where the context was removed.
        distractor_masks: (N, 1, S, S) float in {0, 1}, the visible pixels of the distractors.
        config: the world's configuration.
        params: the latent scene (positions, sizes, colours, noise) from which every variant is re-rendered.
        has_object: False for a ``context_only`` batch (boxes then give where the object was).
    """

    images: Tensor
    labels: Tensor
    boxes: Tensor
    object_masks: Tensor
    context_masks: Tensor
    context_agrees: Tensor
    context_labels: Tensor
    distractor_masks: Tensor
    config: WorldConfig
    params: dict[str, Tensor] = field(repr=False)
    has_object: bool = True

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def categories(self) -> list[str]:
        """The class names of the world."""
        return self.config.categories

    def __getitem__(self, index: int | slice | Tensor | Sequence[int]) -> WorldBatch:
        """A sub-batch (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        sub = {k: v[index] for k, v in self.params.items()}
        return WorldBatch(
            images=self.images[index],
            labels=self.labels[index],
            boxes=self.boxes[index],
            object_masks=self.object_masks[index],
            context_masks=self.context_masks[index],
            context_agrees=self.context_agrees[index],
            context_labels=self.context_labels[index],
            distractor_masks=self.distractor_masks[index],
            config=self.config,
            params=sub,
            has_object=self.has_object,
        )

    def with_context(self, context_labels: Tensor | int | None) -> WorldBatch:
        """The same scenes with the context cue naming ``context_labels`` (N,) (an int: for every image);
        None removes the cue (its patch becomes plain background). Object, distractors and noise unchanged."""
        if context_labels is not None:
            t = torch.as_tensor(context_labels).long()
            if t.dim() == 0:
                t = t.expand(len(self))
            if tuple(t.shape) != (len(self),) or int(t.min()) < 0 or int(t.max()) >= self.config.num_classes:
                raise InputError(
                    f"context_labels must give one class in 0..{self.config.num_classes - 1} per image ({len(self)})"
                )
            context_labels = t
        return render(
            self.config,
            self.params,
            include_object=self.has_object,
            context_labels=context_labels,
            include_context=context_labels is not None,
        )

    def object_only(self) -> WorldBatch:
        """Context removed: the striped patch is replaced by the plain (neutral) background."""
        return self.with_context(None)

    def context_only(self) -> WorldBatch:
        """Object removed (its pixels become background); the context cue agrees with the class where it did."""
        return render(
            self.config, self.params, include_object=False, context_labels=self.params["context_labels"]
        )

    def agreeing_context(self) -> WorldBatch:
        """The same scenes with the context cue naming the object's class in every image."""
        return self.with_context(self.labels)

    def swapped_context(self, seed: int = 0) -> WorldBatch:
        """The context of another class in every image: ``(label + r) mod K`` with r uniform in 1..K-1 (seeded)."""
        k = self.config.num_classes
        gen = torch.Generator().manual_seed(derive_seed("swap", seed))
        offset = torch.randint(1, k, (len(self),), generator=gen)
        return self.with_context((self.labels + offset) % k)

    def neither(self) -> WorldBatch:
        """Neither object nor context: background, distractors and noise only."""
        return render(self.config, self.params, include_object=False, include_context=False)


def render(
    config: WorldConfig,
    params: dict[str, Tensor],
    *,
    include_object: bool = True,
    include_context: bool = True,
    context_labels: Tensor | None = None,
) -> WorldBatch:
    """Draw the scenes ``params``: background, context patch, distractors, object (in that order), then noise.

    ``context_labels`` overrides the classes the context cues name (default: the scene's own).
    """
    n = params["labels"].shape[0]
    s = config.size
    labels = params["labels"]
    ctx = params["context_labels"] if context_labels is None else context_labels
    d = params["distractor_shape"].shape[1]

    # one layer index per pixel (0 background, 1/2 dark/light stripe, 3.. distractors, 3+d object), then one
    # gather from a per-image colour table: the (N, 3, S, S) image is touched only by the gather and the noise
    layer = torch.zeros(n, s, s, dtype=torch.long)
    patch = _box_mask(params["context_box"], s) if include_context else torch.zeros(n, s, s, dtype=torch.bool)
    if include_context:
        stripe = _stripes(ctx, params["context_phase"], config)
        layer = torch.where(patch, 1 + stripe, layer)
    clutter = torch.zeros(n, s, s, dtype=torch.bool)
    if d:
        dm = shape_masks(
            params["distractor_shape"].reshape(-1),
            params["distractor_centre"].reshape(-1, 2),
            params["distractor_radius"].reshape(-1),
            s,
        ).reshape(n, d, s, s)
        for j in range(d):
            layer.masked_fill_(dm[:, j], 3 + j)
        clutter = dm.any(dim=1)
    obj = shape_masks(labels, params["object_centre"], params["object_radius"], s)
    if include_object:
        layer.masked_fill_(obj, 3 + d)
        clutter &= ~obj

    grey = params["background"][:, None, None].expand(n, 1, 3)
    table = torch.cat(
        [
            grey,
            params["stripe_lo"][:, None, None].expand(n, 1, 3),
            params["stripe_hi"][:, None, None].expand(n, 1, 3),
            PALETTE[params["distractor_colour"]].reshape(n, d, 3),
            params["object_colour"][:, None, :],
        ],
        dim=1,
    )  # (N, 4 + d, 3)
    flat = layer.view(n, 1, s * s).expand(n, 3, s * s)
    img = table.transpose(1, 2).gather(2, flat).view(n, 3, s, s)
    img = (img + params["noise"]).clamp_(0.0, 1.0)

    boxes = _mask_boxes(obj)
    obj_visible = obj if include_object else torch.zeros_like(obj)
    context_mask = patch & ~clutter & ~obj_visible
    ctx_out = ctx.clone() if include_context else torch.full_like(labels, -1)
    return WorldBatch(
        images=img,
        labels=labels.clone(),
        boxes=boxes,
        object_masks=obj_visible[:, None].float(),
        context_masks=context_mask[:, None].float(),
        context_agrees=(ctx_out == labels),
        context_labels=ctx_out,
        distractor_masks=clutter[:, None].float(),
        config=config,
        params={**params, "context_labels": ctx if include_context else params["context_labels"]},
        has_object=include_object,
    )


def generate(config: WorldConfig | None = None, n: int = 64, seed: int = 0) -> WorldBatch:
    """``n`` labelled images, a deterministic function of ``(config, n, seed)``.

    Returns a ``WorldBatch``: images (N, 3, S, S) in [0, 1], labels, boxes (xyxy pixels), object masks,
    context masks, context_agrees, context_labels (and the latent scene, to re-render variants).
    """
    config = WorldConfig() if config is None else config
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    gen = torch.Generator().manual_seed(int(seed) % (2**63))
    return render(config, _sample_params(config, n, gen))


def batch_at(config: WorldConfig | None, batch_size: int, seed: int, index: int) -> WorldBatch:
    """Batch number ``index`` of the stream ``seed``: ``generate(config, batch_size, derive_seed("stream", seed,
    index))``; any batch is available without generating the ones before it."""
    return generate(config, batch_size, derive_seed("stream", seed, index))


def stream(
    config: WorldConfig | None = None,
    batch_size: int = 64,
    seed: int = 0,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[WorldBatch]:
    """Batches ``start, start+1, ...`` (endless unless ``stop``) of the stream ``seed``; nothing is stored."""
    i = start
    while stop is None or i < stop:
        yield batch_at(config, batch_size, seed, i)
        i += 1


def generator_speed(config: WorldConfig | None = None, n: int = 1024, repeats: int = 3) -> float:
    """Images per second of ``generate`` on this machine (best of ``repeats`` batches of ``n``)."""
    config = WorldConfig() if config is None else config
    generate(config, 16, 0)  # warm-up
    best = math.inf
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(config, n, r)
        best = min(best, time.perf_counter() - t0)
    return n / best


# --------------------------------------------------------------------------------------------------------------
# Measuring what a model relies on, and where a saliency map lies


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
        return self.conditions["both"]["probability"] - self.conditions["swapped"]["probability"]

    @property
    def object_reliance(self) -> float:
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
def _score(classifier: Classifier, batch: WorldBatch, chunk: int = 500) -> Tensor:
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
        p = _score(classifier, b)
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


# --------------------------------------------------------------------------------------------------------------
# The networks


class WorldCNN(nn.Module):
    """Four conv blocks (the first with stride 2, two max-pools), global average pooling, one linear layer.

    64 x 64 input -> ``features.3`` output (N, 2w, 8, 8) -> mean over space -> ``fc``. CAM applies exactly.
    """

    def __init__(self, num_classes: int = 4, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, pool: bool = False) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        w = width
        self.features = nn.Sequential(
            block(3, w // 2, stride=2),
            block(w // 2, w, pool=True),
            block(w, 2 * w, pool=True),
            block(2 * w, 2 * w),
        )
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def build_vit(
    num_classes: int = 4, size: int = 64, dim: int = 64, depth: int = 4, heads: int = 4, patch: int = 8
):
    """A tiny timm ``VisionTransformer`` with a class token, fused attention off (attention probabilities are
    materialised, so rollout and attention hooks see them)."""
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=size,
        patch_size=patch,
        num_classes=num_classes,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=2.0,
        class_token=True,
        global_pool="token",
    )
    for blk in net.blocks:
        blk.attn.fused_attn = False
    return net


def build_network(arch: str, num_classes: int, size: int, **kwargs) -> nn.Module:
    """``"cnn"`` -> ``WorldCNN``; ``"vit"`` -> ``build_vit``."""
    if arch == "cnn":
        return WorldCNN(num_classes, **kwargs)
    if arch == "vit":
        return build_vit(num_classes, size, **kwargs)
    raise InputError(f"unknown arch {arch!r}; choose cnn or vit")


def _target_layer(arch: str, net: nn.Module) -> str:
    if arch == "cnn":
        return f"features.{len(net.features) - 1}"
    return f"blocks.{len(net.blocks) - 1}.norm1"


def make_classifier(
    arch: str,
    net: nn.Module,
    config: WorldConfig,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    name: str = "world",
    extra: dict | None = None,
) -> Classifier:
    """Wrap a world network as a ``Classifier`` (normalisation inside, class names, target layer, head)."""
    clf = Classifier(
        name=name,
        model=InputNormalized(net, mean, std).eval(),
        target_layer=_target_layer(arch, net),
        categories=config.categories,
        input_size=config.size,
        linear_head="fc" if arch == "cnn" else None,
        prefix_tokens=None if arch == "cnn" else 1,
        extra={"world_config": config, "arch": arch, **(extra or {})},
    )
    return clf


# --------------------------------------------------------------------------------------------------------------
# Committed models: registry and loaders

MODELS: dict[str, dict] = {
    "world_cnn": {"arch": "cnn", "permuted_labels": False},
    "world_vit": {"arch": "vit", "permuted_labels": False},
    "world_cnn_permuted": {"arch": "cnn", "permuted_labels": True},
}


def weights_file(name: str) -> Path:
    """``opticam_lib/data/<name>.pt``."""
    return DATA_DIR / f"{name}.pt"


def _train_command(name: str) -> str:
    spec = MODELS[name]
    return f"python -m opticam_lib.world train --arch {spec['arch']}" + (
        " --permuted-labels" if spec["permuted_labels"] else ""
    )


def load_checkpoint(path: str | Path) -> dict:
    """A world checkpoint: ``{"state_dict": ..., "meta": {...}}`` (``torch.load(weights_only=True)``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def classifier_from_checkpoint(
    checkpoint: dict, name: str = "world", normalize: bool = True, pretrained: bool = True
) -> Classifier:
    """Build the network a checkpoint describes; load its weights (upcast to float32) when ``pretrained``."""
    meta = checkpoint["meta"]
    config = WorldConfig.from_dict(meta["config"])
    with torch.random.fork_rng(devices=[]):  # building draws random weights: leave the caller's RNG alone
        net = build_network(meta["arch"], config.num_classes, config.size, **meta.get("arch_kwargs", {}))
    if pretrained:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
        )
    extra = {k: meta[k] for k in ("seed", "steps", "permuted_labels", "arch_kwargs") if k in meta}
    return make_classifier(
        meta["arch"],
        net,
        config,
        meta["mean"] if normalize else None,
        meta["std"] if normalize else None,
        name=name,
        extra=extra,
    )


def _loader(name: str):
    def load(normalize: bool = True, pretrained: bool = True) -> Classifier:
        path = weights_file(name)
        if not path.is_file():
            if pretrained:
                raise MissingWeightsError(f"{path} is missing; train it with: {_train_command(name)}")
            spec = MODELS[name]
            config = WorldConfig()
            net = build_network(spec["arch"], config.num_classes, config.size)
            return make_classifier(
                spec["arch"],
                net,
                config,
                (0.5,) * 3 if normalize else None,
                (0.25,) * 3 if normalize else None,
                name=name,
            )
        return classifier_from_checkpoint(load_checkpoint(path), name, normalize, pretrained)

    return load


_DESCRIPTIONS = {
    "world_cnn": "controlled world: small CNN (4 conv blocks, GAP, fc) on generated 64x64 shapes with context "
    "cues; features.3 feeds GAP + one linear layer, so CAM applies",
    "world_vit": "controlled world: tiny timm ViT (8x8 patches, dim 64, depth 4, class token) on generated shapes; "
    "blocks.3.norm1, 8x8 tokens",
    "world_cnn_permuted": "controlled world: the small CNN trained on randomly permuted labels of a fixed set "
    "(sanity checks, appendix G)",
}
for _name in MODELS:
    register_model(_name, ModelSpec(_loader(_name), _DESCRIPTIONS[_name]))


# --------------------------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    """What ``train`` returns: the trained classifier (float32), a JSON-able report, the loss per step."""

    classifier: Classifier
    report: dict
    losses: list[float]
    checkpoint: dict


DEFAULT_STEPS = {"cnn": 800, "vit": 1500, "cnn_permuted": 1500, "vit_permuted": 3000}


def _channel_stats(config: WorldConfig, seed: int) -> tuple[list[float], list[float]]:
    x = generate(config, 512, derive_seed("stats", seed)).images
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return [round(float(v), 3) for v in mean], [round(float(v), 3) for v in std]


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def train(
    arch: str = "cnn",
    *,
    steps: int | None = None,
    seed: int = 0,
    permuted_labels: bool = False,
    config: WorldConfig | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    train_set: int = 512,
    arch_kwargs: dict | None = None,
    eval_n: int = 1000,
    progress: bool = True,
    name: str | None = None,
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train a world network from ``seed`` and evaluate it on held-out scenes.

    Args:
        arch: ``"cnn"`` or ``"vit"``.
        steps: optimiser steps (default ``DEFAULT_STEPS``).
        permuted_labels: train on a fixed set of ``train_set`` scenes whose labels are drawn at random per image
            (fixed by the seed), as in appendix G; otherwise on a fresh stream of scenes (no image seen twice).
        config: the world (default ``WorldConfig()``: 4 classes, context agreement 0.9).
        eval_n: held-out scenes for the test accuracies and the evidence (0 to skip).
        device: where the network trains (images are generated on the CPU); the result is on the CPU.
    Returns:
        ``TrainResult`` with the classifier (eval mode, weights rounded through float16 as committed), the
        report (accuracies with agreeing and swapped context, evidence, time, steps, seed, config) and losses.
    """
    from tqdm.auto import tqdm

    config = config or WorldConfig()
    key = arch + ("_permuted" if permuted_labels else "")
    steps = steps or DEFAULT_STEPS.get(key, 1500)
    if lr is None:
        lr = {"cnn": 3e-3, "vit": 2e-3}[arch]
    arch_kwargs = dict(arch_kwargs or {})
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
        torch.manual_seed(derive_seed("init", seed, key))
        net = build_network(arch, config.num_classes, config.size, **arch_kwargs)
    mean, std = _channel_stats(config, seed)
    norm = InputNormalized(net, mean, std).to(device)

    decay = [p for n_, p in net.named_parameters() if p.dim() > 1 and "pos_embed" not in n_]
    no_decay = [p for n_, p in net.named_parameters() if not (p.dim() > 1 and "pos_embed" not in n_)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": 0.05 if arch == "vit" else 1e-4},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    fixed = None
    if permuted_labels:
        fixed = generate(config, train_set, derive_seed("fixed", seed))
        gen = torch.Generator().manual_seed(derive_seed("permute", seed))
        random_labels = torch.randint(0, config.num_classes, (train_set,), generator=gen)
        order_gen = torch.Generator().manual_seed(derive_seed("order", seed))
        order = torch.randperm(train_set, generator=order_gen)
        cursor = 0

    losses: list[float] = []
    t0 = time.perf_counter()
    norm.train()
    bar = tqdm(range(steps), desc=f"train {key}", disable=not progress, mininterval=1.0)
    for step in bar:
        if fixed is None:
            b = batch_at(config, batch_size, derive_seed("train", seed), step)
            x, y = b.images, b.labels
        else:
            if cursor + batch_size > train_set:
                order = torch.randperm(train_set, generator=order_gen)
                cursor = 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            x, y = fixed.images[idx], random_labels[idx]
        loss = F.cross_entropy(norm(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if arch == "vit":
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    bar.close()
    seconds = time.perf_counter() - t0

    state = {k: (v.cpu().half() if v.is_floating_point() else v.cpu()) for k, v in net.state_dict().items()}
    meta = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "config": config.to_dict(),
        "mean": mean,
        "std": std,
        "categories": config.categories,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "permuted_labels": permuted_labels,
    }
    if permuted_labels:
        meta["train_set"] = train_set
    checkpoint = {"state_dict": state, "meta": meta}
    clf = classifier_from_checkpoint(checkpoint, name=name or f"world_{key}")

    report: dict = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "parameters": sum(p.numel() for p in net.parameters()),
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "permuted_labels": permuted_labels,
        "config": config.to_dict(),
        "mean": mean,
        "std": std,
        "train_seconds": round(seconds, 1),
        "images_seen": steps * batch_size,
        "loss_first_50": round(sum(losses[:50]) / len(losses[:50]), 4),
        "loss_last_50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "machine": _machine(),
        "device": str(device),
    }
    if permuted_labels:
        probs = _score(clf, fixed)
        report["train_set"] = train_set
        report["train_accuracy_random_labels"] = round(
            float((probs.argmax(1) == random_labels).float().mean()), 4
        )
        report["train_accuracy_true_labels"] = round(
            float((probs.argmax(1) == fixed.labels).float().mean()), 4
        )
    if eval_n:
        ev = evidence(clf, config, n=eval_n, seed=derive_seed("test", seed))
        c = ev.conditions
        report["test"] = {
            "n": eval_n,
            "seed": ev.seed,
            "accuracy_natural": c["natural"]["accuracy"],
            "accuracy_agreeing": c["both"]["accuracy"],
            "accuracy_swapped": c["swapped"]["accuracy"],
            "swapped_follows_context": c["swapped"]["follows_context"],
            "accuracy_object_only": c["object"]["accuracy"],
            "accuracy_context_only": c["context"]["accuracy"],
        }
        report["evidence"] = ev.as_dict()
        del report["evidence"]["config"]
    return TrainResult(classifier=clf, report=report, losses=losses, checkpoint=checkpoint)


def read_report(path: str | Path = REPORT_PATH) -> dict:
    """The committed report (``{"generator": ..., "models": {name: ...}}``); empty sections when missing."""
    path = Path(path)
    if not path.is_file():
        return {"generator": {}, "models": {}}
    return json.loads(path.read_text())


def _write_report(update: dict, path: Path) -> None:
    report = read_report(path)
    for section, values in update.items():
        report.setdefault(section, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n")


def _json_safe(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------------------
# Command line


def _reproduce_command(args: argparse.Namespace, rep: dict) -> str:
    """The command that retrains this model: every setting spelled out (so later default changes do not matter)."""
    parts = ["python -m opticam_lib.world train", f"--arch {args.arch}"]
    if args.permuted_labels:
        parts += ["--permuted-labels", f"--train-set {rep['train_set']}"]
    parts += [
        f"--steps {rep['steps']}",
        f"--seed {rep['seed']}",
        f"--batch-size {rep['batch_size']}",
        f"--lr {rep['lr']}",
    ]
    if rep["arch_kwargs"]:
        parts.append(f"--arch-kwargs '{json.dumps(rep['arch_kwargs'])}'")
    parts.append(f"--config '{json.dumps(rep['config'])}'")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    return " ".join(parts)


def _cmd_train(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    key = args.arch + ("_permuted" if args.permuted_labels else "")
    out = Path(args.out) if args.out else DATA_DIR / f"world_{key}.pt"
    config = WorldConfig.from_dict(json.loads(args.config)) if args.config else None
    result = train(
        args.arch,
        steps=args.steps,
        seed=args.seed,
        permuted_labels=args.permuted_labels,
        config=config,
        batch_size=args.batch_size,
        lr=args.lr,
        train_set=args.train_set,
        arch_kwargs=json.loads(args.arch_kwargs) if args.arch_kwargs else None,
        eval_n=args.eval_n,
        name=out.stem,
        device=args.device,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.checkpoint, out)
    rep = result.report
    rep["file"] = str(out.name)
    rep["file_bytes"] = out.stat().st_size
    rep["generator_images_per_s"] = round(generator_speed(WorldConfig.from_dict(rep["config"]), 512, 2))
    rep["command"] = _reproduce_command(args, rep)
    if not args.no_report:
        _write_report({"models": {out.stem: _json_safe(rep)}}, Path(args.report))
    print(f"saved {out} ({rep['file_bytes'] / 1024:.0f} KiB) in {rep['train_seconds']:.0f} s")
    if "train_accuracy_random_labels" in rep:
        print(f"train accuracy on the random labels: {rep['train_accuracy_random_labels']:.3f}")
    if "test" in rep:
        t = rep["test"]
        print(
            f"test accuracy: natural {t['accuracy_natural']:.3f}, agreeing context {t['accuracy_agreeing']:.3f}, "
            f"swapped context {t['accuracy_swapped']:.3f} (follows the context {t['swapped_follows_context']:.3f})"
        )
        ev = rep["evidence"]
        print(f"context reliance {ev['context_reliance']:+.3f}, object reliance {ev['object_reliance']:+.3f}")
    return 0


def _cmd_speed(args: argparse.Namespace) -> int:
    config = WorldConfig(size=args.size)
    speed = generator_speed(config, args.n)
    print(
        f"generate: {speed:,.0f} images/s ({args.size}x{args.size}, batches of {args.n}, "
        f"{torch.get_num_threads()} torch threads)"
    )
    if not args.no_report:
        entry = {"images_per_s": round(speed), "size": args.size, "batch": args.n, "machine": _machine()}
        if args.label:
            entry["label"] = args.label
        previous = read_report(Path(args.report)).get("generator", {}).get("measurements", [])
        _write_report({"generator": {**entry, "measurements": [*previous, entry]}}, Path(args.report))
    return 0


def _cmd_evidence(args: argparse.Namespace) -> int:
    from .models import load_classifier

    clf = load_classifier(args.model)
    ev = evidence(clf, n=args.n, seed=args.seed)
    print(f"{args.model}: evidence on {args.n} new scenes (seed {args.seed})")
    print(ev.table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m opticam_lib.world {train,speed,evidence} ...``"""
    parser = argparse.ArgumentParser(prog="python -m opticam_lib.world", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train world_cnn / world_vit / world_cnn_permuted from a seed")
    p.add_argument("--arch", choices=("cnn", "vit"), default="cnn")
    p.add_argument("--permuted-labels", action="store_true", help="random labels on a fixed training set")
    p.add_argument("--steps", type=int, default=None, help=f"optimiser steps (default {DEFAULT_STEPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-n", type=int, default=2000, help="held-out scenes for the test accuracies")
    p.add_argument(
        "--out", default=None, help="weights file (default opticam_lib/data/world_<arch>[_permuted].pt)"
    )
    p.add_argument("--report", default=str(REPORT_PATH), help="JSON report to update")
    p.add_argument("--no-report", action="store_true", help="do not update the report")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-3 cnn, 2e-3 vit)")
    p.add_argument(
        "--train-set", type=int, default=512, help="fixed training set size with --permuted-labels"
    )
    p.add_argument(
        "--config", default=None, help="WorldConfig fields as JSON, e.g. '{\"context_agreement\": 0.5}'"
    )
    p.add_argument("--arch-kwargs", default=None, help="network options as JSON, e.g. '{\"width\": 16}'")
    p.add_argument("--device", default="cpu", help="where the network trains (cpu, cuda)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("speed", help="measure the generator's images per second")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--label", default="", help="a note stored with the measurement (e.g. the machine's load)")
    p.add_argument("--report", default=str(REPORT_PATH))
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=_cmd_speed)
    p = sub.add_parser("evidence", help="how much a world model relies on object and context")
    p.add_argument("--model", default="world_cnn")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=12345)
    p.set_defaults(func=_cmd_evidence)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
