"""The library's exceptions: every bad input is answered by one of these, with a message that names the problem."""

from __future__ import annotations

import os
import sys
import warnings

_LIBRARY = os.path.dirname(os.path.abspath(__file__)) + os.sep


class OptiCAMError(Exception):
    """Base class of the library's errors."""


class InputError(OptiCAMError, ValueError):
    """An argument has the wrong shape, type, range or value."""


class MissingWeightsError(OptiCAMError, FileNotFoundError):
    """Pretrained weights are not in the cache; the message gives the command that fetches them."""


class MissingDataError(OptiCAMError, FileNotFoundError):
    """A data set is not in the cache; the message gives the command that fetches it."""


class MissingDependencyError(OptiCAMError, ImportError):
    """An optional dependency (the ``peers`` extra) is not installed; the message gives the pip command."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of ``error``'s message, at most ``limit`` characters: what a one-line error quotes of a
    library's exception (torch's unpickler adds lines of advice, such as loading with ``weights_only=False``)."""
    return (str(error).strip().splitlines() or [""])[0][:limit]


def warn_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside ``opticam_lib``: the user's line (a notebook cell, a
    script), however deep in the library the warning was raised."""
    frame = sys._getframe(1)  # the library function that warns: stacklevel 2
    level = 2
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_LIBRARY):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
