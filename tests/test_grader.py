"""The grader (python -m opticam_lib.edition grade): a solved, a half-solved and a broken submission, each run
in a fresh kernel and scored by the course's own checkers."""

from __future__ import annotations

import nbformat
import pytest

from opticam_lib.course.edition import main as edition_main
from opticam_lib.course.grader import format_grades, grade_notebook, submissions
from opticam_lib.errors import InputError

SETUP = "from opticam_lib.course.exercises import check_average_gain, check_target_rule\nimport torch"
RIGHT_1 = """def my_average_gain(p, o):
    return float(100 * ((o - p).clamp(min=0) / (1 - p)).mean())


check_average_gain(my_average_gain)"""
WRONG_1 = """def my_average_gain(p, o):
    return float(100 * (o > p).float().mean())  # counts images: that is AI, wrong


check_average_gain(my_average_gain)"""
RIGHT_2 = """def my_target(probs, labels, rule):
    if rule == "ground_truth":
        return labels
    order = torch.argsort(probs, dim=1, descending=True)
    return {"most": order[:, 0], "second": order[:, 1], "least": order[:, -1]}[rule]


check_target_rule(my_target)"""
TODO_2 = """def my_target(probs, labels, rule):
    raise NotImplementedError("return one class id per image")


check_target_rule(my_target)"""
BUGGY_2 = """def my_target(probs, labels, rule):
    return undefined_name


check_target_rule(my_target)"""


def _submission(path, *cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), nbformat.v4.new_markdown_cell("## Exercises")]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "submissions"
    d.mkdir()
    _submission(d / "solved.ipynb", RIGHT_1, RIGHT_2)
    _submission(d / "half.ipynb", RIGHT_1, TODO_2)
    _submission(d / "broken.ipynb", WRONG_1, BUGGY_2, "raise SystemExit('the student left this in')")
    return d


@pytest.mark.slow
def test_solved_half_and_broken_submissions(folder, capsys):
    solved = grade_notebook(folder / "solved.ipynb", timeout=120)
    assert [(r.checker, r.status) for r in solved] == [
        ("check_average_gain", "pass"),
        ("check_target_rule", "pass"),
    ]
    assert solved[0].message.startswith("✓")
    half = grade_notebook(folder / "half.ipynb", timeout=120)
    assert [r.status for r in half] == ["pass", "not attempted"]
    broken = grade_notebook(folder / "broken.ipynb", timeout=120)
    assert [r.status for r in broken] == ["fail", "error"]
    assert "NameError" in broken[1].message
    assert "that is AI" in broken[0].message  # the checker's hint, as the student saw it
    # the command: a folder, a table and a CSV
    csv_path = folder.parent / "grades.csv"
    assert edition_main(["grade", str(folder), "--timeout", "120", "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "solved.ipynb: 2 of 2 exercises passed" in out and "half.ipynb: 1 of 2" in out
    assert "broken.ipynb: 0 of 2" in out
    assert csv_path.read_text().count("\n") == 1 + 6


def test_grader_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        submissions([tmp_path / "missing"])
    with pytest.raises(InputError, match="no notebooks"):
        submissions([tmp_path])
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json")
    with pytest.raises(InputError, match="not a readable notebook"):
        grade_notebook(bad)
    assert "0 of 0" not in format_grades([])
