"""Turning archives into the folders the library reads: only what is needed, with labels and splits.

Every preparation builds its folder under a temporary name and renames it into place when complete, so a data
set folder is either absent or whole. Each finished folder holds ``.complete.json`` (what was used, the split
rule, every file with its size and SHA-256), which ``LIST`` reads to say whether the data set is ready.

Layouts (``<datasets>`` is ``opticam_lib.paths.datasets_dir()``):

- ``<datasets>/imagenette/<wnid>/*.JPEG`` + ``labels.csv`` (Imagenette's val split only).
- ``<datasets>/imagenet-val/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` + ``labels.csv``, ``boxes.csv``, ``subset.txt``.
- ``<datasets>/chest-xray/{train,val,test}/{NORMAL,PNEUMONIA}/*`` + ``splits.csv``, ``classes.json``.
- ``<datasets>/kvasir/{train,val,test}/<class>/*.jpg`` + ``splits.csv``, ``classes.json``.

``labels.csv`` columns: ``file`` (relative to the folder), ``wnid``, ``class_index`` (ImageNet-1k index 0-999, the
order of torchvision and timm), ``class_name``. ``splits.csv``: ``file``, ``split``, ``class_name``,
``class_index``. ``boxes.csv``: ``file``, ``wnid``, ``xmin``, ``ymin``, ``xmax``, ``ymax`` (pixels of the original
image, as in the ILSVRC annotations), ``image_width``, ``image_height`` (empty when unknown).

Subsets and splits are chosen by ranking names by a salted SHA-256 (``rank_key``): the same on every machine and
every Python version, with no random generator involved.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import hashlib
import importlib.util
import json
import lzma
import math
import os
import re
import shutil
import tarfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .errors import DamagedArchiveError, DataDownloadError, ManualStepRequired, WrongArchiveError
from .fetch import hash_file

MARKER = ".complete.json"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

IMAGENET_VAL_SIZE = 50_000
IMAGENET_SUBSET_SALT = "opticam-imagenet-val-v1"
CHEST_CLASSES = ("NORMAL", "PNEUMONIA")
CHEST_VAL_PER_CLASS = 8
CHEST_SALT = "opticam-chest-xray-v1"
KVASIR_CLASSES = (
    "dyed-lifted-polyps",
    "dyed-resection-margins",
    "esophagitis",
    "normal-cecum",
    "normal-pylorus",
    "normal-z-line",
    "polyps",
    "ulcerative-colitis",
)
KVASIR_SALT = "opticam-kvasir-v1"
KVASIR_VAL_FRACTION = 0.125
KVASIR_TEST_FRACTION = 0.125

#: a plain file name: starts with a letter, digit or underscore and ends with one (or a bracket, plus or dash), so no
#: leading or trailing blank or dot ("a.JPEG " would be a second file beside "a.JPEG")
_SAFE_BASENAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.()+ -]*[A-Za-z0-9_()+-])?$")
_VAL_ID = re.compile(r"ILSVRC2012_val_(\d{8})")

Log = Callable[[str], None]


def rank_key(salt: str, name: str) -> str:
    """The sort key of ``name`` in reproducible subsets and splits: ``sha256(f"{salt}:{name}")`` in hex."""
    return hashlib.sha256(f"{salt}:{name}".encode()).hexdigest()


def imagenet_subset_ids(n: int | None, total: int = IMAGENET_VAL_SIZE) -> list[int]:
    """The paper-style validation subset: the ``n`` ids in 1..total with the smallest ``rank_key``, sorted.

    ``n=None`` (or ``n >= total``) gives every id. With the defaults this is the 1,000-image subset.
    """
    ids = range(1, total + 1)
    if n is None or n >= total:
        return list(ids)
    if n < 1:
        raise ValueError(f"subset size must be positive, got {n}")
    return sorted(sorted(ids, key=lambda i: rank_key(IMAGENET_SUBSET_SALT, str(i)))[:n])


def val_file_name(image_id: int) -> str:
    """``1`` -> ``"ILSVRC2012_val_00000001.JPEG"``."""
    return f"ILSVRC2012_val_{image_id:08d}.JPEG"


# ----------------------------------------------------------------------------------------------------------------
# ImageNet class indices


def _timm_info_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("timm")  # finds the package without importing it (and torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    return path if path.is_file() else None


def imagenet_classes() -> list[tuple[str, str]]:
    """The 1,000 ImageNet-1k classes in index order: (WordNet id, short name), e.g. (``"n01440764"``, ``"tench"``).

    Read from the metadata files timm ships (the order torchvision and timm use: sorted WordNet ids), without
    importing timm or torch.
    """
    synsets = _timm_info_file("imagenet_synsets.txt")
    lemmas = _timm_info_file("imagenet_synset_to_lemma.txt")
    if synsets is not None and lemmas is not None:
        wnids = synsets.read_text().split()
        names = dict(line.split("\t", 1) for line in lemmas.read_text().splitlines() if "\t" in line)
        return [(w, names.get(w, w).split(",")[0].strip()) for w in wnids]
    raise DataDownloadError(
        "the ImageNet class list is read from the metadata files timm ships (data/_info/imagenet_synsets.txt); "
        "install timm: pip install timm"
    )


def _wnid_index() -> dict[str, tuple[int, str]]:
    return {w: (i, name) for i, (w, name) in enumerate(imagenet_classes())}


# ----------------------------------------------------------------------------------------------------------------
# Reading archives and folders


@dataclass
class Entry:
    """A regular file inside an archive or a folder: its path (``/``-separated) and a way to open it."""

    name: str
    open: Callable[[], IO[bytes]]

    @property
    def parts(self) -> list[str]:
        return [p for p in self.name.replace("\\", "/").split("/") if p not in ("", ".")]


#: extraction caps for an archive of S bytes: at most 2 S + 64 MiB in all, and 64 MiB per member (the data sets
#: here are JPEG/PNG images, which do not compress: a member much larger, or a total much above S, is a bomb)
MAX_MEMBER_BYTES = 64 << 20
TOTAL_SLACK_BYTES = 64 << 20


#: what the standard library raises on an archive cut short or corrupted (an ``OSError`` only without an errno:
#: ``gzip.BadGzipFile``, bz2's "Invalid data stream"; a real I/O error has an errno and is not the archive's fault)
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


def damaged_message(source: Path, reason: str) -> str:
    """``"<file> is damaged or incomplete (<reason>): delete it and download it again"``."""
    return f"{source} is damaged or incomplete ({reason}): delete it and download it again"


@contextlib.contextmanager
def reading_archive(source: Path) -> Iterator[None]:
    """Turn the errors of a truncated or corrupt archive into ``DamagedArchiveError`` (no traceback)."""
    try:
        yield
    except _ARCHIVE_ERRORS as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise DamagedArchiveError(damaged_message(source, reason), path=source, reason=reason) from e


class _Capped:
    """A file object that refuses to yield more than its member's and the archive's remaining allowance."""

    def __init__(self, raw: IO[bytes], name: str, budget: dict[str, int], source: Path) -> None:
        self.raw, self.name, self.budget, self.source, self.read_here = raw, name, budget, source, 0

    def read(self, n: int = -1) -> bytes:
        with reading_archive(self.source):
            data = self.raw.read(n if n is not None and n >= 0 else MAX_MEMBER_BYTES + 1)
        self.read_here += len(data)
        self.budget["left"] -= len(data)
        if self.read_here > MAX_MEMBER_BYTES:
            raise WrongArchiveError(
                f"{self.source}: the member {self.name} unpacks to more than {MAX_MEMBER_BYTES >> 20} MiB: refused "
                "(not an image of this data set; a damaged or malicious archive?)",
                path=self.source,
            )
        if self.budget["left"] < 0:
            raise WrongArchiveError(
                f"{self.source} unpacks to more than {self.budget['cap'] >> 20} MiB, twice its own size: refused "
                "(a damaged or malicious archive?)",
                path=self.source,
            )
        return data

    def __enter__(self) -> _Capped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()


def iter_entries(source: Path) -> Iterator[Entry]:
    """The regular files of a folder, a zip or a tar (any compression), in archive order.

    For tar archives the entries are streamed: read each one before asking for the next. An archive's members
    are read through caps (``MAX_MEMBER_BYTES`` each, 2 x the archive's size + ``TOTAL_SLACK_BYTES`` in all).

    Raises:
        DamagedArchiveError: ``source`` is a file but no readable zip or tar, or it is cut short or corrupt (when
            listed or when a member is read).
        DataDownloadError: ``source`` is neither a file nor a folder, or it unpacks to more than its caps.
    """
    source = Path(source)
    if source.is_file():
        cap = 2 * source.stat().st_size + TOTAL_SLACK_BYTES
        budget = {"cap": cap, "left": cap}
        entries = _iter_archive(source)
        try:
            while True:
                with reading_archive(source):
                    entry = next(entries, None)
                if entry is None:
                    return
                yield Entry(entry.name, _capped_opener(entry, budget, source))
        finally:
            entries.close()
    yield from _iter_archive(source)


def _capped_opener(entry: Entry, budget: dict[str, int], source: Path) -> Callable[[], IO[bytes]]:
    """How to open ``entry`` of archive ``source``: through the caps, its read errors made ``DamagedArchiveError``."""

    def opener() -> IO[bytes]:
        with reading_archive(source):
            raw = entry.open()
        return _Capped(raw, entry.name, budget, source)  # type: ignore[return-value]

    return opener


def _iter_archive(source: Path) -> Iterator[Entry]:
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for f in sorted(files):
                p = Path(root) / f
                yield Entry(p.relative_to(source).as_posix(), lambda p=p: open(p, "rb"))
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield Entry(info.filename, lambda info=info: zf.open(info))
    elif source.is_file() and tarfile.is_tarfile(source):
        yield from _iter_tar(source)
    elif source.is_file():
        reason = "not a zip or tar archive that can be read"
        raise DamagedArchiveError(damaged_message(source, reason), path=source, reason=reason)
    else:
        raise DataDownloadError(f"{source} is not a folder, a zip or a tar archive")


#: (magic bytes, opener) of the compressions a tar may come in; the standard library's readers notice a stream
#: cut short (``EOFError``) and a wrong CRC, which ``tarfile``'s own stream mode does not
_COMPRESSIONS: tuple[tuple[bytes, Callable[..., IO[bytes]]], ...] = (
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
)


class _Counting:
    """A read-only stream that counts the bytes read through it (the tar's uncompressed length)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def drain(self) -> int:
        """Read to the end (where a compressed stream checks its length and CRC); returns the total length."""
        while self.read(1 << 20):
            pass
        return self.count


def _open_decompressed(source: Path) -> IO[bytes]:
    with open(source, "rb") as f:
        head = f.read(8)
    for magic, opener in _COMPRESSIONS:
        if head.startswith(magic):
            return opener(source, "rb")
    return open(source, "rb")


def _iter_tar(source: Path) -> Iterator[Entry]:
    """The members of a tar (any compression), streamed; a tar cut short raises ``tarfile.ReadError``.

    ``tarfile`` ends quietly at a missing or cut header, so a tar cut between two members would look complete:
    the end-of-archive block (512 zero bytes) must be there, and a compressed stream must be whole.
    """
    with _open_decompressed(source) as raw:
        stream = _Counting(raw)
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                if member.isfile():
                    yield Entry(member.name, lambda m=member: tf.extractfile(m))  # type: ignore[return-value]
            end = tf.offset
        total = stream.drain()
    if total < end + tarfile.BLOCKSIZE:
        raise tarfile.ReadError(
            f"it ends at byte {total:,} of its tar stream, before the end-of-archive block"
        )


def _is_junk(parts: Sequence[str]) -> bool:
    return any(p.startswith("__MACOSX") for p in parts) or not parts or parts[-1].startswith(".")


def _safe_basename(name: str) -> str:
    if not _SAFE_BASENAME.match(name) or name in (".", ".."):
        raise DataDownloadError(f"refusing an archive member with an unusual file name: {name!r}")
    return name


def _write_entry(entry: Entry, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with entry.open() as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


# ----------------------------------------------------------------------------------------------------------------
# Building a folder atomically, and its completion marker


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final``, on failure it is deleted.

    The swap is two renames (``final`` aside, the new folder in); if the second fails, the old folder is put
    back, so a failure never leaves the data set missing. Leftovers of a process that was killed
    (``.NAME.partial-*``, ``.NAME.old-*``) are removed on the next build; an ``.old-*`` left while ``final`` is
    missing is the previous data set and is put back first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for old_copy in sorted(final.parent.glob(f".{final.name}.old-*")):
        if not final.exists():
            os.replace(old_copy, final)  # a swap cut between its two renames: the good folder comes back
        else:
            shutil.rmtree(old_copy, ignore_errors=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.partial-{os.getpid()}")
    tmp.mkdir()
    try:
        yield tmp
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        had_old = final.exists()
        if had_old:
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if had_old:
                os.replace(old, final)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


def write_marker(folder: Path, item: str, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/.complete.json``: ``info`` plus every file (but the marker) with its size and SHA-256."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MARKER:
            files[p.relative_to(folder).as_posix()] = [p.stat().st_size, hash_file(p).sha256]
    marker = {
        "item": item,
        "prepared_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
        "files": files,
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return marker


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a prepared folder, or None when the folder is absent or incomplete, or when its
    marker is damaged (not readable JSON, not an object, or without a ``files`` object of ``[size, sha256]``
    entries: ``(folder / MARKER).exists()`` tells that case apart)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_bytes().decode("utf-8"))
    except (OSError, ValueError):  # absent, unreadable, not UTF-8 (UnicodeDecodeError), not JSON
        return None
    return marker if _valid_marker(marker) else None


def _valid_marker(marker: Any) -> bool:
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return False
    for rel, entry in marker["files"].items():
        if not isinstance(entry, list) or len(entry) != 2:
            return False
        size, digest = entry
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or not isinstance(digest, str):
            return False
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            return False
    return True


def check_image_count(marker: dict[str, Any], expected: int | None, source: Path) -> None:
    """Fail when a prepared folder holds fewer than 95 % of the images the manifest expects."""
    found = _image_count(marker)
    if expected is not None and found < 0.95 * expected:
        raise WrongArchiveError(
            f"{source} gave {found:,} images where the data set has {expected:,}: it is not the archive the "
            "manifest describes (a partial or different download?)",
            path=source,
        )


def check_folder(folder: Path, *, deep: bool = False) -> str | None:
    """None when ``folder`` holds every file its marker lists (same size; same SHA-256 if ``deep``), else why not."""
    marker = read_marker(folder)
    if marker is None:
        if (Path(folder) / MARKER).exists():
            return f"its record of the files, {MARKER}, cannot be read"
        return "not prepared"
    for rel, (size, digest) in marker["files"].items():
        p = Path(folder) / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel} has changed size"
        if deep and hash_file(p).sha256 != digest:
            return f"{rel} has changed content"
    return None


def _image_count(marker: dict[str, Any]) -> int:
    return sum(1 for rel in marker.get("files", {}) if rel.lower().endswith(IMAGE_EXTENSIONS))


def describe_marker(marker: dict[str, Any]) -> str:
    """A short phrase for LIST: ``"3,925 images"`` or ``"5,856 images (train 5,216, val 16, test 624)"``."""
    counts = marker.get("counts")
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        counts = {}
    text = f"{_image_count(marker):,} images"
    if counts:
        text += " (" + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")"
    return text


# ----------------------------------------------------------------------------------------------------------------
# Imagenette


def prepare_imagenette(
    source: Path, out: Path, *, item: str = "imagenette", expected_images: int | None = None, log: Log = print
) -> dict[str, Any]:
    """Extract only the val split of Imagenette (``.../val/<wnid>/<file>``) to ``out/<wnid>/<file>``; labels.csv.

    ``source``: ``imagenette2-320.tgz`` (or any Imagenette archive or extracted folder).

    Raises:
        DataDownloadError: no val images found, or a folder that is not an ImageNet WordNet id.
    """
    index = _wnid_index()
    rows = []
    seen: set[str] = set()
    duplicates = 0
    with building(out) as tmp:
        for entry in iter_entries(source):
            parts = entry.parts
            if _is_junk(parts) or len(parts) < 3 or parts[-3] != "val":
                continue
            wnid, name = parts[-2], _safe_basename(parts[-1])
            if wnid not in index:
                raise WrongArchiveError(
                    f"{source}: {entry.name} is not in a WordNet-id folder of ImageNet-1k", path=source
                )
            rel = f"{wnid}/{name}"
            if rel in seen:  # the same image twice (under two top folders): the first copy is kept
                duplicates += 1
                continue
            seen.add(rel)
            _write_entry(entry, tmp / wnid / name)
            rows.append((rel, wnid, *index[wnid]))
        if not rows:
            raise WrongArchiveError(
                f"{source} holds no val/<wnid>/ images: is it an Imagenette archive?", path=source
            )
        rows.sort()
        _write_csv(tmp / "labels.csv", ("file", "wnid", "class_index", "class_name"), rows)
        marker = write_marker(
            tmp,
            item,
            {"counts": {"val": len(rows)}, "rule": "the val split of Imagenette, folders are WordNet ids"},
        )
        check_image_count(marker, expected_images, source)
    again = f" ({duplicates:,} duplicate archive members skipped)" if duplicates else ""
    log(f"{item}: {len(rows):,} val images in {len({r[1] for r in rows})} classes -> {out}{again}")
    return marker


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet validation


@dataclass
class ValAnnotation:
    """Label and boxes of one validation image: WordNet id, boxes (xmin, ymin, xmax, ymax), image size."""

    wnid: str
    boxes: list[tuple[int, int, int, int]]
    width: int | None = None
    height: int | None = None


def read_bbox_archive(source: Path, wanted: set[int] | None = None) -> dict[int, ValAnnotation]:
    """Labels and boxes from ``ILSVRC2012_bbox_val_v3.tgz`` (one VOC-style XML per image), or a folder of them.

    Raises:
        DamagedArchiveError: a member is not well-formed XML (cut short?); the message names it.
        WrongArchiveError: a member's box or image size is not a number.
    """
    out: dict[int, ValAnnotation] = {}
    for entry in iter_entries(source):
        m = re.search(r"ILSVRC2012_val_(\d{8})\.xml$", entry.name)
        if not m or (wanted is not None and int(m.group(1)) not in wanted):
            continue
        with entry.open() as f:
            try:
                root = ET.parse(f).getroot()
            except (ET.ParseError, LookupError, UnicodeError) as e:  # LookupError: unknown declared encoding
                reason = f"its member {entry.name} is not well-formed XML: {e}"
                raise DamagedArchiveError(
                    damaged_message(source, reason), path=source, reason=reason
                ) from None
        try:
            note = _annotation_from_xml(root)
        except (ValueError, OverflowError) as e:
            raise WrongArchiveError(
                f"{source}: its member {entry.name} is not an ImageNet annotation ({e})", path=source
            ) from None
        if note is not None:
            out[int(m.group(1))] = note
    return out


def _number(text: str | None, what: str) -> int:
    """``"12.0"`` -> 12 (absent: 0); ValueError naming ``what`` for anything else (text, nan, inf)."""
    try:
        value = float(text if text is not None else "0")
        if not math.isfinite(value):
            raise ValueError
    except ValueError:
        raise ValueError(f"{what} is {text!r}, not a number") from None
    return int(value)


def _annotation_from_xml(root: ET.Element) -> ValAnnotation | None:
    objects = root.findall("object")
    if not objects:
        return None
    boxes = []
    for obj in objects:
        b = obj.find("bndbox")
        if b is not None:
            boxes.append(tuple(_number(b.findtext(k), k) for k in ("xmin", "ymin", "xmax", "ymax")))
    size = root.find("size")
    width = _number(size.findtext("width"), "width") if size is not None else 0
    height = _number(size.findtext("height"), "height") if size is not None else 0
    return ValAnnotation(
        wnid=(objects[0].findtext("name") or "").strip(),
        boxes=boxes,  # type: ignore[arg-type]
        width=width or None,
        height=height or None,
    )


def read_loc_solution(source: Path, wanted: set[int] | None = None) -> dict[int, ValAnnotation]:
    """Labels and boxes from Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``: wnid x1 y1 x2 y2 ...).

    Raises:
        WrongArchiveError: the file is not UTF-8 CSV text, or a box coordinate is not a number; the message names
            the file and the line.
    """
    out: dict[int, ValAnnotation] = {}
    reader: csv.DictReader[str] | None = None
    try:
        with open(source, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            for row in reader:
                m = _VAL_ID.search(row.get("ImageId") or "")
                if not m or (wanted is not None and int(m.group(1)) not in wanted):
                    continue
                tokens = (row.get("PredictionString") or "").split()
                groups = [tokens[i : i + 5] for i in range(0, len(tokens) - 4, 5)]
                if not groups:
                    continue
                boxes = [tuple(_number(v, "a box coordinate") for v in g[1:5]) for g in groups]
                out[int(m.group(1))] = ValAnnotation(wnid=groups[0][0], boxes=boxes)  # type: ignore[arg-type]
    except UnicodeDecodeError:
        raise WrongArchiveError(
            f"{source} is not UTF-8 text: it is not Kaggle's LOC_val_solution.csv", path=source
        ) from None
    except (ValueError, csv.Error) as e:  # csv.Error: a NUL byte, a field too long
        line = reader.line_num if reader is not None else 1
        raise WrongArchiveError(
            f"{source}, line {line}: {e}: it is not Kaggle's LOC_val_solution.csv", path=source
        ) from None
    return out


def _image_size(path: Path) -> tuple[int | None, int | None]:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency of the project
        return None, None
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None, None


def prepare_imagenet_val(
    images: Path,
    out: Path,
    *,
    annotations: Path | None = None,
    subset: int | None = 1000,
    total: int = IMAGENET_VAL_SIZE,
    item: str = "imagenet-val",
    log: Log = print,
) -> dict[str, Any]:
    """Extract the chosen validation images into ``out/<wnid>/``, with labels.csv, boxes.csv and subset.txt.

    Args:
        images: ``ILSVRC2012_img_val.tar``, Hugging Face's ``val_images.tar.gz`` (names carry the WordNet id), or
            a folder holding ``ILSVRC2012_val_XXXXXXXX.JPEG`` files.
        annotations: ``ILSVRC2012_bbox_val_v3.tgz`` (or a folder of its XML files) or ``LOC_val_solution.csv``;
            required unless the image names carry the WordNet id.
        subset: how many images (``imagenet_subset_ids``); None for all.
        total: number of validation ids (50,000; smaller only in tests).

    Raises:
        ManualStepRequired: no labels available.
        DataDownloadError: some chosen images are not in ``images``.
    """
    ids = imagenet_subset_ids(subset, total)
    wanted = set(ids)
    notes: dict[int, ValAnnotation] = {}
    if annotations is not None:
        if annotations.name.lower().endswith(".csv"):
            notes = read_loc_solution(annotations, wanted)
        else:
            notes = read_bbox_archive(annotations, wanted)
        log(f"{item}: labels and boxes of {len(notes):,} chosen images read from {annotations.name}")
    index = _wnid_index()
    found: dict[int, str] = {}
    with building(out) as tmp:
        for entry in iter_entries(images):
            base = entry.parts[-1] if entry.parts else ""
            m = re.fullmatch(r"ILSVRC2012_val_(\d{8})(?:_(n\d{8}))?\.JPEG", base)
            if not m or int(m.group(1)) not in wanted:
                continue
            image_id = int(m.group(1))
            wnid = m.group(2) or (notes[image_id].wnid if image_id in notes else None)
            if wnid is None:
                if annotations is None:
                    raise ManualStepRequired(
                        f"{images.name} does not carry labels: also pass the annotations, "
                        "--from ILSVRC2012_bbox_val_v3.tgz or --from LOC_val_solution.csv"
                    )
                raise DataDownloadError(f"{annotations} has no label for {base}")
            if wnid not in index:
                raise DataDownloadError(f"{base}: {wnid!r} is not an ImageNet-1k WordNet id")
            _write_entry(entry, tmp / wnid / val_file_name(image_id))
            found[image_id] = wnid
        missing = [i for i in ids if i not in found]
        if missing:
            raise DataDownloadError(
                f"{images} lacks {len(missing):,} of the {len(ids):,} chosen images (first: "
                f"{val_file_name(missing[0])}): is it the complete ILSVRC2012 validation set?"
            )
        labels, boxes = [], []
        for image_id in ids:
            wnid = found[image_id]
            rel = f"{wnid}/{val_file_name(image_id)}"
            labels.append((rel, wnid, *index[wnid]))
            ann = notes.get(image_id)
            if ann is not None:
                width, height = ann.width, ann.height
                if width is None:
                    width, height = _image_size(tmp / rel)
                for box in ann.boxes:
                    boxes.append((rel, wnid, *box, width or "", height or ""))
        _write_csv(tmp / "labels.csv", ("file", "wnid", "class_index", "class_name"), labels)
        _write_csv(
            tmp / "boxes.csv",
            ("file", "wnid", "xmin", "ymin", "xmax", "ymax", "image_width", "image_height"),
            boxes,
        )
        (tmp / "subset.txt").write_text("".join(val_file_name(i) + "\n" for i in ids))
        rule = (
            f"the {len(ids):,} ids in 1..{total} with the smallest sha256('{IMAGENET_SUBSET_SALT}:<id>')"
            if len(ids) < total
            else "all validation images"
        )
        marker = write_marker(
            tmp,
            item,
            {
                "counts": {"val": len(ids)},
                "subset": len(ids),
                "total": total,
                "rule": rule,
                "boxes": len(boxes),
            },
        )
    log(f"{item}: {len(ids):,} images, {len(boxes):,} boxes -> {out}")
    return marker


# ----------------------------------------------------------------------------------------------------------------
# Medical data sets (appendix E)


def _write_split_files(tmp: Path, classes: Sequence[str], rule: str, item: str) -> dict[str, Any]:
    rows, counts = [], {}
    for split in ("train", "val", "test"):
        n = 0
        for ci, cls in enumerate(classes):
            folder = tmp / split / cls
            for p in sorted(folder.iterdir()) if folder.is_dir() else []:
                rows.append((f"{split}/{cls}/{p.name}", split, cls, ci))
                n += 1
        counts[split] = n
    _write_csv(tmp / "splits.csv", ("file", "split", "class_name", "class_index"), rows)
    (tmp / "classes.json").write_text(json.dumps(list(classes)) + "\n")
    return write_marker(tmp, item, {"counts": counts, "rule": rule, "classes": list(classes)})


def prepare_chest_xray(
    source: Path,
    out: Path,
    *,
    item: str = "chest-xray",
    val_per_class: int = CHEST_VAL_PER_CLASS,
    expected_images: int | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Chest X-ray (Kermany et al.) into ``out/{train,val,test}/{NORMAL,PNEUMONIA}/`` with splits.csv.

    ``source``: Mendeley's ``ChestXRay2017.zip`` (train/test), Kaggle's archive (train/val/test, with duplicated
    folders that are skipped) or an extracted folder. An archive with a val split keeps it; otherwise val is the
    ``val_per_class`` train images per class with the smallest ``rank_key(CHEST_SALT, "<class>/<file>")``.
    """
    seen: set[tuple[str, str, str]] = set()
    with building(out) as tmp:
        for entry in iter_entries(source):
            parts = entry.parts
            if _is_junk(parts) or len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                continue
            split, cls = parts[-3].lower(), parts[-2].upper()
            if split not in ("train", "val", "test") or cls not in CHEST_CLASSES:
                continue
            key = (split, cls, _safe_basename(parts[-1]))
            if key in seen:
                continue  # Kaggle's archive holds the data set twice
            seen.add(key)
            _write_entry(entry, tmp / split / cls / parts[-1])
        if not seen:
            raise WrongArchiveError(
                f"{source} holds no {{train,test}}/{{NORMAL,PNEUMONIA}}/ images", path=source
            )
        if any(k[0] == "val" for k in seen):
            rule = "the archive's own train/val/test split (Kaggle)"
        else:
            for cls in CHEST_CLASSES:
                names = sorted(k[2] for k in seen if k[0] == "train" and k[1] == cls)
                chosen = sorted(names, key=lambda n, c=cls: rank_key(CHEST_SALT, f"{c}/{n}"))[:val_per_class]
                for name in chosen:
                    (tmp / "val" / cls).mkdir(parents=True, exist_ok=True)
                    os.replace(tmp / "train" / cls / name, tmp / "val" / cls / name)
            rule = (
                f"archive train/test; val = the {val_per_class} train images per class with the smallest "
                f"sha256('{CHEST_SALT}:<class>/<file>')"
            )
        marker = _write_split_files(tmp, CHEST_CLASSES, rule, item)
        check_image_count(marker, expected_images, source)
    log(f"{item}: {describe_marker(marker)} -> {out}")
    return marker


def prepare_kvasir(
    source: Path,
    out: Path,
    *,
    item: str = "kvasir",
    val_fraction: float = KVASIR_VAL_FRACTION,
    test_fraction: float = KVASIR_TEST_FRACTION,
    expected_images: int | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Kvasir v2 into ``out/{train,val,test}/<class>/`` with splits.csv (no official split exists).

    In each class, files ranked by ``rank_key(KVASIR_SALT, "<class>/<file>")``: the first ``val_fraction`` are
    val, the next ``test_fraction`` test, the rest train (750/125/125 of each class's 1,000 images).
    """
    seen: dict[str, set[str]] = {c: set() for c in KVASIR_CLASSES}
    with building(out) as tmp:
        for entry in iter_entries(source):
            parts = entry.parts
            if _is_junk(parts) or len(parts) < 2 or not parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                continue
            cls, name = parts[-2], _safe_basename(parts[-1])
            if cls not in seen or name in seen[cls]:
                continue
            seen[cls].add(name)
            _write_entry(entry, tmp / "train" / cls / name)
        if not any(seen.values()):
            raise WrongArchiveError(
                f"{source} holds no Kvasir class folders ({', '.join(KVASIR_CLASSES)})", path=source
            )
        empty = [c for c, names in seen.items() if not names]
        if empty:
            raise WrongArchiveError(f"{source} lacks the Kvasir classes {', '.join(empty)}", path=source)
        for cls, names in seen.items():
            ranked = sorted(names, key=lambda n, c=cls: rank_key(KVASIR_SALT, f"{c}/{n}"))
            n_val, n_test = round(len(ranked) * val_fraction), round(len(ranked) * test_fraction)
            for split, chosen in (("val", ranked[:n_val]), ("test", ranked[n_val : n_val + n_test])):
                (tmp / split / cls).mkdir(parents=True, exist_ok=True)
                for name in chosen:
                    os.replace(tmp / "train" / cls / name, tmp / split / cls / name)
        rule = (
            f"per class, files ranked by sha256('{KVASIR_SALT}:<class>/<file>'): first {val_fraction:.1%} val, "
            f"next {test_fraction:.1%} test, rest train"
        )
        marker = _write_split_files(tmp, KVASIR_CLASSES, rule, item)
        check_image_count(marker, expected_images, source)
    log(f"{item}: {describe_marker(marker)} -> {out}")
    return marker
