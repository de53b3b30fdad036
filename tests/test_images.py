"""Images: the sample manifest (files, classes, boxes), file conversions, clear errors, ImageNet-style folders,
boxes_to_mask, and a real check of the sample labels with the offline classifier."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.images import (
    ImageSet,
    boxes_to_mask,
    image_file_problem,
    imagenet_categories,
    load_image,
    load_imagenet_folder,
    load_images,
    load_samples,
    sample_manifest,
    sample_names,
    sample_path,
    wnid_to_index,
)
from opticam_lib.metrics.localization import union_mask

# --- the manifest -----------------------------------------------------------------------------------------------


def test_manifest_has_enough_real_samples_with_valid_fields():
    entries = sample_manifest()
    assert len(entries) >= 8
    names = [e["name"] for e in entries]
    assert len(set(names)) == len(names) == len(sample_names())
    cats = imagenet_categories()
    for e in entries:
        assert not Path(e["path"]).is_absolute() and ".." not in Path(e["path"]).parts, e["name"]
        assert 0 <= e["class_id"] < 1000
        assert e["class_name"] == cats[e["class_id"]], e["name"]
        assert e["credit"] and e["license"] and e["description"]
        assert isinstance(e["model_top1_matches"], bool)
        assert e["model_top1_matches"] == (e["model_top1"]["class_id"] == e["class_id"])
        assert len(e["box_objects"]) == len(e["boxes"]) >= 1


@pytest.mark.parametrize("name", sample_names())
def test_every_sample_file_exists_loads_and_its_boxes_fit(name):
    e = next(s for s in sample_manifest() if s["name"] == name)
    path = sample_path(name)
    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == e["sha256"], (
        "the shipped file changed: re-check boxes"
    )
    x = load_image(path, size=None)
    assert x.shape == (3, e["height"], e["width"])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    for x0, y0, x1, y1 in e["boxes"]:
        assert 0 <= x0 < x1 <= e["width"] and 0 <= y0 < y1 <= e["height"]
        assert (x1 - x0) >= 10 and (y1 - y0) >= 10  # non-degenerate
        assert (x1 - x0) * (y1 - y0) < e["width"] * e["height"] or name == "grace_hopper"


# --- load_samples and ImageSet ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples():
    return load_samples()


def test_load_samples_shapes_and_ranges(samples):
    n = len(sample_names())
    assert len(samples) == n
    assert samples.images.shape == (n, 3, 224, 224) and samples.images.dtype == torch.float32
    assert samples.images.min() >= 0 and samples.images.max() <= 1
    assert samples.labels.dtype == torch.long and samples.labels.shape == (n,)
    assert samples.names == sample_names()
    assert all(s.startswith(("skimage:", "sklearn:", "matplotlib:")) for s in samples.sources)
    for b in samples.boxes:
        assert b.dim() == 2 and b.shape[1] == 4 and b.shape[0] >= 1 and b.dtype == torch.float32
        assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 224).all() and (b[:, 2:] > b[:, :2]).all()
    assert samples.label_names()[sample_names().index("chelsea")] == "tabby"


def test_load_samples_scales_boxes_by_hand():
    s = load_samples(size=100, names=["coffee", "chelsea"])
    assert s.names == ["coffee", "chelsea"] and s.images.shape == (2, 3, 100, 100)
    # coffee: 600 x 400, box (172, 18, 409, 308) -> x * 100/600, y * 100/400
    assert torch.allclose(s.boxes[0], torch.tensor([[172 / 6, 18 / 4, 409 / 6, 308 / 4]]))
    # chelsea: 451 x 300, box (0, 0, 400, 300)
    assert torch.allclose(s.boxes[1], torch.tensor([[0.0, 0.0, 400 * 100 / 451, 100.0]]))
    assert s.labels.tolist() == [967, 281]


def test_load_samples_unknown_name_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"valid names: .*chelsea"):
        load_samples(names=["chelsea", "unicorn"])
    with pytest.raises(InputError, match="size"):
        load_samples(size=0)


def test_imageset_subsets(samples):
    sub = samples[1:3]
    assert isinstance(sub, ImageSet) and len(sub) == 2 and sub.names == samples.names[1:3]
    picked = samples[[3, 0]]
    assert picked.names == [samples.names[3], samples.names[0]]
    assert torch.equal(picked.images[1], samples.images[0]) and picked.labels[0] == samples.labels[3]
    assert torch.equal(picked.boxes[0], samples.boxes[3])
    one = samples[-1]
    assert len(one) == 1 and one.images.shape == (1, 3, 224, 224) and one.names == [samples.names[-1]]
    mask = samples.labels == samples.labels[0]
    assert samples[mask].names == [samples.names[0]]
    assert samples.subset(torch.tensor([2])).names == [samples.names[2]]
    with pytest.raises(InputError, match="out of range"):
        samples[[0, 99]]
    m = samples[:2].masks()
    assert m.shape == (2, 1, 224, 224) and set(m.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(InputError, match="disagree"):
        ImageSet(samples.images[:2], samples.labels[:3], samples.boxes[:2], ["a", "b"], ["x", "y"])


# --- conversions ------------------------------------------------------------------------------------------------


def _png16_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_grayscale_becomes_three_equal_channels(tmp_path):
    p = tmp_path / "gray.png"
    Image.fromarray(np.array([[0, 128], [255, 64]], dtype=np.uint8), mode="L").save(p)
    x = load_image(p, size=None)
    assert x.shape == (3, 2, 2)
    assert torch.allclose(x, torch.tensor([[0, 128], [255, 64]]).float().div(255).expand(3, 2, 2))


def test_rgba_and_la_are_composited_on_white(tmp_path):
    a = np.zeros((1, 3, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (255, 0, 0, 0)  # transparent: white
    a[0, 2] = (0, 0, 0, 128)  # half-transparent black: grey
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    x = load_image(tmp_path / "rgba.png", size=None)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(x[:, 0, 1], torch.ones(3))
    assert torch.allclose(x[:, 0, 2], torch.full((3,), 1 - 128 / 255), atol=1e-6)
    Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA").save(tmp_path / "la.png")
    y = load_image(tmp_path / "la.png", size=None)
    assert torch.allclose(y[:, 0, 0], torch.ones(3)) and torch.allclose(y[:, 0, 1], torch.zeros(3))


def test_cmyk_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    x = load_image(tmp_path / "cmyk.tif", size=None)
    assert x.shape == (3, 8, 8) and torch.allclose(x[:, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    y = load_image(tmp_path / "cmyk.jpg", size=None)
    assert torch.allclose(y[:, 8, 8], torch.tensor([1.0, 0.0, 0.0]), atol=0.05)


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 0, 255])
    im.putpixel((1, 0), 1)
    im.save(tmp_path / "p.png")
    x = load_image(tmp_path / "p.png", size=None)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0, 0])) and torch.allclose(
        x[:, 0, 1], torch.tensor([0, 0, 1.0])
    )
    im.save(tmp_path / "pt.png", transparency=1)  # palette index 1 (blue) is transparent: white
    y = load_image(tmp_path / "pt.png", size=None)
    assert torch.allclose(y[:, 0, 0], torch.tensor([1.0, 0, 0])) and torch.allclose(y[:, 0, 1], torch.ones(3))
    im.save(tmp_path / "p.gif")
    assert torch.allclose(load_image(tmp_path / "p.gif", size=None)[:, 0, 0], torch.tensor([1.0, 0, 0]))


def test_16_bit_png_keeps_its_range(tmp_path):
    g = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode.startswith("I")
    x = load_image(tmp_path / "g16.png", size=None)
    assert x.shape == (3, 1, 3)
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]), atol=1e-6)  # not clipped at 255
    assert torch.equal(x[0], x[2])
    rgb = np.zeros((2, 2, 3), dtype=np.uint16)
    rgb[0, 0] = (65535, 0, 0x8080)
    rgb[1, 1] = (0, 65535, 65535)
    _png16_rgb(tmp_path / "rgb16.png", rgb)
    y = load_image(tmp_path / "rgb16.png", size=None)
    assert y.shape == (3, 2, 2)
    assert torch.allclose(y[:, 0, 0], torch.tensor([1.0, 0.0, 0x8080 / 65535]), atol=1 / 255)
    assert torch.allclose(y[:, 1, 1], torch.tensor([0.0, 1.0, 1.0]), atol=1 / 255)


# stored 64 x 32 (W x H) with a red 16 x 16 block at the stored top-left, blue elsewhere;
# orientation -> (displayed H, W), (rows, cols) where the block must appear
EXIF_CASES = {
    1: ((32, 64), (slice(0, 16), slice(0, 16))),
    3: ((32, 64), (slice(16, 32), slice(48, 64))),  # 180 degrees: bottom-right
    6: ((64, 32), (slice(0, 16), slice(16, 32))),  # rotate 90 clockwise to view: top-right
    8: ((64, 32), (slice(48, 64), slice(0, 16))),  # rotate 90 counter-clockwise to view: bottom-left
}


@pytest.mark.parametrize("orientation", sorted(EXIF_CASES))
def test_exif_orientation_is_applied(tmp_path, orientation):
    im = Image.new("RGB", (64, 32), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    (h, w), (rows, cols) = EXIF_CASES[orientation]
    x = load_image(p, size=None)
    assert x.shape == (3, h, w)
    block = torch.zeros(h, w, dtype=torch.bool)
    block[rows, cols] = True
    inner = torch.zeros_like(block)
    inner[rows.start + 3 : rows.stop - 3, cols.start + 3 : cols.stop - 3] = True
    assert x[0][inner].min() > 0.8 and x[2][inner].max() < 0.2  # red where the block went
    far = ~block & ~torch.nn.functional.max_pool2d(block[None].float(), 7, 1, 3)[0].bool()
    assert x[0][far].max() < 0.2 and x[2][far].min() > 0.8  # blue elsewhere


def test_resize_squashes_and_load_images_stacks(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 20:] = 255  # left half black, right half white
    Image.fromarray(a).save(tmp_path / "wide.png")
    Image.fromarray(a[:, :, 0], mode="L").save(tmp_path / "wide_gray.png")
    x = load_image(tmp_path / "wide.png", size=10)
    assert x.shape == (3, 10, 10)
    assert x[:, :, :4].max() < 0.05 and x[:, :, 6:].min() > 0.95  # squashed, not cropped
    batch = load_images([tmp_path / "wide.png", str(tmp_path / "wide_gray.png")], size=8)
    assert batch.shape == (2, 3, 8, 8) and torch.allclose(batch[0], batch[1])
    with pytest.raises(InputError):
        load_images([])
    with pytest.raises(InputError, match="size"):
        load_image(tmp_path / "wide.png", size=-3)


# --- clear errors -----------------------------------------------------------------------------------------------


def _assert_clean(err: pytest.ExceptionInfo, path: Path, words: str) -> None:
    msg = str(err.value)
    assert str(path) in msg and words in msg, msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no PIL traceback chained


def test_errors_name_the_path_and_the_problem(tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(InputError) as e:
        load_image(missing)
    assert str(missing) in str(e.value) and "not found" in str(e.value)
    with pytest.raises(InputError) as e:
        load_image(tmp_path)
    assert str(tmp_path) in str(e.value) and "directory" in str(e.value)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    with pytest.raises(InputError) as e:
        load_image(text)
    _assert_clean(e, text, "not an image")
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "whole.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    with pytest.raises(InputError) as e:
        load_image(cut)
    _assert_clean(e, cut, "corrupt or truncated")
    with pytest.raises(InputError) as e:
        load_images([tmp_path / "whole.jpg", missing])
    assert str(missing) in str(e.value)


def test_the_cheap_check_and_the_decoder_give_one_reason(tmp_path):
    """``image_file_problem`` (before a run) and ``load_image`` (during it) word a bad file's problem alike."""
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "whole.png")
    (tmp_path / "notes.jpg").write_text("<html>this is not a JPEG</html>\n")
    (tmp_path / "head.png").write_bytes((tmp_path / "whole.png").read_bytes()[:20])  # cut inside the header
    # pixels that barely compress, so that half the file holds half the pixels
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    data = (tmp_path / "noise.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # pixel data incomplete
    for name in ("notes.jpg", "head.png", "cut.png"):
        path = tmp_path / name
        why = image_file_problem(path)
        with pytest.raises(InputError) as e:
            load_image(path)
        assert why is not None and str(e.value) == f"cannot read {path}: {why}", (name, why, str(e.value))
    assert image_file_problem(tmp_path / "whole.png") is None


# --- ImageNet-style folders -------------------------------------------------------------------------------------

TENCH, GOLDFISH, SHARK = "n01440764", "n01443537", "n01484850"


def _jpeg(path: Path, w: int, h: int, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), colour).save(path, quality=95)


def _xml(path: Path, w: int, h: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objects
    )
    path.write_text(
        f"<annotation><folder>val</folder><filename>{path.stem}</filename><source><database>ILSVRC_2012</database>"
        f"</source><size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>0</segmented>"
        f"{objs}</annotation>"
    )


# (val id, wnid, width, height, boxes in ILSVRC inclusive pixels)
VAL = [
    (3, SHARK, 80, 40, [(0, 0, 39, 19)]),
    (1, TENCH, 40, 80, [(10, 20, 29, 59), (0, 0, 9, 9)]),
    (2, GOLDFISH, 60, 60, []),
]


def _val_name(i: int) -> str:
    return f"ILSVRC2012_val_{i:08d}"


def test_wnid_mapping_is_imagenet_order():
    m = wnid_to_index()
    assert len(m) == 1000 and m[TENCH] == 0 and m[GOLDFISH] == 1 and m[SHARK] == 2 and m["n15075141"] == 999


def test_class_folder_layout_with_xml_boxes(tmp_path):
    root, boxes = tmp_path / "val", tmp_path / "bbox"
    for i, wnid, w, h, bs in VAL:
        _jpeg(root / wnid / f"{_val_name(i)}.JPEG", w, h, (200, 50, 50))
        if bs:  # a box of another class must be ignored
            _xml(boxes / f"{_val_name(i)}.xml", w, h, [(wnid, b) for b in bs] + [(GOLDFISH, (1, 1, 5, 5))])
    s = load_imagenet_folder(root, size=20, boxes_dir=boxes)
    assert s.names == [_val_name(1), _val_name(2), _val_name(3)]  # ILSVRC files: by file name
    assert s.labels.tolist() == [0, 1, 2]
    assert s.images.shape == (3, 3, 20, 20) and 0 <= s.images.min() and s.images.max() <= 1
    # val 1: 40 x 80, inclusive (10, 20, 29, 59) -> exclusive (10, 20, 30, 60) -> x/2, y/4
    assert torch.allclose(s.boxes[0], torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 5.0, 2.5]]))
    assert s.boxes[1].shape == (0, 4)  # no box file
    # 80 x 40 -> (0, 0, 40, 20) / 4, / 2
    assert torch.allclose(s.boxes[2], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert s.sources[0].endswith(f"{TENCH}/{_val_name(1)}.JPEG")
    assert load_imagenet_folder(root, size=20, limit=2).names == s.names[:2]
    assert all(b.shape == (0, 4) for b in load_imagenet_folder(root, size=20).boxes)  # no box source


def test_flat_layout_with_kaggle_csv_matches_the_class_folder_layout(tmp_path):
    flat, folders, xmls = (
        tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC" / "val",
        tmp_path / "val",
        tmp_path / "x",
    )
    rows = ["ImageId,PredictionString"]
    for i, wnid, w, h, bs in VAL:
        for where in (flat / f"{_val_name(i)}.JPEG", folders / wnid / f"{_val_name(i)}.JPEG"):
            _jpeg(where, w, h, (20, 200, 90))
        objs = bs or [(5, 5, 9, 9)]  # Kaggle lists a box for every image
        rows.append(f"{_val_name(i)}," + " ".join(f"{wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b in objs))
        _xml(xmls / f"{_val_name(i)}.xml", w, h, [(wnid, b) for b in objs])
    (tmp_path / "kaggle" / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    a = load_imagenet_folder(tmp_path / "kaggle", size=20)  # descends into ILSVRC/Data/CLS-LOC/val
    b = load_imagenet_folder(folders, size=20, boxes_dir=xmls)
    assert a.names == b.names == [_val_name(1), _val_name(2), _val_name(3)]
    assert a.labels.tolist() == b.labels.tolist() == [0, 1, 2]
    assert torch.allclose(a.images, b.images)
    for ba, bb in zip(a.boxes, b.boxes):
        assert torch.allclose(ba, bb)
    # 60 x 60, (5, 5, 10, 10)
    assert torch.allclose(a.boxes[1], torch.tensor([[5 / 3, 5 / 3, 10 / 3, 10 / 3]]))
    # flat files with XML boxes and labels.txt (line k = ILSVRC2012_val_k)
    (flat / "labels.txt").write_text("0\n1\n2\n")
    (tmp_path / "kaggle" / "LOC_val_solution.csv").unlink()
    c = load_imagenet_folder(flat, size=20, boxes_dir=xmls, limit=2)
    assert c.labels.tolist() == [0, 1] and torch.allclose(c.boxes[0], b.boxes[0])
    (flat / "labels.txt").unlink()
    with pytest.raises(InputError, match="no labels"):
        load_imagenet_folder(flat, size=20)
    assert load_imagenet_folder(flat, size=20, boxes_dir=xmls).labels.tolist() == [
        0,
        1,
        2,
    ]  # classes from XML


def test_data_download_layout_and_class_balanced_order(tmp_path):
    root = tmp_path / "imagenette"
    for k in range(3):  # class-grouped names: round-robin over classes
        for wnid in (TENCH, GOLDFISH):
            _jpeg(root / wnid / f"{wnid}_{k}.JPEG", 30, 10, (90, 90, 90))
    (root / "labels.csv").write_text("file,wnid,class_index,class_name\n")
    (root / "boxes.csv").write_text(
        "file,wnid,xmin,ymin,xmax,ymax,image_width,image_height\n"
        f"{GOLDFISH}/{GOLDFISH}_0.JPEG,{GOLDFISH},0,0,14,4,30,10\n"
        f"{GOLDFISH}/{GOLDFISH}_0.JPEG,{GOLDFISH},15,5,29,9,30,10\n"
    )
    s = load_imagenet_folder(root, size=10, limit=4)
    assert s.names == [f"{TENCH}_0", f"{GOLDFISH}_0", f"{TENCH}_1", f"{GOLDFISH}_1"]
    assert s.labels.tolist() == [0, 1, 0, 1]
    assert torch.allclose(s.boxes[1], torch.tensor([[0.0, 0.0, 5.0, 5.0], [5.0, 5.0, 10.0, 10.0]]))
    assert s.boxes[0].shape == (0, 4)


def test_folder_errors(tmp_path):
    with pytest.raises(MissingDataError, match="data_download imagenet-val"):
        load_imagenet_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_imagenet_folder(tmp_path / "empty")
    _jpeg(tmp_path / "bad" / "n99999999" / "a.JPEG", 8, 8, (0, 0, 0))
    with pytest.raises(InputError, match="n99999999"):
        load_imagenet_folder(tmp_path / "bad")
    with pytest.raises(InputError, match="limit"):
        load_imagenet_folder(tmp_path / "bad", limit=0)


# --- boxes_to_mask ----------------------------------------------------------------------------------------------


def test_boxes_to_mask_by_hand():
    m = boxes_to_mask(torch.tensor([[1.0, 2.0, 4.0, 5.0], [3.0, 0.0, 6.0, 1.0]]), 6)
    expected = torch.zeros(1, 6, 6)
    expected[0, 2:5, 1:4] = 1  # rows y0..y1-1, columns x0..x1-1
    expected[0, 0:1, 3:6] = 1
    assert m.dtype == torch.float32 and torch.equal(m, expected)
    # fractional box: pixel centres 0.5 and 1.5 lie in [0.4, 1.6)
    assert torch.equal(
        boxes_to_mask([[0.4, 0.4, 1.6, 1.6]], (3, 4))[0],
        torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]),
    )
    assert torch.equal(boxes_to_mask(torch.zeros(0, 4), (2, 3)), torch.zeros(1, 2, 3))
    boxes = torch.tensor([[2.3, 1.7, 9.2, 6.6], [0.0, 5.0, 3.0, 12.0]])
    expected = torch.zeros(12, 10, dtype=torch.bool)
    expected[2:7, 2:9] = True  # column centres 2.5..8.5 in [2.3, 9.2), row centres 2.5..6.5 in [1.7, 6.6)
    expected[5:12, 0:3] = True  # the second box: columns 0..2, rows 5..11
    assert torch.equal(boxes_to_mask(boxes, (12, 10))[0].bool(), expected)
    assert torch.equal(union_mask(boxes, (12, 10)), expected)


# --- the labels, checked by a real classifier -------------------------------------------------------------------


def test_classifier_top5_contains_the_label_for_most_samples(real_classifier, samples):
    probs = real_classifier.predict(samples.images.to(real_classifier.device)).cpu()
    top5 = probs.topk(5, dim=1).indices
    hits = (top5 == samples.labels[:, None]).any(dim=1)
    assert hits.float().mean() >= 0.75, dict(zip(samples.names, hits.tolist()))
    ranks = (probs.argsort(dim=1, descending=True) == samples.labels[:, None]).float().argmax(dim=1) + 1
    manifest = {e["name"]: e["model_rank_of_class"] for e in sample_manifest()}
    # the manifest's ranks are current (top-5 ones exactly)
    for name, rank in zip(samples.names, ranks.tolist()):
        assert (rank <= 5) == (manifest[name] <= 5), (name, rank, manifest[name])


def test_lazy_folder_equals_the_decoded_one_and_reads_only_what_is_indexed(tmp_path):
    """``lazy=True`` (what ``reproduce`` uses, so that 50,000 images need not fit in memory) gives the same
    names, labels, boxes and pixels; boxes are scaled with the header size (EXIF orientation included)."""
    flat = tmp_path / "val"
    rows = ["ImageId,PredictionString"]  # Kaggle's CSV gives no image size: the size must come from the file
    for i, wnid, w, h, bs in VAL:
        _jpeg(flat / f"{_val_name(i)}.JPEG", w, h, (20 * i, 200, 90))
        objs = bs or [(5, 5, 9, 9)]
        rows.append(f"{_val_name(i)}," + " ".join(f"{wnid} {b[0]} {b[1]} {b[2]} {b[3]}" for b in objs))
    # a 4th image stored 80 x 40 and rotated by its EXIF tag (6: 90 degrees) to 40 x 80
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (80, 40), (10, 10, 200)).save(flat / f"{_val_name(4)}.JPEG", exif=exif.tobytes())
    rows.append(f"{_val_name(4)},{TENCH} 0 0 39 79")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")

    eager = load_imagenet_folder(flat, size=20)
    lazy = load_imagenet_folder(flat, size=20, lazy=True)
    assert type(lazy.images).__name__ == "LazyImages" and len(lazy) == 4
    assert lazy.images.shape == eager.images.shape and lazy.size == 20
    assert lazy.names == eager.names and lazy.labels.tolist() == eager.labels.tolist()
    for a, b in zip(lazy.boxes, eager.boxes, strict=True):
        assert torch.allclose(a, b)
    assert torch.allclose(lazy.boxes[3], torch.tensor([[0.0, 0.0, 20.0, 20.0]]))  # the whole rotated image
    assert torch.equal(lazy.images[[2, 0]], eager.images[[2, 0]])
    assert torch.equal(lazy.images[1], eager.images[1]) and torch.equal(lazy.images[:], eager.images)
    assert torch.equal(lazy.subset([3, 1]).images, eager.subset([3, 1]).images)  # a subset is decoded

    # a file whose box needs its size and cannot be read is named when the folder is loaded
    (flat / f"{_val_name(2)}.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match=_val_name(2)):
        load_imagenet_folder(flat, size=20, lazy=True)
    # with no box to scale, nothing is read when loading: a broken file is named when its batch is read
    (tmp_path / "LOC_val_solution.csv").unlink()  # (it would be found from the folder below too)
    folders = tmp_path / "folders"
    for i, wnid, w, h, _ in VAL:
        _jpeg(folders / wnid / f"{_val_name(i)}.JPEG", w, h, (20 * i, 200, 90))
    (folders / GOLDFISH / f"{_val_name(2)}.JPEG").write_bytes(b"not a jpeg")
    broken = load_imagenet_folder(folders, size=20, lazy=True)
    assert broken.names == [_val_name(1), _val_name(2), _val_name(3)]
    assert torch.equal(broken.images[[0, 2]], eager.images[[0, 2]])
    with pytest.raises(InputError, match=_val_name(2)):
        broken.images[[1]]
    with pytest.raises(InputError, match="out of range"):
        broken.images[[7]]


def _peak_mb(code: str) -> float:
    """Peak resident memory (MB) of a fresh Python process that runs ``code`` after importing the library."""
    import subprocess
    import sys

    script = (
        "import resource\nimport torch\nfrom opticam_lib.images import load_image\n"
        + code
        + "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_large_image_is_reduced_before_it_becomes_floats(tmp_path):
    """An 8000 x 8000 PNG is 192 MB as 8-bit RGB and 768 MB as float32: loading it for a 224 px model must stay
    near the 8-bit size (it peaked at about 2.5 GB when the full-size float image was resized)."""
    from PIL import ImageDraw

    big = Image.new("RGB", (8000, 8000), (40, 90, 160))
    draw = ImageDraw.Draw(big)
    for i in range(0, 8000, 400):
        draw.line([(i, 0), (8000 - i, 8000)], fill=(250, 200, 20), width=30)
    path = tmp_path / "big.png"
    big.save(path)
    del big, draw
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64)).save(small)
    base = _peak_mb(f"x = load_image({str(small)!r})")
    peak = _peak_mb(f"x = load_image({str(path)!r}); assert x.shape == (3, 224, 224)")
    print(f"peak growth {peak - base:.0f} MB")
    assert peak - base < 450, f"loading an 8000 x 8000 PNG raised the peak by {peak - base:.0f} MB"


@pytest.mark.parametrize("path", [123, None, ["a.jpg"]])
def test_a_path_that_is_not_a_path_is_named(path):
    with pytest.raises(InputError, match="an image path must be a str or a Path"):
        load_image(path)


def test_a_large_16_bit_image_is_reduced_before_it_is_converted(tmp_path):
    """PIL's reduce refuses 16-bit modes, so an 8000 x 8000 16-bit file went through a full-size float64 array
    (1.6 GB); it is now reduced as 32-bit integers first, with the same values."""
    from opticam_lib.images import _reduce

    a = np.zeros((512, 512), dtype=np.uint16)
    a[:, :256] = 32768
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    small = _reduce(im, 64)
    assert small.size == (64, 64) and small.mode == "I"
    path = tmp_path / "gray16.png"
    im.save(path)
    x = load_image(path, size=32)
    assert x.shape == (3, 32, 32)
    assert float(x[:, :, :8].mean()) == pytest.approx(32768 / 65535, abs=1e-4)
    assert float(x[:, :, -8:].max()) == 0.0


def test_image_set_indices_and_label_names_get_input_errors():
    from opticam_lib.images import load_samples

    s = load_samples(size=16)
    for bad in (torch.tensor([0.5]), "a", [0.5], [True]):
        with pytest.raises(InputError, match="indices must be"):
            s.subset(bad)
    assert s.subset(iter([1, 0])).names == [s.names[1], s.names[0]]  # any iterable of ints, read once
    assert s.subset(np.array([2])).names == [s.names[2]]
    with pytest.raises(InputError, match="has no name among 1 categories"):
        s.label_names(["a"])
