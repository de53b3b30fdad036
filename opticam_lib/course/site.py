"""The course's small offline site: ``python -m opticam_lib.edition html`` -> ``site/``.

What it holds, all static files that open from disk (``file://``) with no network:

- ``index.html``: the table of contents, generated from ``navigation.COURSE`` (the order of teaching), with links
  to the glossary and the teacher's guide and the Opti-CAM pipeline figure;
- one ``NN_name.html`` per course notebook, rendered from the committed, executed notebook by nbconvert's HTML
  exporter (figures embedded as PNG) through a template that loads no script: no MathJax, no require.js, no
  widget manager from a CDN (saved widgets show their text fallback; they need a running kernel to react);
- ``glossary.html`` (``notebooks/GLOSSARY.md``), rendered with mistune (the markdown parser nbconvert brings);
  with ``teacher=True`` (``--teacher``) also ``teachers.html`` (``notebooks/TEACHERS.md``, which holds the
  answers);
- the figures the markdown files link (``notebooks/figures/*.png``).

Math is converted at build time to MathML (``latex2mathml``), which browsers display natively: ``$...$`` (inline)
and ``$$...$$`` (display) in markdown cells and markdown files; code spans, fenced code blocks and escaped
dollars (``\\$``) are left alone. A formula that fails to convert is kept as its LaTeX source in a ``<code>``
element and reported by the build (``SiteReport.math_failures``); the build does not stop for it. Links between
pages are rewritten (``NN_name.ipynb`` -> ``NN_name.html``, ``GLOSSARY.md`` -> ``glossary.html``, ``TEACHERS.md``
-> ``teachers.html``); a relative link to a file that is not part of the site is turned into plain text and
reported. ``site_problems`` lists every link, image or fragment of a built site that does not resolve.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from opticam_lib.course.navigation import BADGE, COURSE
from opticam_lib.course.notebook_files import is_solution
from opticam_lib.errors import InputError, MissingDependencyError

if TYPE_CHECKING:  # annotations only: nbformat is imported when a notebook is read
    from nbformat import NotebookNode

#: markdown files of ``notebooks/`` that become pages of the site: source name -> page name, title
MARKDOWN_PAGES: dict[str, tuple[str, str]] = {
    "GLOSSARY.md": ("glossary.html", "Glossary: symbols, metrics and where the library computes them"),
    "TEACHERS.md": ("teachers.html", "Teacher's guide"),
}
FIGURES_DIR = "figures"  # notebooks/figures/: images the markdown pages show, copied as they are
PIPELINE_PNG = (
    "figures/opticam_pipeline.png"  # the paper's Fig. 1 drawn from a real run (figures.pipeline_figure)
)
OFFLINE_NOTE = (
    "These pages work offline: equations are MathML written when the site was built (no script, no CDN), "
    "figures are embedded. Interactive widgets are shown as saved text; they need a running kernel to react."
)

_TOKEN = "OPTICAMMATH{:05d}Z"
_TOKEN_RE = re.compile(r"OPTICAMMATH(\d{5})Z")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})")
_DISPLAY = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$", re.DOTALL)
# inline: $ not escaped and not followed by a space; content without a blank line; $ not preceded by a space and
# not followed by a digit (so "costs $5 and $6" is no formula)
_INLINE = re.compile(r"(?<![\\$])\$(?![\s$])((?:\\.|[^$\\])+?)(?<![\s\\])\$(?!\d)")
# operator names latex2mathml does not know, written as \operatorname (which it does)
_MACRO_TEXT = {
    "arg": r"\operatorname{arg}",
    "argmax": r"\operatorname{arg\,max}",
    "argmin": r"\operatorname{arg\,min}",
}
_MACROS = re.compile(r"\\(argmax|argmin|arg)(?![A-Za-z])")
_UNKNOWN_COMMAND = re.compile(r">[^<]*\\[A-Za-z]+[^<]*<")


# --------------------------------------------------------------------------------------------------------------
# Math: LaTeX -> MathML, code spans and escaped dollars left alone
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MathFailure:
    """A formula that latex2mathml could not convert: where it was, its source and why."""

    where: str
    latex: str
    error: str

    def __str__(self) -> str:
        return f"{self.where}: ${self.latex}$ kept as LaTeX source ({self.error})"


def _latex2mathml():
    try:
        from latex2mathml.converter import convert
    except ImportError as err:
        raise MissingDependencyError(
            "the site converts equations to MathML with latex2mathml: pip install latex2mathml "
            "(in the course and dev extras: pip install -e '.[course]')"
        ) from err
    return convert


def latex_to_mathml(latex: str, display: bool = False) -> str:
    """One formula as a MathML ``<math>`` element. Raises InputError naming the formula when it cannot be
    converted (a syntax error, or a command latex2mathml does not know and would print as text)."""
    convert = _latex2mathml()
    source = _MACROS.sub(lambda m: _MACRO_TEXT[m.group(1)], latex.strip())
    try:
        out = convert(source, display="block" if display else "inline")
    except (
        Exception
    ) as err:  # latex2mathml raises several types (NoAvailableTokensError, MissingEndError, ...)
        raise InputError(f"cannot convert ${latex}$ to MathML: {type(err).__name__} {err}".strip()) from None
    unknown = _UNKNOWN_COMMAND.search(out)
    if unknown:
        raise InputError(f"cannot convert ${latex}$ to MathML: unknown command in {unknown.group(0)[1:-1]!r}")
    return out


def _code_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every inline code span of a markdown paragraph text (backtick runs of equal length)."""
    spans, i = [], 0
    while True:
        start = text.find("`", i)
        if start < 0:
            return spans
        run = len(text[start:]) - len(text[start:].lstrip("`"))
        close = re.compile(r"(?<!`)" + "`" * run + r"(?!`)").search(text, start + run)
        if close is None:
            i = start + run
            continue
        spans.append((start, close.end()))
        i = close.end()


@dataclass
class MathConverter:
    """Replaces the formulas of markdown text by placeholders before rendering (so the markdown parser never sees
    LaTeX) and the placeholders of the rendered HTML by MathML afterwards.

    Use ``protect(markdown, where)`` on each markdown text, render it, then ``restore(html)``; ``failures`` lists
    the formulas kept as source, ``count`` how many were converted."""

    formulas: list[tuple[str, bool, str]] = field(default_factory=list)  # (latex, display, where)
    failures: list[MathFailure] = field(default_factory=list)
    count: int = 0

    def _token(self, latex: str, display: bool, where: str) -> str:
        self.formulas.append((latex, display, where))
        return _TOKEN.format(len(self.formulas) - 1)

    def _protect_text(self, text: str, where: str) -> str:
        """Math in a stretch of markdown outside fenced code blocks: skip code spans."""
        out, last = [], 0
        for start, end in [*_code_spans(text), (len(text), len(text))]:
            chunk = text[last:start]
            chunk = _DISPLAY.sub(lambda m: self._token(m.group(1), True, where), chunk)
            chunk = _INLINE.sub(
                lambda m: (
                    m.group(0) if re.search(r"\n\s*\n", m.group(1)) else self._token(m.group(1), False, where)
                ),
                chunk,
            )
            out += [chunk, text[start:end]]
            last = end
        return "".join(out)

    def protect(self, markdown: str, where: str = "markdown") -> str:
        """``markdown`` with every formula outside code replaced by a placeholder word."""
        out, buffer, fence = [], [], None
        for line in markdown.splitlines(keepends=True):
            opening = _FENCE.match(line)
            if fence is None and opening:
                out.append(self._protect_text("".join(buffer), where))
                buffer, fence = [], opening.group(2)
                out.append(line)
            elif fence is not None:
                out.append(line)
                if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                    fence = None
            else:
                buffer.append(line)
        out.append(self._protect_text("".join(buffer), where))
        return "".join(out)

    def _mathml(self, index: int) -> str:
        latex, display, where = self.formulas[index]
        try:
            out = latex_to_mathml(latex, display)
        except InputError as err:
            self.failures.append(MathFailure(where, latex, str(err).split(": ", 1)[-1]))
            dollars = "$$" if display else "$"
            return f'<code class="math-source">{html.escape(dollars + latex + dollars)}</code>'
        self.count += 1
        return out

    def restore(self, rendered: str) -> str:
        """``rendered`` HTML with each placeholder replaced: by MathML in text, by a plain slug inside a tag's
        attributes (a heading's id, say), so the markup stays valid."""

        def in_tag(m: re.Match) -> str:
            return _TOKEN_RE.sub(
                lambda t: re.sub(r"[^A-Za-z0-9]+", "-", self.formulas[int(t.group(1))][0]).strip("-"),
                m.group(0),
            )

        rendered = re.sub(r"<[^<>]*OPTICAMMATH\d{5}Z[^<>]*>", in_tag, rendered)
        return _TOKEN_RE.sub(lambda t: self._mathml(int(t.group(1))), rendered)


# --------------------------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------------------------

_STYLE = """body { font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.5; padding: 0 1em; }
li { margin: 0.3em 0; } .note { color: #555; font-size: 0.95em; } code { background: #f4f4f4; padding: 0 0.2em; }
pre { background: #f4f4f4; padding: 0.6em; overflow-x: auto; } table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; } img { max-width: 100%; }
math[display="block"] { margin: 0.6em 0; } ul.toc { list-style: none; padding-left: 0; } nav.site { margin-bottom: 1.5em; font-size: 0.95em; }"""


def _page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A standalone HTML page (no script) with a navigation bar of ``nav``'s (href, label) links."""
    links = (
        '<nav class="site">'
        + " · ".join(f'<a href="{html.escape(h)}">{html.escape(t)}</a>' for h, t in nav)
        + "</nav>\n"
        if nav
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{html.escape(title)}</title>
  <style>{_STYLE}</style>
</head>
<body>
{links}{body}
</body>
</html>
"""


def _mistune():
    try:
        import mistune
    except ImportError as err:  # pragma: no cover - nbconvert depends on mistune
        raise MissingDependencyError("the site renders markdown with mistune: pip install nbconvert") from err
    return mistune


def render_markdown(text: str, math: MathConverter, where: str = "markdown") -> str:
    """Markdown (tables, fenced code, raw HTML allowed) to HTML, with its math as MathML."""
    md = _mistune().create_markdown(escape=False, plugins=["table", "strikethrough"])
    return math.restore(md(math.protect(text, where)))


def _page_target(href: str, pages: dict[str, str]) -> str | None:
    """Where a relative link of a source file points in the site: the page for a notebook or markdown file of the
    site, the same path for a copied figure, None for a file the site does not hold."""
    parts = urlsplit(href)
    name = unquote(parts.path)
    frag = f"#{parts.fragment}" if parts.fragment else ""
    if not name:
        return href
    base = Path(name).name
    if name in pages.values():  # already a page of the site (the navigation bar)
        return href
    if base in pages:
        return pages[base] + frag
    if name.startswith(f"{FIGURES_DIR}/"):
        return href
    return None


def rewrite_links(page: str, pages: dict[str, str], where: str, unlinked: list[str]) -> str:
    """Rewrite the relative ``href`` links of a rendered page for the site (see the module docstring); links to
    files the site does not hold become plain text (their ``<a>`` tag is replaced by a ``<span>``) and are
    appended to ``unlinked``. Absolute URLs, ``mailto:`` and in-page fragments are kept."""

    def one(m: re.Match) -> str:
        href = html.unescape(m.group(2))
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I) or href.startswith("#"):
            return m.group(0)
        target = _page_target(href, pages)
        if target is None:
            unlinked.append(f"{where}: link to {href} (not part of the site) shown as text")
            return f'<span class="not-in-site" title="{html.escape(href)}"'
        return f'{m.group(1)}href="{html.escape(target)}"'

    page = re.sub(r'(<a\b[^>]*?\s)href="([^"]*)"', one, page)
    # an <a> turned into <span ...: close it with </span> instead of </a>
    return re.sub(r'(<span class="not-in-site"[^>]*>)(.*?)</a>', r"\1\2</span>", page, flags=re.DOTALL)


def _offline_exporter():
    """nbconvert's HTML exporter (the ``lab`` template) with every script block emptied: no require.js, no
    MathJax, no mermaid, no widget manager (all fetched from CDNs)."""
    try:
        from jinja2 import DictLoader
        from nbconvert import HTMLExporter
    except ImportError as err:  # pragma: no cover
        raise MissingDependencyError("the site needs nbconvert: pip install nbconvert") from err
    template = (
        "{%- extends 'lab/index.html.j2' -%}\n"
        "{%- block html_head_js -%}{%- endblock html_head_js -%}\n"
        "{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}\n"
        "{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}\n"
        "{% block jupyter_widgets %}{% endblock jupyter_widgets %}\n"
    )
    return HTMLExporter(
        template_name="lab", extra_loaders=[DictLoader({"opticam_offline.html.j2": template})],
        template_file="opticam_offline.html.j2",
    )  # fmt: skip


WIDGET_PLACEHOLDER = "(an interactive widget: run the notebook to use it)"
#: ipywidgets' repr of a widget, the text/plain it saves beside the widget view: "VBox(children=(Dropdown(..."
WIDGET_REPR = re.compile(r"^\s*[A-Z]\w*\((?:children|value|layout|description|options|min|max|index)=")
#: tqdm's text of a notebook progress bar: "Opti-CAM:   0%|          | 0/100 [00:00<?, ?it/s]"
PROGRESS_BAR_TEXT = re.compile(r"^[^\n]*\d+%\|[^\n]*\|\s*\d+/\d+")


def render_notebook(
    nb: NotebookNode, title: str, math: MathConverter, where: str, solutions: bool = False
) -> str:
    """One executed notebook (an nbformat node, not modified) as a standalone offline page; the exercise
    solutions (cells tagged ``solution``) are left out unless ``solutions``."""
    import copy

    nb = copy.deepcopy(nb)
    if not solutions:
        nb.cells = [c for c in nb.cells if not is_solution(c)]
    nb.metadata.pop("widgets", None)  # the saved widget state: only a widget manager from a CDN could use it
    for i, cell in enumerate(nb.cells):
        if cell.get("cell_type") == "markdown":  # no "Open in Colab" badge: a remote image, broken offline
            cell["source"] = math.protect(BADGE.sub("\n", cell["source"]), f"{where} cell {i}")
        kept = []
        for output in cell.get("outputs", []):  # a saved widget shows its text fallback
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                data.pop("application/vnd.jupyter.widget-view+json")
                text = "".join(data.get("text/plain", ""))
                if PROGRESS_BAR_TEXT.search(text):  # a progress bar saved where it started: not worth a line
                    continue
                if not text.strip() or WIDGET_REPR.match(text):  # ipywidgets' own repr, "VBox(children=(..."
                    data["text/plain"] = WIDGET_PLACEHOLDER
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    body, _ = _offline_exporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    body = math.restore(body)
    return re.sub(r"<script\b[^>]*\bsrc=[^>]*>\s*</script>", "", body)  # belt and braces: no script src


# --------------------------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SiteReport:
    """What ``build_site`` wrote and what it could not do cleanly."""

    index: Path
    pages: list[Path]
    formulas: int = 0
    math_failures: list[MathFailure] = field(default_factory=list)
    unlinked: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # markdown pages whose source file was not found

    def summary(self) -> str:
        """What was written and every problem met (formulas kept as source, unlinked pages, missing pages),
        one per line."""
        lines = [
            f"wrote {self.index} and {len(self.pages)} pages; {self.formulas} formulas as MathML, no script, "
            "no network needed"
        ]
        lines += [f"  formula kept as source: {f}" for f in self.math_failures]
        lines += [f"  {u}" for u in self.unlinked]
        lines += [f"  no {m}: page left out" for m in self.missing]
        return "\n".join(lines)


def _index_body(
    entries: Sequence[tuple[str, str, str, bool]], extra: Sequence[tuple[str, str]], figure: bool
) -> str:
    items = "\n".join(
        f'  <li><a href="{html.escape(href)}">{html.escape(title)}</a>'
        + (f" <span class='note'>{html.escape(adds)}</span>" if adds else "")
        + ("" if executed else " <em>(not executed: no outputs saved)</em>")
        + "</li>"
        for href, title, adds, executed in entries
    )
    more = "".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in extra)
    fig = (
        f'<p><img src="{PIPELINE_PNG}" alt="Opti-CAM pipeline: image, feature maps, softmax(u) weights, saliency '
        'map, masked image, class score, gradient back to u" width="900"></p>'
        if figure
        else ""
    )
    return f"""<h1>The Opti-CAM course</h1>
<p>Notebooks around <em>Opti-CAM: Optimizing saliency maps for interpretability</em> (Zhang et al., CVIU 2024),
executed on a laptop CPU with the default profile, in the order to read them. To run them, open
<code>notebooks/</code> in JupyterLab (see <code>notebooks/README.md</code>).</p>
<h2>Contents</h2>
<ul class="toc">
{items}
</ul>
<h2>Reference</h2>
<ul>{more}</ul>
{fig}
<p class="note">{html.escape(OFFLINE_NOTE)}</p>"""


def build_site(
    src: str | Path = "notebooks",
    dst: str | Path = "site",
    names: Iterable[str] | None = None,
    teacher: bool = False,
) -> SiteReport:
    """Build the offline site (module docstring) from the notebooks and markdown files of ``src`` into ``dst``.

    Nothing is executed: notebook pages show the committed outputs. Pages left in ``dst`` by an earlier build are
    overwritten, not removed.

    Args:
        src: the course's notebook folder.
        dst: output folder (created).
        names: only these notebooks (file names or stems, e.g. ``["03_opti_cam"]``); default all, in the order
            of ``COURSE`` (notebooks not in COURSE follow in file order). The glossary is always built.
        teacher: the teacher's site: the exercise solutions stay in the notebook pages and the teacher's guide
            (``TEACHERS.md``, the answers to every question) becomes ``teachers.html``. Default False: a site
            students may read, with neither (a ``teachers.html`` left by an earlier teacher build is removed).
    Returns:
        a ``SiteReport``; ``report.summary()`` is what the command prints.
    """
    from opticam_lib.course.notebook_files import course_notebooks, has_outputs, notebook_title, read_notebook

    src, dst = Path(src), Path(dst)
    sources = course_notebooks(src)
    order = {c.file: i for i, c in enumerate(COURSE)}
    sources.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    if names is not None:
        wanted = {Path(n).stem for n in names}
        unknown = wanted - {p.stem for p in sources}
        if unknown:
            raise InputError(f"not a course notebook in {src}: {', '.join(sorted(unknown))}")
        sources = [p for p in sources if p.stem in wanted]
    if dst.resolve() == src.resolve():
        raise InputError("the site must go to another folder than its sources")
    dst.mkdir(parents=True, exist_ok=True)
    pages = {p.name: f"{p.stem}.html" for p in sources}  # a partial build links only what it built
    markdown_pages = {
        name: entry for name, entry in MARKDOWN_PAGES.items() if teacher or name != "TEACHERS.md"
    }
    if not teacher:
        (dst / MARKDOWN_PAGES["TEACHERS.md"][0]).unlink(missing_ok=True)
    pages.update({name: page for name, (page, _) in markdown_pages.items() if (src / name).is_file()})
    pages["README.md"] = "index.html"  # the course's README: the site's index stands for it
    math = MathConverter()
    unlinked: list[str] = []
    written: list[Path] = []
    entries = []
    adds = {c.file: f"{c.adds} ({c.paper})" for c in COURSE}
    for path in sources:
        nb = read_notebook(path)
        title = notebook_title(nb, path.stem)
        page = rewrite_links(
            render_notebook(nb, title, math, path.name, solutions=teacher), pages, path.name, unlinked
        )
        target = dst / f"{path.stem}.html"
        target.write_text(page, encoding="utf-8")
        written.append(target)
        entries.append((target.name, title, adds.get(path.name, ""), has_outputs(nb)))
    extra, missing = [], []
    bar = [("index.html", "contents")] + [
        (page, title.split(":")[0].lower())
        for name, (page, title) in markdown_pages.items()
        if (src / name).is_file()
    ]
    for name, (page_name, title) in markdown_pages.items():
        source = src / name
        if not source.is_file():
            missing.append(str(source))
            continue
        body = render_markdown(source.read_text(encoding="utf-8"), math, name)
        target = dst / page_name
        target.write_text(rewrite_links(_page(title, body, bar), pages, name, unlinked), encoding="utf-8")
        written.append(target)
        extra.append((page_name, title))
    figures = src / FIGURES_DIR
    if figures.is_dir():
        (dst / FIGURES_DIR).mkdir(exist_ok=True)
        for fig in sorted(figures.glob("*.png")):
            shutil.copyfile(fig, dst / FIGURES_DIR / fig.name)
    index = dst / "index.html"
    index.write_text(
        _page("The Opti-CAM course", _index_body(entries, extra, (dst / PIPELINE_PNG).is_file())),
        encoding="utf-8",
    )
    return SiteReport(index, written, math.count, math.failures, unlinked, missing)


# --------------------------------------------------------------------------------------------------------------
# Checking a built site without a browser
# --------------------------------------------------------------------------------------------------------------


class _Refs(HTMLParser):
    """Collects the ids, link targets and image sources of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img" and "src" in a:
            self.images.append(a["src"])
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link" and a.get("href", "").startswith(("http:", "https:", "//")):
            self.scripts.append(a["href"])


def _refs(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def site_problems(folder: str | Path) -> list[str]:
    """Every way the site in ``folder`` fails to work offline: a relative link or image to a missing file, a
    fragment (``page.html#id``) with no such id, an image, script or stylesheet loaded from elsewhere, raw ``$$``
    left in a page's text. An empty list when none. Absolute http(s) links are allowed (they are links, not resources
    the page needs)."""
    folder = Path(folder)
    if not (folder / "index.html").is_file():
        return [f"no index.html in {folder}"]
    problems: list[str] = []
    cache: dict[Path, _Refs] = {}

    def refs(p: Path) -> _Refs:
        if p not in cache:
            cache[p] = _refs(p)
        return cache[p]

    for page in sorted(folder.glob("*.html")):
        r = refs(page)
        problems += [f"{page.name}: loads {s} (a script or stylesheet from elsewhere)" for s in r.scripts]
        for kind, targets in (("link", r.links), ("image", r.images)):
            for t in targets:
                if kind == "image" and re.match(r"^(https?:)?//", t, re.I):
                    problems.append(f"{page.name}: image {t} is fetched from elsewhere (broken offline)")
                    continue
                if re.match(r"^(https?|mailto|data):", t, re.I):
                    continue
                parts = urlsplit(t)
                if parts.scheme:
                    problems.append(f"{page.name}: {kind} {t} has scheme {parts.scheme!r}")
                    continue
                target = page if not parts.path else (page.parent / unquote(parts.path))
                if not target.is_file():
                    problems.append(f"{page.name}: {kind} {t} -> no file {target.name}")
                    continue
                frag = parts.fragment  # as the browser does: the fragment as written, else percent-decoded
                ids = refs(target).ids if target.suffix == ".html" else set()
                if frag and target.suffix == ".html" and frag not in ids and unquote(frag) not in ids:
                    problems.append(f"{page.name}: {kind} {t} -> no id {frag!r} in {target.name}")
        text = re.sub(r"<(script|style)\b.*?</\1>", "", page.read_text(encoding="utf-8"), flags=re.S | re.I)
        text = re.sub(r"<code\b.*?</code>|<pre\b.*?</pre>", "", text, flags=re.S | re.I)
        if "$$" in re.sub(r"<[^>]+>", "", text):
            problems.append(f"{page.name}: raw $$ left in the text (a formula not converted)")
    return problems


# --------------------------------------------------------------------------------------------------------------
# The pipeline figure, committed as a small PNG
# --------------------------------------------------------------------------------------------------------------

PIPELINE_MAX_BYTES = 150_000


def write_pipeline_png(
    path: str | Path = Path("notebooks") / PIPELINE_PNG,
    model: str | None = None,
    photo: str = "chelsea",
    iterations: int = 100,
    dpi: int = 80,
) -> Path:
    """Draw ``figures.pipeline_figure`` for one sample photo (its ground-truth class) with the offline model and
    save it as a PNG of at most 256 colours (``PIPELINE_MAX_BYTES`` or less), the file the glossary and the site
    show (``python -m opticam_lib.edition figure``). Runs Opti-CAM: about 20 s on a laptop CPU.

    Raises:
        OptiCAMError: the PNG came out larger than ``PIPELINE_MAX_BYTES`` (lower ``dpi``).
    """
    import io

    from PIL import Image

    from opticam_lib.course.figures import pipeline_figure
    from opticam_lib.errors import OptiCAMError
    from opticam_lib.images import load_samples
    from opticam_lib.models.registry import load_classifier

    clf = load_classifier(model) if model else load_classifier()
    samples = load_samples(names=[photo])
    fig = pipeline_figure(clf, samples.images[0], int(samples.labels[0]), iterations=iterations)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    small = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, format="PNG", optimize=True)
    size = path.stat().st_size
    if size > PIPELINE_MAX_BYTES:
        raise OptiCAMError(
            f"{path} is {size:,} bytes, over {PIPELINE_MAX_BYTES:,}: use a lower dpi than {dpi}"
        )
    return path
