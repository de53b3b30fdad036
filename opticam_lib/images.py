"""Images: the course's real sample photographs, any image file, and ImageNet-style validation folders.

Every loader returns float tensors in [0, 1], channels first, RGB:

- ``load_image(path, size)`` -> (3, S, S); ``load_images(paths, size)`` -> (N, 3, S, S). Any file PIL reads:
  grayscale, palette, RGBA (composited on white), CMYK, 16-bit, EXIF-rotated. A bad path or file is an
  ``InputError`` that names the path and the problem.
- ``load_samples(size)`` -> ``ImageSet``: about ten real photographs that installed packages ship
  (scikit-image, scikit-learn, matplotlib), each with a hand-chosen ImageNet class and hand-checked boxes
  (``opticam_lib/data/samples.json``). Nothing is downloaded.
- ``load_imagenet_folder(root, size)`` -> ``ImageSet``: an ImageNet validation folder, with class sub-folders or
  flat ``ILSVRC2012_val_*.JPEG`` files plus a labels file, and boxes from CSV or Pascal-VOC XML.

Resizing squashes the whole image to S x S (no crop), as the paper resizes every image to 224 x 224, with
bilinear interpolation and antialiasing; boxes are scaled with it.

Box convention (everywhere in the library): (x0, y0, x1, y1) in pixels, x1 and y1 exclusive, so a box covers the
pixels whose centres (j + 0.5, i + 0.5) lie in [x0, x1) x [y0, y1), and (0, 0, W, H) is the whole image.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from opticam_lib.errors import InputError, MissingDataError, OptiCAMError
from opticam_lib.paths import require_prepared

PathLike = str | Path
T = TypeVar("T")

MANIFEST_PATH = Path(__file__).parent / "data" / "samples.json"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
DOWNLOAD_HINT = "python -m data_download imagenet-val  (or: python -m data_download imagenette)"

_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d+)", re.IGNORECASE)
_WNID = re.compile(r"^n\d{8}$")


# --------------------------------------------------------------------------------------------------------------
# ImageSet


class LazyImages:
    """Image files that stand in for an (N, 3, S, S) float tensor in [0, 1] and are decoded only when indexed.

    For folders too large to hold in memory (the 50,000 ImageNet validation images would take 30 GB at
    S = 224): ``lazy[indices]`` (an int, slice, sequence of ints or a long/bool tensor) reads, orients and resizes
    just those files, as ``load_image`` does, and returns a tensor (a read error names the file then).
    ``shape``, ``dim()``, ``len()``, ``dtype`` and ``device`` answer as the tensor would.
    """

    def __init__(self, files: Sequence[PathLike], size: int) -> None:
        _check_size(size, allow_none=False)
        self.files = [Path(f) for f in files]
        self.size = size

    @property
    def shape(self) -> torch.Size:
        """(N, 3, S, S), as the stacked images would have (nothing is read)."""
        return torch.Size((len(self.files), 3, self.size, self.size))

    dtype = torch.float32
    device = torch.device("cpu")

    def dim(self) -> int:
        """4, as a stacked (N, 3, S, S) tensor."""
        return 4

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Tensor:
        n = len(self.files)
        if isinstance(index, slice):
            idx = list(range(n))[index]
        elif isinstance(index, Tensor):
            idx = (
                index.nonzero().flatten().tolist() if index.dtype == torch.bool else index.flatten().tolist()
            )
        elif isinstance(index, (int, np.integer)):
            if not -n <= int(index) < n:
                raise InputError(f"index {int(index)} out of range for {n} images")
            return resize(_read(self.files[int(index)]), self.size)
        else:
            idx = [int(i) for i in index]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise InputError(f"indices {bad[:5]} out of range for {n} images")
        if not idx:
            return torch.empty(0, 3, self.size, self.size)
        return torch.stack([resize(_read(self.files[i]), self.size) for i in idx])

    def to(self, device: str | torch.device) -> LazyImages | Tensor:
        """Itself on the CPU (still lazy); on another device, every image decoded and moved there."""
        return self if torch.device(device).type == "cpu" else self[:].to(device)

    def __repr__(self) -> str:
        return f"LazyImages({len(self.files)} files, size={self.size})"


@dataclass
class ImageSet:
    """A batch of images with their classes and ground-truth boxes.

    Attributes:
        images: (N, 3, S, S) float in [0, 1], RGB; or ``LazyImages`` (``load_imagenet_folder(lazy=True)``), which
            decodes the files of ``images[indices]`` on demand. ``subset`` always returns decoded images.
        labels: (N,) long, ground-truth class ids (ImageNet: 0..999).
        boxes: N tensors, each (M_i, 4) float xyxy in pixels of the S x S image (x1, y1 exclusive); M_i may be 0
            when an image has no box.
        names: N short names (sample names, or file stems for a folder).
        sources: N strings saying where each image came from (package and path, or file path).
    """

    images: Tensor | LazyImages
    labels: Tensor
    boxes: list[Tensor]
    names: list[str]
    sources: list[str]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise InputError(f"ImageSet.images must be (N, 3, S, S); got {tuple(self.images.shape)}")
        n = self.images.shape[0]
        lengths = {
            "labels": self.labels.shape[0] if self.labels.dim() == 1 else -1,
            "boxes": len(self.boxes),
            "names": len(self.names),
            "sources": len(self.sources),
        }
        wrong = {k: v for k, v in lengths.items() if v != n}
        if wrong:
            raise InputError(
                f"ImageSet has {n} images but these fields disagree (length; -1: not 1-D): {wrong}"
            )
        for i, b in enumerate(self.boxes):
            if b.dim() != 2 or b.shape[1] != 4:
                raise InputError(f"ImageSet.boxes[{i}] must be (M, 4); got {tuple(b.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        """S, the side of the square images."""
        return self.images.shape[-1]

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> ImageSet:
        """A subset as a new ImageSet (an int keeps the batch dimension: a set of one image)."""
        return self.subset(index)

    def subset(self, indices: int | slice | Sequence[int] | Tensor) -> ImageSet:
        """The images at ``indices`` (int, slice, sequence of ints, or a long/bool tensor), in that order."""
        n = len(self)
        if isinstance(indices, slice):
            idx = list(range(n))[indices]
        elif isinstance(indices, Tensor):
            if indices.dtype == torch.bool:
                if indices.shape != (n,):
                    raise InputError(f"a boolean index must have shape ({n},); got {tuple(indices.shape)}")
                idx = indices.nonzero().flatten().tolist()
            elif indices.is_floating_point() or indices.is_complex():
                raise InputError(
                    f"indices must be integers or booleans, got a tensor of dtype {indices.dtype}"
                )
            else:
                idx = indices.flatten().tolist()
        elif isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            idx = [int(indices)]
        else:
            items = [] if isinstance(indices, str) else list(indices)
            whole = (int, np.integer)
            if isinstance(indices, str) or not all(
                isinstance(i, whole) and not isinstance(i, bool) for i in items
            ):
                raise InputError(
                    f"indices must be an int, a slice, a sequence of ints or a tensor, got {indices!r}"
                )
            idx = [int(i) for i in items]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise InputError(f"indices {bad} out of range for an ImageSet of {n} images")
        idx = [i % n for i in idx] if n else []
        t = torch.tensor(idx, dtype=torch.long)
        return ImageSet(
            images=self.images[t],
            labels=self.labels[t],
            boxes=[self.boxes[i] for i in idx],
            names=[self.names[i] for i in idx],
            sources=[self.sources[i] for i in idx],
        )

    def to(self, device: str | torch.device) -> ImageSet:
        """A copy with images, labels and boxes on ``device``."""
        return ImageSet(
            images=self.images.to(device),
            labels=self.labels.to(device),
            boxes=[b.to(device) for b in self.boxes],
            names=list(self.names),
            sources=list(self.sources),
        )

    def label_names(self, categories: Sequence[str] | None = None) -> list[str]:
        """The class name of each label (default: the ImageNet names, ``imagenet_categories``)."""
        if categories is None:
            categories = imagenet_categories()
        high = int(self.labels.max()) if len(self) else -1
        if high >= len(categories):
            raise InputError(f"label {high} has no name among {len(categories)} categories")
        return [categories[int(c)] for c in self.labels]

    def masks(self) -> Tensor:
        """(N, 1, S, S) float in {0, 1}: each image's union of boxes (``box_masks``)."""
        if len(self) == 0:
            return torch.zeros(0, 1, self.size, self.size)
        return box_masks([b.cpu() for b in self.boxes], self.size)


# --------------------------------------------------------------------------------------------------------------
# Single images


def _check_size(size: int | None, allow_none: bool = True) -> None:
    if size is None and allow_none:
        return
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"size must be a positive int{' or None' if allow_none else ''}; got {size!r}")


#: what PIL raises on a file it cannot open or decode (``_why_unreadable`` says why in words)
_UNREADABLE = (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError)


def _why_unreadable(e: BaseException) -> str:
    """Why an image file could not be opened or decoded, from the exception PIL or the OS raised: the one wording
    of ``_open``, ``_oriented_size`` and ``image_file_problem`` (the file's name is added by the caller)."""
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, UnidentifiedImageError):  # an OSError: before the generic case
        return "not an image file PIL recognises (empty, or text/HTML with an image extension?)"
    if isinstance(e, Image.DecompressionBombError):
        return str(e)
    return f"the file is corrupt or truncated ({e})"


def _open(path: Path, draft: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` with PIL, turning every failure into an InputError that names the path.

    ``draft``: a JPEG is decoded directly at a reduced scale (PIL's ``draft``: 1/2, 1/4 or 1/8 in the DCT) while
    both sides stay at least ``draft`` pixels; other formats decode at full size."""
    if not path.exists():
        raise InputError(f"image file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file")
    try:
        im = Image.open(path)
        if draft is not None and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        im.load()
    except _UNREADABLE as e:
        raise InputError(f"cannot read {path}: {_why_unreadable(e)}") from None
    try:
        oriented = ImageOps.exif_transpose(im) or im
    except Exception:  # a malformed EXIF block: keep the stored orientation
        return im
    if oriented is not im:
        im.close()  # release the file (multi-frame files keep it open)
    return oriented


def _to_tensor(im: Image.Image, where: str = "image") -> Tensor:
    """A PIL image of any common mode -> (3, H, W) float in [0, 1] (RGB; transparency composited on white)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG/TIFF). PIL's convert("RGB") would clip at 255, so scale by hand.
        a = np.asarray(im, dtype=np.float64) / 65535.0
        g = torch.from_numpy(np.clip(a, 0.0, 1.0)).float()
        return g[None].expand(3, -1, -1).contiguous()
    if mode == "F":  # 32-bit float grayscale: taken as already in [0, 1]
        g = torch.from_numpy(np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0))
        return g[None].expand(3, -1, -1).contiguous()
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        a = torch.from_numpy(np.array(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        rgb, alpha = a[:3], a[3:4]
        return (rgb * alpha + (1.0 - alpha)).clamp(0, 1)  # composite on white
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise InputError(f"cannot convert {where} of mode {im.mode!r} to RGB: {e}") from None
    return torch.from_numpy(np.array(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def resize(image: Tensor, size: int) -> Tensor:
    """Squash (3, H, W) or (N, 3, H, W) float images to size x size: bilinear, antialiased, clamped to [0, 1]."""
    _check_size(size, allow_none=False)
    batch = image.dim() == 4
    x = image if batch else image[None]
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.clamp(0, 1)
    return x if batch else x[0]


def _read(path: PathLike, target: int | None = None) -> Tensor:
    """(3, H, W) float in [0, 1] at the file's (EXIF-oriented) size, or, with ``target``, reduced while still 8-bit
    to the smallest integer fraction of it whose shorter side is at least 2 x ``target`` (so a large photo is
    never held as floats at full size: an 8000 x 8000 PNG would need 768 MB as float32)."""
    p = Path(path).expanduser()
    im = _open(p, draft=None if target is None else 2 * target)
    try:
        if target is not None:
            im = _reduce(im, 2 * target)
        return _to_tensor(im, where=str(p))
    finally:
        im.close()


def _reduce(im: Image.Image, least: int) -> Image.Image:
    """``im`` shrunk by PIL's box ``reduce`` by the largest integer factor keeping both sides >= ``least``."""
    factor = min(im.width, im.height) // least
    if factor < 2:
        return im
    if im.mode == "P":  # palette indices cannot be averaged
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode.startswith("I;16"):  # reduce does not take 16-bit modes; 32-bit integers keep every value
        im = im.convert("I")
    try:
        return im.reduce(factor)
    except (ValueError, NotImplementedError):  # a mode reduce does not support: keep full size
        return im


def _oriented_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file after its EXIF orientation, read from the header (no pixel decoding)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # a malformed EXIF block: _read keeps the stored orientation too
                orientation = 1
    except _UNREADABLE as e:
        raise InputError(f"cannot read {path}: {_why_unreadable(e)}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


#: how many bytes at a file's end ``image_file_problem`` reads for the format's end marker
_TAIL_BYTES = 4096
#: the end marker of each format that has one: a file cut short (an interrupted download or copy) lacks it
_END_MARKERS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND"}  # MPO: phones' multi-picture JPEG


def image_file_problem(path: PathLike) -> str | None:
    """Why ``path`` cannot be read as an image, or None: a cheap check that decodes no pixels in the usual case.

    PIL reads the header (format, size, EXIF; a decompression bomb is refused here), and for JPEG and PNG the last
    4 KB are searched for the format's end marker (EOI, IEND), which a file cut short lacks. Only a file without
    it is decoded, to be sure (a JPEG with data after its end, as some cameras write, reads fine). What this
    misses (a corrupt block inside a complete file) is still reported, naming the file, when its batch is read.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            marker = _END_MARKERS.get(im.format or "")
            size = p.stat().st_size
            if marker is None:
                return None
            with open(p, "rb") as f:
                f.seek(max(0, size - _TAIL_BYTES))
                if marker in f.read():
                    return None
    except _UNREADABLE as e:
        return _why_unreadable(e)
    try:  # no end marker: cut short, or data after the end; only a decode tells
        _open(p).close()
    except InputError as e:
        return str(e).removeprefix(f"cannot read {p}: ")
    return None


def unreadable_message(bad: Sequence[tuple[Path, str]], total: int, what: str = "image files") -> str:
    """One line for ``unreadable_images``' answer: how many of ``total`` files, up to 5 of them and why."""
    shown = "; ".join(f"{path}: {why}" for path, why in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} of the {total} {what} cannot be read: {shown}{more}"


def unreadable_images(paths: Iterable[PathLike]) -> list[tuple[Path, str]]:
    """[(file, why it cannot be read)] for the image files among ``paths`` that ``image_file_problem`` finds bad,
    in the order given: about 0.1 ms a file (header and end read, no decoding), so that a run over thousands of
    files can refuse them all before its first batch instead of failing at the first one hours in."""
    out = []
    for path in paths:
        why = image_file_problem(path)
        if why is not None:
            out.append((Path(path), why))
    return out


def load_image(path: PathLike, size: int | None = 224) -> Tensor:
    """One image file as a (3, S, S) float tensor in [0, 1] (RGB).

    Grayscale, palette, RGBA/LA (composited on white), CMYK and 16-bit files are converted to RGB; the EXIF
    orientation is applied. 16-bit grayscale (PIL modes ``I;16``/``I``) is divided by 65535 at full precision;
    16-bit RGB comes through PIL as 8 bits per channel; float images (mode ``F``) are taken as [0, 1] and
    clipped. Multi-frame files (GIF, TIFF) give their first frame. The image is squashed to ``size`` x ``size``
    (bilinear, antialiased); ``size=None`` keeps its (oriented) size: (3, H, W). A large file is first reduced
    while still 8-bit (JPEG: decoded at 1/2, 1/4 or 1/8 scale; others: PIL's box ``reduce``) to about twice
    ``size``, so memory follows the file's 8-bit size, not four bytes per value at full size.

    Raises:
        InputError: the path is missing, is a directory, or is not a readable image (the message names the path).
    """
    _check_size(size)
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"an image path must be a str or a Path, got {type(path).__name__} {path!r}")
    x = _read(path, target=size)
    return x if size is None else resize(x, size)


def load_images(paths: Iterable[PathLike], size: int = 224) -> Tensor:
    """Several image files as (N, 3, S, S) float in [0, 1] (see ``load_image``)."""
    _check_size(size, allow_none=False)
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise InputError("load_images needs at least one path")
    return torch.stack([load_image(p, size) for p in paths])


# --------------------------------------------------------------------------------------------------------------
# Boxes


def scale_boxes(boxes: Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> Tensor:
    """Boxes (M, 4) xyxy in pixels of an image (H, W) = ``from_size`` -> pixels of the resized ``to_size``."""
    (h0, w0), (h1, w1) = from_size, to_size
    factor = torch.tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0], dtype=torch.float32)
    return boxes.reshape(-1, 4).float() * factor


def boxes_to_mask(boxes: Tensor | Sequence[Sequence[float]], size: int | tuple[int, int]) -> Tensor:
    """The union of boxes as a (1, H, W) float mask in {0, 1}.

    Args:
        boxes: (M, 4) xyxy in pixels, x1/y1 exclusive; a pixel is in the mask when its centre
            (j + 0.5, i + 0.5) lies in a box (the one rule for boxes in the library; ``metrics.localization.union_mask`` is this mask as bool).
            M = 0 gives an empty mask.
        size: S (square) or (H, W).
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise InputError(f"mask size must be positive; got {(h, w)}")
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    ys = torch.arange(h, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, :] + 0.5
    mask = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in b.tolist():
        mask |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return mask.float()[None]


def box_masks(boxes: Sequence[Tensor], size: int | tuple[int, int]) -> Tensor:
    """The union of each image's boxes as a mask: N tensors (M_i, 4) xyxy -> (N, 1, H, W) float in {0, 1}
    (``boxes_to_mask`` of each)."""
    if len(boxes) == 0:
        raise InputError("box_masks needs the boxes of at least one image")
    return torch.stack([boxes_to_mask(b, size) for b in boxes])


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names (short form, e.g. ``"tabby cat"``), from timm's bundled metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]


# --------------------------------------------------------------------------------------------------------------
# The sample photographs


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    with open(MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def sample_manifest() -> list[dict[str, Any]]:
    """The manifest entries (a deep copy): name, package, path, class_id, class_name, boxes, credit, ..."""
    return json.loads(json.dumps(_manifest()["samples"]))


def sample_names() -> list[str]:
    """Names of the sample photographs, in manifest order."""
    return [s["name"] for s in _manifest()["samples"]]


def sample_path(name: str) -> Path:
    """The file of sample ``name``, located inside its package (no absolute path is stored)."""
    entry = _entry(name)
    path = _package_dir(entry["package"], entry["distribution"], name) / entry["path"]
    if not path.is_file():
        raise MissingDataError(
            f"sample {name!r}: {entry['package']} has no file {entry['path']} (expected at {path}); "
            f"reinstall {entry['distribution']}"
        )
    return path


def _package_dir(package: str, distribution: str, sample: str) -> Path:
    """The folder of an installed package, found without importing it (importing scikit-learn takes seconds)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not (spec.origin or spec.submodule_search_locations):
        raise MissingDataError(
            f"sample {sample!r} is shipped by the package {distribution!r}, which is not installed: "
            f"pip install {distribution}"
        )
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent


def _entry(name: str) -> dict[str, Any]:
    for s in _manifest()["samples"]:
        if s["name"] == name:
            return s
    raise InputError(f"unknown sample {name!r}; valid names: {', '.join(sample_names())}")


def load_samples(size: int = 224, names: Sequence[str] | None = None) -> ImageSet:
    """The real sample photographs with their ImageNet classes and hand-checked boxes.

    Args:
        size: S; each photograph is squashed to S x S (bilinear, antialiased) and its boxes scaled to match.
        names: which samples, in this order (default: all, in manifest order; see ``sample_names()``).

    Returns:
        ImageSet: images (N, 3, S, S) in [0, 1], labels (N,) ImageNet ids, boxes (M_i, 4) in pixels of the S x S
        image, names, sources ("package:path").

    Raises:
        InputError: an unknown name (the message lists the valid ones) or a bad size.
        MissingDataError: the package that ships a photograph is missing.
        OptiCAMError: a shipped file's size differs from the manifest's (another package version; boxes would
            be wrong).
    """
    _check_size(size, allow_none=False)
    if isinstance(names, str):
        names = [names]
    wanted = sample_names() if names is None else list(names)
    unknown = [n for n in wanted if n not in sample_names()]
    if unknown:
        raise InputError(f"unknown sample name(s) {unknown}; valid names: {', '.join(sample_names())}")
    if not wanted:
        raise InputError("names is empty; valid names: " + ", ".join(sample_names()))
    images, labels, boxes, sources = [], [], [], []
    for name in wanted:
        e = _entry(name)
        x = _read(sample_path(name))
        h, w = x.shape[-2:]
        if (w, h) != (e["width"], e["height"]):
            raise OptiCAMError(
                f"sample {name!r}: {e['package']}/{e['path']} is {w}x{h} but the manifest's boxes are for "
                f"{e['width']}x{e['height']} (a different {e['distribution']} version?)"
            )
        images.append(resize(x, size))
        labels.append(int(e["class_id"]))
        boxes.append(scale_boxes(torch.tensor(e["boxes"], dtype=torch.float32), (h, w), (size, size)))
        sources.append(f"{e['package']}:{e['path']}")
    return ImageSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        boxes=boxes,
        names=wanted,
        sources=sources,
    )


# --------------------------------------------------------------------------------------------------------------
# ImageNet-style folders


@lru_cache(maxsize=1)
def imagenet_wnids() -> list[str]:
    """The 1,000 ImageNet WordNet ids in class-index order (``n01440764`` is 0), from timm's bundled metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_label_name(i) for i in range(info.num_classes())]


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """{WordNet id: class index} for ImageNet-1k."""
    return {w: i for i, w in enumerate(imagenet_wnids())}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _class_index(wnid: str, where: str) -> int:
    try:
        return wnid_to_index()[wnid]
    except KeyError:
        raise InputError(f"{where}: {wnid!r} is not an ImageNet-1k WordNet id") from None


def parse_voc_xml(path: PathLike) -> tuple[tuple[int, int] | None, list[tuple[str, list[float]]]]:
    """An ILSVRC / Pascal-VOC box file -> ((H, W) from <size> or None, [(wnid, [x0, y0, x1, y1]), ...]).

    ILSVRC's <bndbox> holds inclusive pixel indices (xmin..xmax); they become x1 = xmax + 1 (exclusive).
    """
    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (ET.ParseError, OSError) as e:
        raise InputError(f"cannot read box file {p}: {e}") from None
    size = None
    s = root.find("size")
    if s is not None and s.findtext("width") and s.findtext("height"):
        size = (int(float(s.findtext("height"))), int(float(s.findtext("width"))))
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise InputError(f"{p}: a <bndbox> lacks xmin/ymin/xmax/ymax numbers") from None
        objects.append((name, [x0, y0, x1 + 1.0, y1 + 1.0]))
    return size, objects


Objects = list[tuple[str, list[float]]]  # [(wnid, [x0, y0, x1, y1]), ...], x1/y1 exclusive
Annotation = tuple[tuple[int, int] | None, Objects]  # ((H, W) of the boxes' frame or None, objects)


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [h.strip() for h in next(csv.reader(f), [])]


def _read_loc_csv(path: Path) -> dict[str, Annotation]:
    """Kaggle's LOC_val_solution.csv -> {image id: (None, [(wnid, box), ...])}; inclusive -> x1 exclusive."""
    out: dict[str, Annotation] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise InputError(f"{path}: expected the header 'ImageId,PredictionString'; got {header}")
        for row in reader:
            if not row:
                continue
            image_id, tokens = row[0].strip(), row[1].split() if len(row) > 1 else []
            if len(tokens) % 5:
                raise InputError(f"{path}: {image_id}: PredictionString must be groups 'wnid x0 y0 x1 y1'")
            objs = []
            try:
                for k in range(0, len(tokens), 5):
                    x0, y0, x1, y1 = (float(t) for t in tokens[k + 1 : k + 5])
                    objs.append((tokens[k], [x0, y0, x1 + 1.0, y1 + 1.0]))
            except ValueError:
                raise InputError(f"{path}: {image_id}: box coordinates must be numbers") from None
            out[image_id] = (None, objs)
    return out


def _read_boxes_csv(path: Path) -> dict[str, Annotation]:
    """``boxes.csv`` written by ``python -m data_download`` (file, wnid, xmin, ymin, xmax, ymax, image_width,
    image_height; ILSVRC inclusive pixels) -> {file stem: ((H, W) or None, [(wnid, box), ...])}."""
    out: dict[str, Annotation] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                stem = Path(row["file"]).stem
                x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
                w, h = row.get("image_width") or "", row.get("image_height") or ""
                frame = (int(float(h)), int(float(w))) if w and h else None
            except (KeyError, TypeError, ValueError) as e:
                raise InputError(
                    f"{path}: expected columns file, wnid, xmin, ymin, xmax, ymax[, image_width, image_height] "
                    f"with numbers ({e!r})"
                ) from None
            prev_frame, objs = out.get(stem, (None, []))
            objs.append((row.get("wnid", "").strip(), [x0, y0, x1 + 1.0, y1 + 1.0]))
            out[stem] = (frame or prev_frame, objs)
    return out


def _match_by_name(source: Path, entries: Iterable[tuple[str, T]], files: list[Path]) -> dict[Path, T]:
    """Give each image the value of the labels-file entry that names it: {file: value} for the files named.

    An entry whose name (a file name, or a path: only its last part counts) is an image's full file name
    (``a.png``) labels that image only. Otherwise an entry labels the image with its stem: a bare stem (``a``,
    Kaggle's ``ILSVRC2012_val_00000001``) or a name whose extension no image has (``a.JPEG`` for a converted
    ``a.png``). A stem that two images share (``a.png`` and ``a.jpg``) is ambiguous and refused, as are two
    entries that give one image different values.

    Raises:
        InputError: one line naming ``source``, the images and what to write instead.
    """
    names = {f.name for f in files}
    by_name: dict[str, list[tuple[str, T]]] = {}
    by_stem: dict[str, list[tuple[str, T]]] = {}
    for key, value in entries:
        name = Path(key).name
        by_name.setdefault(name, []).append((key, value))
        if name not in names:  # an entry that names an image exactly labels only that image
            for stem in {Path(name).stem, name}:
                by_stem.setdefault(stem, []).append((key, value))
    files_by_stem: dict[str, list[Path]] = {}
    for f in files:
        files_by_stem.setdefault(f.stem, []).append(f)
    out: dict[Path, T] = {}
    for f in files:
        found = by_name.get(f.name) or by_stem.get(f.stem)
        if not found:
            continue
        if f.name not in by_name and len(files_by_stem[f.stem]) > 1:
            a, b = files_by_stem[f.stem][:2]
            raise InputError(
                f"{source}: {found[0][0]!r} could label {a.name} or {b.name}, two images with the stem "
                f"{f.stem!r}; name each file with its extension ('{a.name} LABEL')"
            )
        values = {v for _, v in found}
        if len(values) > 1:
            raise InputError(
                f"{source}: {found[0][0]!r} and {found[1][0]!r} give {f.name} different labels "
                f"({found[0][1]} and {found[1][1]})"
            )
        out[f] = found[0][1]
    return out


def _read_labels_csv(path: Path, files: list[Path]) -> dict[Path, int]:
    """``labels.csv`` written by ``python -m data_download`` (file, wnid, class_index, ...) -> {file: index},
    matched by file name as ``_match_by_name`` does."""
    entries: list[tuple[str, int]] = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name = (row.get("file") or "").strip()
            if (row.get("class_index") or "").strip():
                try:
                    entries.append((name, int(row["class_index"])))
                except ValueError:
                    raise InputError(
                        f"{path}: class_index {row['class_index']!r} is not an integer"
                    ) from None
            elif (row.get("wnid") or "").strip():
                entries.append((name, _class_index(row["wnid"].strip(), str(path))))
            else:
                raise InputError(f"{path}: expected columns file and class_index (or wnid)")
    bad = sorted({v for _, v in entries if not 0 <= v < 1000})
    if bad:
        raise InputError(f"{path}: class indices must be 0..999 (timm/PyTorch order); got {bad[:5]}")
    return _match_by_name(path, entries, files)


def _read_labels_txt(path: Path, files: list[Path]) -> dict[Path, int]:
    """labels.txt: either 'name index' per line (matched by file name as ``_match_by_name`` does), or one index
    per line: line k for ILSVRC2012_val_<k> or, when the files are not so named, for the files in sorted order
    (then the file must hold exactly one line per image, so that a missing or extra image cannot shift the
    labels of the others)."""
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    named = all(len(t) == 2 for t in lines)
    try:
        if not named and not all(len(t) == 1 for t in lines):
            raise ValueError("mixed line formats")
        values = [int(t[-1]) for t in lines]
    except ValueError as e:
        raise InputError(
            f"{path}: expected one class index (0..999) per line, or 'file_name index' per line ({e})"
        ) from None
    bad = sorted({v for v in values if not 0 <= v < 1000})
    if bad:
        raise InputError(f"{path}: class indices must be 0..999 (timm/PyTorch order); got {bad[:5]}")
    if named:
        return _match_by_name(path, [(t[0], v) for t, v in zip(lines, values)], files)
    numbered = all(_VAL_NAME.search(f.name) for f in files)
    if not numbered and len(values) != len(files):
        folder = files[0].parent if files else path.parent
        raise InputError(
            f"{path} holds {len(values)} labels for the {len(files)} images in {folder}: one bare class number "
            "per line is matched to the images in sorted order, so the counts must be equal; write 'NAME LABEL' "
            "lines (e.g. 'a.png 967') to label each image by name"
        )
    labels = {}
    for k, f in enumerate(files):
        line = int(_VAL_NAME.search(f.name).group(1)) - 1 if numbered else k
        if 0 <= line < len(values):
            labels[f] = values[line]
    return labels


def _find_upwards(start: Path, name: str, levels: int = 4) -> Path | None:
    for d in [start, *list(start.parents)[:levels]]:
        if (d / name).is_file():
            return d / name
    return None


def _resolve_root(root: Path) -> Path:
    """Descend into the usual sub-folders when ``root`` holds no images itself (Kaggle, Imagenette layouts)."""
    if any(_is_image(p) for p in root.iterdir()) or any(
        d.is_dir() and _WNID.match(d.name) for d in root.iterdir()
    ):
        return root
    for sub in ("ILSVRC/Data/CLS-LOC/val", "Data/CLS-LOC/val", "val"):
        if (root / sub).is_dir():
            return root / sub
    return root


def _unique_names(files: list[Path], root: Path) -> dict[Path, str]:
    """{file: its name in the ImageSet}: the stem (``a``), or the file name (``a.png``) when two images share the
    stem (``a.png`` and ``a.jpg``), or the path below ``root`` (``n01440764/a.png``) when two class folders hold
    the same file name; names are unique, and do not depend on ``limit``."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    first = {f: f.stem if stems[f.stem] == 1 else f.name for f in files}
    counts: dict[str, int] = {}
    for n in first.values():
        counts[n] = counts.get(n, 0) + 1
    return {f: n if counts[n] == 1 else f.relative_to(root).as_posix() for f, n in first.items()}


def _refuse_shared_boxes(
    files: list[Path], root: Path, boxes_of: Callable[[Path], tuple[Path | None, Any, list]]
) -> None:
    """Boxes are matched to images by file stem (ILSVRC's ``<stem>.xml``, the CSV files' ImageId or file stem), so
    two images with one stem (``a.png`` and ``a.jpg``, or ``x.png`` in two class folders) could take the boxes
    of one box file or CSV entry. Refuse that when both would keep the same boxes from it, or any boxes from a
    file that also states the image size (an ILSVRC XML, made for one image). A box of another class than an
    image's is not kept, so a box file per class folder, or CSV rows of each image's own class, are unambiguous.

    Raises:
        InputError: one line naming the box source and two of the images.
    """
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    for stem, group in by_stem.items():
        if len(group) < 2:
            continue
        users: dict[Path, list[tuple[Path, Any, set]]] = {}
        for f in sorted(group):
            source, frame, kept = boxes_of(f)
            if source is not None and kept:
                users.setdefault(source, []).append((f, frame, {tuple(b) for b in kept}))
        for source, fs in users.items():
            # shared when two images keep the same box entries, or any from a file that also gives the size of
            # the one image it was made for (an ILSVRC XML): the other image's boxes would be scaled by it
            clash = next(
                (
                    (f1, f2)
                    for i, (f1, fr, k1) in enumerate(fs)
                    for f2, _, k2 in fs[i + 1 :]
                    if fr is not None or k1 & k2
                ),
                None,
            )
            if clash is not None:
                a, b = (f.relative_to(root).as_posix() for f in clash)
                raise InputError(
                    f"{source} gives boxes to both {a} and {b}: images are matched to their boxes by file stem, "
                    f"and these share the stem {stem!r}, so they would share its boxes or the image size they are "
                    f"given in. Rename one of "
                    f"them (and its boxes) or move it out of {root}"
                )


def _order(files: list[Path]) -> list[Path]:
    """Deterministic order. ILSVRC2012_val_* files: by file name (their classes are already mixed). Otherwise
    (class sub-folders with class-grouped names): round-robin over classes in sorted order, files sorted within
    each class, so that the first ``limit`` images span as many classes as possible."""
    if all(_VAL_NAME.search(f.name) for f in files):
        return sorted(files, key=lambda f: (f.name, str(f)))
    groups: dict[str, list[Path]] = {}
    for f in sorted(files):
        groups.setdefault(f.parent.name, []).append(f)
    keyed = [(rank, cls, f) for cls, fs in groups.items() for rank, f in enumerate(fs)]
    return [f for _, _, f in sorted(keyed, key=lambda t: (t[0], t[1], str(t[2])))]


def load_imagenet_folder(
    root: PathLike,
    size: int = 224,
    limit: int | None = None,
    boxes_dir: PathLike | None = None,
    labels_file: PathLike | None = None,
    lazy: bool = False,
) -> ImageSet:
    """An ImageNet-style validation folder as an ImageSet.

    Layouts:
        (a) class sub-folders named by WordNet id: ``root/n01440764/xxx.JPEG`` (what ``python -m data_download
            imagenet-val`` and ``... imagenette`` write, ImageNet val re-sorted by class, Imagenette's ``val/``);
            the folder gives the label.
        (b) flat ``root/ILSVRC2012_val_00000001.JPEG ...`` with a labels file: Kaggle's ``LOC_val_solution.csv``
            (``ImageId,PredictionString`` = "wnid x0 y0 x1 y1 wnid ..."), ``root/labels.csv`` (columns ``file``,
            ``class_index`` or ``wnid``) or ``root/labels.txt`` (one 0-based class index per line: line k for
            ``ILSVRC2012_val_<k>``, or for other names the images in sorted order, and then exactly one line per
            image; or "file_name index" lines). The first found of: ``labels_file`` (named explicitly),
            ``root/LOC_val_solution.csv``, ``root/labels.csv``, ``root/labels.txt``, a ``LOC_val_solution.csv``
            up to 4 folders above ``root`` (the nearest): the folder's own file wins over one above it. A name
            with its extension (``a.png``) labels that file; a bare stem (``a``, Kaggle's ImageIds) labels the
            image with that stem, and is refused when two images share it (``a.png`` and ``a.jpg``). Without a
            labels file, the classes named in ``boxes_dir``'s ILSVRC XML files are used.
        A Kaggle download root (``ILSVRC/Data/CLS-LOC/val`` inside) or a folder with ``val/`` is descended into.
        Class indices are ImageNet-1k's (timm/torchvision order, ``n01440764`` = 0): ``wnid_to_index()``.

    Boxes, in this order of precedence: ``boxes_dir`` (ILSVRC Pascal-VOC XML, ``<stem>.xml`` or
    ``<wnid>/<stem>.xml``: the official ``ILSVRC2012_bbox_val`` files, boxes in the frame of their ``<size>``),
    ``root/boxes.csv`` (data_download's: file, wnid, xmin, ymin, xmax, ymax, image_width, image_height), Kaggle's
    CSV (in ``root`` or up to 4 folders above, also when another file gives the labels). Boxes are matched by
    file stem; a box file or CSV entry whose boxes two images sharing the stem would both take is refused. Only
    boxes of the image's class are kept; ILSVRC's inclusive indices become x1/y1-exclusive pixels (xmax + 1),
    clipped to the image and scaled to S x S. An image without a box gets a (0, 4) tensor.

    Order: deterministic and shuffle-free: ILSVRC2012_val_* files by file name (so both layouts of the same
    images agree); other names round-robin over the classes (sorted), files sorted within a class, so that a
    ``limit`` spans the classes. ``limit`` keeps the first ``limit`` of that order. The images are decoded into
    memory (3 x S x S floats each, 0.6 MB at S = 224), unless ``lazy``: then ``images`` is a ``LazyImages`` that
    decodes only the files a batch indexes (an unreadable file is reported when its batch is read, or before
    it by ``unreadable_images``), and the boxes are scaled with the size read from each file's header.

    Returns:
        ImageSet: images (N, 3, S, S) in [0, 1], labels (N,), boxes (M_i, 4) in pixels of the S x S image, names
        (unique: the file stem ``a``; the file name ``a.png`` when two images share the stem, as ``a.png`` and
        ``a.jpg`` do; the path below ``root``, ``n01440764/a.png``, when two class folders hold one file name),
        sources (file paths).

    Raises:
        MissingDataError: ``root`` does not exist (the message gives the ``data_download`` command).
        InputError: no images, a missing or malformed labels file (bare class numbers that are not one per
            image, a stem that two images share), boxes that two images with one stem would share, unknown
            WordNet ids, or a bad image.
    """
    _check_size(size, allow_none=False)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"limit must be a positive int or None; got {limit!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise MissingDataError(
            f"ImageNet-style folder not found: {root}. Fetch a validation set with: {DOWNLOAD_HINT}"
        )
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    require_prepared(root)  # a folder data_download prepared must still hold every file it listed
    root = _resolve_root(root)

    bdir = Path(boxes_dir).expanduser() if boxes_dir is not None else None
    if bdir is not None and not bdir.is_dir():
        raise InputError(f"boxes_dir is not a folder: {bdir}")
    lf: Path | None = None
    if labels_file is not None:
        lf = Path(labels_file).expanduser()
        if not lf.is_file():
            raise InputError(f"labels file not found: {lf}")

    annotations: dict[str, Annotation] = {}  # from CSV files; XML files in boxes_dir take precedence
    annotated_in: dict[str, Path] = {}  # {stem: the CSV file its boxes come from}
    loc = (
        lf if lf is not None and lf.suffix.lower() == ".csv" else _find_upwards(root, "LOC_val_solution.csv")
    )
    annotations_loc: dict[str, Annotation] = {}
    if loc is not None and _csv_header(loc)[:2] == ["ImageId", "PredictionString"]:
        annotations_loc = _read_loc_csv(loc)
        annotations.update(annotations_loc)
        annotated_in.update(dict.fromkeys(annotations_loc, loc))
    else:
        loc = None
    if (root / "boxes.csv").is_file():
        from_csv = _read_boxes_csv(root / "boxes.csv")
        annotations.update(from_csv)
        annotated_in.update(dict.fromkeys(from_csv, root / "boxes.csv"))

    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _WNID.match(d.name))
    labels: dict[Path, int] = {}
    if class_dirs:  # layout (a): the folder is the label
        files = []
        for d in class_dirs:
            index = _class_index(d.name, str(d))
            for f in d.iterdir():
                if _is_image(f):
                    files.append(f)
                    labels[f] = index
        if not files:
            raise InputError(f"no images in the class folders of {root}")
    else:  # layout (b): flat files and a labels file
        files = sorted(f for f in root.iterdir() if _is_image(f))
        if not files:
            raise InputError(
                f"no images in {root}: expected class sub-folders named by WordNet id (n01440764/...) or flat "
                f"image files ({', '.join(IMAGE_EXTENSIONS)}) with a labels file"
            )
        if lf is None:  # the folder's own labels file wins over a Kaggle CSV found in a folder above
            own = next((root / n for n in ("labels.csv", "labels.txt") if (root / n).is_file()), None)
            lf = loc if loc is not None and (loc.parent == root or own is None) else own
        if lf is not None and lf == loc:
            wnid_of = _match_by_name(lf, ((k, a[1][0][0]) for k, a in annotations_loc.items() if a[1]), files)
            labels = {f: _class_index(w, f"{lf} ({f.stem})") for f, w in wnid_of.items()}
        elif lf is not None and lf.suffix.lower() == ".csv":
            labels = _read_labels_csv(lf, files)
        elif lf is not None:
            labels = _read_labels_txt(lf, files)
        elif bdir is not None:  # the ILSVRC XML files name each image's class too
            for f in files:
                if (bdir / f"{f.stem}.xml").is_file():
                    objs = parse_voc_xml(bdir / f"{f.stem}.xml")[1]
                    if objs:
                        labels[f] = _class_index(objs[0][0], str(bdir / f"{f.stem}.xml"))
        else:
            raise InputError(
                f"{root} holds {len(files)} images but no labels: put LOC_val_solution.csv (Kaggle) in it or a "
                "folder above, or labels.txt (one class index per line) in it, or pass labels_file or a "
                "boxes_dir of ILSVRC XML files"
            )
        unlabelled = [f.name for f in files if f not in labels]
        if unlabelled:
            raise InputError(
                f"{lf or bdir} gives no label for {len(unlabelled)} of the {len(files)} images, "
                f"e.g. {unlabelled[:3]}"
            )

    wnids = imagenet_wnids()

    def boxes_of(f: Path) -> tuple[Path | None, tuple[int, int] | None, list[list[float]]]:
        """(the file f's boxes come from, or None; the (H, W) of their frame or None; the boxes of f's class)."""
        wnid = wnids[labels[f]]
        frame, objs = annotations.get(f.stem, (None, []))
        source = annotated_in.get(f.stem)
        if bdir is not None:
            xml = next(
                (c for c in (bdir / f"{f.stem}.xml", bdir / wnid / f"{f.stem}.xml") if c.is_file()), None
            )
            if xml is not None:
                (frame, objs), source = parse_voc_xml(xml), xml
        return source, frame, [b for name, b in objs if name == wnid]

    # all files, not only the first ``limit``: with a limit, the one image kept could take the other's boxes
    _refuse_shared_boxes(files, root, boxes_of)
    unique = _unique_names(files, root)
    files = _order(files)
    if limit is not None:
        files = files[:limit]

    images, out_boxes, names, sources = [], [], [], []
    unreadable: list[tuple[Path, str]] = []  # lazy: every header that cannot be read, listed in one error
    for f in files:
        x = None if lazy else _read(f)
        _, frame, kept = boxes_of(f)
        if frame is not None:
            fh, fw = frame
        elif x is not None:
            fh, fw = x.shape[-2:]
        elif kept:  # lazy: the oriented size from the header; not needed when the image has no box
            try:
                fh, fw = _oriented_size(f)
            except InputError as e:
                unreadable.append((f, str(e).removeprefix(f"cannot read {f}: ")))
                fh, fw = size, size
        else:
            fh, fw = size, size
        b = torch.tensor(kept, dtype=torch.float32).reshape(-1, 4)
        b = torch.minimum(b.clamp(min=0), torch.tensor([fw, fh, fw, fh], dtype=torch.float32))
        out_boxes.append(scale_boxes(b, (fh, fw), (size, size)))
        if x is not None:
            images.append(resize(x, size))
        names.append(unique[f])
        sources.append(str(f))
    if unreadable:
        raise InputError(unreadable_message(unreadable, len(files)))
    return ImageSet(
        images=LazyImages(files, size) if lazy else torch.stack(images),
        labels=torch.tensor([labels[f] for f in files], dtype=torch.long),
        boxes=out_boxes,
        names=names,
        sources=sources,
    )
