"""Where downloaded files live: one cache folder, set by one environment variable.

``OPTICAM_CACHE`` sets the folder; the default is ``~/.cache/opticam`` (or ``$XDG_CACHE_HOME/opticam``).
The library only reads from it; ``python -m data_download`` is the one thing that writes to it.
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
