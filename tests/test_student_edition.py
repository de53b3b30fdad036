"""The student edition and the static HTML build (opticam_lib.edition): the generator on a small synthetic
notebook, the exercise convention on every notebook of the course, and the edition generated from them.

``student/`` is generated on demand (it is in .gitignore), so there is no committed copy to keep in step: the
tests generate it from the current sources into a temporary folder and check it."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from opticam_lib import InputError
from opticam_lib.course.edition import (
    build_html,
    course_notebooks,
    exercise_problems,
    is_exercise,
    is_solution,
    main,
    student_notebook,
    write_student_edition,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
COURSE = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _png() -> str:
    """A real 4x4 PNG, base64 (as Jupyter stores image outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(0.4, 0.4), dpi=10)
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def synthetic(solution_hidden: bool = True, with_checker: bool = True):
    """Title, equation, an executed code cell with a figure, an exercise with its solution, a summary."""
    exercise = new_code_cell(
        "def f(x):\n    raise NotImplementedError('write it')\n\n\n"
        + ("check_thing(f);" if with_checker else "f(1)"),
        execution_count=3,
        outputs=[new_output("stream", name="stdout", text="… not solved yet\n")],
    )
    solution = new_code_cell(
        "# SOLUTION\ndef f(x):\n    return x\n\n\ncheck_thing(f);",
        execution_count=4,
        outputs=[new_output("stream", name="stdout", text="✓ correct\n")],
    )
    solution.metadata["tags"] = ["solution"]
    if solution_hidden:
        solution.metadata["jupyter"] = {"source_hidden": True}
    solution.metadata["execution"] = {"iopub.execute_input": "2026-11-26T19:56:37Z"}
    figure = new_code_cell(
        "plot()",
        execution_count=2,
        outputs=[new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})],
    )
    figure.metadata["tags"] = ["keep-me"]
    nb = new_notebook(
        cells=[
            new_markdown_cell("# 99 · A synthetic lesson\n\nThe map $S = \\sum_k w_k A^k$."),
            new_code_cell("x = 1", execution_count=1, outputs=[]),
            figure,
            new_markdown_cell("## Exercise"),
            exercise,
            solution,
            new_markdown_cell("## Summary"),
        ]
    )
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# ---------------------------------------------------------------------------------------------------------------
# the generator on a synthetic notebook


def test_student_notebook_removes_solutions_and_outputs_only():
    nb = synthetic()
    before = nbformat.writes(nb)
    st = student_notebook(nb)
    assert nbformat.writes(nb) == before, "the source notebook must not be modified"
    assert [c.source for c in st.cells] == [c.source for i, c in enumerate(nb.cells) if i != 5]
    assert not any(is_solution(c) for c in st.cells)
    for c in st.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None
        assert "execution" not in c.metadata
    assert st.cells[2].metadata["tags"] == ["keep-me"], "other metadata is kept"
    assert "widgets" not in st.metadata and st.metadata["kernelspec"] == nb.metadata["kernelspec"]
    nbformat.validate(st)


def test_exercise_convention_on_synthetic_notebooks():
    assert exercise_problems(synthetic()) == []
    assert is_exercise(synthetic().cells[4]) and not is_exercise(synthetic().cells[5])
    problems = exercise_problems(synthetic(solution_hidden=False))
    assert len(problems) == 1 and "not hidden" in problems[0]
    assert any("no checker" in p for p in exercise_problems(synthetic(with_checker=False)))
    nb = synthetic()
    del nb.cells[5]  # the solution
    assert any("not followed by a cell tagged 'solution'" in p for p in exercise_problems(nb))
    nb = synthetic()
    nb.cells[5].source = nb.cells[5].source.replace("# SOLUTION\n", "")
    assert any("# SOLUTION" in p for p in exercise_problems(nb))
    nb = synthetic()
    nb.cells.insert(2, nb.cells[5])  # a stray solution cell
    assert any("does not follow an exercise" in p for p in exercise_problems(nb))
    nb = synthetic()
    del nb.cells[4:6]
    assert any("no exercise" in p for p in exercise_problems(nb))


def test_write_student_edition(tmp_path):
    src, dst = tmp_path / "notebooks", tmp_path / "student"
    src.mkdir()
    nb = synthetic()
    nbformat.write(nb, src / "99_synthetic.ipynb")
    (src / "README.md").write_text("# contents\n")
    (src / "scratch.ipynb").write_text("{}")  # not a course notebook: ignored
    (src / "GLOSSARY.md").write_text("# glossary\n\n![pipeline](figures/p.png)\n")
    (src / "TEACHERS.md").write_text("# the answers\n")  # never handed out
    (src / "figures").mkdir()
    (src / "figures" / "p.png").write_bytes(b"\x89PNG")
    dst.mkdir()
    nbformat.write(synthetic(), dst / "98_gone.ipynb")  # left from an earlier run
    written = write_student_edition(src, dst)
    assert written == [dst / "99_synthetic.ipynb"]
    assert sorted(p.name for p in dst.iterdir()) == [
        "99_synthetic.ipynb",
        "GLOSSARY.md",
        "README.md",
        "figures",
    ]
    assert (dst / "figures" / "p.png").read_bytes() == b"\x89PNG"
    again = nbformat.read(dst / "99_synthetic.ipynb", as_version=4)
    assert nbformat.writes(again) == nbformat.writes(student_notebook(nb))
    with pytest.raises(InputError, match="another folder"):
        write_student_edition(src, src)
    with pytest.raises(InputError, match="no course notebooks"):
        course_notebooks(tmp_path)


def test_cli_student_and_errors(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    nbformat.write(synthetic(), src / "99_synthetic.ipynb")
    assert main(["student", "--src", str(src), "--dst", str(tmp_path / "st")]) == 0
    assert (tmp_path / "st" / "99_synthetic.ipynb").is_file()
    assert main(["check", "--src", str(src)]) == 0
    assert main(["student", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "st")]) == 2
    assert "notebook folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# every notebook of the course


@pytest.mark.skipif(not COURSE, reason="no course notebooks yet")
@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_course_notebook_exercises_follow_the_convention(path):
    nb = nbformat.read(path, as_version=4)
    assert exercise_problems(nb, path.name) == []


@pytest.mark.skipif(not COURSE, reason="no course notebooks yet")
def test_generated_edition_of_the_course(tmp_path):
    written = write_student_edition(NOTEBOOKS, tmp_path)
    assert [p.name for p in written] == [p.name for p in COURSE]
    for src, dst in zip(COURSE, written):
        nb, st = nbformat.read(src, as_version=4), nbformat.read(dst, as_version=4)
        nbformat.validate(st)
        assert not any(is_solution(c) for c in st.cells), dst.name
        assert all(c.outputs == [] and c.execution_count is None for c in st.cells if c.cell_type == "code")
        kept = [c for c in nb.cells if not is_solution(c)]
        assert [(c.cell_type, c.source) for c in st.cells] == [(c.cell_type, c.source) for c in kept]
        assert len(st.cells) < len(nb.cells), f"{dst.name}: no solution cell was removed"
        assert "# SOLUTION" not in nbformat.writes(st)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "TEACHERS.md" in (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    assert "TEACHERS.md" not in readme and "teacher -->" not in readme  # no pointer to a file left behind
    assert "[`GLOSSARY.md`](GLOSSARY.md)" in readme and not (tmp_path / "TEACHERS.md").exists()


# ---------------------------------------------------------------------------------------------------------------
# the HTML build


def test_build_html_synthetic(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    nbformat.write(synthetic(), src / "99_synthetic.ipynb")
    index = build_html(src, tmp_path / "site")
    page = (tmp_path / "site" / "99_synthetic.html").read_text()
    assert re.search(r'<img[^>]+src="data:image/png;base64,', page), "figures must be embedded as PNG"
    assert "<math" in page and "mathjax" not in page.lower(), "math as MathML, no MathJax"
    text = index.read_text()
    assert 'href="99_synthetic.html"' in text and "99 · A synthetic lesson" in text
    assert "work offline" in text
    with pytest.raises(InputError, match="not a course notebook"):
        build_html(src, tmp_path / "site", names=["42_nope"])


def test_site_leaves_solutions_out_unless_built_for_the_teacher(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    nbformat.write(synthetic(), src / "99_synthetic.ipynb")
    (src / "TEACHERS.md").write_text("# Guide\n\nThe answer is 42.\n")
    assert main(["html", "--src", str(src), "--dst", str(tmp_path / "site")]) == 0
    page = (tmp_path / "site" / "99_synthetic.html").read_text()
    assert "SOLUTION" not in page and "✓ correct" not in page and "not solved yet" in page
    assert not (tmp_path / "site" / "teachers.html").exists()
    assert "every link, image and anchor resolves" in capsys.readouterr().out
    assert main(["html", "--src", str(src), "--dst", str(tmp_path / "site"), "--teacher"]) == 0
    page = (tmp_path / "site" / "99_synthetic.html").read_text()
    assert "SOLUTION" in page and "✓ correct" in page
    assert "The answer is 42" in (tmp_path / "site" / "teachers.html").read_text()
    # the command checks what it built: a page that links a missing file makes it exit 1
    (tmp_path / "site" / "extra.html").write_text('<a href="nowhere.html">x</a>')
    assert main(["html", "--src", str(src), "--dst", str(tmp_path / "site")]) == 1
    assert "broken: extra.html: link nowhere.html" in capsys.readouterr().out


def test_student_calls_outside_a_guard_are_reported():
    nb = synthetic()
    use = new_code_cell("y = f(2)\nprint(y)")
    guarded = new_code_cell("try:\n    y = f(2)\nexcept NotImplementedError:\n    y = 2")
    nb.cells += [guarded]
    assert exercise_problems(nb) == []
    nb.cells += [use]
    assert exercise_problems(nb, "nb") == [
        "nb cell 8: calls f() from an exercise outside try/except NotImplementedError (the student edition "
        "crashes here until the exercise is solved)"
    ]


def test_student_badges_open_the_student_copy(tmp_path):
    nb = synthetic()
    url = "https://colab.research.google.com/github/me/course/blob/main/notebooks/99_synthetic.ipynb"
    nb.cells[
        0
    ].source += f"\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
    src = tmp_path / "notebooks"
    src.mkdir()
    nbformat.write(nb, src / "99_synthetic.ipynb")
    write_student_edition(src, tmp_path / "handout")
    text = nbformat.read(tmp_path / "handout" / "99_synthetic.ipynb", as_version=4).cells[0].source
    assert url.replace("/notebooks/", "/handout/") in text and "/notebooks/" not in text
    assert student_notebook(nb).cells[0].source == nb.cells[0].source  # no folder given: kept as it is


@pytest.mark.skipif(not COURSE, reason="no course notebooks yet")
def test_build_html_one_course_notebook(tmp_path):
    first = COURSE[0]
    index = build_html(NOTEBOOKS, tmp_path, names=[first.stem])
    page = (tmp_path / f"{first.stem}.html").read_text()
    assert page.count("data:image/png;base64,") >= 1, "the executed notebook's figures are embedded"
    assert "mathjax" not in page.lower() and "<script src" not in page
    assert f'href="{first.stem}.html"' in index.read_text()
    assert {f"{first.stem}.html", "index.html", "glossary.html"} <= {p.name for p in tmp_path.iterdir()}
    assert "# SOLUTION" not in page and "teachers.html" not in {p.name for p in tmp_path.iterdir()}
