"""Reproduce the paper's tables: every method the table lists, printed next to the paper's own numbers.

    python -m opticam_lib reproduce --table 1                       # offline default: efficientnet_lite0, samples
    python -m opticam_lib reproduce --table 4 --methods gradcam,opticam   # AOPC, MS, ADCC (pip install quantus)
    python -m opticam_lib reproduce --table 1 --model resnet50 --images imagenet-val:1000 --device cuda
    torchrun --nproc_per_node 4 -m opticam_lib reproduce --table 1 --model resnet50 --images imagenet-val
    python -m opticam_lib reproduce --table A7 --model resnet50 --images imagenet-val:1000   # localisation
    python -m opticam_lib reproduce --table A8 --model world_vit --images world:32   # transformers, offline
    python -m opticam_lib reproduce --table A10 --model outputs/medical/chest-xray_resnet50/model.pt \
        --images chest-xray:624                                    # appendix E, after `medical finetune`
    python -m opticam_lib reproduce --table A11 --model outputs/medical/chest-xray_resnet50/model.pt \
        --images chest-xray:624                                    # the same, insertion and deletion

Images (``--images``): ``samples`` (the 10 offline photos), ``imagenet-val[:N]``, ``imagenette[:N]`` (after
``python -m data_download ...``), ``chest-xray[:N]`` / ``kvasir[:N]`` (their test split), ``world[:N]``
(generated images of the controlled world, for the ``world_*`` models: seconds on a CPU) or a folder ``PATH[:N]``.

Work is cut into fixed batches of ``batch_size`` consecutive images (batch b = images b*B .. b*B+B-1), the same
in every run. Each finished batch appends one JSON line per image and method to ``OUT/records-<rank>.jsonl``, so
an interrupted run resumes where it stopped: batches whose records are all there are not recomputed (each batch's
lines are fsynced before the next batch starts). The image files of the batches left are checked before the first
(``images.unreadable_images``: headers and end markers), so a bad file stops the run at once. Under
``torchrun`` batch b goes to rank b mod world size, each rank writes its own records file, and every rank merges
all of them after a barrier (rank 0 writes the table). Since every batch holds the same images as in a
single-process run and every metric is an average of per-image values taken in the images' order, the merged
AD/AG/AI/I/D are those of a single-process run (T, a time, is measured on each rank).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from opticam_lib.digests import code_digest, image_digests, model_digest
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.images import (
    ImageSet,
    LazyImages,
    boxes_to_mask,
    load_imagenet_folder,
    load_samples,
    unreadable_images,
    unreadable_message,
)
from opticam_lib.methods.registry import LAYER_METHODS, PROGRESS_METHODS, display_name, get_method
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.metrics.curves import area_under_curve, deletion_curve, insertion_curve
from opticam_lib.metrics.evaluation import warm_up
from opticam_lib.metrics.localization import (
    aggregate_localization,
    localization_from_record,
    localization_record,
    localize_with,
)
from opticam_lib.metrics.more_metrics import require_quantus, table4_row, table4_scores
from opticam_lib.models.classifier import Classifier
from opticam_lib.models.registry import load_classifier
from opticam_lib.paper.tables import STORED_WITH, paper_tables
from opticam_lib.paths import atomic_write, datasets_dir, exclusive_lock, fsync_dir

# each table's rows in the paper's order, as the library names them
CNN_METHODS = [  # Table 1
    "fakecam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "ablationcam",
    "xgradcam",
    "layercam",
    "experturbation",
    "hirescam",
    "lime",
    "gradientshap",
    "opticam",
]
VIT_METHODS = [  # Table 2
    "fakecam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "xgradcam",
    "layercam",
    "experturbation",
    "rawatt",
    "rollout",
    "tibav",
    "hirescam",
    "lime",
    "gradientshap",
    "opticam",
]
# Table 3 (insertion/deletion): no HiRes-CAM; Ablation-CAM for CNNs only
TABLE3_CNN_METHODS = [m for m in CNN_METHODS if m != "hirescam"]
TABLE3_VIT_METHODS = [m for m in VIT_METHODS if m != "hirescam"]
# Table 4 (AOPC, MS, ADCC; CNNs only in the paper), in the paper's order
TABLE4_METHODS = [
    "gradcam",
    "gradcampp",
    "scorecam",
    "xgradcam",
    "ablationcam",
    "layercam",
    "experturbation",
    "opticam",
]
# Tables 5, A7, A10 and A14: the CAM family, ExPerturbation and Opti-CAM
A10_METHODS = [m for m in CNN_METHODS if m not in ("hirescam", "lime", "gradientshap")]
A7_METHODS = list(A10_METHODS)  # localisation, CNNs (Table A7's rows)
A8_METHODS = [m for m in VIT_METHODS if m not in ("hirescam", "lime", "gradientshap")]  # transformers
# Table A11 (insertion/deletion on the medical sets): the rows the paper has
A11_METHODS = ["gradcam", "gradcampp", "scorecam", "ablationcam", "xgradcam", "opticam"]
LOCALIZATION_TABLES = ("A7", "A8")
TABLES: dict[str, str] = {
    "1": "AD, AG, AI and T per method (CNNs)",
    "2": "AD, AG, AI and T per method (transformers, with raw attention, rollout and TIBAV)",
    "3": "insertion and deletion per method (predicted class)",
    "4": "AOPC and Max-Sensitivity (Quantus, the paper's settings) and ADCC per method",
    "5": "bounding-box study: S, B∩S, S\\B, and the box and its complement as maps",
    "A7": "localisation: OM, LE, F1, BA, SP, EP, SM per method (CNNs; appendix B)",
    "A8": "localisation: OM, LE, F1, BA, SP, EP, SM per method (transformers, with raw attention, rollout, TIBAV)",
    "A9": "AD, AG, AI for maps of the ground-truth, most, second and least probable class",
    "A10": "AD, AG, AI on a medical test set with a fine-tuned network (appendix E)",
    "A11": "insertion and deletion on a medical test set with a fine-tuned network (appendix E)",
    "A14": "Table 1 without input normalisation",
}
A9_TARGETS = ("ground_truth", "most", "second", "least")
MEDICAL_SETS = ("chest-xray", "kvasir")
EXTRA_METHODS = ("rawatt", "rollout", "box", "complement")
# the row names of the paper's data file where they differ from ours
PAPER_ROW = {"S := B": "$S := B$", "S := I \\ B": "$S := I \\setminus B$"}
# the model whose numbers are shown when the paper has none for ours (e.g. the offline efficientnet_lite0)
PAPER_FALLBACK = {
    "1": "resnet50",
    "2": "vit_b_16",
    "3": "resnet50",
    "4": "resnet50",
    "5": "vgg16_bn",
    "A7": "resnet50",
    "A8": "vit_b_16",
    "A9": "resnet50",
    "A10": "chest-xray/resnet50",
    "A11": "chest-xray/resnet50",
    "A14": "resnet50",
}
TWO_DECIMALS = ("T", "MS", "SM")  # printed with two decimals, as in the paper
WORLD_SEED = 20240101  # world[:N] images: generate(config, N, seed=WORLD_SEED), the same in every run


@dataclass
class Config:
    """One reproduction run (the CLI's options).

    Attributes:
        table: one of ``TABLES``.
        model: a registered model name, or a fine-tuned checkpoint (``.pt``) of ``opticam_lib.paper.medical``.
        images: image spec (see the module docstring).
        methods: method names (default: those the paper's table lists).
        device: ``cpu``, ``cuda``...; under torchrun with CUDA each rank takes ``cuda:LOCAL_RANK``.
        batch_size: images per batch (also the unit of caching and of sharding).
        iterations: Opti-CAM iterations (the paper: 100).
        lr: Opti-CAM's learning rate (the paper: 0.1).
        layer: the target layer of the methods that take one (Grad-CAM and its variants, Score-CAM,
            Ablation-CAM, Opti-CAM); None: the model's own. CAM, Fake-CAM and the attention baselines ignore it.
        steps: insertion/deletion steps (default: the image side, 224 pixels a step at 224 px).
        amp: Opti-CAM's masked forward passes under autocast (``04_making_it_fast``); changes the maps slightly.
        out: output folder (default ``outputs/reproduce/table<T>_<model>_<hash>``).
    """

    table: str = "1"
    model: str = "efficientnet_lite0"
    images: str = "samples"
    methods: list[str] = field(default_factory=list)
    device: str = "cpu"
    batch_size: int = 8
    iterations: int = 100
    lr: float = 0.1
    layer: str | None = None
    steps: int | None = None
    amp: bool = False
    out: str = ""

    def key(self) -> str:
        """A short hash of what determines the results (not the device or the output folder)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("device", "out")}
        for k, default in (("lr", 0.1), ("layer", None)):  # added later: caches made before them stay valid
            if d[k] == default:
                del d[k]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_methods(table: str, classifier: Classifier) -> list[str]:
    """The methods the paper's table lists, in its order."""
    vit = classifier.prefix_tokens is not None
    if table == "3":
        return list(TABLE3_VIT_METHODS if vit else TABLE3_CNN_METHODS)
    if table in LOCALIZATION_TABLES:
        return list(A8_METHODS if vit else A7_METHODS)
    if table == "A11":
        return list(A11_METHODS)
    if table == "4":  # Ablation-CAM is a CNN row only, as in Tables 2 and 3
        return [m for m in TABLE4_METHODS if not (vit and m == "ablationcam")]
    if table == "2" or vit:
        return list(VIT_METHODS)
    if table == "A9":
        return ["gradcam", "gradcampp", "scorecam", "opticam"]
    if table == "5":
        return ["box", "complement", *A10_METHODS]
    if table in ("A10", "A14"):
        return list(A10_METHODS)
    return list(CNN_METHODS)


def _check_config(config: Config) -> None:
    import math

    if config.table not in TABLES:
        raise InputError(f"unknown table {config.table!r}; choose one of: {', '.join(TABLES)}")
    if config.table == "4":
        require_quantus("Table 4's AOPC and Max-Sensitivity")  # before any work
    for name, value in (("batch_size", config.batch_size), ("iterations", config.iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if (
        isinstance(config.lr, bool)
        or not isinstance(config.lr, int | float)
        or not math.isfinite(config.lr)
        or not config.lr > 0
    ):
        raise InputError(f"lr must be a positive finite number, got {config.lr!r} (the paper's: 0.1)")
    if config.steps is not None and (not isinstance(config.steps, int) or config.steps < 1):
        raise InputError(f"steps must be a positive integer or None, got {config.steps!r}")
    for m in config.methods:
        if m not in EXTRA_METHODS:
            get_method(m)  # raises InputError naming the known methods
        if m in ("box", "complement") and config.table != "5":
            raise InputError(f"method {m!r} (the box as a map) belongs to table 5 only")


def _parse_spec(spec: str) -> tuple[str, int | None]:
    """``NAME[:N]`` -> (NAME, N or None)."""
    name, sep, limit_text = spec.rpartition(":")
    if not sep or Path(spec).exists():  # a folder whose path has a colon is that folder, whole
        return spec, None
    text = limit_text.strip()
    count = int(text) if text.lstrip("+-").isdecimal() and text.isascii() else None
    if count is None or count < 1:
        raise InputError(
            f"bad image count in {spec!r}: expected NAME:N with N a positive integer (e.g. world:8); "
            "for a folder whose path has a colon, give its existing path"
        )
    return name, count


def load_image_spec(spec: str, size: int, classifier: Classifier | None = None) -> ImageSet:
    """The images of a spec: ``samples[:N]``, ``imagenet-val[:N]``, ``imagenette[:N]``, ``chest-xray[:N]``,
    ``kvasir[:N]`` (test split), ``world[:N]`` or a folder ``PATH[:N]``, as (N, 3, size, size) in [0, 1].
    ``chest-xray@ROOT[:N]`` / ``kvasir@ROOT[:N]``: that data set's test split read from the folder ROOT (e.g. the
    ``--root`` of ``medical finetune``) instead of the data_download cache.

    ``world`` renders the world of ``classifier`` (its ``extra["world_config"]``; default ``WorldConfig(size)``)
    with a fixed seed. When ``classifier`` is given, labels must be classes of it.

    Raises:
        InputError: bad spec, or labels the classifier does not have (e.g. ImageNet photos for a world model).
        MissingDataError: a data set that is not downloaded (the message gives the data_download command).
    """
    if not spec:
        raise InputError("empty image spec; use samples, imagenet-val[:N], world[:N], ... or a folder path")
    medical_root = None
    for medical in MEDICAL_SETS:
        if spec.startswith(f"{medical}@"):
            rest = spec[len(medical) + 1 :]
            root_text, limit = (rest, None) if Path(rest).exists() else _parse_spec(rest)
            if not root_text:
                raise InputError(f"no folder after '@' in {spec!r}; expected {medical}@ROOT[:N]")
            name, medical_root = medical, root_text
            break
    else:
        name, limit = _parse_spec(spec)
    if name == "samples":
        s = load_samples(size=size)
        data = s.subset(list(range(min(limit or len(s), len(s)))))
    elif name == "world":
        from opticam_lib.world.scenes import WorldConfig, generate

        if classifier is not None and not classifier.extra.get("world_config"):
            from opticam_lib.models.registry import available_models

            world_models = ", ".join(m for m in available_models() if m.startswith("world_"))
            raise InputError(
                f"world[:N] images are for the world models ({world_models}); {classifier.name} does not "
                "classify them (its class ids are not the world's). Use --model world_cnn, or images of its own "
                "classes (samples, imagenet-val[:N], a folder)"
            )
        config = (classifier.extra.get("world_config") if classifier is not None else None) or WorldConfig()
        if config.size != size:
            config = WorldConfig.from_dict({**asdict(config), "size": size})
        batch = generate(config, limit or 64, seed=WORLD_SEED)
        data = ImageSet(
            images=batch.images,
            labels=batch.labels,
            boxes=[b[None].float() for b in batch.boxes],
            names=[f"world_{i}" for i in range(len(batch))],
            sources=[f"opticam_lib.world.generate(seed={WORLD_SEED})[{i}]" for i in range(len(batch))],
        )
    elif name in MEDICAL_SETS:
        from opticam_lib.paper.medical import load_split, require_matching_classes

        root = medical_root if medical_root is not None else datasets_dir() / name
        if classifier is not None and "checkpoint" in classifier.extra:  # a fine-tuned network: its classes
            trained_on = str(classifier.extra.get("paper_key", "")).split("/")[0] or None
            require_matching_classes(classifier.categories, root, classifier.extra["checkpoint"], trained_on)
        data = load_split(root, "test", size=size, limit=limit, dataset=name)
    else:
        if name in ("imagenet-val", "imagenette"):
            root = datasets_dir() / name
            if not root.exists():
                raise MissingDataError(
                    f"{name} is not in the cache ({root} is missing). Fetch and prepare it once with:\n"
                    f"python -m data_download {name}"
                )
        else:
            root = Path(name)
        data = load_imagenet_folder(root, size=size, limit=limit, lazy=True)  # each rank decodes its batches
    if classifier is not None and len(data) and int(data.labels.max()) >= classifier.num_classes:
        raise InputError(
            f"the images {spec!r} have class ids up to {int(data.labels.max())} but {classifier.name} has "
            f"{classifier.num_classes} classes; use images of its own classes (world[:N] for world_* models)"
        )
    return data


def load_model(name: str, device: str, normalize: bool = True) -> Classifier:
    """A registered model, or a fine-tuned checkpoint file of ``opticam_lib.paper.medical`` (``*.pt``)."""
    if name.endswith((".pt", ".pth")) or Path(name).is_file():
        from opticam_lib.paper.medical import load_finetuned

        return load_finetuned(name, device=device, normalize=normalize)
    return load_classifier(name, device=device, normalize=normalize)


def _rank_world() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _maybe_init_distributed(device: str) -> bool:
    """Join the process group torchrun describes (NCCL on CUDA, gloo otherwise). True if we created it."""
    _, world = _rank_world()
    if world == 1:
        return False
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True


def _records_path(out: Path, rank: int) -> Path:
    return out / f"records-{rank}.jsonl"


def input_fingerprints(data: ImageSet) -> list[str]:
    """One short digest per image of what its records depend on besides the run's settings: its pixels (for
    images read lazily from files: the file's name, size and modification time, so that a resume over 50,000
    files decodes none of them), its label and its boxes. A record keeps its image's digest, and a resume refuses
    records whose image, label or boxes changed since."""
    if isinstance(data.images, LazyImages):
        pixels = []
        for f in data.images.files:
            st = f.stat()
            pixels.append(f"{f.name}|{st.st_size}|{st.st_mtime_ns}")  # not the folder: a moved folder resumes
    else:
        pixels = image_digests(data.images)
    digests = []
    for i, px in enumerate(pixels):
        box = data.boxes[i].detach().cpu().float().numpy().round(2).tobytes().hex()
        digests.append(hashlib.sha256(f"{px}|{int(data.labels[i])}|{box}".encode()).hexdigest()[:16])
    return digests


def device_label(device: torch.device) -> str:
    """What a record was computed on, for T and round-off: ``cpu``, or ``cuda (<GPU name>)`` (the ranks of one
    machine's identical GPUs share a label)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def provenance(classifier: Classifier, model_sha: str) -> dict[str, str]:
    """Who made these results: the library, torch and Python versions, the date (UTC), the command line, the
    device and the weights' SHA-256 (``digests.model_digest``)."""
    from opticam_lib import __version__

    return {
        "opticam_lib": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "opticam_lib", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "__main__.py"
        else shlex.join(sys.argv),
        "device": device_label(classifier.device),
        "model_sha256": model_sha,
    }


def _repair_tail(path: Path) -> None:
    """Cut a record line that an interruption left without its newline (and anything after the last newline,
    e.g. NUL bytes after a crash) off ``path``, so the next append starts on a fresh line. Without this, the first
    record appended after a resume would be glued to the fragment, unreadable, and silently missing."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":  # the usual case: only the last byte is read
            return
        keep, pos = 0, end  # 0 when no line is complete
        while pos > 0:  # back from the end, 64 KiB at a time, to the last newline
            start = max(0, pos - 65536)
            f.seek(start)
            at = f.read(pos - start).rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            pos = start
        f.truncate(keep)
        os.fsync(f.fileno())  # cut on disk before records are appended after it


def _check_records(
    records: dict,
    names: Sequence[str],
    methods: Sequence[str],
    variants: Sequence[str],
    *,
    fingerprints: Sequence[str] | None = None,
    model_sha: str | None = None,
    device: str | None = None,
    code_sha: str | None = None,
) -> None:
    """Refuse records made on other images (a record keeps its image's name and its ``input_fingerprints``
    digest), by other weights (the model's SHA-256), on another device (T would average two devices' times) or by
    another version of the library's code (``digests.code_digest``: a fix that moves the numbers would be mixed with
    the numbers it fixes), and a merge that lacks any record: the table is computed on every image or not at all.
    Records written by older versions of the library, without these keys, are checked by the image's name only.

    Raises:
        InputError: a record's image, weights, device or code is not this run's, or some record is missing.
    """
    fresh = "use another --out, or delete the output folder to compute them again"
    for (method, _variant, i), r in records.items():
        if "image" in r and (i >= len(names) or r["image"] != names[i]):
            now = names[i] if i < len(names) else "no image"
            raise InputError(
                f"the cached records were made on other images: image {i} was {r['image']!r}, now it is {now!r} "
                f"({method}). The image set changed since they were computed: {fresh}."
            )
        if fingerprints is not None and "input" in r and r["input"] != fingerprints[i]:
            raise InputError(
                f"image {i} ({names[i]!r}) changed since its cached records were computed ({method}): its pixels "
                f"(or file), its label or its boxes are not the same. The cached numbers would be another image's: "
                f"{fresh}."
            )
        if model_sha is not None and "model_sha256" in r and r["model_sha256"] != model_sha[:16]:
            raise InputError(
                f"the model's weights changed since the cached records were computed (SHA-256 {r['model_sha256']}"
                f"... then, {model_sha[:16]}... now; {method}, image {i}): a retrained checkpoint or re-downloaded "
                f"weights at the same path. The cached numbers would be the old weights': {fresh}."
            )
        if device is not None and "device" in r and r["device"] != device:
            raise InputError(
                f"the cached records were computed on {r['device']}, this run is on {device} ({method}, image {i}): "
                f"T would average two devices' times. Resume with the same device, or {fresh}."
            )
        if code_sha is not None and "code_sha256" in r and r["code_sha256"] != code_sha[:16]:
            raise InputError(
                f"the library's code changed since the cached records were computed (opticam_lib source SHA-256 "
                f"{r['code_sha256']}... then, {code_sha[:16]}... now; {method}, image {i}): an upgrade or an edit "
                f"may have changed how the numbers are computed, and a table would mix both. Resume with the code "
                f"that made them, or {fresh}."
            )
    missing = [
        (m, v, i) for m in methods for v in variants for i in range(len(names)) if (m, v, i) not in records
    ]
    if missing:
        m, v, i = missing[0]
        raise InputError(
            f"{len(missing)} record(s) are missing after the run (e.g. {m}, {v}, image {i}); the records files may "
            "have been damaged: run the same command again to compute them"
        )


def _pending(
    done: dict, batches_: Sequence[list[int]], methods: Sequence[str], variants: Sequence[str]
) -> list[tuple[str, str, list[int]]]:
    """The (method, variant, batch) among ``batches_`` that still lack a record of some image, in the order they
    are computed: method, then variant, then batch."""
    return [
        (m, v, b)
        for m in methods
        for v in variants
        for b in batches_
        if any((m, v, i) not in done for i in b)
    ]


def _check_readable(images: LazyImages, indices: Sequence[int]) -> None:
    """Refuse, before any batch, the image files among ``indices`` that cannot be read (``unreadable_images``:
    headers and end markers; a decode only where the end marker is missing), all of them in one line; a resume
    checks only what it computes.

    Raises:
        InputError: naming up to 5 files and why each cannot be read.
    """
    bad = unreadable_images(images.files[i] for i in indices)
    if bad:
        raise InputError(
            unreadable_message(bad, len(indices), "image files still to compute")
            + ". Replace or remove them "
            "and run the same command again (no batch was started; records already made are kept)"
        )


def _load_records(out: Path) -> dict[tuple[str, str, int], dict]:
    """Every complete record of every rank's file. A line cut short by an interruption is skipped (its batch is
    then recomputed; ``_repair_tail`` removes it before the next append)."""
    done: dict[tuple[str, str, int], dict] = {}
    for path in sorted(out.glob("records-*.jsonl")):
        for (
            raw
        ) in path.read_bytes().splitlines():  # bytes: a fragment cut mid-character must not stop the resume
            if not raw.strip():
                continue
            try:
                r = json.loads(raw.decode("utf-8"))
                done[(r["method"], r["variant"], int(r["index"]))] = r
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return done


def _map_fn(name: str) -> Callable:
    if name in ("rawatt", "rollout"):
        from opticam_lib.methods.attention import raw_attention, rollout

        return raw_attention if name == "rawatt" else rollout
    return get_method(name)


def _display(name: str) -> str:
    return {
        "rawatt": "RawAtt",
        "rollout": "Rollout",
        "box": "S := B",
        "complement": "S := I \\ B",
    }.get(name, display_name(name))


def batches(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """The batches of image indices that ``rank`` of ``world`` computes: batch b = [b*B, b*B+B) ∩ [0, n),
    for every b with b mod world == rank."""
    all_batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    return [b for j, b in enumerate(all_batches) if j % world == rank]


def _output_folder(config: Config, resolved: Config) -> Path:
    """``--out`` (``~`` expanded), or the default folder named by the table, the model and the settings' key;
    created if missing."""
    out = Path(
        config.out or f"outputs/reproduce/table{config.table}_{Path(config.model).stem}_{resolved.key()}"
    ).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder: give a folder for the results")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _prepare_out(out: Path, resolved: Config, rank: int) -> Path:
    """The output folder, checked: a new or empty folder, or one that ``reproduce`` made for the same settings (its
    ``config.json``). A folder with anything else in it (a user's own files, another program's ``config.json``)
    is refused: ``table.*`` and ``config.json`` would overwrite files of the same names."""
    cfg_path = out / "config.json"
    has_records = any(p.stat().st_size > 0 for p in out.glob("records-*.jsonl"))
    ours = ("config.json", "table.json", "table.csv", "table.txt")
    others = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in ours
        and not p.name.startswith("records-")
        # atomic_write's
        and not (p.name.startswith(tuple(f".{n}." for n in ours)) and p.name.endswith(".tmp"))
    )
    old: dict | None = None
    if cfg_path.is_file():
        try:
            old = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict) or not {"table", "model", "images", "methods"} <= set(old):
            what = (
                "cannot be read" if old is None else "is not reproduce's (no table, model, images, methods)"
            )
            raise InputError(
                f"{cfg_path} {what}, so nothing says that {out} holds a reproduction; writing this run's "
                "config.json and table.* there could overwrite your files. Use another --out (a new or empty folder)."
            )
        old_key = Config(**{k: v for k, v in old.items() if k in asdict(resolved)}).key()
        if old_key != resolved.key():
            what = "the records" if has_records else "the config.json"
            raise InputError(
                f"{out} holds {what} of a run with other settings ({cfg_path}: {json.dumps(old)}); its cached "
                "results would be mixed with this one's. Use another --out, or delete that folder."
            )
        return out  # the same run: its config.json stays as it is
    if has_records:
        raise InputError(
            f"{out} holds records but no config.json, so nothing says which run made them. Use another --out, or "
            "delete that folder."
        )
    if others or any((out / name).exists() for name in ours):
        shown = ", ".join((others + [n for n in ours if (out / n).exists()])[:4])
        raise InputError(
            f"{out} is not empty ({shown}...) and reproduce did not make it (no config.json of its own): its "
            "table.* and config.json could overwrite your files. Use another --out (a new or empty folder)."
        )
    if rank == 0:  # a new or empty folder
        config_json = {
            **asdict(resolved),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write(cfg_path, json.dumps(config_json, indent=2) + "\n")  # never a half-written config
    return out


@dataclass
class Reproduction:
    """What ``run`` returns (on every rank).

    Attributes:
        table: {row name: {column: value, "images": count}} (see ``summarize``).
        text: the table in the paper's layout next to the paper's numbers (``format_reproduction``).
        out: the output folder (records, config.json and, written by rank 0, table.json/.csv/.txt).
        computed: batches this process computed (0 when everything came from the cache).
        seconds: wall-clock time of this call.
    """

    table: dict
    text: str
    out: Path
    computed: int
    seconds: float


def run(
    config: Config,
    progress: bool = True,
    evaluate_batch: Callable[..., list[dict]] | None = None,
) -> Reproduction:
    """Run (or resume) a reproduction and return the merged table (on every rank; rank 0 also writes
    ``table.json``, ``table.csv``, ``table.txt`` in the output folder).

    ``evaluate_batch`` replaces ``_evaluate_batch`` (same arguments); tests use it to count what is computed.
    """
    _check_config(config)
    created = _maybe_init_distributed(config.device)
    try:
        return _run(config, progress, evaluate_batch or _evaluate_batch)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _same_on_every_rank(code_sha: str, model_sha: str, device: torch.device) -> None:
    """Under torchrun, before any batch: refuse ranks that run other library code or other weights (machines with
    different installs), whose records could never be merged into one table. Every rank raises the same error.

    Raises:
        InputError: naming each rank's digest.
    """
    import torch.distributed as dist

    mine = torch.tensor(list(bytes.fromhex(code_sha) + bytes.fromhex(model_sha)), dtype=torch.uint8)
    mine = mine.to(device if dist.get_backend() == "nccl" else "cpu")
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    every = [bytes(t.cpu().tolist()).hex() for t in every]
    for what, part in (
        ("library code (SHA-256 of opticam_lib's source)", slice(0, 64)),
        ("weights", slice(64, None)),
    ):
        seen = [e[part] for e in every]
        if len(set(seen)) > 1:
            ranks = ", ".join(f"rank {r}: {d[:16]}..." for r, d in enumerate(seen))
            raise InputError(
                f"the torchrun ranks run with different {what} ({ranks}): their records could not be merged into "
                "one table. Install the same opticam_lib and weights on every machine"
            )


def _run(config: Config, progress: bool, evaluate_batch: Callable[..., list[dict]]) -> Reproduction:
    t_start = time.perf_counter()
    rank, world = _rank_world()
    device = config.device
    if world > 1 and device.startswith("cuda") and ":" not in device:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    clf = load_model(config.model, device=device, normalize=config.table != "A14")
    if config.layer is not None:
        clf.layer(config.layer)  # an unknown name fails here, naming the valid ones, before any work
    if config.table in ("2", "A8") and clf.prefix_tokens is None:
        cnn_table = "1" if config.table == "2" else "A7"
        raise InputError(
            f"table {config.table} is the transformers' table (raw attention, rollout, TIBAV); {clf.name} is a CNN. "
            f"Use --model vit_b_16, deit_b_16 or world_vit, or table {cnn_table} for CNNs."
        )
    if config.table in ("A10", "A11") and "paper_key" not in clf.extra:
        raise InputError(
            f"table {config.table} is appendix E's medical table: {clf.name} is not a network fine-tuned by "
            "`python -m opticam_lib medical finetune` (its numbers would sit beside the paper's medical ones). Use "
            "--model outputs/medical/<dataset>_<arch>/model.pt with --images chest-xray or kvasir, or table "
            f"{'1' if config.table == 'A10' else '5'} for other models."
        )
    if config.table == "A7" and clf.prefix_tokens is not None:
        raise InputError(
            f"table A7 is the CNNs' localisation table; {clf.name} is a transformer: use table A8"
        )
    methods = list(config.methods) or default_methods(config.table, clf)
    if clf.prefix_tokens is None and any(m in ("rawatt", "rollout", "tibav") for m in methods):
        raise InputError(f"raw attention, rollout and TIBAV need a transformer; {clf.name} is a CNN")
    resolved = Config(**{**asdict(config), "methods": methods})
    data = load_image_spec(config.images, clf.input_size, clf)
    if len(data) == 0:
        raise InputError(f"no images in {config.images!r}")
    if config.table in LOCALIZATION_TABLES or config.table == "5":
        missing = [name for name, b in zip(data.names, data.boxes) if b.numel() == 0]
        if missing:
            raise InputError(
                f"table {config.table} needs a ground-truth box for every image; {len(missing)} of {len(data)} "
                f"images in {config.images!r} have none (e.g. {missing[0]}). Use images with boxes: samples, "
                "imagenet-val (its boxes come with data_download), world[:N], or a folder with box files."
            )
    out = _output_folder(config, resolved)
    busy = f"another reproduce run is using {out}: wait for it to finish, or give this one another --out"
    # one run per folder (rank 0 holds the lock for its torchrun job): no mixed or doubled records
    with exclusive_lock(out, busy) if rank == 0 else contextlib.nullcontext():
        _prepare_out(out, resolved, rank)
        # no rank writes records before every rank has checked the folder (and rank 0 wrote config.json)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
            _same_on_every_rank(code_digest(), model_digest(clf), clf.device)
        done = _load_records(out)
        variants = list(A9_TARGETS) if config.table == "A9" else ["main"]
        todo = _pending(done, batches(len(data), config.batch_size, rank, world), methods, variants)
        if isinstance(data.images, LazyImages):  # every rank checks every batch left, so all stop alike
            left = _pending(done, batches(len(data), config.batch_size), methods, variants)
            _check_readable(data.images, sorted({i for _, _, b in left for i in b}))
        bar = tqdm(
            total=sum(len(b) for _, _, b in todo),
            desc=f"table {config.table} [rank {rank}/{world}]",
            unit="img",
            position=rank,
            disable=not progress,
        )
        fingerprints = input_fingerprints(data)
        model_sha = model_digest(clf)
        device_now = device_label(clf.device)
        code_sha = code_digest()
        stamps = {
            "fingerprints": fingerprints,
            "model_sha": model_sha,
            "device": device_now,
            "code_sha": code_sha,
        }
        # other images, weights or device: refused before any work
        _check_records(done, data.names, [], [], **stamps)
        _repair_tail(_records_path(out, rank))
        # the first timed batch must not pay the one-off costs of a first pass (evaluate does the same)
        if todo:
            warm_up(clf, data.images[todo[0][2][:1]])
        records_path = _records_path(out, rank)
        new_file = not records_path.exists()
        with open(records_path, "a") as sink:
            if new_file:
                fsync_dir(out)  # the file's name survives a power loss, not only its content
            for method, variant, idx in todo:
                bar.set_postfix_str(f"{method} {variant}" if variant != "main" else method)
                records = evaluate_batch(clf, data, idx, method, variant, resolved)
                records = [
                    {
                        **r,
                        "image": data.names[int(r["index"])],
                        "input": fingerprints[int(r["index"])],
                        "model_sha256": model_sha[:16],
                        "device": device_now,
                        "code_sha256": code_sha[:16],
                    }
                    for r in records
                ]
                sink.write("".join(json.dumps(r) + "\n" for r in records))  # one write per batch
                sink.flush()
                os.fsync(sink.fileno())  # on disk before the next batch: a power loss loses one batch at most
                bar.update(len(idx))
        bar.close()
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        records = _load_records(out)
        _check_records(records, data.names, methods, variants, **stamps)
        table = summarize(resolved, records, methods, len(data))
        if rank == 0:
            write_outputs(out, resolved, table, clf, provenance(clf, model_sha))
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # no rank leaves (and tears the group down) before rank 0 has written
        text = format_reproduction(resolved, table, clf)
        return Reproduction(table, text, out, len(todo), time.perf_counter() - t_start)


def _targets_for(clf: Classifier, images: torch.Tensor, labels: torch.Tensor, variant: str) -> torch.Tensor:
    if variant in ("main", "ground_truth"):
        return labels
    order = clf.predict(images).argsort(dim=1, descending=True)
    return {"most": order[:, 0], "second": order[:, 1], "least": order[:, -1]}[variant]


def _method_options(method: str, config: Config) -> dict:
    opts: dict = {"layer": config.layer} if config.layer and method in LAYER_METHODS else {}
    if method == "opticam":
        opts.update(iterations=config.iterations, lr=config.lr, amp=config.amp)
    if method in PROGRESS_METHODS:
        opts["progress"] = False
    return opts


def _evaluate_batch(
    clf: Classifier, data: ImageSet, idx: Sequence[int], method: str, variant: str, config: Config
) -> list[dict]:
    """One record per image of the batch ``idx``: p and o (or I and D, or the box study's o's) and the time."""
    images = data.images[list(idx)].to(clf.device)
    labels = data.labels[list(idx)].to(clf.device)
    table = config.table
    if table in ("3", "A11"):  # insertion/deletion: the predicted class, as in the paper (and RISE)
        targets = clf.predict(images).argmax(dim=1)
    else:
        targets = _targets_for(clf, images, labels, variant)
    box = None
    if table == "5" or method in ("box", "complement"):
        size = tuple(images.shape[-2:])
        box = torch.stack([boxes_to_mask(data.boxes[i].cpu(), size) for i in idx]).to(clf.device)
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    if method == "box":
        maps = box
    elif method == "complement":
        maps = 1 - box
    else:
        maps = _map_fn(method)(clf, images, targets, **_method_options(method, config))
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    base = {"method": method, "variant": variant, "seconds_per_image": seconds / len(idx)}
    if table == "4":  # AOPC and MS with Quantus, ADCC; the ground-truth class, as for AD/AG/AI
        scores = table4_scores(
            clf,
            images,
            _map_fn(method),
            targets,
            maps=maps,
            seed=int(idx[0]),
            **_method_options(method, config),
        )
        return [
            {**base, "index": i, **{k: float(v[j]) for k, v in scores.items()}} for j, i in enumerate(idx)
        ]
    if table in LOCALIZATION_TABLES:  # appendix B: the ground-truth class; SM scores the crop of B_p
        results = localize_with(clf, images, maps, [data.boxes[i] for i in idx], targets)
        return [{**base, "index": i, **localization_record(results[j])} for j, i in enumerate(idx)]
    if table in ("3", "A11"):
        deletion = area_under_curve(deletion_curve(clf, images, maps, targets, config.steps, progress=False))
        insertion = area_under_curve(
            insertion_curve(clf, images, maps, targets, config.steps, progress=False)
        )
        return [
            {**base, "index": i, "I": float(insertion[j]), "D": float(deletion[j])} for j, i in enumerate(idx)
        ]
    p = class_probability(clf, images, labels)
    if table == "5":
        parts = {"S": maps}
        if method not in ("box", "complement"):
            parts.update({"B_and_S": maps * box, "S_minus_B": maps * (1 - box)})
        o_parts = {k: class_probability(clf, images * m, labels) for k, m in parts.items()}
        return [
            {**base, "index": i, "p": float(p[j]), **{f"o_{k}": float(v[j]) for k, v in o_parts.items()}}
            for j, i in enumerate(idx)
        ]
    o = class_probability(clf, images * maps, labels)  # AD/AG/AI always against the ground-truth class
    records = [{**base, "index": i, "p": float(p[j]), "o": float(o[j])} for j, i in enumerate(idx)]
    # for the paper's "Most (Mis.)" columns: the most probable class on misclassified images
    if table == "A9":
        correct = (clf.predict(images).argmax(dim=1) == labels).cpu()
        for j, r in enumerate(records):
            r["correct"] = bool(correct[j])
    return records


def summarize(config: Config, records: dict, methods: Sequence[str], n: int) -> dict:
    """Average the per-image records into the table: {row name: {column: value, "images": count}}.

    AD/AG/AI in percent (eq. 13-15), I/D in percent (area under the curve x 100), T in seconds per batch of 8;
    Table 4: AOPC and ADCC in percent, MS as a ratio (``metrics.more_metrics.table4_row``); Tables A7/A8: the
    localisation columns (``metrics.localization.aggregate_localization``: percent, SM in nats).
    """

    def rows_of(method: str, variant: str) -> list[dict]:
        return [records[(method, variant, i)] for i in range(n) if (method, variant, i) in records]

    def adagai(rs: list[dict], key: str = "o") -> dict[str, float]:
        p = torch.tensor([r["p"] for r in rs], dtype=torch.float64)
        o = torch.tensor([r[key] for r in rs], dtype=torch.float64)
        return classification_metrics(p, o)

    table: dict[str, dict[str, float]] = {}
    for method in methods:
        name = _display(method)
        if config.table == "A9":
            row: dict[str, float] = {}
            count = 0
            for v in A9_TARGETS:
                rs = rows_of(method, v)
                count = max(count, len(rs))
                if rs:
                    row.update({f"{k}_{v}": val for k, val in adagai(rs).items()})
                if v == "most":
                    mis = [r for r in rs if not r.get("correct", True)]
                    if mis:
                        row.update({f"{k}_most_misclassified": val for k, val in adagai(mis).items()})
            if count:
                table[name] = {**row, "images": count}
            continue
        rs = rows_of(method, "main")
        if not rs:
            continue
        if config.table in LOCALIZATION_TABLES:
            row = aggregate_localization([localization_from_record(r) for r in rs])
        elif config.table in ("3", "A11"):
            row = {
                "I": 100 * sum(r["I"] for r in rs) / len(rs),
                "D": 100 * sum(r["D"] for r in rs) / len(rs),
            }
        elif config.table == "4":
            keys = ("AOPC", "MS", "ADCC")
            row = table4_row({k: torch.tensor([r[k] for r in rs], dtype=torch.float64) for k in keys})
        elif config.table == "5":
            row = {}
            for part in ("S", "B_and_S", "S_minus_B"):
                if f"o_{part}" in rs[0]:
                    row.update({f"{k}_{part}": val for k, val in adagai(rs, f"o_{part}").items()})
        else:
            row = adagai(rs)
            if method not in ("box", "complement"):
                row["T"] = 8 * sum(r["seconds_per_image"] for r in rs) / len(rs)
        table[name] = {**row, "images": len(rs)}
    return table


def paper_reference(config: Config, classifier: Classifier | None = None) -> tuple[str | None, dict]:
    """(the paper's model key, its rows) to print beside ours: our model's own when the paper has it, else ViT-B's
    for a transformer where the table has it (Table 3: raw attention, rollout and TIBAV have rows there only),
    else the table's usual one (e.g. resnet50 for Table 1), labelled as such."""
    stored, models = STORED_WITH.get(config.table, (config.table, None))
    data = paper_tables().get(stored, {}).get("data", {})
    data = {m: rows for m, rows in data.items() if models is None or m in models}
    key = (classifier.extra.get("paper_key") if classifier is not None else None) or config.model
    if key not in data:
        vit = classifier is not None and classifier.prefix_tokens is not None
        key = "vit_b_16" if vit and "vit_b_16" in data else PAPER_FALLBACK.get(config.table)
    if key not in data:
        return None, {}
    return key, dict(data[key])


def _columns(table: dict) -> list[str]:
    cols: list[str] = []
    for row in table.values():
        cols += [c for c in row if c != "images" and c not in cols]
    return cols


def settings_line(config: Config) -> str:
    """The settings that change the numbers, in one line under the table's title."""
    parts = [f"batch size {config.batch_size}", f"layer {config.layer or 'the model default'}"]
    if "opticam" in config.methods:
        parts.append(
            f"Opti-CAM {config.iterations} iterations at lr {config.lr:g}"
            + (" under autocast" if config.amp else "")
        )
    if config.table in ("3", "A11"):
        parts.append(f"curves in {config.steps} steps" if config.steps else "curves in the default steps")
    return "settings: " + ", ".join(parts)


def format_reproduction(config: Config, table: dict, classifier: Classifier | None = None) -> str:
    """The table in the paper's layout, each of our values followed by the paper's in brackets when it has one."""
    key, paper = paper_reference(config, classifier)
    columns = _columns(table)
    width = max([16, *(len(n) + 2 for n in table)])
    lines = [f"Table {config.table} ({TABLES[config.table]}): {config.model}, images {config.images}"]
    lines.append(settings_line(config))
    lines.append(f"{'METHOD':<{width}}" + "".join(f"{c:>22}" for c in columns) + f"{'images':>8}")
    for name, row in table.items():
        ref_row = paper.get(PAPER_ROW.get(name, name), {})
        cells = []
        for c in columns:
            ours = row.get(c)
            text = "-" if ours is None else f"{ours:.2f}" if c in TWO_DECIMALS else f"{ours:.1f}"
            ref = ref_row.get(c)
            if isinstance(ref, (int, float)):
                text += f" [{ref:.2f}]" if c in TWO_DECIMALS else f" [{ref:.1f}]"
            cells.append(f"{text:>22}")
        lines.append(f"{name:<{width}}" + "".join(cells) + f"{row.get('images', 0):>8}")
    if key is None:
        lines.append("(the paper has no numbers for this table: ours only)")
    else:
        own = key == config.model or (classifier is not None and classifier.extra.get("paper_key") == key)
        whose = f"the paper's value for {key}" + ("" if own else f" (the paper did not use {config.model})")
        lines.append(
            f"[x] = {whose}; the paper used the 50,000 ImageNet validation images (T timed on 1,000 of them; "
            "its ablations on 1,000), its medical test sets for A10/A11. AD, AG, AI, I, D, AOPC, ADCC, OM, LE, "
            "F1, BA, SP, EP in %; MS a ratio; SM in nats; T = s per batch of 8 on this device."
        )
    return "\n".join(lines)


def write_outputs(
    out: Path,
    config: Config,
    table: dict,
    classifier: Classifier | None = None,
    made_by: dict[str, str] | None = None,
) -> None:
    """``table.json`` (config, ``provenance``'s ``made_by``, our table, the paper's rows), ``table.csv`` (one row
    per method, ours then ``paper_<column>``) and ``table.txt`` (the printed layout, with the settings and
    ``made_by`` below it) in ``out``."""
    key, paper = paper_reference(config, classifier)
    columns = _columns(table)
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["method", *columns, "images", *[f"paper_{c}" for c in columns]])
    for name, row in table.items():
        ref = paper.get(PAPER_ROW.get(name, name), {})
        paper_cells = [ref.get(c, "") if isinstance(ref.get(c), (int, float)) else "" for c in columns]
        w.writerow([name, *[row.get(c, "") for c in columns], row.get("images", 0), *paper_cells])
    # each file whole or as before (the set is written from the same table, the JSON last: it is what is read)
    atomic_write(out / "table.csv", rows.getvalue())
    footer = "".join(f"\n{k}: {v}" for k, v in (made_by or {}).items())
    atomic_write(out / "table.txt", format_reproduction(config, table, classifier) + footer + "\n")
    atomic_write(
        out / "table.json",
        json.dumps(
            {
                "config": asdict(config),
                "provenance": made_by or {},
                "table": table,
                "paper_model": key,
                "paper": paper,
            },
            indent=2,
        )
        + "\n",
    )
