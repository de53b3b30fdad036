"""The controlled world's command line: ``python -m opticam_lib.world {train,speed,evidence}``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from opticam_lib.paths import atomic_write
from opticam_lib.world.networks import DATA_DIR
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
)


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
    atomic_write(out, lambda tmp: torch.save(result.checkpoint, tmp))  # the shipped file stays whole
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
    from opticam_lib.models.registry import load_classifier

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
