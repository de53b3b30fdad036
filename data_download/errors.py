"""The errors ``data_download`` raises. Every message says what went wrong and what to do next."""

from __future__ import annotations

import os
from pathlib import Path


class DataDownloadError(RuntimeError):
    """Base class: a fetch, a check or a preparation failed (the command exits with status 1)."""


class ManifestError(DataDownloadError, ValueError):
    """The manifest is malformed, or an item name is unknown (the command exits with status 2)."""


class UsageError(DataDownloadError, ValueError):
    """A command-line argument is wrong (the command exits with status 2)."""


class ChecksumError(DataDownloadError):
    """A file does not match the size or checksum the manifest (or the first download) recorded."""


class HTTPDownloadError(DataDownloadError):
    """The server answered with an error (404, 403, 5xx, ...) or sent something unexpected."""


class OfflineError(DataDownloadError, ConnectionError):
    """No server could be reached (no network, DNS failure, refused, timed out)."""


class ManualStepRequired(DataDownloadError):
    """The item cannot be downloaded automatically (licence); the message says how to provide it."""


class FileFormatError(ChecksumError):
    """A file is not of the kind its name says (an HTML page saved as ``model.safetensors``, a zip that is not one).

    A ``ChecksumError``: like a checksum mismatch, the file is refused before it is put in place or recorded.
    """


class DamagedArchiveError(DataDownloadError):
    """An archive could not be read to its end (truncated or corrupt); ``path`` is the archive, ``reason`` why."""

    def __init__(self, message: str, *, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.reason = reason


class WrongArchiveError(DataDownloadError):
    """An archive (or folder) reads to its end but is not the data set: too few images, none in the expected
    layout, or it unpacks to far more than its size. ``path`` is the archive, ``reason`` the full explanation.

    Handled like a ``DamagedArchiveError``: a downloaded archive is moved aside and a checksum recorded for it on
    first use is forgotten, so that running the command again fetches and accepts a good copy.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.reason = message
