"""GradientShap and LIME via Captum (``opticam_lib.methods.attribution``): closed forms on hand-made models, the grid of
superpixels, LIME's kernel and ridge surrogate, determinism, the caller's model and random state left as found,
clear errors, and a helpful message when Captum is missing."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from conftest import make_images
from test_hooks_and_state import Bomb, assert_same_state, set_mixed_state, snapshot
from torch import nn

from opticam_lib import wrap_classifier
from opticam_lib.errors import InputError, MissingDependencyError, OptiCAMError
from opticam_lib.methods.attribution import (
    _lime_samples,
    gradientshap,
    grid_superpixels,
    lime,
    lime_kernel,
    weighted_ridge,
)
from opticam_lib.methods.maps import normalize

pytest.importorskip("captum")

FAST_GS = {"n_samples": 4}
FAST_LIME = {"n_samples": 32, "cell": 8, "progress": False}
METHODS = {"gradientshap": (gradientshap, FAST_GS), "lime": (lime, FAST_LIME)}


# ---------------------------------------------------------------------------------------------------------------
# hand-made models


class LinearNet(nn.Module):
    """f(x)_k = sum(w_k * x): GradientShap's gradient is w_k everywhere."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", self.body(x), self.weight)


def linear_classifier(size: int = 32, classes: int = 5, seed: int = 0):
    w = torch.randn(classes, 3, size, size, generator=torch.Generator().manual_seed(seed))
    net = LinearNet(w)
    clf = wrap_classifier(
        net, "body", name="linear", num_classes=classes, input_size=size, mean=None, std=None
    )
    return clf, w


class CellNet(nn.Module):
    """Logit k = 20 * mean brightness of the pixel box ``boxes[k]`` (rows r0:r1, columns c0:c1); 0 if no box."""

    def __init__(self, boxes: dict[int, tuple[int, int, int, int]], classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Identity()
        self.boxes = boxes
        self.classes = classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        logits = torch.zeros(len(x), self.classes, dtype=x.dtype)
        for k, (r0, r1, c0, c1) in self.boxes.items():
            logits[:, k] = 20 * x[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3))
        return logits


def cell_classifier(boxes: dict[int, tuple[int, int, int, int]], size: int = 32):
    return wrap_classifier(
        CellNet(boxes), "body", name="cells", num_classes=5, input_size=size, mean=None, std=None
    )


def np_state() -> tuple:
    """numpy's legacy global random state, which Captum's GradientShap draws from."""
    return np.random.get_state()  # noqa: NPY002


def same_np_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def run(name: str, clf, images, targets=None, **extra):
    method, options = METHODS[name]
    return method(clf, images, targets, **{**options, **extra})


# ---------------------------------------------------------------------------------------------------------------
# GradientShap: closed forms


@pytest.mark.parametrize("batch_size", [32, 3])
def test_gradientshap_linear_model_black_baseline_is_w_times_x(batch_size):
    """Black baseline, no noise: phi = (x - 0) * w_c exactly, whatever the random points on the path."""
    clf, w = linear_classifier()
    x = make_images(3)
    targets = [0, 3, 1]
    maps = gradientshap(clf, x, targets, n_samples=7, stdevs=0.0, batch_size=batch_size)
    expected = normalize(torch.relu((x * w[targets]).sum(dim=1, keepdim=True)), "range")
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)
    maps_abs = gradientshap(clf, x, targets, n_samples=7, stdevs=0.0, reduce="abs", batch_size=batch_size)
    torch.testing.assert_close(
        maps_abs, normalize((x * w[targets]).sum(1, keepdim=True).abs()), atol=1e-5, rtol=0
    )


def test_gradientshap_tensor_baseline_white_is_x_minus_one_times_w():
    clf, w = linear_classifier()
    x = make_images(2)
    white = torch.ones(1, 3, 32, 32)
    maps = gradientshap(clf, x, [2, 4], n_samples=5, stdevs=0.0, baselines=white)
    expected = normalize(torch.relu(((x - 1) * w[[2, 4]]).sum(dim=1, keepdim=True)), "range")
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_gradientshap_targets_none_is_the_predicted_class():
    clf, _ = linear_classifier()
    x = make_images(3)
    predicted = clf.predict(x).argmax(dim=1)
    assert torch.equal(gradientshap(clf, x, **FAST_GS), gradientshap(clf, x, predicted, **FAST_GS))
    assert not torch.equal(
        gradientshap(clf, x, [0, 0, 0], **FAST_GS), gradientshap(clf, x, [1, 1, 1], **FAST_GS)
    )


@pytest.mark.parametrize("baselines", ["black", "black+white", "uniform"])
def test_gradientshap_shape_range_and_determinism(baselines, tiny_model, images):
    maps = gradientshap(tiny_model, images, n_samples=3, stdevs=0.05, baselines=baselines)
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and torch.isfinite(maps).all()
    assert torch.equal(maps, gradientshap(tiny_model, images, n_samples=3, stdevs=0.05, baselines=baselines))
    other = gradientshap(tiny_model, images, n_samples=3, stdevs=0.05, baselines=baselines, seed=1)
    assert not torch.equal(maps, other)


def test_gradientshap_map_of_an_image_does_not_depend_on_the_batch(tiny_cnn, images):
    maps = gradientshap(tiny_cnn, images, [0, 1, 2], n_samples=5, baselines="uniform", stdevs=0.1)
    single = gradientshap(tiny_cnn, images[1:2], [1], n_samples=5, baselines="uniform", stdevs=0.1)
    torch.testing.assert_close(single, maps[1:2], atol=1e-6, rtol=0)


def test_gradientshap_constant_map_gives_zeros_not_nan():
    """A model blind to the input has zero gradient: the map is zeros."""
    clf, _ = linear_classifier()
    with torch.no_grad():
        clf.net.weight.zero_()
    maps = gradientshap(clf, make_images(2), 0, **FAST_GS)
    assert torch.equal(maps, torch.zeros_like(maps))


# ---------------------------------------------------------------------------------------------------------------
# LIME: the grid, the kernel, the surrogate, then the map


def test_grid_superpixels_tiles_the_image_with_squares():
    seg = grid_superpixels(32, 32, 8)
    assert seg.shape == (32, 32) and seg.dtype == torch.long
    assert torch.equal(seg, torch.arange(16).reshape(4, 4).repeat_interleave(8, 0).repeat_interleave(8, 1))


def test_grid_superpixels_edges_when_size_is_not_a_multiple_of_cell():
    seg = grid_superpixels(10, 7, 4)  # 3 rows (4, 4, 2 px) x 2 columns (4, 3 px)
    assert int(seg.max()) == 5 and set(seg.unique().tolist()) == set(range(6))
    heights, widths = [4, 4, 2], [4, 3]
    for k in range(6):
        rows, cols = torch.nonzero(seg == k, as_tuple=True)
        h, w = heights[k // 2], widths[k % 2]
        assert len(rows) == h * w  # a full rectangle ...
        assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (h, w)
        assert int(rows.min()) == 4 * (k // 2) and int(cols.min()) == 4 * (k % 2)  # ... at its grid place
    assert torch.equal(grid_superpixels(5, 6, 16), torch.zeros(5, 6, dtype=torch.long))


def test_lime_kernel_by_hand():
    f = 16
    z = torch.stack(
        [torch.ones(f), torch.zeros(f), (torch.arange(f) < 4).float(), (torch.arange(f) < 8).float()]
    )
    got = lime_kernel(z, 0.25)
    # cosine distance to all-ones: 0, 1 (zero vector), 1 - sqrt(4/16) = 0.5, 1 - sqrt(1/2)
    d = torch.tensor([0.0, 1.0, 0.5, 1 - math.sqrt(0.5)], dtype=torch.float64)
    torch.testing.assert_close(got, torch.sqrt(torch.exp(-(d**2) / 0.0625)))
    assert got[0] == 1 and math.isclose(float(got[2]), math.exp(-2.0))


def test_weighted_ridge_recovers_a_linear_function():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (200, 6), generator=g).double()
    b = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.25, -0.3], dtype=torch.float64)
    y = x @ b + 0.7
    coef, intercept = weighted_ridge(x, y, torch.rand(200, generator=g) + 0.1, alpha=1e-9)
    torch.testing.assert_close(coef, b)
    assert math.isclose(float(intercept), 0.7, abs_tol=1e-7)


def test_weighted_ridge_matches_scikit_learn():
    linear_model = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (60, 9), generator=g).float()
    y, w = torch.rand(60, generator=g), torch.rand(60, generator=g)
    coef, intercept = weighted_ridge(x, y, w, alpha=1.0)
    ref = linear_model.Ridge(alpha=1.0, fit_intercept=True).fit(x.numpy(), y.numpy(), sample_weight=w.numpy())
    np.testing.assert_allclose(coef.numpy(), ref.coef_, atol=1e-6)
    assert math.isclose(float(intercept), float(ref.intercept_), abs_tol=1e-6)


def test_lime_samples_start_with_the_image_and_are_seeded():
    draw = _lime_samples(3)
    first = draw(torch.zeros(1, 3, 4, 4), num_interp_features=10)
    samples = [next(first) for _ in range(50)]
    assert torch.equal(samples[0], torch.ones(1, 10, dtype=torch.long))
    stacked = torch.cat(samples[1:])
    assert set(stacked.unique().tolist()) == {0, 1} and 0.3 < stacked.float().mean() < 0.7
    again = draw(torch.zeros(1, 3, 4, 4), num_interp_features=10)
    assert all(torch.equal(s, next(again)) for s in samples)


@pytest.mark.parametrize(
    "size, cell, box, index",
    [
        (32, 8, (8, 16, 16, 24), 6),  # grid row 1, column 2 of a 4 x 4 grid
        (30, 8, (24, 30, 24, 30), 15),  # the narrow bottom-right cell (6 x 6 px) of a 30 px image
    ],
)
def test_lime_puts_the_maximum_on_the_cell_the_model_looks_at(size, cell, box, index):
    clf = cell_classifier({0: box}, size=size)
    x = make_images(2, size=size)
    maps = lime(clf, x, 0, n_samples=200, cell=cell, progress=False)
    seg = grid_superpixels(size, size, cell)
    inside = seg == index
    assert maps.shape == (2, 1, size, size)
    for m in maps[:, 0]:
        # the maximum is 1 (so the weight of that cell is positive) and the cell is where it lies
        assert torch.all(m[inside] == 1)
        assert float(m[~inside].max()) < 0.1


def test_lime_targets_honoured_and_none_is_predicted():
    boxes = {0: (0, 8, 0, 8), 1: (24, 32, 24, 32)}
    clf = cell_classifier(boxes)
    x = make_images(2)
    seg = grid_superpixels(32, 32, 8)
    maps = lime(clf, x, [0, 1], n_samples=150, cell=8, progress=False)
    assert torch.all(maps[0, 0][seg == 0] == 1) and torch.all(maps[1, 0][seg == 15] == 1)
    predicted = clf.predict(x).argmax(dim=1)
    assert torch.equal(lime(clf, x, **FAST_LIME), lime(clf, x, predicted, **FAST_LIME))


def test_lime_map_is_constant_on_superpixels_shape_range(tiny_model, images):
    maps = lime(tiny_model, images, n_samples=40, cell=8, progress=False)
    assert maps.shape == (3, 1, 32, 32) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and torch.isfinite(maps).all()
    blocks = maps.reshape(3, 4, 8, 4, 8)
    assert torch.equal(blocks, blocks[:, :, :1, :, :1].expand_as(blocks))


def test_lime_edges_when_size_is_not_a_multiple_of_cell(tiny_cnn):
    x = make_images(2, size=30)
    maps = lime(tiny_cnn, x, [0, 1], n_samples=30, cell=8, progress=False)
    assert maps.shape == (2, 1, 30, 30)
    seg = grid_superpixels(30, 30, 8)
    for k in range(16):
        values = maps[:, 0][:, seg == k]
        assert torch.equal(values, values[:, :1].expand_as(values))


def test_lime_deterministic_for_a_seed_and_batch_size_free(tiny_cnn, images):
    maps = lime(tiny_cnn, images, **FAST_LIME)
    assert torch.equal(maps, lime(tiny_cnn, images, **FAST_LIME))
    assert not torch.equal(maps, lime(tiny_cnn, images, **{**FAST_LIME, "seed": 1}))
    torch.testing.assert_close(
        maps, lime(tiny_cnn, images, **{**FAST_LIME, "batch_size": 5}), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(maps[2:], lime(tiny_cnn, images[2:], **FAST_LIME), atol=1e-5, rtol=0)


def test_lime_shows_captums_progress_bar(tiny_cnn, images, capsys):
    lime(tiny_cnn, images[:1], 0, n_samples=8, cell=16, batch_size=4, progress=True)
    assert "Lime" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# the caller's model, inputs and random state are left as found


@pytest.mark.parametrize("name", list(METHODS))
def test_state_restored_mixed_modes_and_existing_grads(name, tiny_model, images):
    set_mixed_state(tiny_model.model)
    for i, p in enumerate(tiny_model.model.parameters()):
        if i % 2:
            p.grad = torch.full_like(p, 7.0)
    before = snapshot(tiny_model.model)
    run(name, tiny_model, images)
    assert_same_state(before, snapshot(tiny_model.model))


@pytest.mark.parametrize("name", list(METHODS))
def test_train_mode_model_explained_in_eval_mode(name, bn_cnn, images):
    bn_cnn.model.train()
    before = snapshot(bn_cnn.model)
    maps = run(name, bn_cnn, images, [0, 1, 2])
    assert_same_state(before, snapshot(bn_cnn.model))
    bn_cnn.model.eval()
    torch.testing.assert_close(run(name, bn_cnn, images, [0, 1, 2]), maps, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(METHODS))
def test_state_restored_after_exception_in_forward(name, tiny_cnn, images):
    tiny_cnn.net.pool = Bomb(tiny_cnn.net.pool, 2)  # the second chunk of the first image
    set_mixed_state(tiny_cnn.model)
    before = snapshot(tiny_cnn.model)
    torch_rng, np_rng = torch.get_rng_state(), np_state()
    with pytest.raises(RuntimeError, match="boom in forward"):
        run(name, tiny_cnn, images, [0, 1, 2], batch_size=2)
    assert_same_state(before, snapshot(tiny_cnn.model))
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert same_np_state(np_state(), np_rng)
    tiny_cnn.net.pool.fuse = -1
    assert run(name, tiny_cnn, images, [0, 1, 2], batch_size=2).shape == (3, 1, 32, 32)


@pytest.mark.parametrize("name", list(METHODS))
def test_inputs_and_global_random_state_untouched(name, tiny_cnn, images):
    x = images.clone()
    targets = torch.tensor([0, 1, 2])
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    torch_rng, np_rng = torch.get_rng_state(), np_state()
    extra = {"baselines": "uniform", "stdevs": 0.1} if name == "gradientshap" else {}
    run(name, tiny_cnn, x, targets, **extra)
    assert torch.equal(x, images) and not x.requires_grad and x.grad is None
    assert targets.tolist() == [0, 1, 2]
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert same_np_state(np_state(), np_rng)


# ---------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"batch_size": -1}, "batch_size"),
        ({"stdevs": -0.1}, "stdevs"),
        ({"stdevs": float("nan")}, "stdevs"),
        ({"stdevs": "0.1"}, "stdevs"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"reduce": "negative"}, "reduce"),
        ({"baselines": "grey"}, "baselines"),
        ({"baselines": 0.0}, "baselines"),
        ({"baselines": torch.zeros(3, 32, 32)}, "batch dimension"),
        ({"baselines": torch.zeros(1, 3, 16, 16)}, "size"),
        ({"baselines": torch.full((1, 3, 32, 32), 2.0)}, r"\[0, 1\]"),
    ],
)
def test_gradientshap_bad_options(options, match, tiny_cnn, images):
    with pytest.raises(InputError, match=match):
        gradientshap(tiny_cnn, images, **options)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"cell": 0}, "cell"),
        ({"cell": 4.0}, "cell"),
        ({"batch_size": 0}, "batch_size"),
        ({"kernel_width": 0}, "kernel_width"),
        ({"kernel_width": -0.25}, "kernel_width"),
        ({"kernel_width": float("inf")}, "kernel_width"),
        ({"seed": 2**32}, "seed"),
    ],
)
def test_lime_bad_options(options, match, tiny_cnn, images):
    with pytest.raises(InputError, match=match):
        lime(tiny_cnn, images, progress=False, **options)


def test_lime_refuses_too_many_superpixels_before_any_forward_pass(tiny_cnn):
    tiny_cnn.net.pool = Bomb(tiny_cnn.net.pool, 1)
    with pytest.raises(InputError, match="larger cell"):
        lime(tiny_cnn, make_images(1, size=128), 0, cell=1, progress=False)


@pytest.mark.parametrize("name", list(METHODS))
def test_bad_images_and_targets(name, tiny_cnn, images):
    with pytest.raises(InputError, match="batch dimension"):
        run(name, tiny_cnn, images[0])
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        run(name, tiny_cnn, images * 255)
    with pytest.raises(InputError, match="out of range"):
        run(name, tiny_cnn, images, 7)


@pytest.mark.parametrize("module", ["captum", "captum.attr"])
@pytest.mark.parametrize("name", list(METHODS))
def test_missing_captum_says_how_to_install_it(name, module, tiny_cnn, images, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)
    before = snapshot(tiny_cnn.model)
    with pytest.raises(MissingDependencyError, match="pip install captum") as info:
        run(name, tiny_cnn, images, 0)
    assert isinstance(info.value, OptiCAMError) and isinstance(info.value, ImportError)
    assert_same_state(before, snapshot(tiny_cnn.model))


# ---------------------------------------------------------------------------------------------------------------
# the real classifier


@pytest.mark.slow
def test_real_classifier_both_methods(real_classifier, real_images):
    before = snapshot(real_classifier.model)
    x = real_images[:1]
    gs = gradientshap(real_classifier, x, n_samples=8, batch_size=8)
    lm = lime(real_classifier, x, n_samples=48, cell=32, batch_size=16, progress=False)
    assert_same_state(before, snapshot(real_classifier.model))
    for maps in (gs, lm):
        assert maps.shape == (1, 1, 224, 224) and maps.min() >= 0 and float(maps.max()) == 1.0
        assert float((maps > 0).float().mean()) < 1  # not a constant map
    assert len(torch.unique(lm)) <= 49  # one value per 32 x 32 superpixel (7 x 7) at most


def test_lime_refuses_settings_that_can_only_give_a_flat_map(tiny_cnn, images):
    pytest.importorskip("captum")
    with pytest.raises(InputError, match="one superpixel"):
        lime(tiny_cnn, images[:1], [0], cell=images.shape[-1])
    with pytest.raises(InputError, match="needs at least 2"):
        lime(tiny_cnn, images[:1], [0], n_samples=1)
