"""opticam_lib.course.navigation: the committed notebooks follow the one list COURSE (table of contents,
previous/next links, no badge while the course has no confirmed home), and a teacher's home adds badges and
install cells that a second run removes again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from opticam_lib.course.edition import main as edition_main
from opticam_lib.course.navigation import (
    COURSE,
    COURSE_HOME,
    apply_navigation,
    nav_markdown,
    navigation_problems,
    toc_markdown,
)
from opticam_lib.errors import InputError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_the_committed_notebooks_follow_the_list():
    assert COURSE_HOME is None
    assert navigation_problems(NOTEBOOKS) == []
    first = json.loads((NOTEBOOKS / COURSE[0].file).read_text())
    text = "".join("".join(c["source"]) for c in first["cells"])
    assert "Twelve notebooks" in text and "colab" not in text.lower()
    for c in COURSE:  # every notebook listed, linked, in order
        assert f"]({c.file})" in toc_markdown()


def test_links_at_both_ends_and_in_the_middle():
    first, middle, last = (
        nav_markdown(COURSE[0].file),
        nav_markdown(COURSE[3].file),
        nav_markdown(COURSE[-1].file),
    )
    assert "previous" not in first and f"next: [01 · {COURSE[1].title}]({COURSE[1].file})" in first
    assert f"({COURSE[2].file})" in middle and f"({COURSE[4].file})" in middle
    assert "the last notebook of the course" in last and "next:" not in last
    with pytest.raises(InputError, match="not in the course's list"):
        nav_markdown("99_nothing.ipynb")


def test_drift_is_detected(tmp_path):
    folder = tmp_path / "nb"
    shutil.copytree(NOTEBOOKS, folder, ignore=shutil.ignore_patterns("*.md"))
    path = folder / COURSE[5].file
    nb = json.loads(path.read_text())
    nb["cells"][-1]["source"] = ["a link someone edited by hand"]
    path.write_text(json.dumps(nb, indent=1))
    (folder / "99_extra.ipynb").write_text(json.dumps(nb))
    problems = navigation_problems(folder)
    assert any(COURSE[5].file in p for p in problems) and any("differ from COURSE" in p for p in problems)


def test_a_teachers_home_adds_badges_and_installs_and_can_be_removed(tmp_path):
    folder = tmp_path / "nb"
    shutil.copytree(NOTEBOOKS, folder, ignore=shutil.ignore_patterns("*.md"))
    assert edition_main(["home", "someone/their-course", "--src", str(folder)]) == 0
    nb = json.loads((folder / COURSE[2].file).read_text())
    head, install = "".join(nb["cells"][0]["source"]), "".join(nb["cells"][1]["source"])
    assert (
        f"colab.research.google.com/github/someone/their-course/blob/main/notebooks/{COURSE[2].file}" in head
    )
    assert head.splitlines()[0].startswith("# 02")  # the title stays first
    assert "git+https://github.com/someone/their-course" in install
    assert edition_main(["check", "--src", str(folder)]) == 0  # nav and check keep the teacher's home
    assert edition_main(["nav", "--src", str(folder)]) == 0
    assert "someone/their-course" in "".join(
        json.loads((folder / COURSE[2].file).read_text())["cells"][0]["source"]
    )
    assert edition_main(["home", "--src", str(folder)]) == 0  # and removed again: back to the committed files
    for c in COURSE:
        assert (folder / c.file).read_text() == (NOTEBOOKS / c.file).read_text(), c.file
    with pytest.raises(InputError, match="owner/repository"):
        apply_navigation(nb, COURSE[2].file, home="not a repository")
