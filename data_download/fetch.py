"""Downloading and checking one file: resume, verify before use, atomic rename, fail fast offline.

Only the standard library speaks HTTP here (``urllib``). A download goes to ``<target>.part``; an interrupted one
resumes from there with an HTTP ``Range`` request. The finished ``.part`` is checked (size, SHA-256, MD5 as the
manifest gives them) *before* it is renamed into place, so the target path only ever holds a verified file; a
``.part`` that fails the check is deleted.

Files without a published checksum are trusted on first use: their SHA-256 and size are recorded in
``<cache>/.data_download/state.json`` and every later copy is checked against them (``forget`` drops a record,
``python -m data_download ITEM --forget-recorded``). Because such a record trusts whatever arrived first, two
rules keep a wrong file from arriving: a ``.part`` is resumed only with the server's validator (ETag or
Last-Modified, kept in ``<target>.part.validator`` and sent as ``If-Range``), so a file that changed upstream is
fetched again from byte 0 instead of stitched; and a response that does not say its length is refused, since
a connection closed early could not be told from the end of the file. Nor is an HTML page (a login or error
page) ever taken for the file: a ``text/html`` answer is refused (the next mirror is tried), and every file is
checked by its leading bytes against what its name says (``format_problem``) before it is put in place or its
checksum recorded. Locks (``State.lock``) are taken on resolved absolute paths, so the same cache spelled two
ways is still one lock. The same file keeps
"verified" stamps (size + modification time + SHA-256) so that ``LIST`` can say what is verified without
hashing gigabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shlex
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from .errors import ChecksumError, DataDownloadError, FileFormatError, HTTPDownloadError, OfflineError
from .manifest import FileSpec, url_allowed

try:  # POSIX advisory locks; without them (Windows) two concurrent fetches of one file are not prevented
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None  # type: ignore[assignment]

CHUNK = 1 << 20
USER_AGENT = "opticam-data-download/1 (+https://github.com/; python-urllib)"
DEFAULT_TIMEOUT = 15.0
DEFAULT_RETRIES = 3
#: the overall time a file may take: 10 minutes plus 20 seconds per MiB of its expected size (an hour when the size
#: is not published); a server that trickles bytes cannot hold a download forever
DEADLINE_BASE_S = 600.0
DEADLINE_PER_MIB_S = 20.0
DEADLINE_UNKNOWN_S = 3600.0
STATE_DIR = ".data_download"

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def human_size(n: int | None) -> str:
    """``1536`` -> ``"1.5 KiB"``; None -> ``"unknown"``."""
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


# ----------------------------------------------------------------------------------------------------------------
# Hashing and checking


@dataclass(frozen=True)
class Digests:
    """What was measured on a file: its size in bytes, its SHA-256 and (when asked) its MD5."""

    size: int
    sha256: str
    md5: str | None = None


def hash_file(path: Path, *, md5: bool = False, progress: bool = False, desc: str | None = None) -> Digests:
    """Size, SHA-256 and optionally MD5 of ``path``, read once in 1 MiB chunks (progress bar if asked)."""
    h256 = hashlib.sha256()
    hmd5 = hashlib.md5(usedforsecurity=False) if md5 else None
    total = path.stat().st_size
    with open(path, "rb") as f, _bar(total, 0, f"checking {desc or path.name}", progress) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h256.update(chunk)
            if hmd5 is not None:
                hmd5.update(chunk)
            bar.update(len(chunk))
    return Digests(size=total, sha256=h256.hexdigest(), md5=hmd5.hexdigest() if hmd5 else None)


#: the environment variable that sets the cache folder; the library (``opticam_lib.paths``) reads the same one
CACHE_ENV_VAR = "OPTICAM_CACHE"


def default_cache() -> Path:
    """The cache folder the library reads: ``$OPTICAM_CACHE``, else ``$XDG_CACHE_HOME/opticam`` or
    ``~/.cache/opticam``, the rule of ``opticam_lib.paths.cache_dir()`` (a test checks that the two agree; this
    package does not import the torch library it serves)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "opticam"


def command_for(name: str, cache: Path | None = None) -> str:
    """The command a user runs to fetch ``name`` (with ``--cache`` when not the default cache), quoted for a POSIX
    shell (``shlex.quote``) so that it can be pasted as printed, whatever characters the cache path holds."""
    words = ["python", "-m", "data_download", name]
    if cache is not None and Path(cache) != default_cache():
        words += ["--cache", str(cache)]
    return shlex.join(words)


def check_digests(
    digests: Digests,
    spec: FileSpec,
    recorded: dict[str, Any] | None,
    what: str,
    source: str = "manifest",
    item: str | None = None,
    cache: Path | None = None,
) -> None:
    """Compare measured digests with the manifest (and, without a published SHA-256, with the recorded one).

    ``item`` and ``cache`` make the ``--forget-recorded`` command in the message exact (with ``--cache`` when
    the cache is not the default one).

    Raises:
        ChecksumError: the first mismatch, with both values and where the expected one came from.
    """
    problems = []
    if spec.size is not None and digests.size != spec.size:
        problems.append(f"its size is {digests.size:,} bytes, the {source} says {spec.size:,}")
    if spec.sha256 is not None and digests.sha256 != spec.sha256:
        problems.append(f"its SHA-256 is {digests.sha256}, the {source} says {spec.sha256}")
    elif spec.sha256 is None and spec.sha256_prefix and not digests.sha256.startswith(spec.sha256_prefix):
        problems.append(f"its SHA-256 is {digests.sha256}, the published prefix is {spec.sha256_prefix}")
    if spec.md5 is not None and digests.md5 is not None and digests.md5 != spec.md5:
        problems.append(f"its MD5 is {digests.md5}, the {source} says {spec.md5}")
    if spec.sha256 is None and recorded is not None:
        if recorded.get("sha256") != digests.sha256 or recorded.get("size") != digests.size:
            problems.append(
                f"its SHA-256 is {digests.sha256} ({digests.size:,} bytes), but the copy recorded on "
                f"{recorded.get('recorded_at', '?')} had {recorded.get('sha256')} ({recorded.get('size')} bytes). "
                "No checksum is published for it, so the first copy was trusted; if the file upstream changed and "
                f"you trust the new one, drop the record with: {command_for(item or 'ITEM', cache)} --forget-recorded"
            )
    if problems:
        raise ChecksumError(f"{what} is not the expected file: " + "; ".join(problems) + ".")


# ----------------------------------------------------------------------------------------------------------------
# Content check by file name: an HTML page or a wrong kind of file is never accepted (nor its checksum recorded)

#: how many leading bytes ``format_problem`` reads (the tar magic is at offset 257; HTML may follow blank lines)
HEAD_BYTES = 4096
_GZIP, _XZ, _BZIP2, _ZIP = b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", (b"PK\x03\x04", b"PK\x05\x06")
#: (name suffixes, magic bytes at offset 0, what the file should be); the first suffix that matches is used
_MAGIC: tuple[tuple[tuple[str, ...], tuple[bytes, ...], str], ...] = (
    ((".tar.gz", ".tgz", ".gz"), (_GZIP,), "a gzip file"),
    ((".tar.xz", ".xz"), (_XZ,), "an xz file"),
    ((".tar.bz2", ".bz2"), (_BZIP2,), "a bzip2 file"),
    ((".zip",), _ZIP, "a zip archive"),
    ((".pth", ".pt"), (*_ZIP, b"\x80"), "a PyTorch checkpoint (a zip archive or a pickle)"),
)


def _looks_like_html(head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()  # a UTF-8 byte order mark, then blank space
    return text.startswith((b"<!doctype html", b"<html"))


def _safetensors_problem(path: Path, head: bytes, size: int) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None: its header must parse and its tensors' data must
    end exactly at the end of the file (a truncated download of the right format fails here)."""
    if len(head) < 9:
        return "it is too short to be a safetensors file"
    n = int.from_bytes(head[:8], "little")
    if not 0 < n <= size - 8 or head[8:9] != b"{":
        return "it does not start with a safetensors header (8-byte length, then a JSON object)"
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its safetensors header cannot be read (not the JSON the format requires)"
    data = size - 8 - n
    if max(ends, default=0) != data:
        return (
            f"its tensors need {max(ends, default=0):,} bytes of data after the header but the file holds {data:,} "
            "(a truncated or padded file)"
        )
    return None


def format_problem(path: Path, name: str) -> str | None:
    """Why the file at ``path`` cannot be the file called ``name`` (judged by its leading bytes), or None.

    Any file that starts with ``<!doctype html`` or ``<html`` is an HTML page (a login or error page saved
    in its place). By the suffix of ``name``: ``.safetensors`` needs its header, ``.zip`` the zip magic,
    ``.pth``/``.pt`` a zip or a pickle, ``.tar`` the ustar magic, ``.gz``/``.tgz``/``.xz``/``.bz2`` their
    compressor's magic. Other suffixes get only the HTML check. ``name`` is separate from ``path`` because a
    ``.part`` file is checked under the name it will have.
    """
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    lower = name.lower()
    if _looks_like_html(head) and not lower.endswith((".html", ".htm")):
        return "it is an HTML page, not the file (a login or error page?)"
    if lower.endswith(".safetensors"):
        return _safetensors_problem(Path(path), head, Path(path).stat().st_size)
    if lower.endswith(".tar"):
        return None if head[257:262] == b"ustar" else "it is not a tar archive (no ustar header)"
    for suffixes, magics, kind in _MAGIC:
        if lower.endswith(suffixes):
            return None if head.startswith(magics) else f"it is not {kind} (it starts with {head[:8]!r})"
    return None


def check_format(path: Path, spec: FileSpec, what: str, advice: str, *, item: str, state: State) -> None:
    """Raise ``FileFormatError`` naming ``what`` (the file as the user knows it), the problem ``format_problem``
    finds and ``advice`` (what to do); nothing when the file looks right.

    A checksum recorded on first use for exactly this bad file (by a version without this check) is forgotten,
    so that the real file is accepted later; the message says so.
    """
    problem = format_problem(path, spec.name)
    if problem is not None:
        note = _forget_bad_record(path, spec, item, state)
        raise FileFormatError(f"{what} is not the expected file {spec.name}: {problem}. {advice}{note}")


def _forget_bad_record(path: Path, spec: FileSpec, item: str, state: State) -> str:
    """Forget the first-use record of ``spec`` if it is the checksum of the bad file ``path``; a note or ""."""
    recorded = state.recorded(item, spec.name) if spec.sha256 is None else None
    if recorded is None or recorded.get("size") != Path(path).stat().st_size:
        return ""
    if recorded.get("sha256") != hash_file(path).sha256:
        return ""
    state.forget(item, spec.name)
    return " The checksum recorded for it on first use was this bad file's: it was forgotten."


# ----------------------------------------------------------------------------------------------------------------
# State: recorded checksums and verified stamps


def stamp_matches(entry: Any, st: os.stat_result) -> bool:
    """True if the "verified" stamp ``entry`` describes the file ``st`` is the stat of: same size, modification
    time and, when the stamp has it, inode change time (``opticam_lib.paths.verification_problem`` applies the
    same rule; a test checks the two agree)."""
    return (
        isinstance(entry, dict)
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
        and entry.get("ctime_ns", st.st_ctime_ns) == st.st_ctime_ns
    )


class State:
    """``<cache>/.data_download/state.json``: checksums recorded on first use and "verified" stamps.

    ``recorded[item/file]`` = {sha256, size, recorded_at, origin} for files with no published SHA-256.
    ``verified[path]`` = {size, mtime_ns, ctime_ns, sha256, verified_at}: the file had these digests when last
    checked. ``ctime_ns`` (the inode's change time, which no copy tool can set back) catches a file rewritten in
    place with its old size and modification time restored (``cp -p``, ``rsync -t``, ``touch -r``); a stamp
    written before it was recorded is checked on size and mtime alone.
    """

    def __init__(self, cache: Path) -> None:
        self.cache = Path(cache)
        self.dir = self.cache / STATE_DIR
        self.path = self.dir / "state.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise json.JSONDecodeError("not an object", "", 0)
        except FileNotFoundError:
            return {"recorded": {}, "verified": {}}
        except (json.JSONDecodeError, UnicodeDecodeError):
            backup = self.path.with_name(f"state.json.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, backup)
            _stderr(
                f"data_download: {self.path} was unreadable; it was moved to {backup} and a new one is started "
                "(checksums recorded on first use are in the backup; files will be verified again)"
            )
            return {"recorded": {}, "verified": {}}
        data.setdefault("recorded", {})
        data.setdefault("verified", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"state.json.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(data, indent=1, sort_keys=True))
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename, so a crash leaves the old or the new file
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)  # a failed write (a full disk) leaves no temporary file behind

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        with self.lock("state"):
            data = self._read()
            yield data
            self._write(data)

    def _key(self, path: Path) -> str:
        p = Path(path).absolute()
        try:
            return p.relative_to(self.cache.absolute()).as_posix()
        except ValueError:
            return str(p)

    def recorded(self, item: str, name: str) -> dict[str, Any] | None:
        """The checksum recorded for file ``name`` of ``item`` on first use, or None."""
        return self._read()["recorded"].get(f"{item}/{name}")

    def record(self, item: str, name: str, digests: Digests, origin: str) -> None:
        """Record the SHA-256 and size of a file that has no published checksum."""
        with self._update() as data:
            data["recorded"][f"{item}/{name}"] = {
                "sha256": digests.sha256,
                "size": digests.size,
                "recorded_at": _now(),
                "origin": origin,
            }

    def forget(self, item: str, name: str | None = None) -> list[str]:
        """Drop the checksums recorded on first use for every file of ``item`` (only file ``name`` if given), and
        the verified stamps they vouched for (so that neither data_download nor the library, which reads the
        stamps, takes those files as checked any more); returns the records dropped (``item/name``)."""
        with self._update() as data:
            gone = [
                k
                for k in data["recorded"]
                if k.split("/", 1)[0] == item and name in (None, k.split("/", 1)[1])
            ]
            shas = {data["recorded"][k].get("sha256") for k in gone} - {None}
            for k in gone:
                del data["recorded"][k]
            for key in [
                k for k, v in data["verified"].items() if isinstance(v, dict) and v.get("sha256") in shas
            ]:
                del data["verified"][key]
        return gone

    def stamp(self, path: Path, digests: Digests) -> None:
        """Remember that ``path`` (as it is now: size, mtime and ctime) passed its check."""
        st = Path(path).stat()
        with self._update() as data:
            data["verified"][self._key(path)] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "ctime_ns": st.st_ctime_ns,
                "sha256": digests.sha256,
                "verified_at": _now(),
            }

    def stamped(
        self, path: Path, spec: FileSpec | None = None, item: str | None = None
    ) -> dict[str, Any] | None:
        """The stamp of ``path`` if the file is unchanged since it was verified (``stamp_matches``).

        With ``spec``, a stamp whose SHA-256 or size no longer matches the manifest does not count; with ``item``
        too, for a file with no published SHA-256, neither does one whose SHA-256 is not the checksum recorded now
        for ``item``'s file (none recorded, or another one recorded since the stamp: the file must be checked
        again).
        """
        entry = self._read()["verified"].get(self._key(path))
        try:
            st = Path(path).stat()
        except FileNotFoundError:
            return None
        if not stamp_matches(entry, st):
            return None
        if spec is not None:
            if spec.size is not None and entry["size"] != spec.size:
                return None
            if spec.sha256 is not None and entry.get("sha256") != spec.sha256:
                return None
            if spec.sha256_prefix and not str(entry.get("sha256", "")).startswith(spec.sha256_prefix):
                return None
            if spec.sha256 is None and item is not None:
                recorded = self.recorded(item, spec.name)
                if recorded is None or recorded.get("sha256") != entry.get("sha256"):
                    return None
        return entry

    @contextlib.contextmanager
    def lock(self, key: str | Path) -> Iterator[None]:
        """An exclusive lock on ``key`` across processes (POSIX), failing at once if another holds it.

        A path is locked as its resolved absolute path (``lock_key``), so ``cache/x`` and ``/home/me/cache/x``
        (or a link to it) are the same lock.

        Raises:
            DataDownloadError: another ``data_download`` process is working on the same file.
        """
        if fcntl is None:  # pragma: no cover
            yield
            return
        key = lock_key(key)
        locks = self.dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]
        path = locks / f"{name}.lock"
        deadline = time.monotonic() + (5.0 if key == "state" else 0.0)
        while True:
            handle = open(path, "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                if time.monotonic() >= deadline:
                    raise DataDownloadError(
                        f"another data_download process is working on {key}; wait for it to finish "
                        "(or stop it) and run the command again"
                    ) from None
                time.sleep(0.05)
                continue
            try:  # the holder before us may have removed the file after we opened it: then lock the new one
                if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # no lock file is left in the cache, whether the work succeeded or failed
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


def lock_key(key: str | Path) -> str:
    """The name a lock is taken under: a ``Path`` resolved to its absolute, link-free form; a string as given
    (callers build string keys from resolved paths, see ``core``)."""
    return str(Path(key).resolve()) if isinstance(key, Path) else key


def verify_file(
    path: Path,
    spec: FileSpec,
    *,
    item: str,
    state: State,
    origin: str,
    progress: bool = False,
    use_stamp: bool = False,
    stamp: bool = True,
    log: Log = _stderr,
) -> Digests:
    """Check ``path`` against ``spec`` (and the recorded checksum); record it on first use; stamp it.

    Args:
        origin: where the file came from, kept with a first-use record (a URL or "copied by hand").
        use_stamp: accept an unchanged file that was verified before without hashing it again.
        stamp: remember the file as verified (False for a temporary file about to be renamed).

    Raises:
        ChecksumError: the file does not match; ``FileFormatError`` (a ``ChecksumError``): its content is not of
            the kind its name says (``format_problem``: an HTML page, ...). Nothing is recorded then.
    """
    if use_stamp:
        entry = state.stamped(path, spec, item)
        if entry is not None:
            return Digests(size=entry["size"], sha256=entry["sha256"])
    check_format(
        path, spec, str(path),
        f"It was not accepted and nothing new was recorded. Get the real {spec.name} (python -m data_download "
        f"LIST says from where) and run {command_for(item, state.cache)} again.",
        item=item, state=state,
    )  # fmt: skip
    digests = hash_file(path, md5=spec.md5 is not None, progress=progress, desc=spec.name)
    recorded = state.recorded(item, spec.name) if spec.sha256 is None else None
    check_digests(digests, spec, recorded, str(path), item=item, cache=state.cache)
    if spec.sha256 is None and recorded is None:
        state.record(item, spec.name, digests, origin)
        log(
            f"{spec.name}: no published checksum; recorded SHA-256 {digests.sha256} ({digests.size:,} bytes). "
            "Later copies are checked against it."
        )
    if stamp:
        state.stamp(path, digests)
    return digests


# ----------------------------------------------------------------------------------------------------------------
# HTTP


def _bar(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    """A tqdm progress bar in bytes, or a no-op object with the same ``update``/context interface."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False
    )


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _reason(exc: BaseException) -> str:
    """A short phrase for a connection failure: 'connection refused', 'name resolution failed', ..."""
    inner = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, socket.gaierror):
        return "the host name could not be resolved"
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, TimeoutError):
        return "timed out"
    return str(inner) or type(inner).__name__


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``'bytes 100-199/1000'`` -> (100, 1000); ``'bytes */1000'`` -> (None, 1000)."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[6:].partition("/")
    start = int(span.split("-")[0]) if span and span != "*" else None
    return start, (int(total) if total.isdigit() else None)


def validator_path(part: Path) -> Path:
    """``<target>.part.validator``: the ETag / Last-Modified of the response a ``.part`` was started from."""
    return part.with_name(part.name + ".validator")


def _read_validator(part: Path) -> dict[str, str] | None:
    try:
        v = json.loads(validator_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def _if_range(validator: dict[str, str] | None) -> str | None:
    """The ``If-Range`` value: a strong ETag, else Last-Modified (RFC 9110 13.1.5); None if there is neither."""
    if not validator:
        return None
    etag = validator.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return validator.get("last_modified") or None


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    validator_path(part).unlink(missing_ok=True)


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an address the manifest could name (``url_allowed``): https, or http on this
    machine; never from https down to http."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not url_allowed(newurl) or (req.full_url.startswith("https:") and not newurl.startswith("https:")):
            raise HTTPDownloadError(
                f"{req.full_url} redirects to {newurl}, which is not an https:// address: refused"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirects)


def deadline_for(spec: FileSpec) -> float:
    """Seconds one file may take in all (``DEADLINE_*``)."""
    size = spec.size if spec.size is not None else spec.approx_size
    if size is None:
        return DEADLINE_UNKNOWN_S
    return DEADLINE_BASE_S + DEADLINE_PER_MIB_S * size / (1 << 20)


def _open(
    url: str, offset: int, timeout: float, headers: dict[str, str] | None, if_range: str | None = None
) -> http.client.HTTPResponse:
    hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    if offset:
        hdrs["Range"] = f"bytes={offset}-"
        if if_range:
            hdrs["If-Range"] = if_range
    return _OPENER.open(urllib.request.Request(url, headers=hdrs), timeout=timeout)


def _refuse_html(resp: http.client.HTTPResponse, url: str, part: Path, spec: FileSpec) -> None:
    """Raise ``HTTPDownloadError`` (so the next mirror is tried) when the server answers with an HTML page
    where the file is expected; the ``.part`` is dropped."""
    ctype = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if ctype != "text/html" or spec.name.lower().endswith((".html", ".htm")):
        return
    _drop_part(part)
    raise HTTPDownloadError(
        f"{url} sent an HTML page (Content-Type: text/html) instead of {spec.name} (a login or error page?); "
        "nothing was kept"
    )


def _fetch_url(
    url: str,
    part: Path,
    spec: FileSpec,
    *,
    timeout: float,
    retries: int,
    progress: bool,
    headers: dict[str, str] | None,
    log: Log,
) -> str:
    """Bring ``part`` to the complete content of ``url``, resuming from what it already holds.

    Returns the address the bytes finally came from (after redirects). Raises ``DataDownloadError`` when the file
    takes longer than ``deadline_for(spec)`` in all; the partial file is kept for a later resume."""
    failures = 0
    final = url
    limit = deadline_for(spec)
    stop_at = time.monotonic() + limit

    def too_slow() -> DataDownloadError:
        got = part.stat().st_size if part.exists() else 0
        return DataDownloadError(
            f"{spec.name} took longer than {limit:.0f} s in all ({got:,} bytes received from {_host(url)}, a server "
            f"sending very slowly?); {part} keeps them: run the same command again to resume"
        )

    while True:
        if time.monotonic() > stop_at:
            raise too_slow()
        offset = part.stat().st_size if part.exists() else 0
        if spec.size is not None and offset > spec.size:
            log(f"{part.name} is longer than the expected {spec.size:,} bytes; starting again")
            _drop_part(part)
            offset = 0
        if spec.size is not None and offset == spec.size:
            return final
        validator = _read_validator(part) if offset else None
        if offset and spec.sha256 is None and _if_range(validator) is None:
            # nothing published to check the stitched file against, and no way to ask the server whether the
            # bytes we hold still belong to its current file: do not resume
            log(
                f"{part.name}: no checksum is published and no validator (ETag or Last-Modified) was kept with "
                "the partial file, so it cannot be resumed safely; starting again from byte 0"
            )
            _drop_part(part)
            offset, validator = 0, None
        try:
            resp = _open(url, offset, timeout, headers, _if_range(validator))
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:
                _, total = _parse_content_range(e.headers.get("Content-Range"))
                if total == offset:
                    return final  # the .part already holds the whole file (its validator was checked by If-Range)
                log(f"the server cannot resume {part.name} at byte {offset:,}; starting again")
                _drop_part(part)
                failures += 1
                if failures > retries:
                    raise HTTPDownloadError(f"{url}: the server refused every range request") from None
                continue
            if e.code in (408, 429, 500, 502, 503, 504) and failures < retries:
                failures += 1
                log(f"{_host(url)} answered HTTP {e.code}; retrying ({failures}/{retries})")
                time.sleep(min(2.0**failures, 10.0))
                continue
            raise HTTPDownloadError(f"{url} answered HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise OfflineError(f"could not reach {_host(url)}: {_reason(e)}") from None
        except (TimeoutError, ConnectionError) as e:
            raise OfflineError(f"could not reach {_host(url)}: {_reason(e)}") from None
        except http.client.HTTPException as e:
            raise HTTPDownloadError(
                f"{url}: the server sent a broken answer ({type(e).__name__}: {e})"
            ) from None

        with resp:
            final = resp.geturl() or url
            _refuse_html(resp, url, part, spec)
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            now = {
                "etag": resp.headers.get("ETag") or "",
                "last_modified": resp.headers.get("Last-Modified") or "",
            }
            changed = bool(
                validator and validator.get("etag") and now["etag"] and now["etag"] != validator["etag"]
            )
            if offset and resp.status == 206 and changed:
                log(f"{spec.name} changed on the server since the partial download began; starting again")
                _drop_part(part)
                continue
            if offset and resp.status == 206:
                if start != offset:
                    raise HTTPDownloadError(
                        f"{url}: asked to resume at byte {offset:,}, the server sent {start}"
                    )
                mode = "ab"
            else:
                if offset:
                    log(
                        f"{_host(url)} sent the whole file (it does not resume, or the file changed since the "
                        f"partial download began); starting {part.name} again from byte 0"
                    )
                offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if total is None and spec.size is None and spec.sha256 is None:
                    _drop_part(part)
                    raise DataDownloadError(
                        f"{url} does not say how long {spec.name} is, and no size or checksum is published: a "
                        "connection closed early could not be told from the end of the file, so nothing was "
                        "kept. Download it by hand and give it with --from PATH."
                    )
                validator_path(part).write_text(json.dumps({**now, "url": final}), encoding="utf-8")
            if spec.size is not None and total is not None and total != spec.size:
                _drop_part(part)
                raise ChecksumError(
                    f"{url} offers {total:,} bytes but the manifest expects {spec.size:,}: the file upstream has "
                    "changed or the URL is wrong; nothing was kept"
                )
            need = (total if total is not None else 0) - offset
            free = shutil.disk_usage(part.parent).free
            if need > free:
                raise DataDownloadError(
                    f"not enough disk space for {spec.name}: {human_size(need)} to download, {human_size(free)} "
                    f"free in {part.parent}. Free some space or choose another cache folder (--cache DIR)."
                )
            lost: BaseException | None = None
            with open(part, mode) as f, _bar(total, offset, spec.name, progress) as bar:
                while True:
                    try:
                        chunk = resp.read1(CHUNK)  # what has arrived, so the deadline is checked often
                    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                        lost = e
                        break
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() > stop_at:
                        f.close()
                        raise too_slow()
                    if spec.size is not None and f.tell() > spec.size:
                        f.close()
                        _drop_part(part)
                        raise ChecksumError(
                            f"{url} sent more than the expected {spec.size:,} bytes: the file upstream has changed "
                            "or the URL is wrong; nothing was kept"
                        )
        got = part.stat().st_size
        if lost is None and (total is None or got >= total):
            return final
        failures = 1 if got > offset else failures + 1  # count only failures that brought nothing
        if failures > retries:
            raise DataDownloadError(
                f"the connection to {_host(url)} kept dropping ({_reason(lost) if lost else 'short read'}); "
                f"{part} keeps the {got:,} bytes received: run the same command again to resume"
            )
        log(f"connection lost after {got:,} bytes ({_reason(lost) if lost else 'short read'}); resuming")


def download(
    spec: FileSpec,
    dest: Path,
    *,
    item: str,
    state: State,
    command: str,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    headers: dict[str, str] | None = None,
    log: Log = _stderr,
) -> Digests:
    """Download ``spec`` to ``dest``: into ``dest.part`` (resumed if present), verified, then renamed.

    Mirrors (``spec.urls``) are tried in order. ``command`` is the command the user runs, quoted in messages.

    Raises:
        OfflineError: no mirror could be reached; the message says how to copy the file in by hand.
        HTTPDownloadError: every mirror answered with an error (404, ...).
        ChecksumError: the download does not match; the ``.part`` is deleted, nothing is put in place.
    """
    if not spec.urls:
        raise DataDownloadError(f"{spec.name} has no download URL; provide it with --from PATH")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with state.lock(dest):
        failures: list[tuple[str, DataDownloadError]] = []
        for url in spec.urls:
            try:
                if part.exists():
                    log(f"{spec.name}: resuming from byte {part.stat().st_size:,} ({part})")
                final = _fetch_url(
                    url,
                    part,
                    spec,
                    timeout=timeout,
                    retries=retries,
                    progress=progress,
                    headers=headers,
                    log=log,
                )
                used = url if final == url else f"{url} (redirected to {final})"
                break
            except (OfflineError, HTTPDownloadError) as e:
                failures.append((url, e))
        else:
            raise _no_mirror_error(spec, dest, failures, command)
        what = f"the download of {spec.name} from {used}"
        try:
            check_format(
                part, spec, what, "The server sent something other than the file.", item=item, state=state
            )
            digests = hash_file(part, md5=spec.md5 is not None, progress=progress, desc=spec.name)
            recorded = state.recorded(item, spec.name) if spec.sha256 is None else None
            check_digests(digests, spec, recorded, what, item=item, cache=state.cache)
        except ChecksumError as e:
            _drop_part(part)
            raise _refused_download(e, spec, command) from None
        _fsync(part)  # the bytes reach the disk before the rename makes them the real file
        if spec.sha256 is None and recorded is None:
            # recorded before the rename: if the record cannot be written (a full disk), nothing unrecorded is put
            # in place and the complete .part stays for the same command to check again
            state.record(item, spec.name, digests, used)
            log(
                f"{spec.name}: no published checksum; recorded SHA-256 {digests.sha256} ({digests.size:,} bytes)"
            )
        os.replace(part, dest)
        validator_path(part).unlink(missing_ok=True)
        state.stamp(dest, digests)
        return digests


def _refused_download(e: ChecksumError, spec: FileSpec, command: str) -> ChecksumError:
    """The error for a download that failed its check (same class as ``e``), saying what was done and what to do."""
    if isinstance(e, FileFormatError):
        advice = (
            f"Run the same command again ({command}); if the server keeps sending it, download {spec.name} by hand "
            f"in a browser (signing in if the site asks) and give it with: {command} --from PATH"
        )
    else:
        advice = (
            f"Run the same command again ({command}); if it fails again the file upstream has changed: please "
            "report it."
        )
    return type(e)(f"{e} The partial file was deleted and nothing was put in place. {advice}")


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _no_mirror_error(
    spec: FileSpec, dest: Path, failures: list[tuple[str, DataDownloadError]], command: str
) -> DataDownloadError:
    lines = [f"could not download {spec.name}:"] + [f"  {url}: {err}" for url, err in failures]
    lines += [
        "To provide the file by hand: download it on a machine with a network from",
        *[f"  {u}" for u in spec.urls],
        "copy it to",
        f"  {dest}",
        f"and run the same command again ({command}) to verify it.",
    ]
    part = dest.with_name(dest.name + ".part")
    if part.exists():
        lines.append(
            f"(The partial download {part} is kept: the same command resumes it once the server answers.)"
        )
    message = "\n".join(lines)
    if all(isinstance(err, OfflineError) for _, err in failures):
        return OfflineError("no network? " + message)
    return HTTPDownloadError(message)


def install_copy(
    src: Path,
    spec: FileSpec,
    dest: Path,
    *,
    item: str,
    state: State,
    progress: bool = True,
    log: Log = _stderr,
) -> Digests:
    """Copy the user's file ``src`` to ``dest`` (through a temporary file of its own), verified before the rename.

    The copy never goes through ``dest.part``: a half-finished copy (Ctrl-C, a full disk) must not become the
    start of a later download's resume. A ``dest.part`` left by an earlier download is dropped once the copy is
    in place (the copy supersedes it). The temporary file is removed however the copy ends.

    Raises:
        ChecksumError: ``src`` is not the expected file; nothing is put in place, ``src`` is left alone.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.copy-{os.getpid()}.tmp")
    check_format(
        src, spec, f"your copy {src}",
        f"Nothing was copied and nothing new was recorded. Get the real {spec.name} and give it with --from again.",
        item=item, state=state,
    )  # fmt: skip
    with state.lock(dest):
        try:
            with open(src, "rb") as fin, open(part, "wb") as fout:
                _copy(fin, fout, Path(src).stat().st_size, spec.name, progress)
            digests = verify_file(
                part,
                spec,
                item=item,
                state=state,
                origin=f"copied from {src}",
                stamp=False,
                progress=progress,
                log=log,
            )
            _fsync(part)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)  # a failed or interrupted copy leaves nothing behind
        _drop_part(dest.with_name(dest.name + ".part"))  # an old partial download must not resume over it
        state.stamp(dest, digests)
        return digests


def _copy(fin: IO[bytes], fout: IO[bytes], total: int, desc: str, progress: bool) -> None:
    with _bar(total, 0, f"copying {desc}", progress) as bar:
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            fout.write(chunk)
            bar.update(len(chunk))
