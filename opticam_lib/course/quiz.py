"""Self-check quizzes: a few questions per notebook, answered in place.

The questions live in one place, ``quiz_questions.QUIZZES``; each notebook shows its own with one call,
``quiz("05")``, placed before its summary. In JupyterLab the call draws a widget: radio buttons (multiple
choice) or a number box (numeric), a Check button per question, and feedback that explains *why* an answer is
right or wrong. Where widgets do not render (a static page, GitHub, a terminal), the same call shows the
questions and their options as text, without the answers; ``quiz("05").answer(2, "b")`` (or
``answer(2, 2)``: options count from 1, as questions do) then prints the feedback for one answer.

The logic is pure and tested without a browser: ``assess(question, response)`` returns a ``Feedback``;
``quiz_problems()`` lists every way the question bank is malformed (empty for the course's).
"""

from __future__ import annotations

import html
import math
import random
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from opticam_lib.course.quiz_questions import QUIZZES, Choice, Question
from opticam_lib.errors import InputError

if TYPE_CHECKING:  # annotations only: ipywidgets is imported where it is used
    import ipywidgets

__all__ = ["QUIZZES", "Choice", "Feedback", "Question", "Quiz", "assess", "quiz", "quiz_problems", "shuffled"]

LETTERS = "abcdefgh"
#: long options wrap onto several lines: ipywidgets gives each radio label one fixed line, so they would overlap
QUIZ_CSS = (
    ".opticam-quiz .widget-radio-box label {display: flex; height: auto; white-space: normal; line-height: 1.35; "
    "margin-bottom: 4px; align-items: flex-start;} "
    ".opticam-quiz .widget-radio-box input {margin: 3px 6px 0 0; flex: none; order: -1;}"
)


@dataclass(frozen=True)
class Feedback:
    """The verdict on one response: ``right`` is None when the response could not be read (no choice made,
    not a number); ``message`` says why."""

    right: bool | None
    message: str


def _choice_index(question: Question, response: object) -> int | None:
    """The 0-based index of the option ``response`` names: a letter (``"b"``, ``"(B)"``) or a number counted from
    1, as the questions are (1 = (a)); None when it names none."""
    if isinstance(response, bool):
        return None
    if _is_numpy_number(response) and float(response) == int(response):  # type: ignore[arg-type]
        response = int(response)  # type: ignore[arg-type]
    if isinstance(response, str) and response.strip().isdigit():  # "2": the option number, as a string
        response = int(response.strip())
    if isinstance(response, int):
        return response - 1 if 1 <= response <= len(question.choices) else None
    if isinstance(response, str):
        r = response.strip().lower().rstrip(")").lstrip("(")
        if len(r) == 1 and r in LETTERS[: len(question.choices)]:
            return LETTERS.index(r)
    return None


def _number(response: object) -> tuple[float, bool] | None:
    """The number a response holds and whether it was written as a percentage, or None.

    Decimal commas are read as such ("0,25" is 0.25, "1.280,5" is 1280.5); a comma followed by exactly three digits
    and no decimal point is a thousands separator ("1,280" is 1280).
    """
    if isinstance(response, bool) or response is None:
        return None
    percent = False
    if isinstance(response, int | float) or _is_numpy_number(response):
        value = float(response)  # type: ignore[arg-type]
    elif isinstance(response, str):
        text = response.strip().replace(" ", "").replace("\u202f", "")
        percent = text.endswith("%")
        text = text.rstrip("%")
        if "," in text and "." in text:  # the later mark is the decimal one
            text = (
                text.replace(".", "").replace(",", ".")
                if text.rfind(",") > text.rfind(".")
                else text.replace(",", "")
            )
        elif "," in text:
            groups = text.split(",")
            thousands = len(groups) > 1 and all(len(g) == 3 and g.isdigit() for g in groups[1:])
            text = text.replace(",", "") if thousands else text.replace(",", ".")
        try:
            value = float(text)
        except ValueError:
            return None
    else:
        return None
    return (value, percent) if math.isfinite(value) else None


def _is_numpy_number(response: object) -> bool:
    return (
        type(response).__module__ == "numpy"
        and hasattr(response, "item")
        and getattr(response, "ndim", 1) == 0
    )


def assess(question: Question, response: object) -> Feedback:
    """Judge ``response`` to ``question``.

    Multiple choice: ``response`` is a choice's letter (``"b"``) or its number counted from 1 (``2`` for (b)).
    Numeric: a number or a string holding one (``"1,280"``, ``"50%"``). Returns a ``Feedback``; ``right`` is None
    for a response that cannot be read (nothing chosen, not a number, a letter or a number out of range).
    """
    if question.numeric:
        read = _number(response)
        if read is None:
            return Feedback(None, "Type a number (digits, optionally a decimal point), then check.")
        value, percent = read
        # "25%" is right both where the answer is 25 (a percentage) and where it is 0.25 (a fraction)
        for candidate in (value, value / 100) if percent else (value,):
            if abs(candidate - float(question.answer)) <= question.tolerance:
                return Feedback(True, f"✓ Right. {question.explanation}".strip())
        return Feedback(False, f"✗ Not {value:g}{' %' if percent else ''}. {question.hint}".strip())
    index = _choice_index(question, response)
    if index is None:
        n = len(question.choices)
        if isinstance(response, int) and not isinstance(response, bool):
            return Feedback(
                None,
                f"There is no option {response}: answer with a number from 1 to {n} or a letter from (a) to "
                f"({LETTERS[n - 1]}).",
            )
        return Feedback(None, "Choose one of the options, then check.")
    choice = question.choices[index]
    if choice.right:
        return Feedback(True, f"✓ Right: {choice.why} {question.explanation}".strip())
    return Feedback(False, f"✗ Not this one: {choice.why} Try another option.")


def _plain(text: str) -> str:
    """Text for a terminal: the course's simple inline markup removed."""
    text = re.sub(r"<sub>(.*?)</sub>", r"_\1", text)
    text = re.sub(r"<sup>(.*?)</sup>", r"^\1", text)
    return re.sub(r"</?(b|i|code)>", "", text)


@dataclass
class Quiz:
    """The questions of one notebook. Displayed, it is a widget in JupyterLab and text elsewhere."""

    notebook: str
    questions: tuple[Question, ...]
    _widget: Any = field(default=None, repr=False)

    # --- text, for wherever widgets do not render ------------------------------------------------------------
    def markdown(self) -> str:
        """The questions and options as Markdown, without the answers."""
        lines = [f"**Check yourself (notebook {self.notebook})**", ""]
        for i, q in enumerate(self.questions, start=1):
            lines.append(f"{i}. {q.prompt}")
            if q.numeric:
                lines.append("   *(answer with a number)*")
            for letter, c in zip(LETTERS, q.choices):
                lines.append(f"   - ({letter}) {c.text}")
            lines.append("")
        lines.append(
            f'Run the cell in Jupyter to answer with the widget, or call `quiz("{self.notebook}").answer(1, "a")` '
            "(question number, then a letter or an option number counted from 1) for the feedback."
        )
        return "\n".join(lines)

    def text(self) -> str:
        """The questions and options as plain text, without the answers."""
        plain = (
            self.markdown()
            .replace("**", "")
            .replace("`", "")
            .replace("*(answer with a number)*", "(answer with a number)")
        )
        return _plain(plain)

    def answer(self, number: int, response: object) -> Feedback:
        """Judge ``response`` to question ``number`` (1-based), print the feedback and return it; ``response`` is
        an option's letter or its number, also counted from 1 (1 = (a)), or a number for a numeric question."""
        if not isinstance(number, int) or not 1 <= number <= len(self.questions):
            raise InputError(
                f"notebook {self.notebook} has questions 1 to {len(self.questions)}, not {number!r}"
            )
        feedback = assess(self.questions[number - 1], response)
        print(_plain(feedback.message))
        return feedback

    # --- the widget --------------------------------------------------------------------------------------------
    @property
    def widget(self) -> ipywidgets.VBox:
        """The ipywidgets VBox (built once): per question a prompt, radio buttons or a number box, a Check
        button and a feedback line."""
        if self._widget is None:
            self._widget = build_widget(self)
        return self._widget

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = self.text()
        bundle["text/markdown"] = self.markdown()
        return bundle


def build_widget(q: Quiz) -> ipywidgets.VBox:
    """The quiz as ipywidgets: one box per question (prompt, input, Check button, feedback)."""
    import ipywidgets as w

    boxes = [
        w.HTML(
            f"<style>{QUIZ_CSS}</style><b>Check yourself</b> (notebook {html.escape(q.notebook)}): answer, then "
            "press Check."
        )
    ]
    for i, question in enumerate(q.questions, start=1):
        prompt = w.HTML(f"<b>{i}.</b> {question.prompt}", layout=w.Layout(width="100%"))
        if question.numeric:
            field_ = w.Text(placeholder="a number", layout=w.Layout(width="12em"))
        else:
            field_ = w.RadioButtons(
                options=[
                    (f"({letter}) {c.text}", k)
                    for k, (letter, c) in enumerate(zip(LETTERS, question.choices), start=1)
                ],
                value=None,
                layout=w.Layout(width="100%"),
            )
        button = w.Button(description="Check", tooltip=f"check your answer to question {i}")
        feedback = w.HTML("", layout=w.Layout(width="100%"))
        button.on_click(_checker(question, field_, feedback))
        # feedback on an earlier answer must not stay beside a new one
        field_.observe(_clear(feedback), names="value")
        boxes.append(
            w.VBox(
                [prompt, field_, w.HBox([button, feedback])],
                layout=w.Layout(margin="6px 0 6px 0"),
            )
        )
    box = w.VBox(boxes, layout=w.Layout(width="100%"))
    box.add_class("opticam-quiz")
    return box


def _checker(question: Question, field_, feedback):
    """The Check button's handler: judge the field's value, show the feedback."""

    def on_click(_button=None) -> None:
        result = assess(question, field_.value)
        colour = {True: "#1a7f37", False: "#b35900", None: "#555555"}[result.right]
        feedback.value = f'<span style="color:{colour}">{result.message}</span>'

    return on_click


def _clear(feedback):
    """The answer field's change handler: the feedback shown was about the previous answer, so remove it."""

    def on_change(_change=None) -> None:
        feedback.value = ""

    return on_change


def shuffled(question: Question) -> Question:
    """``question`` with its choices in a fixed order that depends only on its prompt (the bank lists the
    right choice first for readability; shown, it lands anywhere). Numeric questions are returned as they are."""
    if question.numeric:
        return question
    order = list(question.choices)
    random.Random(zlib.crc32(question.prompt.encode("utf-8"))).shuffle(order)
    return replace(question, choices=tuple(order))


def _key(notebook: str | int) -> str:
    """The notebook id: ``5`` and ``"5"`` -> ``"05"``; a string's leading digits, all of them (``"05_fake_cam"`` -> ``"05"``,
    ``"123"`` -> ``"123"``)."""
    if isinstance(notebook, int) and not isinstance(notebook, bool):
        return f"{notebook:02d}"
    match = re.match(r"^\d+", notebook.strip()) if isinstance(notebook, str) else None
    if match:
        return f"{int(match.group()):02d}"  # "5" and "05" alike
    raise InputError(f"name a notebook by its number, e.g. quiz('05'); got {notebook!r}")


def quiz(notebook: str | int, quizzes: Mapping[str, tuple[Question, ...]] | None = None) -> Quiz:
    """The quiz of ``notebook`` (``"05"``, ``5`` or ``"05_fake_cam_and_average_gain"``), ready to display; the
    choices of each question in the order of ``shuffled``."""
    bank = QUIZZES if quizzes is None else quizzes
    key = _key(notebook)
    if key not in bank:
        raise InputError(f"no quiz for notebook {key}; quizzes exist for {', '.join(sorted(bank))}")
    return Quiz(key, tuple(shuffled(q) for q in bank[key]))


def quiz_problems(quizzes: Mapping[str, tuple[Question, ...]] | None = None) -> list[str]:
    """Every way the question bank is malformed; empty when every notebook of ``COURSE`` has 3 or 4 questions,
    each multiple-choice question has 2 to 8 options with exactly one right and a reason for each, and each
    numeric question has a finite answer, a tolerance >= 0, a hint and an explanation."""
    from opticam_lib.course.navigation import COURSE

    bank = QUIZZES if quizzes is None else quizzes
    problems = []
    numbers = [c.number for c in COURSE]
    for n in numbers:
        if not 3 <= len(bank.get(n, ())) <= 4:
            problems.append(f"notebook {n}: {len(bank.get(n, ()))} questions (want 3 or 4)")
    for n in sorted(set(bank) - set(numbers)):
        problems.append(f"{n}: not a notebook of the course")
    for n, questions in bank.items():
        for i, q in enumerate(questions, start=1):
            where = f"notebook {n}, question {i}"
            if not q.prompt.strip():
                problems.append(f"{where}: no prompt")
            if q.numeric and q.choices:
                problems.append(f"{where}: both a numeric answer and choices")
            elif q.numeric:
                if not (isinstance(q.answer, int | float) and math.isfinite(q.answer)):
                    problems.append(f"{where}: the answer is not a finite number")
                elif not (math.isfinite(q.tolerance) and q.tolerance >= 0):
                    problems.append(f"{where}: the tolerance must be a number >= 0")
                elif assess(q, q.answer).right is not True:
                    problems.append(f"{where}: its own answer is not accepted")
                if not q.hint.strip() or not q.explanation.strip():
                    problems.append(f"{where}: a numeric question needs a hint and an explanation")
                elif re.search(rf"(?<![\d.]){re.escape(f'{q.answer:g}')}(?![\d.])", q.hint):
                    problems.append(f"{where}: the hint gives the answer away")
            else:
                if not 2 <= len(q.choices) <= len(LETTERS):
                    problems.append(f"{where}: {len(q.choices)} choices (want 2 to {len(LETTERS)})")
                right = sum(c.right for c in q.choices)
                if right != 1:
                    problems.append(f"{where}: {right} right choices (want exactly 1)")
                if any(not c.text.strip() or not c.why.strip() for c in q.choices):
                    problems.append(f"{where}: every choice needs a text and a reason (why)")
                if len({c.text for c in q.choices}) != len(q.choices):
                    problems.append(f"{where}: two choices have the same text")
    return problems
