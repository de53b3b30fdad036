"""Measuring speed honestly (notebook 04): timers that wait for the GPU, the per-iteration cost of Opti-CAM,
and the slow variants the library avoids, kept here so that their cost can be measured side by side.

Nothing here changes a saliency map; it only times the library's functions, or reproduces on purpose what a
naive implementation does (features recomputed every iteration, parameters left trainable) for comparison.

Timings are wall-clock seconds. On CUDA, kernels run asynchronously: ``synchronize`` waits for them before a
clock is read, otherwise a timer measures only the time to *queue* the work. On the CPU it does nothing.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from opticam_lib.hooks import capture, eval_mode, frozen
from opticam_lib.inputs import Targets, prepare, validate_positive_int
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.masking import channel_scores
from opticam_lib.methods.opti_cam import OptiCAMResult, optimize, saliency_map, select
from opticam_lib.models.classifier import Classifier

if TYPE_CHECKING:  # annotations only: matplotlib is imported where it is used
    from matplotlib.figure import Figure


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def synchronize(device: str | torch.device | None = None) -> bool:
    """Wait for every queued kernel on ``device`` when it is a CUDA device. Returns True if it waited."""
    device = _device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)
        return True
    return False


def device_name(device: str | torch.device | None = None) -> str:
    """A readable name of the device: the GPU's name, or the CPU's model with its core and thread counts."""
    device = _device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} CPU, {cores} cores, {torch.get_num_threads()} torch threads"


def cpu_supports_bf16() -> bool | None:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX), read from /proc/cpuinfo; None where
    that file does not exist. Without them, ``torch.autocast`` on the CPU emulates bfloat16 and is slower."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


@dataclass
class Timing:
    """Seconds of each timed repetition, and the value the last call returned.

    Use ``median`` (robust to a neighbour's burst of work) or ``best`` (the least the work can take here).
    """

    times: list[float]
    value: Any = None

    @property
    def median(self) -> float:
        """The median of the repetitions' seconds."""
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """The fastest repetition's seconds."""
        return min(self.times)

    def __repr__(self) -> str:
        return f"Timing(median={self.median:.4g} s, best={self.best:.4g} s, repeats={len(self.times)})"


def time_call(
    fn: Callable[..., Any],
    *args: Any,
    device: str | torch.device | None = None,
    repeats: int = 3,
    warmup: int = 1,
    **kwargs: Any,
) -> Timing:
    """Time ``fn(*args, **kwargs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Each timed call is wrapped in ``synchronize(device)`` on both sides, so on CUDA the time includes the GPU's
    work. Returns a ``Timing`` (its ``value`` is the last call's return value).
    """
    repeats = validate_positive_int(repeats, "repeats")
    value = None
    for _ in range(warmup):
        value = fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return Timing(times, value)


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    device: str | torch.device | None = None,
    repeats: int = 3,
    warmup: int = 1,
) -> dict[str, Timing]:
    """Time several functions of no argument in turns (A, B, A, B, ...), so that a burst of load on a shared
    machine hits all of them alike. Returns {name: Timing}; compare medians, or ratios of medians."""
    repeats = validate_positive_int(repeats, "repeats")
    values: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            values[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            values[name] = fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(times[name], values.get(name)) for name in fns}


# --- the passes one method is made of ---------------------------------------------------------------------


def forward_pass(classifier: Classifier, images: Tensor) -> Tensor:
    """One forward pass with no graph: logits (N, C). The unit of Score-CAM's cost."""
    with frozen(classifier.model), torch.no_grad():
        return classifier.model(images.to(classifier.device))


def forward_backward(classifier: Classifier, images: Tensor, targets: Tensor, freeze: bool = True) -> Tensor:
    """One forward pass and one ``.backward()`` of the target logits to the input: the unit of Opti-CAM's cost.

    With ``freeze=True`` the parameters have ``requires_grad=False`` during the pass, so the backward pass
    computes the gradient for the input only. With ``freeze=False`` they keep the caller's ``requires_grad``
    (True for a freshly loaded model), as in the authors' script: ``.backward()`` then also computes, and
    *accumulates* into ``p.grad``, the gradient of every parameter. The caller clears it
    (``classifier.model.zero_grad(set_to_none=True)``). Returns d(sum of target logits)/d(input), (N, 3, H, W).
    """
    x = images.to(classifier.device).detach().clone().requires_grad_(True)
    targets = targets.to(classifier.device)
    if freeze:
        with frozen(classifier.model), torch.enable_grad():
            classifier.model(x).gather(1, targets[:, None]).sum().backward()
    else:
        with torch.enable_grad():
            was_training = classifier.model.training
            classifier.model.eval()
            try:
                classifier.model(x).gather(1, targets[:, None]).sum().backward()
            finally:
                classifier.model.train(was_training)
    return x.grad


def masked_forward_passes(
    classifier: Classifier,
    image: Tensor,
    target: int,
    channels: int,
    layer: str | None = None,
    batch_size: int = 32,
) -> Tensor:
    """Score-CAM's work for one image restricted to its first ``channels`` channels: that many masked forward
    passes (eq. 3), in chunks of ``batch_size``, with no graph. Returns the scores u_k (channels,).

    Score-CAM's cost is linear in the number of channels K; timing this for a few K gives the slope.
    """
    channels = validate_positive_int(channels, "channels")
    image = image.to(classifier.device)
    if image.dim() == 3:
        image = image[None]
    image, targets = prepare(classifier, image, target)
    acts, _ = features(classifier, image, layer)
    todo = torch.arange(min(channels, acts.shape[1]), device=acts.device)
    return channel_scores(classifier, image, targets, acts, todo, batch_size=batch_size)[0, : len(todo)]


# --- Opti-CAM, per iteration --------------------------------------------------------------------------------


@dataclass
class IterationTiming:
    """Opti-CAM timed iteration by iteration (``optimize`` with a callback after every iteration).

    Attributes:
        stamps: seconds since the call started, after each iteration (the GPU synchronised first).
        total: seconds of the whole call.
        result: what ``optimize`` returned.
    """

    stamps: list[float]
    total: float
    result: OptiCAMResult = field(repr=False)

    @property
    def per_iteration(self) -> list[float]:
        """Seconds of iterations 2, 3, ... (the first includes one-off work: features, warm-up)."""
        return [b - a for a, b in zip(self.stamps, self.stamps[1:])]

    @property
    def seconds_per_iteration(self) -> float:
        """Median seconds of one iteration (over iterations 2, 3, ...; the first alone when there is one)."""
        steps = self.per_iteration
        return statistics.median(steps) if steps else self.stamps[0]

    @property
    def setup(self) -> float:
        """Seconds spent before the first iteration's own work: features, unmasked logits, first-call costs."""
        return max(0.0, self.stamps[0] - self.seconds_per_iteration)


def opticam_iteration_times(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    iterations: int = 10,
    **options: Any,
) -> IterationTiming:
    """Run ``optimize`` for exactly ``iterations`` iterations (no early stop) and time every iteration.

    ``options`` go to ``optimize`` (e.g. ``amp=True``); ``progress`` is off unless given. The callback after
    each iteration also computes the current maps, a cost far below one forward pass.
    """
    iterations = validate_positive_int(iterations, "iterations")
    device = classifier.device
    stamps: list[float] = []
    options.setdefault("progress", False)
    options["tol"] = None
    synchronize(device)
    t0 = time.perf_counter()

    def stamp(_step: int, _partial: OptiCAMResult) -> None:
        synchronize(device)
        stamps.append(time.perf_counter() - t0)

    result = optimize(
        classifier, images, targets, iterations=iterations, callback=stamp, callback_every=1, **options
    )
    synchronize(device)
    total = time.perf_counter() - t0
    return IterationTiming(stamps=stamps[:iterations], total=total, result=result)


def naive_optimize(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    *,
    iterations: int = 10,
    lr: float = 0.1,
    layer: str | None = None,
    recompute_features: bool = True,
    freeze: bool = False,
) -> OptiCAMResult:
    """Opti-CAM (eq. 8-10, Adam, ascent on the logit) written the slow way, for comparison only.

    - ``recompute_features=True``: the unmasked image goes through the network again at every iteration to
      get the feature maps A (one extra forward pass per iteration; when parameters are trainable it keeps a
      graph, and the backward pass runs through it too);
    - ``freeze=False``: parameters keep ``requires_grad``, so every ``.backward()`` also computes the gradient
      of every parameter and *adds* it to ``p.grad`` (they grow at each iteration; the caller clears them).

    Mathematically the same as ``optimize`` (constant init, range normalisation, logit, no early stop): the
    maps agree up to floating-point error. Returns an ``OptiCAMResult`` (``seconds`` = wall-clock time).
    """
    iterations = validate_positive_int(iterations, "iterations")
    images, targets = prepare(classifier, images, targets)
    start = time.perf_counter()
    size = tuple(images.shape[-2:])
    acts, _ = features(classifier, images, layer)
    n, k = acts.shape[:2]
    u = torch.full((n, k), 0.5, device=classifier.device, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    history = torch.full((n, iterations), float("nan"))
    with eval_mode(classifier.model), frozen(classifier.model) if freeze else nullcontext():
        for it in range(iterations):
            with torch.enable_grad():
                if recompute_features:  # an extra forward pass, with a graph when parameters are trainable
                    with capture(classifier, layer) as cap:
                        classifier.model(images)
                    acts = cap.activations
                f = select(classifier.model(images * saliency_map(u, acts, size)), targets)
                opt.zero_grad()  # clears u.grad only: parameters' .grad keep growing when not frozen
                (-f.sum()).backward()
            opt.step()
            history[:, it] = f.detach().cpu()
    with torch.no_grad():
        acts, _ = features(classifier, images, layer)
        maps = saliency_map(u, acts, size)
    return OptiCAMResult(
        maps=maps,
        u=u.detach().clone(),
        weights=torch.softmax(u.detach(), dim=1),
        history=history,
        iterations=torch.full((n,), iterations),
        targets=targets,
        seconds=time.perf_counter() - start,
    )


def parameter_grads(classifier: Classifier) -> tuple[int, float]:
    """How many parameters hold a ``.grad``, and the sum of their absolute values (0 after a clean call)."""
    grads = [p.grad for p in classifier.model.parameters() if p.grad is not None]
    return len(grads), float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def opticam_cost_model(
    forward_s: float, backward_s: float, iterations: int, channels: int, images: int = 8
) -> dict[str, float]:
    """The cost model of notebook 04, in seconds for ``images`` images (one forward pass per image costs
    ``forward_s``, one backward pass ``backward_s``):

    - Grad-CAM: one forward and one backward;
    - Score-CAM: one forward per channel (K), and one for the features;
    - Opti-CAM: one forward for the features, then ``iterations`` x (forward + backward).
    """
    fb = forward_s + backward_s
    return {
        "Grad-CAM": images * fb,
        "Score-CAM": images * (channels + 1) * forward_s,
        "Opti-CAM": images * (forward_s + iterations * fb),
    }


# --- comparing results that should agree ------------------------------------------------------------------


@contextmanager
def full_precision() -> Iterator[None]:
    """Compute CUDA convolutions and matrix products in full float32 inside the block.

    By default PyTorch lets cuDNN convolutions use TF32 on Ampere and newer GPUs (a 10-bit mantissa): faster,
    but two computations of the same thing in different batch sizes then differ around the third digit, and
    Opti-CAM's Adam amplifies such differences over iterations. The flags are restored on exit. On a CPU
    nothing changes (CPU kernels are float32 throughout).
    """
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def map_agreement(a: Tensor, b: Tensor) -> dict[str, float]:
    """How close two sets of maps (N, 1, H, W) in [0, 1] are: the largest and the mean absolute difference,
    and the Pearson correlation over all pixels (1.0 for identical maps)."""
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.detach().float().flatten().cpu(), b.detach().float().flatten().cpu()
    diff = (a - b).abs()
    if a.std() == 0 or b.std() == 0:
        corr = 1.0 if torch.equal(a, b) else 0.0
    else:
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return {"max": float(diff.max()), "mean": float(diff.mean()), "correlation": corr}


def opticam_variants(
    classifier: Classifier, images: Tensor, targets: Targets = None, lr: float = 0.1
) -> dict[str, Callable[[int], OptiCAMResult]]:
    """The same optimisation written four ways, as functions of the number of iterations (notebook 04):

    - ``"library: features once, frozen"``: ``optimize`` (no early stop);
    - ``"features recomputed, frozen"``, ``"features once, trainable (authors)"``,
      ``"features recomputed, trainable"``: ``naive_optimize`` with its two switches.
    """

    def library(iterations: int) -> OptiCAMResult:
        return optimize(classifier, images, targets, iterations=iterations, lr=lr, tol=None, progress=False)

    def naive(recompute: bool, freeze: bool) -> Callable[[int], OptiCAMResult]:
        def run(iterations: int) -> OptiCAMResult:
            return naive_optimize(
                classifier,
                images,
                targets,
                iterations=iterations,
                lr=lr,
                recompute_features=recompute,
                freeze=freeze,
            )

        return run

    return {
        "library: features once, frozen": library,
        "features recomputed, frozen": naive(True, True),
        "features once, trainable (authors)": naive(False, False),
        "features recomputed, trainable": naive(True, False),
    }


# ---- the committed benchmark results (issue 13: benchmarks/bench_gpu.py writes one JSON per run) ------------------

#: the command that writes a GPU result (``--device cuda``, every section at the issue's settings; 2-4 min on an H100)
GPU_BENCH_COMMAND = "python benchmarks/bench_gpu.py --device cuda --json benchmarks/results/gpu_<name>.json"


def find_results_folder(start: str | os.PathLike | None = None) -> Path | None:
    """``benchmarks/results`` in ``start`` (default: the working directory) or the nearest folder above; None if
    there is none (an installed package without the repository)."""
    here = Path(start) if start is not None else Path.cwd()
    for folder in (here, *here.resolve().parents):
        candidate = folder / "benchmarks" / "results"
        if candidate.is_dir():
            return candidate
    return None


def load_bench_results(folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every ``bench_gpu.py`` JSON in ``folder`` (default: ``find_results_folder()``), GPU runs first, then by
    date; each gets ``"file"`` (its name). A JSON without ``device`` and ``command`` is not one of them: skipped;
    one that cannot be read is skipped with a warning naming it."""
    root = Path(folder) if folder is not None else find_results_folder()
    if root is None or not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # a damaged file must not hide the others
            warnings.warn(f"{path} cannot be read ({e}); skipped: run its benchmark again", stacklevel=2)
            continue
        if isinstance(data, dict) and "device" in data and "command" in data:
            out.append({**data, "file": path.name})
    return sorted(out, key=lambda r: (r.get("device_type") != "cuda", r.get("date", "")))


def seconds_per_batch_of_8(result: Mapping[str, Any]) -> dict[str, float]:
    """The paper's T (s per batch of 8, 100 iterations) from one result's ``paper_setting`` section, per variant.

    A run with fewer iterations or another batch is scaled linearly to 8 images x 100 iterations (its feature
    pass and graph capture are then counted more than once: an upper bound). Empty without that section."""
    ps = result.get("paper_setting")
    if not ps:
        return {}
    scale = (100 / ps["iterations"]) * (8 / ps["batch"])
    return {k: s * scale for k, s in ps["seconds"].items()}


def bench_results_table(results: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (result, measurement) for printing: device, what, value, goal."""
    rows = []
    for r in results:
        dev = f"{r['device']} ({r['model']})"
        for o in r.get("overhead", []):
            what = f"iteration / floor, batch {o['batch']}, {o['precision']}, {o['loop']}"
            rows.append(
                {"device": dev, "what": what, "value": f"x{o['ratio']['median']:.3f}", "goal": "<= x1.03"}
            )
        for k, s in seconds_per_batch_of_8(r).items():
            rows.append(
                {
                    "device": dev,
                    "what": f"T (8 images x 100 it.), {k}",
                    "value": f"{s:.2f} s",
                    "goal": "<= 0.3 s",
                }
            )
        for t in r.get("throughput", []):
            what = f"50,000 images x 100 it., {t['variant']}, batch {t['batch']}"
            rows.append(
                {
                    "device": dev,
                    "what": what,
                    "value": f"{t['projected_minutes']:.1f} min",
                    "goal": "<= 12 min",
                }
            )
        agreement = r.get("agreement", {})
        for key, ag in agreement.items():
            if isinstance(ag, dict) and "min_pearson_r" in ag:
                what = f"maps fp32 vs {key} ({agreement['model']}): min Pearson r, AG difference"
                value = f"{ag['min_pearson_r']:.4f}, {ag['AG_difference']:+.2f} pts"
                goal = "(round-off baseline)" if key.startswith("baseline") else ">= 0.99, within 1 pt"
                rows.append({"device": dev, "what": what, "value": value, "goal": goal})
        for m in r.get("rows", []):  # bench_map_step.py: the map's own forward + backward pass
            if "percent_of_floor" in m:
                rows.append(
                    {
                        "device": dev,
                        "what": f"map's fwd + bwd / floor, batch {m['batch']}, {m['variant']}",
                        "value": f"{m['percent_of_floor']['median']:.2f} %",
                        "goal": "(part of the 3 %)",
                    }
                )
        for section, error in r.get("errors", {}).items():  # a section that failed in that run
            rows.append({"device": dev, "what": f"{section}: failed", "value": error[:60], "goal": ""})
    return rows


def bench_results_figure(results: list[Mapping[str, Any]], paper_T: Mapping[str, float]) -> Figure:
    """Two panels: (left) T per batch of 8 at 100 iterations, each result's variants beside the paper's T, log
    scale; (right) each result's overhead ratios (iteration / floor) with the 3 % goal. Returns the figure (closed:
    ``display(fig)`` shows it)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    labels, values, colors = [], [], []
    for model, t in paper_T.items():
        labels.append(f"paper, {model}")
        values.append(t)
        colors.append("0.6")
    for r in results:
        gpu = r.get("device_type") == "cuda"
        for k, s in seconds_per_batch_of_8(r).items():
            labels.append(f"{'GPU' if gpu else 'CPU'} {r['model']}: {k}")
            values.append(s)
            colors.append("tab:green" if gpu else "tab:blue")
    ypos = range(len(values))
    left.barh(list(ypos), values, color=colors)
    left.set_yticks(list(ypos), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xscale("log")
    left.axvline(0.3, color="tab:red", ls="--", lw=1, label="goal 0.3 s")
    left.set_xlabel("seconds per batch of 8, 100 iterations (log)")
    left.legend(fontsize=8)
    left.set_title("Opti-CAM's T beside the paper's")
    bars, names = [], []
    for r in results:
        for o in r.get("overhead", []):
            names.append(
                f"{'GPU' if r.get('device_type') == 'cuda' else 'CPU'} b{o['batch']} {o['precision']} {o['loop']}"
            )
            bars.append(o["ratio"]["median"])
    right.barh(range(len(bars)), bars, color="tab:purple")
    right.set_yticks(range(len(bars)), names, fontsize=8)
    right.invert_yaxis()
    if bars:  # ratios near 1: start the axis just below the smallest
        right.set_xlim(min(0.9, min(bars) - 0.05), max(1.1, max(bars) + 0.05))
    right.axvline(1.0, color="black", lw=1)
    right.axvline(1.03, color="tab:red", ls="--", lw=1, label="goal: 3 % over the floor")
    right.set_xlabel("one Opti-CAM iteration / (forward + backward to the input)")
    right.legend(fontsize=8)
    right.set_title("Overhead over the floor")
    fig.tight_layout()
    plt.close(fig)  # returned, not shown: display(fig) shows it once
    return fig
