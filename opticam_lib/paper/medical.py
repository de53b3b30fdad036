"""The medical sets of appendix E: fine-tune a classifier on Chest X-ray or Kvasir, then Table A10.

Appendix E.2, as the paper states it: first train only the last fully-connected layer (replaced to have one
output per class) with the backbone frozen, at learning rate 1e-3 on Chest X-ray (both networks), 1e-4 (ResNet50)
or 5e-3 (VGG16) on Kvasir; then fine-tune the entire network with learning rate 1e-5 for 50 epochs, SGD with
momentum 0.9. The paper reports test accuracies of 82.0% (ResNet50) and 83.2% (VGG16) on Chest X-ray, 89.8% and
89.5% on Kvasir. It does not state the number of epochs of the first phase, the batch size or any augmentation:
the defaults here (5 epochs, batch 32, none) are ours, and are options.

    python -m data_download chest-xray                       # once: the data, split into train/val/test
    python -m opticam_lib medical finetune --dataset chest-xray --model resnet50 --device cuda
    python -m opticam_lib medical evaluate --checkpoint outputs/medical/chest-xray_resnet50/model.pt

``evaluate`` is ``reproduce --table A10`` (AD/AG/AI of every method on the test split, next to the paper's
Table A10), with its cache, resume and torchrun sharding.

Data layout (what ``data_download`` writes): ``ROOT/{train,val,test}/<class>/<image>`` with ``classes.json``
(the class order) and ``splits.csv`` (``file, split, class_name, class_index``). A folder without the two files
works too: classes are then the sorted sub-folders of ``train``.

Checkpoints (``model.pt``) hold only tensors and plain data (``torch.load(path, weights_only=True)``):
``{"state_dict": the whole model including its input normalisation, "meta": {...}}``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from opticam_lib.errors import InputError, MissingDataError, first_line
from opticam_lib.images import IMAGE_EXTENSIONS, ImageSet, load_image
from opticam_lib.models.classifier import Classifier
from opticam_lib.models.registry import load_classifier, usable_device
from opticam_lib.paths import ENV_VAR, atomic_write, datasets_dir, require_prepared, writable_dir

DATASETS = ("chest-xray", "kvasir")
SPLITS = ("train", "val", "test")
# appendix E.2: learning rate of the first phase (last layer only, backbone frozen)
PAPER_HEAD_LR = {
    ("chest-xray", "resnet50"): 1e-3,
    ("chest-xray", "vgg16_bn"): 1e-3,
    ("kvasir", "resnet50"): 1e-4,
    ("kvasir", "vgg16_bn"): 5e-3,
}
PAPER_LR = 1e-5  # second phase: the entire network
PAPER_EPOCHS = 50
PAPER_MOMENTUM = 0.9
PAPER_ACCURACY = {  # test accuracy (%) the paper reports after fine-tuning
    ("chest-xray", "resnet50"): 82.0,
    ("chest-xray", "vgg16_bn"): 83.2,
    ("kvasir", "resnet50"): 89.8,
    ("kvasir", "vgg16_bn"): 89.5,
}
PAPER_SPLIT_SIZES = {"chest-xray": (5216, 16, 624), "kvasir": (6000, 1000, 1000)}  # appendix E.1


# --------------------------------------------------------------------------------------------------------------
# Data


def _is_image(p: Path) -> bool:
    """An image file of a class folder: every extension ``load_image`` reads (``images.IMAGE_EXTENSIONS``)."""
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


#: the columns of ``splits.csv`` that ``list_split`` reads (data_download also writes ``class_index``)
SPLITS_COLUMNS = ("file", "split", "class_name")


def dataset_root(dataset: str, root: str | Path | None = None) -> Path:
    """``root`` if given, else ``datasets_dir() / dataset``; checked to hold a ``train`` folder.

    Raises:
        MissingDataError: the folder is missing (the message gives ``python -m data_download <dataset>``).
    """
    if root is None:
        if dataset not in DATASETS:
            raise InputError(f"unknown medical data set {dataset!r}; choose one of: {', '.join(DATASETS)}")
        path = datasets_dir() / dataset
    else:
        path = Path(root)
    if not (path / "train").is_dir() and not (path / "test").is_dir():
        fetch = dataset if dataset in DATASETS else "chest-xray (or kvasir)"
        raise MissingDataError(
            f"the {dataset} data set is not at {path} (no train/ or test/ folder in it). Fetch and split it "
            f"once with:\npython -m data_download {fetch}\n(the cache folder is set by ${ENV_VAR}; "
            "a folder of your own needs ROOT/{train,val,test}/<class>/<images>)"
        )
    require_prepared(path)
    return path


def read_classes(root: Path) -> list[str]:
    """The class names in label order: ``classes.json``, else the sorted sub-folders of ``train`` (or ``test``)."""
    f = root / "classes.json"
    if f.is_file():
        try:
            classes = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:
            raise InputError(
                f"{f} cannot be read ({e}); if python -m data_download wrote it, prepare the data set again with: "
                f"python -m data_download {root.name} --force"
            ) from None
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise InputError(f"{f} must hold a JSON list of class names")
        return classes
    for split in ("train", "test", "val"):
        d = root / split
        if d.is_dir():
            classes = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            if classes:
                return classes
    raise InputError(f"no class folders in {root}/train (expected {root}/train/<class>/<images>)")


def list_split(root: Path, split: str, classes: Sequence[str] | None = None) -> list[tuple[Path, int]]:
    """(file, class index) of every image of one split, classes interleaved (round-robin over classes, files
    sorted within each class), so that the first N images of a split hold every class.

    Reads ``splits.csv`` when present (data_download's record of the split), else the folders.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    classes = list(classes) if classes is not None else read_classes(root)
    index = {c: i for i, c in enumerate(classes)}
    per_class: dict[int, list[Path]] = {i: [] for i in range(len(classes))}
    table = root / "splits.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in SPLITS_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(
                    f"{table} must have the columns {', '.join(SPLITS_COLUMNS)} (as python -m data_download "
                    f"writes it); its header is {reader.fieldnames or 'empty'}; fix the header, or delete the "
                    "file to use the folders ROOT/<split>/<class>/"
                )
            for line, row in enumerate(reader, start=2):
                if any(row.get(c) is None for c in SPLITS_COLUMNS):
                    raise InputError(f"{table}, line {line}: a row with fewer than the columns of the header")
                if row["split"] == split:
                    if row["class_name"] not in index:
                        raise InputError(f"{table}: class {row['class_name']!r} is not in {classes}")
                    per_class[index[row["class_name"]]].append(root / row["file"])
    else:
        for c, i in index.items():
            d = root / split / c
            per_class[i] = [p for p in sorted(d.iterdir()) if _is_image(p)] if d.is_dir() else []
    for files in per_class.values():
        files.sort()
    out: list[tuple[Path, int]] = []
    for k in range(max((len(v) for v in per_class.values()), default=0)):
        out += [(files[k], i) for i, files in per_class.items() if k < len(files)]
    return out


class MedicalImages(Dataset):
    """One split as a torch Dataset: item = (image (3, S, S) float in [0, 1], class index). Images are read and
    resized (squashed to S x S, as the paper's "resized to 224 x 224 x 3") when asked for; grey X-rays become
    3 equal channels."""

    def __init__(self, items: Sequence[tuple[Path, int]], size: int = 224) -> None:
        self.items = list(items)
        self.size = size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        path, label = self.items[i]
        return load_image(path, size=self.size), label


def load_split(
    root: str | Path,
    split: str = "test",
    size: int = 224,
    limit: int | None = None,
    dataset: str = "chest-xray",
) -> ImageSet:
    """The first ``limit`` images of a split (classes interleaved) as an ``ImageSet`` (no boxes), for the
    saliency tables. Labels index ``read_classes(root)``."""
    root = dataset_root(dataset, root)
    items = list_split(root, split)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise InputError(f"the {split} split of {root} holds no images")
    ds = MedicalImages(items, size)
    return ImageSet(
        images=torch.stack([ds[i][0] for i in range(len(ds))]),
        labels=torch.tensor([label for _, label in items], dtype=torch.long),
        boxes=[torch.zeros(0, 4) for _ in items],
        names=[p.stem for p, _ in items],
        sources=[str(p) for p, _ in items],
    )


def require_trainable(root: Path, classes: Sequence[str], train: Sequence[tuple[Path, int]]) -> None:
    """Refuse a data set a classifier cannot learn from: fewer than 2 classes, or a class without training images.

    Raises:
        InputError: one line naming the classes (and the split) at fault.
    """
    if len(classes) < 2:
        raise InputError(
            f"{root} has {len(classes)} class ({', '.join(classes) or 'none'}): fine-tuning a classifier needs at "
            "least 2 (one folder per class: ROOT/train/<class>/<images>, or the classes.json list)"
        )
    seen = {label for _, label in train}
    empty = [c for i, c in enumerate(classes) if i not in seen]
    if empty:
        raise InputError(
            f"class {', '.join(repr(c) for c in empty)} has no image in the train split of {root} "
            f"({root / 'train' / empty[0]}; image files: {', '.join(IMAGE_EXTENSIONS)}): every class needs "
            "training images"
        )


def unreadable_images(items: Sequence[tuple[Path, int]]) -> list[tuple[Path, str]]:
    """(path, reason) of every image whose file is missing or whose header PIL cannot read (``Image.verify``: no
    full decoding, so this is quick; a file cut inside its pixel data may still pass)."""
    from PIL import Image

    bad = []
    for path, _ in items:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # missing, not an image, damaged header: every reason counts the same
            bad.append((path, first_line(e, 120) or type(e).__name__))
    return bad


def _require_readable(splits: dict[str, list[tuple[Path, int]]]) -> None:
    for split, items in splits.items():
        bad = unreadable_images(items)
        if bad:
            more = f" (and {len(bad) - 1} more in that split)" if len(bad) > 1 else ""
            raise InputError(
                f"cannot read {bad[0][0]} ({bad[0][1]}){more}, an image of the {split} split: replace or remove it "
                "before fine-tuning (nothing was trained)"
            )


_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+")


def unwrap_worker_error(error: BaseException) -> BaseException:
    """The original error of a DataLoader worker (torch re-raises it as ``Caught InputError in DataLoader worker
    process 1.`` + the worker's traceback): the same type with the original message; any other error unchanged."""
    message = str(error)
    if not _WORKER.match(message):
        return error
    lines = message.splitlines()
    starts = [i for i, ln in enumerate(lines) if "Traceback (most recent call last)" in ln]
    for i in range(starts[-1] + 1 if starts else 1, len(lines)):
        line = lines[i]
        if line and not line[0].isspace():  # the exception line: 'module.Type: message'
            head, _, text = line.partition(": ")
            text = "\n".join([text, *lines[i + 1 :]]).strip()
            if head.rpartition(".")[2] == type(error).__name__:
                try:
                    return type(error)(text)
                except Exception:  # a type that takes other arguments
                    break
            return RuntimeError(f"{head.rpartition('.')[2]}: {text}")
    return error


def _batches(loader: DataLoader):
    """``iter(loader)`` with a worker's error raised as the original one-line error."""
    it = iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            plain = unwrap_worker_error(e)
            if plain is e:
                raise
            raise plain from None
        yield batch


def require_matching_classes(
    checkpoint_classes: Sequence[str],
    root: str | Path,
    checkpoint: str | Path = "the checkpoint",
    dataset: str | None = None,
) -> list[str]:
    """Refuse to evaluate a checkpoint on a data set whose labels mean other classes: the data set's classes
    (``read_classes(root)``) must be the checkpoint's, in the same order. Returns them.

    Raises:
        InputError: one line naming both class lists (and the data sets when their names differ).
    """
    root = Path(root)
    data_classes = read_classes(root)
    ck = list(checkpoint_classes)
    named = root.name if root.name in DATASETS else None
    if ck != data_classes or (dataset is not None and named is not None and named != dataset):
        why = (
            "the same names in another order, so every label would mean another class"
            if sorted(ck) == sorted(data_classes)
            else "its labels would mean other classes"
        )
        on = f" (the {dataset} data set)" if dataset else ""
        raise InputError(
            f"{checkpoint} was fine-tuned on the classes {ck}{on} but {root} holds {data_classes}"
            f"{f' (the {named} data set)' if named and named != dataset else ''}: {why}; evaluate it on the "
            "data it was fine-tuned on (--root)"
        )
    return data_classes


# --------------------------------------------------------------------------------------------------------------
# Model


def head_name(net: nn.Module) -> str:
    """The name of the last ``nn.Linear`` of ``net`` (resnet50: ``fc``; vgg16_bn: ``classifier.6``)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise InputError(f"{type(net).__name__} has no nn.Linear layer to replace by a new classifier head")
    return names[-1]


def replace_head(classifier: Classifier, classes: Sequence[str], seed: int = 0) -> str:
    """Replace the last linear layer of ``classifier.net`` by a new one with ``len(classes)`` outputs (seeded
    initialisation) and set the class names. Returns the layer's name."""
    name = head_name(classifier.net)
    parent_name, _, attr = name.rpartition(".")
    parent = classifier.net.get_submodule(parent_name) if parent_name else classifier.net
    old: nn.Linear = getattr(parent, attr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = nn.Linear(old.in_features, len(classes), bias=old.bias is not None)
    setattr(parent, attr, new.to(old.weight.device, old.weight.dtype))
    classifier.categories = list(classes)
    return name


def load_finetuned(
    path: str | Path, device: str | torch.device | None = None, normalize: bool = True
) -> Classifier:
    """A checkpoint of ``finetune`` as a ``Classifier`` (categories = the data set's classes,
    ``extra["paper_key"]`` = e.g. ``"chest-xray/resnet50"``, the part of the paper's Table A10 to compare with).

    Raises:
        InputError: the file is missing or not a checkpoint of this module.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"no checkpoint at {path}; make one with: python -m opticam_lib medical finetune ..."
        )
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or corrupted file: name it, not the unpickler's internals
        first = first_line(e)
        raise InputError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}: {first}); it is damaged, incomplete or "
            "not a checkpoint of this library: make one with: python -m opticam_lib medical finetune ..."
        ) from None
    meta = ck.get("meta") if isinstance(ck, dict) else None
    if (
        not isinstance(ck.get("state_dict") if isinstance(ck, dict) else None, dict)
        or not isinstance(meta, dict)
        or not isinstance(meta.get("arch"), str)
        or not isinstance(meta.get("classes"), list)
        or not isinstance(meta.get("dataset"), str)
    ):
        raise InputError(
            f"{path} is not a checkpoint of opticam_lib.paper.medical (no state_dict, or no meta with arch, "
            "classes and dataset)"
        )
    clf = load_classifier(meta["arch"], pretrained=False, normalize=normalize)
    replace_head(clf, meta["classes"])
    try:
        clf.model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        first = first_line(e)
        raise InputError(
            f"{path}: its weights do not fit {meta['arch']} with {len(meta['classes'])} classes ({first}); the "
            "file is damaged or was edited"
        ) from None
    clf.model.eval()
    clf.name = f"{meta['arch']}@{meta['dataset']}"
    clf.extra = {**clf.extra, "paper_key": f"{meta['dataset']}/{meta['arch']}", "checkpoint": str(path)}
    return clf.to(device) if device is not None else clf


# --------------------------------------------------------------------------------------------------------------
# Metrics


def classification_report(logits: Tensor, labels: Tensor, classes: Sequence[str]) -> dict:
    """Accuracy (the paper's number), balanced accuracy, per-class precision/recall/F1 and the confusion matrix.

    Args:
        logits: (N, C) scores; labels: (N,) class indices in 0..C-1.
    Returns:
        {"accuracy": %, "balanced_accuracy": %, "macro_f1": %, "per_class": {class: {precision, recall, f1,
        support}}, "confusion": C x C list (row = true class, column = predicted), "n": N}.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise InputError(
            f"logits (N, C) and labels (N,) expected; got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    c = len(classes)
    pred = logits.argmax(dim=1).cpu()
    labels = labels.cpu().long()
    confusion = torch.zeros(c, c, dtype=torch.long)
    confusion.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    tp = confusion.diag().double()
    support = confusion.sum(dim=1).double()
    predicted = confusion.sum(dim=0).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp)
    )
    present = support > 0
    n = int(labels.numel())
    return {
        "accuracy": 100 * float(tp.sum()) / max(n, 1),
        "balanced_accuracy": 100 * float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": 100 * float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": 100 * float(precision[i]),
                "recall": 100 * float(recall[i]),
                "f1": 100 * float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": confusion.tolist(),
        "n": n,
    }


@torch.no_grad()
def predict_loader(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    """Logits (N, C) and labels (N,) over a loader, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for x, y in _batches(loader):
            logits.append(model(x.to(device)).float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


# --------------------------------------------------------------------------------------------------------------
# Fine-tuning


@dataclass
class FinetuneConfig:
    """Fine-tuning of appendix E.2 (defaults: the paper's values where it gives them).

    Attributes:
        dataset: ``chest-xray`` or ``kvasir`` (names the paper's numbers; the data is read from ``root``).
        model: a registered model (the paper: ``resnet50``, ``vgg16_bn``; ``world_cnn`` for quick checks).
        root: data folder (default: ``datasets_dir() / dataset``, where data_download puts it).
        head_epochs: epochs of phase 1 (last layer only; not stated in the paper: 5 is ours).
        epochs: epochs of phase 2 (entire network; the paper: 50).
        head_lr: phase 1 learning rate (default: the paper's for this data set and model, else 1e-3).
        lr: phase 2 learning rate (the paper: 1e-5).
        momentum: SGD momentum of both phases (the paper: 0.9).
        batch_size: not stated in the paper (32 is ours).
        limit: use only the first N images of each split (classes interleaved), for a quick look.
        max_steps: stop each phase after this many optimiser steps (for tests and smoke runs).
        pretrained: start from the ImageNet weights (the paper); False: random weights.
        force: write into an ``out`` folder that is not empty; a ``model.pt`` and ``report.json`` already there
            are kept, renamed ``model.previous-<date>.pt`` and ``report.previous-<date>.json``.
    """

    dataset: str = "chest-xray"
    model: str = "resnet50"
    root: str | None = None
    head_epochs: int = 5
    epochs: int = PAPER_EPOCHS
    head_lr: float | None = None
    lr: float = PAPER_LR
    momentum: float = PAPER_MOMENTUM
    batch_size: int = 32
    device: str = "cpu"
    out: str = ""
    limit: int | None = None
    max_steps: int | None = None
    workers: int = 2
    seed: int = 0
    pretrained: bool = True
    force: bool = False

    def resolved_head_lr(self) -> float:
        """``head_lr`` or the paper's value for (dataset, model), else 1e-3."""
        if self.head_lr is not None:
            return self.head_lr
        return PAPER_HEAD_LR.get((self.dataset, self.model), 1e-3)


@dataclass
class FinetuneResult:
    """What ``finetune`` returns.

    Attributes:
        checkpoint: path of ``model.pt`` (``load_finetuned`` reads it).
        losses: training loss of every optimiser step, phase 1 then phase 2.
        phases: per phase, per epoch: mean loss, validation accuracy, seconds.
        val, test: ``classification_report`` of the final model on the validation and test splits.
        paper_accuracy: the paper's test accuracy for (dataset, model), or None.
        previous: the earlier ``model.pt`` / ``report.json`` of ``out``, renamed (``force=True``), if any.
    """

    checkpoint: Path
    losses: list[float]
    phases: dict[str, list[dict]]
    val: dict | None
    test: dict | None
    paper_accuracy: float | None
    seconds: float
    config: dict = field(default_factory=dict)
    previous: list[Path] = field(default_factory=list)


def _check_finetune_config(c: FinetuneConfig) -> None:
    for name in ("head_epochs", "epochs"):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"{name} must be a non-negative integer, got {v!r}")
    for name in ("batch_size",):
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(c.workers, bool) or not isinstance(c.workers, int) or c.workers < 0:
        raise InputError(
            f"workers must be a non-negative integer (0: load in the main process), got {c.workers!r}"
        )
    for name in ("limit", "max_steps"):
        v = getattr(c, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InputError(f"{name} must be a positive integer or None, got {v!r}")
    for name in ("lr", "momentum"):
        v = getattr(c, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name} must be a finite non-negative number, got {v!r}")
    if c.head_lr is not None and (not math.isfinite(c.head_lr) or c.head_lr < 0):
        raise InputError(f"head_lr must be a finite non-negative number, got {c.head_lr!r}")
    if c.head_epochs == 0 and c.epochs == 0:
        raise InputError(
            "head_epochs and epochs are both 0 (--head-epochs, --epochs): there is nothing to train"
        )


def _default_out(c: FinetuneConfig) -> Path:
    return Path(c.out or f"outputs/medical/{c.dataset}_{c.model}").expanduser()


def _require_free_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` folder that already holds files (a previous run's model.pt, the user's own files)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose another --out")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise InputError(
            f"--out {out} is not empty (it holds {shown}); choose another --out, or pass --force (force=True) to "
            "write there: a model.pt and report.json already there are then kept as model.previous-<date>.pt "
            "and report.previous-<date>.json"
        )


def _keep_previous(out: Path) -> list[Path]:
    """Rename ``out/model.pt`` and ``out/report.json`` (a previous run's) to ``*.previous-<date>.*``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = []
    for name in ("model.pt", "report.json"):
        old = out / name
        if not old.exists():
            continue
        stem, suffix = name.split(".")
        target, k = out / f"{stem}.previous-{stamp}.{suffix}", 1
        while target.exists():
            k += 1
            target = out / f"{stem}.previous-{stamp}-{k}.{suffix}"
        old.rename(target)
        kept.append(target)
    return kept


def _loader(
    items: list[tuple[Path, int]], size: int, c: FinetuneConfig, shuffle: bool, seed: int
) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        MedicalImages(items, size),
        batch_size=c.batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=c.workers,
        persistent_workers=False,
    )


def finetune(
    config: FinetuneConfig, classifier: Classifier | None = None, progress: bool = True
) -> FinetuneResult:
    """Fine-tune ``config.model`` (or ``classifier``) on a medical data set as in appendix E.2, save
    ``OUT/model.pt`` and ``OUT/report.json``, then evaluate it on the validation and test splits and save both
    files again with the reports.

    Phase 1 trains only the new last linear layer (the rest frozen, BatchNorm statistics frozen too) for
    ``head_epochs`` at ``head_lr``; phase 2 trains everything (train mode) for ``epochs`` at ``lr``; both SGD
    with ``momentum``, cross-entropy loss. A ``classifier`` passed in gets the new head; its train/eval mode and
    its parameters' ``requires_grad`` are restored afterwards (even after an error) and their ``.grad`` cleared.

    Raises:
        MissingDataError: the data set is not downloaded (the message gives the data_download command).
        InputError: a data set with fewer than 2 classes, a class without training images, an unreadable image, an
            ``out`` folder that is not empty (without ``force``) or not writable.
    """
    _check_finetune_config(config)
    if config.root is not None:  # saved absolute: 'medical evaluate' may run from another folder
        config = replace(config, root=str(Path(config.root).resolve()))
    t_start = time.perf_counter()
    root = dataset_root(config.dataset, config.root)
    classes = read_classes(root)
    splits = {s: list_split(root, s, classes) for s in SPLITS}
    require_trainable(root, classes, splits["train"])
    if config.limit is not None:
        splits = {s: v[: config.limit] for s, v in splits.items()}
    out = _default_out(config)
    _require_free_out(out, config.force)
    device = usable_device(config.device)  # a misspelled or absent device: one clear error before any work
    _require_readable(splits)
    out = writable_dir(out, "--out")  # before the training, not after it
    torch.manual_seed(config.seed)
    if classifier is None:
        classifier = load_classifier(config.model, pretrained=config.pretrained)
    model = classifier.model
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        return _finetune(config, classifier, classes, splits, root, out, device, t_start, progress)
    finally:
        model.train(was_training)
        for n, p in model.named_parameters():
            p.requires_grad_(flags.get(n, True))
            p.grad = None


def _finetune(
    config: FinetuneConfig,
    classifier: Classifier,
    classes: list[str],
    splits: dict[str, list[tuple[Path, int]]],
    root: Path,
    out: Path,
    device: torch.device,
    t_start: float,
    progress: bool,
) -> FinetuneResult:
    head = replace_head(classifier, classes, seed=config.seed)
    classifier.to(device)
    model = classifier.model
    size = classifier.input_size
    train_loader = _loader(splits["train"], size, config, True, config.seed)
    eval_loaders = {s: _loader(splits[s], size, config, False, 0) for s in ("val", "test") if splits[s]}
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    phases: dict[str, list[dict]] = {"head": [], "full": []}
    head_params = list(classifier.net.get_submodule(head).parameters())
    from tqdm.auto import tqdm

    plan = [("head", config.head_epochs, config.resolved_head_lr()), ("full", config.epochs, config.lr)]
    for phase, epochs, lr in plan:
        if epochs == 0:
            continue
        for p in model.parameters():
            p.requires_grad_(phase == "full")
        for p in head_params:
            p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum)
        steps = 0
        for epoch in range(epochs):
            if phase == "full":
                model.train()
            else:  # backbone frozen, BatchNorm statistics too; only the head learns
                model.eval()
            t0 = time.perf_counter()
            epoch_losses = []
            bar = tqdm(
                _batches(train_loader),
                total=len(train_loader),
                desc=f"{phase} epoch {epoch + 1}/{epochs}",
                disable=not progress,
                leave=False,
            )
            for x, y in bar:
                logits = model(x.to(device))
                loss = loss_fn(logits, torch.as_tensor(y).to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                epoch_losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}")
                steps += 1
                if config.max_steps is not None and steps >= config.max_steps:
                    break
            bar.close()
            losses += epoch_losses
            record = {
                "epoch": epoch + 1,
                "lr": lr,
                "loss": sum(epoch_losses) / len(epoch_losses),
                "seconds": time.perf_counter() - t0,
            }
            if "val" in eval_loaders:
                logits, labels = predict_loader(model, eval_loaders["val"], device)
                record["val_accuracy"] = classification_report(logits, labels, classes)["accuracy"]
            phases[phase].append(record)
            if progress:
                val = f", val accuracy {record['val_accuracy']:.1f}%" if "val_accuracy" in record else ""
                print(f"{phase} epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f}{val}")
            if config.max_steps is not None and steps >= config.max_steps:
                break
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    model.eval()
    paper_acc = PAPER_ACCURACY.get((config.dataset, config.model))
    meta = {
        "arch": config.model if config.model else classifier.name,
        "dataset": config.dataset,
        "classes": list(classes),
        "head": head,
        "input_size": size,
        "config": asdict(config),
        "losses": losses,
        "phases": phases,
        "val": None,
        "test": None,
        "paper_test_accuracy": paper_acc,
    }
    checkpoint = out / "model.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def save() -> None:
        atomic_write(checkpoint, lambda tmp: torch.save({"state_dict": state, "meta": meta}, tmp))
        seconds = time.perf_counter() - t_start
        atomic_write(out / "report.json", json.dumps({**meta, "seconds": seconds}, indent=2) + "\n")

    previous = _keep_previous(out) if config.force else []
    save()  # before the evaluation: an unreadable val/test image must not lose the training
    reports = {}
    try:
        for s, loader in eval_loaders.items():
            logits, labels = predict_loader(model, loader, device)
            reports[s] = classification_report(logits, labels, classes)
    except InputError as e:
        raise InputError(
            f"{first_line(e)}; the trained model is saved in {checkpoint} (without its val/test report)"
        ) from None
    meta.update(val=reports.get("val"), test=reports.get("test"))
    save()
    return FinetuneResult(
        checkpoint,
        losses,
        phases,
        reports.get("val"),
        reports.get("test"),
        paper_acc,
        time.perf_counter() - t_start,
        asdict(config),
        previous,
    )


def smoke_reasons(config: dict) -> list[str]:
    """Why a run (``FinetuneResult.config``) is not the paper's recipe: random weights, ``max_steps``, ``limit``."""
    reasons = []
    if not config.get("pretrained", True):
        reasons.append("random weights")
    if config.get("max_steps") is not None:
        reasons.append(f"max {config['max_steps']} steps")
    if config.get("limit") is not None:
        reasons.append(f"first {config['limit']} images")
    return reasons


def format_result(result: FinetuneResult) -> str:
    """Test (and validation) accuracy next to the paper's, and where the checkpoint is."""
    c = result.config
    lines = [
        f"{c['model']} fine-tuned on {c['dataset']} ({len(result.losses)} steps, {result.seconds:.0f} s)"
    ]
    smoke = smoke_reasons(c)
    caveat = f"; not comparable: a smoke run ({', '.join(smoke)})" if smoke else ""
    for split, rep in (("val", result.val), ("test", result.test)):
        if rep is not None:
            ref = (
                f" [paper {result.paper_accuracy:.1f}%{caveat}]"
                if split == "test" and result.paper_accuracy
                else ""
            )
            lines.append(
                f"  {split}: accuracy {rep['accuracy']:.1f}%{ref}, balanced accuracy "
                f"{rep['balanced_accuracy']:.1f}%, macro F1 {rep['macro_f1']:.1f}% on {rep['n']} images"
            )
    lines.append(f"  checkpoint: {result.checkpoint}")
    for kept in result.previous:
        lines.append(f"  the previous {kept.name.split('.previous-')[0]} file is kept as {kept}")
    lines.append(
        f"  Table A10 (AD/AG/AI of every method): python -m opticam_lib medical evaluate --checkpoint "
        f"{result.checkpoint}"
    )
    return "\n".join(lines)
