"""Eq. (1)/(8) combination, upsampling and the normalisations (4)/(16), (17), (18), on hand-made cases.

Every expected value below is written out by hand from the equation, not read off the library.
"""

from __future__ import annotations

import pytest
import torch

from opticam_lib.errors import InputError
from opticam_lib.methods.maps import (
    combine,
    is_constant,
    normalize,
    range_normalized_upsample,
    to_saliency,
    upsample,
)

# Two 2x2 feature maps (N=1, K=2).
A1 = [[1.0, 0.0], [0.0, 1.0]]
A2 = [[0.0, 3.0], [1.0, 0.0]]
ACTS = torch.tensor([[A1, A2]])  # (1, 2, 2, 2)


def test_combine_eq1_channel_weights_by_hand():
    # w = (2, -1): 2*A1 - A2 = [[2, -3], [-1, 2]]
    w = torch.tensor([[2.0, -1.0]])
    identity = combine(w, ACTS, "identity")
    assert identity.shape == (1, 1, 2, 2)
    assert torch.equal(identity, torch.tensor([[[[2.0, -3.0], [-1.0, 2.0]]]]))
    relu = combine(w, ACTS, "relu")  # h = relu (Grad-CAM)
    assert torch.equal(relu, torch.tensor([[[[2.0, 0.0], [0.0, 2.0]]]]))


def test_combine_per_location_weights_by_hand():
    # (N, K, h, w) weights: element-wise product summed over channels (HiRes-CAM / Layer-CAM form)
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.5, 0.5], [-1.0, 0.0]]]])
    # channel 1: [[1, 0], [0, 4]]; channel 2: [[0, 1.5], [-1, 0]]; sum: [[1, 1.5], [-1, 4]]
    out = combine(w, ACTS, "identity")
    assert torch.equal(out, torch.tensor([[[[1.0, 1.5], [-1.0, 4.0]]]]))
    assert torch.equal(combine(w, ACTS, "relu"), torch.tensor([[[[1.0, 1.5], [0.0, 4.0]]]]))


def test_combine_batch_keeps_images_apart():
    acts = torch.cat([ACTS, 2 * ACTS])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = combine(w, acts, "identity")
    assert torch.equal(out[0, 0], torch.tensor(A1))
    assert torch.equal(out[1, 0], 2 * torch.tensor(A2))


def test_combine_rejects_unknown_activation():
    with pytest.raises(InputError, match="activation"):
        combine(torch.ones(1, 2), ACTS, "tanh")


def test_normalize_range_eq4_by_hand():
    m = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]]]])
    # (A - 1) / (9 - 1)
    assert torch.allclose(normalize(m, "range"), torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]]))


def test_normalize_is_per_map():
    m = torch.stack([torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[10.0, 20.0]]])])  # (2, 1, 1, 2)
    out = normalize(m, "range")
    assert torch.equal(out, torch.tensor([[[[0.0, 1.0]]], [[[0.0, 1.0]]]]))


def test_normalize_max_eq17_by_hand():
    m = torch.tensor([[[[1.0, 3.0], [5.0, 8.0]]]])
    assert torch.allclose(normalize(m, "max"), m / 8)
    # negative values are clipped so the result stays in [0, 1]
    neg = torch.tensor([[[[-2.0, 4.0]]]])
    assert torch.allclose(normalize(neg, "max"), torch.tensor([[[[0.0, 1.0]]]]))


def test_normalize_sigmoid_eq18_by_hand():
    m = torch.tensor([[[[0.0, float(torch.log(torch.tensor(3.0)))]]]])
    # 1 / (1 + e^0) = 0.5 ; 1 / (1 + 1/3) = 0.75
    assert torch.allclose(normalize(m, "sigmoid"), torch.tensor([[[[0.5, 0.75]]]]))


@pytest.mark.parametrize("method", ["range", "max"])
def test_constant_map_gives_zeros_not_nan_and_finite_gradients(method):
    m = torch.full((2, 1, 3, 3), 0.7 if method == "range" else -0.3, requires_grad=True)
    out = normalize(m, method)
    assert torch.equal(out, torch.zeros_like(out))
    (grad,) = torch.autograd.grad(out.sum(), m)
    assert torch.isfinite(grad).all()
    # an all-zero map under "max" too
    z = torch.zeros(1, 1, 2, 2, requires_grad=True)
    out = normalize(z, method)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(torch.autograd.grad(out.sum(), z)[0]).all()


@pytest.mark.parametrize("method", ["range", "max"])
def test_normalize_does_not_depend_on_the_maps_scale(method):
    # a model whose logits are scaled by 1e-12 gives maps scaled by 1e-12: the same saliency, not zeros
    m = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]]]])
    expected = normalize(m, method)
    for scale in (1e-13, 1e-20, 1e-30):
        assert torch.allclose(normalize(m * scale, method), expected), scale
    if method == "range":  # still zeros for a map that is constant up to rounding, at any scale
        flat = torch.full((1, 1, 2, 2), 3.0) * 1e-20
        flat[0, 0, 0, 0] *= 1 + 1e-7
        assert torch.equal(normalize(flat, method), torch.zeros_like(flat))


def test_a_float16_map_of_small_values_is_not_zeroed():
    m = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]]]]) * 1e-6
    out = normalize(m.half())
    assert torch.allclose(out.float(), normalize(m), atol=2e-2) and out.max() == 1
    assert torch.allclose(to_saliency(m.half(), (4, 4)).float(), to_saliency(m, (4, 4)), atol=2e-2)


def test_matrix_upsampling_path_does_not_depend_on_the_maps_scale():
    m = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]]]])
    expected = range_normalized_upsample(m, (8, 8))
    assert torch.allclose(range_normalized_upsample(m * 1e-13, (8, 8)), expected, atol=1e-6)


def test_is_constant_is_what_normalize_zeros():
    acts = torch.rand(2, 4, 3, 3) + 1
    acts[0, 1] = 0  # all zero
    acts[1, 2] = 5  # constant
    acts[0, 3] = 1.0
    acts[0, 3, 0, 0] = 1.0 + 1e-7  # rounding: constant too
    acts[1, 0] *= 1e-15  # tiny but a real signal
    constant = is_constant(acts)
    assert constant.tolist() == [[False, True, False, True], [False, False, True, False]]
    zeroed = normalize(acts).flatten(2).amax(dim=2) == 0
    assert torch.equal(constant, zeroed)


def test_normalize_gradient_by_hand():
    # n(a) = (a - min) / (max - min) on [1, 2, 5]: d n(a_2)/d a_2 = 1 / 4 (a_2 is neither min nor max)
    a = torch.tensor([[[[1.0, 2.0, 5.0]]]], requires_grad=True)
    (g,) = torch.autograd.grad(normalize(a, "range")[0, 0, 0, 1], a)
    # d/da1 [(a2 - a1)/(a3 - a1)] = (a2 - a3)/(a3 - a1)^2 = -3/16 ; d/da3 = -(a2 - a1)/(a3 - a1)^2 = -1/16
    assert torch.allclose(g, torch.tensor([[[[-3 / 16, 1 / 4, -1 / 16]]]]))


def test_normalize_rejects_unknown_method():
    with pytest.raises(InputError, match="normalization"):
        normalize(torch.ones(1, 1, 2, 2), "softmax")


def test_upsample_constant_map_stays_constant():
    m = torch.full((2, 1, 3, 3), 0.7)
    out = upsample(m, (224, 224))
    assert out.shape == (2, 1, 224, 224)
    assert torch.allclose(out, torch.full_like(out, 0.7))


def test_upsample_uses_align_corners_false():
    # width 2 -> 4 with half-pixel centres: output x maps to input (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
    # -> clamped 0, then 0.25, 0.75, 1 (align_corners=True would give 0, 1/3, 2/3, 1)
    m = torch.tensor([[[[0.0, 1.0]]]])
    out = upsample(m, (1, 4))
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))


def test_upsample_same_size_is_identity():
    m = torch.rand(1, 1, 5, 5)
    assert torch.equal(upsample(m, (5, 5)), m)


def test_to_saliency_upsamples_then_normalises():
    m = torch.tensor([[[[0.0, 1.0]]]]) * 4 + 2  # [2, 6]
    out = to_saliency(m, (1, 4))
    # up: [2, 3, 5, 6] -> range-normalised: [0, 0.25, 0.75, 1]
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]))
    assert to_saliency(m, (1, 4), "max").max() == 1.0


def test_check_maps():
    from opticam_lib.inputs import validate_maps

    images = torch.rand(2, 3, 4, 5)
    maps = torch.rand(2, 1, 4, 5)
    assert torch.equal(validate_maps(maps, images), maps)
    assert validate_maps(maps[:, 0], images).shape == (2, 1, 4, 5)  # (N, H, W) accepted
    assert validate_maps(maps.double(), images).dtype == torch.float32
    for bad, message in (
        (torch.rand(2, 1, 4, 4), "must have shape"),
        (torch.rand(1, 1, 4, 5), "must have shape"),
        (torch.full((2, 1, 4, 5), float("nan")), "NaN"),
        (maps * 2 + 0.5, r"\[0, 1\]"),
        (maps.numpy(), "torch.Tensor"),
    ):
        with pytest.raises(InputError, match=message):
            validate_maps(bad, images)


# ---- up as two matrix products R_H S R_W^T (issue 13, method="matrix"): the same numbers as F.interpolate ----------------------

UPSAMPLE_SHAPES = [
    (7, 7, 224, 224),  # ResNet50 / EfficientNet at 224
    (14, 14, 224, 224),
    (7, 5, 224, 160),  # non-square in and out
    (3, 8, 13, 5),  # up in one direction, down in the other
    (1, 1, 5, 9),  # h = w = 1: a constant map
    (1, 7, 224, 13),  # h = 1
    (7, 1, 3, 224),  # w = 1, and H < h
    (2, 3, 2, 3),  # same size
    (9, 9, 4, 4),  # down-sampling
]


@pytest.mark.parametrize("h, w, big_h, big_w", UPSAMPLE_SHAPES)
def test_upsample_equals_bilinear_interpolate(h, w, big_h, big_w):
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(h * 100 + w)
    maps = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    ref = F.interpolate(maps, size=(big_h, big_w), mode="bilinear", align_corners=False)
    assert torch.allclose(upsample(maps, (big_h, big_w), "matrix"), ref, atol=1e-12, rtol=0)
    assert torch.equal(upsample(maps, (big_h, big_w)), ref)  # the default is PyTorch's kernel itself
    out32 = upsample(maps.float(), (big_h, big_w), "matrix")
    assert out32.dtype == torch.float32 and out32.shape == (2, 3, big_h, big_w)
    assert torch.allclose(out32, ref.float(), atol=1e-6, rtol=0)


def test_upsample_gradient_equals_bilinear_interpolate():
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(2, 1, 7, 5, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 1, 30, 17, generator=gen, dtype=torch.float64)
    grads = []
    for up in (
        lambda m: upsample(m, (30, 17), "matrix"),
        lambda m: F.interpolate(m, size=(30, 17), mode="bilinear", align_corners=False),
    ):
        x = maps.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((up(x) * weights).sum(), x)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], atol=1e-12, rtol=0)


def test_interpolation_matrix_by_hand_and_cached():
    from opticam_lib.methods.maps import interpolation_matrix

    # 2 -> 4, align_corners=False: sources max(0, (i + 0.5) / 2 - 0.5) = 0, 0.25, 0.75, 1.25 (clamped to pixel 1)
    r = interpolation_matrix(2, 4)
    expected = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    assert torch.equal(r, expected)
    assert interpolation_matrix(2, 4) is r  # built once per shape, device and dtype
    assert interpolation_matrix(2, 4, dtype=torch.float64).dtype == torch.float64
    # h = 1: every output pixel is the one input
    assert torch.equal(interpolation_matrix(1, 3), torch.ones(3, 1))
    with pytest.raises(InputError, match="positive"):
        interpolation_matrix(0, 4)


def test_upsample_stays_float32_under_autocast():
    maps = torch.rand(1, 1, 7, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = upsample(maps, (224, 224), "matrix")
    assert out.dtype == torch.float32
    assert torch.allclose(out, upsample(maps, (224, 224), "matrix"))


def test_upsample_rejects_a_wrong_shape():
    with pytest.raises(InputError, match=r"\(N, C, h, w\)"):
        upsample(torch.rand(7, 7), (224, 224))


def test_upsample_rejects_an_unknown_method():
    with pytest.raises(InputError, match="upsampling"):
        upsample(torch.rand(1, 1, 7, 7), (224, 224), "nearest")


def test_optimize_with_matrix_upsampling_matches_the_default_at_first(tiny_cnn, images):
    """One iteration: the same map within float round-off; unknown choices refused before any work."""
    from opticam_lib.methods.opti_cam import optimize

    a = optimize(tiny_cnn, images, iterations=1, progress=False)
    b = optimize(tiny_cnn, images, iterations=1, progress=False, upsampling="matrix")
    assert torch.allclose(a.maps, b.maps, atol=1e-5)
    with pytest.raises(InputError, match="upsampling"):
        optimize(tiny_cnn, images, iterations=1, progress=False, upsampling="bicubic")


def test_auto_upsampling_is_the_matrix_products_on_a_gpu_only():
    from opticam_lib.methods.maps import resolve_upsampling

    assert resolve_upsampling("auto", torch.device("cuda", 0)) == "matrix"
    assert resolve_upsampling("auto", "cpu") == "interpolate"
    assert resolve_upsampling("matrix", "cpu") == "matrix"  # an explicit choice is kept on any device
    assert resolve_upsampling("interpolate", "cuda") == "interpolate"
    with pytest.raises(InputError, match="upsampling"):
        resolve_upsampling("bicubic", "cpu")


def test_optimize_default_on_the_cpu_is_the_kernel_that_made_the_course_numbers(tiny_cnn, images):
    """``upsampling="auto"`` on a CPU runs exactly the ``F.interpolate`` path: bit-identical after 5 iterations,
    where the matrix products have already drifted by round-off."""
    from opticam_lib.methods.opti_cam import optimize

    default = optimize(tiny_cnn, images, iterations=5, tol=None, progress=False)
    kernel = optimize(tiny_cnn, images, iterations=5, tol=None, progress=False, upsampling="interpolate")
    assert torch.equal(default.maps, kernel.maps) and torch.equal(default.u, kernel.u)
    matrix = optimize(tiny_cnn, images, iterations=5, tol=None, progress=False, upsampling="matrix")
    assert not torch.equal(matrix.u, kernel.u)  # so bit-identity above tells the two paths apart


# ---- n(up(S)) normalised before upsampling (the matrix path's range normalisation): the same map and gradient ----


def test_range_normalised_upsample_by_hand():
    m = torch.tensor([[[[0.0, 1.0]]]]) * 4 + 2  # [2, 6] -> up [2, 3, 5, 6] -> [0, 0.25, 0.75, 1]
    out = to_saliency(m, (1, 4), upsampling="matrix")
    assert torch.allclose(out, torch.tensor([[[[0.0, 0.25, 0.75, 1.0]]]]), atol=1e-7, rtol=0)


@pytest.mark.parametrize("h, w, big_h, big_w", UPSAMPLE_SHAPES)
def test_range_normalised_upsample_equals_normalising_the_upsampled_map(h, w, big_h, big_w):
    from opticam_lib.methods.maps import range_normalized_upsample

    gen = torch.Generator().manual_seed(h * 10 + w)
    maps = torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, 3, big_h, big_w, generator=gen, dtype=torch.float64)
    outs, grads = [], []
    for path in (
        lambda s: normalize(upsample(s, (big_h, big_w), "matrix")),
        lambda s: range_normalized_upsample(s, (big_h, big_w)),
    ):
        x = maps.clone().requires_grad_(True)
        out = path(x)
        (g,) = torch.autograd.grad((out * weights).sum(), x)
        outs.append(out.detach())
        grads.append(g)
    assert torch.allclose(outs[1], outs[0], atol=1e-12, rtol=0)
    assert torch.allclose(grads[1], grads[0], atol=1e-10, rtol=0)


def test_range_normalised_upsample_edge_cases():
    from opticam_lib.methods.maps import range_normalized_upsample

    flat = torch.full((2, 1, 7, 7), 3.0, requires_grad=True)  # a constant map: zeros, as normalize gives
    assert torch.equal(range_normalized_upsample(flat, (224, 224)), torch.zeros(2, 1, 224, 224))
    maps = torch.randn(3, 1, 7, 7)
    out = range_normalized_upsample(maps, (224, 224))  # no graph: exactly in [0, 1]
    assert out.min() == 0 and out.max() == 1 and out.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert range_normalized_upsample(maps, (224, 224)).dtype == torch.float32
    inside = range_normalized_upsample(maps.clone().requires_grad_(True), (224, 224))  # in a graph: round-off
    assert inside.min() > -1e-6 and inside.max() < 1 + 1e-6
    with pytest.raises(InputError, match=r"\(N, C, h, w\)"):
        range_normalized_upsample(torch.rand(7, 7), (224, 224))
    # only the matrix path with the range normalisation takes it; the others are as before
    assert torch.equal(
        to_saliency(maps, (224, 224), "max", "matrix"), normalize(upsample(maps, (224, 224), "matrix"), "max")
    )
    assert torch.equal(to_saliency(maps, (224, 224)), normalize(upsample(maps, (224, 224))))
