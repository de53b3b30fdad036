"""medical finetune/evaluate, after a review: an existing --out is not overwritten, a checkpoint is evaluated only on
data with its classes in its order, degenerate data sets and unreadable images are refused early (and in one line),
splits.csv with other columns is named, a classifier passed in is given back as it came, smoke runs say so.

Tiny grey 48 x 48 PNG data sets and the committed world_cnn, as in test_medical.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import opticam_lib.paper.medical as medical
from opticam_lib import load_classifier
from opticam_lib.__main__ import main as cli
from opticam_lib.errors import InputError
from opticam_lib.paper.medical import (
    FinetuneConfig,
    FinetuneResult,
    finetune,
    format_result,
    list_split,
    load_finetuned,
    require_matching_classes,
    unwrap_worker_error,
)

CLASSES = ("NORMAL", "PNEUMONIA")


def tiny(root: Path, counts=(("train", 4), ("val", 1), ("test", 2)), classes=CLASSES, ext=".png") -> Path:
    """ROOT/{train,val,test}/<class>/<images>, folders only (classes = sorted train folders)."""
    rng = np.random.default_rng(0)
    for split, n in counts:
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                img = rng.integers(0, 255, (48, 48), dtype=np.uint8)
                Image.fromarray(img, mode="L").save(folder / f"{cls.lower()}_{k}{ext}")
    return root


def quick(root: Path, out: Path, **kw) -> FinetuneConfig:
    base = dict(dataset="chest-xray", model="world_cnn", root=str(root), head_epochs=1, epochs=1)
    base.update(head_lr=0.05, lr=1e-3, batch_size=4, workers=0, max_steps=1, out=str(out))
    return FinetuneConfig(**{**base, **kw})


FT = ["medical", "finetune", "--dataset", "chest-xray", "--model", "world_cnn", "--head-epochs", "1"]
FT += ["--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--workers", "0", "--quiet"]


def one_line_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, (part, err)
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("med") / "xr")


# 1. --out
def test_finetune_refuses_a_non_empty_out_unless_force(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli([*FT, "--root", str(data), "--out", str(out)]) == 0
    first = (out / "model.pt").read_bytes()
    capsys.readouterr()
    assert cli([*FT, "--root", str(data), "--out", str(out), "--seed", "1"]) == 2
    one_line_error(capsys, str(out), "not empty", "model.pt", "--force")
    assert (out / "model.pt").read_bytes() == first  # untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert cli([*FT, "--root", str(data), "--out", str(mine)]) == 2
    one_line_error(capsys, "notes.txt", "--force")
    assert not (mine / "model.pt").exists()
    # --force: written, the previous model kept (and said so)
    assert cli([*FT, "--root", str(data), "--out", str(out), "--seed", "1", "--force"]) == 0
    text = capsys.readouterr().out
    kept = list(out.glob("model.previous-*.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == first and str(kept[0]) in text
    assert len(list(out.glob("report.previous-*.json"))) == 1
    assert json.loads((out / "report.json").read_text())["config"]["seed"] == 1


def test_an_unwritable_out_fails_before_the_model_and_the_training(data, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(medical, "load_classifier", no_model)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match=r"cannot write to .*--out"):
        finetune(quick(data, blocker / "run"), progress=False)


# 2. evaluate: the checkpoint's classes must be the data's
@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ck") / "run"
    return finetune(quick(data, out), progress=False).checkpoint


def test_evaluate_refuses_data_with_other_classes_or_another_order(checkpoint, data, tmp_path, capsys):
    swapped = tiny(tmp_path / "swapped")
    (swapped / "classes.json").write_text(json.dumps(["PNEUMONIA", "NORMAL"]))
    ev = ["medical", "evaluate", "--checkpoint", str(checkpoint), "--images", "2", "--methods", "fakecam"]
    ev += ["--iterations", "2", "--batch-size", "2", "--quiet"]
    assert cli([*ev, "--root", str(swapped), "--out", str(tmp_path / "a")]) == 2
    one_line_error(capsys, "['NORMAL', 'PNEUMONIA']", "['PNEUMONIA', 'NORMAL']", "another order")
    assert not (tmp_path / "a" / "table.json").exists()
    other = tiny(tmp_path / "kvasir", classes=("polyps", "ulcerative-colitis", "normal-z-line"))
    assert cli([*ev, "--root", str(other), "--out", str(tmp_path / "b")]) == 2
    one_line_error(capsys, "['NORMAL', 'PNEUMONIA']", "normal-z-line", "(the kvasir data set)")
    # the data it was fine-tuned on is still fine
    assert require_matching_classes(["NORMAL", "PNEUMONIA"], data, checkpoint, "chest-xray") == list(CLASSES)


def test_reproduce_directly_refuses_data_with_other_classes(checkpoint, tmp_path):
    """reproduce --table A10 --model model.pt --images chest-xray@ROOT (without medical evaluate) checks too."""
    from opticam_lib.paper.reproduce import Config, run

    swapped = tiny(tmp_path / "swapped")
    (swapped / "classes.json").write_text(json.dumps(["PNEUMONIA", "NORMAL"]))
    config = Config(
        table="A10",
        model=str(checkpoint),
        images=f"chest-xray@{swapped}:2",
        methods=["fakecam"],
        batch_size=2,
        out=str(tmp_path / "out"),
    )
    with pytest.raises(InputError, match="another order"):
        run(config, progress=False)


# 3. degenerate data sets
def test_one_class_or_an_empty_class_is_refused(tmp_path):
    one = tiny(tmp_path / "one", classes=("NORMAL",))
    with pytest.raises(InputError, match=r"1 class .*at least 2"):
        finetune(quick(one, tmp_path / "o1"), progress=False)
    empty = tiny(tmp_path / "empty")
    for f in (empty / "train" / "PNEUMONIA").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="class 'PNEUMONIA' has no image in the train split"):
        finetune(quick(empty, tmp_path / "o2"), progress=False)
    assert not (tmp_path / "o2").exists()


def test_tif_images_are_read_like_load_image_reads_them(tmp_path):
    root = tiny(tmp_path / "tif", ext=".tif")
    train = list_split(root, "train")
    assert len(train) == 8 and {p.suffix for p, _ in train} == {".tif"}
    result = finetune(quick(root, tmp_path / "run"), progress=False)
    assert result.test["n"] == 4


# 4. unreadable images
def _truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in its pixel data: its header reads (PIL verify passes), decoding fails."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), mode="L").save(path, quality=95)
    path.write_bytes(path.read_bytes()[:1300])
    return path


def test_a_bad_image_is_found_before_the_training(data, tmp_path, monkeypatch):
    root = tiny(tmp_path / "bad")
    bad = root / "test" / "NORMAL" / "normal_1.png"
    bad.write_text("<html>not an image</html>")

    def no_model(*a, **k):
        raise AssertionError("trained before the images were checked")

    monkeypatch.setattr(medical, "load_classifier", no_model)
    with pytest.raises(InputError, match=r"normal_1\.png.*test split") as info:
        finetune(quick(root, tmp_path / "run"), progress=False)
    assert len(str(info.value).splitlines()) == 1


def test_a_bad_test_image_found_late_keeps_the_trained_model(tmp_path):
    root = tiny(tmp_path / "late")
    _truncated_jpeg(root / "test" / "PNEUMONIA" / "cut.jpg")
    with pytest.raises(InputError, match=r"cut\.jpg.*the trained model is saved in .*model\.pt"):
        finetune(quick(root, tmp_path / "run"), progress=False)
    assert load_finetuned(tmp_path / "run" / "model.pt").categories == list(CLASSES)


def test_a_worker_error_is_the_original_one_line_error(tmp_path):
    root = tiny(tmp_path / "w")
    _truncated_jpeg(root / "train" / "NORMAL" / "cut.jpg")
    with pytest.raises(InputError) as info:
        finetune(quick(root, tmp_path / "run", workers=1, max_steps=None), progress=False)
    message = str(info.value)
    assert "DataLoader worker" not in message and "Traceback" not in message, message
    assert len(message.splitlines()) == 1 and "cut.jpg" in message and message.startswith("cannot read")


def test_unwrap_worker_error_by_hand():
    from torch._utils import ExceptionWrapper

    try:
        raise InputError("cannot read x.png: truncated")
    except InputError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 1")
    with pytest.raises(InputError) as info:
        wrapped.reraise()
    plain = unwrap_worker_error(info.value)
    assert type(plain) is InputError and str(plain) == "cannot read x.png: truncated"
    other = ValueError("plain")
    assert unwrap_worker_error(other) is other


# 5. splits.csv
def test_splits_csv_with_other_columns_names_the_file_and_the_columns(tmp_path):
    root = tiny(tmp_path / "csv")
    (root / "splits.csv").write_text("path,subset,label\ntrain/NORMAL/normal_0.png,train,NORMAL\n")
    with pytest.raises(InputError, match=r"splits\.csv must have the columns file, split, class_name"):
        list_split(root, "train")


# 6. the classifier passed in
def test_finetune_gives_the_classifier_back_as_it_came(data, tmp_path, monkeypatch):
    clf = load_classifier("world_cnn")
    clf.model.eval()
    flags = {n: p.requires_grad for n, p in clf.model.named_parameters()}
    finetune(quick(data, tmp_path / "ok"), classifier=clf, progress=False)
    assert not clf.model.training
    assert {n: p.requires_grad for n, p in clf.model.named_parameters()} == flags
    assert all(p.grad is None for p in clf.model.parameters())
    # an error in the middle of phase 2 (train mode, gradients computed)
    clf2 = load_classifier("world_cnn")
    clf2.model.eval()

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(medical, "classification_report", boom)
    with pytest.raises(RuntimeError, match="boom"):
        finetune(quick(data, tmp_path / "err", head_epochs=0), classifier=clf2, progress=False)
    assert not clf2.model.training
    assert {n: p.requires_grad for n, p in clf2.model.named_parameters()} == flags
    assert all(p.grad is None for p in clf2.model.parameters())


# 7. smoke runs and zero epochs
def _result(**config) -> FinetuneResult:
    rep = {"accuracy": 100.0, "balanced_accuracy": 100.0, "macro_f1": 100.0, "n": 4}
    base = dict(model="resnet50", dataset="chest-xray", pretrained=True, max_steps=None, limit=None)
    return FinetuneResult(Path("m.pt"), [0.1], {}, rep, rep, 82.0, 1.0, {**base, **config})


def test_a_smoke_run_says_its_accuracy_is_not_comparable():
    full = format_result(_result())
    assert "[paper 82.0%]" in full and "smoke" not in full
    smoke = format_result(_result(pretrained=False, max_steps=1))
    line = next(ln for ln in smoke.splitlines() if "test:" in ln)
    assert "paper 82.0%" in line and "smoke run" in line and "random weights" in line and "1 steps" in line
    assert "first 3 images" in format_result(_result(limit=3))


def test_zero_epochs_in_both_phases_is_refused(data, tmp_path, capsys):
    args = ["medical", "finetune", "--dataset", "chest-xray", "--model", "world_cnn", "--root", str(data)]
    args += ["--epochs", "0", "--head-epochs", "0", "--workers", "0", "--quiet", "--out", str(tmp_path / "z")]
    assert cli(args) == 2
    one_line_error(capsys, "nothing to train")
    assert not (tmp_path / "z" / "model.pt").exists()
