"""The plotting helpers check the maps they draw: a map of another size, for another number of images, with NaN
or outside [0, 1] is an ``InputError`` naming the likely mistake, never a reshape error or a silently clipped
picture under a [0, 1] colour bar."""

from __future__ import annotations

import matplotlib
import pytest
import torch

from opticam_lib.errors import InputError
from opticam_lib.plots import overlay, saliency_colorbar, show_maps

matplotlib.use("Agg")

IMAGES = torch.rand(2, 3, 32, 32)
MAPS = torch.rand(2, 1, 32, 32)


def test_good_maps_are_drawn():
    assert overlay(IMAGES[0], MAPS[0]).shape == (32, 32, 3)
    assert overlay(IMAGES[0], MAPS[0, 0]).shape == (32, 32, 3)  # (H, W) too
    fig = show_maps(IMAGES, {"a": MAPS, "b": MAPS[:, 0]}, row_titles=["x", "y"])
    assert len(fig.axes) == 2 * 3 + 1


@pytest.mark.parametrize(
    "saliency, message",
    [
        (torch.rand(1, 8, 8), r"8 x 8 but its image is 32 x 32: upsample it"),
        (torch.rand(1, 32, 16), r"32 x 16 but its image is 32 x 32$"),
        (torch.rand(2, 32, 32), r"shape \(1, H, W\) or \(H, W\)"),
        (torch.full((1, 32, 32), float("nan")), "NaN"),
        (torch.rand(1, 32, 32) * 5, r"\[0, 1\].*normalise it first"),
        (torch.rand(1, 32, 32) - 0.5, r"\[0, 1\]"),
        (MAPS[0].numpy(), "torch.Tensor"),
    ],
)
def test_a_bad_map_is_named(saliency, message):
    with pytest.raises(InputError, match=message):
        overlay(IMAGES[0], saliency)


def test_show_maps_checks_counts_and_names_the_method():
    with pytest.raises(
        InputError, match=r"maps\['a'\] must hold one map per image.*N = 2, got \(1, 1, 32, 32\)"
    ):
        show_maps(IMAGES, {"a": MAPS[:1]})
    with pytest.raises(InputError, match=r"row_titles must have one entry per image \(2\), got 1"):
        show_maps(IMAGES, {"a": MAPS}, row_titles=["x"])
    with pytest.raises(InputError, match=r"maps\['b'\] of image 1: .*normalise"):
        show_maps(IMAGES, {"a": MAPS, "b": torch.cat([MAPS[:1], MAPS[1:] * 3])})
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        show_maps(IMAGES[0], {"a": MAPS})


def test_the_colour_bar_names_its_ends():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.subplots()
    default = saliency_colorbar(fig, ax)
    assert [t.get_text() for t in default.ax.get_yticklabels()] == ["0 least", "0.5", "1 most"]
    mask = saliency_colorbar(fig, ax, end_labels=("hides", "keeps"))
    assert [t.get_text() for t in mask.ax.get_yticklabels()] == ["0 hides", "0.5", "1 keeps"]
