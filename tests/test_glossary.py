"""The glossary (notebooks/GLOSSARY.md) cannot drift from the library: every library name it gives exists, every
term the course relies on has an entry with an equation number, every formula converts to MathML, and the
pipeline figure it shows is committed and small. The checker itself is tested on made-up bad names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from opticam_lib.course.site import PIPELINE_PNG, latex_to_mathml

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "notebooks" / "GLOSSARY.md"
LIBRARY_NAME = re.compile(r"`(opticam_lib(?:\.\w+)+)`")
# the terms issue 15 asks for, as the first cell of a row starts (the symbol column)
TERMS = ("AD", "AG", "AI", "I ↑ / D ↓", "OM", "LE", "F1", "BoxAcc", "SP", "EP", "SM")
SYMBOLS = (r"$\mathbf{u}$", "$n$", "up", "$g_c$", "$A^k$", "$F$", "$h$", "$K$", "$T$")


def resolve(dotted: str) -> object:
    """The object a dotted name such as ``opticam_lib.methods.maps.upsample`` names: the longest importable module
    prefix, then attributes. Raises LookupError naming what is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for i, attr in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attr):
                raise LookupError(f"{dotted}: {'.'.join(parts[:i])} has no attribute {attr!r}")
            obj = getattr(obj, attr)
        return obj
    raise LookupError(f"{dotted}: no module {parts[0]!r}")


def rows() -> list[list[str]]:
    """The table rows of the glossary, split into cells (header and separator rows left out)."""
    out = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if cells[0] not in ("symbol", "metric", "term"):
                out.append(cells)
    return out


def test_resolve_finds_real_names_and_refuses_made_up_ones() -> None:
    from opticam_lib.methods.maps import upsample

    assert resolve("opticam_lib.methods.maps.upsample") is upsample
    with pytest.raises(LookupError, match="no attribute 'upsampel'"):
        resolve("opticam_lib.methods.maps.upsampel")
    with pytest.raises(LookupError, match="no attribute 'nowhere'"):
        resolve("opticam_lib.nowhere.thing")


def test_every_library_name_in_the_glossary_exists() -> None:
    names = sorted(set(LIBRARY_NAME.findall(GLOSSARY.read_text(encoding="utf-8"))))
    assert len(names) >= 20, f"the glossary names too few library functions: {names}"
    missing = []
    for name in names:
        try:
            obj = resolve(name)
        except LookupError as err:
            missing.append(str(err))
            continue
        assert callable(obj), f"{name} is not a function or class"
    assert not missing, "the glossary names functions the library does not have:\n" + "\n".join(missing)


def test_every_term_has_a_row_with_a_paper_reference_and_a_library_name() -> None:
    table = rows()
    firsts = {r[0] for r in table}
    for term in TERMS:
        assert any(f.startswith(term) for f in firsts), f"no glossary row for {term}"
    for symbol in SYMBOLS:
        assert any(symbol in f.split(", ") or f.startswith(symbol) for f in firsts), f"no row for {symbol}"
    for r in table:
        assert len(r) in (5, 6), f"row with {len(r)} cells: {r}"
        paper, library = r[-3], r[-1]
        assert re.search(r"eq\.|\(A\d\)|§|App\.|Table|Fig\.", paper), (
            f"{r[0]}: no paper reference ({paper!r})"
        )
        assert LIBRARY_NAME.search(library), f"{r[0]}: no library name in {library!r}"
    metric_rows = {
        r[0].split()[0]: r for r in table if r[0].split()[0] in ("AD", "AI", "AG", "OM", "LE", "SM")
    }
    expected = {"AD": "eq. 13", "AI": "eq. 14", "AG": "eq. 15", "OM": "(A1)", "LE": "(A2)", "SM": "(A7)"}
    for term, number in expected.items():  # the paper's numbering (paper text, eq. 13-15 and appendix B)
        assert number in metric_rows[term][3], f"{term} should cite {number}"


def test_every_formula_of_the_glossary_converts_to_mathml() -> None:
    from opticam_lib.course.site import MathConverter

    math = MathConverter()
    math.protect(GLOSSARY.read_text(encoding="utf-8"), "GLOSSARY.md")
    assert len(math.formulas) > 50
    failures = []
    for latex, display, _ in math.formulas:
        try:
            latex_to_mathml(latex, display)
        except Exception as err:
            failures.append(f"{latex}: {err}")
    assert not failures, "\n".join(failures)


def test_the_pipeline_figure_is_committed_small_and_linked() -> None:
    png = ROOT / "notebooks" / PIPELINE_PNG
    assert png.is_file(), f"missing {png}: python -m opticam_lib.edition figure"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000
    assert f"]({PIPELINE_PNG})" in GLOSSARY.read_text(encoding="utf-8")
