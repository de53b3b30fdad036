"""The paper's numbers are read back as the paper prints them (spot checks against the text itself)."""

from pathlib import Path

import pytest

from opticam_lib.errors import InputError
from opticam_lib.paper.tables import paper_table, paper_tables, paper_value

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "opticam-paper.txt"


def test_every_row_of_table_1_appears_in_the_paper_text():
    if not PAPER.exists():
        pytest.skip("the paper's text is not beside this checkout")
    text = PAPER.read_text()
    for model in ("resnet50", "vgg16_bn"):
        for method, cols in paper_table("1", model).items():
            assert method.split(" ")[0] in text
            for v in cols.values():
                assert f"{v:.2f}".rstrip("0").rstrip(".") in text or f"{v}" in text, (model, method, v)


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


def test_unknown_table_model_method():
    with pytest.raises(InputError, match="unknown table"):
        paper_table("99", "resnet50")
    with pytest.raises(InputError, match="no 'alexnet' part"):
        paper_table("1", "alexnet")
    with pytest.raises(InputError, match="no row"):
        paper_value("1", "resnet50", "Magic-CAM", "AD")
