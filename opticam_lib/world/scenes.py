"""The controlled world's scenes: one object (class = shape and colour) with its box and mask, a striped
context cue, distractors and noise, rendered in vectorised torch and deterministic from a seed.

``generate(config, n, seed)`` -> ``WorldBatch`` with images (N, 3, S, S) float in [0, 1]; ``stream`` yields
batches from (seed, index); a batch re-renders itself without its context or object."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor

from opticam_lib.errors import InputError

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


_CANDIDATES = 12  # placement tries per image (vectorised rejection sampling)


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


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from a tuple of ints and strings (a stable hash: same parts, same seed, on any machine)."""
    import hashlib

    text = "/".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


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
