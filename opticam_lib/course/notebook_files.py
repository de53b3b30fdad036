"""Reading the course's notebooks: the files ``NN_name.ipynb`` of a folder, one notebook, its title, whether it was
executed. Shared by the editions (``edition.py``) and the site (``site.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from opticam_lib.errors import InputError

if TYPE_CHECKING:  # annotations only: nbformat is imported when a notebook is read
    from nbformat import NotebookNode

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
SOLUTION_TAG = "solution"  # the tag of an exercise's solution cell (the editions' convention)


def nbformat_module() -> ModuleType:
    """The nbformat module; InputError with the install command when it is missing."""
    try:
        import nbformat
    except ImportError as err:  # pragma: no cover - nbformat comes with jupyter
        raise InputError("the editions need nbformat: pip install nbformat nbconvert") from err
    return nbformat


def cell_source(cell: Mapping) -> str:
    """A cell's source as one string (notebooks store it as a string or a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def is_solution(cell: Mapping) -> bool:
    """True for a cell tagged ``solution`` (its metadata ``tags`` holds ``"solution"``)."""
    return SOLUTION_TAG in (cell.get("metadata", {}).get("tags") or [])


def read_notebook(path: str | Path) -> NotebookNode:
    """Read an .ipynb file (nbformat 4). Raises InputError naming the path when it is missing or not a notebook."""
    nbformat = nbformat_module()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"notebook not found: {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several types for bad JSON / schema
        raise InputError(f"cannot read {path} as a notebook: {err}") from None


def has_outputs(nb: NotebookNode) -> bool:
    """True when any code cell of ``nb`` has an output or an execution count."""
    return any(
        c.get("cell_type") == "code" and (c.get("outputs") or c.get("execution_count") is not None)
        for c in nb.cells
    )


def course_notebooks(src: str | Path = "notebooks") -> list[Path]:
    """The course's notebooks in ``src`` (files ``NN_name.ipynb``), in order. Raises InputError if there are none."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"notebook folder not found: {src}")
    found = sorted(src.glob(NOTEBOOK_GLOB))
    if not found:
        raise InputError(f"no course notebooks (NN_name.ipynb) in {src}")
    return found


def notebook_title(nb: NotebookNode, fallback: str) -> str:
    """The text of the first level-1 heading (``# ...``) of the first markdown cells, else ``fallback``."""
    for cell in nb.cells:
        if cell.get("cell_type") != "markdown":
            continue
        for line in cell_source(cell).splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return fallback
