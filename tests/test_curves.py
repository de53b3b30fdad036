"""Insertion and deletion substrates: RISE's (the default) and black, each against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opticam_lib import InputError
from opticam_lib.metrics.classification import class_probability
from opticam_lib.metrics.curves import deletion_curve, insertion_curve, rise_kernel


def _rise_gkern_by_hand(klen: int = 11, sigma: float = 5.0) -> np.ndarray:
    """scipy's gaussian_filter of a unit impulse, written out: weights w[t] for |t| <= 4 sigma (truncate 4.0),
    the input extended by half-sample reflection (d c b a | a b c d | d c b a), in each axis."""
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()

    def reflect(p: int) -> int:
        period = 2 * klen
        p %= period
        return p if p < klen else period - 1 - p

    c = klen // 2
    one = np.array([sum(w[k] for k, dt in enumerate(t) if reflect(i + dt) == c) for i in range(klen)])
    return np.outer(one, one)


def test_rise_kernel_is_gkern():
    k = rise_kernel().double().numpy()
    assert k.shape == (11, 11) and abs(k.sum() - 1) < 1e-6
    assert np.allclose(k, _rise_gkern_by_hand(), atol=1e-7)
    # flatter than a truncated normalised Gaussian: the reflected tails fold back into the window
    ax = np.arange(11) - 5
    g = np.exp(-(ax**2) / 50.0)
    trunc = np.outer(g, g) / np.outer(g, g).sum()
    assert k[5, 5] < trunc[5, 5]


def test_substrates_by_hand(bn_cnn, images):
    x = images[:2]
    y = torch.tensor([1, 3])
    maps = torch.rand(2, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    model = bn_cnn.model
    mean, std = model.mean, model.std
    assert model.normalized and float(mean.abs().sum()) > 0  # a classifier that normalises its input
    # deletion, RISE: at the end every pixel is 0 in the normalised tensor: the mean colour
    end = deletion_curve(bn_cnn, x, maps, y, steps=4, progress=False)[:, -1]
    mean_image = mean.expand_as(x)
    assert torch.allclose(end, class_probability(bn_cnn, mean_image, y), atol=1e-6)
    # deletion, black: zeros in [0, 1] pixels
    end_black = deletion_curve(bn_cnn, x, maps, y, steps=4, progress=False, substrate="black")[:, -1]
    assert torch.allclose(end_black, class_probability(bn_cnn, torch.zeros_like(x), y), atol=1e-6)
    assert not torch.allclose(end, end_black)
    # insertion, RISE: the start is the normalised tensor blurred with gkern(11, 5), zero padding, mapped back
    k = torch.from_numpy(_rise_gkern_by_hand()).float()
    z = (x - mean) / std
    blurred = F.conv2d(z, k.expand(3, 1, 11, 11), padding=5, groups=3) * std + mean
    start = insertion_curve(bn_cnn, x, maps, y, steps=4, progress=False)[:, 0]
    assert torch.allclose(start, class_probability(bn_cnn, blurred, y), atol=1e-5)
    # both curves end (insertion) or start (deletion) on the intact image, whatever the substrate
    p = class_probability(bn_cnn, x, y)
    for sub in ("rise", "black"):
        assert torch.allclose(insertion_curve(bn_cnn, x, maps, y, 4, progress=False, substrate=sub)[:, -1], p)
        assert torch.allclose(deletion_curve(bn_cnn, x, maps, y, 4, progress=False, substrate=sub)[:, 0], p)
    with pytest.raises(InputError, match="substrate"):
        deletion_curve(bn_cnn, x, maps, y, 4, progress=False, substrate="grey")


def test_more_steps_than_the_pixels_allow_are_refused(tiny_cnn, images):
    """Past about h*w/2 steps the curve reaches every pixel early and ends flat, which lowers its area."""
    maps = torch.rand(len(images), 1, *images.shape[-2:])
    h, w = images.shape[-2:]
    assert deletion_curve(tiny_cnn, images, maps, 0, steps=h * w, progress=False).shape[1] == h * w + 1
    with pytest.raises(InputError, match=r"steps=20000 is too many for 32 x 32 images.*use 1024 steps"):
        deletion_curve(tiny_cnn, images, maps, 0, steps=20000, progress=False)
    # the counts that work are not every number below a bound: 342 and 512 do, 300 and 400 do not
    for steps, usable in ((400, 342), (300, 256), (700, 512)):
        with pytest.raises(
            InputError, match=rf"steps={steps} is too many.*use {usable} steps.*or the default, 32"
        ):
            deletion_curve(tiny_cnn, images, maps, 0, steps=steps, progress=False)
        assert (
            deletion_curve(tiny_cnn, images[:1], maps[:1], 0, steps=usable, progress=False).shape[1]
            == usable + 1
        )
    with pytest.raises(InputError, match="is too many"):
        insertion_curve(tiny_cnn, images, maps, 0, steps=h * w // 2 + 100, progress=False)
