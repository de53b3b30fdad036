"""Training the world's networks from a seed, and the report (``opticam_lib/data/world_report.json``) that
records each run's numbers."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from opticam_lib.errors import InputError
from opticam_lib.models.classifier import Classifier, InputNormalized
from opticam_lib.paths import atomic_write, exclusive_lock
from opticam_lib.world.networks import DATA_DIR, build_network, classifier_from_checkpoint
from opticam_lib.world.reliance import class_probabilities, evidence
from opticam_lib.world.scenes import WorldConfig, batch_at, derive_seed, generate

REPORT_PATH = DATA_DIR / "world_report.json"


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


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return value


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, refused with an ``InputError`` when unknown or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise InputError(f"unknown device {device!r} ({str(e).splitlines()[0]}); use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {device!r}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


def _validated_network(arch: str, config: WorldConfig, arch_kwargs: dict) -> None:
    """Build the network once (cheap) so that a bad option is refused before any training."""
    if not isinstance(arch_kwargs, dict):
        raise InputError(f"arch_kwargs must be a dict of network options, got {arch_kwargs!r}")
    try:
        with torch.random.fork_rng(devices=[]):
            net = build_network(arch, config.num_classes, config.size, **arch_kwargs)
            net.eval()
            with torch.no_grad():
                net(torch.zeros(1, 3, config.size, config.size))
    except InputError:
        raise
    except Exception as e:  # a TypeError (unknown option) or a shape error (an option that does not fit)
        raise InputError(
            f"network options {json.dumps(arch_kwargs)} do not build a {arch} for {config.size} px "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None


def validate_train_args(
    arch: str,
    *,
    steps: int | None,
    batch_size: int,
    lr: float | None,
    train_set: int,
    eval_n: int,
    config: WorldConfig,
    arch_kwargs: dict | None,
    device: str | torch.device,
) -> None:
    """Refuse, with an ``InputError``, settings that ``train`` cannot use (before any minutes of work)."""
    if arch not in ("cnn", "vit"):
        raise InputError(f"unknown arch {arch!r}; choose cnn or vit")
    if steps is not None:
        _positive_int(steps, "steps")
    _positive_int(batch_size, "batch_size")
    _positive_int(train_set, "train_set")
    _positive_int(eval_n, "eval_n", minimum=0)
    if lr is not None and (
        isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0
    ):
        raise InputError(f"lr must be a finite number above 0, got {lr!r}")
    if not isinstance(config, WorldConfig):
        raise InputError(f"config must be a WorldConfig, got {type(config).__name__}")
    resolve_device(device)
    _validated_network(arch, config, dict(arch_kwargs or {}))


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

    config = WorldConfig() if config is None else config
    validate_train_args(
        arch,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        train_set=train_set,
        eval_n=eval_n,
        config=config,
        arch_kwargs=arch_kwargs,
        device=device,
    )
    key = arch + ("_permuted" if permuted_labels else "")
    steps = DEFAULT_STEPS.get(key, 1500) if steps is None else steps  # 0 is refused above, not the default
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
        probs = class_probabilities(clf, fixed)
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
    """The committed report (``{"generator": ..., "models": {name: ...}}``); empty sections when missing.

    Raises:
        InputError: the file is not a report (not JSON, or not a JSON object), naming it.
    """
    path = Path(path)
    if not path.is_file():
        return {"generator": {}, "models": {}}
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(
            f"the report {path} cannot be read as JSON ({str(e).splitlines()[0]}); repair or remove it, "
            "or choose another file with --report"
        ) from None
    if not isinstance(report, dict) or not all(
        isinstance(report.get(k, {}), dict) for k in ("generator", "models")
    ):
        raise InputError(
            f"the report {path} is not a world report (a JSON object with 'generator' and 'models'); "
            "choose another file with --report"
        )
    return report


#: how long a run waits for another run that is updating the same report
REPORT_LOCK_WAIT_S = 30.0


@contextmanager
def _report_lock(path: Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold the lock of the report at ``path`` (the lock of its folder: no file is added) for the ``with`` block,
    waiting up to ``wait_s`` seconds for another run that holds it."""
    wait_s = REPORT_LOCK_WAIT_S if wait_s is None else wait_s
    folder = path.parent
    deadline = time.monotonic() + wait_s
    busy = f"another run has been updating the report {path} for over {wait_s:.0f} s; try again later"
    while True:
        stack = ExitStack()
        try:
            stack.enter_context(exclusive_lock(folder, busy))
        except InputError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
            continue
        break
    with stack:
        yield


def _write_report(
    update: dict | Callable[[dict], dict],
    path: Path,
    *,
    before_write: Callable[[], object] | None = None,
) -> None:
    """Merge ``update`` (``{section: {key: value}}``, or a function of the current report that returns it) into
    the report at ``path``, read and written under the report's lock so concurrent runs keep every entry.

    ``before_write`` runs under the same lock after the report was read and the new one rendered, just before it
    is written (the weights file is written there: a report that cannot be read stops a run before any file is
    written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _report_lock(path):
        report = read_report(path)
        values_by_section = update(report) if callable(update) else update
        for section, values in values_by_section.items():
            report.setdefault(section, {}).update(values)
        text = json.dumps(report, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n"
        if before_write is not None:
            before_write()
        atomic_write(path, text)


def _json_safe(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


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
