"""A review of labels files and output paths: positional labels that cannot shift, images that share a stem,
a folder's own labels file before a Kaggle CSV above it, ``~`` in output paths, and ``evaluate``'s default JSON
that another run's settings never replace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from opticam_lib.__main__ import main
from opticam_lib.errors import InputError
from opticam_lib.images import load_imagenet_folder
from opticam_lib.paths import cache_dir, writable_dir, writable_file

TENCH = "n01440764"


def _png(path: Path, colour: tuple[int, int, int] = (90, 60, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _labelled(folder: Path) -> dict[str, int]:
    s = load_imagenet_folder(folder, size=8)
    return dict(zip(s.names, s.labels.tolist()))


# 1. bare class numbers are matched to the images in sorted order: one line per image, no more, no less
def test_positional_labels_with_more_lines_than_images_are_refused(tmp_path):
    folder = tmp_path / "shift"
    for name in ("a.png", "b.png", "c.png"):
        _png(folder / name)
    (folder / "labels.txt").write_text("872\n967\n281\n")
    assert _labelled(folder) == {"a": 872, "b": 967, "c": 281}
    (folder / "a.png").unlink()  # b and c would silently get a's and b's labels
    with pytest.raises(InputError) as e:
        load_imagenet_folder(folder, size=8)
    message = str(e.value)
    assert "\n" not in message and str(folder) in message and "3 labels" in message and "2 images" in message
    assert "NAME LABEL" in message
    (folder / "labels.txt").write_text("967\n")  # too few stays an error
    with pytest.raises(InputError, match="1 labels for the 2 images"):
        load_imagenet_folder(folder, size=8)
    # named lines: extra ones are fine
    (folder / "labels.txt").write_text("b.png 967\nc.png 281\na.png 872\n")
    assert _labelled(folder) == {"b": 967, "c": 281}


def test_numbered_ilsvrc_files_still_take_their_line_of_a_longer_labels_file(tmp_path):
    folder = tmp_path / "val"
    _png(folder / "ILSVRC2012_val_00000002.png")
    (folder / "labels.txt").write_text("65\n970\n230\n")  # line k for ILSVRC2012_val_k, the rest unused
    assert _labelled(folder) == {"ILSVRC2012_val_00000002": 970}


# 2. two images with one stem: a label names its file with the extension; a bare stem is ambiguous
def test_images_that_share_a_stem_get_the_label_of_their_own_file_name(tmp_path):
    folder = tmp_path / "same"
    _png(folder / "a.png", (110, 70, 40))
    _png(folder / "a.jpg", (20, 20, 200))
    _png(folder / "b.png")
    (folder / "labels.txt").write_text("a.png 967\na.jpg 281\nb 1\n")
    assert _labelled(folder) == {"a.png": 967, "a.jpg": 281, "b": 1}  # unique names, the right labels
    s = load_imagenet_folder(folder, size=8)
    assert sorted(Path(p).name for p in s.sources) == ["a.jpg", "a.png", "b.png"]

    (folder / "labels.csv").write_text("file,class_index\na.jpg,281\na.png,967\nb.png,1\n")
    (folder / "labels.txt").rename(folder / "kept.txt")
    assert _labelled(folder) == {"a.png": 967, "a.jpg": 281, "b": 1}

    for text, where in (("a 967\nb 1\n", "labels.txt"), ("file,class_index\na,967\nb.png,1\n", "labels.csv")):
        (folder / "labels.csv").unlink(missing_ok=True)
        (folder / where).write_text(text)
        with pytest.raises(InputError) as e:
            load_imagenet_folder(folder, size=8)
        message = str(e.value)
        assert "\n" not in message and "a.png" in message and "a.jpg" in message, message


def test_a_kaggle_id_that_two_images_share_is_refused(tmp_path):
    folder = tmp_path / "kaggle"
    _png(folder / "ILSVRC2012_val_00000001.png")
    _png(folder / "ILSVRC2012_val_00000001.jpg")
    (folder / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nILSVRC2012_val_00000001,{TENCH} 1 1 5 5\n"
    )
    with pytest.raises(InputError, match=r"ILSVRC2012_val_00000001\.jpg.*ILSVRC2012_val_00000001\.png"):
        load_imagenet_folder(folder, size=8)


def test_names_are_unique_across_class_folders(tmp_path):
    _png(tmp_path / "val" / TENCH / "x.png")
    _png(tmp_path / "val" / "n01443537" / "x.png")
    _png(tmp_path / "val" / "n01443537" / "y.png")
    s = load_imagenet_folder(tmp_path / "val", size=8)
    assert sorted(s.names) == [f"{TENCH}/x.png", "n01443537/x.png", "y"]


# 3. the folder's own labels file wins over a Kaggle CSV found in a folder above
def test_the_folders_own_labels_txt_wins_over_a_kaggle_csv_above_it(tmp_path):
    base = tmp_path / "base"
    mine = base / "a" / "b" / "mine"
    _png(mine / "ILSVRC2012_val_00000001.png")
    (base / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nILSVRC2012_val_00000001,{TENCH} 1 1 5 5\n"
    )
    assert _labelled(mine) == {"ILSVRC2012_val_00000001": 0}  # no file of its own: the CSV above labels it
    (mine / "labels.txt").write_text("967\n")
    assert _labelled(mine) == {"ILSVRC2012_val_00000001": 967}
    (mine / "labels.txt").unlink()
    (mine / "labels.csv").write_text("file,class_index\nILSVRC2012_val_00000001.png,281\n")
    assert _labelled(mine) == {"ILSVRC2012_val_00000001": 281}
    (mine / "LOC_val_solution.csv").write_text(  # a Kaggle CSV in the folder itself still comes first
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 1 5 5\n"
    )
    assert _labelled(mine) == {"ILSVRC2012_val_00000001": 1}


# 4. ~ in --out and --json is the home folder, not a folder named "~"
def test_output_paths_expand_the_home_folder(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert writable_dir("~/maps", "--out") == home / "maps" and (home / "maps").is_dir()
    assert writable_file("~/o/t.json", "--json", "t.json") == home / "o" / "t.json"
    assert (home / "o").is_dir() and not (work / "~").exists()


# 5. evaluate's default JSON: one file per settings; a replaced file is said
def test_evaluate_default_json_is_not_replaced_by_a_run_with_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTICAM_CACHE", str(cache_dir()))  # the same cache under another HOME
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--methods", "fakecam,gradcam", "--limit", "2", "--quiet"]) == 0
    first = sorted((tmp_path / "outputs").glob("table1_*.json"))
    assert len(first) == 1
    assert main(["evaluate", "--methods", "fakecam", "--limit", "1", "--quiet"]) == 0
    both = sorted((tmp_path / "outputs").glob("table1_*.json"))
    assert len(both) == 2 and first[0] in both
    kept = json.loads(first[0].read_text())
    assert len(kept["results"]) == 2 and len(kept["meta"]["images"]) == 2
    capsys.readouterr()
    assert main(["evaluate", "--methods", "fakecam", "--limit", "1", "--quiet"]) == 0  # the same settings
    assert "replaced" in capsys.readouterr().out
    assert len(list((tmp_path / "outputs").glob("table1_*.json"))) == 2

    assert main(["evaluate", "--methods", "fakecam", "--limit", "1", "--quiet", "--json", "~/r.json"]) == 0
    assert (tmp_path / "home" / "r.json").is_file() and not (tmp_path / "~").exists()


def test_evaluate_help_says_what_the_default_json_is_and_that_json_overwrites(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "table1_MODEL_HASH.json" in text and "replaced" in text
