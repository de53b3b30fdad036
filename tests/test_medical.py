"""medical: appendix E.2 fine-tuning on a tiny synthetic data set in the layout data_download writes, with the
committed world_cnn (64 x 64 input): loss falls, phase 1 trains the head only, metrics, checkpoint saved and
loaded with weights_only=True, Table A10 through the CLI, and the error when the data is missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opticam_lib import load_classifier
from opticam_lib.__main__ import main as cli
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.paper.medical import (
    PAPER_HEAD_LR,
    FinetuneConfig,
    classification_report,
    finetune,
    head_name,
    list_split,
    load_finetuned,
    load_split,
)

CLASSES = ("NORMAL", "PNEUMONIA")
COUNTS = {"train": 12, "val": 3, "test": 4}  # per class


def make_dataset(root: Path, with_tables: bool = True) -> Path:
    """Grey 48 x 48 'X-rays' (one-channel PNG): NORMAL has horizontal stripes, PNEUMONIA vertical ones (random
    period and phase, noise), so the class is visible to a network that pools globally."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    rows = []
    for split, n in COUNTS.items():
        for ci, cls in enumerate(CLASSES):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for k in range(n):
                period, phase = rng.uniform(6, 10), rng.uniform(0, 2 * np.pi)
                coord = yy if ci == 0 else xx
                stripes = 0.5 + 0.35 * np.sin(2 * np.pi * coord / period + phase)
                img = np.clip(stripes + rng.normal(0, 0.05, stripes.shape), 0, 1)
                name = f"{cls.lower()}_{k:03d}.png"
                Image.fromarray((img * 255).astype(np.uint8), mode="L").save(folder / name)
                rows.append((f"{split}/{cls}/{name}", split, cls, ci))
    if with_tables:  # as data_download's _write_split_files
        with open(root / "splits.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("file", "split", "class_name", "class_index"))
            w.writerows(rows)
        (root / "classes.json").write_text(json.dumps(list(CLASSES)) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("cache") / "datasets" / "chest-xray")


def quick(root: Path, out: Path, **kw) -> FinetuneConfig:
    base = dict(dataset="chest-xray", model="world_cnn", root=str(root), head_epochs=3, epochs=2)
    base.update(head_lr=0.05, lr=1e-3, batch_size=8, workers=0, out=str(out))
    return FinetuneConfig(**{**base, **kw})


def test_splits_and_images(data, tmp_path):
    items = list_split(data, "test")
    assert len(items) == 2 * COUNTS["test"]
    assert [label for _, label in items[:4]] == [0, 1, 0, 1]  # classes interleaved
    plain = make_dataset(tmp_path / "plain", with_tables=False)  # folders only, no splits.csv/classes.json
    assert [(p.relative_to(plain), y) for p, y in list_split(plain, "test")] == [
        (p.relative_to(data), y) for p, y in items
    ]
    s = load_split(data, "test", size=64, limit=3)
    assert s.images.shape == (3, 3, 64, 64) and s.labels.tolist() == [0, 1, 0]
    assert torch.equal(s.images[:, 0], s.images[:, 1])  # grey X-rays: three equal channels
    with pytest.raises(InputError, match="split"):
        list_split(data, "training")


def test_missing_data_names_the_download_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTICAM_CACHE", str(tmp_path))
    with pytest.raises(MissingDataError, match="python -m data_download chest-xray"):
        finetune(FinetuneConfig(dataset="chest-xray", model="world_cnn"))
    code = cli(["medical", "finetune", "--dataset", "kvasir", "--model", "world_cnn"])
    assert code == 2 and "python -m data_download kvasir" in capsys.readouterr().err


def test_classification_report_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])  # predictions 0, 1, 0, 1, 0
    r = classification_report(logits, labels, CLASSES)
    assert r["confusion"] == [[2, 1], [1, 1]] and r["n"] == 5
    assert r["accuracy"] == pytest.approx(60.0)
    assert r["per_class"]["NORMAL"]["recall"] == pytest.approx(200 / 3)
    assert r["per_class"]["PNEUMONIA"]["precision"] == pytest.approx(50.0)
    assert r["balanced_accuracy"] == pytest.approx((200 / 3 + 50) / 2)
    f1_normal = 2 * (2 / 3) * (2 / 3) / (4 / 3) * 100
    assert r["macro_f1"] == pytest.approx((f1_normal + 50.0) / 2)


def test_paper_settings_are_the_defaults():
    c = FinetuneConfig(dataset="kvasir", model="vgg16_bn")
    assert (c.epochs, c.lr, c.momentum, c.resolved_head_lr()) == (50, 1e-5, 0.9, 5e-3)
    assert (
        FinetuneConfig(dataset="kvasir", model="resnet50").resolved_head_lr()
        == PAPER_HEAD_LR[("kvasir", "resnet50")]
    )
    assert FinetuneConfig(dataset="chest-xray", model="resnet50").resolved_head_lr() == 1e-3


def test_damaged_files_of_a_medical_run_are_clear_errors(tmp_path):
    """A checkpoint cut short and a cut classes.json: one error naming the file, not the parser's traceback."""
    from opticam_lib.paper.medical import read_classes

    ck = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "meta": {"arch": "world_cnn"}}, ck)
    ck.write_bytes(ck.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"model\.pt cannot be read as a checkpoint"):
        load_finetuned(ck)
    root = make_dataset(tmp_path / "chest-xray")
    (root / "classes.json").write_text('["NORMAL", "PNEU')
    with pytest.raises(InputError, match=r"classes\.json cannot be read .*chest-xray --force"):
        read_classes(root)


def test_finetune_loss_falls_checkpoint_loads(data, tmp_path):
    clf = load_classifier("world_cnn")
    result = finetune(quick(data, tmp_path / "run"), classifier=clf, progress=False)
    head, full = result.phases["head"], result.phases["full"]
    assert len(head) == 3 and len(full) == 2
    assert head[-1]["loss"] < head[0]["loss"] and full[-1]["loss"] < head[0]["loss"]
    assert len(result.losses) == 5 * 3  # 24 training images, batch 8: 3 steps an epoch
    assert all(np.isfinite(result.losses))
    for rep, split in ((result.val, "val"), (result.test, "test")):
        assert rep["n"] == 2 * COUNTS[split] and sum(map(sum, rep["confusion"])) == rep["n"]
        assert 0 <= rep["accuracy"] <= 100
    assert result.test["accuracy"] > 50  # the blobs are easy: better than chance after 5 epochs
    ck = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert ck["meta"]["classes"] == list(CLASSES) and ck["meta"]["arch"] == "world_cnn"
    assert ck["state_dict"]["net.fc.weight"].shape == (2, 64)
    loaded = load_finetuned(result.checkpoint)
    assert loaded.categories == list(CLASSES) and loaded.extra["paper_key"] == "chest-xray/world_cnn"
    x = load_split(data, "test", size=64).images
    assert torch.allclose(loaded.predict(x), clf.predict(x), atol=1e-6)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["test"]["accuracy"] == pytest.approx(result.test["accuracy"])


def test_phase_one_trains_the_head_only(data, tmp_path):
    before = load_classifier("world_cnn")
    clf = load_classifier("world_cnn")
    finetune(quick(data, tmp_path / "head", epochs=0, max_steps=2), classifier=clf, progress=False)
    assert head_name(clf.net) == "fc"
    for (name, a), b in zip(before.model.state_dict().items(), clf.model.state_dict().values()):
        if not name.startswith("net.fc"):
            assert torch.equal(a, b), name  # BatchNorm running statistics included
    assert clf.net.fc.weight.shape == (2, 64)


def test_cli_finetune_then_table_a10(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTICAM_CACHE", str(data.parent.parent))  # data_download's place for chest-xray
    out = tmp_path / "cli"
    args = ["medical", "finetune", "--dataset", "chest-xray", "--model", "world_cnn", "--head-epochs", "1"]
    args += ["--epochs", "1", "--head-lr", "0.05", "--lr", "1e-3", "--batch-size", "8", "--workers", "0"]
    assert cli([*args, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "test: accuracy" in text and (out / "model.pt").is_file()
    ev = ["medical", "evaluate", "--checkpoint", str(out / "model.pt"), "--images", "4"]
    ev += ["--methods", "fakecam,gradcam,opticam", "--iterations", "3", "--batch-size", "2"]
    assert cli([*ev, "--out", str(tmp_path / "a10"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Table A10" in text and "the paper's value for chest-xray/resnet50" in text
    opti = next(ln for ln in text.splitlines() if ln.startswith("Opti-CAM "))
    assert "[0.1]" in opti and "[91.2]" in opti and "[98.4]" in opti  # the paper's Opti-CAM, ResNet50
    table = json.loads((tmp_path / "a10" / "table.json").read_text())["table"]
    assert set(table) == {"Fake-CAM", "Grad-CAM", "Opti-CAM"} and table["Grad-CAM"]["images"] == 4
    # Table A11: insertion and deletion on the same test images, beside the paper's ResNet50 numbers
    ev_a11 = ["medical", "evaluate", "--checkpoint", str(out / "model.pt"), "--images", "4", "--table", "A11"]
    ev_a11 += ["--methods", "gradcam,opticam", "--iterations", "3", "--batch-size", "2"]
    assert cli([*ev_a11, "--out", str(tmp_path / "a11"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Table A11" in text and "the paper's value for chest-xray/resnet50" in text
    opti = next(ln for ln in text.splitlines() if ln.startswith("Opti-CAM "))
    assert "[82.0]" in opti and "[78.4]" in opti  # the paper's Opti-CAM I and D, Chest X-ray, ResNet50
    table = json.loads((tmp_path / "a11" / "table.json").read_text())["table"]
    assert set(table) == {"Grad-CAM", "Opti-CAM"}
    assert all(set(row) == {"I", "D", "images"} and 0 <= row["I"] <= 100 for row in table.values())
