"""The course's two derived editions, each one command:

- the **student edition** (``python -m opticam_lib.edition student`` -> ``student/``): every notebook of
  ``notebooks/`` with the exercise solutions removed and all outputs cleared, everything else identical;
- the **offline site** (``python -m opticam_lib.edition html`` -> ``site/``, built by ``course/site.py``): an index
  with the table of contents of ``COURSE``, the committed, executed notebooks rendered by nbconvert's HTML exporter
  (figures embedded as PNG) without the exercise solutions, and the glossary (``--teacher``: the solutions and
  the teacher's guide too); equations converted to MathML at build time, no script and no CDN, so it reads from
  disk with no network. The command then checks the built site (``site.site_problems``: every link, image and
  anchor resolves, nothing loads from elsewhere) and exits 1 if it does not.

``python -m opticam_lib.edition figure`` redraws the Opti-CAM pipeline figure the glossary and the site show
(``notebooks/figures/opticam_pipeline.png``, from a real run of the offline model).

``python -m opticam_lib.edition check`` lists notebooks whose exercises break the course's convention (below).

The convention (``notebooks/README.md``): an **exercise** is a code cell that contains ``raise
NotImplementedError`` (the student replaces it) and calls a checker ``check_...(...)``; it is followed at once
by its **solution**, a code cell tagged ``solution``, hidden (``"jupyter": {"source_hidden": true}``), whose
first line is ``# SOLUTION`` and which calls the checker again. Neither edition executes anything.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opticam_lib.course.navigation import COURSE, COURSE_HOME, navigation_problems, write_navigation
from opticam_lib.course.notebook_files import (  # re-exported: the editions' notebook helpers
    NOTEBOOK_GLOB,
    SOLUTION_TAG,
    course_notebooks,
    is_solution,
    read_notebook,
)
from opticam_lib.course.notebook_files import cell_source as _source
from opticam_lib.course.notebook_files import nbformat_module as _nbformat
from opticam_lib.errors import InputError, OptiCAMError

if TYPE_CHECKING:  # annotations only: nbformat is imported when a notebook is read
    from nbformat import NotebookNode

_CHECKER = re.compile(r"\bcheck_\w+\s*\(")
_RAISE_TODO = re.compile(r"^\s*raise NotImplementedError\b", re.MULTILINE)


def is_exercise(cell: Mapping[str, Any]) -> bool:
    """True for a code cell, not a solution, that holds a ``raise NotImplementedError`` for the student."""
    return (
        cell.get("cell_type") == "code" and not is_solution(cell) and bool(_RAISE_TODO.search(_source(cell)))
    )


_COLAB_FOLDER = re.compile(
    r"(https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/)notebooks/"
)


def student_notebook(nb: NotebookNode, folder: str | None = None) -> NotebookNode:
    """The student version of notebook ``nb`` (not modified): solution cells removed; every code cell's outputs
    and execution count cleared, with the run's records (cell metadata ``execution`` timestamps, the
    notebook's saved ``widgets`` state). ``folder``: where the edition is published beside ``notebooks/`` in the
    same repository; its "Open in Colab" badges then open that folder's copy, not the teacher's notebooks (which
    hold the solutions). Every other cell, source and metadata is kept as it is."""
    out = copy.deepcopy(nb)
    out.cells = [c for c in out.cells if not is_solution(c)]
    for cell in out.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        elif folder is not None and cell.get("cell_type") == "markdown":
            cell["source"] = _COLAB_FOLDER.sub(lambda m: f"{m.group(1)}{folder}/", _source(cell))
        cell.get("metadata", {}).pop("execution", None)
    out.metadata.pop("widgets", None)
    return out


def _python(src: str) -> ast.Module | None:
    """The cell's code parsed, IPython magics and shell lines blanked; None when it does not parse."""
    lines = ("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _defined_functions(src: str) -> set[str]:
    """The functions a cell defines at its top level (the student's, in an exercise cell)."""
    tree = _python(src)
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} if tree else set()


def _unguarded_calls(src: str, names: set[str]) -> set[str]:
    """The ``names`` a cell calls outside a ``try`` whose handlers catch ``NotImplementedError``: calls that
    crash the student edition while the exercise that defines them is unsolved."""
    tree, found = _python(src), set()
    catching = {"NotImplementedError", "Exception", "BaseException"}

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            caught = any(
                h.type is None
                or any(
                    isinstance(t, ast.Name) and t.id in catching
                    for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
                )
                for h in node.handlers
            )
            for child in node.body:
                visit(child, guarded or caught)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
            if not guarded:
                found.add(node.func.id)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    if tree is not None:
        visit(tree, False)
    return found


def exercise_problems(nb: NotebookNode, name: str = "notebook") -> list[str]:
    """Every way ``nb`` breaks the exercise convention (module docstring); an empty list when it follows it.

    Also reports a notebook with no exercise at all (every notebook of the course has at least one), and a
    later cell that calls a function the student writes in an exercise outside ``try: ... except
    NotImplementedError``: in the student edition, before the exercise is solved, that cell would crash."""
    problems: list[str] = []
    cells = nb.cells
    exercises = 0
    students: set[str] = set()  # functions the exercises so far ask the student to write
    for i, cell in enumerate(cells):
        where = f"{name} cell {i}"
        if is_exercise(cell):
            exercises += 1
            students |= _defined_functions(_source(cell))
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or not is_solution(nxt):
                problems.append(f"{where}: exercise not followed by a cell tagged {SOLUTION_TAG!r}")
            if not _CHECKER.search(_source(cell)):
                problems.append(f"{where}: exercise calls no checker check_...(...)")
        elif is_solution(cell):
            src = _source(cell)
            if cell.get("cell_type") != "code":
                problems.append(f"{where}: a {cell.get('cell_type')} cell is tagged {SOLUTION_TAG!r}")
                continue
            if i == 0 or not is_exercise(cells[i - 1]):
                problems.append(
                    f"{where}: solution does not follow an exercise cell (raise NotImplementedError)"
                )
            if not src.lstrip().startswith("# SOLUTION"):
                problems.append(f"{where}: solution's first line is not '# SOLUTION'")
            if not cell.get("metadata", {}).get("jupyter", {}).get("source_hidden"):
                problems.append(f"{where}: solution is not hidden (metadata jupyter.source_hidden)")
            if not _CHECKER.search(src):
                problems.append(f"{where}: solution calls no checker check_...(...)")
        elif cell.get("cell_type") == "code" and students:
            for fn in sorted(_unguarded_calls(_source(cell), students)):
                problems.append(
                    f"{where}: calls {fn}() from an exercise outside try/except NotImplementedError "
                    "(the student edition crashes here until the exercise is solved)"
                )
    if exercises == 0:
        problems.append(f"{name}: no exercise (a code cell with raise NotImplementedError and a checker)")
    return problems


# text for teachers only in the course's markdown files (the pointer to TEACHERS.md): left out of the edition
_TEACHER_ONLY = re.compile(r"<!-- teacher -->.*?<!-- /teacher -->\s?", re.DOTALL)


def write_student_edition(src: str | Path = "notebooks", dst: str | Path = "student") -> list[Path]:
    """Write ``student_notebook`` of every course notebook of ``src`` into ``dst`` (created), plus ``src``'s
    README.md, GLOSSARY.md and figures/ where they exist (not TEACHERS.md, which holds the answers, nor the
    text between ``<!-- teacher -->`` and ``<!-- /teacher -->`` that points at it). "Open in
    Colab" badges point at ``dst``'s folder name in the same repository (``student/`` by default). Notebooks
    left in ``dst`` from an earlier run whose source is gone are removed. Returns the notebooks written, in order."""
    nbformat = _nbformat()
    src, dst = Path(src), Path(dst)
    sources = course_notebooks(src)
    if dst.resolve() == src.resolve():
        raise InputError("the student edition must go to another folder than its sources")
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources:
        target = dst / path.name
        nbformat.write(student_notebook(read_notebook(path), folder=dst.resolve().name), target)
        written.append(target)
    keep = {p.name for p in sources}
    for stale in dst.glob(NOTEBOOK_GLOB):
        if stale.name not in keep:
            stale.unlink()
    for name in ("README.md", "GLOSSARY.md"):  # not TEACHERS.md: it holds the answers
        if (src / name).is_file():
            text = _TEACHER_ONLY.sub("", (src / name).read_text(encoding="utf-8"))
            (dst / name).write_text(text, encoding="utf-8")
    if (src / "figures").is_dir():  # the glossary's figure
        shutil.copytree(src / "figures", dst / "figures", dirs_exist_ok=True)
    return written


def build_html(
    src: str | Path = "notebooks",
    dst: str | Path = "site",
    names: Iterable[str] | None = None,
    teacher: bool = False,
) -> Path:
    """Build the offline site (``opticam_lib.course.site.build_site``) and return the path of its ``index.html``.

    Args:
        src: folder of the notebooks (and of GLOSSARY.md, TEACHERS.md, figures/).
        dst: output folder (created).
        names: only these notebooks (file names or stems, e.g. ``["03_opti_cam"]``); default all, in order.
        teacher: keep the exercise solutions and add the teacher's guide (default: a site for students).
    """
    from opticam_lib.course.site import build_site

    return build_site(src, dst, names, teacher).index


def _badge_home(src: str | Path) -> str | None:
    """The home the notebooks' badges point at now (so ``nav`` and ``check`` keep a teacher's ``home``)."""
    import json as _json

    first = Path(src) / COURSE[0].file
    if not first.is_file():
        return COURSE_HOME
    text = "".join(_json.loads(first.read_text(encoding="utf-8"))["cells"][0]["source"])
    found = re.search(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/", text)
    return found.group(1) if found else COURSE_HOME


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m opticam_lib.edition {student,html,figure,check,nav,home,grade}``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m opticam_lib.edition", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("student", help="write the student edition (solutions removed, outputs cleared)")
    st.add_argument("--src", default="notebooks")
    st.add_argument("--dst", default="student")
    ht = sub.add_parser(
        "html", help="build the offline site: index, executed notebooks, glossary, guide, math as MathML"
    )
    ht.add_argument("--src", default="notebooks")
    ht.add_argument("--dst", default="site")
    ht.add_argument("names", nargs="*", help="only these notebooks (e.g. 03_opti_cam); default all")
    ht.add_argument(
        "--teacher",
        action="store_true",
        help="keep the exercise solutions and add the teacher's guide (default: a site students may read)",
    )
    fg = sub.add_parser(
        "figure", help="redraw the Opti-CAM pipeline figure (notebooks/figures/) from a real run"
    )
    fg.add_argument("--src", default="notebooks")
    ck = sub.add_parser(
        "check", help="list exercises that break the convention, and navigation drift (exit 1 if any)"
    )
    ck.add_argument("--src", default="notebooks")
    nv = sub.add_parser("nav", help="write notebook 00's table of contents and every previous/next link")
    nv.add_argument("--src", default="notebooks")
    hm = sub.add_parser(
        "home", help="write Colab badges and install cells for your published copy (none: remove them)"
    )
    hm.add_argument("repository", nargs="?", default=None, help="owner/repository on GitHub; omit to remove")
    hm.add_argument("--src", default="notebooks")
    gr = sub.add_parser(
        "grade", help="run submitted notebooks in fresh kernels and score their exercises with the checkers"
    )
    gr.add_argument("paths", nargs="+", help="submitted notebooks, or folders of them")
    gr.add_argument("--timeout", type=int, default=600, help="seconds per cell (default %(default)s)")
    gr.add_argument("--csv", default=None, help="also write the grades to this CSV file")
    gr.add_argument(
        "--chapter", default=None, help="grade every submission as this chapter (NN); default: its file name"
    )
    gr.add_argument("--src", default="notebooks", help="the course notebooks that define each chapter")
    args = parser.parse_args(argv)
    try:
        if args.command == "student":
            written = write_student_edition(args.src, args.dst)
            print(
                f"wrote {len(written)} student notebooks to {args.dst}/ (solutions removed, outputs cleared)"
            )
        elif args.command == "html":
            from opticam_lib.course.site import build_site, site_problems

            print(build_site(args.src, args.dst, args.names or None, args.teacher).summary())
            problems = site_problems(args.dst)  # the built site, checked as a browser would follow it
            print("\n".join(f"  broken: {p}" for p in problems) or "  every link, image and anchor resolves")
            return 1 if problems else 0
        elif args.command == "figure":
            from opticam_lib.course.site import PIPELINE_PNG, write_pipeline_png

            path = write_pipeline_png(Path(args.src) / PIPELINE_PNG)
            print(f"wrote {path} ({path.stat().st_size:,} bytes)")
        elif args.command == "grade":
            from opticam_lib.course.grader import format_grades, grade_all, write_csv

            if args.timeout < 1:
                raise InputError(f"--timeout must be a positive number of seconds, got {args.timeout}")
            results = grade_all(
                args.paths,
                args.timeout,
                args.chapter,
                args.src,
                progress=lambda line: print(line, file=sys.stderr, flush=True),
            )
            print(format_grades(results))
            if args.csv:
                print(f"wrote {write_csv(results, args.csv)}")
        elif args.command == "nav":
            changed = write_navigation(args.src, home=_badge_home(args.src))
            print(f"updated {len(changed)} notebooks from opticam_lib.course.navigation.COURSE")
        elif args.command == "home":
            changed = write_navigation(args.src, home=args.repository)
            where = f"badges and installs from {args.repository}" if args.repository else "no badges"
            print(f"updated {len(changed)} notebooks: {where}")
        else:
            problems = [
                p
                for path in course_notebooks(args.src)
                for p in exercise_problems(read_notebook(path), path.name)
            ]
            # the course's folder (not a stray one)
            if any((Path(args.src) / c.file).exists() for c in COURSE):
                problems += navigation_problems(args.src, home=_badge_home(args.src))
            print(
                "\n".join(problems)
                if problems
                else "every exercise has a hidden solution and a checker; navigation follows COURSE"
            )
            return 1 if problems else 0
    except OptiCAMError as err:  # a bad argument, a kernel that cannot start: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
