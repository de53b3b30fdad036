"""Notebook 06's exercise checker (the ranking area loss of extremal perturbations) and its two figures."""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.figure import Figure

from opticam_lib.course.exercises import check_area_loss
from opticam_lib.course.figures import plot_extremal_history, plot_superpixel_weights
from opticam_lib.methods.attribution import grid_superpixels
from opticam_lib.methods.extremal import area_reference


def _solution(masks, area):
    flat = masks.flatten(1)
    ref = area_reference(flat.shape[1], area)
    return ((flat.sort(dim=1).values - ref) ** 2).mean(dim=1)


def _with_zeros(masks, zeros):
    """R_a with a reference of ``zeros`` zeros (a learner who rounds M (1 - a) otherwise than down)."""
    flat = masks.flatten(1)
    ref = torch.ones(flat.shape[1])
    ref[:zeros] = 0
    return ((flat.sort(dim=1).values - ref) ** 2).mean(dim=1)


def test_check_area_loss_accepts_the_solution(capsys):
    assert check_area_loss(_solution) is True
    assert "✓ correct" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (
            lambda m, a: ((m.flatten(1) - area_reference(m[0].numel(), a)) ** 2).mean(1),
            "sort the mask values",
        ),
        (
            lambda m, a: (
                (m.flatten(1).sort(dim=1, descending=True).values - area_reference(m[0].numel(), a)) ** 2
            ).mean(1),
            "ascending",
        ),
        (lambda m, a: _solution(m, a) * m[0].numel(), "do not sum"),
        (lambda m, a: (m.flatten(1).mean(1) - a) ** 2, "only constrains the average"),
        (lambda m, a: _solution(m, 1 - a), "values differ"),
        (lambda m, a: _with_zeros(m, round(m[0].numel() * (1 - a))), "round M \\(1 - a\\) down"),
        (lambda m, a: _with_zeros(m, math.ceil(m[0].numel() * (1 - a))), "round M \\(1 - a\\) down"),
        (lambda m, a: _solution(m, a)[:2], "expected shape"),
    ],
)
def test_check_area_loss_rejects_wrong_answers_with_a_hint(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_area_loss(wrong)


def test_check_area_loss_reminds_when_unsolved(capsys):
    def unsolved(masks, area):
        raise NotImplementedError

    assert check_area_loss(unsolved) is False
    assert "not solved yet" in capsys.readouterr().out


def test_plot_extremal_history():
    scores, losses = torch.randn(2, 7), torch.rand(2, 7)
    fig = plot_extremal_history(scores, losses, labels=["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2 and fig.axes[0].get_legend() is not None
    weights = 300 * 1.0035 ** torch.arange(7.0)
    fig = plot_extremal_history(scores, losses, area_weights=weights)
    assert len(fig.axes) == 3
    assert torch.allclose(torch.tensor(fig.axes[2].lines[1].get_ydata()).float(), losses[1] * weights)


def test_plot_superpixel_weights():
    seg = grid_superpixels(20, 30, 8)  # 3 x 4 superpixels, the last row and column narrower
    weights = torch.linspace(-1, 2, 12)
    fig = plot_superpixel_weights(torch.rand(3, 20, 30), seg, weights)
    assert isinstance(fig, Figure)
    assert "12 superpixels" in fig.axes[0].get_title()
    painted = fig.axes[1].images[0].get_array()
    assert painted.shape == (20, 30) and float(painted[0, 0]) == -1.0 and float(painted[19, 29]) == 2.0
    assert fig.axes[1].images[0].get_clim() == (-2.0, 2.0)  # centred at 0
