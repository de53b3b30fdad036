"""Where files live: one cache folder for downloads, and the check that an output path takes files.

``OPTICAM_CACHE`` sets the folder; the default is ``~/.cache/opticam`` (or ``$XDG_CACHE_HOME/opticam``).
The library only reads from it; ``python -m data_download`` is the one thing that writes to it.
``writable_dir``/``writable_file`` check a folder or file the caller will write (the CLI's ``--out`` and
``--json``, the channel-weight cache) before any minutes of work, with a one-line error. ``require_prepared``
checks a data set folder against data_download's record of its files before it is read, and
``verification_problem`` a weight file against its "verified" stamp. ``atomic_write``
is how the package writes every file it leaves behind: the old file or the whole new one, never a truncated mix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:  # POSIX; elsewhere the lock is skipped (one run at a time is then the user's business)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

ENV_VAR = "OPTICAM_CACHE"


def cache_dir() -> Path:
    """The cache folder (not created here): ``$OPTICAM_CACHE``, else ``$XDG_CACHE_HOME/opticam``, else
    ``~/.cache/opticam``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "opticam"


def weights_dir() -> Path:
    """Folder of pretrained weight files: ``cache_dir() / "weights"``."""
    return cache_dir() / "weights"


def datasets_dir() -> Path:
    """Folder of fetched data sets: ``cache_dir() / "datasets"``."""
    return cache_dir() / "datasets"


#: data_download's record of a prepared folder (``data_download.datasets.write_marker``): JSON with ``item`` and
#: ``files`` = {relative path: [size in bytes, SHA-256]}; this package reads it without importing data_download
PREPARED_MARKER = ".complete.json"


def _prepared_problem(marker_path: Path) -> tuple[str | None, str | None]:
    """(why the folder of ``marker_path`` no longer matches it, or None; the item it names, or None)."""
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        item = marker.get("item")
        files = [(str(rel), int(entry[0])) for rel, entry in marker["files"].items()]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its record of the files, .complete.json, cannot be read", None
    item = item if isinstance(item, str) else None
    for rel, size in files:
        path = marker_path.parent / rel
        if not path.is_file():
            return f"{rel} is missing", item
        if path.stat().st_size != size:
            return f"{rel} has changed size", item
    return None, item


def require_prepared(folder: str | Path) -> None:
    """Check a data set folder that ``python -m data_download`` prepared against its record of every file.

    A folder without data_download's marker (``.complete.json``: your own folder) is not checked. One with it
    must still hold every file it lists, at the listed size (a cheap check: one ``stat`` per file, no reading),
    so that a damaged folder is reported instead of silently giving a different set of images.

    Raises:
        MissingDataError: a listed file is missing or changed size, or the marker is unreadable; the message
            gives the command that prepares the folder again.
    """
    from opticam_lib.errors import MissingDataError

    folder = Path(folder)
    marker_path = folder / PREPARED_MARKER
    if not marker_path.exists():
        return
    problem, item = _prepared_problem(marker_path)
    if problem is None:
        return
    item = item or folder.name
    cache = folder.parent.parent
    where = "" if folder.parent.resolve() == datasets_dir().resolve() else f" --cache {cache}"
    raise MissingDataError(
        f"the data set folder {folder} is damaged ({problem}): it no longer holds what python -m data_download "
        f"prepared. Prepare it again with:\npython -m data_download {item}{where} --force"
    )


#: data_download's checksums and "verified" stamps (``data_download.fetch.State``): JSON whose ``verified`` maps a
#: path relative to the cache to {size, mtime_ns, ctime_ns, sha256, verified_at}; read here without importing data_download
DOWNLOAD_STATE = Path(".data_download") / "state.json"


def verification_problem(path: str | Path) -> str | None:
    """Why ``path`` (a file in the cache) is not known to be the file ``python -m data_download`` checked, or None.

    data_download stamps every file it verifies (against a published checksum, or the one it recorded on first
    use) with its size, modification time and inode change time in ``<cache>/.data_download/state.json``. A file
    without a stamp (copied in by hand and never verified) or one changed since (another size or modification
    time, or rewritten in place with them restored, as ``cp -p`` does: its change time moved) has a problem; a
    stamp older than the change time's record is checked on size and mtime alone (``data_download.fetch``'s
    ``stamp_matches``, the same rule). Cheap: one ``stat`` and one small JSON file, no hashing.
    """
    path = Path(path)
    cache = cache_dir()
    try:
        key = path.absolute().relative_to(cache.absolute()).as_posix()
    except ValueError:
        return f"it is not in the cache folder {cache}"
    try:
        state = json.loads((cache / DOWNLOAD_STATE).read_text(encoding="utf-8"))
        entry = state["verified"].get(key)
    except FileNotFoundError:
        entry = None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return f"data_download's record of verified files, {cache / DOWNLOAD_STATE}, cannot be read"
    if not isinstance(entry, dict):
        return "data_download has not verified it (copied by hand?)"
    st = path.stat()
    stamped = (entry.get("size"), entry.get("mtime_ns"), entry.get("ctime_ns", st.st_ctime_ns))
    if stamped != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return "it changed after data_download verified it"
    return None


@contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a folder, or a file created if missing and left in place) for the
    ``with`` block; if another process holds it, raise ``InputError(busy)`` at once instead of waiting. A folder's
    lock adds no file to it. The lock goes with the process, so a killed run never leaves it locked."""
    from opticam_lib.errors import InputError

    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, content: bytes | str | Callable[[Path], object], *, encoding: str = "utf-8"
) -> Path:
    """Write a file so that it is either the old file or the whole new one, never a truncated mix.

    The content goes to a temporary file beside ``path`` (``.NAME.PID.tmp``, the same file system), is flushed
    to disk (``fsync``), then renamed over ``path`` in one step, and the folder is flushed too (``fsync_dir``), so
    that after a power loss ``path`` is the old file or the whole new one, never empty or missing. If anything
    fails (a full disk, Ctrl-C), the temporary file is removed and ``path`` keeps its old content. Text is
    written as given (no newline translation), so a CSV's ``\r\n`` stays one. The new file gets the default
    permissions, and a symbolic link at ``path`` is replaced by the file, not followed.

    Args:
        path: the file to write (its folder must exist).
        content: bytes, text (written with ``encoding``), or a function that writes the file at the path it is
            given (``lambda p: torch.save(obj, p)``; note that ``np.save`` adds ``.npy`` to a path without it:
            give it an open file).

    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, str):
            tmp.write_text(content, encoding=encoding, newline="")  # as given: no "\n" -> os.linesep
        else:
            tmp.write_bytes(content)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # and the rename itself: after a power loss, the new file, not the old or none
    return path


def fsync_dir(folder: str | Path) -> None:
    """Flush ``folder``'s entries (a file created, renamed or removed in it) to disk, where the platform can: on
    Windows a folder cannot be opened, and some file systems refuse to sync one; both are skipped silently."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writable_dir(path: str | Path, option: str) -> Path:
    """Create ``path`` (with parents) and check it takes files: a probe file is written and removed.

    Args:
        path: the folder; a leading ``~`` is the home folder. option: how the user sets it (``"--out"``), named
            in the error.

    Returns:
        The folder, ``~`` expanded: write there, not to ``path`` as given.

    Raises:
        InputError: one line naming the path, the reason and the option to change.
    """
    from opticam_lib.errors import InputError

    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".opticam-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(
            f"cannot write to {path}: {e.strerror or e}; choose another folder with {option}"
        ) from None
    return path


def writable_file(path: str | Path, option: str, example: str) -> Path:
    """Check ``path`` can be written as a file: not a folder, its folder created and writable, the file (if it
    exists) writable.

    Args:
        path: the file; a leading ``~`` is the home folder. option: how the user sets it (``"--json"``).
            example: a file name for the hint when ``path`` is a folder (``"table1.json"``).

    Returns:
        The file, ``~`` expanded: write there, not to ``path`` as given.

    Raises:
        InputError: one line naming the path, the reason and the option to change.
    """
    from opticam_lib.errors import InputError

    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file path, e.g. {path / example}")
    writable_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write to {path}: permission denied; choose another file with {option}")
    return path
