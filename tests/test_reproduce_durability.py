"""reproduce's records and inputs, made durable: boxes that two images sharing a stem would silently share are
refused; unreadable or truncated image files are found before the first batch (not hours into a 50,000-image run),
without decoding what a resume does not compute; ``atomic_write`` and the records file reach the disk (fsync of the
file, and of its folder) before a run relies on them.

Small settings: the committed ``world_cnn`` (64 x 64 input, 4 classes) on a folder of a few tiny PNG files.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

import opticam_lib.images as images
from opticam_lib.errors import InputError
from opticam_lib.images import load_imagenet_folder
from opticam_lib.paper.reproduce import Config, _evaluate_batch, run
from opticam_lib.paths import atomic_write

TENCH, GOLDFISH = "n01440764", "n01443537"


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=rng) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def _jpeg_bytes(seed: int = 0) -> bytes:
    rng = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(120, 160, 3, generator=rng) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _xml(path: Path, wnid: str, box: tuple[int, int, int, int], w: int = 48, h: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><size><width>{w}</width><height>{h}</height></size><object><name>{wnid}</name><bndbox>"
        f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>"
        "</annotation>"
    )
    return path


class Counter:
    """Wraps ``_evaluate_batch`` and counts the batches it computes; can fail after ``fail_after`` of them."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.fail_after = fail_after

    def __call__(self, clf, data, idx, method, variant, config):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls.append(tuple(idx))
        return _evaluate_batch(clf, data, idx, method, variant, config)


def _folder(tmp_path: Path, n: int = 4) -> Path:
    folder = tmp_path / "imgs"
    names = "abcdefgh"[:n]
    for k, name in enumerate(names):
        _png(folder / f"{name}.png", seed=k)
    (folder / "labels.txt").write_text("".join(f"{name} {k % 4}\n" for k, name in enumerate(names)))
    return folder


def _config(tmp_path: Path, folder: Path, **kw) -> Config:
    base = {
        "model": "world_cnn",
        "images": str(folder),
        "methods": ["fakecam"],
        "batch_size": 1,
        "out": str(tmp_path / "out"),
    }
    return Config(**{**base, **kw})


# --------------------------------------------------------------------------------------------------------------
# 1. boxes are matched by file stem: one box file for two images is refused, not shared


def test_one_xml_box_file_for_two_images_with_one_stem_is_refused(tmp_path):
    """a.png and a.jpg, both tench, and boxes/a.xml: both images silently got a.xml's box. Now one line names the
    box file and both images, with or without a limit that keeps only one of them."""
    folder = tmp_path / "val"
    _png(folder / "a.png", seed=1)
    _png(folder / "a.jpg", seed=2)
    _png(folder / "b.png", seed=3)
    (folder / "labels.txt").write_text("a.png 0\na.jpg 0\nb.png 0\n")
    xml = _xml(tmp_path / "boxes" / "a.xml", TENCH, (2, 3, 20, 30))
    for limit in (None, 1):
        with pytest.raises(InputError) as e:
            load_imagenet_folder(folder, size=16, boxes_dir=tmp_path / "boxes", limit=limit)
        message = str(e.value)
        assert "\n" not in message and str(xml) in message, message
        assert "a.png" in message and "a.jpg" in message and "stem" in message, message
    (folder / "a.jpg").rename(tmp_path / "a.jpg")  # one image per stem: its box, as before
    (folder / "labels.txt").write_text("a.png 0\nb.png 0\n")
    s = load_imagenet_folder(folder, size=16, boxes_dir=tmp_path / "boxes")
    assert s.names == ["a", "b"] and s.boxes[0].shape == (1, 4) and s.boxes[1].shape == (0, 4)


def test_one_boxes_csv_row_for_two_images_with_one_stem_is_refused(tmp_path):
    """data_download's boxes.csv in a class folder holding x.png and x.jpg: the row's box went to both."""
    root = tmp_path / "val"
    _png(root / TENCH / "x.png", seed=1)
    _png(root / TENCH / "x.jpg", seed=2)
    (root / "boxes.csv").write_text(
        f"file,wnid,xmin,ymin,xmax,ymax,image_width,image_height\n{TENCH}/x.png,{TENCH},1,1,20,20,48,40\n"
    )
    with pytest.raises(InputError) as e:
        load_imagenet_folder(root, size=16)
    message = str(e.value)
    assert "\n" not in message and "boxes.csv" in message, message
    assert f"{TENCH}/x.png" in message and f"{TENCH}/x.jpg" in message, message


def test_a_shared_stem_is_fine_when_no_box_file_serves_two_images(tmp_path):
    """Not refused: a stem two images share without boxes, or boxes whose class only one of them has, or one
    box file per class folder (``boxes/<wnid>/<stem>.xml``)."""
    root = tmp_path / "val"
    _png(root / TENCH / "x.png", seed=1)
    _png(root / GOLDFISH / "x.png", seed=2)
    assert [b.shape[0] for b in load_imagenet_folder(root, size=16).boxes] == [0, 0]
    _xml(tmp_path / "boxes" / "x.xml", TENCH, (1, 1, 10, 10))  # a tench box: the goldfish keeps none
    s = load_imagenet_folder(root, size=16, boxes_dir=tmp_path / "boxes")
    assert dict(zip(s.names, [b.shape[0] for b in s.boxes])) == {f"{TENCH}/x.png": 1, f"{GOLDFISH}/x.png": 0}
    (tmp_path / "boxes" / "x.xml").unlink()
    _xml(tmp_path / "boxes" / TENCH / "x.xml", TENCH, (1, 1, 10, 10))
    _xml(tmp_path / "boxes" / GOLDFISH / "x.xml", GOLDFISH, (5, 5, 30, 30))
    s = load_imagenet_folder(root, size=16, boxes_dir=tmp_path / "boxes")
    assert [b.shape[0] for b in s.boxes] == [1, 1] and not torch.equal(s.boxes[0], s.boxes[1])


def test_a_kaggle_row_with_each_images_own_class_is_not_shared(tmp_path):
    """x.png in two class folders and a LOC_val_solution.csv row for x listing a box of each class: each image
    keeps only its own class's box and the row gives no image size, so nothing is shared (it was refused)."""
    root = tmp_path / "val"
    _png(root / TENCH / "x.png", seed=1)
    _png(root / GOLDFISH / "x.png", seed=2, size=(60, 50))
    (root / "LOC_val_solution.csv").write_text(
        f"ImageId,PredictionString\nx,{TENCH} 1 1 20 20 {GOLDFISH} 10 10 40 30\n"
    )
    s = load_imagenet_folder(root, size=16, labels_file=None)
    boxes = dict(zip(s.names, s.boxes))
    assert boxes[f"{TENCH}/x.png"].shape == (1, 4) and boxes[f"{GOLDFISH}/x.png"].shape == (1, 4)
    assert not torch.equal(boxes[f"{TENCH}/x.png"], boxes[f"{GOLDFISH}/x.png"])


def test_boxes_csv_rows_that_share_one_image_size_are_refused(tmp_path):
    """boxes.csv gives each row the image's size, but rows are matched by stem, so x.png in two class folders would
    have both rows' boxes scaled by one of the two sizes: refused, saying so."""
    root = tmp_path / "val"
    _png(root / TENCH / "x.png", seed=1)
    _png(root / GOLDFISH / "x.png", seed=2, size=(60, 50))
    (root / "boxes.csv").write_text(
        "file,wnid,xmin,ymin,xmax,ymax,image_width,image_height\n"
        f"{TENCH}/x.png,{TENCH},1,1,20,20,48,40\n{GOLDFISH}/x.png,{GOLDFISH},10,10,40,30,60,50\n"
    )
    with pytest.raises(InputError, match="image size"):
        load_imagenet_folder(root, size=16)


# --------------------------------------------------------------------------------------------------------------
# 2. unreadable image files: all of them, before the first batch


def test_unreadable_images_are_listed_before_the_first_batch(tmp_path):
    """A text file named .png, an empty file and two files cut short (PNG and JPEG, headers intact) among the
    images: the run stopped at the first of them, after computing the batches before it. Now one line lists every
    one of them and no batch is computed."""
    folder = _folder(tmp_path, 6)
    (folder / "c.png").write_text("<html>not found</html>")
    (folder / "d.png").write_bytes(b"")
    e_png = (folder / "e.png").read_bytes()
    (folder / "e.png").write_bytes(e_png[: len(e_png) // 2])  # a download cut short
    (folder / "f.png").unlink()
    (folder / "f.jpg").write_bytes(_jpeg_bytes()[:1500])
    (folder / "labels.txt").write_text("a 0\nb 1\nc 2\nd 3\ne 0\nf 1\n")
    counter = Counter()
    with pytest.raises(InputError) as e:
        run(_config(tmp_path, folder), progress=False, evaluate_batch=counter)
    message = str(e.value)
    assert counter.calls == []  # nothing computed
    assert "\n" not in message and message.startswith("4 of the 6 image files"), message
    for name in ("c.png", "d.png", "e.png", "f.jpg"):
        assert str(folder / name) in message, (name, message)
    assert str(folder / "a.png") not in message and str(folder / "b.png") not in message


def test_unreadable_images_checks_headers_and_ends_without_decoding_good_files(tmp_path, monkeypatch):
    good = [_png(tmp_path / "a.png"), tmp_path / "b.jpg"]
    good[1].write_bytes(_jpeg_bytes())
    # data after the end marker (a camera's trailer): PIL reads it, so it is fine
    trailer = tmp_path / "c.jpg"
    # no end marker in it (random bytes held one 6 % of the time)
    trailer.write_bytes(_jpeg_bytes() + b"camera trailer " * 700)
    decoded = []
    real = images._open
    monkeypatch.setattr(images, "_open", lambda p, draft=None: decoded.append(Path(p).name) or real(p, draft))
    assert images.unreadable_images([*good, trailer]) == []
    assert decoded == ["c.jpg"]  # only the file whose end looked wrong was decoded, to be sure
    missing = tmp_path / "gone.png"
    problems = dict(images.unreadable_images([good[0], missing, tmp_path]))
    assert set(problems) == {missing, tmp_path}
    assert "not found" in problems[missing] and "folder" in problems[tmp_path]


def test_a_resume_checks_only_the_images_it_still_computes(tmp_path, monkeypatch):
    """The up-front check reads the headers of the images of the batches still to compute; a finished run reads
    and decodes no image file at all."""
    folder = _folder(tmp_path, 4)
    config = _config(tmp_path, folder)
    with pytest.raises(KeyboardInterrupt):
        run(config, progress=False, evaluate_batch=Counter(fail_after=2))
    checked: list[str] = []
    real_check = images.image_file_problem
    monkeypatch.setattr(images, "image_file_problem", lambda p: checked.append(Path(p).name) or real_check(p))
    counter = Counter()
    run(config, progress=False, evaluate_batch=counter)
    assert counter.calls == [(2,), (3,)] and checked == ["c.png", "d.png"]

    checked.clear()
    decoded = []
    real_read = images._read
    monkeypatch.setattr(images, "_read", lambda p, target=None: decoded.append(p) or real_read(p, target))
    assert run(config, progress=False).computed == 0
    assert checked == [] and decoded == []


# --------------------------------------------------------------------------------------------------------------
# 3. fsync: atomic_write's file before the rename and its folder after it; the records after each batch


def _kind(fd: int) -> tuple[str, int]:
    st = os.fstat(fd)
    return ("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino)


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", *_kind(fd))) or real_fsync(fd))
    monkeypatch.setattr(
        os,
        "replace",
        lambda a, b: events.append(("replace", Path(a).name, Path(b).name)) or real_replace(a, b),
    )
    path = atomic_write(tmp_path / "table.json", "{}\n")
    tmp_name = f".table.json.{os.getpid()}.tmp"
    inode = path.stat().st_ino  # the renamed temporary file keeps its inode
    assert events == [
        ("fsync", "file", inode),
        ("replace", tmp_name, "table.json"),
        ("fsync", "dir", tmp_path.stat().st_ino),
    ]


def test_atomic_write_where_a_folder_cannot_be_opened_or_synced(tmp_path, monkeypatch):
    """Windows cannot open a folder, and some file systems refuse to fsync one: the write still happens."""
    real_open = os.open

    def no_folders(path, flags, *args):
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    assert atomic_write(tmp_path / "a.txt", "one").read_text() == "one"
    monkeypatch.setattr(os, "open", real_open)
    real_fsync = os.fsync

    def no_folder_fsync(fd):
        if _kind(fd)[0] == "dir":
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_fsync)
    assert atomic_write(tmp_path / "a.txt", "two").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_multi_picture_jpeg_cut_short_is_found(tmp_path):
    """Phones write MPO (a JPEG with a second picture after it), which PIL reports as "MPO": its end marker is
    checked as a JPEG's (a cut MPO passed the check and failed when its batch came)."""
    rng = torch.Generator().manual_seed(0)
    frames = [
        Image.fromarray((torch.rand(200, 240, 3, generator=rng) * 255).to(torch.uint8).numpy())
        for _ in range(2)
    ]
    buf = io.BytesIO()
    frames[0].save(buf, "MPO", save_all=True, append_images=frames[1:])
    whole = tmp_path / "phone.jpg"
    whole.write_bytes(buf.getvalue())
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buf.getvalue()[:20_000])  # inside the first picture
    assert Image.open(cut).format == "MPO"
    assert images.image_file_problem(whole) is None
    assert "truncated" in images.image_file_problem(cut)


def test_a_lazy_folder_with_kaggle_boxes_lists_every_unreadable_header(tmp_path):
    """Kaggle's LOC_val_solution.csv gives boxes without the image size, so a lazy load reads each boxed image's
    header; it stopped at the first bad one. Now one line lists them all."""
    folder = tmp_path / "val"
    for k, name in enumerate("abcd"):
        _png(folder / TENCH / f"{name}.png", seed=k)
    (folder / TENCH / "b.png").write_text("<html>not found</html>")
    (folder / TENCH / "c.png").write_bytes(b"")
    rows = ["ImageId,PredictionString"] + [f"{name},{TENCH} 1 1 20 20" for name in "abcd"]
    (folder / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as e:
        load_imagenet_folder(folder, size=16, lazy=True)
    message = str(e.value)
    assert "\n" not in message and message.startswith("2 of the 4 image files cannot be read"), message
    assert str(folder / TENCH / "b.png") in message and str(folder / TENCH / "c.png") in message, message


def test_records_reach_the_disk_after_every_batch(tmp_path, monkeypatch):
    """Each batch's records are fsynced once written (and the records file's folder entry once created), so a
    power loss loses at most the batch in flight, not batches the run went past."""
    folder = _folder(tmp_path, 3)
    config = _config(tmp_path, folder)
    synced: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def kind(fd: int) -> tuple[str, int]:  # a folder synced when the records file is in it is "dir+records"
        what, ino = _kind(fd)
        has_records = (Path(config.out) / "records-0.jsonl").exists()
        return ("dir+records" if what == "dir" and has_records else what, ino)

    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(kind(fd)) or real_fsync(fd))

    def batch_then_count(clf, data, idx, method, variant, cfg):
        records_file = Path(cfg.out) / "records-0.jsonl"
        synced.append(("batch", records_file.stat().st_ino))
        return _evaluate_batch(clf, data, idx, method, variant, cfg)

    run(config, progress=False, evaluate_batch=batch_then_count)
    records = (Path(config.out) / "records-0.jsonl").stat().st_ino
    out = Path(config.out).stat().st_ino
    first_batch = next(k for k, e in enumerate(synced) if e[0] == "batch")
    assert ("dir+records", out) in synced[:first_batch], synced  # its name, once it exists, before any batch
    after_batches = [synced[k + 1 :] for k, e in enumerate(synced) if e[0] == "batch"]
    assert len(after_batches) == 3
    for after in after_batches:  # the records file is synced before the next batch starts
        upto = next((k for k, e in enumerate(after) if e[0] == "batch"), len(after))
        assert ("file", records) in after[:upto], synced


@pytest.mark.parametrize("fragment", [0, 1, 65535, 65536, 200_000])
def test_repair_tail_cuts_a_fragment_of_any_length_back_to_the_last_whole_line(tmp_path, fragment):
    from opticam_lib.paper.reproduce import _repair_tail

    path = tmp_path / "records-0.jsonl"
    lines = b'{"a": 1}\n' * 3
    path.write_bytes(lines + b"x" * fragment)
    _repair_tail(path)
    assert path.read_bytes() == lines
    path.write_bytes(b"\0" * (fragment + 1))  # no whole line at all: nothing is kept
    _repair_tail(path)
    assert path.read_bytes() == b""
