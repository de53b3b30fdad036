"""The bounding-box study (section 5.4, Table 5) on tiny models, with answers known by construction."""

import math

import pytest
import torch

from opticam_lib.course.bounding_boxes import (
    PARTS,
    BoxStudy,
    box_study,
    context_agreement,
    context_share,
    format_box_table,
    mass_table,
    reliance_per_image,
    split_by_region,
)
from opticam_lib.course.exercises import check_energy_pointing_game
from opticam_lib.errors import InputError
from opticam_lib.images import box_masks
from opticam_lib.metrics.classification import class_probability, classification_metrics
from opticam_lib.metrics.localization import energy_pointing_game, inside_fraction
from opticam_lib.paper.tables import paper_table


def test_box_masks_union_and_shape():
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[0.0, 0.0, 2.0, 2.0], [6.0, 6.0, 8.0, 8.0]])]
    m = box_masks(boxes, 8)
    assert m.shape == (2, 1, 8, 8)
    assert m[0].sum() == 16 and m[1].sum() == 8
    with pytest.raises(InputError):
        box_masks([], 8)


def test_split_by_region_adds_up():
    maps = torch.rand(2, 1, 6, 6)
    region = (torch.rand(2, 1, 6, 6) > 0.5).float()
    parts = split_by_region(maps, region)
    assert set(parts) == set(PARTS)
    assert torch.allclose(parts["B_and_S"] + parts["S_minus_B"], maps)
    assert torch.all(parts["B_and_S"][region == 0] == 0) and torch.all(parts["S_minus_B"][region == 1] == 0)


def test_inside_fraction_is_the_energy_pointing_game():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(3, 1, 10, 12, generator=g)
    boxes = [
        torch.tensor([[1.0, 2.0, 7.0, 9.0]]),
        torch.tensor([[0.0, 0.0, 12.0, 5.0]]),
        torch.tensor([[3.0, 3.0, 4.0, 4.0]]),
    ]
    region = box_masks(boxes, (10, 12))
    got = inside_fraction(maps, region)
    for i in range(3):
        x0, y0, x1, y1 = boxes[i][0].int().tolist()  # integer boxes: exactly these rows and columns
        by_hand = float(maps[i, 0, y0:y1, x0:x1].sum() / maps[i].sum())
        assert float(got[i]) == pytest.approx(by_hand, abs=1e-6)
        assert energy_pointing_game(maps[i], boxes[i]) == pytest.approx(by_hand, abs=1e-6)
    # a box with fractional edges: pixel centres 1.5..3.5 (columns) and 0.5..1.5 (rows) lie in it
    frac = energy_pointing_game(maps[0], torch.tensor([[1.2, 0.3, 3.9, 1.6]]))
    assert frac == pytest.approx(float(maps[0, 0, 0:2, 1:4].sum() / maps[0].sum()), abs=1e-6)
    assert float(inside_fraction(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))[0]) == 0.0


def test_box_study_matches_hand_computation(tiny_cnn, images):
    n, _, h, w = images.shape
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 24.0]])] * n
    region = box_masks(boxes, (h, w))
    g = torch.Generator().manual_seed(0)
    maps = {"A": torch.rand(n, 1, h, w, generator=g), "B": torch.rand(n, 1, h, w, generator=g)}
    targets = torch.tensor([0, 1, 2])
    study = box_study(tiny_cnn, images, targets, region, maps, extra_regions={"ones": torch.ones(n, 1, h, w)})
    assert isinstance(study, BoxStudy)
    assert list(study.o) == ["S := B", "S := I \\ B", "ones", "A", "B"]
    p = class_probability(tiny_cnn, images, targets)
    assert torch.allclose(study.p, p)
    rows = study.rows()
    # the box row is the box used as a map
    want = classification_metrics(p, class_probability(tiny_cnn, images * region, targets))
    assert rows["S := B"]["AD_S"] == pytest.approx(want["AD"]) and rows["S := B"]["AG_S"] == pytest.approx(
        want["AG"]
    )
    assert set(rows["S := B"]) == {"AD_S", "AG_S", "AI_S"}
    # a map of ones changes nothing: AD 0, AG 0, AI 0
    assert rows["ones"]["AD_S"] == pytest.approx(0) and rows["ones"]["AI_S"] == 0
    # each method's three parts
    for part, masks in split_by_region(maps["A"], region).items():
        want = classification_metrics(p, class_probability(tiny_cnn, images * masks, targets))
        assert rows["A"][f"AD_{part}"] == pytest.approx(want["AD"])
        assert rows["A"][f"AI_{part}"] == pytest.approx(want["AI"])
        assert study.metric("A", "AG", part) == pytest.approx(want["AG"])
    assert torch.allclose(study.inside["A"], inside_fraction(maps["A"], region))
    assert study.kinds == {
        "S := B": "region",
        "S := I \\ B": "region",
        "ones": "region",
        "A": "method",
        "B": "method",
    }
    with pytest.raises(InputError, match="no part"):
        study.metric("S := B", "AD", "B_and_S")
    with pytest.raises(InputError, match="no row"):
        study.metric("C")


def test_box_study_refuses_bad_input(tiny_cnn, images):
    n, _, h, w = images.shape
    region = torch.ones(n, 1, h, w)
    with pytest.raises(InputError, match="0/1"):
        box_study(tiny_cnn, images, None, region * 0.5)
    with pytest.raises(InputError, match="regions must be"):
        box_study(tiny_cnn, images, None, region[:2])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        box_study(tiny_cnn, images, None, region, {"A": region * 2})
    with pytest.raises(InputError, match="must be"):
        box_study(tiny_cnn, images, None, region, {"A": region[:, :, :4]})
    with pytest.raises(InputError, match="twice"):
        box_study(tiny_cnn, images, None, region, {"A": region}, extra_regions={"A": region})
    with pytest.raises(InputError, match="nothing"):
        box_study(tiny_cnn, images, None, region, region_rows=False)


def test_format_box_table_with_paper():
    table = {
        "S := B": {"AD_S": 1.0, "AG_S": 2.0, "AI_S": 3.0},
        "Grad-CAM": {f"{m}_{p}": 10.0 for m in ("AD", "AG", "AI") for p in PARTS},
    }
    text = format_box_table(table, paper=paper_table("5", "vgg16_bn"))
    lines = text.splitlines()
    assert len(lines) == 2 + 4  # two header lines, each row followed by the paper's
    assert lines[2].split()[3:] == ["1.0", "-", "-", "2.0", "-", "-", "3.0", "-", "-"]
    assert lines[3].split()[1:] == ["67.2", "-", "-", "2.3", "-", "-", "9.2", "-", "-"]  # the paper's S := B
    assert lines[5].split()[1:4] == ["15.0", "72.6", "52.1"]  # the paper's Grad-CAM AD columns
    assert "paper" not in format_box_table(table)


def test_reliance_per_image():
    probs = {
        "both": torch.tensor([[0.9, 0.1], [0.2, 0.8]]),
        "swapped": torch.tensor([[0.5, 0.5], [0.3, 0.7]]),
        "context": torch.tensor([[0.6, 0.4], [0.6, 0.4]]),
    }
    r = reliance_per_image(probs, torch.tensor([0, 1]))
    assert torch.allclose(r["context"], torch.tensor([0.4, 0.1]))
    assert torch.allclose(r["object"], torch.tensor([0.3, 0.4]))
    with pytest.raises(InputError, match="conditions"):
        reliance_per_image({"both": probs["both"]}, torch.tensor([0, 1]))


def _world_masks():
    obj = torch.zeros(4, 1, 8, 8)
    ctx = torch.zeros(4, 1, 8, 8)
    obj[:, :, 0:2, 0:2] = 1  # 4 pixels
    ctx[:, :, 4:8, 4:8] = 1  # 16 pixels
    return obj, ctx


def test_mass_table_and_context_share():
    obj, ctx = _world_masks()
    uniform = torch.ones(4, 1, 8, 8)
    t = mass_table({"uniform": uniform, "object": obj, "context": ctx}, obj, ctx)
    assert t["area"]["object"] == pytest.approx(4 / 64) and t["area"]["context"] == pytest.approx(16 / 64)
    assert t["uniform"]["object_x"] == pytest.approx(1) and t["uniform"]["context_x"] == pytest.approx(1)
    assert t["object"]["object"] == pytest.approx(1) and t["object"]["object_x"] == pytest.approx(16)
    assert t["context"]["context_x"] == pytest.approx(4)
    assert torch.allclose(context_share(uniform, obj, ctx), torch.full((4,), 0.5))  # sizes do not count
    assert torch.allclose(context_share(ctx, obj, ctx), torch.ones(4))
    assert torch.allclose(context_share(torch.zeros(4, 1, 8, 8), obj, ctx), torch.full((4,), 0.5))


def test_context_agreement_follows_the_model():
    obj, ctx = _world_masks()
    lean = torch.tensor([0.1, 0.4, 0.6, 0.9])  # the model's context share, scene by scene
    reliance = {"context": lean, "object": 1 - lean}
    follows = obj * (1 - lean).view(4, 1, 1, 1) + ctx * lean.view(4, 1, 1, 1)
    opposes = obj * lean.view(4, 1, 1, 1) + ctx * (1 - lean).view(4, 1, 1, 1)
    rho = context_agreement(
        {"follows": follows, "opposes": opposes, "uniform": torch.ones(4, 1, 8, 8)}, obj, ctx, reliance
    )
    assert rho["follows"] == pytest.approx(1.0) and rho["opposes"] == pytest.approx(-1.0)
    assert math.isnan(rho["uniform"])


def test_checker_energy_pointing_game(capsys):
    def right(s, b):
        x0, y0, x1, y1 = (int(v) for v in b)
        return float(s[y0:y1, x0:x1].sum() / s.sum())

    def recall(s, b):
        x0, y0, x1, y1 = (int(v) for v in b)
        return float(s[y0:y1, x0:x1].sum() / ((x1 - x0) * (y1 - y0)))

    def swapped(s, b):
        x0, y0, x1, y1 = (int(v) for v in b)
        return float(s[x0:x1, y0:y1].sum() / s.sum())

    def pointing(s, b):
        x0, y0, x1, y1 = (int(v) for v in b)
        i = int(s.argmax())
        y, x = divmod(i, s.shape[1])
        return float(x0 <= x < x1 and y0 <= y < y1)

    def unsolved(s, b):
        raise NotImplementedError

    assert check_energy_pointing_game(right) is True
    assert "✓" in capsys.readouterr().out
    assert check_energy_pointing_game(unsolved) is False
    assert "not solved" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="recall"):
        check_energy_pointing_game(recall)
    with pytest.raises(AssertionError, match="swapped"):
        check_energy_pointing_game(swapped)
    with pytest.raises(AssertionError, match="pointing game"):
        check_energy_pointing_game(pointing)
    with pytest.raises(AssertionError, match="percent"):
        check_energy_pointing_game(lambda s, b: 100 * right(s, b))
