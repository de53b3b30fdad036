"""The grader (python -m opticam_lib.edition grade): a solved, a half-solved and a broken submission, each run
in a fresh kernel and scored by the course's own checkers."""

from __future__ import annotations

import functools

import nbformat
import pytest
import torch

from opticam_lib.course.edition import main as edition_main
from opticam_lib.course.exercises import GRADER_TOKEN_ENV, check_average_gain, receipt
from opticam_lib.course.grader import (
    chapter_exercises,
    chapter_of,
    checker_calls,
    format_grades,
    grade_all,
    grade_notebook,
    submissions,
)
from opticam_lib.errors import InputError, MissingDependencyError

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


def _chapter(folder, number, *checkers):
    """A course folder with one teacher notebook NN_chapter.ipynb whose exercises call ``checkers``."""
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)]
    for name in checkers:
        nb.cells.append(nbformat.v4.new_code_cell(f"def f():\n    raise NotImplementedError\n\n\n{name}(f)"))
        solution = nbformat.v4.new_code_cell(f"# SOLUTION\n{name}(f)")
        solution.metadata["tags"] = ["solution"]
        nb.cells.append(solution)
    nbformat.write(nb, folder / f"{number}_chapter.ipynb")
    return folder


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
    assert [(r.exercise, r.status) for r in broken] == [(0, "error"), (1, "fail"), (2, "error")]
    # outside the exercises
    assert "SystemExit" in broken[0].message and "code cell 4 (`raise SystemExit" in broken[0].message
    assert "NameError" in broken[2].message
    assert "that is AI" in broken[1].message  # the checker's hint, as the student saw it
    # the command: a folder graded as chapter 98 of a course folder, a table and a CSV
    course = _chapter(folder.parent / "course", "98", "check_average_gain", "check_target_rule")
    csv_path = folder.parent / "grades.csv"
    argv = ["grade", str(folder), "--timeout", "120", "--csv", str(csv_path), "--chapter", "98"]
    assert edition_main([*argv, "--src", str(course)]) == 0
    out = capsys.readouterr().out
    assert "solved.ipynb: 2 of 2 exercises passed" in out and "half.ipynb: 1 of 2" in out
    assert "broken.ipynb: 0 of 2" in out
    assert csv_path.read_text().count("\n") == 1 + 7  # six exercises and broken's note


HAND_PRINTED = """def my_target(probs, labels, rule):
    return labels  # wrong for three of the four rules


try:
    check_target_rule(my_target)
except AssertionError:
    pass
print("✓ correct: trust me")"""
TODO_PRINTED = """def my_average_gain(p, o):
    raise NotImplementedError


check_average_gain(my_average_gain)
print("✓ correct")"""
SLOW = """import time

def my_average_gain(p, o):
    time.sleep(60)


check_average_gain(my_average_gain)"""


@pytest.mark.slow
def test_a_hand_printed_tick_is_not_a_pass(tmp_path):
    never_called = "if False:\n    check_spearman(print)\nprint('✓ correct')"
    setup = "from opticam_lib.course.exercises import check_spearman"
    path = _submission(tmp_path / "98_cheat.ipynb", setup, TODO_PRINTED, HAND_PRINTED, never_called)
    results = grade_notebook(path, timeout=120)
    assert [r.status for r in results] == ["not attempted", "fail", "error"]
    assert "caught in the cell" in results[1].message  # the checker failed, the student hid it
    assert "no receipt" in results[2].message


@pytest.mark.slow
def test_time_limit_missing_exercise_other_chapter_and_unreadable_file(tmp_path, capsys):
    course = _chapter(tmp_path / "course", "98", "check_average_gain", "check_target_rule")
    _chapter(course, "97", "check_spearman")
    subs = tmp_path / "subs"
    for student in ("alice", "bob"):
        (subs / student).mkdir(parents=True)
    # alice: the first exercise sleeps past the limit (the next one still runs), the second call was deleted
    _submission(
        subs / "alice" / "98_chapter.ipynb", SLOW, RIGHT_2.replace("check_target_rule(my_target)", "")
    )
    # bob: the same file name; he solved both
    _submission(subs / "bob" / "98_chapter.ipynb", RIGHT_1, RIGHT_2)
    # carol handed in chapter 98's work as chapter 97, and dan's file is not a notebook
    _submission(subs / "97_carol.ipynb", RIGHT_1, RIGHT_2)
    (subs / "98_dan.ipynb").write_text("{ not json")
    (subs / "essay.ipynb").write_text("{}")  # no chapter number
    results = grade_all([subs], timeout=5, src=course)
    by = {(r.notebook, r.exercise): r for r in results}
    assert by["alice/98_chapter.ipynb", 1].status == "timeout"
    assert by["alice/98_chapter.ipynb", 2].status == "missing"
    assert [by["bob/98_chapter.ipynb", k].status for k in (1, 2)] == ["pass", "pass"]
    assert by["97_carol.ipynb", 1].status == "missing" and by["97_carol.ipynb", 1].checker == "check_spearman"
    assert (
        by["98_dan.ipynb", 0].status == "unreadable"
        and "not a readable notebook" in by["98_dan.ipynb", 0].message
    )
    assert by["essay.ipynb", 0].status == "unknown chapter"
    table = format_grades(results)
    assert "alice/98_chapter.ipynb: 0 of 2" in table and "bob/98_chapter.ipynb: 2 of 2" in table
    assert "97_carol.ipynb: 0 of 1" in table and "98_dan.ipynb: not graded (unreadable)" in table
    with pytest.raises(InputError, match="pass --src"):
        grade_all([subs], src=tmp_path / "elsewhere")
    with pytest.raises(InputError, match="unknown chapter '42'"):
        grade_all([subs], chapter="42", src=course)
    with pytest.raises(InputError, match="unknown chapter '08'"):  # "8" read as chapter 08
        grade_all([subs], chapter="8", src=course)


def test_receipts_need_the_graders_secret(monkeypatch, capsys):
    def right(p, o):
        return float(100 * ((o - p).clamp(min=0) / (1 - p)).mean())

    from opticam_lib.course import exercises

    monkeypatch.setattr(exercises, "_SECRET", {})  # the token it takes is forgotten after the test
    monkeypatch.delenv(GRADER_TOKEN_ENV, raising=False)
    assert check_average_gain(right) is True
    assert "receipt" not in capsys.readouterr().out  # a student's own run shows no receipt
    monkeypatch.setenv(GRADER_TOKEN_ENV, "secret")
    assert check_average_gain(right) is True
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == receipt("check_average_gain", "secret") != receipt("check_average_gain", "other")
    assert receipt("check_average_gain", "secret") != receipt("check_target_rule", "secret")


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
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.ipynb").write_text("{}")
    assert submissions([tmp_path]) == [(tmp_path / "a" / "x.ipynb", "a/x.ipynb"), (bad, "bad.ipynb")]


def test_chapter_exercises_of_the_course():
    chapters = chapter_exercises()
    assert chapters["00"] == ["check_masked_probability"]
    assert all(name.startswith("check_") for names in chapters.values() for name in names)
    assert len(chapters) == 12 and all(chapters.values())  # every chapter has at least one exercise


# --- review findings: several checkers per cell, best attempt counts, notes, labels, CSV ----------------------


def test_checker_calls_read_code_not_comments_or_helpers():
    cell = (
        "%matplotlib inline\n"
        "def check_shape(x):  # a student's helper, not a course checker\n"
        "    return x.shape\n"
        "# check_spearman(my_spearman)  <- commented out\n"
        "text = 'check_rollout(f)'\n"
        "check_shape(t)\n"
        "check_average_gain(my_ag); check_target_rule(my_target)\n"
        "check_average_gain(my_ag)\n"
    )
    assert checker_calls(cell) == ["check_average_gain", "check_target_rule"]
    broken = "check_target_rule(f)  # check_spearman(g)\nif x\n  check_rollout(h)"  # does not parse
    assert checker_calls(broken) == ["check_target_rule", "check_rollout"]
    assert checker_calls("check_typo(f)") == []


def test_chapter_from_the_file_name():
    assert chapter_of("03_opti_cam.ipynb") == "03"
    assert chapter_of("Copy of 05_fake_cam (1).ipynb") == "05"
    assert chapter_of("alice-07.ipynb") == "07" and chapter_of("07.ipynb") == "07"
    assert chapter_of("essay.ipynb") is None and chapter_of("2024_report.ipynb") is None
    assert chapter_of("03-opti-cam.ipynb") == "03"
    chapters, names = {"01": [], "03": []}, {"01": "cam", "03": "opti_cam"}
    assert chapter_of("hw01_03_opti_cam.ipynb", chapters, names) == "03"  # followed by its chapter's name
    assert chapter_of("group_97_03_alice.ipynb", chapters, names) == "03"  # the one that is a chapter


def test_submissions_labels_dedupe_and_skips(tmp_path):
    subs = tmp_path / "subs"
    for who in ("alice", "bob"):
        (subs / who).mkdir(parents=True)
        (subs / who / "03_x.ipynb").write_text("{}")
    (subs / "__MACOSX" / "alice").mkdir(parents=True)
    (subs / "__MACOSX" / "alice" / "._03_x.ipynb").write_text("resource fork")
    (subs / "alice" / "._03_x.ipynb").write_text("resource fork")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "03_y.ipynb").write_text("{}")
    (subs / "bob" / "03_link.ipynb").symlink_to(tmp_path / "outside" / "03_y.ipynb")
    assert "bob/03_link.ipynb" in [label for _, label in submissions([subs])]  # a link keeps its own name
    (subs / "bob" / "03_link.ipynb").unlink()
    found = submissions([subs / "alice", subs / "bob", subs / "alice" / "03_x.ipynb"])
    assert [label for _, label in found] == ["alice/03_x.ipynb", "bob/03_x.ipynb"]  # apart, once each
    assert [label for _, label in submissions([subs])] == ["alice/03_x.ipynb", "bob/03_x.ipynb"]
    assert [label for _, label in submissions([subs / "bob" / "03_x.ipynb"])] == ["03_x.ipynb"]


def test_table_keeps_both_ends_of_long_names_and_csv_is_spreadsheet_safe(tmp_path):
    from opticam_lib.course.grader import ExerciseResult, write_csv

    long = "section-B/" + "x" * 60 + "/alice/03_opti_cam.ipynb"
    rows = [
        ExerciseResult(long, 1, "check_saliency_map", "pass", "✓ correct"),
        ExerciseResult("=HYPERLINK(1)/03.ipynb", 0, "-", "error", "-1 is wrong"),
    ]
    table = format_grades(rows)
    first = table.splitlines()[1]
    assert first.startswith("section-B") and "03_opti_cam.ipynb" in first and "…" in first
    raw = write_csv(rows, tmp_path / "g.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # a byte-order mark: spreadsheets read the ✓ as UTF-8
    text = raw.decode("utf-8-sig")
    assert "'=HYPERLINK(1)/03.ipynb" in text and "'-1 is wrong" in text and ",-," in text


def test_a_function_that_calls_the_librarys_answer_fails(capsys):
    from opticam_lib.metrics.classification import average_gain

    def wrapped(p, o):
        return average_gain(p, o)

    with pytest.raises(AssertionError, match=r"library's own answer.*average_gain"):
        check_average_gain(wrapped)
    for given in (average_gain, functools.partial(average_gain), torch.no_grad()(average_gain)):
        with pytest.raises(AssertionError, match=r"is or calls the library's own answer"):
            check_average_gain(given)  # handed to the checker as it is
    assert check_average_gain(lambda p, o: float(100 * ((o - p).clamp(min=0) / (1 - p)).mean())) is True


def test_the_grader_secret_leaves_the_environment(monkeypatch, capsys):
    import os

    from opticam_lib.course import exercises

    monkeypatch.setattr(exercises, "_SECRET", {})
    monkeypatch.setenv(GRADER_TOKEN_ENV, "secret")
    assert exercises._grader_token() == "secret" and GRADER_TOKEN_ENV not in os.environ
    check_average_gain(lambda p, o: float(100 * ((o - p).clamp(min=0) / (1 - p)).mean()))
    assert capsys.readouterr().out.splitlines()[-1] == receipt("check_average_gain", "secret")


SEVERAL = """def my_spearman(a, b):
    return float(spearman(a, b))  # the library's answer, wrapped


check_average_gain(my_average_gain); check_target_rule(my_target)
check_spearman(my_spearman)"""
STUB_THEN_FIX = [TODO_2, WRONG_1, RIGHT_1.replace("check_average_gain(my_average_gain)", "")]
PASS_THEN_ERROR = """check_target_rule(my_target)
raise ValueError("a leftover line after the check")"""
PEEK = """import os
print(os.environ.get("OPTICAM_GRADER_TOKEN"))"""
HANG = """import time
time.sleep(60)"""
CRASH = """import os

def my_average_gain(p, o):
    os._exit(1)


check_average_gain(my_average_gain)"""


@pytest.mark.slow
def test_best_attempt_counts_several_checkers_per_cell_and_notes(tmp_path):
    course = _chapter(tmp_path / "course", "98", "check_average_gain", "check_target_rule", "check_spearman")
    setup = "from opticam_lib.course.exercises import check_spearman\nfrom opticam_lib.metrics.sanity import spearman"
    # erin: the stub and a wrong try left above her fix; both exercises checked in one cell; spearman wrapped
    _submission(tmp_path / "98_erin.ipynb", setup, *STUB_THEN_FIX, RIGHT_2.split("\n\n\n")[0], SEVERAL, PEEK)
    # fay: a passing check, then an error in the same cell; a setup cell that hangs; the kernel dies
    _submission(
        tmp_path / "98_fay.ipynb",
        RIGHT_2.split("\n\n\n")[0],
        PASS_THEN_ERROR,
        HANG,
        CRASH,
        "check_spearman(print)",
    )
    # gus: a failing check, then one that never runs in the same cell
    blame = WRONG_1 + "; check_spearman(print)"
    _submission(tmp_path / "98_gus.ipynb", "from opticam_lib.course.exercises import check_spearman", blame)
    paths = [tmp_path / f"98_{who}.ipynb" for who in ("erin", "fay", "gus")]
    results = grade_all(paths, timeout=8, src=course)
    by = {(r.notebook, r.exercise, r.status): r for r in results}
    erin = [(r.exercise, r.status) for r in results if r.notebook == "98_erin.ipynb"]
    assert erin == [(0, "check by hand"), (1, "pass"), (2, "pass"), (3, "fail")]
    assert "OPTICAM_GRADER_TOKEN" in by["98_erin.ipynb", 0, "check by hand"].message
    assert "library's own answer" in by["98_erin.ipynb", 3, "fail"].message
    # its own line, not the next one's
    assert by["98_erin.ipynb", 1, "pass"].message.startswith("✓ correct: AG")
    fay = [(r.exercise, r.status) for r in results if r.notebook == "98_fay.ipynb"]
    assert fay == [(0, "timeout"), (1, "error"), (2, "pass"), (3, "not run")]
    assert "code cell 4 (`import time`)" in by["98_fay.ipynb", 0, "timeout"].message
    assert "kernel died while running this cell" in by["98_fay.ipynb", 1, "error"].message
    assert "then the cell went on and ValueError" in by["98_fay.ipynb", 2, "pass"].message
    assert "kernel died in code cell 5" in by["98_fay.ipynb", 3, "not run"].message
    gus = [(r.exercise, r.status) for r in results if r.notebook == "98_gus.ipynb"]
    assert gus == [(1, "fail"), (2, "missing"), (3, "error")]
    assert "that is AI" in by["98_gus.ipynb", 1, "fail"].message  # the hint goes to the checker that failed
    assert "check_spearman did not run" in by["98_gus.ipynb", 3, "error"].message


def test_a_kernel_that_cannot_start_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from opticam_lib.course import grader

    path = _submission(tmp_path / "98_x.ipynb", RIGHT_1)
    monkeypatch.setattr(grader, "KERNEL_NAME", "no-such-kernel")
    with pytest.raises(
        MissingDependencyError, match=r"'no-such-kernel' Jupyter kernel.*pip install ipykernel"
    ):
        grade_notebook(path, timeout=30)
    course = _chapter(tmp_path / "course", "98", "check_average_gain")
    assert edition_main(["grade", str(path), "--src", str(course)]) == 2
    assert "error: could not start" in capsys.readouterr().err
