"""Grading submitted notebooks: each student notebook runs in a fresh kernel, and its exercises are scored by
what the course's checkers reported.

An exercise cell is a code cell that calls one of the course's checkers (``check_...(...)`` from
``course.exercises``; the convention of ``edition``; solution cells are not in the student edition). Each
submission is graded against its **chapter**: the course notebook (``notebooks/NN_*.ipynb``, the teacher
edition) whose two-digit number appears in the submission's file name (``03_opti_cam.ipynb``,
``Copy of 03_opti_cam.ipynb``), or the one given with ``--chapter``. The chapter says which checkers must be
called; an exercise whose call was deleted is ``missing``, and a notebook of another chapter scores zero against
the one asked for. After the notebook has run top to bottom (errors do not stop it; each cell has a time limit,
after which the kernel is interrupted and the next cell runs), every exercise gets one status:

- ``pass``: the checker passed: it printed its receipt, a line keyed with a secret the grader gives the kernel
  (printing ``✓`` by hand is not a pass);
- ``fail``: the checker raised ``AssertionError``: its message is the hint the student saw;
- ``not attempted``: the checker printed its reminder (the function still raises ``NotImplementedError``);
- ``error``: the cell raised anything else (a bug in the student's code, a name defined in a cell that failed),
  or the kernel died while running it;
- ``timeout``: the cell ran past the time limit;
- ``not run``: the kernel died before the cell;
- ``missing``: the chapter has this exercise, the submission calls no such checker.

When several cells call the same checker (a first try left above the fix, the stub left above a solution), the
best result counts, in the order above. Rows numbered 0 are notes about the whole notebook, not exercises, and
do not count in its score: ``unreadable`` (not a notebook), ``unknown chapter``, the first ``error`` and the
first ``timeout`` outside the exercises (a failed import, a download that hung: they explain what follows), a
kernel that died outside the exercises, and ``check by hand`` when the notebook's code mentions the grader's
receipt or its secret.

    python -m opticam_lib.edition grade submissions/                 # every .ipynb below the folder
    python -m opticam_lib.edition grade alice.ipynb --timeout 300 --csv grades.csv
    python -m opticam_lib.edition grade submissions/ --chapter 03    # all graded as chapter 03
"""

from __future__ import annotations

import ast
import csv
import io
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from opticam_lib.course import exercises
from opticam_lib.course.exercises import GRADER_TOKEN_ENV, RECEIPT_PREFIX, receipt
from opticam_lib.course.notebook_files import course_notebooks, is_solution, read_notebook
from opticam_lib.errors import InputError, MissingDependencyError
from opticam_lib.paths import atomic_write

_CHECKER = re.compile(r"\b(check_\w+)\s*\(")
_CHAPTER = re.compile(r"(?<!\d)(\d\d)(?=[_\- .]|\.ipynb$)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TIMEOUT = "CellTimeoutError"
KERNEL_NAME = "python3"  # the Jupyter kernel the submissions run in
# words in a notebook's code that only a student reaching for the grader's secret would write
_GRADER_WORDS = re.compile(
    rf"{GRADER_TOKEN_ENV}|GRADER_TOKEN|{re.escape(RECEIPT_PREFIX)}|\breceipt\b|\b_graded\b|_SECRET|_grader_token",
    re.IGNORECASE,
)
STATUSES: tuple[str, ...] = ("pass", "fail", "not attempted", "error", "timeout", "not run", "missing")
NOTEBOOK_STATUSES: tuple[str, ...] = ("unreadable", "unknown chapter", "error", "timeout", "check by hand")


@dataclass(frozen=True)
class ExerciseResult:
    """The grade of one exercise of one notebook (``exercise`` 0: a note about the whole notebook)."""

    notebook: str  # the submission's path relative to the folder(s) graded
    exercise: int  # 1, 2, ... in the chapter's order; 0 for a row about the notebook
    checker: str
    status: str  # one of STATUSES (exercise >= 1) or NOTEBOOK_STATUSES (exercise 0)
    message: str  # the checker's line (pass), its hint (fail), the error (error)


def course_checkers() -> frozenset[str]:
    """The names of the course's exercise checkers (the ``check_*`` functions of ``course.exercises``)."""
    return frozenset(n for n in vars(exercises) if n.startswith("check_") and callable(getattr(exercises, n)))


def checker_calls(source: str, names: frozenset[str] | None = None) -> list[str]:
    """The checkers in ``names`` (default: the course's) that ``source`` calls, in the order written, each once.
    Comments, strings and ``def`` lines do not count; a cell that does not parse (IPython magics, a syntax
    error) is read line by line without its comments."""
    names = course_checkers() if names is None else names
    lines = [ln if not ln.lstrip().startswith(("%", "!")) else "" for ln in source.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        text = "\n".join(ln.split("#", 1)[0] for ln in lines if not ln.lstrip().startswith("def "))
        found = [m.group(1) for m in _CHECKER.finditer(text)]
    else:
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        found = [
            n.func.id if isinstance(n.func, ast.Name) else n.func.attr
            for n in calls
            if isinstance(n.func, ast.Name | ast.Attribute)
        ]
    return list(dict.fromkeys(n for n in found if n in names))


def _checker_cells(nb: dict, solutions: bool = False) -> list[tuple[int, list[str]]]:
    """(cell index, checkers it calls) of every exercise cell: code calling a checker; solution cells only if
    ``solutions`` (a submission's cells all count, whatever their tags)."""
    cells = []
    names = course_checkers()
    for i, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") == "code" and (solutions or not is_solution(cell)):
            called = checker_calls("".join(cell.get("source", "")), names)
            if called:
                cells.append((i, called))
    return cells


def chapter_exercises(src: str | Path = "notebooks") -> dict[str, list[str]]:
    """The checkers each chapter expects, in order: ``{"03": ["check_saliency_map", ...], ...}`` from the
    course notebooks (teacher edition) in ``src``; chapters without exercises map to ``[]``."""
    return {
        path.name[:2]: list(
            dict.fromkeys(name for _, called in _checker_cells(read_notebook(path)) for name in called)
        )
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


@dataclass
class _Run:
    """What happened to each code cell of one run."""

    timed_out: set[int]
    dead: int | None  # the cell the kernel died in
    timeout: int
    code_number: dict[int, int]  # cell index -> 1, 2, ... among the code cells
    cells: list[dict]

    def where(self, i: int) -> str:
        """``code cell 4 (`first line`)``: how a teacher finds the cell in JupyterLab."""
        source = "".join(self.cells[i].get("source", "")).strip()
        first = source.splitlines()[0] if source else ""
        first = first if len(first) <= 50 else first[:47] + "..."
        return f"code cell {self.code_number[i]} (`{first}`)"

    def first_timeout_before(self, i: int) -> int | None:
        return min((j for j in self.timed_out if j < i), default=None)


_RANK = {s: k for k, s in enumerate(STATUSES)}


def _score(i: int, checker: str, called: list[str], token: str, run: _Run) -> tuple[str, str]:
    """The status and message of ``checker`` in exercise cell ``i`` (which calls ``called``) after the run."""
    cell = run.cells[i]
    stdout, err = _outputs(cell)
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    if receipt(checker, token) in lines:  # the checker's own ✓ line is the last one before its receipt
        shown = [ln for ln in lines[: lines.index(receipt(checker, token))] if ln.startswith("✓")]
        message = (
            shown[-1] if shown else f"{checker} passed, but no ✓ line came before its receipt: check by hand"
        )
        if err is not None or i in run.timed_out or i == run.dead:
            later = "the kernel died" if i == run.dead else _first_line(err) if err else "it timed out"
            message += f" (then the cell went on and {later})"
        return "pass", message
    failed = receipt(checker, token, "fail") in lines
    # the checker raised AssertionError: its hint is the cell's error if that error is the checker's
    if failed:
        last_keyed = [ln for ln in lines if ln.startswith(RECEIPT_PREFIX)][-1:]
        if (
            err is not None
            and err.get("ename") == "AssertionError"
            and last_keyed == [receipt(checker, token, "fail")]
        ):
            line = _first_line(err).removeprefix("AssertionError").lstrip(": ")
            return "fail", line or "the checker's assertion failed"
        return (
            "fail",
            f"{checker} failed (its AssertionError was caught in the cell, so its hint is not shown)",
        )
    if receipt(checker, token, "not attempted") in lines:
        return "not attempted", "the function still raises NotImplementedError"
    if i == run.dead:
        return "error", "the kernel died while running this cell (out of memory? a crash in native code?)"
    if i in run.timed_out:
        message = f"the cell ran past the time limit ({run.timeout} s) and was interrupted"
        earlier = run.first_timeout_before(i)
        if earlier is not None and not lines:
            message += f"; the kernel may still have been busy with {run.where(earlier)}"
        return "timeout", message
    if run.dead is not None and i > run.dead:
        return "not run", f"the kernel died in {run.where(run.dead)}, before this cell"
    # the checker never reported: the cell stopped before it, or inside the student's code
    if err is not None:
        if len(called) == 1 or called.index(checker) == 0:
            return "error", _first_line(err)
        return "error", f"{checker} did not run: the cell stopped at {_first_line(err)}"
    if any(ln.startswith("✓") for ln in lines):
        return "error", f"a ✓ was printed, but {checker} did not pass (no receipt from the checker)"
    return "error", f"{checker} printed nothing: was it called?"


def _best(scores: list[tuple[str, str]]) -> tuple[str, str]:
    """The best of several cells' results for one checker (the later cell among equals)."""
    return min(reversed(scores), key=lambda s: _RANK[s[0]])


def _notes(label: str, run: _Run, exercise_cells: set[int], source: str) -> list[ExerciseResult]:
    """The rows about the whole notebook: what went wrong outside the exercises, and grader words."""
    notes = []
    others = [i for i in run.code_number if i not in exercise_cells]
    timeouts = [i for i in others if i in run.timed_out]
    errors = [i for i in others if i not in run.timed_out and _outputs(run.cells[i])[1] is not None]
    if errors:  # what the student sees first: it explains the NameErrors after it
        more = f" (and {len(errors) - 1} more cells outside the exercises)" if len(errors) > 1 else ""
        err = _outputs(run.cells[errors[0]])[1]
        notes.append(
            ExerciseResult(label, 0, "-", "error", f"{run.where(errors[0])}: {_first_line(err)}{more}")
        )
    if timeouts:
        notes.append(
            ExerciseResult(
                label,
                0,
                "-",
                "timeout",
                f"{run.where(timeouts[0])} ran past the time limit ({run.timeout} s) and was interrupted; "
                "names it defines are missing below, and a cell that ignored the interrupt keeps the kernel busy",
            )
        )
    if run.dead is not None and run.dead not in exercise_cells:
        notes.append(
            ExerciseResult(
                label,
                0,
                "-",
                "error",
                f"the kernel died in {run.where(run.dead)}; the cells after it did not run",
            )
        )
    words = sorted(set(_GRADER_WORDS.findall(source)))
    if words:
        notes.append(
            ExerciseResult(
                label,
                0,
                "-",
                "check by hand",
                f"the code mentions the grader's receipt or secret ({', '.join(words)}): read it before trusting "
                "its passes",
            )
        )
    return notes


def grade_notebook(
    path: str | Path, timeout: int = 600, expected: list[str] | None = None, label: str | None = None
) -> list[ExerciseResult]:
    """Run ``path`` in a fresh kernel (its folder as the working directory; ``timeout`` seconds per cell) and
    grade each exercise. ``expected``: the chapter's checkers (``chapter_exercises``); None grades the checkers
    the notebook calls. ``label`` names the notebook in the results (default: the path as given). The file itself
    is not modified. Raises InputError for a missing or unreadable file."""
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
    found = _checker_cells(nb, solutions=True)
    expected = expected if expected is not None else list(dict.fromkeys(n for _, c in found for n in c))
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
        kernel_name=KERNEL_NAME,
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no TCP-encryption warning per notebook
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    client.log.setLevel(logging.ERROR)  # the kernel manager's start-up chatter is not the teacher's business
    dead = None
    env = {**os.environ, GRADER_TOKEN_ENV: token, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    kernel = ExitStack()
    try:
        kernel.enter_context(client.setup_kernel(env=env))
    except Exception as e:  # no such kernel, ipykernel missing, a kernel that dies on start
        raise MissingDependencyError(
            f"could not start a {KERNEL_NAME!r} Jupyter kernel to run {path.name} ({type(e).__name__}: {e}); "
            "is ipykernel installed in this environment? (pip install ipykernel)"
        ) from None
    with kernel:
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
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    run = _Run(timed_out, dead, timeout, {i: k for k, i in enumerate(code, start=1)}, nb.cells)
    source = "\n".join("".join(nb.cells[i].get("source", "")) for i in code)
    results = _notes(label, run, {i for i, _ in found}, source)
    for k, checker in enumerate(expected, start=1):
        cells = [(i, called) for i, called in found if checker in called]
        if not cells:
            status, message = "missing", f"no cell calls {checker}: was the exercise cell deleted?"
        else:
            status, message = _best([_score(i, checker, called, token, run) for i, called in cells])
        results.append(ExerciseResult(label, k, checker, status, message))
    return results


def _skipped(path: Path) -> bool:
    """Checkpoints, macOS resource forks (``__MACOSX``, ``._name``) and other hidden files are not submissions."""
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def submissions(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """The notebooks to grade, each once, with its label: folders are searched for ``*.ipynb`` (checkpoints,
    hidden files and ``__MACOSX`` skipped); labels are paths relative to the folder the given paths share, so
    ``grade subs/alice subs/bob`` names ``alice/03.ipynb`` and ``bob/03.ipynb`` apart."""
    given = [Path(p) for p in paths]
    for p in given:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    files: list[Path] = []
    for p in given:
        if p.is_dir():
            files += [q for q in sorted(p.rglob("*.ipynb")) if not _skipped(q.relative_to(p))]
        else:
            files.append(p)
    unique: dict[Path, Path] = {}  # resolved -> as found, first occurrence kept
    for q in files:
        unique.setdefault(q.resolve(), q)
    if not unique:
        raise InputError("no notebooks to grade")
    roots = [Path(os.path.abspath(p if p.is_dir() else p.parent)) for p in given]
    base = Path(os.path.commonpath(roots))  # labels from the paths as found: a symlink keeps its own name
    return [(q, Path(os.path.abspath(q)).relative_to(base).as_posix()) for q in unique.values()]


def chapter_of(
    name: str, chapters: dict[str, object] | None = None, names: dict[str, str] | None = None
) -> str | None:
    """The two-digit chapter in a submission's file name (``03_opti_cam.ipynb``, ``Copy of 03_x.ipynb``,
    ``03-opti-cam.ipynb``, ``03.ipynb``), or None. Where the name holds several (``hw01_03_opti_cam``), the one
    followed by its chapter's name in ``names`` (``{"03": "opti_cam"}``) wins, then the first that is one of
    ``chapters``, then the first."""
    found = _CHAPTER.findall(name)
    plain = re.sub(r"[\- .]", "_", name.lower())
    for number in found:
        if names and number in names and f"{number}_{names[number]}" in plain:
            return number
    for number in found:
        if chapters is None or number in chapters:
            return number
    return found[0] if found else None


def grade_all(
    paths: list[str | Path],
    timeout: int = 600,
    chapter: str | None = None,
    src: str | Path = "notebooks",
    progress: Callable[[str], None] | None = None,
) -> list[ExerciseResult]:
    """Grade every submission under ``paths`` against its chapter (``chapter`` for all of them, else the two
    digits in its file name) as the course notebooks in ``src`` define it. A file that cannot be read, or whose
    chapter is unknown, gets a row of its own and grading goes on. ``progress`` is told each file before it runs
    (``"grading 2 of 9: bob/03.ipynb"``)."""
    if not Path(src).is_dir():
        raise InputError(
            f"no course notebooks in {src}/ to define the chapters: run from the course folder, or pass "
            "--src path/to/notebooks (the teacher edition)"
        )
    chapters = chapter_exercises(src)
    stems = {path.name[:2]: path.stem[3:] for path in course_notebooks(src)}
    chapter = chapter.zfill(2) if chapter is not None and chapter.isdigit() else chapter
    if chapter is not None and chapter not in chapters:
        raise InputError(f"unknown chapter {chapter!r}: the course has {', '.join(chapters)}")
    results: list[ExerciseResult] = []
    started = False  # a kernel has started once: a later failure to start is that notebook's note
    todo = submissions(paths)
    for n, (path, label) in enumerate(todo, start=1):
        number = chapter if chapter is not None else chapter_of(path.name, chapters, stems)
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
        if progress is not None:
            progress(f"grading {n} of {len(todo)}: {label} (chapter {number})")
        try:
            results += grade_notebook(path, timeout, expected=chapters[number], label=label)
            started = True
        except InputError as err:
            results.append(ExerciseResult(label, 0, "-", "unreadable", str(err)))
        except MissingDependencyError as err:
            if not started:  # no kernel at all: nothing can be graded
                raise
            results.append(ExerciseResult(label, 0, "-", "error", str(err)))  # one that did not start
    return results


def _fit(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut from the middle (both the folder and the file name show)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return text[:head] + "…" + text[-(width - 1 - head) :]


def format_grades(results: list[ExerciseResult]) -> str:
    """One line per exercise and note, then each notebook's score (notes, exercise 0, do not count)."""
    width = min(60, max([len("notebook"), *(len(r.notebook) for r in results)]))
    lines = [f"{'notebook':<{width}} {'#':>2}  {'checker':<28} {'status':<15} message"]
    for r in results:
        lines.append(
            f"{_fit(r.notebook, width):<{width}} {r.exercise:>2}  {r.checker[:28]:<28} {r.status:<15} "
            f"{_fit(r.message, 110)}"
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


def _cell(value: object) -> object:
    """A CSV field a spreadsheet shows as text: one starting with = + - @ or a control character is quoted
    with a leading apostrophe (formula injection: a student names a file ``=HYPERLINK(...)``)."""
    if isinstance(value, str) and value != "-" and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(results: list[ExerciseResult], path: str | Path) -> Path:
    """Write one CSV row per exercise and note (notebook, exercise, checker, status, message), UTF-8 with a
    byte-order mark so spreadsheets read ✓ and accents, text that would start a formula escaped; creates the
    folder; returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["notebook", "exercise", "checker", "status", "message"])
    for r in results:
        w.writerow([_cell(v) for v in (r.notebook, r.exercise, r.checker, r.status, r.message)])
    atomic_write(path, text.getvalue(), encoding="utf-8-sig")  # an earlier grade sheet is never half-replaced
    return path
