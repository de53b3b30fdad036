"""The controlled world's command line: ``python -m opticam_lib.world {train,speed,evidence}``.

The package's data folder (``opticam_lib/data``) holds the course's shipped models and their report; ``train``
and ``speed`` refuse to write there unless ``--overwrite-shipped`` is given. A bad setting is answered with one
``error: ...`` line (exit status 2 for a bad argument, 1 for any other failure), never a traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from opticam_lib.errors import InputError, OptiCAMError
from opticam_lib.paths import atomic_write, writable_file
from opticam_lib.world.networks import DATA_DIR, MODELS, checkpoint_mismatch
from opticam_lib.world.reliance import evidence
from opticam_lib.world.scenes import WorldConfig, generator_speed
from opticam_lib.world.training import (
    DEFAULT_STEPS,
    REPORT_PATH,
    _json_safe,
    _machine,
    _reproduce_command,
    _write_report,
    read_report,
    train,
    validate_train_args,
)

SHIPPED_HELP = (
    "allow writing into the package's data folder (opticam_lib/data): this regenerates the course's shipped "
    "model (world_<arch>[_permuted].pt) and rewrites its entry in world_report.json, so the notebooks, the "
    "README and the tests then see the new weights and numbers"
)


def _is_shipped(path: Path) -> bool:
    """Whether ``path`` lies in the package's data folder (the shipped models and report)."""
    try:
        path.expanduser().resolve().relative_to(DATA_DIR.resolve())
    except ValueError:
        return False
    return True


def _refuse_shipped(path: Path, option: str, args: argparse.Namespace) -> None:
    if _is_shipped(path) and not args.overwrite_shipped:
        instead = "--out PATH elsewhere" if option == "--out" else "--report PATH elsewhere or --no-report"
        raise InputError(
            f"{option} {path} is in the package's data folder, which holds the course's shipped files; give "
            f"{instead}, or --overwrite-shipped to regenerate them on purpose"
        )


def _json_option(text: str | None, option: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{option} is not valid JSON ({e.msg} at character {e.pos}): {text!r}") from None
    if not isinstance(value, dict):
        raise InputError(f"{option} must be a JSON object ({{...}}), got {text!r}")
    return value


def _world_config(text: str | None) -> WorldConfig | None:
    d = _json_option(text, "--config")
    if d is None:
        return None
    try:
        return WorldConfig.from_dict(d)
    except InputError as e:
        raise InputError(f"--config: {e}") from None
    except (TypeError, ValueError) as e:  # a field of the wrong type
        raise InputError(f"--config: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _set_threads(threads: int) -> None:
    if threads < 0:
        raise InputError(f"--threads must be 0 (torch's choice) or more, got {threads}")
    if threads:
        torch.set_num_threads(threads)


def _train_paths(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The weights file and the report (None with --no-report), refused when shipped without --overwrite-shipped
    and checked writable (and the report readable) before any training."""
    key = args.arch + ("_permuted" if args.permuted_labels else "")
    out = Path(args.out).expanduser() if args.out else DATA_DIR / f"world_{key}.pt"
    if args.report:
        report = Path(args.report).expanduser()
    else:  # next to the weights: the shipped report only for the shipped weights
        report = out.parent / REPORT_PATH.name
    _refuse_shipped(out, "--out", args)
    if not args.no_report:
        _refuse_shipped(report, "--report", args)
    if _is_shipped(out):
        mismatch = checkpoint_mismatch(out.stem, {"arch": args.arch, "permuted_labels": args.permuted_labels})
        if mismatch:
            raise InputError(
                f"--out {out} is the shipped {out.stem}, which a {key} run cannot replace ({mismatch})"
            )
    out = writable_file(out, "--out", f"world_{key}.pt")
    if args.no_report:
        return out, None
    report = writable_file(report, "--report", "world_report.json")
    if report.resolve() == out.resolve():
        raise InputError(f"--report {report} is the weights file; give another path")
    read_report(report)  # a damaged report stops the run now, not after the training
    return out, report


def _cmd_train(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    config = _world_config(args.config)
    arch_kwargs = _json_option(args.arch_kwargs, "--arch-kwargs")
    if args.lr is not None and (not math.isfinite(args.lr) or args.lr <= 0):
        raise InputError(f"--lr must be a finite number above 0, got {args.lr}")
    for option, value, minimum in (
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--train-set", args.train_set, 1),
        ("--eval-n", args.eval_n, 0),
    ):
        if value is not None and value < minimum:
            raise InputError(f"{option} must be at least {minimum}, got {value}")
    validate_train_args(
        args.arch,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        train_set=args.train_set,
        eval_n=args.eval_n,
        config=config or WorldConfig(),
        arch_kwargs=arch_kwargs,
        device=args.device,
    )
    out, report_path = _train_paths(args)
    shipped = _is_shipped(out)
    if shipped and config is not None and config.size != MODELS.get(out.stem, {}).get("size", config.size):
        raise InputError(
            f"--out {out} is the shipped {out.stem}, which takes {MODELS[out.stem]['size']} px images"
        )
    result = train(
        args.arch,
        steps=args.steps,
        seed=args.seed,
        permuted_labels=args.permuted_labels,
        config=config,
        batch_size=args.batch_size,
        lr=args.lr,
        train_set=args.train_set,
        arch_kwargs=arch_kwargs,
        eval_n=args.eval_n,
        name=out.stem,
        device=args.device,
    )
    buffer = io.BytesIO()
    torch.save(result.checkpoint, buffer)
    weights = buffer.getvalue()
    rep = result.report
    rep["file"] = str(out.name)
    rep["file_bytes"] = len(weights)
    rep["generator_images_per_s"] = round(generator_speed(WorldConfig.from_dict(rep["config"]), 512, 2))
    rep["command"] = _reproduce_command(args, rep) + (" --overwrite-shipped" if shipped else "")

    def write_weights() -> None:
        atomic_write(out, weights)  # the old file or the whole new one

    if report_path is None:
        write_weights()
    else:  # the report is read (and rendered) first, then the weights and the report are written together
        _write_report({"models": {out.stem: _json_safe(rep)}}, report_path, before_write=write_weights)
    where = "" if report_path is None else f"; report {report_path}"
    print(f"saved {out} ({rep['file_bytes'] / 1024:.0f} KiB) in {rep['train_seconds']:.0f} s{where}")
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
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    config = WorldConfig(size=args.size)
    report_path = None
    if not args.no_report:
        report_path = Path(args.report).expanduser() if args.report else REPORT_PATH
        _refuse_shipped(report_path, "--report", args)
        report_path = writable_file(report_path, "--report", "world_report.json")
        read_report(report_path)
    speed = generator_speed(config, args.n)
    print(
        f"generate: {speed:,.0f} images/s ({args.size}x{args.size}, batches of {args.n}, "
        f"{torch.get_num_threads()} torch threads)"
    )
    if report_path is not None:
        entry = {"images_per_s": round(speed), "size": args.size, "batch": args.n, "machine": _machine()}
        if args.label:
            entry["label"] = args.label

        def update(report: dict) -> dict:  # under the report's lock: no measurement of another run is lost
            previous = report.get("generator", {}).get("measurements", [])
            return {"generator": {**entry, "measurements": [*previous, entry]}}

        _write_report(update, report_path)
    return 0


def _cmd_evidence(args: argparse.Namespace) -> int:
    from opticam_lib.models.registry import load_classifier

    if args.model not in MODELS:
        raise InputError(f"--model {args.model!r} is not a world model; choose from {', '.join(MODELS)}")
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    clf = load_classifier(args.model)
    ev = evidence(clf, n=args.n, seed=args.seed)
    print(f"{args.model}: evidence on {args.n} new scenes (seed {args.seed})")
    print(ev.table())
    return 0


def _fail(message: str, code: int) -> int:
    lines = message.splitlines() or [""]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(f"       {line}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m opticam_lib.world``."""
    parser = argparse.ArgumentParser(prog="python -m opticam_lib.world", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "train",
        help="train world_cnn / world_vit / world_cnn_permuted from a seed",
        description="Train a world network from a seed. The default --out is the shipped model in the package's "
        "data folder, which is refused without --overwrite-shipped: give --out PATH for a model of your own "
        "(its report goes next to it, world_report.json in the same folder, unless --report says otherwise).",
    )
    p.add_argument("--arch", choices=("cnn", "vit"), default="cnn")
    p.add_argument("--permuted-labels", action="store_true", help="random labels on a fixed training set")
    p.add_argument(
        "--steps", type=int, default=None, help=f"optimiser steps, at least 1 (default {DEFAULT_STEPS})"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--eval-n", type=int, default=2000, help="held-out scenes for the test accuracies (0: none)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="weights file (default: the shipped opticam_lib/data/world_<arch>[_permuted].pt, which needs "
        "--overwrite-shipped)",
    )
    p.add_argument(
        "--report",
        default=None,
        help="JSON report to update (default: world_report.json in the folder of --out; the shipped report "
        "only with --overwrite-shipped)",
    )
    p.add_argument("--no-report", action="store_true", help="do not update the report")
    p.add_argument("--overwrite-shipped", action="store_true", help=SHIPPED_HELP)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's choice)")
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
    p.add_argument("--n", type=int, default=1024, help="images per batch, at least 1")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--label", default="", help="a note stored with the measurement (e.g. the machine's load)")
    p.add_argument(
        "--report",
        default=None,
        help="JSON report to add the measurement to (default: the shipped opticam_lib/data/world_report.json, "
        "which needs --overwrite-shipped)",
    )
    p.add_argument("--no-report", action="store_true", help="only print the speed")
    p.add_argument(
        "--overwrite-shipped",
        action="store_true",
        help="allow adding the measurement to the course's shipped report (opticam_lib/data/world_report.json)",
    )
    p.set_defaults(func=_cmd_speed)
    p = sub.add_parser("evidence", help="how much a world model relies on object and context")
    p.add_argument("--model", default="world_cnn", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--n", type=int, default=1000, help="new scenes, at least 1")
    p.add_argument("--seed", type=int, default=12345)
    p.set_defaults(func=_cmd_evidence)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m opticam_lib.world {train,speed,evidence} ...``; returns the exit status: 0, 2 with one
    ``error:`` line for a bad argument (argparse's own errors too), 1 for any other failure, 130 after Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except InputError as e:
        return _fail(str(e), 2)
    except OptiCAMError as e:  # missing or damaged weights, a missing dependency
        return _fail(str(e), 1)
    except (MemoryError, OverflowError) as e:
        return _fail(
            f"a setting is too large for this machine ({type(e).__name__}: {e}); use smaller numbers", 1
        )
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return _fail(
            f"{where}{e.strerror or e} (check the path and its folder's permissions and free space)", 1
        )
    except RuntimeError as e:
        message = str(e).lower()
        if any(word in message for word in ("device", "cuda", "nvidia", "driver", "mps")):
            return _fail(
                f"device {getattr(args, 'device', '?')!r} is not usable here: {str(e).splitlines()[0]}", 1
            )
        if "allocate" in message or "out of memory" in message:
            return _fail(f"not enough memory ({str(e).splitlines()[0]}); use smaller numbers", 1)
        raise


if __name__ == "__main__":
    raise SystemExit(main())
