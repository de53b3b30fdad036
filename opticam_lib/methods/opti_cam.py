"""Opti-CAM (eq. 8-12) and the variants the paper studies (eq. 16-19, and eq. A1, A2 of appendix F.2).

The saliency map is a convex combination of the feature maps of layer l (eq. 8), ``S(x; u) =
h(sum_k softmax(u)_k A^k)``, and u maximises the objective F (eq. 9), by default the logit of class c for the
image masked by the upsampled, normalised map (eq. 10). Adam, lr 0.1, 100 iterations, stop when the change in
the objective is below 1e-10 (appendix A).

What this implementation does that the authors' script (github.com/hanwei0912/OptiCAM) does not:

- the feature maps and the unmasked logits are computed once, with no graph, and detached;
- the model's parameters are frozen during the optimisation (so each backward pass computes gradients for u
  only) and their ``requires_grad`` and train/eval flags are restored afterwards, also after an exception;
  no ``.grad`` is left in any parameter;
- a constant map normalises to zeros, not NaN;
- a whole batch is optimised at once, one u and one target per image; each image stops on its own, and images
  that stopped are no longer forwarded. Adam's update is element-wise, so this is mathematically the result
  of optimising each image alone (numerically, up to round-off: notebook 11 measures it).

Options for a GPU (issue 13), off by default: ``fold_batchnorm`` and ``channels_last`` run a folded copy of the model
(``models/fast.py``; the caller's model is untouched), ``amp_dtype`` picks autocast's precision, and ``graph``
captures one iteration in a CUDA graph and replays it. A graph needs static shapes, so with ``graph`` the batch
keeps its size: finished images are still forwarded, but their u, moments and history are masked and no longer
change (the same result as dropping them). Where capture is impossible (CPU, a model that syncs with the host)
the same masked step runs eagerly, and a warning says so once; the iRprop+ optimizer turns ``graph`` off and runs
the default eager loop.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from opticam_lib.errors import InputError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import (
    Targets,
    as_python_scalar,
    prepare,
    require_autograd,
    require_graph,
    validate_choice,
    validate_positive_int,
)
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.maps import NORMALIZATIONS, UPSAMPLINGS, combine, resolve_upsampling, to_saliency
from opticam_lib.models.classifier import Classifier
from opticam_lib.models.fast import fast_copy

OBJECTIVES: tuple[str, ...] = ("mask", "diff", "iomask", "iodiff")
SELECTORS: tuple[str, ...] = ("logit", "prob", "logprob")
INITS: tuple[str, ...] = ("constant", "random")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "rprop")
#: iRprop+'s fixed settings (Igel & Huesken 2000): step factors on a kept / flipped gradient sign, step bounds
RPROP_ETAS: tuple[float, float] = (1.2, 0.5)
RPROP_STEPS: tuple[float, float] = (1e-3, 1.0)
RPROP_ZERO: float = 1e-5  # gradient components below this fraction of the image's largest count as zero
#: the default first step (``lr``) of each optimizer
DEFAULT_LR: dict[str, float] = {"adam": 0.1, "sgd": 0.1, "rprop": 0.5}
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
Schedule = str | Callable[[int, int], float]
AMP_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
#: with ``graph``, the host checks for finished images and non-finite objectives every this many replays
GRAPH_CHECK_EVERY: int = 8
_SAID: set[str] = set()  # the fallback messages already given (each is said once per process)


def _say_once(message: str, stacklevel: int = 3) -> None:
    """Warn with ``message`` the first time only (``stacklevel`` 3: the caller of the function calling this)."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def adam_step(
    u: Tensor,
    m: Tensor,
    v: Tensor,
    g: Tensor,
    t: Tensor,
    lr: float | Tensor,
    b1: float,
    b2: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step on u (minimising, so pass g = -dF/du), per row: returns the new (u, m, v).

    ``t`` (N, 1) is each row's step count (>= 1) for the bias corrections ``1 - b1**t`` and ``1 - b2**t``."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return u - lr * m_hat / (v_hat.sqrt() + eps), m, v


def sgd_step(u: Tensor, m: Tensor, g: Tensor, lr: float | Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """One heavy-ball SGD step (torch.optim.SGD, dampening 0) on u for g = -dF/du: returns the new (u, m)."""
    m = momentum * m + g
    return u - lr * m, m


def lr_factor(schedule: Schedule, step: int, total: int) -> float:
    """The learning-rate multiplier of ``schedule`` for 0-based ``step`` of ``total`` steps.

    - ``"constant"``: 1 (the paper's setting);
    - ``"cosine"``: ``(1 + cos(pi * step / total)) / 2``, from 1 down towards 0, as
      ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total, eta_min=0)``;
    - ``"step"``: 1 for the first half of the steps, then 0.1, as ``StepLR(step_size=ceil(total / 2), gamma=0.1)``;
    - a callable ``f(step, total) -> float`` (non-negative) for anything else.
    """
    if callable(schedule):
        try:
            factor = float(schedule(step, total))
        except (TypeError, ValueError) as err:  # wrong signature, or not a number
            raise InputError(
                "a schedule must be a function (step, total) -> float factor of the learning rate; calling it "
                f"at step {step} raised {type(err).__name__}: {err}"
            ) from err
        if not math.isfinite(factor) or factor < 0:
            raise InputError(
                f"a schedule must return a finite non-negative factor, got {factor!r} at step {step}"
            )
        return factor
    validate_choice(schedule, "schedule", SCHEDULES)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    if schedule == "step":
        return 0.1 ** (step // math.ceil(total / 2))
    return 1.0


@dataclass
class OptiCAMResult:
    """What ``optimize`` returns.

    Attributes:
        maps: (N, 1, H, W) float in [0, 1], ``n(up(S(x; u*)))`` (eq. 11).
        u: (N, K) the optimised variable u*.
        weights: (N, K) ``softmax(u*)``, the channel weights (non-negative, summing to 1).
        history: (N, T) the objective F of every image at every iteration (T = ``iterations``); NaN after the
            iteration where the image stopped early.
        iterations: (N,) iterations run for each image.
        targets: (N,) the class c of each image.
        seconds: wall-clock time of the optimisation (features included).
        loop: how the iterations ran: ``"eager"`` (the default loop), ``"graph"`` (``graph=True``: captured in a
            CUDA graph and replayed) or ``"static"`` (``graph=True`` without a graph: the same masked step run
            eagerly, on a CPU or when capture failed).
    """

    maps: Tensor
    u: Tensor
    weights: Tensor
    history: Tensor
    iterations: Tensor
    targets: Tensor
    seconds: float
    loop: str = "eager"


def saliency_map(
    u: Tensor,
    activations: Tensor,
    size: tuple[int, int],
    normalization: str = "range",
    activation: str = "identity",
    upsampling: str = "interpolate",
) -> Tensor:
    """Eq. (8) then ``n(up(.))``: ``n(up(h(sum_k softmax(u)_k A^k)))``.

    Args:
        u: (N, K) variable.
        activations: (N, K, h, w) feature maps A^k (fixed).
        size: (H, W) of the input image.
        normalization: n, ``"range"`` (eq. 16, default), ``"max"`` (eq. 17) or ``"sigmoid"`` (eq. 18).
        activation: h, ``"identity"`` (the paper's choice) or ``"relu"``.
        upsampling: how ``up`` is computed, ``"interpolate"`` (default) or ``"matrix"`` (``maps.upsample``).
    Returns:
        (N, 1, H, W) float in [0, 1], differentiable in u.
    """
    return to_saliency(
        combine(torch.softmax(u, dim=1), activations, activation), size, normalization, upsampling
    )


def select(logits: Tensor, targets: Tensor, selector: str = "logit") -> Tensor:
    """The selector g_c of eq. (10) on logits (N, C), targets (N,) long: logit y_c, probability p_c or
    log-probability. -> (N,)."""
    if selector == "logit":
        out = logits
    elif selector == "prob":
        out = torch.softmax(logits, dim=1)
    elif selector == "logprob":
        out = torch.log_softmax(logits, dim=1)
    else:
        validate_choice(selector, "selector", SELECTORS)
    return out.gather(1, targets[:, None])[:, 0]


def compute_objective(
    classifier: Classifier,
    images: Tensor,
    masks: Tensor,
    targets: Tensor,
    kind: str = "mask",
    selector: str = "logit",
    original: Tensor | None = None,
) -> Tensor:
    """The objective F for each image, to be maximised. -> (N,).

    Args: images (N, 3, H, W) float in [0, 1]; masks (N, 1, H, W) float in [0, 1]; targets (N,) long class ids.

    With s = n(up(S(x; u))) the mask (N, 1, H, W) in [0, 1] and g = g_c(f(.)):

    - ``"mask"`` (eq. 10): ``g(x ⊙ s)``;
    - ``"diff"`` (eq. 19): ``-|g(x) - g(x ⊙ s)|``;
    - ``"iomask"`` (eq. A1 of appendix F.2, not appendix B's OM): ``g(x ⊙ s) - g(x ⊙ (1 - s))``;
    - ``"iodiff"`` (eq. A2 of appendix F.2): ``-|g(x) - g(x ⊙ s)| + |g(x) - g(x ⊙ (1 - s))|``.

    ``original`` (N,) is g(x) on the unmasked images, needed by the Diff variants (computed once, no graph).
    The In/Out variants forward both masked images in one batch.
    """
    validate_choice(kind, "objective", OBJECTIVES)
    n = images.shape[0]
    masks = masks.to(images.dtype)  # a half or double model: float32 masks must not promote its input
    if kind in ("iomask", "iodiff"):
        batch = torch.cat([images * masks, images * (1 - masks)])
        g = select(classifier.model(batch), torch.cat([targets, targets]), selector)
        g_in, g_out = g[:n], g[n:]
    else:
        g_in = select(classifier.model(images * masks), targets, selector)
    if kind == "mask":
        return g_in
    if kind == "iomask":
        return g_in - g_out
    if original is None:
        raise InputError(f"objective {kind!r} needs the original scores g_c(f(x))")
    if kind == "diff":
        return -(original - g_in).abs()
    return -(original - g_in).abs() + (original - g_out).abs()


def initial_u(init: str | Tensor, n: int, k: int, seed: int | None, device: torch.device) -> Tensor:
    """Opti-CAM's start: (N, K) float32 ``u`` for ``init`` (see ``optimize``) on ``device``."""
    if isinstance(init, Tensor):
        u = init.detach().to(device=device, dtype=torch.float32)
        if u.dim() == 1:
            u = u.expand(n, -1)
        if tuple(u.shape) != (n, k):
            raise InputError(f"init tensor must have shape ({k},) or ({n}, {k}), got {tuple(init.shape)}")
        return u.clone()
    validate_choice(init, "init", INITS)
    if init == "constant":  # the authors' choice: 0.5 everywhere, i.e. uniform weights 1/K
        return torch.full((n, k), 0.5, device=device)
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    # one draw for every image, the one it gets alone: a row per image would tie its start to its batch position
    return torch.randn(k, generator=gen).to(device).expand(n, -1).clone()


def optimize(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    *,
    layer: str | None = None,
    objective: str = "mask",
    normalization: str = "range",
    selector: str = "logit",
    activation: str = "identity",
    iterations: int = 100,
    lr: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    init: str | Tensor = "constant",
    seed: int | None = None,
    tol: float | None = 1e-10,
    patience: int = 1,
    optimizer: str = "adam",
    momentum: float = 0.9,
    schedule: Schedule = "constant",
    callback: Callable[[int, OptiCAMResult], None] | None = None,
    callback_every: int = 10,
    progress: bool = True,
    amp: bool = False,
    amp_dtype: torch.dtype | None = None,
    fold_batchnorm: bool = False,
    channels_last: bool = False,
    graph: bool = False,
    upsampling: str = "auto",
) -> OptiCAMResult:
    """Opti-CAM, eq. (9)-(11): maximise F over u with Adam (or SGD), for a batch of images at once.

    With the default objective and selector (the masked logit), this is the masking problem of eq. (7) with no
    regulariser, R(m) = 0, over the set of eq. (12), M = {S(x; u) : u in R^K}: the mask is a combination of
    feature maps, never free, so it needs no area or smoothness term.

    Args:
        classifier: the model (its device is used).
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image (None: the predicted class).
        layer: feature layer l (default: the classifier's target layer).
        objective: ``"mask"`` (eq. 10, default), ``"diff"`` (19), ``"iomask"`` (A1 of appendix F.2),
            ``"iodiff"`` (A2 of appendix F.2).
        normalization: ``"range"`` (16, default), ``"max"`` (17), ``"sigmoid"`` (18).
        selector: g_c, ``"logit"`` (default), ``"prob"`` or ``"logprob"``.
        activation: h in eq. (8), ``"identity"`` (default) or ``"relu"``.
        iterations: at most this many Adam steps (paper: 100).
        lr: the learning rate (Adam, SGD) or iRprop+'s first step per coordinate; None: the optimizer's default
            (``DEFAULT_LR``: Adam 0.1, the paper's; SGD 0.1; iRprop+ 0.5).
        betas, eps: Adam's settings (PyTorch's defaults, the paper's).
        init: ``"constant"`` (u = 0.5: uniform weights, the authors' choice), ``"random"`` (one standard normal
            draw of K values seeded by ``seed``, the same for every image: what each gets alone, so a map does not
            depend on its batch) or a tensor (K,) or (N, K).
        tol: an image stops when its objective changes by less than ``tol`` between two iterations
            (paper: 1e-10); None runs every iteration.
        patience: ... for ``patience`` iterations in a row (default 1: the paper's rule).
        optimizer: ``"adam"`` (the paper's), ``"sgd"`` (stochastic gradient ascent with heavy-ball
            ``momentum``, as ``torch.optim.SGD(momentum=momentum, maximize=True)``; betas and eps unused) or
            ``"rprop"``, beyond the paper: iRprop+ (Igel & Huesken 2000), a step per coordinate that grows by
            1.2 while the sign of dF/du holds and halves when it flips, within [1e-3, 1]; a coordinate whose sign
            flipped undoes its last step when its image's F fell; gradient components below 1e-5 of the image's
            largest count as zero. Per image, no extra pass. Measured here
            (``benchmarks/bench_time_to_quality.py``): the paper's quality after 100 Adam iterations in about 40
            iterations, about 2x fewer; not in 20. ``schedule`` must stay constant.
        momentum: SGD's momentum in [0, 1) (ignored by Adam).
        schedule: the learning rate at iteration t is ``lr * lr_factor(schedule, t, iterations)``:
            ``"constant"`` (default, the paper's), ``"cosine"``, ``"step"`` or a callable (see ``lr_factor``).
        callback: called as ``callback(step, partial_result)`` every ``callback_every`` iterations and at the
            end (for live plots); the partial result's maps are those of the current u.
        progress: show a progress bar.
        amp: run the masked forward passes under autocast (bfloat16 on CPU, float16 on CUDA, unless ``amp_dtype``).
            The map itself (softmax, combination, upsampling, normalisation) stays in float32. F is then rounded
            to a few significant digits and repeats long before convergence, so the early stop (``tol``) is off
            under amp (a ``RuntimeWarning`` says so once): every iteration runs.
        amp_dtype: autocast's dtype, ``torch.bfloat16`` or ``torch.float16`` (None: the device's default above);
            only with ``amp=True``.
        fold_batchnorm: run a copy of the model with batch norm folded into the convolutions (``fast_copy``:
            the same logits and feature maps within float round-off, faster on a GPU; the copy costs one deep copy
            per call, so for many batches call ``fast_copy`` once and pass its classifier instead). The maps agree
            closely after a few iterations, less at convergence: the optimisation amplifies round-off, as between
            the two ``upsampling`` methods below (``benchmarks/bench_gpu.py``'s agreement section measures both).
        channels_last: run a channels-last copy of the model on channels-last images (with ``fold_batchnorm``,
            one copy for both).
        graph: capture one iteration in a CUDA graph and replay it (Adam or SGD; on a GPU, for small batches
            where the GPU waits on kernel launches). The batch keeps its size and finished images are masked,
            so the result equals the default path's within float round-off. On the CPU, or when capture fails,
            the same masked step runs eagerly and a ``RuntimeWarning`` says so, once per reason.
        upsampling: how the map's ``up`` is computed (``maps.upsample``): ``"interpolate"`` (PyTorch's
            bilinear kernel, which made every number the course records), ``"matrix"`` (two small matrix
            products, the same values within about 1e-7 of their size and a much cheaper backward pass on a GPU) or ``"auto"``
            (default, ``maps.resolve_upsampling``: the matrix products on a CUDA device, the kernel elsewhere).
            After 100 iterations the two end at slightly different maps: the optimisation amplifies round-off.
    Returns:
        ``OptiCAMResult`` with maps (N, 1, H, W) in [0, 1] and the per-iteration objective of every image.
    """
    require_autograd("Opti-CAM")
    images, targets = prepare(classifier, images, targets)
    iterations = validate_positive_int(iterations, "iterations")
    callback_every = validate_positive_int(callback_every, "callback_every")
    validate_choice(objective, "objective", OBJECTIVES)
    validate_choice(normalization, "normalization", NORMALIZATIONS)
    validate_choice(selector, "selector", SELECTORS)
    validate_choice(activation, "activation", ("identity", "relu"))
    if not isinstance(init, Tensor):
        validate_choice(init, "init", INITS)
    validate_choice(optimizer, "optimizer", OPTIMIZERS)
    validate_choice(upsampling, "upsampling", (*UPSAMPLINGS, "auto"))
    if lr is None:
        lr = DEFAULT_LR[optimizer]
    lr = as_python_scalar(lr)  # np.float32(0.1) is a learning rate too
    if not (isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0):
        raise InputError(f"lr must be a positive number, got {lr!r}")
    if optimizer == "rprop" and schedule != "constant":
        raise InputError(
            f"optimizer 'rprop' adapts its own steps: schedule must be 'constant', got {schedule!r}"
        )
    if not math.isfinite(lr):
        raise InputError(f"lr must be a finite positive number, got {lr!r}")
    if not (
        isinstance(betas, tuple | list)
        and len(betas) == 2
        and all(isinstance(b, int | float) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise InputError(f"betas must be two numbers in [0, 1) (Adam's decay rates), got {betas!r}")
    if not (isinstance(eps, int | float) and not isinstance(eps, bool) and 0 < eps < math.inf):
        raise InputError(f"eps must be a finite positive number, got {eps!r}")
    if tol is not None and not (
        isinstance(tol, int | float) and not isinstance(tol, bool) and 0 <= tol < math.inf
    ):
        raise InputError(f"tol must be None or a finite number >= 0, got {tol!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InputError(f"seed must be None or an integer, got {seed!r}")
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be None or a function callback(step, result), got {callback!r}")
    if isinstance(init, Tensor) and not bool(torch.isfinite(init).all()):
        raise InputError("the init tensor holds NaN or infinite values")
    patience = validate_positive_int(patience, "patience")
    if not (isinstance(momentum, int | float) and not isinstance(momentum, bool) and 0 <= momentum < 1):
        raise InputError(f"momentum must be a number in [0, 1), got {momentum!r}")
    if not callable(schedule):
        validate_choice(schedule, "schedule", SCHEDULES)
    if amp_dtype is not None and amp_dtype not in AMP_DTYPES:
        raise InputError(f"amp_dtype must be torch.bfloat16 or torch.float16, got {amp_dtype!r}")
    if amp_dtype is not None and amp is False:
        raise InputError(f"amp_dtype={amp_dtype} applies under autocast: pass amp=True too (amp is False)")
    for flag, name in (
        (amp, "amp"),
        (fold_batchnorm, "fold_batchnorm"),
        (channels_last, "channels_last"),
        (graph, "graph"),
    ):
        if not isinstance(flag, bool):
            raise InputError(f"{name} must be True or False, got {flag!r}")
    start_time = time.perf_counter()
    if fold_batchnorm or channels_last:  # a copy: the caller's model is never modified
        classifier, _ = fast_copy(
            classifier,
            fold_batchnorm=fold_batchnorm,
            channels_last=channels_last,
            layer=layer,
            size=tuple(images.shape[-2:]),
        )
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    device = classifier.device
    upsampling = resolve_upsampling(upsampling, device)
    size = tuple(images.shape[-2:])
    if amp and tol is not None:
        _say_once(
            "amp=True: the objective F is computed in reduced precision and repeats long before convergence, "
            "which would stop images early (bfloat16 on 4 sample photos: after 5 to 17 of 100 iterations); "
            "the early stop (tol) is off under amp, every iteration runs"
        )
        tol = None
    if graph and optimizer == "rprop":
        _say_once("graph=True supports the Adam and SGD optimizers; iRprop+ runs the default eager loop")
        graph = False

    acts, logits = features(classifier, images, layer)  # once, no graph, detached
    acts = acts.float()
    original = select(logits.float(), targets, selector)
    n, k = acts.shape[:2]

    u = initial_u(init, n, k, seed, device)
    m = torch.zeros_like(u)  # Adam's first moment; SGD's momentum; iRprop+'s previous gradient
    # Adam: 2nd moment; Rprop: steps
    v = torch.zeros_like(u) if optimizer != "rprop" else torch.full_like(u, float(lr))
    last = torch.zeros_like(u)  # iRprop+'s last move of u
    steps = torch.zeros(n, device=device)
    history = torch.full((n, iterations), float("nan"))
    active = torch.ones(n, dtype=torch.bool, device=device)
    previous = torch.full((n,), float("nan"), device=device)
    calm = torch.zeros(n, dtype=torch.long, device=device)  # iterations in a row with a change below tol
    b1, b2 = betas
    autocast_dtype = amp_dtype or (torch.float16 if device.type == "cuda" else torch.bfloat16)

    def partial() -> OptiCAMResult:
        with torch.no_grad():
            maps = saliency_map(u, acts, size, normalization, activation, upsampling)
        return OptiCAMResult(
            maps=maps,
            u=u.clone(),
            weights=torch.softmax(u, dim=1),
            history=history.clone(),
            iterations=steps.long().cpu(),
            targets=targets,
            seconds=time.perf_counter() - start_time,
            loop=loop,
        )

    loop = "eager"
    bar = tqdm(range(iterations), desc="Opti-CAM", disable=not progress, leave=False)
    if graph:
        with frozen(classifier.model):
            loop = _static_loop(
                classifier,
                images,
                targets,
                acts,
                original,
                dict(u=u, m=m, v=v, steps=steps, active=active, previous=previous, calm=calm),
                history,
                bar=bar,
                on_iteration=None
                if callback is None
                else (lambda done: callback(done, partial()) if done % callback_every == 0 else None),
                size=size,
                objective=objective,
                normalization=normalization,
                selector=selector,
                activation=activation,
                optimizer=optimizer,
                lr=float(lr),
                schedule=schedule,
                betas=(b1, b2),
                eps=eps,
                momentum=momentum,
                tol=tol,
                patience=patience,
                amp=amp,
                autocast_dtype=autocast_dtype,
                upsampling=upsampling,
            )
    else:
        with frozen(classifier.model):
            for it in bar:
                idx = active.nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                # no copies of the images and features while every image is active
                everyone = idx.numel() == n
                u_a = (u if everyone else u[idx]).clone().requires_grad_(True)
                acts_a = acts if everyone else acts[idx]
                images_a = images if everyone else images[idx]
                with torch.enable_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=amp):
                    masks = saliency_map(u_a, acts_a, size, normalization, activation, upsampling)
                    f = compute_objective(
                        classifier, images_a, masks, targets[idx], objective, selector, original[idx]
                    ).float()
                    require_graph(f, classifier.name, "Opti-CAM")
                    (grad,) = torch.autograd.grad(f.sum(), u_a)
                with torch.no_grad():
                    f = f.detach()
                    if not torch.isfinite(f).all():
                        bad = idx[~torch.isfinite(f)].tolist()
                        raise InputError(
                            f"the objective F became NaN or infinite at iteration {it + 1} for image(s) {bad} "
                            f"(objective={objective!r}, selector={selector!r}, optimizer={optimizer!r}, lr={lr!r}): "
                            "lower lr, or check the model's outputs on masked images"
                        )
                    history[idx.cpu(), it] = f.cpu()
                    # ascent on F (element-wise: each image is optimised as if it were alone, up to round-off)
                    steps[idx] += 1
                    g = -grad  # minimise -F
                    lr_t = lr * lr_factor(schedule, it, iterations)
                    if optimizer == "adam":
                        u[idx], m[idx], v[idx] = adam_step(
                            u[idx], m[idx], v[idx], g, steps[idx][:, None], lr_t, b1, b2, eps
                        )
                    elif optimizer == "sgd":  # SGD with heavy-ball momentum (torch.optim.SGD, dampening 0)
                        u[idx], m[idx] = sgd_step(u[idx], m[idx], g, lr_t, momentum)
                    else:  # iRprop+: ascent on F, one step size per coordinate, undo where the sign flipped and F fell
                        up, down = RPROP_ETAS
                        # float noise has no sign: components below 1e-5 of the image's largest count as zero
                        grad = torch.where(
                            grad.abs() > RPROP_ZERO * grad.abs().amax(dim=1, keepdim=True), grad, 0.0
                        )
                        sign_kept = grad * m[idx]
                        step = torch.where(
                            sign_kept > 0, v[idx] * up, torch.where(sign_kept < 0, v[idx] * down, v[idx])
                        )
                        step = step.clamp(*RPROP_STEPS)
                        flip = sign_kept < 0
                        fell = (f < previous[idx])[:, None]  # False at the first iteration (previous is NaN)
                        move = torch.where(flip, torch.where(fell, -last[idx], 0.0), step * grad.sign())
                        u[idx] = u[idx] + move
                        last[idx] = move
                        m[idx] = torch.where(flip, 0.0, grad)
                        v[idx] = step
                    if not bool(torch.isfinite(u[idx]).all()):
                        bad = idx[~torch.isfinite(u[idx]).all(dim=1)].tolist()
                        raise InputError(
                            f"the weights u became NaN or infinite at iteration {it + 1} for image(s) {bad} "
                            f"(optimizer={optimizer!r}, lr={lr!r}, betas={betas!r}, eps={eps!r}): lower lr, or "
                            "check the optimizer's settings"
                        )
                    if tol is not None:
                        small = (f - previous[idx]).abs() < tol
                        calm[idx] = torch.where(small, calm[idx] + 1, torch.zeros_like(calm[idx]))
                        active[idx[calm[idx] >= patience]] = False
                    previous[idx] = f
                if progress:
                    bar.set_postfix(objective=f"{float(f.mean()):.3f}", active=int(active.sum()))
                if callback is not None and (it + 1) % callback_every == 0:
                    callback(it + 1, partial())
    bar.close()
    result = partial()
    if callback is not None and int(steps.max()) % callback_every != 0:
        callback(int(steps.max()), result)
    return result


def _static_loop(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    acts: Tensor,
    original: Tensor,
    state: dict[str, Tensor],
    history: Tensor,
    *,
    bar: tqdm,
    on_iteration: Callable[[int], None] | None,
    size: tuple[int, int],
    objective: str,
    normalization: str,
    selector: str,
    activation: str,
    optimizer: str,
    lr: float,
    schedule: Schedule,
    betas: tuple[float, float],
    eps: float,
    momentum: float,
    tol: float | None,
    patience: int,
    amp: bool,
    autocast_dtype: torch.dtype,
    upsampling: str = "interpolate",
) -> str:
    """``optimize``'s loop with static shapes (``graph=True``): every image is forwarded at every iteration and
    the images that stopped are masked, so one iteration can be captured in a CUDA graph and replayed.

    ``state`` holds u (N, K), Adam's m and v (N, K), steps (N,) float, active (N,) bool, previous (N,) and calm
    (N,) long; all are updated in place (the graph reads and writes these very tensors). ``history`` (N, T) on
    the CPU receives the objective of each active image (NaN once it stopped). Raises ``InputError`` when an
    active image's objective is not finite (checked every ``GRAPH_CHECK_EVERY`` replays on a GPU, at every step
    otherwise). Returns ``"graph"`` when the iteration was captured and replayed, ``"static"`` when it ran eagerly.
    """
    u, m, v = state["u"], state["m"], state["v"]
    steps, active, previous, calm = state["steps"], state["active"], state["previous"], state["calm"]
    device = u.device
    n, iterations = history.shape
    b1, b2 = betas
    lr_now = torch.zeros((), device=device)  # the learning rate of this iteration, read by the graph
    f_out = torch.zeros(n, device=device)  # F of each image this iteration, NaN where it had stopped
    bad_out = torch.zeros(n, dtype=torch.bool, device=device)  # active and F not finite
    trace = torch.full((n, iterations), float("nan"), device=device)

    def step() -> None:
        u_leaf = u.detach().requires_grad_(True)
        with (
            torch.enable_grad(),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=amp, cache_enabled=False),
        ):
            masks = saliency_map(u_leaf, acts, size, normalization, activation, upsampling)
            f = compute_objective(classifier, images, masks, targets, objective, selector, original).float()
            require_graph(f, classifier.name, "Opti-CAM")
            (grad,) = torch.autograd.grad(f.sum(), u_leaf)
        with torch.no_grad():
            f = f.detach()
            on = active[:, None]
            steps.add_(active.float())
            g = -grad
            if optimizer == "adam":
                new_u, new_m, new_v = adam_step(u, m, v, g, steps[:, None].clamp(min=1), lr_now, b1, b2, eps)
                v.copy_(torch.where(on, new_v, v))
            else:
                new_u, new_m = sgd_step(u, m, g, lr_now, momentum)
            m.copy_(torch.where(on, new_m, m))
            u.copy_(torch.where(on, new_u, u))
            f_out.copy_(torch.where(active, f, torch.full_like(f, float("nan"))))
            bad_out.copy_(active & ~(torch.isfinite(f) & torch.isfinite(u).all(dim=1)))
            if tol is not None:
                small = (f - previous).abs() < tol
                calm.copy_(torch.where(active, torch.where(small, calm + 1, torch.zeros_like(calm)), calm))
                previous.copy_(torch.where(active, f, previous))
                active.copy_(active & (calm < patience))
            else:
                previous.copy_(torch.where(active, f, previous))

    captured: torch.cuda.CUDAGraph | None = None
    use_graph = device.type == "cuda"
    if not use_graph:
        _say_once(
            f"graph=True: CUDA graphs need a CUDA device, not {device.type!r}; the same static, masked step runs "
            "eagerly (same result)",
            stacklevel=4,
        )
    check_every = GRAPH_CHECK_EVERY if use_graph else 1
    for it in bar:
        lr_now.fill_(lr * lr_factor(schedule, it, iterations))
        if use_graph and captured is None and it > 0:  # iteration 0 ran eagerly on a side stream: the warm-up
            try:
                candidate = torch.cuda.CUDAGraph()
                with torch.cuda.graph(candidate):
                    step()
                captured = candidate
            except Exception as err:
                use_graph = False
                _say_once(
                    f"graph=True: capturing the iteration failed ({type(err).__name__}: {err}); "
                    "the same static, masked step runs eagerly",
                    stacklevel=4,
                )
        if captured is not None:
            captured.replay()
        elif use_graph:  # the warm-up, on a side stream as CUDA graphs want
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                step()
            torch.cuda.current_stream().wait_stream(side)
        else:
            step()
        trace[:, it].copy_(f_out)
        last = it + 1 == iterations
        if (it + 1) % check_every == 0 or last or (on_iteration is not None):
            bad, alive = torch.stack([bad_out.any(), active.any()]).tolist()
            if bad:
                which = bad_out.nonzero()[:, 0].tolist()
                raise InputError(
                    f"the objective F or the weights u became NaN or infinite by iteration {it + 1} for image(s) "
                    f"{which} "
                    f"(objective={objective!r}, selector={selector!r}, optimizer={optimizer!r}, lr={lr!r}): "
                    "lower lr, or check the model's outputs on masked images"
                )
            if on_iteration is not None:
                history.copy_(trace.cpu())
                on_iteration(it + 1)
            if not alive:
                break
    history.copy_(trace.cpu())
    return "graph" if captured is not None else "static"


def opticam(classifier: Classifier, images: Tensor, targets: Targets = None, **options: Any) -> Tensor:
    """Opti-CAM maps (N, 1, H, W) float in [0, 1] for images (N, 3, H, W) float in [0, 1]; ``options`` are those
    of ``optimize``.

    The library's common calling convention; use ``optimize`` for the objective's history."""
    return optimize(classifier, images, targets, **options).maps


# opticam forwards its options to optimize: help() and registry.validate_options see optimize's keywords (and the
# maps it returns, not the OptiCAMResult)
opticam.__signature__ = inspect.signature(optimize).replace(return_annotation="Tensor")  # type: ignore[attr-defined]


def masked_score(
    classifier: Classifier,
    images: Tensor,
    weights: Tensor,
    activations: Tensor,
    targets: Tensor,
    normalization: str = "range",
    selector: str = "logit",
) -> Tensor:
    """Eq. (5): ``F(w) = g_c(f(x ⊙ n(up(sum_k w_k A^k))))`` for arbitrary channel weights w (no softmax).

    With w = e_k (the k-th basis vector) and the black baseline, ``F(e_k) - F(0)`` is Score-CAM's u_k (eq. 3 as
    the finite difference of eq. 6, since n(0) := 0). Differentiable in ``weights``.

    Args:
        images: (N, 3, H, W) float in [0, 1]; weights: (N, K); activations: (N, K, h, w); targets: (N,) long.
    Returns:
        (N,) the selected score of each masked image.
    """
    masks = to_saliency(combine(weights, activations, "identity"), tuple(images.shape[-2:]), normalization)
    with frozen(classifier.model):
        return select(classifier.model(images.to(classifier.device) * masks), targets, selector)
