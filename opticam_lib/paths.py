"""Where files live: one cache folder for downloads, and the check that an output path takes files.

``OPTICAM_CACHE`` sets the folder; the default is ``~/.cache/opticam`` (or ``$XDG_CACHE_HOME/opticam``).
The library only reads from it; ``python -m data_download`` is the one thing that writes to it.
``writable_dir``/``writable_file`` check a folder or file the caller will write (the CLI's ``--out`` and
``--json``, the channel-weight cache) before any minutes of work, with a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "OPTICAM_CACHE"


def cache_dir() -> Path:
    """The cache folder (not created here). ``$OPTICAM_CACHE`` or ``~/.cache/opticam``."""
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


def writable_dir(path: str | Path, option: str) -> Path:
    """Create ``path`` (with parents) and check it takes files: a probe file is written and removed.

    Args:
        path: the folder. option: how the user sets it (``"--out"``), named in the error.

    Raises:
        InputError: one line naming the path, the reason and the option to change.
    """
    from opticam_lib.errors import InputError

    path = Path(path)
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
        path: the file. option: how the user sets it (``"--json"``). example: a file name for the hint when
            ``path`` is a folder (``"table1.json"``).

    Raises:
        InputError: one line naming the path, the reason and the option to change.
    """
    from opticam_lib.errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file path, e.g. {path / example}")
    writable_dir(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"cannot write to {path}: permission denied; choose another file with {option}")
    return path
