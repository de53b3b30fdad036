"""Grading submitted notebooks: each student notebook runs in a fresh kernel, and its exercises are scored by
what the course's checkers reported.

An exercise cell is a code cell that calls a checker ``check_...(...)`` (the convention of ``edition``; solution
cells are not in the student edition). Each submission is graded against its **chapter**: the course notebook
(``notebooks/NN_*.ipynb``, the teacher edition) with the same two-digit number as the submission's file name,
or the one given with ``--chapter``. The chapter says which checkers must be called, in which order; an
exercise whose call was deleted is ``missing``, not forgotten, and a notebook of another chapter scores zero
against the one asked for. After the notebook has run top to bottom (errors do not stop it; each cell has a
time limit, after which the kernel is interrupted and the next cell runs), every exercise gets one status:

- ``pass``: the checker passed: it printed its receipt, a line keyed with a secret the grader gives the kernel
  (printing ``✓`` by hand is not a pass);
- ``not attempted``: the checker printed its reminder (the function still raises ``NotImplementedError``);
- ``fail``: the checker raised ``AssertionError``: its message is the hint the student saw;
- ``error``: the cell raised anything else (a bug in the student's code, a name defined in a cell that failed);
- ``timeout``: the cell ran past the time limit;
- ``not run``: the kernel died before the cell;
- ``missing``: the chapter has this exercise, the submission calls no such checker.

Rows numbered 0 are about the whole notebook, not an exercise, and do not count in its score: ``unreadable``
(not a notebook), ``unknown chapter``, and the first ``error`` raised outside the exercises (a failed import,
say), which explains the errors after it.

    python -m opticam_lib.edition grade submissions/                 # every .ipynb below the folder
    python -m opticam_lib.edition grade alice.ipynb --timeout 300 --csv grades.csv
    python -m opticam_lib.edition grade submissions/ --chapter 03    # all graded as chapter 03
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from opticam_lib.course.exercises import GRADER_TOKEN_ENV, receipt
from opticam_lib.course.notebook_files import course_notebooks, is_solution, read_notebook
from opticam_lib.errors import InputError

_CHECKER = re.compile(r"\b(check_\w+)\s*\(")
_CHAPTER = re.compile(r"^(\d\d)(?:_|\.|$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TIMEOUT = "CellTimeoutError"
STATUSES: tuple[str, ...] = ("pass", "fail", "not attempted", "error", "timeout", "not run", "missing")
NOTEBOOK_STATUSES: tuple[str, ...] = ("unreadable", "unknown chapter", "error")


@dataclass(frozen=True)
class ExerciseResult:
    """The grade of one exercise of one notebook (``exercise`` 0: a note about the whole notebook)."""

    notebook: str  # the submission's path relative to the folder graded
    exercise: int  # 1, 2, ... in the chapter's order; 0 for a row about the notebook
    checker: str
    status: str  # one of STATUSES (exercise >= 1) or NOTEBOOK_STATUSES (exercise 0)
    message: str  # the checker's line (pass), its hint (fail), the error (error)


def _checker_cells(nb: dict) -> list[tuple[int, str]]:
    """(cell index, checker name) of every exercise cell: code, not a solution, calling ``check_...(``."""
    return [
        (i, m.group(1))
        for i, cell in enumerate(nb["cells"])
        if cell.get("cell_type") == "code"
        and not is_solution(cell)
        and (m := _CHECKER.search("".join(cell.get("source", ""))))
    ]


def chapter_exercises(src: str | Path = "notebooks") -> dict[str, list[str]]:
    """The checkers each chapter expects, in order: ``{"03": ["check_saliency_map", ...], ...}`` from the
    course notebooks (teacher edition) in ``src``; chapters without exercises map to ``[]``."""
    return {
        path.name[:2]: [name for _, name in _checker_cells(read_notebook(path))]
        for path in course_notebooks(src)
    }


def _outputs(cell: dict) -> tuple[str, dict | None]:
    """(stdout of the cell, its error output or None)."""
    out, err = [], None
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stdout":
            out.append("".join(o.get("text", "")))
        elif o.get("output_type") == "error":
            err = o
    return "".join(out), err


def _first_line(err: dict) -> str:
    evalue = _ANSI.sub("", str(err.get("evalue", ""))).strip()
    return f"{err.get('ename', 'Error')}: {evalue.splitlines()[0] if evalue else ''}".rstrip(": ")


def _score(cell: dict, checker: str, token: str, timed_out: bool, timeout: int) -> tuple[str, str]:
    """The status and message of one exercise cell after the run."""
    stdout, err = _outputs(cell)
    if timed_out:
        return "timeout", f"the cell ran past the time limit ({timeout} s) and was interrupted"
    if err is not None:
        if err.get("ename") == "AssertionError":
            line = _first_line(err).removeprefix("AssertionError").lstrip(": ")
            return "fail", line or "the checker's assertion failed"
        return "error", _first_line(err)
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if receipt(checker, token) in lines:
        shown = [ln for ln in lines if ln.startswith("✓")]
        return "pass", shown[-1] if shown else f"{checker} passed"
    if any("not solved yet" in ln for ln in lines):
        return "not attempted", "the function still raises NotImplementedError"
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return "not run", "the notebook stopped before this cell (a dead kernel)"
    if any(ln.startswith("✓") for ln in lines):
        return "error", f"a ✓ was printed, but {checker} did not pass (no receipt from the checker)"
    return "error", f"{checker} printed nothing: was it called?"


def _align(found: list[tuple[int, str]], expected: list[str]) -> list[tuple[str, int | None]]:
    """Match the submission's checker calls to the chapter's, in order: (checker, cell index or None)."""
    rows, start = [], 0
    for name in expected:
        hit = next((k for k in range(start, len(found)) if found[k][1] == name), None)
        rows.append((name, None if hit is None else found[hit][0]))
        if hit is not None:
            start = hit + 1
    return rows


def grade_notebook(
    path: str | Path, timeout: int = 600, expected: list[str] | None = None, label: str | None = None
) -> list[ExerciseResult]:
    """Run ``path`` in a fresh kernel (its folder as the working directory; ``timeout`` seconds per cell) and
    grade each exercise. ``expected``: the chapter's checkers in order (``chapter_exercises``); None grades the
    checker calls the notebook makes. ``label`` names the notebook in the results (default: the path as given).
    The file itself is not modified. Raises InputError for a missing or unreadable file."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    label = label if label is not None else str(path)
    if not path.is_file():
        raise InputError(f"{path}: no such notebook")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # not JSON, not a notebook
        raise InputError(f"{path} is not a readable notebook ({type(e).__name__}: {e})") from None
    for cell in nb.cells:  # a fresh run: nothing the student's own run printed counts
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    found = _checker_cells(nb)
    rows = _align(found, expected) if expected is not None else [(name, i) for i, name in found]
    token = secrets.token_hex(16)
    timed_out: set[int] = set()

    def on_executed(cell: dict, cell_index: int, execute_reply: dict) -> None:
        if execute_reply.get("content", {}).get("ename") == _TIMEOUT:
            timed_out.add(cell_index)

    client = NotebookClient(
        nb,
        timeout=timeout,
        allow_errors=True,
        interrupt_on_timeout=True,
        error_on_timeout={"ename": _TIMEOUT, "evalue": f"past the time limit ({timeout} s)", "traceback": []},
        on_cell_executed=on_executed,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    dead = None
    with client.setup_kernel(env={**os.environ, GRADER_TOKEN_ENV: token}):
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            started = time.monotonic()
            try:
                client.execute_cell(cell, index)
            except DeadKernelError:
                dead = index
                break
            if index not in timed_out and time.monotonic() - started >= timeout:
                timed_out.add(index)  # interrupted: some kernels answer the interrupt with KeyboardInterrupt
    results = []
    exercise_cells = {i for _, i in rows if i is not None}
    setup_errors = [
        (i, err)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and i not in exercise_cells and (err := _outputs(cell)[1]) is not None
    ]
    if setup_errors:  # what the student sees first: it explains the NameErrors after it
        i, err = setup_errors[0]
        more = (
            f" (and {len(setup_errors) - 1} more cells outside the exercises)"
            if len(setup_errors) > 1
            else ""
        )
        results.append(ExerciseResult(label, 0, "-", "error", f"cell {i + 1}: {_first_line(err)}{more}"))
    if dead is not None:
        results.append(ExerciseResult(label, 0, "-", "error", f"the kernel died in cell {dead + 1}"))
    for k, (checker, i) in enumerate(rows, start=1):
        if i is None:
            status, message = "missing", f"no cell calls {checker}: was the exercise cell deleted?"
        else:
            status, message = _score(nb.cells[i], checker, token, i in timed_out, timeout)
        results.append(ExerciseResult(label, k, checker, status, message))
    return results


def submissions(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """The notebooks to grade, each with its label: files as given (label: the path as given), folders searched
    for ``*.ipynb``, checkpoints skipped (label: the path relative to the folder, so ``alice/03.ipynb`` and
    ``bob/03.ipynb`` stay apart)."""
    found: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [
                (q, q.relative_to(p).as_posix())
                for q in sorted(p.rglob("*.ipynb"))
                if ".ipynb_checkpoints" not in q.parts
            ]
        elif p.is_file():
            found.append((p, str(p)))
        else:
            raise InputError(f"{p}: no such file or folder")
    if not found:
        raise InputError("no notebooks to grade")
    return found


def grade_all(
    paths: list[str | Path],
    timeout: int = 600,
    chapter: str | None = None,
    src: str | Path = "notebooks",
) -> list[ExerciseResult]:
    """Grade every submission under ``paths`` against its chapter (``chapter`` for all of them, else the two
    digits its file name starts with) as the course notebooks in ``src`` define it. A file that cannot be read,
    or whose chapter is unknown, gets a row of its own and grading goes on."""
    if not Path(src).is_dir():
        raise InputError(
            f"no course notebooks in {src}/ to define the chapters: run from the course folder, or pass "
            "--src path/to/notebooks (the teacher edition)"
        )
    chapters = chapter_exercises(src)
    if chapter is not None and chapter not in chapters:
        raise InputError(f"unknown chapter {chapter!r}: the course has {', '.join(chapters)}")
    results: list[ExerciseResult] = []
    for path, label in submissions(paths):
        number = chapter
        if number is None:
            m = _CHAPTER.match(path.name)
            number = m.group(1) if m else None
        if number not in chapters:
            results.append(
                ExerciseResult(
                    label,
                    0,
                    "-",
                    "unknown chapter",
                    "name the file like the course's (NN_name.ipynb) or pass --chapter NN",
                )
            )
            continue
        try:
            results += grade_notebook(path, timeout, expected=chapters[number], label=label)
        except InputError as err:
            results.append(ExerciseResult(label, 0, "-", "unreadable", str(err)))
    return results


def format_grades(results: list[ExerciseResult]) -> str:
    """One line per exercise and note, then each notebook's score (notes, exercise 0, do not count)."""
    lines = [f"{'notebook':<36} {'#':>2}  {'checker':<28} {'status':<15} message"]
    for r in results:
        lines.append(
            f"{r.notebook[-36:]:<36} {r.exercise:>2}  {r.checker[:28]:<28} {r.status:<15} {r.message[:90]}"
        )
    lines.append("")
    for name in dict.fromkeys(r.notebook for r in results):
        mine = [r for r in results if r.notebook == name and r.exercise > 0]
        notes = [r.status for r in results if r.notebook == name and r.exercise == 0]
        if mine:
            passed = sum(r.status == "pass" for r in mine)
            lines.append(f"{name}: {passed} of {len(mine)} exercises passed")
        else:
            lines.append(f"{name}: not graded ({', '.join(notes) or 'no exercises'})")
    return "\n".join(lines)


def write_csv(results: list[ExerciseResult], path: str | Path) -> Path:
    """Write one CSV row per exercise and note (notebook, exercise, checker, status, message), creating the
    folder; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["notebook", "exercise", "checker", "status", "message"])
        for r in results:
            w.writerow([r.notebook, r.exercise, r.checker, r.status, r.message])
    return path
