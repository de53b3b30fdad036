"""Appendix B localisation metrics on hand-made maps whose answers are known."""

import pytest
import torch

from opticam_lib.localization import (
    box_accuracy,
    box_iou,
    largest_component_box,
    localization_table,
    localize,
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
    import math

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
    table = localization_table(
        maps, boxes, torch.tensor([1, 2]), torch.tensor([1, 1]), torch.tensor([0.5, 0.5])
    )
    assert table["LE"] == pytest.approx(50.0)
    assert table["OM"] == pytest.approx(50.0)  # first: correct and perfect; second: wrong class -> 1
    assert table["SP"] == pytest.approx(50.0)
    assert set(table) == {"OM", "LE", "F1", "SP", "EP", "BA", "SM"}
