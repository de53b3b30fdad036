"""Table 4's metrics (section 5.3.3): AOPC and Max-Sensitivity through Quantus, ADCC from its definition.

Every expected value is computed here by hand (a linear model whose probabilities have a closed form, noise
redrawn from the same seed, Pearson correlations of four numbers), never copied from the library's output.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from opticam_lib import fakecam, wrap_classifier
from opticam_lib.errors import InputError, MissingDependencyError
from opticam_lib.metrics.classification import drops
from opticam_lib.metrics.more_metrics import (
    _pixel_noise,
    adcc,
    aopc,
    aopc_curves,
    aopc_from_curves,
    coherency,
    complexity,
    harmonic_adcc,
    max_sensitivity,
    noise_bounds,
    table4_row,
    table4_scores,
)

HAS_QUANTUS = True
try:
    import quantus  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    HAS_QUANTUS = False
needs_quantus = pytest.mark.skipif(not HAS_QUANTUS, reason="quantus is not installed (pip install quantus)")


class Linear2(nn.Module):
    """Two classes on (N, 3, 28, 28): logit_0 = sum_ij W_ij * mean_c x_cij, logit_1 = 0, so
    p_0 = sigmoid(logit_0) in closed form. A conv (1 x 1) carries W so that target layers exist."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 1, 1, bias=False)
        self.mix.weight.data.fill_(1 / 3)
        self.register_buffer("w", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.mix(x)[:, 0] * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def linear_classifier(weight: torch.Tensor):
    return wrap_classifier(
        Linear2(weight), "mix", name="linear2", num_classes=2, input_size=28, mean=None, std=None
    )


def p0(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The closed form of Linear2's class-0 probability."""
    return torch.sigmoid((x.double().mean(dim=1) * weight.double()).flatten(1).sum(1))


def quadrant(i: int) -> tuple[slice, slice]:
    """Patch i of a 28 x 28 image cut into 14 x 14 patches, in Quantus' raster order."""
    return slice(14 * (i // 2), 14 * (i // 2) + 14), slice(14 * (i % 2), 14 * (i % 2) + 14)


# ---------------------------------------------------------------------------------------------------------------
# AOPC


@needs_quantus
def test_aopc_removes_the_most_relevant_patches_first_and_averages_over_L_plus_1():
    torch.manual_seed(0)
    weight = torch.randn(28, 28) * 0.05
    clf = linear_classifier(weight)
    x = 0.2 + 0.6 * torch.rand(2, 3, 28, 28)
    x[1, 2, 3, 4] = 0.05  # image 1's smallest value, somewhere in patch 0: the "black" every patch becomes
    maps = torch.zeros(2, 1, 28, 28)
    ranks = [(3, 0, 2, 1), (1, 2, 0, 3)]  # patch order, most relevant first, per image
    for n, order in enumerate(ranks):
        for r, patch in enumerate(order):
            maps[n, 0][quadrant(patch)] = 1.0 - 0.2 * r  # patch sums strictly decreasing along the order
    targets = torch.tensor([0, 0])
    curves = aopc_curves(clf, x, maps, targets, patch_size=14, regions=3)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for n, order in enumerate(ranks):
        xk = x[n : n + 1].clone()
        base = float(x[n].min())
        for k, patch in enumerate(order[:3]):
            rows, cols = quadrant(patch)
            xk[:, :, rows, cols] = base
            expected[n, k] = p0(weight, x[n : n + 1]) - p0(weight, xk)
    assert torch.allclose(curves, expected, atol=1e-5)
    assert torch.allclose(aopc_from_curves(curves), expected.sum(1) / 4)  # 1/(L+1) with L = 3
    assert torch.allclose(
        aopc(clf, x, maps, targets, patch_size=14, regions=3), expected.sum(1) / 4, atol=1e-5
    )


@needs_quantus
def test_aopc_of_the_reversed_order_differs_and_a_zero_map_is_nan():
    torch.manual_seed(1)
    weight = torch.zeros(28, 28)
    weight[:14, :14] = 0.05  # only patch 0 matters
    clf = linear_classifier(weight)
    x = 0.3 + 0.5 * torch.rand(3, 3, 28, 28)
    good = torch.zeros(3, 1, 28, 28)
    good[:, :, :14, :14] = 1.0  # patch 0 first: the only drop happens at step 1
    good[:, :, 14:, 14:] = 0.5
    curves = aopc_curves(clf, x, good, [0, 0, 0], patch_size=14, regions=2)
    drop_0 = p0(weight, x) - p0(weight, torch.where(good > 0.9, x.amin(dim=(1, 2, 3), keepdim=True), x))
    assert torch.allclose(curves[:, 0], drop_0, atol=1e-5) and torch.allclose(curves[:, 1], drop_0, atol=1e-5)
    bad = 1 - good
    bad[2] = 0.0  # a map that ranks nothing
    curves_bad = aopc_curves(clf, x, bad, [0, 0, 0], patch_size=14, regions=2)
    assert torch.isnan(curves_bad[2]).all()
    assert torch.allclose(curves_bad[:2], torch.zeros(2, 2, dtype=torch.float64), atol=1e-6)  # patch 0 last


def test_aopc_from_curves_by_hand_and_bad_input():
    curves = torch.tensor([[0.1, 0.2, 0.3], [0.0, -0.3, 0.3]])
    assert torch.allclose(aopc_from_curves(curves), torch.tensor([0.15, 0.0], dtype=torch.float64))
    with pytest.raises(InputError, match=r"\(N, L\)"):
        aopc_from_curves(torch.zeros(3))


@needs_quantus
def test_aopc_refuses_more_regions_than_patches_and_bad_maps(tiny_cnn, images):
    maps = torch.rand(3, 1, 32, 32)
    with pytest.raises(InputError, match="has only 9 patches"):  # 32 px: ceil(32 / 14) = 3 per side
        aopc(tiny_cnn, images, maps, regions=10)
    with pytest.raises(InputError, match="maps must lie in"):
        aopc(tiny_cnn, images, maps * 2, regions=2)
    with pytest.raises(InputError, match="raw RGB"):
        aopc(tiny_cnn, images * 3, maps, regions=2)


# ---------------------------------------------------------------------------------------------------------------
# Max-Sensitivity


def test_noise_bounds_are_the_papers_0_2_in_imagenet_units():
    assert noise_bounds() == pytest.approx((0.2 * 0.229, 0.2 * 0.224, 0.2 * 0.225))
    assert noise_bounds(0.5, (1.0, 2.0, 0.1)) == pytest.approx((0.5, 1.0, 0.05))
    with pytest.raises(InputError, match="lower_bound"):
        noise_bounds(0)
    with pytest.raises(InputError, match="units"):
        noise_bounds(0.2, (1.0, 1.0))


def test_pixel_noise_is_per_channel_and_clipped():
    rng = np.random.default_rng(3)
    arr = np.full((2, 3 * 16), 0.5)
    out = _pixel_noise(arr, np.tile(np.arange(48), (2, 1)), bounds=(0.1, 0.0, 0.02), rng=rng)
    d = (out - arr).reshape(2, 3, 16)
    assert np.abs(d[:, 0]).max() <= 0.1 and np.abs(d[:, 0]).max() > 0.05
    assert np.all(d[:, 1] == 0)
    assert np.abs(d[:, 2]).max() <= 0.02
    ones = _pixel_noise(np.ones((1, 48)), np.arange(48)[None], bounds=(0.1, 0.1, 0.1), rng=rng)
    zeros = _pixel_noise(np.zeros((1, 48)), np.arange(48)[None], bounds=(0.1, 0.1, 0.1), rng=rng)
    assert ones.max() <= 1.0 and ones.min() >= 0.9 and zeros.min() >= 0.0 and zeros.max() <= 0.1
    assert (ones < 1).any() and (zeros > 0).any()  # clipped on one side only


def red_channel(classifier, images, targets=None):
    """A 'method' whose map is the red channel of its input: its sensitivity is the noise itself."""
    return images[:, :1].clone()


@needs_quantus
def test_max_sensitivity_of_the_red_channel_is_the_largest_relative_noise_norm(tiny_cnn):
    torch.manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(2, 3, 32, 32)  # far from 0 and 1: no clipping at this bound
    seed, samples, bound = 7, 4, 0.05
    ms = max_sensitivity(
        tiny_cnn, x, red_channel, [0, 1], samples=samples, lower_bound=bound, units=(1, 1, 1), seed=seed
    )
    rng = np.random.default_rng(seed)  # the same draws: one (1, 3*H*W) array per sample, for every image
    ratios = []
    for _ in range(samples):
        noise = np.repeat(rng.uniform(-1.0, 1.0, size=(1, 3 * 32 * 32)) * bound, 2, axis=0)
        red = noise[:, : 32 * 32]
        ratios.append(np.linalg.norm(red, axis=1) / np.linalg.norm(x[:, 0].flatten(1).numpy(), axis=1))
    assert ms.numpy() == pytest.approx(np.max(ratios, axis=0), rel=1e-4)


@needs_quantus
def test_max_sensitivity_of_an_image_does_not_depend_on_its_batch(tiny_cnn):
    """The noise was one row per image of a (B, 3*H*W) draw: an image's MS changed with its position, its batch
    size and its batch mates' maps. Now every image gets the draw it gets alone."""
    torch.manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(3, 3, 32, 32)
    opts = dict(samples=3, lower_bound=0.05, units=(1, 1, 1), seed=4)
    batch = max_sensitivity(tiny_cnn, x, red_channel, [0, 1, 2], **opts)
    flipped = max_sensitivity(tiny_cnn, x.flip(0), red_channel, [2, 1, 0], **opts)
    alone = torch.cat([max_sensitivity(tiny_cnn, x[i : i + 1], red_channel, [i], **opts) for i in range(3)])
    assert torch.allclose(batch, alone, rtol=1e-6) and torch.allclose(flipped.flip(0), alone, rtol=1e-6)


@needs_quantus
def test_constant_maps_are_nan_not_a_quantus_assertion(tiny_cnn, images):
    """A map of one value everywhere (not only 0) ranks nothing: NaN, as a zero map, alone or among others
    (Quantus asserted on a batch of them and scored one among others)."""
    flat = torch.full((3, 1, 32, 32), 0.5)
    assert torch.isnan(aopc_curves(tiny_cnn, images, flat, [0, 1, 2], regions=2)).all()
    mixed = torch.rand(3, 1, 32, 32)
    mixed[1] = 0.5
    rows = aopc_curves(tiny_cnn, images, mixed, [0, 1, 2], regions=2)
    assert torch.isnan(rows[1]).all() and torch.isfinite(rows[[0, 2]]).all()

    def constant_map(classifier, imgs, targets=None):
        return torch.full((imgs.shape[0], 1, 32, 32), 0.5)

    ms = max_sensitivity(tiny_cnn, images, constant_map, [0, 1, 2], samples=2, maps=flat)
    assert torch.isnan(ms).all()
    # a ripple of float32 rounding (what upsampling a constant grid leaves) is no ranking either
    ripple = torch.full((3, 1, 32, 32), 0.5)
    # one unit in the last place
    ripple[:, :, ::3, 1::2] = torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))
    assert (ripple.amax(dim=(1, 2, 3)) > ripple.amin(dim=(1, 2, 3))).all()
    assert torch.isnan(aopc_curves(tiny_cnn, images, ripple, [0, 1, 2], regions=2)).all()
    assert torch.isnan(
        max_sensitivity(tiny_cnn, images, constant_map, [0, 1, 2], samples=2, maps=ripple)
    ).all()


@needs_quantus
def test_max_sensitivity_is_zero_for_a_map_that_ignores_the_input(tiny_cnn, images):
    fixed = torch.linspace(0, 1, 32 * 32).view(1, 1, 32, 32)

    def constant_map(classifier, imgs, targets=None):
        return fixed.expand(imgs.shape[0], 1, 32, 32).clone()

    ms = max_sensitivity(tiny_cnn, images, constant_map, samples=3)
    assert torch.equal(ms, torch.zeros(3, dtype=torch.float64))


@needs_quantus
def test_max_sensitivity_restores_state_and_numpy_rng(bn_cnn, images):
    bn_cnn.model.train()
    flags = [p.requires_grad for p in bn_cnn.model.parameters()]
    np.random.seed(123)  # noqa: NPY002 - the global generator, which the library must not touch
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    ms = max_sensitivity(bn_cnn, images, "gradcam", [0, 1, 2], samples=2)
    assert torch.isfinite(ms).all() and (ms >= 0).all()
    assert bn_cnn.model.training
    assert [p.requires_grad for p in bn_cnn.model.parameters()] == flags
    assert all(p.grad is None for p in bn_cnn.model.parameters())
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    again = max_sensitivity(bn_cnn, images, "gradcam", [0, 1, 2], samples=2)
    assert torch.equal(ms, again)  # seeded: the same draws


def test_missing_quantus_says_how_to_install_it(monkeypatch, tiny_cnn, images):
    monkeypatch.setitem(sys.modules, "quantus", None)  # import quantus -> ImportError
    with pytest.raises(MissingDependencyError, match="pip install quantus"):
        aopc(tiny_cnn, images, torch.rand(3, 1, 32, 32), regions=2)
    with pytest.raises(MissingDependencyError, match="pip install quantus"):
        max_sensitivity(tiny_cnn, images, "gradcam")
    with pytest.raises(MissingDependencyError, match="pip install quantus"):
        table4_scores(tiny_cnn, images, "gradcam")
    # ADCC alone needs no Quantus
    assert set(table4_scores(tiny_cnn, images, "gradcam", metrics=("ADCC",))) >= {"ADCC", "coherency"}


# ---------------------------------------------------------------------------------------------------------------
# ADCC


def test_complexity_by_hand():
    maps = torch.zeros(3, 1, 4, 4)
    maps[1] = 1.0
    maps[2, 0, :2, :] = 0.5  # 8 of 16 pixels at 0.5
    assert torch.allclose(complexity(maps), torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))


def test_coherency_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    b = torch.tensor([1.0, 3.0, 2.0, 4.0]).view(1, 1, 2, 2)
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): r = 4 / 5 = 0.8 -> (0.8 + 1) / 2
    assert coherency(a, b).item() == pytest.approx(0.9)
    assert coherency(a, a).item() == pytest.approx(1.0)
    assert coherency(a, 5 - a).item() == pytest.approx(0.0)
    assert coherency(a, torch.full_like(a, 0.3)).item() == 0.0  # r undefined: 0, as the authors' NaN branch
    with pytest.raises(InputError, match="differ"):
        coherency(a, torch.zeros(1, 1, 3, 3))


def test_harmonic_mean_by_hand():
    coh = torch.tensor([1.0, 0.5, 1.0, 0.0, 0.9])
    comp = torch.tensor([0.0, 0.5, 0.5, 0.2, 1.0])
    dr = torch.tensor([0.0, 0.5, 0.0, 0.1, 0.0])
    expected = torch.tensor([1.0, 0.5, 3 / (1 + 2 + 1), 0.0, 0.0], dtype=torch.float64)
    assert torch.allclose(harmonic_adcc(coh, comp, dr), expected)
    assert torch.allclose(
        drops(torch.tensor([0.5, 0.2]), torch.tensor([0.25, 0.9])), torch.tensor([0.5, 0.0]).double()
    )
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        harmonic_adcc(torch.tensor([1.5]), torch.tensor([0.0]), torch.tensor([0.0]))


def test_adcc_of_a_fixed_map_by_hand(tiny_cnn, images):
    fixed = torch.zeros(1, 1, 32, 32)
    fixed[..., 8:24, 4:20] = 0.75  # 256 of 1,024 pixels at 0.75: complexity 0.1875
    seen = []

    def fixed_map(classifier, imgs, targets=None):
        seen.append(imgs.clone())
        return fixed.expand(imgs.shape[0], 1, 32, 32).clone()

    targets = torch.tensor([0, 3, 1])
    r = adcc(tiny_cnn, images, fixed_map, targets)
    assert len(seen) == 2 and torch.allclose(seen[1], images * fixed)  # the second call sees x ⊙ S
    with torch.no_grad():
        p = torch.softmax(tiny_cnn.net(images).double(), 1)[torch.arange(3), targets]
        o = torch.softmax(tiny_cnn.net(images * fixed).double(), 1)[torch.arange(3), targets]
    d = (p - o).clamp(min=0) / p
    expected = 3 / (1 / 1.0 + 1 / (1 - 0.1875) + 1 / (1 - d))
    assert torch.allclose(r.coherency, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(r.complexity, torch.full((3,), 0.1875, dtype=torch.float64))
    assert torch.allclose(r.drop, d, atol=1e-6) and torch.allclose(r.adcc, expected, atol=1e-6)


def test_adcc_of_fakecam_is_near_zero(tiny_cnn, images):
    r = adcc(tiny_cnn, images, "fakecam", [0, 1, 2])
    assert torch.allclose(r.complexity, torch.full((3,), 1023 / 1024, dtype=torch.float64))
    assert torch.allclose(r.coherency, torch.ones(3, dtype=torch.float64))  # the same one-pixel map again
    # 1 / (1 - complexity) = 1,024 dominates the harmonic mean: ADCC <= 3 / 1,025
    assert (r.adcc <= 3 / 1025 + 1e-12).all() and (r.adcc > 0).all()
    assert torch.equal(r.maps_of_masked, fakecam(tiny_cnn, images))


def test_adcc_reuses_given_maps_and_restores_the_model(bn_cnn, images):
    calls = []

    def counted(classifier, imgs, targets=None):
        calls.append(1)
        return torch.rand(imgs.shape[0], 1, 32, 32)

    bn_cnn.model.train()
    adcc(bn_cnn, images, counted, maps=torch.rand(3, 1, 32, 32))
    assert len(calls) == 1  # only the masked images are explained
    assert bn_cnn.model.training
    with pytest.raises(InputError, match="maps must"):
        adcc(bn_cnn, images, counted, maps=torch.rand(3, 1, 8, 8))


# ---------------------------------------------------------------------------------------------------------------
# Table 4 in one call


def test_table4_row_by_hand():
    scores = {
        "AOPC": torch.tensor([0.1, 0.3]),
        "MS": torch.tensor([1.0, float("nan"), 3.0]),
        "ADCC": torch.tensor([0.5, 0.7]),
        "coherency": torch.tensor([0.2, 0.2]),
    }
    assert table4_row(scores) == pytest.approx({"AOPC": 20.0, "MS": 2.0, "ADCC": 60.0})


@needs_quantus
def test_table4_scores_on_a_tiny_cnn(tiny_cnn, images):
    with pytest.raises(InputError, match="unknown metrics"):
        table4_scores(tiny_cnn, images, "gradcam", metrics=("AUC",))
    tiny_cnn.model.train()
    scores = table4_scores(tiny_cnn, images, "gradcam", [0, 1, 2], regions=4, samples=2)
    assert tiny_cnn.model.training
    assert set(scores) == {"AOPC", "MS", "ADCC", "coherency", "complexity", "drop"}
    assert all(v.shape == (3,) for v in scores.values())
    assert ((scores["ADCC"] >= 0) & (scores["ADCC"] <= 1)).all() and (scores["MS"] >= 0).all()
    assert ((scores["AOPC"] >= -1) & (scores["AOPC"] <= 1)).all()
