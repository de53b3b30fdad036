"""The course's one list of notebooks, and what is generated from it: notebook 00's table of contents, the
previous/next links at the end of every notebook, and the "Open in Colab" badge and install cell of each.

``COURSE`` is the order of teaching. ``COURSE_HOME`` is where a copy of the course lives on GitHub
(``"owner/repository"``); it is None here, because nothing confirms that any public copy exists, and then no
notebook carries a badge or installs from a repository. A teacher who publishes a copy runs

    python -m opticam_lib.edition home OWNER/REPOSITORY     # badges and install cells for that copy
    python -m opticam_lib.edition nav                       # table of contents and links from COURSE

and ``python -m opticam_lib.edition check`` (and a test) fails when a notebook drifts from this list.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from opticam_lib.errors import InputError
from opticam_lib.paths import atomic_write

NAV_TAG = "navigation"  # the last cell of every notebook: previous / next
TOC_TAG = "table-of-contents"  # notebook 00's list of notebooks
INSTALL_MARK = 'find_spec("opticam_lib")'  # the install cell's test
BADGE = re.compile(r"\n?\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n?")
_HOME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")

#: where a published copy of the course lives ("owner/repository" on GitHub); None: nowhere confirmed, no badges
COURSE_HOME: str | None = None


@dataclass(frozen=True)
class Chapter:
    """One notebook: its file, its title in the table of contents, what it adds, and the paper's sections."""

    file: str
    title: str
    adds: str
    paper: str

    @property
    def number(self) -> str:
        """The notebook's two-digit number, e.g. ``"00"`` for ``00_welcome_and_setup.ipynb``."""
        return self.file[:2]


COURSE: tuple[Chapter, ...] = (
    Chapter(
        "00_welcome_and_setup.ipynb",
        "welcome and setup",
        "environment, profiles, downloads, the model and the photos, masking an image",
        "§5.1",
    ),
    Chapter(
        "01_class_activation_maps.ipynb",
        "the CAM family",
        "feature maps and hooks; CAM, Grad-CAM and their variants as weighted sums of feature maps",
        "§2, §3.1, eq. 1-2",
    ),
    Chapter(
        "02_score_cam.ipynb",
        "Score-CAM",
        "each feature map used as a mask; weights from class scores; one forward pass per channel",
        "§3.1, eq. 3-4",
    ),
    Chapter(
        "03_opti_cam.ipynb",
        "Opti-CAM",
        "the weights optimised by gradient ascent on the masked logit, for the paper's 100 iterations (close to convergence)",
        "§3, eq. 5-12",
    ),
    Chapter(
        "04_making_it_fast.ipynb",
        "making it fast",
        "timing honestly, what Opti-CAM costs per iteration, batching",
        "§5.3 (T)",
    ),
    Chapter(
        "05_fake_cam_and_average_gain.ipynb",
        "Fake-CAM and average gain",
        "AD, AI and the new AG; a trivial map that wins AD and AI; Table 1 on the photos",
        "§4, eq. 13-15, Table 1",
    ),
    Chapter(
        "06_perturbation_baselines.ipynb",
        "perturbation baselines",
        "extremal perturbations, LIME and GradientShap, built by hand and beside Opti-CAM",
        "§2, §3.1-3.2, Table 1",
    ),
    Chapter(
        "07_ablations.ipynb",
        "ablations",
        "objectives, normalisations, layers, learning rate and iterations, target class, each after 100 iterations",
        "§5.5, App. C, F, H",
    ),
    Chapter(
        "08_bounding_boxes.ipynb",
        "bounding boxes",
        "do explanations stay inside the object? localisation metrics; a world where the evidence is known",
        "§5.4, App. B",
    ),
    Chapter(
        "09_sanity_checks.ipynb",
        "sanity checks",
        "does the map change when the network is randomised?",
        "App. G",
    ),
    Chapter(
        "10_transformers.ipynb",
        "transformers",
        "ViT and DeiT: tokens reshaped to a grid, which layer, attention baselines",
        "§5.3.1, Table 2",
    ),
    Chapter(
        "11_beyond_the_paper.ipynb",
        "beyond the paper",
        "a faster optimiser (iRprop+), several classes, early stopping, your own images",
        "App. A",
    ),
)

_WORDS = {10: "Ten", 11: "Eleven", 12: "Twelve", 13: "Thirteen", 14: "Fourteen"}


def count_words(n: int | None = None) -> str:
    """``"Twelve"`` for the course's length (digits past the table)."""
    n = len(COURSE) if n is None else n
    return _WORDS.get(n, str(n))


def toc_markdown() -> str:
    """Notebook 00's section "The course": the list of notebooks, with links, from ``COURSE``."""
    rows = [
        f"| {c.number} | [{c.title}]({c.file}){' (this one)' if i == 0 else ''} | {c.adds} | {c.paper} |"
        for i, c in enumerate(COURSE)
    ]
    return "\n".join(
        [
            "## 1. The course",
            "",
            f"{count_words()} notebooks, meant to be read in order; each one assumes the previous ones.",
            "",
            "| # | notebook | what it adds | paper |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )


def nav_markdown(file: str) -> str:
    """The last cell of notebook ``file``: links to the previous and the next notebook of ``COURSE``."""
    files = [c.file for c in COURSE]
    if file not in files:
        raise InputError(f"{file} is not in the course's list (opticam_lib.course.navigation.COURSE)")
    i = files.index(file)
    parts = []
    if i > 0:
        c = COURSE[i - 1]
        parts.append(f"← previous: [{c.number} · {c.title}]({c.file})")
    parts.append(f"[table of contents]({COURSE[0].file})" if i > 0 else "")
    if i + 1 < len(COURSE):
        c = COURSE[i + 1]
        parts.append(f"next: [{c.number} · {c.title}]({c.file}) →")
    else:
        parts.append("the last notebook of the course")
    return "---\n\n" + " · ".join(p for p in parts if p)


def badge(file: str, home: str | None) -> str:
    """The "Open in Colab" badge line for a copy at ``home`` ("owner/repository"), or "" without a home."""
    if home is None:
        return ""
    url = f"https://colab.research.google.com/github/{home}/blob/main/notebooks/{file}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def install_cell(home: str | None) -> str:
    """The second cell of every notebook: install the library where it is missing (Colab), or say how."""
    head = "import importlib.util\n\n"
    if home is None:
        return head + (
            'if importlib.util.find_spec("opticam_lib") is None:  # not installed: see the README\n'
            "    raise ModuleNotFoundError(\n"
            '        "opticam_lib is not installed: run `bash scripts/setup.sh` in the course folder, "\n'
            '        "then open the notebooks with `bash scripts/lab.sh`"\n'
            "    )"
        )
    return head + (
        'if importlib.util.find_spec("opticam_lib") is None:  # Colab / hosted Jupyter: install the course library\n'
        f'    %pip install -q "opticam_lib @ git+https://github.com/{home}"'
    )


def _validate_home(home: str | None) -> str | None:
    if home is not None and not _HOME.match(home):
        raise InputError(f"the course's home must be 'owner/repository' on GitHub, got {home!r}")
    return home


def _source(cell: dict) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _set(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def _markdown(text: str, tag: str) -> dict:
    return {
        "cell_type": "markdown",
        "id": f"course-{tag}",  # nbformat 4.5: every cell has an id, unique in its notebook
        "metadata": {"tags": [tag]},
        "source": text.splitlines(keepends=True),
    }


def _tagged(nb: dict, tag: str) -> int | None:
    for i, c in enumerate(nb["cells"]):
        if tag in c.get("metadata", {}).get("tags", []):
            return i
    return None


def apply_navigation(notebook: dict, file: str, home: str | None = COURSE_HOME) -> dict:
    """``notebook`` (nbformat JSON, changed in place and returned) with its generated parts made current."""
    home = _validate_home(home)
    cells = notebook["cells"]
    # the badge: right after the title line of the first cell
    first = _source(cells[0])
    text = BADGE.sub("\n", first).replace("\n\n\n", "\n\n")
    line = badge(file, home)
    if line:
        title, _, rest = text.partition("\n\n")
        text = f"{title}\n\n{line}\n\n{rest}"
    _set(cells[0], text)
    # the install cell
    for c in cells[:3]:
        if c["cell_type"] == "code" and INSTALL_MARK in _source(c):
            _set(c, install_cell(home))
            break
    # previous / next, as the last cell
    i = _tagged(notebook, NAV_TAG)
    if i is None:
        cells.append(_markdown(nav_markdown(file), NAV_TAG))
    else:
        _set(cells[i], nav_markdown(file))
    # notebook 00: the table of contents
    if file == COURSE[0].file:
        j = _tagged(notebook, TOC_TAG)
        if j is None:
            j = next(k for k, c in enumerate(cells) if _source(c).startswith("## 1. The course"))
            cells[j].setdefault("metadata", {}).setdefault("tags", []).append(TOC_TAG)
        source = _source(cells[j])
        rest = source.split("\n\n**How to move", 1)
        tail = "\n\n**How to move" + rest[1] if len(rest) == 2 else ""
        _set(cells[j], toc_markdown() + tail)
    return notebook


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, nb: dict) -> None:
    # a notebook is never left half-written
    atomic_write(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def write_navigation(folder: str | Path, home: str | None = COURSE_HOME) -> list[Path]:
    """Apply ``apply_navigation`` to every notebook of ``COURSE`` in ``folder``; returns the files changed."""
    folder = Path(folder)
    changed = []
    for c in COURSE:
        path = folder / c.file
        before = path.read_text(encoding="utf-8")
        nb = apply_navigation(_read(path), c.file, home)
        after = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        if after != before:
            atomic_write(path, after)
            changed.append(path)
    return changed


def navigation_problems(folder: str | Path, home: str | None = COURSE_HOME) -> list[str]:
    """What differs between the notebooks in ``folder`` and ``COURSE`` (empty when they agree)."""
    folder = Path(folder)
    problems = []
    on_disk = sorted(p.name for p in folder.glob("[0-9][0-9]_*.ipynb"))
    listed = [c.file for c in COURSE]
    if on_disk != sorted(listed):
        problems.append(f"notebooks on disk {on_disk} differ from COURSE {listed}")
    for c in COURSE:
        path = folder / c.file
        if not path.is_file():
            continue
        nb = _read(path)
        want = apply_navigation(json.loads(json.dumps(nb)), c.file, home)
        for k, (a, b) in enumerate(zip(nb["cells"], want["cells"])):
            if _source(a) != _source(b):
                problems.append(f"{c.file}: cell {k} is not what COURSE generates")
                break
        if len(nb["cells"]) != len(want["cells"]):
            problems.append(f"{c.file}: no navigation cell at the end")
    return problems
