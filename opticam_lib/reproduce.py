"""Reproduce the paper's tables: every method the table lists, printed next to the paper's own numbers.

    python -m opticam_lib reproduce --table 1                       # offline default: efficientnet_lite0, samples
    python -m opticam_lib reproduce --table 1 --model resnet50 --images imagenet-val:1000 --device cuda
    torchrun --nproc_per_node 4 -m opticam_lib reproduce --table 1 --model resnet50 --images imagenet-val

Results are cached per image and method in ``OUT/records-<rank>.jsonl`` (one JSON line each), so an interrupted
run resumes where it stopped. Under ``torchrun`` images are sharded by rank (image i goes to rank i mod world
size), each rank writes its own records, and rank 0 merges them: the table is the same as a single-process
run's, because every metric is an average of per-image values taken in the images' order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import InputError
from .images import ImageSet, boxes_to_mask, load_imagenet_folder, load_samples
from .methods import display_name, get_method
from .metrics import area_under_curve, class_probability, deletion_curve, insertion_curve
from .models import Classifier, load_classifier
from .paper import paper_tables
from .paths import datasets_dir

CNN_METHODS = [
    "fakecam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "ablationcam",
    "xgradcam",
    "layercam",
    "hirescam",
    "opticam",
]
VIT_METHODS = [
    "fakecam",
    "gradcam",
    "gradcampp",
    "scorecam",
    "xgradcam",
    "layercam",
    "rawatt",
    "rollout",
    "hirescam",
    "opticam",
]
TABLES: dict[str, str] = {
    "1": "AD, AG, AI and T per method (CNNs)",
    "2": "AD, AG, AI and T per method (transformers, with raw attention and rollout)",
    "3": "insertion and deletion per method (predicted class)",
    "5": "bounding-box study: S, B∩S, S\\B, and the box and its complement as maps",
    "A9": "AD, AG, AI for maps of the ground-truth, most, second and least probable class",
    "A14": "Table 1 without input normalisation",
}
A9_TARGETS = ("ground_truth", "most", "second", "least")


@dataclass
class Config:
    """One reproduction run."""

    table: str = "1"
    model: str = "efficientnet_lite0"
    images: str = "samples"
    methods: list[str] = field(default_factory=list)
    device: str = "cpu"
    batch_size: int = 8
    iterations: int = 100
    steps: int | None = None  # insertion/deletion steps (default: 224 at 224 px)
    out: str = ""

    def key(self) -> str:
        """A short hash of what determines the results (not the device or the output folder)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("device", "out")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def default_methods(table: str, classifier: Classifier) -> list[str]:
    """The methods the paper's table lists (those this library implements; LIME, GradientShap,
    ExPerturbation and TIBAV are not implemented)."""
    if table == "2" or classifier.prefix_tokens is not None:
        return list(VIT_METHODS)
    if table == "A9":
        return ["gradcam", "gradcampp", "scorecam", "opticam"]
    if table == "5":
        return ["box", "complement", *[m for m in CNN_METHODS if m != "hirescam"]]
    return list(CNN_METHODS)


def load_image_spec(spec: str, size: int) -> ImageSet:
    """``samples``, ``imagenet-val[:N]``, ``imagenette[:N]`` or a folder path ``PATH[:N]``."""
    name, _, limit_text = spec.partition(":")
    limit = None
    if limit_text:
        if not limit_text.isdigit() or int(limit_text) < 1:
            raise InputError(f"bad image count in {spec!r}: expected NAME:N with N a positive integer")
        limit = int(limit_text)
    if name == "samples":
        s = load_samples(size=size)
        return s.subset(list(range(min(limit or len(s), len(s)))))
    root = datasets_dir() / name if name in ("imagenet-val", "imagenette") else Path(name)
    return load_imagenet_folder(root, size=size, limit=limit)


def _rank_world() -> tuple[int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, 1


def _maybe_init_distributed(device: str) -> bool:
    _, world = _rank_world()
    if world == 1:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True


def _records_path(out: Path, rank: int) -> Path:
    return out / f"records-{rank}.jsonl"


def _load_records(out: Path) -> dict[tuple[str, str, int], dict]:
    done: dict[tuple[str, str, int], dict] = {}
    for path in sorted(out.glob("records-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["method"], r["variant"], r["index"])] = r
    return done


def _map_fn(name: str):
    if name in ("rawatt", "rollout"):
        from .attention import raw_attention, rollout

        return raw_attention if name == "rawatt" else rollout
    return get_method(name)


def _display(name: str) -> str:
    return {"rawatt": "RawAtt", "rollout": "Rollout"}.get(name, display_name(name))


def run(config: Config, progress: bool = True) -> dict:
    """Run (or resume) a reproduction and return the merged table (on every rank; rank 0 also writes files)."""
    if config.table not in TABLES:
        raise InputError(f"unknown table {config.table!r}; choose one of: {', '.join(TABLES)}")
    distributed = _maybe_init_distributed(config.device)
    rank, world = _rank_world()
    device = config.device
    if distributed and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    clf = load_classifier(config.model, device=device, normalize=config.table != "A14")
    methods = config.methods or default_methods(config.table, clf)
    data = load_image_spec(config.images, clf.input_size)
    out = Path(config.out or f"outputs/reproduce/table{config.table}_{config.model}_{config.key()}")
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    done = _load_records(out)
    mine = [i for i in range(len(data)) if i % world == rank]
    variants = list(A9_TARGETS) if config.table == "A9" else ["main"]
    todo = [(m, v, i) for m in methods for v in variants for i in mine if (m, v, i) not in done]
    bar = tqdm(total=len(todo), desc=f"table {config.table} [rank {rank}]", disable=not progress)
    with open(_records_path(out, rank), "a") as sink:
        for method in methods:
            for variant in variants:
                pending = [i for i in mine if (method, variant, i) not in done]
                for start in range(0, len(pending), config.batch_size):
                    idx = pending[start : start + config.batch_size]
                    for record in _evaluate_batch(clf, data, idx, method, variant, config):
                        sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    bar.update(len(idx))
    bar.close()
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    table = summarize(config, _load_records(out), methods, len(data), clf)
    if rank == 0:
        write_outputs(out, config, table)
    return table


def _targets_for(clf: Classifier, images: torch.Tensor, labels: torch.Tensor, variant: str) -> torch.Tensor:
    if variant in ("main", "ground_truth"):
        return labels
    order = clf.predict(images).argsort(dim=1, descending=True)
    return {"most": order[:, 0], "second": order[:, 1], "least": order[:, -1]}[variant]


def _evaluate_batch(
    clf: Classifier, data: ImageSet, idx: Sequence[int], method: str, variant: str, config: Config
) -> list[dict]:
    images = data.images[list(idx)].to(clf.device)
    labels = data.labels[list(idx)].to(clf.device)
    table = config.table
    targets = (
        clf.predict(images).argmax(dim=1) if table == "3" else _targets_for(clf, images, labels, variant)
    )
    options = {"iterations": config.iterations, "progress": False} if method == "opticam" else {}
    if method in ("scorecam", "ablationcam"):
        options["progress"] = False
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    box = None
    if table == "5":
        size = tuple(images.shape[-2:])
        box = torch.stack([boxes_to_mask(data.boxes[i], size) for i in idx]).to(clf.device)
    if method == "box":
        maps = box
    elif method == "complement":
        maps = 1 - box
    else:
        maps = _map_fn(method)(clf, images, targets, **options)
    if clf.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    p = class_probability(clf, images, labels)
    records = []
    base = {"method": method, "variant": variant, "seconds_per_image": seconds / len(idx)}
    if table == "3":
        deletion = area_under_curve(deletion_curve(clf, images, maps, targets, config.steps, progress=False))
        insertion = area_under_curve(
            insertion_curve(clf, images, maps, targets, config.steps, progress=False)
        )
        for j, i in enumerate(idx):
            records.append({**base, "index": i, "I": float(insertion[j]), "D": float(deletion[j])})
        return records
    if table == "5":
        parts = {"S": maps}
        if method not in ("box", "complement"):
            parts.update({"B_and_S": maps * box, "S_minus_B": maps * (1 - box)})
        o_parts = {k: class_probability(clf, images * m, labels) for k, m in parts.items()}
        for j, i in enumerate(idx):
            records.append(
                {**base, "index": i, "p": float(p[j]), **{f"o_{k}": float(v[j]) for k, v in o_parts.items()}}
            )
        return records
    o = class_probability(clf, images * maps, labels)  # AD/AG/AI always against the ground-truth class
    for j, i in enumerate(idx):
        records.append({**base, "index": i, "p": float(p[j]), "o": float(o[j])})
    return records


def summarize(config: Config, records: dict, methods: Sequence[str], n: int, clf: Classifier) -> dict:
    """Average the per-image records into the table: {row name: {column: value}}."""

    def rows_of(method: str, variant: str) -> list[dict]:
        return [records[(method, variant, i)] for i in range(n) if (method, variant, i) in records]

    def adagai(ps: list[float], os_: list[float]) -> dict[str, float]:
        p, o = torch.tensor(ps, dtype=torch.float64), torch.tensor(os_, dtype=torch.float64)
        from .metrics import classification_metrics

        return classification_metrics(p, o)

    table: dict[str, dict[str, float]] = {}
    for method in methods:
        name = {"box": "S := B", "complement": "S := I \\ B"}.get(method, _display(method))
        if config.table == "A9":
            row = {}
            for v in A9_TARGETS:
                rs = rows_of(method, v)
                if rs:
                    for k, val in adagai([r["p"] for r in rs], [r["o"] for r in rs]).items():
                        row[f"{k}_{v}"] = val
            table[name] = row
            continue
        rs = rows_of(method, "main")
        if not rs:
            continue
        if config.table == "3":
            table[name] = {
                "I": 100 * sum(r["I"] for r in rs) / len(rs),
                "D": 100 * sum(r["D"] for r in rs) / len(rs),
            }
        elif config.table == "5":
            row = {}
            for part in ("S", "B_and_S", "S_minus_B"):
                if f"o_{part}" in rs[0]:
                    for k, val in adagai([r["p"] for r in rs], [r[f"o_{part}"] for r in rs]).items():
                        row[f"{k}_{part}"] = val
            table[name] = row
        else:
            row = adagai([r["p"] for r in rs], [r["o"] for r in rs])
            row["T"] = 8 * sum(r["seconds_per_image"] for r in rs) / len(rs)
            table[name] = row
        table[name]["images"] = len(rs)
    return table


def _paper_rows(config: Config) -> dict:
    paper_key = {"A14": "A14"}.get(config.table, config.table)
    data = paper_tables().get(paper_key, {}).get("data", {})
    return data.get(config.model, {})


def format_reproduction(config: Config, table: dict) -> str:
    """The table in the paper's layout, each of our values followed by the paper's in brackets when it has one."""
    paper = _paper_rows(config)
    columns = [c for c in next(iter(table.values()), {}) if c != "images"]
    lines = [f"Table {config.table} ({TABLES[config.table]}): {config.model}, {config.images}"]
    if not paper:
        lines.append("(the paper has no numbers for this model: ours only)")
    lines.append(f"{'METHOD':<16}" + "".join(f"{c:>20}" for c in columns) + f"{'images':>8}")
    for name, row in table.items():
        cells = []
        for c in columns:
            ours = row.get(c)
            ref = paper.get(name, {}).get(c) if paper else None
            text = "-" if ours is None else f"{ours:.2f}" if c == "T" else f"{ours:.1f}"
            if ref is not None:
                text += f" [{ref}]"
            cells.append(f"{text:>20}")
        lines.append(f"{name:<16}" + "".join(cells) + f"{row.get('images', 0):>8}")
    lines.append(
        "[x] = the paper's value (its own model and 1,000 or 50,000 ImageNet images); T = s per batch of 8 here."
    )
    return "\n".join(lines)


def write_outputs(out: Path, config: Config, table: dict) -> None:
    """``table.json``, ``table.csv`` and ``table.txt`` in ``out``."""
    (out / "table.json").write_text(
        json.dumps({"config": asdict(config), "table": table, "paper": _paper_rows(config)}, indent=2)
    )
    columns = sorted({c for row in table.values() for c in row})
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", *columns])
        for name, row in table.items():
            w.writerow([name, *[row.get(c, "") for c in columns]])
    (out / "table.txt").write_text(format_reproduction(config, table) + "\n")
