"""Figures a person can read (issue 15, item 8): one perceptually uniform colour map with a colour bar on every
grid of maps, feature maps drawn before ReLU6's clamp, class names and object boxes on the sanity-check grids,
distinguishable cascade lines, the blur perturbation in one row, cost labels inside the plot, aligned tables.

The checks are on what a reader sees: brightness that grows with the value, a colour bar whose ends say what they
mean, labels inside the axes, lines that differ in style, columns that line up."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from torch import nn

from opticam_lib import wrap_classifier
from opticam_lib.course.channel_scores import plot_cost
from opticam_lib.course.feature_maps import pre_activation, show_feature_maps
from opticam_lib.course.figures import show_perturbation
from opticam_lib.course.sanity_checks import line_labels, plot_cascade, show_cascade, show_comparison
from opticam_lib.errors import InputError
from opticam_lib.hooks import capture
from opticam_lib.metrics.evaluation import format_table
from opticam_lib.metrics.sanity import MEASURES, ModelComparison, RandomizationResult, randomization_table
from opticam_lib.plots import SALIENCY_CMAP, draw_boxes, overlay, saliency_colorbar, show_maps

matplotlib.use("Agg")


def _draw(fig: Figure):
    """Lay the figure out and draw it once (as the notebook's inline backend does); return the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _colorbars(fig: Figure) -> list[Colorbar]:
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def _tick_texts(bar: Colorbar) -> list[str]:
    return [t.get_text() for t in bar.ax.get_yticklabels()]


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3] @ np.array([0.299, 0.587, 0.114])


def _inside(inner, outer, tol: float = 1.0) -> bool:
    return (
        inner.x0 >= outer.x0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y0 >= outer.y0 - tol
        and inner.y1 <= outer.y1 + tol
    )


# ---------------------------------------------------------------- one colour convention (plots.py)


def test_the_colour_map_brightens_with_the_value():
    """Perceptually uniform: a larger value is always a brighter colour (not so for 'jet', whose yellow is
    brighter than its red), so the order of the values reads the same in greyscale."""
    values = np.linspace(0, 1, 64)
    luma = _luma(matplotlib.colormaps[SALIENCY_CMAP](values))
    assert np.all(np.diff(luma) > 0)
    jet = _luma(matplotlib.colormaps["jet"](values))
    assert not np.all(np.diff(jet) > 0)  # the test can tell the old default apart


def test_an_overlay_brightens_with_the_saliency_and_its_colour_comes_from_the_map():
    grey = torch.full((3, 8, 8), 0.5)
    ramp = torch.linspace(0, 1, 8).repeat(8, 1)[None]  # (1, 8, 8): saliency grows to the right
    luma = _luma(overlay(grey, ramp))
    assert np.all(np.diff(luma[0]) > 0)
    # two photos of the same brightness but different hue give the same overlay: no colour from the photo
    red, green = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    red[0], green[1] = 0.587, 0.299  # equal luma 0.299 * 0.587
    assert np.allclose(overlay(red, ramp), overlay(green, ramp))
    assert not np.allclose(overlay(red, ramp, grey=False), overlay(green, ramp, grey=False))


def test_show_maps_has_one_colour_bar_that_says_what_0_and_1_mean():
    images = torch.rand(2, 3, 16, 16)
    maps = {"A": torch.rand(2, 1, 16, 16), "B": torch.rand(2, 1, 16, 16)}
    fig = show_maps(images, maps, row_titles=["cat", "cup"], size=1.4)
    bars = _colorbars(fig)
    assert len(bars) == 1
    ticks = _tick_texts(bars[0])
    assert any(t.startswith("0") and "least" in t for t in ticks)
    assert any(t.startswith("1") and "most" in t for t in ticks)
    assert bars[0].cmap.name == SALIENCY_CMAP
    assert _colorbars(show_maps(images, maps, colorbar=False)) == []


def test_the_colour_bar_title_fits_a_one_row_grid():
    """A one-row grid of small panels: the bar's label stays inside the figure (a vertical label longer than
    the figure was cut off)."""
    fig = show_maps(torch.rand(1, 3, 16, 16), {"A": torch.rand(1, 1, 16, 16)}, size=1.2)
    renderer = _draw(fig)
    bar = _colorbars(fig)[0]
    label = bar.ax.title
    assert label.get_text()
    assert _inside(label.get_window_extent(renderer), fig.bbox)


@pytest.mark.parametrize(("rows", "size"), [(1, 1.2), (2, 1.4), (4, 2.4)])
def test_the_colour_bar_title_and_ticks_stay_clear_of_the_maps(rows: int, size: float):
    fig = show_maps(torch.rand(rows, 3, 16, 16), {"A": torch.rand(rows, 1, 16, 16)}, size=size)
    renderer = _draw(fig)
    bar = _colorbars(fig)[0]
    texts = [bar.ax.title, *bar.ax.get_yticklabels()]
    panels = [ax.get_window_extent(renderer) for ax in fig.axes if ax.images]
    for t in texts:
        box = t.get_window_extent(renderer)
        assert _inside(box, fig.bbox)
        assert not any(box.overlaps(p) for p in panels)
    title = bar.ax.title.get_window_extent(renderer)
    top_tick = max(bar.ax.get_yticklabels(), key=lambda t: t.get_window_extent(renderer).y1)
    assert not title.overlaps(top_tick.get_window_extent(renderer))


def test_draw_boxes_outlines_each_box():
    fig = Figure()
    ax = fig.subplots()
    ax.imshow(np.zeros((20, 20)))
    draw_boxes(ax, torch.tensor([[2.0, 3.0, 10.0, 7.0], [0.0, 0.0, 20.0, 20.0]]))
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(r.get_width(), r.get_height()) for r in rects] == [(8.0, 4.0), (20.0, 20.0)]
    assert all(not r.get_fill() for r in rects)
    draw_boxes(ax, None)
    assert len(ax.patches) == 2


def test_saliency_colorbar_on_another_range_keeps_plain_ticks():
    fig = Figure()
    ax = fig.subplots()
    bar = saliency_colorbar(fig, ax, label="z", vmin=-2, vmax=3)
    assert not any("least" in t for t in _tick_texts(bar))
    assert bar.ax.title.get_text() == "z"


# ---------------------------------------------------------------- notebook 01: feature maps before ReLU6


class _NormAct(nn.Module):
    """BatchNorm followed by an in-place ReLU6 in one module, as timm's BatchNormAct2d (EfficientNet-Lite)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(k)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class _ClampNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn2 = _NormAct(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn2(self.conv(x)).mean(dim=(2, 3)))


def _clamp_classifier():
    torch.manual_seed(0)
    net = _ClampNet()
    net.bn2.bn.weight.data.fill_(30.0)  # a wide spread of values: many above 6, many below 0
    return wrap_classifier(net.eval(), "bn2", num_classes=3, input_size=16, mean=None, std=None)


def test_pre_activation_is_what_relu6_clamps():
    clf = _clamp_classifier()
    x = torch.rand(2, 3, 16, 16)
    z = pre_activation(clf, x)
    with torch.no_grad(), capture(clf) as cap:
        clf.model(x)
    assert z.shape == cap.activations.shape
    assert torch.allclose(z.clamp(0, 6), cap.activations, atol=1e-5)
    assert (z > 6).any() and (z < 0).any()  # the values the clamp hides
    assert not any(m._forward_pre_hooks for m in clf.model.modules())  # the hook is removed


def test_pre_activation_refuses_a_layer_without_an_activation():
    with pytest.raises(InputError, match="has no 'act' sub-module"):
        pre_activation(_clamp_classifier(), torch.rand(1, 3, 16, 16), layer="conv")


def test_feature_maps_before_the_clamp_mark_the_clamped_cells_and_have_a_colour_bar():
    z = torch.zeros(3, 4, 4)
    z[0, 0, :3] = 9.0  # three cells ReLU6 sets to 6
    z[1] = torch.linspace(-3, 7, 16).reshape(4, 4)  # two cells (6.33, 7) at or above 6
    z[2, 2, 2] = 6.0  # exactly 6: clamped too
    fig = show_feature_maps(torch.rand(3, 16, 16), z, [0, 1, 2], cols=4, clamp=(0, 6))
    maps = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (4, 4)]
    dots = [len(ax.collections[0].get_offsets()) if ax.collections else 0 for ax in maps]
    assert dots == [3, 2, 1]
    assert all(f"{n} of 16" in ax.get_title() for n, ax in zip(dots, maps))
    bars = _colorbars(fig)
    assert len(bars) == 1
    lo, hi = bars[0].norm.vmin, bars[0].norm.vmax
    assert lo <= -3 and hi >= 9  # one scale for all maps, wide enough for the values above the clamp
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in maps}
    assert len(norms) == 1


def test_feature_maps_without_a_clamp_still_get_a_colour_bar():
    fig = show_feature_maps(torch.rand(3, 16, 16), torch.rand(4, 4, 4), [0, 3])
    assert len(_colorbars(fig)) == 1


# ---------------------------------------------------------------- notebook 09: the sanity checks' figures


def _result(name: str, maps: list[torch.Tensor], sim: list[float]) -> RandomizationResult:
    n = maps[0].shape[0]
    similarity = {m: np.array([[s] * n for s in sim]) for m in MEASURES}
    return RandomizationResult(
        steps=["original", "fc", "conv"], maps=maps, similarity=similarity, method=name
    )


def _cascade_results(n: int = 3, size: int = 16):
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(n, 1, size, size, generator=g) for _ in range(3)]
    return {
        "Fake-CAM": _result("Fake-CAM", maps, [1.0, 1.0, 1.0]),
        "edge detector": _result("edge detector", maps, [1.0, 1.0, 1.0]),
        "Grad-CAM": _result("Grad-CAM", maps, [1.0, 0.4, 0.1]),
        "Opti-CAM": _result("Opti-CAM", maps, [1.0, 0.6, 0.2]),
    }


def test_the_cascade_legend_says_when_two_lines_coincide():
    table = randomization_table(_cascade_results())
    labels = line_labels(table)
    assert labels["Fake-CAM"] == "Fake-CAM"
    assert "Fake-CAM" in labels["edge detector"] and "same" in labels["edge detector"]
    assert labels["Grad-CAM"] == "Grad-CAM" and labels["Opti-CAM"] == "Opti-CAM"


def test_cascade_lines_differ_in_colour_marker_and_style():
    fig = plot_cascade(randomization_table(_cascade_results()))
    for ax in fig.axes[: len(MEASURES)]:
        lines = [ln for ln in ax.get_lines() if ln.get_label() and not ln.get_label().startswith("_")]
        assert len(lines) == 4
        styles = [(ln.get_marker(), ln.get_linestyle()) for ln in lines]
        assert len(set(styles)) == len(styles)
        assert len({ln.get_marker() for ln in lines}) == len(lines)
        # the two controls draw the same values: different line styles, so the lower one shows through
        fake, edge = lines[0], lines[1]
        assert np.allclose(fake.get_ydata(), edge.get_ydata())
        assert fake.get_linestyle() != edge.get_linestyle()
        assert fake.get_markersize() != edge.get_markersize()
    legend_texts = [t.get_text() for t in fig.axes[len(MEASURES) - 1].get_legend().get_texts()]
    assert any("same line as Fake-CAM" in t for t in legend_texts)


def _texts(fig: Figure) -> str:
    parts = []
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_ylabel()]
    return " | ".join(parts)


def test_show_cascade_names_the_classes_outlines_the_objects_and_has_a_colour_bar():
    results = _cascade_results()
    images = torch.rand(3, 3, 16, 16)
    boxes = torch.tensor([[1.0, 1.0, 8.0, 8.0], [4.0, 4.0, 12.0, 14.0], [0.0, 0.0, 5.0, 5.0]])
    fig = show_cascade(
        images,
        [results["Opti-CAM"], results["Grad-CAM"]],
        index=[0, 2],
        classes=["red disc", "plus", "green square"],
        boxes=boxes,
    )
    text = _texts(fig)
    assert "red disc" in text and "green square" in text and "plus" not in text
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 4 * 4  # 2 images x 2 methods rows, image + 3 steps
    assert all(len(ax.patches) == 1 for ax in panels)  # the box on the image and on every map
    assert len(_colorbars(fig)) == 1
    with pytest.raises(InputError, match="one entry per image"):
        show_cascade(images, [results["Opti-CAM"]], classes=["only one"])


def test_show_comparison_names_the_classes_outlines_the_objects_and_has_a_colour_bar():
    g = torch.Generator().manual_seed(1)
    comparisons = [
        ModelComparison(
            maps_a=torch.rand(3, 1, 16, 16, generator=g),
            maps_b=torch.rand(3, 1, 16, 16, generator=g),
            similarity={m: np.zeros(3) for m in MEASURES},
            method=name,
        )
        for name in ("Grad-CAM", "Opti-CAM")
    ]
    boxes = [torch.tensor([1.0, 1.0, 8.0, 8.0])] * 3
    fig = show_comparison(
        torch.rand(3, 3, 16, 16), comparisons, index=[0, 1], classes=["a cross", "a disc", "x"], boxes=boxes
    )
    text = _texts(fig)
    assert "a cross" in text and "a disc" in text
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 * 5 and all(len(ax.patches) == 1 for ax in panels)
    assert len(_colorbars(fig)) == 1


# ---------------------------------------------------------------- notebook 06: the blur perturbation


def test_show_perturbation_shows_the_mask_once_with_a_colour_bar():
    image, blurred, perturbed = torch.rand(3, 3, 12, 12)
    mask = torch.zeros(1, 12, 12)
    mask[..., 3:9, 3:9] = 1
    fig = show_perturbation(image, mask, blurred, perturbed, blurred_title="level 0")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["image x", "mask m", "level 0", "perturbed with m"]
    shown = [np.asarray(ax.images[0].get_array()) for ax in panels]
    assert sum(a.shape == (12, 12) and np.array_equal(a, mask[0].numpy()) for a in shown) == 1
    bars = _colorbars(fig)
    assert len(bars) == 1
    ticks = _tick_texts(bars[0])
    assert any("blur" in t for t in ticks) and any("keep" in t for t in ticks)
    with pytest.raises(InputError):
        show_perturbation(image, mask, blurred[:, :6], perturbed)


# ---------------------------------------------------------------- notebook 02: the cost plot's labels


def test_cost_labels_lie_inside_the_axes_and_do_not_overlap():
    """Two runs near the origin (few channels, few seconds) and one far away, as in notebook 02: every label
    inside the axes after layout, none over another or over the legend."""
    runs = {
        "blocks.1 (K=24, 56×56)": (24, 8.8),
        "blocks.2 (K=40, 28×28)": (40, 12.0),
        "bn2 (526)": (526, 88.5),
    }
    passes, seconds = zip(*runs.values())
    fig = plot_cost(passes, seconds, list(runs), predict={"bn2, all 1280": 1280}, title="cost")
    renderer = _draw(fig)
    ax = fig.axes[0]
    frame = ax.get_window_extent(renderer)
    notes = [t for t in ax.texts if t.get_text()]
    assert len(notes) == 4
    boxes = [Text.get_window_extent(t, renderer) for t in notes]  # the label itself, not its leader line
    assert all(_inside(b, frame) for b in boxes)
    assert all(_inside(b, fig.bbox) for b in boxes)
    legend = ax.get_legend().get_window_extent(renderer)
    for i, b in enumerate(boxes):
        assert not b.overlaps(legend)
        assert not any(b.overlaps(c) for c in boxes[i + 1 :])


# ---------------------------------------------------------------- notebook 11: the practitioner's table


def test_format_table_aligns_columns_whatever_the_method_names():
    rows = [
        {"method": "Grad-CAM", "AD": 27.6, "AG": 2.4, "AI": 25.0, "T": 0.24},
        {"method": "Score-CAM (blocks.3)", "AD": 36.7, "AG": 6.1, "AI": 25.0, "T": 22.82},
        {"method": "Opti-CAM, paper, 100 it.", "AD": 0.0, "AG": 51.8, "AI": 100.0, "T": 29.38},
    ]
    lines = format_table(rows, title="a title").splitlines()
    assert lines[0] == "a title"
    header, body = lines[1], lines[2:]
    assert len({len(line) for line in [header, *body]}) == 1
    for column in ("AD↓", "AG↑", "AI↑"):
        end = header.index(column) + len(column)
        for line, row in zip(body, rows):
            value = f"{row[column[:2]]:.1f}"
            assert line[end - len(value) : end] == value
            assert line[end - len(value) - 1] == " "  # the number is not glued to the name before it
    for line, row in zip(body, rows):
        assert line.startswith(row["method"])
