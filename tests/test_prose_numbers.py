"""Prose quotes numbers its own cells print. Every decimal number in a notebook's markdown, and every whole number
of 10 or more with a unit of what the notebooks measure ("50 passes", "170 s", "42 %", "1,281 passes", "64 images"; within 5 % after
"about"), outside math, code and headings, and not a section or equation number, must be, at the precision the
prose gives, a number printed
by one of that notebook's committed outputs, or be listed in ``NOT_PRINTED`` with the reason it need not be (a
number of the paper, a setting, a value derived from printed ones). A re-run that moves a printed number leaves
the old one in the prose: this test then names the cell and the number. The answers in ``notebooks/TEACHERS.md``
are held to the same rule against their notebook's outputs. The checker itself is tested on a made-up notebook."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from opticam_lib.course.notebook_files import cell_source, course_notebooks, read_notebook

ROOT = Path(__file__).resolve().parents[1]
DECIMAL = re.compile(r"(?<![\w.])x?(\d+\.\d+)(?![\d]|\.\d)")  # x1.06: a ratio as the outputs print it
# a whole number of 10 or more with a unit of what the notebooks measure: "34 passes", "170 s", "42 %", "1,281
# passes" (read as 1281), "64 images" (numbers below 10 are mostly settings such as "3 iterations")
COUNT = re.compile(
    r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d{2,})(?=\s?(?:passes|pass|iterations|iteration|s|seconds|ms|%|images|photos)(?![\w]))"
)
REFERENCE = re.compile(r"(section|sections|§|eq\.|Table|Fig\.|appendix)\s*$", re.IGNORECASE)

# {notebook number: {number as written: why no output prints it}}
NOT_PRINTED: dict[str, dict[str, str]] = {
    "00": {
        "3.2": "the table of contents cites §3.1-3.2 (the checker skips only the first of a range)",
        "4.7": "efficientnet_lite0's parameter count in millions, a fact about the model",
    },
    "02": {
        "100": "the paper's number of Opti-CAM iterations, a setting",
        "+7.71": "the smallest u_k of the five masks: printed in the figure's panel titles (u = +7.71)",
        "+8.92": "the largest u_k of the five masks: printed in the figure's panel titles",
        "0.8": "1/128 as a percent: the uniform share of 10 channels among 1,280, derived",
    },
    "03": {
        "0.001": "a learning rate the exercise asks the reader to try",
        "30": "the iteration count the same question suggests trying, not a result",
    },
    "04": {},
    "05": {
        "15.22": "the paper's Score-CAM T (Table 1), quoted for its ratio",
        "4.15": "the paper's Opti-CAM T (Table 1), quoted for its ratio",
    },
    "06": {
        "152.96": "the paper's ExPerturbation T (Table 1)",
        "0.35": "lambda_t's growth per iteration (1.0035), the paper's schedule",
    },
    "01": {"50000": "the size of ImageNet's validation set, the paper's data"},
    "07": {
        "1000": "the number of images of the paper's learning-rate figure, the paper's setting",
        "30": "an iteration count the explorer exercise suggests trying, not a result",
        "120": "notebook 05's convergence curve (100 to 120 iterations), cited",
        "12.01": "the paper's Table A9 (ResNet50, AD for the most probable class), quoted as it prints it",
        "28.45": "the paper's Table A9 (AD, second class), quoted as it prints it (the table cell shows 28.4)",
        "29.17": "the paper's Table A9 (AD, least probable class), quoted as it prints it",
    },
    "08": {
        "12.5": "the printed fraction 0.125 that follows the context, as a percent",
        "50000": "the size of ImageNet's validation set, the paper's data",
    },
    "09": {
        "1000": "the number of images of the paper's Fig. A6, the paper's setting",
        "2.5": "a worked example of tied ranks (5, 7, 7, 9 -> 1, 2.5, 2.5, 4)",
        "2.6": "ratio of printed object shares to the object's area, derived",
        "3.3": "ratio of printed object shares to the object's area, derived",
    },
}


def sign_of(text: str, start: int) -> str:
    """ "-" or "+" when the number starting at ``start`` carries a sign ("-0.84", "(+0.7", "−6.1"), else "": a
    dash between two numbers or inside a date ("1.57-1.80", "2026-11-29") is not a sign."""
    if start < 1 or text[start - 1] not in "-−+":
        return ""
    if start >= 2 and (text[start - 2].isalnum() or text[start - 2] in "._"):
        return ""
    return "+" if text[start - 1] == "+" else "-"


def signed_numbers(text: str) -> list[str]:
    """Every number of a text as written, with its sign when it has one ("-0.84", "+0.7", "1.054" of x1.054)."""
    return [
        sign_of(text, m.start()).replace("+", "") + m.group() for m in re.finditer(r"\d+(?:\.\d+)?", text)
    ]


def printed_numbers(nb) -> list[str]:
    """Every number in the text outputs (stream and text/plain) of the notebook's code cells, as printed (with
    its sign)."""
    values: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            values += signed_numbers(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return values


def text_decimals(markdown: str) -> list[tuple[str, str]]:
    """(number as written, context) for each decimal number of a markdown text, and each whole number of 10 or
    more followed by a unit (``COUNT``), outside math, code and headings, and not a section or equation number.
    A whole number after "about" is written as "about 60", and is checked to within 5 %."""
    text = re.sub(r"\$\$.*?\$\$", " ", markdown, flags=re.S)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"^#+ .*$", " ", text, flags=re.M)
    found = []
    for pattern in (DECIMAL, COUNT):
        for m in pattern.finditer(text):
            before = text[max(0, m.start() - 12) : m.start()]
            if REFERENCE.search(before):
                continue
            number = m.group(1).replace(",", "")  # 1,281 passes: the number 1281
            if pattern is COUNT and re.search(r"about\s+$", before):
                number = f"about {number}"
            elif pattern is DECIMAL:  # a signed decimal must match a printed value of the same sign
                number = sign_of(text, m.start()) + number
            found.append((number, text[max(0, m.start() - 50) : m.end() + 20].replace("\n", " ")))
    return found


def prose_decimals(nb) -> list[tuple[int, str, str]]:
    """(cell index, number as written, context) for each decimal number the markdown quotes."""
    return [
        (i, text, context)
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for text, context in text_decimals(cell_source(cell))
    ]


def is_printed(text: str, values: list[str]) -> bool:
    """Whether a number written as ``text`` is one of the printed ``values`` at the precision it is written with:
    a decimal to its last digit, a whole number exactly (58 is not 57.9, but is 58, 58.0 or a fraction 0.58
    (or 0.576) quoted as 58 %), "about 60" within 5 % of 60. A signed number ("-0.84", "+0.7") must match a
    value of its sign; an unsigned one matches either sign ("0.84 points lower" for a printed -0.84)."""
    signed = text[:1] in "+-"
    numbers = [float(v) if signed else abs(float(v)) for v in values]
    if text.startswith("+"):
        numbers = [v for v in numbers if v >= 0]
        text = text[1:]
    if text.startswith("about "):
        n = float(text.removeprefix("about "))
        return any(abs(v - n) <= max(0.5, 0.05 * n) for v in numbers)
    if "." not in text:  # also a fraction quoted as a percentage: 0.92 as "92 %"
        return any(v == float(text) or (v <= 1 and abs(100 * v - float(text)) <= 0.5) for v in numbers)
    half_step = 0.5 * 10 ** -len(text.split(".")[1])
    return any(abs(v - float(text)) <= half_step + 1e-9 for v in numbers)


def unprinted(nb, allowed: Mapping[str, str]) -> list[str]:
    """The prose numbers that no output prints at the prose's precision and that ``allowed`` does not list."""
    values = printed_numbers(nb)
    return [
        f"cell {i}: {text} is printed by no output (...{context}...)"
        for i, text, context in prose_decimals(nb)
        if text not in allowed and not is_printed(text, values)
    ]


# TEACHERS.md's answers quote their notebook's outputs too: {notebook: {number: why no output prints it}}
TEACHERS_NOT_PRINTED: dict[str, dict[str, str]] = {
    "03": {"120": "notebook 05's convergence curve (100 to 120 iterations), cited"},
    "05": {
        "about 810": "derived: Score-CAM's printed 397 s over 10/8 of Opti-CAM's printed seconds per batch of 8"
    },
}


def teachers_answers() -> dict[str, str]:
    """{notebook number: the text of its section in TEACHERS.md's answers to the end-of-notebook questions}."""
    text = (ROOT / "notebooks" / "TEACHERS.md").read_text(encoding="utf-8")
    answers = text.split("## Answers to the end-of-notebook questions", 1)[1]
    answers = re.split(r"^## ", answers, flags=re.M)[0]  # up to the next section, if one follows
    parts = re.split(r"^### (\d\d) ", answers, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_number_in_the_teachers_answers_is_printed_by_its_notebook() -> None:
    """A re-run that moves a number leaves the old one in the teacher's answer key: name it."""
    answers = teachers_answers()
    assert sorted(answers) == [p.name[:2] for p in course_notebooks(ROOT / "notebooks")]
    problems = []
    for chapter, text in answers.items():
        path = next((ROOT / "notebooks").glob(f"{chapter}_*.ipynb"))
        values = printed_numbers(read_notebook(path))
        allowed = TEACHERS_NOT_PRINTED.get(chapter, {})
        problems += [
            f"TEACHERS.md, answers to {chapter}: {number} is printed by no output of {path.name} (...{context}...)"
            for number, context in text_decimals(text)
            if number not in allowed and not is_printed(number, values)
        ]
    stale = [
        f"{chapter}: {number}"
        for chapter, numbers in TEACHERS_NOT_PRINTED.items()
        for number in numbers
        if number not in {n for n, _ in text_decimals(answers[chapter])}
    ]
    assert not problems and not stale, "\n".join(problems + [f"stale exception {s}" for s in stale])


@pytest.mark.parametrize("path", course_notebooks(ROOT / "notebooks"), ids=lambda p: p.name[:2])
def test_every_number_in_the_prose_is_printed(path: Path) -> None:
    nb = read_notebook(path)
    problems = unprinted(nb, NOT_PRINTED.get(path.name[:2], {}))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", course_notebooks(ROOT / "notebooks"), ids=lambda p: p.name[:2])
def test_every_exception_is_still_needed(path: Path) -> None:
    """An entry of ``NOT_PRINTED`` whose number the prose no longer quotes is stale: remove it."""
    quoted = {text for _, text, _ in prose_decimals(read_notebook(path))}
    stale = set(NOT_PRINTED.get(path.name[:2], {})) - quoted
    assert not stale, f"{path.name}: NOT_PRINTED lists numbers its prose does not quote: {sorted(stale)}"


def test_the_checker_finds_a_number_a_rerun_moved() -> None:
    from opticam_lib.course.notebook_files import nbformat_module

    nbf = nbformat_module()
    nb = nbf.v4.new_notebook()
    code = nbf.v4.new_code_cell("print(...)")
    code.outputs = [nbf.v4.new_output("stream", name="stdout", text="AG 51.84, AD 0.03, T 12.66 s\n")]
    nb.cells = [
        code,
        nbf.v4.new_markdown_cell("AG 51.8 and AD 0.0 (rounded: fine); the score rose to 12.63 (stale)."),
        nbf.v4.new_markdown_cell("## 3.7 a heading\nSection 5.3 and eq. 4.2 are references; `1.23` is code."),
        nbf.v4.new_markdown_cell("$$x = 9.99$$ and $y = 8.88$ are math; 7.77 is the paper's."),
    ]
    problems = unprinted(nb, {"7.77": "the paper's"})
    assert len(problems) == 1 and "12.63" in problems[0] and problems[0].startswith("cell 1")
    assert len(unprinted(nb, {})) == 2  # without the exception, 7.77 is reported too
    # whole numbers with a unit: exact, or within 5 % after "about"; thousands separators and small settings left out
    code.outputs = [
        nbf.v4.new_output("stream", name="stdout", text="50 passes, 59% saved, 170 s, AG 57.9, share 0.922\n")
    ]
    nb.cells = [
        code,
        nbf.v4.new_markdown_cell("iRprop+ reaches it in 34 passes (stale), saved about 60% in 170 s."),
        nbf.v4.new_markdown_cell(
            "about 70 s (too far) and 1,281 passes (read as 1281) are checked, 3 iterations is not; 50 passes is."
        ),
        nbf.v4.new_markdown_cell("58 passes is not 57.9 rounded; 92 % of the scenes is the share 0.922."),
    ]
    problems = unprinted(nb, {})
    assert [p.split(" is printed")[0] for p in problems] == [
        "cell 1: 34",
        "cell 2: about 70",
        "cell 2: 1281",
        "cell 3: 58",
    ]
    # signs: a signed number must match a printed value of its sign; a range's dash and a date's are no signs
    code.outputs = [
        nbf.v4.new_output(
            "stream", name="stdout", text="AG change -0.84 pts, r 0.9832, 2026-11-29, 1.57-1.80 s\n"
        )
    ]
    nb.cells = [
        code,
        nbf.v4.new_markdown_cell("AG fell by 0.84 points (-0.84); quartiles 1.57-1.80 s; r 0.9832."),
        nbf.v4.new_markdown_cell("A flipped sign: +0.84, and a positive r written -0.9832."),
    ]
    problems = unprinted(nb, {})
    assert [p.split(" is printed")[0] for p in problems] == ["cell 2: +0.84", "cell 2: -0.9832"]


# --- README.md and notebooks/README.md ----------------------------------------------------------------------------
# Each paragraph, list item or table of a README draws its numbers from the sources it names: a notebook
# (`NN_name.ipynb`, "notebook NN") by its printed outputs, a committed JSON (`benchmarks/results/*.json`,
# `opticam_lib/data/*.json`) by its values (a whole number may round one), and, where it speaks of "the paper", the
# paper's tables (`opticam_lib/data/paper_tables.json`). A table draws on the sources of the paragraph just before
# it. Every other number is listed in ``README_NOT_PRINTED`` with the reason no committed output holds it. The
# run-time column of notebooks/README.md is checked against the notebooks' execution times instead.
NOTEBOOK_NAME = re.compile(r"(?<!\d)(\d\d)_[a-z_]+\.ipynb|notebooks?\s+(\d\d)\b", re.IGNORECASE)
DATA_JSON = re.compile(r"(?:benchmarks/results|opticam_lib/data)/[\w.-]+\.json")
PAPER_TABLES = "opticam_lib/data/paper_tables.json"


def readme_blocks(markdown: str) -> list[str]:
    """The paragraphs, list items and tables of a markdown text; headings and fenced code left out, and the last
    cell of a table whose last column is "run time" emptied."""
    text = re.sub(r"^```.*?^```", "\n", markdown, flags=re.S | re.M)
    text = re.sub(r"^#+ .*$", "\n", text, flags=re.M)
    blocks: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        items = re.split(r"\n(?=- )", para.strip())
        blocks += [item for item in items if item]
    for i, block in enumerate(blocks):
        if block.startswith("|") and block.split("\n", 1)[0].rstrip().endswith("| run time |"):
            blocks[i] = "\n".join(re.sub(r"\|[^|]*\|\s*$", "| |", row) for row in block.split("\n"))
    return blocks


def walk_numbers(value: object) -> list[str]:
    """Every number in a JSON value as text (with its sign), each float also rounded to a whole number."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, float):
        return [repr(value), str(round(value))]
    if isinstance(value, dict):
        return [v for item in value.values() for v in walk_numbers(item)]
    if isinstance(value, list):
        return [v for item in value for v in walk_numbers(item)]
    return []


def json_numbers(path: Path) -> list[str]:
    import json

    return walk_numbers(json.loads(path.read_text(encoding="utf-8")))


TABLE_NAMES = re.compile(r"\bTables?\s+(A?\d+(?:(?:,\s*|\s+and\s+|\s*-\s*)A?\d+)*)")


def block_sources(block: str) -> list[str]:
    """The committed outputs a README block names: notebooks (as ``NN``), JSON paths, and the paper's tables it
    names (as ``paper Table N``: "Table 1", "Tables 2 and A8")."""
    names = sorted({a or b for a, b in NOTEBOOK_NAME.findall(block)})
    files = set(DATA_JSON.findall(block))
    tables = {t for group in TABLE_NAMES.findall(block) for t in re.findall(r"A?\d+", group)}
    return names + sorted(files) + [f"paper Table {t}" for t in sorted(tables)]


def source_numbers(source: str) -> list[str]:
    if source.startswith("paper Table "):
        import json

        tables = json.loads((ROOT / PAPER_TABLES).read_text(encoding="utf-8"))
        key = source.removeprefix("paper Table ")
        return walk_numbers(tables.get(key, {}))
    if source.endswith(".json"):
        return json_numbers(ROOT / source)
    return printed_numbers(read_notebook(next((ROOT / "notebooks").glob(f"{source}_*.ipynb"))))


Exceptions = Mapping[
    tuple[str, str], str
]  # {(number as written, words of its paragraph): why no source holds it}


def is_excepted(number: str, block: str, allowed: Exceptions) -> bool:
    return any(n == number and words in " ".join(block.split()) for n, words in allowed)


def readme_unprinted(
    markdown: str, allowed: Exceptions, numbers_of: Callable[[str], list[str]] = source_numbers
) -> list[str]:
    """The numbers of a README that no source its block names holds, and that ``allowed`` does not list for that
    paragraph."""
    problems = []
    previous: list[str] = []
    for block in readme_blocks(markdown):
        sources = block_sources(block)
        if block.startswith("|"):
            sources = sorted(set(sources) | set(previous))
        previous = sources
        values = [v for source in sources for v in numbers_of(source)]
        problems += [
            f"{number} is in none of {sources or 'no named source'} (...{context}...)"
            for number, context in text_decimals(block)
            if not is_excepted(number, block, allowed) and not is_printed(number, values)
        ]
    return problems


ISSUE_13 = "issue 13's measurement on an NVIDIA H200, quoted from the issue (that session kept no JSON)"
# {file: {(number as written, words of its paragraph): why no committed output holds it}}
README_NOT_PRINTED: dict[str, dict[tuple[str, str], str]] = {
    "README.md": {
        ("6.6", "CUDA libraries (about 6.6 GB"): "the size of the default PyTorch build in .venv, a fact",
        (
            "800",
            "TorchRay's settings (area 0.1, 800",
        ): "TorchRay's iterations for extremal perturbations, a setting",
        ("0.5", "mean = std = 0.5"): "the offline model's input mean and std, a fact about its weights",
        ("50000", "50,000 images need not fit"): "the size of ImageNet's validation set, the paper's data",
        ("14", "issue 13 had +14 %"): "issue 13's CPU overhead on one image, quoted for comparison",
        ("+8.5", "and +8.5 %"): "issue 13's CPU overhead at batch 8, quoted for comparison",
        (
            "about 27",
            "up to about 27 % apart",
        ): "derived: the largest q3 / q1 of the JSON's overhead rows, 1.345 / 1.058 = 1.27",
        ("1.68", "x1.68 on this"): "derived: the JSON's 16.84 / 10.04 image-iterations per second",
        ("1.15", "most of the x1.15 that issue 13"): ISSUE_13,
        ("1.02", "matrix products cost x1.02"): ISSUE_13,
        ("2.11", "H200 (torch 2.11"): ISSUE_13 + " (its torch version)",
        ("1.78", "Opti-CAM 1.78 s"): ISSUE_13,
        ("2.34", "Score-CAM 2.34 s"): ISSUE_13,
        ("0.01", "Grad-CAM 0.01 s"): ISSUE_13,
        ("0.84", "VGG16-BN Opti-CAM 0.84 s"): ISSUE_13,
        (
            "0.6",
            "0.6 MB together",
        ): "the three world_*.pt files together (0.58 MB), a fact about the repository",
        ("1.7", "about 1.7 to 2.7 times fewer"): "derived: 100 / 58 and 100 / 37 passes of the JSON",
    },
    "notebooks/README.md": {
        ("30", "builds in 10 to 30 seconds"): "how long the course site takes to build, a rough range",
        (
            "34",
            "03: 34 s in one earlier committed run",
        ): "notebook 03's execution metadata in its git history",
        ("55", "55 s in another"): "notebook 03's execution metadata in its git history",
        ("10", "took 23 min 10 s in a fresh clone"): "a fresh-clone CI run's log, not committed",
        ("35", "with set-up 25 min 35 s"): "a fresh-clone CI run's log, not committed",
    },
}


@pytest.mark.parametrize("name", sorted(README_NOT_PRINTED))
def test_every_number_in_the_readmes_is_held_by_a_source_they_name(name: str) -> None:
    """A re-run or a new benchmark that moves a number leaves the old one in a README: name it."""
    markdown = (ROOT / name).read_text(encoding="utf-8")
    allowed = README_NOT_PRINTED[name]
    problems = readme_unprinted(markdown, allowed)
    quoted = [(n, block) for block in readme_blocks(markdown) for n, _ in text_decimals(block)]
    stale = [
        f"stale exception {key}"
        for key in allowed
        if not any(is_excepted(n, b, {key: ""}) for n, b in quoted)
    ]
    assert not problems and not stale, f"{name}:\n" + "\n".join(problems + stale)


def execution_span(nb) -> float:
    """Seconds from the first cell's start to the last cell's end in a notebook's execution metadata."""
    from datetime import datetime

    stamps = [
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        for cell in nb.cells
        for value in cell.get("metadata", {}).get("execution", {}).values()
    ]
    assert stamps, "the notebook records no execution times (run it with nbconvert --execute)"
    return (max(stamps) - min(stamps)).total_seconds()


KERNEL_START_S = (
    10  # the column times nbconvert as a whole: kernel start and notebook I/O come on top of the cells
)


def test_run_times_are_those_of_the_committed_runs() -> None:
    """notebooks/README.md's run-time column is the wall time of each committed run: at least the span its cells'
    execution metadata records, and at most that plus the kernel's start. A re-run that leaves the old time fails."""
    table = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d\d) \|.*\| (\d+) s \|$", table, flags=re.M))
    assert sorted(rows) == [p.name[:2] for p in course_notebooks(ROOT / "notebooks")]
    problems = []
    for path in course_notebooks(ROOT / "notebooks"):
        span = execution_span(read_notebook(path))
        quoted = int(rows[path.name[:2]])
        if not span <= quoted + 0.5 <= span + KERNEL_START_S + 0.5:
            problems.append(f"{path.name}: the table says {quoted} s, its cells ran {span:.1f} s")
    assert not problems, "\n".join(problems)


def test_the_readme_checker_reads_each_block_against_the_sources_it_names() -> None:
    sources = {
        "05": ["53.9", "0.7", "100", "120"],
        "benchmarks/results/x.json": ["1.0539", "58", "32.46"],
        "paper Table 1": ["4.15"],
    }
    readme = "\n".join(
        [
            "# Speed",
            "Notebook 05 prints AG 53.9 (+0.7 from 100 to 120 iterations) and 52.3 (stale).",
            "",
            "- `benchmarks/results/x.json`: x1.054 over the floor, 58 passes in 32.5 s; Table 1's T is 4.15 s.",
            "- No source named: 53.9 here is not checked against the outputs of the fifth notebook.",
            "",
            "From `benchmarks/results/x.json`:",
            "",
            "| solver | passes | seconds |",
            "| --- | --- | --- |",
            "| iRprop+ | 58 passes | 32.5 s (33.1 s stale) |",
            "",
            "| # | notebook | run time |",
            "| --- | --- | --- |",
            "| 05 | [x](05_x.ipynb) | 148 s |",
        ]
    )
    problems = readme_unprinted(readme, {}, numbers_of=sources.__getitem__)
    assert [p.split(" is in")[0] for p in problems] == ["52.3", "53.9", "33.1"]
    excepted = {
        ("52.3", "and 52.3 (stale)"): "why",
        ("53.9", "No source named"): "why",
        ("33.1", "33.1 s"): "why",
    }
    assert readme_unprinted(readme, excepted, sources.__getitem__) == []
    # an exception holds for the paragraph whose words it names, not for the same number elsewhere
    problems = readme_unprinted(readme, {("53.9", "prints AG 53.9"): "why"}, sources.__getitem__)
    assert [p.split(" is in")[0] for p in problems] == ["52.3", "53.9", "33.1"]
    # the paper's numbers count only where the paragraph names their table
    assert readme_unprinted("The paper's T is 4.15 s.", {}, sources.__getitem__) != []
    # a JSON keeps its signs: a flipped sign in the prose is found
    signed = {"benchmarks/results/y.json": walk_numbers({"ag_difference": -0.84, "gain": 0.22})}
    text = "`benchmarks/results/y.json`: AG difference -0.84 points, +0.22 and 0.84 lower; flipped: +0.84, -0.22."
    problems = readme_unprinted(text, {}, signed.__getitem__)
    assert [p.split(" is in")[0] for p in problems] == ["+0.84", "-0.22"]
