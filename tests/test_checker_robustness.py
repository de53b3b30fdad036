"""The exercise checkers cannot be fooled: a NaN result is wrong (and named), a function that changes its inputs
in place cannot move the expected answer, and a result that is not one number gets a hint, not a raw error."""

from __future__ import annotations

import math
import re

import pytest
import torch
from scipy.stats import spearmanr

from opticam_lib.course import exercises as ex

NAN = float("nan")


def right_spearman(a, b):
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


def right_average_gain(p, o):  # by hand: a function that calls the library's average_gain fails its checker
    return float(100 * ((o - p).clamp(min=0) / (1 - p)).mean())


def right_energy_pointing_game(s, box):
    x0, y0, x1, y1 = (int(v) for v in box)
    return float(s[y0:y1, x0:x1].sum() / s.sum())


def right_cost(forward_s, backward_ratio, channels, iterations, images, chunk):
    fn_, fc = forward_s[images], forward_s[chunk]
    return {
        "Score-CAM": images * (fn_ + channels * fc),
        "Opti-CAM": images * (fn_ + iterations * fn_ * (1 + backward_ratio)),
    }


def test_the_right_answers_still_pass(capsys):
    assert ex.check_spearman(right_spearman) is True
    assert ex.check_average_gain(right_average_gain) is True
    assert ex.check_energy_pointing_game(right_energy_pointing_game) is True
    assert ex.check_cost_prediction(right_cost) is True
    assert capsys.readouterr().out.count("✓ correct") == 4


# --- 1. NaN is never right ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check, fn",
    [
        (ex.check_average_gain, lambda p, o: NAN),
        (ex.check_average_gain, lambda p, o: torch.tensor(NAN)),
        # a realistic slip: the mean over an empty selection
        (ex.check_average_gain, lambda p, o: 100 * ((o - p) / (1 - p))[o > 2].mean()),
        (ex.check_spearman, lambda a, b: NAN),
        (ex.check_energy_pointing_game, lambda s, box: NAN),
    ],
)
def test_a_nan_result_is_wrong_and_named(check, fn, capsys):
    with pytest.raises(AssertionError, match="your result is NaN"):
        check(fn)
    assert "✓" not in capsys.readouterr().out


def test_a_nan_in_the_second_case_of_the_energy_pointing_game_is_wrong(capsys):
    def fn(s, box):
        return right_energy_pointing_game(s, box) if s.shape == (24, 32) else NAN

    with pytest.raises(AssertionError, match="NaN"):
        ex.check_energy_pointing_game(fn)
    assert "✓" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", [NAN, math.inf])
def test_a_nan_or_infinite_cost_is_wrong(bad, capsys):
    with pytest.raises(AssertionError, match="Score-CAM"):
        ex.check_cost_prediction(lambda *a: {"Score-CAM": bad, "Opti-CAM": bad})
    assert "✓" not in capsys.readouterr().out


def test_the_tolerance_helper_treats_nan_and_inf_as_off():
    assert ex._off(NAN, 1.0, 1e-3) and ex._off(math.inf, 1.0, 1e-3) and ex._off(1.0, NAN, 1e-3)
    assert not ex._off(1.0, 1.0 + 1e-4, 1e-3)


# --- 2. in-place changes to the inputs cannot move the expected answer ----------------------------------------


def _saliency_zeroing_acts(u, acts):
    acts.zero_()
    return torch.zeros(acts.shape[0], 1, 8, 8)


def _gain_copying_p_into_o(p, o):
    o.copy_(p)
    return 0.0


def _masked_probability_zeroing(clf, images, masks, targets):
    from opticam_lib.metrics.classification import class_probability

    masks.zero_()
    return class_probability(clf, images * masks, targets)


def _spearman_flattening_both(a, b):
    a.copy_(torch.arange(a.numel(), dtype=a.dtype).view_as(a))
    b.copy_(torch.arange(b.numel(), dtype=b.dtype).view_as(b))
    return 1.0


def _ep_zeroing_the_map(s, box):
    s.zero_()
    s[int(box[1]), int(box[0])] = 1.0
    return 1.0


def _area_loss_fills_ones(masks, area):
    masks.fill_(1.0)
    return torch.zeros(masks.shape[0])


def _rollout_identity(atts):
    for a in atts:
        a.copy_(torch.eye(a.shape[-1]).expand_as(a))
    return torch.eye(atts[0].shape[-1]).expand(atts[0].shape[0], -1, -1).clone()


@pytest.mark.parametrize(
    "check, fn",
    [
        (ex.check_range_normalization, lambda m: m.zero_()),
        (ex.check_range_normalization, lambda m: m.clamp_(0, 1)),
        (ex.check_saliency_map, _saliency_zeroing_acts),
        (ex.check_average_gain, _gain_copying_p_into_o),
        (ex.check_masked_probability, _masked_probability_zeroing),
        (ex.check_spearman, _spearman_flattening_both),
        (ex.check_energy_pointing_game, _ep_zeroing_the_map),
        (ex.check_area_loss, _area_loss_fills_ones),
        (ex.check_rollout, _rollout_identity),
    ],
)
def test_changing_the_inputs_in_place_does_not_fool_the_checker(check, fn, capsys):
    with pytest.raises(AssertionError):
        check(fn)
    assert "✓" not in capsys.readouterr().out


# --- 3. a result that is not one number gets a hint -----------------------------------------------------------


@pytest.mark.parametrize("check", [ex.check_average_gain, ex.check_spearman, ex.check_energy_pointing_game])
@pytest.mark.parametrize(
    "result, kind",
    [(None, "NoneType"), ([1.0, 2.0], "list"), ("0.5", "str"), (torch.zeros(3), "shape (3,)")],
)
def test_a_result_that_is_not_one_number_gets_a_hint(check, result, kind):
    with pytest.raises(AssertionError, match=r"return one number \(a float\); got .*" + re.escape(kind)):
        check(lambda *_args: result)


def test_an_average_gain_as_a_fraction_is_named():
    with pytest.raises(AssertionError, match="a fraction: AG is in percent, multiply by 100"):
        ex.check_average_gain(lambda p, o: right_average_gain(p, o) / 100)
