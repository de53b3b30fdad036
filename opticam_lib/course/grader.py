"""Grading submitted notebooks: each student notebook runs in a fresh kernel, and its exercise cells are scored
by what the course's checkers printed.

An exercise cell is a code cell that calls a checker ``check_...(...)`` (the convention of ``edition``; solution
cells are not in the student edition). After the notebook has run top to bottom (errors do not stop it; each cell
has a time limit), every exercise gets one status:

- ``pass``: the checker printed ``✓``;
- ``not attempted``: the checker printed its reminder (the function still raises ``NotImplementedError``);
- ``fail``: the checker raised ``AssertionError``: its message is the hint the student saw;
- ``error``: the cell raised anything else (a bug in the student's code, a name defined in a cell that failed);
- ``not run``: the kernel died or the time limit was hit before the cell.

    python -m opticam_lib.edition grade submissions/              # every .ipynb below the folder
    python -m opticam_lib.edition grade alice.ipynb --timeout 300 --csv grades.csv
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from opticam_lib.errors import InputError

_CHECKER = re.compile(r"\b(check_\w+)\s*\(")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
STATUSES: tuple[str, ...] = ("pass", "fail", "not attempted", "error", "not run")


@dataclass(frozen=True)
class ExerciseResult:
    """The grade of one exercise of one notebook."""

    notebook: str
    exercise: int  # 1, 2, ... in the notebook's order
    checker: str
    status: str  # one of STATUSES
    message: str  # the checker's line (pass), its hint (fail), the error (error)


def _text(cell: dict) -> tuple[str, dict | None]:
    """(stdout of the cell, its error output or None)."""
    out, err = [], None
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            out.append("".join(o.get("text", "")))
        elif o.get("output_type") == "error":
            err = o
    return "".join(out), err


def _score(cell: dict) -> tuple[str, str]:
    stdout, err = _text(cell)
    if err is not None:
        ename, evalue = err.get("ename", "Error"), _ANSI.sub("", str(err.get("evalue", "")))
        first = evalue.strip().splitlines()[0] if evalue.strip() else ""
        if ename == "AssertionError":
            return "fail", first or "the checker's assertion failed"
        return "error", f"{ename}: {first}"
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if any(ln.startswith("✓") for ln in lines):
        return "pass", next(ln for ln in lines if ln.startswith("✓"))
    if any("not solved yet" in ln for ln in lines):
        return "not attempted", "the function still raises NotImplementedError"
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return "not run", "the notebook stopped before this cell (time limit or a dead kernel)"
    return "error", "the checker printed nothing: was it called?"


def grade_notebook(path: str | Path, timeout: int = 600) -> list[ExerciseResult]:
    """Run ``path`` in a fresh kernel (its folder as the working directory; ``timeout`` seconds per cell) and
    grade each exercise. The file itself is not modified."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such notebook")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        raise InputError(f"{path} is not a readable notebook ({type(e).__name__}: {e})") from None
    for cell in nb.cells:  # a fresh run: nothing the student's own run printed counts
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    exercises = [
        (i, m.group(1))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and "solution" not in cell.get("metadata", {}).get("tags", [])
        and (m := _CHECKER.search(cell.source))
    ]
    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    try:
        client.execute()
    except (CellTimeoutError, DeadKernelError, RuntimeError):
        pass  # the cells after it stay "not run"
    results = []
    for k, (i, checker) in enumerate(exercises, start=1):
        status, message = _score(nb.cells[i])
        results.append(ExerciseResult(path.name, k, checker, status, message))
    return results


def submissions(paths: list[str | Path]) -> list[Path]:
    """The notebooks to grade: files as given, folders searched for ``*.ipynb`` (checkpoints skipped)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not found:
        raise InputError("no notebooks to grade")
    return found


def format_grades(results: list[ExerciseResult]) -> str:
    """One line per exercise, then each notebook's score."""
    lines = [f"{'notebook':<36} {'#':>2}  {'checker':<28} {'status':<13} message"]
    for r in results:
        lines.append(
            f"{r.notebook[:36]:<36} {r.exercise:>2}  {r.checker[:28]:<28} {r.status:<13} {r.message[:90]}"
        )
    lines.append("")
    for name in dict.fromkeys(r.notebook for r in results):
        mine = [r for r in results if r.notebook == name]
        passed = sum(r.status == "pass" for r in mine)
        lines.append(f"{name}: {passed} of {len(mine)} exercises passed")
    return "\n".join(lines)


def write_csv(results: list[ExerciseResult], path: str | Path) -> Path:
    """Write one CSV row per exercise (notebook, exercise, checker, status, message), creating the folder;
    returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["notebook", "exercise", "checker", "status", "message"])
        for r in results:
            w.writerow([r.notebook, r.exercise, r.checker, r.status, r.message])
    return path
