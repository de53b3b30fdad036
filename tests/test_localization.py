"""Appendix B localisation metrics on hand-made maps whose answers are known."""

import math

import pytest
import torch

from opticam_lib.errors import InputError
from opticam_lib.metrics.localization import (
    COLUMNS,
    aggregate_localization,
    best_method,
    box_accuracy,
    box_iou,
    energy_pointing_game,
    format_localization,
    largest_component_box,
    localize,
    localize_all,
    pointing_game,
    predicted_box,
    union_mask,
)


def square_map(size=20, box=(5, 5, 10, 10)):
    s = torch.zeros(1, size, size)
    x0, y0, x1, y1 = box
    s[0, y0:y1, x0:x1] = 1.0
    return s


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_largest_component_is_chosen():
    import numpy as np

    m = np.zeros((10, 10), dtype=bool)
    m[0:2, 0:2] = True  # 4 pixels
    m[5:9, 4:9] = True  # 20 pixels
    assert largest_component_box(m) == (4, 5, 9, 9)
    assert largest_component_box(np.zeros((3, 3), dtype=bool)) is None


def test_predicted_box_thresholds_at_mean():
    s = square_map()
    assert predicted_box(s) == (5, 5, 10, 10)


def test_perfect_map_scores_perfectly():
    s = square_map()
    boxes = torch.tensor([[5.0, 5.0, 10.0, 10.0]])
    r = localize(s, boxes, correct=True, probability=1.0)
    assert r.OM == pytest.approx(0.0)
    assert r.LE == pytest.approx(0.0)
    assert r.F1 == pytest.approx(1.0)  # all mass inside, the whole box covered with value 1
    assert r.SP == 1.0
    assert r.EP == pytest.approx(1.0)
    # SM = log(max(0.05, 25/400)) - log(1)
    assert r.SM == pytest.approx(math.log(25 / 400))


def test_wrong_class_fails_om_but_not_le():
    s = square_map()
    boxes = torch.tensor([[5.0, 5.0, 10.0, 10.0]])
    r = localize(s, boxes, correct=False, probability=0.5)
    assert r.OM == pytest.approx(1.0)
    assert r.LE == pytest.approx(0.0)


def test_map_outside_box():
    s = square_map(box=(12, 12, 18, 18))
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    r = localize(s, boxes, correct=True, probability=0.9)
    assert r.LE == 1.0 and r.SP == 0.0 and r.EP == 0.0 and r.F1 == 0.0


def test_precision_recall_by_hand():
    # map = 1 on a 10x10 square, box covers half of it (5x10): precision 0.5, recall 1
    s = square_map(box=(0, 0, 10, 10))
    boxes = torch.tensor([[0.0, 0.0, 5.0, 10.0]])
    r = localize(s, boxes, correct=True, probability=0.5)
    assert r.EP == pytest.approx(0.5)
    assert r.F1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_union_of_two_boxes():
    u = union_mask(torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]]), (4, 4))
    assert int(u.sum()) == 7


def test_box_accuracy_and_table():
    maps = torch.stack([square_map(), square_map(box=(12, 12, 18, 18))])
    boxes = [torch.tensor([[5.0, 5.0, 10.0, 10.0]])] * 2
    rows = [localize(maps[i], boxes[i], True, 0.5) for i in range(2)]
    assert box_accuracy(rows) == pytest.approx(0.5)  # one image hit at every IoU threshold, one missed
    table = aggregate_localization(
        localize_all(maps, boxes, torch.tensor([1, 2]), torch.tensor([1, 1]), torch.tensor([0.5, 0.5]))
    )
    assert table["LE"] == pytest.approx(50.0)
    assert table["OM"] == pytest.approx(50.0)  # first: correct and perfect; second: wrong class -> 1
    assert table["SP"] == pytest.approx(50.0)
    assert set(table) == {"OM", "LE", "F1", "SP", "EP", "BA", "SM"}


def test_constant_map_predicts_the_whole_image():
    # S >= mean: a map without structure gives the whole image as B_p, not "no box" (which SM would reward)
    s = torch.zeros(1, 12, 16)
    assert predicted_box(s) == (0, 0, 16, 12)
    r = localize(s, torch.tensor([[2.0, 2.0, 6.0, 6.0]]), correct=True, probability=0.5)
    assert r.SM == pytest.approx(math.log(1.0) - math.log(0.5))
    assert r.EP == 0.0 and r.F1 == 0.0  # no mass at all


def test_boxacc_threshold_is_strict():
    s = square_map()  # values 0 and 1: eta = 0 keeps the square, no eta in [0, 1) keeps the background
    assert predicted_box(s, 0.0) == (5, 5, 10, 10)
    assert predicted_box(torch.zeros(1, 5, 5), 0.0) is None


def test_pointing_game_ties_fake_cam():
    # Fake-CAM: 1 everywhere but the top-left pixel; the first maximum in row-major order is pixel (0, 1)
    s = torch.ones(1, 20, 20)
    s[0, 0, 0] = 0
    boxes = torch.tensor([[8.0, 8.0, 14.0, 14.0]])
    assert pointing_game(s, boxes, ties="any") == 1.0
    assert pointing_game(s, boxes, ties="first") == 0.0
    assert pointing_game(s, torch.tensor([[1.0, 0.0, 2.0, 1.0]]), ties="first") == 1.0
    with pytest.raises(InputError):
        pointing_game(s, boxes, ties="random")


def test_pointing_game_single_peak():
    s = torch.rand(1, 20, 20, generator=torch.Generator().manual_seed(0)) * 0.5
    s[0, 3, 17] = 1.0  # peak at x = 17, y = 3
    assert pointing_game(s, torch.tensor([[15.0, 0.0, 20.0, 5.0]])) == 1.0
    assert pointing_game(s, torch.tensor([[0.0, 0.0, 15.0, 20.0]])) == 0.0


def test_energy_pointing_game_by_hand():
    s = torch.zeros(10, 10)
    s[0:2, 0:2] = 1.0  # 4 units of mass inside the box
    s[8, 8] = 4.0  # 4 units outside
    box = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    assert energy_pointing_game(s, box) == pytest.approx(0.5)
    assert localize(s, box, True, 0.5).EP == pytest.approx(0.5)
    assert energy_pointing_game(torch.zeros(4, 4), torch.tensor([[0.0, 0.0, 2.0, 2.0]])) == 0.0


def test_recall_and_box_are_reported():
    s = square_map(box=(0, 0, 10, 10)) * 0.5
    r = localize(s, torch.tensor([[0.0, 0.0, 10.0, 20.0]]), True, 0.5)
    assert r.recall == pytest.approx(0.5 * 100 / 200)
    assert r.box == (0, 0, 10, 10)


def test_wrong_inputs_are_refused():
    s = square_map()
    box = torch.tensor([[5.0, 5.0, 10.0, 10.0]])
    with pytest.raises(InputError, match="no ground-truth box"):
        localize(s, torch.zeros(0, 4), True, 0.5)
    with pytest.raises(InputError, match="x1 > x0"):
        localize(s, torch.tensor([[5.0, 5.0, 5.0, 10.0]]), True, 0.5)
    with pytest.raises(InputError, match="NaN"):
        localize(s * float("nan"), box, True, 0.5)
    with pytest.raises(InputError, match="negative"):
        localize(-s, box, True, 0.5)
    with pytest.raises(InputError, match="probability"):
        localize(s, box, True, 1.5)
    with pytest.raises(InputError, match=r"\(H, W\)"):
        localize(torch.zeros(2, 3, 4, 4), box, True, 0.5)
    with pytest.raises(InputError, match="another length"):
        localize_all(torch.stack([s, s]), [box], torch.tensor([1, 1]), torch.tensor([1, 1]), torch.ones(2))
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        localize_all(s, [box], torch.tensor([1]), torch.tensor([1]), torch.ones(1))


def test_box_as_its_own_map_is_perfect_on_every_box_metric():
    # the box study of section 5.4 uses S := B; on localisation metrics it cannot be beaten
    from opticam_lib.images import boxes_to_mask

    boxes = torch.tensor([[3.0, 4.0, 15.0, 11.0]])
    s = boxes_to_mask(boxes, (16, 20))
    t = aggregate_localization(
        localize_all(s[None], [boxes], torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]))
    )
    assert t["OM"] == pytest.approx(0) and t["LE"] == pytest.approx(0)
    assert t["F1"] == pytest.approx(100) and t["EP"] == pytest.approx(100) and t["SP"] == 100
    assert t["BA"] == pytest.approx(100)
    assert list(t) == list(COLUMNS)


def test_best_method_and_format():
    table = {"A": {c: 1.0 for c in COLUMNS}, "B": {c: 2.0 for c in COLUMNS}}
    assert best_method(table, "OM") == "A" and best_method(table, "EP") == "B"
    assert best_method(table, "EP", exclude=["B"]) == "A"
    text = format_localization(table, paper={"A": {c: 9.0 for c in COLUMNS}})
    lines = text.splitlines()
    assert len(lines) == 3 and "OM↓" in lines[0] and "EP↑" in lines[0]
    assert lines[1].split("|")[1].split()[0] == "9.0" and lines[2].endswith("-")


# --------------------------------------------------------------------------------------------------------------
# SM (eq. A7) scores the class on the crop of the predicted box


class ChannelMeans(torch.nn.Module):
    """Two classes from channel means: logit_0 = a * mean(channel) + b, logit_1 = 0."""

    def __init__(self, channel: int, a: float, b: float):
        super().__init__()
        self.channel, self.a, self.b = channel, a, b
        self.body = torch.nn.Identity()

    def forward(self, x):
        z = self.body(x)[:, self.channel].mean(dim=(1, 2)) * self.a + self.b
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def scene(size=32, obj=(4, 4, 12, 12)):
    """A red square (the object) on a green background, (1, 3, size, size) in [0, 1]."""
    x = torch.zeros(1, 3, size, size)
    x[:, 1] = 1.0
    x0, y0, x1, y1 = obj
    x[:, 0, y0:y1, x0:x1] = 1.0
    x[:, 1, y0:y1, x0:x1] = 0.0
    return x


def two_class(channel, a, b):
    from opticam_lib.models.classifier import wrap_classifier

    net = ChannelMeans(channel, a, b)
    return wrap_classifier(net, "body", name="means", num_classes=2, input_size=32, mean=None, std=None)


def test_crop_probability_is_the_class_on_the_resized_crop_by_hand():
    from opticam_lib.metrics.localization import crop_box, crop_probabilities

    clf = two_class(0, 20.0, -2.0)  # the class is "red"
    x = scene()
    tight = square_map(32, (4, 4, 12, 12))[None]  # B_p = the object's box
    # by hand: the crop of the red square is all red, so mean(R) = 1 and p = sigmoid(20 - 2)
    crop = crop_box(x[0], (4, 4, 12, 12))
    assert crop.shape == (3, 32, 32) and torch.allclose(crop[0], torch.ones(32, 32))
    p = crop_probabilities(clf, x, tight, [0])
    assert float(p[0]) == pytest.approx(torch.sigmoid(torch.tensor(18.0)).item(), abs=1e-6)
    # the full image: mean(R) = 64 / 1024, p = sigmoid(20 * 0.0625 - 2)
    whole = torch.ones(1, 1, 32, 32)
    assert float(crop_probabilities(clf, x, whole, [0])[0]) == pytest.approx(
        torch.sigmoid(torch.tensor(-0.75)).item(), abs=1e-6
    )
    with pytest.raises(InputError, match="not inside"):
        crop_box(x[0], (0, 0, 40, 8))
    with pytest.raises(InputError, match="maps must be"):
        crop_probabilities(clf, x, whole[0], [0])


def test_sm_ordering_follows_the_crop():
    """Where the class needs its context, Fake-CAM (box = whole image) has the lowest SM, as in Tables A7/A8;
    where the object alone carries it, a tight box beats Fake-CAM. With the full image's p^c, a tight box would
    always score at most Fake-CAM's SM (the bug this guards against)."""
    from opticam_lib.metrics.localization import localization_scores

    x = scene()
    box = [torch.tensor([[4.0, 4.0, 12.0, 12.0]])]
    tight = square_map(32, (4, 4, 12, 12))[None]
    fake = torch.ones(1, 1, 32, 32)
    fake[..., 0, 0] = 0.0  # Fake-CAM: 1 everywhere but one pixel; its box is the whole image
    context = two_class(1, 40.0, -30.0)  # the class is "mostly green": the crop of the object loses it
    obj = two_class(0, 20.0, -2.0)  # the class is "red": the crop of the object gains it
    sm = {
        (name, m): localization_scores(clf, x, maps, box, [0])["SM"]
        for name, clf in [("context", context), ("object", obj)]
        for m, maps in [("tight", tight), ("fake", fake)]
    }
    assert sm[("context", "fake")] < sm[("context", "tight")]
    assert sm[("object", "tight")] < sm[("object", "fake")]
    # the area term by hand for the tight box: log(64 / 1024); Fake-CAM's is log 1 = 0
    p_obj = torch.sigmoid(torch.tensor(18.0)).item()
    assert sm[("object", "tight")] == pytest.approx(math.log(64 / 1024) - math.log(p_obj), abs=1e-5)
