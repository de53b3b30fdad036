"""The switch to the paper's settings (``OPTICAM_PROFILE=paper``): what it changes must work with the paper's model.

The paper profile's ResNet50 weights are a download, so the notebooks cannot run under it here; these tests hold
the parts that broke under it: code that names the laptop model's layers in a notebook that loads the profile's
model, and notebook 00's description of the classifier (now a library function, tested on both models)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opticam_lib import load_classifier
from opticam_lib.course.environment import describe_classifier
from opticam_lib.profiles import PROFILES

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# efficientnet_lite0's own layer names and channel count: a notebook that loads the profile's model must not use them
LAPTOP_ONLY = re.compile(r"""["'](?:bn2|blocks\.\d+)["']|\.act\b|global_pool|\b1280\b""")


def code_of(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebooks_that_load_the_profiles_model_name_no_layer_of_the_laptop_model():
    assert PROFILES["laptop"].model == "efficientnet_lite0" and PROFILES["paper"].model == "resnet50"
    loads = re.compile(r"load_classifier\((?:P\.model|MODEL)\b")
    wrong = []
    for path in NOTEBOOKS:
        cells = code_of(path)
        source = "\n".join(cells)
        if not loads.search(source):
            continue
        pinned = re.search(r"""^MODEL = ["']efficientnet_lite0["']""", source, re.M)  # the same model in both
        for i, cell in enumerate(cells):
            for line in cell.splitlines():
                code = line.split("#", 1)[0]  # comments may name layers
                if not pinned and LAPTOP_ONLY.search(code):
                    wrong.append(f"{path.name} code cell {i}: {line.strip()}")
    assert wrong == [], "under OPTICAM_PROFILE=paper (ResNet50) these lines fail:\n" + "\n".join(wrong)


def test_notebooks_01_and_02_say_they_keep_the_offline_model():
    for stem in ("01_class_activation_maps", "02_score_cam"):
        path = next(p for p in NOTEBOOKS if p.stem == stem)
        text = path.read_text()
        assert 'MODEL = \\"efficientnet_lite0\\"' in text and "in **both** profiles" in text, stem


def test_describe_classifier_on_the_laptop_and_the_paper_model():
    lite = describe_classifier(load_classifier("efficientnet_lite0"))
    assert lite[1] == "target layer:   bn2 -> BatchNormAct2d + ReLU6"
    assert lite[2] == "after it:       ['SelectAdaptivePool2d', 'Linear']"
    assert lite[3] == "linear head:    (1000, 1280) (classes x channels)"
    r50 = describe_classifier(load_classifier("resnet50", pretrained=False))  # the architecture: no download
    assert r50[0] == "model:          resnet50"
    assert r50[1] == "target layer:   layer4 -> Sequential"  # no activation attribute: none named
    assert r50[2] == "after it:       ['AdaptiveAvgPool2d', 'Linear']"
    assert r50[3] == "linear head:    (1000, 2048) (classes x channels)"
    assert r50[-1].startswith("normalisation:  mean [0.485")
