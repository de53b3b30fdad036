"""The self-check quizzes (opticam_lib.course.quiz): the question bank is well formed, every notebook shows its
quiz before its summary, answers are judged right and wrong as they should be, the text shown where widgets do
not render gives no answer away, and the widget's Check buttons give the feedback (no browser needed here;
tests/test_browser.py answers one quiz in JupyterLab)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from opticam_lib.course.navigation import COURSE
from opticam_lib.course.quiz import (
    Choice,
    Question,
    Quiz,
    assess,
    quiz,
    quiz_problems,
    shuffled,
)
from opticam_lib.course.quiz_questions import QUIZZES
from opticam_lib.errors import InputError

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

MC = Question(
    "Which one?",
    (
        Choice("right", "because it is", right=True),
        Choice("wrong", "because it is not"),
        Choice("other", "no"),
    ),
)
NUM = Question("How many?", answer=32.0, tolerance=0.5, hint="think of passes", explanation="32 it is")


def test_the_bank_is_well_formed() -> None:
    assert quiz_problems() == []
    assert {c.number for c in COURSE} == set(QUIZZES)
    for questions in QUIZZES.values():
        for q in questions:
            if q.numeric:
                assert assess(q, q.answer).right is True
                assert assess(q, q.answer + q.tolerance + 1.0).right is False
            else:
                rights = [c for c in q.choices if c.right]
                assert len(rights) == 1
                assert all(assess(q, i).right is c.right for i, c in enumerate(q.choices, start=1))


@pytest.mark.parametrize(
    "bad, problem",
    [
        ({"00": (MC, MC)}, "2 questions"),
        (
            {"00": (MC, MC, Question("two right?", (Choice("a", "x", True), Choice("b", "y", True))))},
            "2 right choices",
        ),
        ({"00": (MC, MC, Question("none right?", (Choice("a", "x"), Choice("b", "y"))))}, "0 right choices"),
        ({"00": (MC, MC, Question("one?", (Choice("a", "x", True),)))}, "1 choices"),
        ({"00": (MC, MC, Question("no reason?", (Choice("a", "", True), Choice("b", "y"))))}, "a reason"),
        ({"00": (MC, MC, Question("inf?", answer=float("inf"), hint="h", explanation="e"))}, "finite"),
        (
            {"00": (MC, MC, Question("neg?", answer=1.0, tolerance=-1, hint="h", explanation="e"))},
            "tolerance",
        ),
        ({"00": (MC, MC, Question("bare?", answer=3.0))}, "hint and an explanation"),
        (
            {"00": (MC, MC, Question("leak?", answer=32.0, hint="it is 32", explanation="e"))},
            "gives the answer",
        ),
        ({"00": (MC, MC, NUM), "99": (MC, MC, NUM)}, "99: not a notebook"),
    ],
)
def test_malformed_banks_are_reported(bad, problem: str) -> None:
    problems = quiz_problems(bad)
    assert any(problem in p for p in problems), problems


def test_multiple_choice_is_judged() -> None:
    assert assess(MC, 1).right is True and "because it is" in assess(MC, 1).message
    assert assess(MC, "a").right is True and assess(MC, "(A)").right is True
    wrong = assess(MC, "b")
    assert wrong.right is False and "because it is not" in wrong.message
    assert "right" not in wrong.message.replace("Right", "")  # the wrong choice's reason, not the right one
    for unreadable in (None, 0, 4, -1, "d", "ab", True, 1.5):
        assert assess(MC, unreadable).right is None


def test_option_numbers_count_from_1_like_the_questions_and_letters(capsys) -> None:
    # options are shown as (a), (b), (c) and questions count from 1: option number 2 is (b), not (c)
    assert assess(MC, 2).message == assess(MC, "b").message and assess(MC, 2).right is False
    assert assess(MC, 3).message == assess(MC, "c").message
    q = quiz("04")
    for number, question in enumerate(q.questions, start=1):
        if not question.numeric:
            for k, letter in enumerate("abcdefgh"[: len(question.choices)], start=1):
                assert q.answer(number, k) == q.answer(number, letter)
    for out_of_range in (0, 4, -1):
        message = assess(MC, out_of_range).message
        assert "1 to 3" in message and "(a) to (c)" in message, message
    capsys.readouterr()


def test_numbers_are_judged_within_the_tolerance() -> None:
    for ok in (32, 32.5, 31.5, "32", " 32.0 ", "3.2e1"):
        assert assess(NUM, ok).right is True, ok
    for no in (33, 31.4, "40", -32):
        result = assess(NUM, no)
        assert (
            result.right is False and "think of passes" in result.message and "32 it is" not in result.message
        )
    for unreadable in ("abc", "", None, float("nan"), True):
        assert assess(NUM, unreadable).right is None
    big = Question("channels?", answer=1280.0, hint="h", explanation="e")
    assert assess(big, "1,280").right is True
    pct = Question("percent?", answer=50.0, hint="h", explanation="e")
    assert assess(pct, "50%").right is True and assess(pct, 0.5).right is False


def test_text_shows_questions_but_no_answers() -> None:
    for key in QUIZZES:
        q = quiz(key)
        text, md = q.text(), q.markdown()
        for question in q.questions:
            assert question.prompt in md and question.prompt.split("<")[0][:30] in text
            if question.numeric:
                assert question.explanation not in md and question.explanation not in text
            for c in question.choices:
                assert c.text in md and c.text.split("<")[0][:30] in text
                assert c.why not in md  # the reasons appear only after answering
        assert "✓" not in md and "right" not in md.lower().replace("the right", "")
        assert "<sub>" not in text and "<sup>" not in text  # plain text: x_k and x^k instead


def test_shuffled_keeps_the_choices_and_is_stable() -> None:
    q = QUIZZES["05"][0]
    s = shuffled(q)
    assert sorted(c.text for c in s.choices) == sorted(c.text for c in q.choices)
    assert shuffled(q) == s
    positions = {
        [c.right for c in quiz(k).questions[i].choices].index(True)
        for k in QUIZZES
        for i, qq in enumerate(QUIZZES[k])
        if not qq.numeric
    }
    assert len(positions) > 2, "the right answer must not always be in the same place"


def test_quiz_lookup() -> None:
    assert quiz("05").notebook == quiz(5).notebook == quiz("05_fake_cam_and_average_gain").notebook == "05"
    assert quiz("5").notebook == quiz(" 5 ").notebook == "05"
    with pytest.raises(InputError, match="no quiz for notebook 42"):
        quiz("42")
    with pytest.raises(InputError, match="no quiz for notebook 123;"):  # the id as given, not "12"
        quiz("123")
    with pytest.raises(InputError, match="by its number"):
        quiz("fake cam")
    with pytest.raises(InputError, match="questions 1 to"):
        quiz("05").answer(9, "a")


def test_answer_prints_the_feedback(capsys) -> None:
    q = Quiz("00", (MC, NUM))
    assert q.answer(2, 40).right is False
    assert q.answer(1, "a").right is True
    out = capsys.readouterr().out
    assert "✗ Not 40. think of passes" in out and "✓ Right: because it is" in out


def _checks(widget) -> list:
    """(input, Check button, feedback) of each question box of a quiz widget."""
    out = []
    for box in widget.children[1:]:
        _prompt, field, row = box.children
        button, feedback = row.children
        out.append((field, button, feedback))
    return out


def test_the_widget_gives_feedback_without_a_browser() -> None:
    import ipywidgets as w

    q = Quiz("00", (MC, NUM))
    widget = q.widget
    assert isinstance(widget, w.VBox) and q.widget is widget  # built once
    (radio, check1, fb1), (number, check2, fb2) = _checks(widget)
    assert isinstance(radio, w.RadioButtons) and radio.value is None and isinstance(number, w.Text)
    check1.click()
    assert "Choose one of the options" in fb1.value
    assert [value for _label, value in radio.options] == [1, 2, 3]  # as in answer(): (a) is 1
    radio.value = 2
    check1.click()
    assert "✗" in fb1.value and "because it is not" in fb1.value
    radio.value = 1
    check1.click()
    assert "✓" in fb1.value and "because it is" in fb1.value
    number.value = "abc"
    check2.click()
    assert "Type a number" in fb2.value
    number.value = "40"
    check2.click()
    assert "✗" in fb2.value and "think of passes" in fb2.value
    number.value = "32"
    check2.click()
    assert "✓" in fb2.value and "32 it is" in fb2.value
    assert fb1.value.count("✓") == 1  # each question has its own feedback
    radio.value = 2  # a new answer: the feedback on the old one goes
    assert fb1.value == ""
    number.value = "33"
    assert fb2.value == ""


def test_a_course_quiz_widget_accepts_its_right_answers() -> None:
    q = quiz("03")
    for (field, button, feedback), question in zip(_checks(q.widget), q.questions):
        if question.numeric:
            field.value = str(question.answer)
        else:
            field.value = [c.right for c in question.choices].index(True) + 1
        button.click()
        assert feedback.value.count("✓") == 1, feedback.value


def test_displayed_it_is_a_widget_with_a_text_fallback() -> None:
    bundle = quiz("05")._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Fake-CAM hides a single pixel" in bundle["text/plain"]
    assert "(answer with a number)" in quiz("04").text() and "*" not in quiz("04").text()
    assert "Fake-CAM hides a single pixel" in bundle["text/markdown"]


def _quiz_cells(nb: dict) -> list[int]:
    return [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and re.search(r"^quiz\(\"\d\d\"\)", "".join(c["source"]), re.M)
    ]


@pytest.mark.parametrize("chapter", COURSE, ids=[c.number for c in COURSE])
def test_every_notebook_shows_its_quiz_before_its_summary(chapter) -> None:
    nb = json.loads((NOTEBOOKS / chapter.file).read_text(encoding="utf-8"))
    cells = _quiz_cells(nb)
    assert len(cells) == 1, f"{chapter.file}: want one quiz cell, found {len(cells)}"
    source = "".join(nb["cells"][cells[0]]["source"])
    assert f'quiz("{chapter.number}")' in source, "a notebook shows its own quiz"
    summary = next(
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown" and "".join(c["source"]).lstrip().startswith("## Summary")
    )
    assert cells[0] < summary, "the quiz comes before the summary"
    assert not re.search(r"\bcheck_\w+\s*\(", source), "a quiz cell is not an exercise for the grader"


def test_quiz_04_break_even_accepts_the_last_cheaper_iteration_only() -> None:
    # F = 10 ms, B = 20 ms, K = 2048 (the question's numbers): Opti-CAM costs F + T (F + B), Score-CAM (K + 1) F
    question = QUIZZES["04"][0]
    assert (
        "K = 2,048" in question.prompt and "F = 10 ms" in question.prompt and "B = 20 ms" in question.prompt
    )
    f, b, k = 10, 20, 2048
    last = max(t for t in range(1, k) if f + t * (f + b) < (k + 1) * f)
    assert assess(question, last).right is True
    assert assess(question, f"{k / (1 + b / f):.2f}").right is True  # the boundary, as a student may write it
    assert assess(question, last + 1).right is False  # already dearer than Score-CAM
    assert assess(question, last - 1).right is False


FRACTION = Question("Which fraction?", answer=0.25, tolerance=0.005, hint="h", explanation="e")
PERCENT = Question("Which percentage?", answer=50.0, tolerance=0.5, hint="h", explanation="e")
SMALL = Question("Which rate?", answer=0.01, tolerance=0.0005, hint="h", explanation="e")


@pytest.mark.parametrize(
    "question, response, right",
    [
        (SMALL, "0,01", True),  # a decimal comma
        (SMALL, "0.01", True),
        (FRACTION, "0,25", True),
        (FRACTION, "25%", True),  # a percentage of a fraction answer
        (FRACTION, "25 %", True),
        (FRACTION, "25", False),  # no percent sign: 25 is not 0.25
        (PERCENT, "50%", True),
        (PERCENT, "50,0", True),
        (PERCENT, "0.5", False),
        (NUM, "32", True),
        (NUM, "3,2", False),  # 3.2, not 32
        (Question("How many?", answer=1280.0, tolerance=0.5, hint="h", explanation="e"), "1,280", True),
        (Question("How many?", answer=1280.5, tolerance=0.05, hint="h", explanation="e"), "1.280,5", True),
    ],
)
def test_numbers_are_read_as_a_learner_writes_them(question, response, right) -> None:
    assert assess(question, response).right is right


def test_a_wrong_number_is_quoted_as_it_was_read() -> None:
    assert assess(FRACTION, "0,3").message.startswith("✗ Not 0.3.")
    assert assess(FRACTION, "30%").message.startswith("✗ Not 30 %.")


def test_an_option_number_may_be_a_string_or_a_numpy_integer() -> None:
    import numpy as np

    assert assess(MC, "1").right is True and assess(MC, " 2 ").right is False
    assert assess(MC, np.int64(1)).right is True
    assert assess(MC, "4").right is None  # out of range: names no option
