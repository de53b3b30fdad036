"""The offline site without a browser: the LaTeX -> MathML converter (code spans, escaped dollars, failures kept
as source), the link rewriting, the site checker on made-up broken sites, a synthetic build, and the pipeline
figure on a tiny model. The real-browser check of a built site is in tests/test_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from conftest import make_images, make_tiny_cnn

from opticam_lib.course.figures import PIPELINE_PANELS, pipeline_figure
from opticam_lib.course.site import (
    WIDGET_PLACEHOLDER,
    MathConverter,
    build_site,
    latex_to_mathml,
    render_markdown,
    render_notebook,
    rewrite_links,
    site_problems,
)
from opticam_lib.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# math


def test_latex_to_mathml_inline_and_display() -> None:
    inline = latex_to_mathml(r"\frac{[p - o]_+}{p}")
    assert inline.startswith("<math") and 'display="inline"' in inline and "<mfrac>" in inline
    block = latex_to_mathml(r"\mathbf{u}^* := \arg \max_{\mathbf{u}} F", display=True)
    assert 'display="block"' in block and "arg" in block and "\\" not in block


@pytest.mark.parametrize("bad", [r"\frac{1}{", r"\notacommand{x} + 1"])
def test_latex_to_mathml_refuses_what_it_cannot_convert(bad: str) -> None:
    with pytest.raises(InputError, match="cannot convert"):
        latex_to_mathml(bad)


def test_math_outside_code_only() -> None:
    text = (
        "Inline $a_k$ and display\n\n$$\\sum_k w_k A^k$$\n\n"
        "Code `$not math$` and an escaped \\$5 price, costs $3 and $4.\n\n"
        "```python\nprint('$x$')\n```\n"
    )
    html = render_markdown(text, math := MathConverter(), "t")
    assert math.count == 2 and not math.failures
    assert html.count("<math") == 2 and 'display="block"' in html
    assert "<code>$not math$</code>" in html
    assert "$5 price" in html and "costs $3 and $4" in html  # no formula made of prices
    assert "print(&#x27;$x$&#x27;)" in html or "print('$x$')" in html


def test_inline_math_across_a_line_break_and_in_a_heading() -> None:
    html = render_markdown("# The map $S(\\mathbf{x};\n\\mathbf{u})$\n\ntext $x$", math := MathConverter())
    assert math.count == 2 and "$" not in re.sub(r"<[^>]+>", "", html)
    for tag in re.findall(r"<[^<>]+>", html):  # no MathML inside an attribute
        assert "<math" not in tag[1:]


def test_a_failing_formula_is_kept_as_source_and_reported() -> None:
    html = render_markdown("good $x^2$, bad $\\frac{1}{$ ok", math := MathConverter(), "page.md")
    assert math.count == 1 and len(math.failures) == 1
    assert math.failures[0].where == "page.md" and "\\frac{1}{" in str(math.failures[0])
    assert '<code class="math-source">$\\frac{1}{$</code>' in html


# ---------------------------------------------------------------------------------------------------------------
# links and the checker


def test_rewrite_links() -> None:
    pages = {"03_opti_cam.ipynb": "03_opti_cam.html", "GLOSSARY.md": "glossary.html"}
    page = (
        '<a href="03_opti_cam.ipynb#sec">next</a> <a href="GLOSSARY.md">g</a> <a href="../scripts/setup.sh">s</a>'
        ' <a href="https://example.org/x">e</a> <a href="#top">t</a>'
    )
    unlinked: list[str] = []
    out = rewrite_links(page, pages, "p", unlinked)
    assert '<a href="03_opti_cam.html#sec">next</a>' in out and '<a href="glossary.html">g</a>' in out
    assert '<a href="https://example.org/x">e</a>' in out and '<a href="#top">t</a>' in out
    assert '<span class="not-in-site" title="../scripts/setup.sh">s</span>' in out
    assert unlinked == ["p: link to ../scripts/setup.sh (not part of the site) shown as text"]


def _site(folder: Path, body: str, extra: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(f"<html><body>{body}</body></html>")
    for name, text in (extra or {}).items():
        (folder / name).write_text(text)
    return folder


def test_site_problems_accepts_a_good_site(tmp_path: Path) -> None:
    png = tmp_path / "s" / "figures" / "a.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG")
    site = _site(
        tmp_path / "s",
        '<a href="b.html#x">b</a> <img src="figures/a.png"> <a href="https://example.org">e</a>'
        ' <img src="data:image/png;base64,AAAA"> <code>$$ in code is fine</code>',
        {"b.html": '<h1 id="x">B</h1><a href="index.html">back</a>'},
    )
    assert site_problems(site) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('<a href="missing.html">x</a>', "no file missing.html"),
        ('<img src="figures/none.png">', "image figures/none.png"),
        ('<a href="b.html#nowhere">x</a>', "no id 'nowhere'"),
        ('<script src="https://cdn.example/mathjax.js"></script>', "loads https://cdn.example/mathjax.js"),
        ("<p>$$\\sum_k$$</p>", "raw $$"),
        ('<a href="file:///etc/passwd">x</a>', "scheme 'file'"),
        ('<img src="https://colab.research.google.com/assets/colab-badge.svg">', "fetched from elsewhere"),
    ],
)
def test_site_problems_finds_a_broken_site(tmp_path: Path, body: str, expected: str) -> None:
    site = _site(tmp_path / "s", body, {"b.html": '<h1 id="x">B</h1>'})
    problems = site_problems(site)
    assert len(problems) == 1 and expected in problems[0], problems


def test_site_problems_without_index(tmp_path: Path) -> None:
    assert site_problems(tmp_path) == [f"no index.html in {tmp_path}"]


# ---------------------------------------------------------------------------------------------------------------
# a synthetic build


def _notebook(text: str, nxt: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            f"# 98 · A lesson\n\nThe map $S = \\sum_k w_k A^k$:\n\n$$F(\\mathbf{{u}})$$\n{text}"
        ),
        nbformat.v4.new_code_cell(
            "print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")], execution_count=1
        ),
        nbformat.v4.new_markdown_cell(f"Next: [the next one]({nxt}), see the [glossary](GLOSSARY.md)."),
    ]
    return nb


def test_build_site_synthetic(tmp_path: Path) -> None:
    src = tmp_path / "nb"
    src.mkdir()
    badge = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.x/98_a.ipynb)"
    nbformat.write(_notebook(f"See `$x$`.\n\n{badge}\n", "99_b.ipynb"), src / "98_a.ipynb")
    nbformat.write(_notebook("Broken $\\frac{1}{$ here.", "98_a.ipynb"), src / "99_b.ipynb")
    (src / "GLOSSARY.md").write_text("# Glossary\n\n| a | b |\n| --- | --- |\n| AD | $\\frac{a}{b}$ |\n")
    (src / "TEACHERS.md").write_text("# Guide\n\n[setup](../scripts/setup.sh) and [03](98_a.ipynb)\n")
    student_site = build_site(src, tmp_path / "site")  # the default: a site students may read
    assert "teachers.html" not in {p.name for p in (tmp_path / "site").glob("*.html")}
    assert 'href="teachers.html"' not in (tmp_path / "site" / "index.html").read_text()
    assert student_site.unlinked == []
    report = build_site(src, tmp_path / "site", teacher=True)
    site = tmp_path / "site"
    assert sorted(p.name for p in site.glob("*.html")) == [
        "98_a.html", "99_b.html", "glossary.html", "index.html", "teachers.html",
    ]  # fmt: skip
    assert [str(f.latex) for f in report.math_failures] == ["\\frac{1}{"]
    assert report.unlinked == [
        "TEACHERS.md: link to ../scripts/setup.sh (not part of the site) shown as text"
    ]
    page = (site / "98_a.html").read_text()
    assert "<math" in page and "mathjax" not in page.lower() and "<script src" not in page
    assert "colab" not in page.lower(), "no Colab badge in the site"
    assert '<a href="99_b.html">' in page and '<a href="glossary.html">' in page
    assert (
        "<mfrac>" in (site / "glossary.html").read_text()
        and "<table>" in (site / "glossary.html").read_text()
    )
    index = (site / "index.html").read_text()
    for href in ("98_a.html", "99_b.html", "glossary.html", "teachers.html"):
        assert f'<a href="{href}">' in index
    assert '<a href="index.html">contents</a>' in (site / "teachers.html").read_text()
    # the one failure is kept as source in <code>, so the checker finds nothing
    assert site_problems(site) == []
    with pytest.raises(InputError, match="not a course notebook"):
        build_site(src, tmp_path / "other", names=["42_nope"])
    build_site(src, tmp_path / "site")  # a student build over a teacher's removes the guide
    assert not (site / "teachers.html").exists()


def test_saved_widgets_show_a_placeholder_their_own_text_or_nothing() -> None:
    """ipywidgets saves its repr ("VBox(children=(...") as the text beside a widget: the page shows a placeholder
    instead; a widget with a text of its own (the quiz) keeps it; a progress bar saved at its start is dropped."""
    view = {
        "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2, "version_minor": 0}
    }
    outputs = [
        {"text/plain": "VBox(children=(Dropdown(description='image', options=('cat',), value='cat'),))"},
        {"text/plain": "Opti-CAM:   0%|          | 0/100 [00:00<?, ?it/s]"},
        {"text/plain": "Check yourself (notebook 03)\n\n1. Which one?"},
        {},
    ]
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("explore()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={**view, **data}) for data in outputs]
    nb.cells = [cell]
    page = render_notebook(nb, "t", MathConverter(), "t")
    assert "VBox(children" not in page and "0/100" not in page
    assert page.count(WIDGET_PLACEHOLDER) == 2  # the repr's and the empty one's
    assert "Check yourself (notebook 03)" in page
    assert len(cell.outputs) == 4  # the notebook given is not modified


# ---------------------------------------------------------------------------------------------------------------
# the pipeline figure


def test_pipeline_figure_on_a_tiny_model(tmp_path: Path) -> None:
    clf = make_tiny_cnn()
    image = make_images(1)[0]
    fig = pipeline_figure(clf, image, target=2, iterations=3, channels=4, bars=5)
    titles = [ax.get_title().split("\n")[0] for ax in fig.axes]
    assert len(titles) == len(PIPELINE_PANELS) == 7
    assert all(t.startswith(p) for t, p in zip(titles, PIPELINE_PANELS)), titles
    assert len(fig.axes[2].patches) == 5  # the 5 largest weights, one bar each
    assert fig.axes[6].get_lines()[0].get_xydata().shape[0] <= 3  # one point per iteration run
    arrows = [a for a in fig.artists if type(a).__name__ == "ConnectionPatch"]
    assert len(arrows) == 7  # six forward arrows and the gradient back to u
    fig.savefig(tmp_path / "p.png", dpi=40)
    assert (tmp_path / "p.png").stat().st_size > 0


def test_pipeline_figure_shows_the_channels_that_add_most_to_s() -> None:
    """The A^k panel holds the channels with the largest w_k * sum A^k (what each adds to S), each scaled alone."""
    from opticam_lib.course.figures import _montage
    from opticam_lib.methods.feature_pass import features
    from opticam_lib.methods.opti_cam import optimize

    clf = make_tiny_cnn()
    image = make_images(1)[0]
    fig = pipeline_figure(clf, image, target=2, iterations=3, channels=3, bars=5)
    result = optimize(clf, image[None], [2], iterations=3, progress=False)
    acts, _ = features(clf, image[None])
    share = result.weights[0] * acts[0].clamp_min(0).sum(dim=(1, 2))
    expected = _montage(acts[0, share.argsort(descending=True)[:3]])
    shown = np.asarray(fig.axes[1].images[0].get_array().filled(np.nan))
    assert np.allclose(shown, expected, equal_nan=True, atol=1e-6)
    by_weight = _montage(acts[0, result.weights[0].argsort(descending=True)[:3]])
    assert not np.allclose(shown, by_weight, equal_nan=True)  # not the largest weights alone
    assert "most in S" in fig.axes[1].get_title()


def test_pipeline_figure_refuses_a_batch() -> None:
    with pytest.raises(InputError, match="one image"):
        pipeline_figure(make_tiny_cnn(), make_images(2), iterations=1)


def test_write_pipeline_png_with_the_offline_model(tmp_path: Path) -> None:
    """The committed PNG's writer, at 2 iterations: a palette PNG under the size limit, from the offline model."""
    from PIL import Image

    from opticam_lib.course.site import PIPELINE_MAX_BYTES, write_pipeline_png

    path = write_pipeline_png(tmp_path / "figures" / "p.png", iterations=2)
    assert 0 < path.stat().st_size < PIPELINE_MAX_BYTES
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "P" and im.width > 3 * im.height
