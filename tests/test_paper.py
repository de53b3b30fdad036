"""The paper's numbers are read back as the paper prints them (spot checks against the text itself)."""

import re
from pathlib import Path

import pytest

from opticam_lib.errors import InputError
from opticam_lib.methods.registry import display_name
from opticam_lib.paper.tables import (
    NON_METHOD_ROWS,
    canonical_row,
    paper_table,
    paper_tables,
    paper_value,
    row_method,
)

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "opticam-paper.txt"


def test_every_row_of_table_1_as_the_paper_prints_it():
    """Row by row and cell by cell: a number in the wrong row, column or model half fails."""
    if not PAPER.exists():
        pytest.skip("the paper's text is not beside this checkout")
    text = PAPER.read_text()
    t1 = _rows_between(text, "METHOD\tRESNET50\t\t\t\tVGG16", "Table 1. Classification metrics")
    assert len(t1) == 12
    for j, model in enumerate(("resnet50", "vgg16_bn")):
        stored = paper_table("1", model)
        assert set(stored) == set(t1), model
        for method, numbers in t1.items():
            assert [stored[method][c] for c in ("AD", "AG", "AI", "T")] == numbers[4 * j : 4 * j + 4], (
                method,
                model,
            )


def test_headline_numbers():
    assert paper_value("1", "resnet50", "Opti-CAM", "AG") == 68.8
    assert paper_value("1", "vgg16_bn", "Score-CAM", "T") == 3.11
    assert paper_value("3", "resnet50", "Ablation-CAM", "I") == 65.9
    assert "Ablation-CAM" not in paper_table("3", "vit_b_16")  # a dash in the paper


def test_all_tables_have_captions_and_data():
    for key, table in paper_tables().items():
        if key.startswith("_"):
            continue
        assert table["caption"] and table["data"], key


def test_table_a8_is_the_transformer_part_of_a7():
    """The data file keeps A8's ViT-B/DeiT-B rows under A7 (as the paper's source does); A8 names them."""
    assert paper_table("A8", "vit_b_16") == paper_table("A7", "vit_b_16")
    assert paper_value("A8", "deit_b_16", "Opti-CAM", "OM") == paper_value(
        "A7", "deit_b_16", "Opti-CAM", "OM"
    )
    with pytest.raises(InputError, match="table A8 has no 'resnet50' part; it has: vit_b_16, deit_b_16"):
        paper_table("A8", "resnet50")


def test_unknown_table_model_method():
    with pytest.raises(InputError, match="unknown table"):
        paper_table("99", "resnet50")
    with pytest.raises(InputError, match="no 'alexnet' part"):
        paper_table("1", "alexnet")
    with pytest.raises(InputError, match="no row"):
        paper_value("1", "resnet50", "Magic-CAM", "AD")


def test_every_cell_is_a_number_or_a_dash():
    """No leftover header rows (Table A9 had one whose cells were the column titles)."""
    for key, table in paper_tables().items():
        if key.startswith("_"):
            continue
        for model, rows in table["data"].items():
            for row, cols in rows.items():
                assert row, (key, model)
                assert cols, (key, model, row)
                for col, v in cols.items():
                    assert v is None or isinstance(v, int | float), (key, model, row, col, v)


def test_every_row_of_every_table_maps_to_a_method_of_the_library():
    from opticam_lib.methods.registry import METHODS
    from opticam_lib.paper.reproduce import EXTRA_METHODS

    seen_non_methods = set()
    for key, table in paper_tables().items():
        if key.startswith("_"):
            continue
        for model, rows in table["data"].items():
            for row in rows:
                method = row_method(row)
                if method is None:
                    assert row in NON_METHOD_ROWS, (key, model, row)
                    assert NON_METHOD_ROWS[row] in EXTRA_METHODS  # reproduce --table 5 computes it
                    seen_non_methods.add(row)
                else:
                    assert method in METHODS or method in EXTRA_METHODS, (key, model, row, method)
                    if method in METHODS and "(" not in row and not row.startswith("features."):
                        assert display_name(method) == row, (key, model, row)  # one spelling everywhere
    assert seen_non_methods == set(NON_METHOD_ROWS)


def test_paper_spellings_are_normalised_in_one_place():
    raw = (Path(__file__).resolve().parents[1] / "opticam_lib" / "data" / "paper_tables.json").read_text()
    assert '"ExpPerturbation"' in raw and '"Experturbation"' in raw  # the file keeps the paper's text
    assert paper_value("A14", "resnet50", "ExPerturbation", "AD") == paper_value(
        "A14", "resnet50", "ExpPerturbation", "AD"
    )
    assert "ExPerturbation" in paper_table("A14", "vgg16_bn") and "ExPerturbation" in paper_table(
        "A12", "vgg16_bn"
    )
    assert canonical_row("Experturbation") == "ExPerturbation" and canonical_row("Grad-CAM") == "Grad-CAM"
    assert row_method("ExpPerturbation") == "experturbation"
    assert row_method("Opti-CAM (diff, sigmoid)") == "opticam" and row_method("features.29") == "opticam"
    assert row_method("RawAtt") == "rawatt" and row_method("$S := B$") is None
    with pytest.raises(InputError, match="maps to no method"):
        row_method("Magic-CAM")


def _rows_between(text: str, start: str, end: str) -> dict[str, list[float]]:
    """The numeric rows of a table of the paper's text: {method: numbers}, read between two markers."""
    block = text[text.index(start) : text.index(end)]
    rows = {}
    for line in block.splitlines():
        cells = line.split("\t")
        name = re.sub(r"\s*(\[\d+\]|\(ours\))$", "", cells[0].strip())
        numbers = [float(c) for c in cells[1:] if re.fullmatch(r"-?\d+(\.\d+)?", c.strip())]
        if name and numbers:
            rows[name] = numbers
    return rows


def test_tables_4_and_a11_as_the_paper_prints_them():
    if not PAPER.exists():
        pytest.skip("the paper's text is not beside this checkout")
    text = PAPER.read_text()
    t4 = _rows_between(text, "Fig. 3. Failure examples", "Table 4. $AOPC")
    assert len(t4) == 8
    for method, numbers in t4.items():
        for j, model in enumerate(("resnet50", "vgg16_bn")):
            stored = paper_table("4", model)[method]
            assert [stored["AOPC"], stored["MS"], stored["ADCC"]] == numbers[3 * j : 3 * j + 3], (
                method,
                model,
            )
    a11 = _rows_between(text, "Table A10.", "Table A11.")
    assert len(a11) == 6
    for method, numbers in a11.items():
        for j, key in enumerate(
            ("chest-xray/resnet50", "chest-xray/vgg16_bn", "kvasir/resnet50", "kvasir/vgg16_bn")
        ):
            stored = paper_table("A11", key)[method]
            assert [stored["I"], stored["D"]] == numbers[2 * j : 2 * j + 2], (method, key)
    assert paper_value("4", "resnet50", "Opti-CAM", "MS") == 1.03  # the best MS of its column
    # the text's "best D on VGG16 of KVASIR"
    assert paper_value("A11", "kvasir/vgg16_bn", "Opti-CAM", "D") == 24.8
