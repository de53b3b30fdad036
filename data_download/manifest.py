"""The manifest: every file ``data_download`` knows, where it comes from and how it is checked.

The default manifest is ``data_download/manifest.json``. Tests and mirrors pass their own
(``load_manifest(path)`` or ``python -m data_download --manifest FILE``).

Checksums: ``sha256`` and ``md5`` cover the whole file; ``sha256_prefix`` is the part of the SHA-256 a publisher
put in the file name (torchvision). ``null`` means not published (or not confirmed): the SHA-256 is then recorded
on first download and later copies are checked against it (see ``fetch.State``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ManifestError

DEFAULT_MANIFEST = Path(__file__).with_name("manifest.json")

KINDS = ("weights", "dataset")
PREPARERS = ("imagenette", "imagenet-val", "chest-xray", "kvasir")

_HEX = re.compile(r"^[0-9a-f]+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class FileSpec:
    """One file of an item.

    Attributes:
        name: local file name (``.part`` downloads and hand copies use it); a plain name, no folders.
        urls: mirrors tried in order; empty for files only the user can provide (``--from``).
        size: exact size in bytes, or None when not published.
        sha256: full SHA-256 (64 hex digits, lower case), or None.
        md5: full-file MD5 (32 hex digits), or None.
        sha256_prefix: leading hex digits of the SHA-256 a publisher put in the file name, or None.
        checksum_source: who published the numbers above (shown by LIST).
        url_confirmed: False when the URL could not be confirmed (LIST says so).
        approx_size: a size shown to the user when ``size`` is None; never enforced.
        role: what the file is for, for items that take several alternative files (``images``, ``boxes``).
    """

    name: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    sha256_prefix: str | None = None
    checksum_source: str = ""
    url_confirmed: bool = True
    approx_size: int | None = None
    role: str | None = None

    @property
    def has_published_checksum(self) -> bool:
        """True when a full-file checksum (SHA-256 or MD5) is in the manifest."""
        return self.sha256 is not None or self.md5 is not None

    def describe_checksum(self) -> str:
        """A short phrase for LIST: which checksum is checked."""
        parts = []
        if self.sha256:
            parts.append(f"sha256 {self.sha256[:12]}…")
        elif self.sha256_prefix:
            parts.append(f"sha256 prefix {self.sha256_prefix}")
        if self.md5:
            parts.append(f"md5 {self.md5[:12]}…")
        if self.size is not None:
            parts.append(f"{self.size:,} bytes")
        if not self.has_published_checksum:
            when = "download" if self.urls else "use"
            return f"checksum recorded on first {when}" + (f" ({', '.join(parts)})" if parts else "")
        return "published: " + ", ".join(parts)


@dataclass(frozen=True)
class Item:
    """Something ``python -m data_download NAME`` fetches: model weights or a data set.

    Attributes:
        name: the command-line name (``resnet50``, ``imagenette``).
        kind: ``"weights"`` (one file at ``opticam_lib.models.weights_path(model)``) or ``"dataset"``
            (archives prepared into ``datasets_dir() / folder``).
        title, licence, source, homepage, notes: words for LIST and --help.
        files: the files to fetch (weights: exactly one; data sets: the archive(s), or alternatives by role).
        model: registry name in ``opticam_lib.models`` (weights only).
        target: for weights, the path relative to the cache folder where the file goes when its name there is not
            the download's (it must be the path ``weights_path(model)`` reads; a test checks it), or for files
            the library does not register (tests).
        folder: folder name under the data sets folder (data sets only).
        prepare: which preparation turns the archive into that folder (data sets only).
        manual: True when the item cannot be downloaded (the user passes ``--from``).
        images: how many images the prepared folder holds (data sets; None: not checked). A preparation that
            finds fewer than 95 % of them fails: the archive is not the one the manifest describes.
    """

    name: str
    kind: str
    title: str
    licence: str
    source: str
    files: tuple[FileSpec, ...]
    homepage: str = ""
    notes: str = ""
    model: str | None = None
    target: str | None = None
    folder: str | None = None
    prepare: str | None = None
    manual: bool = False
    images: int | None = None

    def file(self, name: str) -> FileSpec:
        """The file called ``name`` (KeyError when absent)."""
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(name)


@dataclass(frozen=True)
class Manifest:
    """All items, in the manifest's order, and where the manifest was read from."""

    items: dict[str, Item]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Item names in manifest order."""
        return list(self.items)

    def get(self, name: str) -> Item:
        """The item ``name``.

        Raises:
            ManifestError: unknown name; the message lists the known ones.
        """
        if name not in self.items:
            raise ManifestError(f"unknown item {name!r}; known items: {', '.join(self.items)}")
        return self.items[name]


def _check_hex(value: Any, length: int | None, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.match(value) or (length is not None and len(value) != length):
        what = f"{length} lower-case hex digits" if length else "lower-case hex digits"
        raise ManifestError(f"{where}: expected {what} or null, got {value!r}")
    return value


def _text(value: Any, where: str) -> str | None:
    """``value`` when it is a string or null; ``ManifestError`` naming ``where`` otherwise."""
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where} must be a string or null, got {value!r}")
    return value


def _count(value: Any, where: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ManifestError(f"{where} must be a positive integer or null, got {value!r}")
    return value


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def url_allowed(url: str) -> bool:
    """https:// anywhere; http:// only to this machine (local mirrors, tests); nothing else (file://, ftp://)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


def _parse_file(raw: Any, where: str) -> FileSpec:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: a file must be an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ManifestError(f"{where}: 'name' must be a plain file name, got {name!r}")
    urls = raw.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) and "://" in u for u in urls):
        raise ManifestError(f"{where}: 'urls' must be a list of URLs")
    for u in urls:
        if not url_allowed(u):
            raise ManifestError(
                f"{where}: {u!r} is not an https:// address (http:// only to this machine, 127.0.0.1 or "
                "localhost; file:// and ftp:// are refused)"
            )
    for key in ("size", "approx_size"):
        v = raw.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise ManifestError(f"{where}: {key!r} must be a non-negative integer or null, got {v!r}")
    sha256 = _check_hex(raw.get("sha256"), 64, f"{where}.sha256")
    prefix = _check_hex(raw.get("sha256_prefix"), None, f"{where}.sha256_prefix")
    if sha256 and prefix and not sha256.startswith(prefix):
        raise ManifestError(f"{where}: sha256 {sha256} does not start with its published prefix {prefix}")
    return FileSpec(
        name=name,
        urls=tuple(urls),
        size=raw.get("size"),
        sha256=sha256,
        md5=_check_hex(raw.get("md5"), 32, f"{where}.md5"),
        sha256_prefix=prefix,
        checksum_source=str(raw.get("checksum_source", "")),
        url_confirmed=bool(raw.get("url_confirmed", True)),
        approx_size=raw.get("approx_size"),
        role=_text(raw.get("role"), f"{where}.role"),
    )


def _parse_item(name: str, raw: Any) -> Item:
    where = f"item {name!r}"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: must be an object")
    if not _SAFE_NAME.match(name) or name.upper() == "LIST":
        raise ManifestError(f"{where}: not a valid item name")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{where}: 'kind' must be one of {KINDS}, got {kind!r}")
    files_raw = raw.get("files")
    if not isinstance(files_raw, list) or not files_raw:
        raise ManifestError(f"{where}: 'files' must be a non-empty list")
    files = tuple(_parse_file(f, f"{where}.files[{i}]") for i, f in enumerate(files_raw))
    if len({f.name for f in files}) != len(files):
        raise ManifestError(f"{where}: file names must be unique")
    item = Item(
        name=name,
        kind=kind,
        title=str(raw.get("title", name)),
        licence=str(raw.get("licence", "unknown")),
        source=str(raw.get("source", "")),
        files=files,
        homepage=str(raw.get("homepage", "")),
        notes=str(raw.get("notes", "")),
        model=_text(raw.get("model"), f"{where}.model"),
        target=_text(raw.get("target"), f"{where}.target"),
        folder=_text(raw.get("folder"), f"{where}.folder"),
        prepare=_text(raw.get("prepare"), f"{where}.prepare"),
        images=_count(raw.get("images"), f"{where}.images"),
        manual=bool(raw.get("manual", False)),
    )
    if kind == "weights":
        if len(files) != 1:
            raise ManifestError(f"{where}: a weights item has exactly one file")
        if item.model is None and item.target is None:
            raise ManifestError(f"{where}: a weights item needs 'model' (registry name) or 'target'")
        if item.target is not None and (
            Path(item.target).is_absolute() or ".." in Path(item.target).parts or not Path(item.target).parts
        ):
            raise ManifestError(f"{where}: 'target' must be a path inside the cache folder")
    else:
        if not isinstance(item.folder, str) or not _SAFE_NAME.match(item.folder):
            raise ManifestError(f"{where}: a dataset item needs 'folder', a plain folder name")
        if item.prepare not in PREPARERS:
            raise ManifestError(f"{where}: 'prepare' must be one of {PREPARERS}, got {item.prepare!r}")
    if not item.manual and not all(f.urls for f in files if f.role is None):
        raise ManifestError(f"{where}: every file needs at least one URL unless the item is 'manual'")
    return item


def parse_manifest(data: Any, path: Path | None = None) -> Manifest:
    """Check and convert a manifest already read from JSON.

    Raises:
        ManifestError: anything malformed, with the item and field named.
    """
    if not isinstance(data, dict) or not isinstance(data.get("items"), dict):
        raise ManifestError("a manifest is a JSON object with an 'items' object")
    items = {name: _parse_item(name, raw) for name, raw in data["items"].items()}
    extra = {k: v for k, v in data.items() if k != "items"}
    return Manifest(items=items, path=path, extra=extra)


def load_manifest(path: str | Path | None = None) -> Manifest:
    """Read a manifest (default: the one shipped in this package).

    Raises:
        ManifestError: the file is missing, not JSON, or malformed.
    """
    p = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {p}") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {p} is a folder, not a JSON file") from None
    except OSError as e:
        raise ManifestError(f"manifest {p} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {p} is not UTF-8 text (byte {e.start:,}): not a manifest") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest {p} is not valid JSON: {e}") from None
    return parse_manifest(data, p)
