"""CAM (eq. 1), Grad-CAM (eq. 2) and its family, checked against hand computations; the common contract of
every method (shape, range, determinism, ``targets=None``) on the tiny models and on the real classifier; and
the input checks every method shares.

The tiny CNN ends in global average pooling and one linear layer, so for class c the gradient of the logit with
respect to the feature maps is known in closed form: dy_c/dA^k_ij = W_ck / (h w). Grad-CAM's weights (eq. 2)
are then W_c / (h w), a positive multiple of CAM's weights, and both maps are equal wherever the combination
is non-negative (ReLU changes nothing).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ALL_METHODS, _fast_options, make_images

from opticam_lib import InputError, cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from opticam_lib.methods.feature_pass import activations_and_gradients
from opticam_lib.methods.registry import LAYER_METHODS

# ---------------------------------------------------------------------------------------------------------------
# hand computations


def hand_saliency(raw: torch.Tensor, size) -> torch.Tensor:
    """n(up(raw)) written out: bilinear, half-pixel centres, then (S - min) / (max - min) per map."""
    up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    return (up - lo) / (hi - lo)


def tiny_features(clf, x):
    return clf.net.features(x)  # the tiny CNN has no input normalisation


def test_gradcam_gradients_eq2_closed_form(tiny_cnn, images):
    targets = torch.tensor([0, 3, 4])
    acts, grads, logits = activations_and_gradients(tiny_cnn, images, targets)
    a = tiny_features(tiny_cnn, images).detach()
    h, w = a.shape[-2:]
    expected = tiny_cnn.net.fc.weight.detach()[targets][:, :, None, None].expand_as(a) / (h * w)
    assert torch.allclose(acts, a)
    assert torch.allclose(grads, expected, atol=1e-7)
    assert torch.allclose(logits, tiny_cnn.model(images).detach())
    assert not acts.requires_grad and not grads.requires_grad and not logits.requires_grad


def test_cam_eq1_by_hand(tiny_cnn, images):
    targets = torch.tensor([2, 0, 1])
    a = tiny_features(tiny_cnn, images).detach()
    wc = tiny_cnn.net.fc.weight.detach()[targets]
    raw = (wc[:, :, None, None] * a).sum(1, keepdim=True)  # h = identity
    assert torch.allclose(cam(tiny_cnn, images, targets), hand_saliency(raw, (32, 32)), atol=1e-6)


def test_gradcam_by_hand(tiny_cnn, images):
    targets = torch.tensor([2, 0, 1])
    a = tiny_features(tiny_cnn, images).detach()
    h, w = a.shape[-2:]
    weights = tiny_cnn.net.fc.weight.detach()[targets] / (h * w)  # GAP of the constant gradient
    raw = torch.relu((weights[:, :, None, None] * a).sum(1, keepdim=True))
    assert torch.allclose(gradcam(tiny_cnn, images, targets), hand_saliency(raw, (32, 32)), atol=1e-6)


def test_cam_equals_gradcam_where_the_identity_holds(tiny_cnn, images):
    """Non-negative head weights and post-ReLU features: sum_k W_ck A^k >= 0, so relu is a no-op and
    Grad-CAM = n(up(sum W_ck A^k / hw)) = CAM. With constant gradients XGrad-CAM, HiRes-CAM and Layer-CAM
    reduce to the same map."""
    with torch.no_grad():
        tiny_cnn.net.fc.weight.abs_()
    for c in range(5):
        t = torch.full((3,), c)
        ref = cam(tiny_cnn, images, t)
        for method in (gradcam, xgradcam, hirescam, layercam):
            assert torch.allclose(method(tiny_cnn, images, t), ref, atol=1e-5), (method.__name__, c)


def test_cam_and_gradcam_differ_when_relu_matters(tiny_cnn, images):
    # the mixed-sign head of the seeded tiny CNN makes sum_k W_ck A^k negative somewhere for some class
    found = False
    for c in range(5):
        t = torch.full((3,), c)
        a = tiny_features(tiny_cnn, images).detach()
        raw = (tiny_cnn.net.fc.weight.detach()[t][:, :, None, None] * a).sum(1)
        if (raw < 0).any() and (raw > 0).any():
            found = True
            assert not torch.allclose(cam(tiny_cnn, images, t), gradcam(tiny_cnn, images, t), atol=1e-3)
    assert found


def test_gradcampp_by_hand(tiny_cnn, images):
    """alpha = g^2 / (2 g^2 + sum_ij A g^3), w_k = sum_ij alpha relu(g); with g = W_ck / hw constant per
    channel: w_k = hw * g^2 relu(g) / (2 g^2 + S_k g^3), S_k = sum_ij A^k_ij."""
    targets = torch.tensor([1, 1, 4])
    a = tiny_features(tiny_cnn, images).detach()
    h, w = a.shape[-2:]
    g = tiny_cnn.net.fc.weight.detach()[targets] / (h * w)  # (N, K)
    s = a.sum(dim=(2, 3))
    denom = 2 * g**2 + s * g**3
    alpha = torch.where(denom != 0, g**2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
    wk = h * w * alpha * torch.relu(g)
    raw = torch.relu((wk[:, :, None, None] * a).sum(1, keepdim=True))
    assert torch.allclose(gradcampp(tiny_cnn, images, targets), hand_saliency(raw, (32, 32)), atol=1e-5)


def test_gradcam_on_bn_followed_by_inplace_relu(bn_cnn, images):
    """The target layer is a BatchNorm whose output an in-place ReLU overwrites: the map must use the
    BatchNorm output (negative values included) and the gradient through the rest of the network."""
    targets = torch.tensor([0, 2, 4])
    net = bn_cnn.net
    x = (images - bn_cnn.model.mean) / bn_cnn.model.std
    with torch.no_grad():
        a = net.body[:5](x)  # eval-mode BatchNorm output, before the in-place ReLU
    assert (a < 0).any()
    a_leaf = a.clone().requires_grad_(True)
    y = net.fc(net.pool(torch.relu(a_leaf)).flatten(1))
    (g,) = torch.autograd.grad(y.gather(1, targets[:, None]).sum(), a_leaf)
    raw = torch.relu((g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1, keepdim=True))
    assert torch.allclose(gradcam(bn_cnn, images, targets), hand_saliency(raw, (32, 32)), atol=1e-5)
    acts, _, _ = activations_and_gradients(bn_cnn, images, targets)
    assert torch.allclose(acts, a, atol=1e-6)


def test_gradcam_on_tokens_by_hand(tiny_vit, images):
    """Token model: the class token is dropped and 16 patch tokens become a 4 x 4 grid (N, D, 4, 4)."""
    targets = torch.tensor([0, 1, 2])
    net = tiny_vit.net
    block = net.blocks[0]
    x = (images - 0.5) / 0.5
    with torch.no_grad():
        t = net.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([net.cls_token.expand(3, -1, -1), t], dim=1) + net.pos_embed
        n1 = block.norm1(t)
    n1_leaf = n1.clone().requires_grad_(True)
    x1 = t + block.attn(n1_leaf)
    x2 = x1 + block.mlp(block.norm2(x1))
    y = net.head(net.norm(x2)[:, 0])
    (g,) = torch.autograd.grad(y.gather(1, targets[:, None]).sum(), n1_leaf)
    grid = n1[:, 1:].transpose(1, 2).reshape(3, -1, 4, 4)
    ggrid = g[:, 1:].transpose(1, 2).reshape(3, -1, 4, 4)
    acts, grads, _ = activations_and_gradients(tiny_vit, images, targets)
    assert torch.allclose(acts, grid, atol=1e-6)
    assert torch.allclose(grads, ggrid, atol=1e-6)
    raw = torch.relu((ggrid.mean(dim=(2, 3))[:, :, None, None] * grid).sum(1, keepdim=True))
    assert torch.allclose(gradcam(tiny_vit, images, targets), hand_saliency(raw, (32, 32)), atol=1e-5)


def test_gradcam_other_layer(tiny_cnn, images):
    # an earlier layer (first ReLU, 32 x 32, 8 channels) is accepted and gives a different map
    m = gradcam(tiny_cnn, images, 1, layer="features.1")
    assert m.shape == (3, 1, 32, 32)
    assert not torch.allclose(m, gradcam(tiny_cnn, images, 1))


def test_cam_needs_a_linear_head(tiny_vit, bn_cnn, images):
    for clf in (tiny_vit, bn_cnn):
        with pytest.raises(InputError, match="linear_head"):
            cam(clf, images)


# ---------------------------------------------------------------------------------------------------------------
# the contract of every method, on the tiny models


def _check_maps(maps, n, size):
    assert maps.shape == (n, 1, size, size)
    assert maps.dtype == torch.float32
    assert torch.isfinite(maps).all()
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_every_method_contract_on_tiny_models(name, tiny_model, images):
    method, options = ALL_METHODS[name], _fast_options(name)
    if name == "cam" and tiny_model.linear_head is None:
        pytest.skip("CAM needs a linear head (its refusal is tested above)")
    predicted = tiny_model.predict(images).argmax(1)
    first = method(tiny_model, images, None, **options)
    _check_maps(first, 3, 32)
    assert torch.equal(method(tiny_model, images, None, **options), first)  # deterministic
    assert torch.equal(method(tiny_model, images, predicted, **options), first)  # None = predicted class
    assert torch.equal(method(tiny_model, images, predicted.tolist(), **options), first)  # list of ints too
    peaks = first.amax(dim=(1, 2, 3))
    if name == "lime":  # the positive part of the superpixel weights: all zero when none is positive
        assert all(float(p) in (0.0, 1.0) for p in peaks)
    elif name not in ("fakecam", "experturbation"):  # (ExPerturbation's map is its mask, as in TorchRay)
        assert float(peaks.min()) == 1.0  # range-normalised: each map reaches 1


@pytest.mark.parametrize("name", [n for n in ALL_METHODS if n not in ("cam", "fakecam")])
def test_every_method_depends_on_the_target(name, tiny_cnn, images):
    method, options = ALL_METHODS[name], _fast_options(name)
    maps = [method(tiny_cnn, images, c, **options) for c in (0, 3)]
    assert not torch.allclose(maps[0], maps[1])


def test_an_int_target_applies_to_every_image(tiny_cnn, images):
    assert torch.equal(gradcam(tiny_cnn, images, 2), gradcam(tiny_cnn, images, [2, 2, 2]))


def test_targets_in_other_integer_forms(tiny_cnn, images):
    import numpy as np

    reference = gradcam(tiny_cnn, images, [0, 3, 4])
    for targets in (
        torch.tensor([0, 3, 4], dtype=torch.int32),
        np.array([0, 3, 4]),
        [np.int64(0), np.int64(3), np.int64(4)],
        (0, 3, 4),
    ):
        assert torch.equal(gradcam(tiny_cnn, images, targets), reference)
    assert torch.equal(gradcam(tiny_cnn, images, np.int64(2)), gradcam(tiny_cnn, images, 2))


def test_batch_equals_one_image_at_a_time(tiny_cnn, bn_cnn, images):
    targets = torch.tensor([0, 1, 2])
    for clf in (tiny_cnn, bn_cnn):
        for method in (gradcam, gradcampp, layercam):
            whole = method(clf, images, targets)
            alone = torch.cat([method(clf, images[i : i + 1], targets[i : i + 1]) for i in range(3)])
            assert torch.allclose(whole, alone, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the contract on the real classifier (efficientnet_lite0, offline weights)


@pytest.mark.parametrize(
    "name", ["cam", "gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "fakecam"]
)
def test_gradient_methods_contract_on_real_model(name, real_classifier, real_images, real_predictions):
    images = real_images[:2]
    predicted = real_predictions[:2].argmax(1)
    method = ALL_METHODS[name]
    first = method(real_classifier, images)
    _check_maps(first, 2, 224)
    assert torch.equal(method(real_classifier, images), first)
    assert torch.equal(method(real_classifier, images, predicted), first)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_masking_methods_contract_on_real_model(name, real_classifier, real_images):
    """One forward pass per channel: one photograph at 112 x 112 and layer ``blocks.3`` (80 channels, 7 x 7)
    keep this to a few seconds. Same maps for targets=None and for the predicted class, i.e. deterministic."""
    image = F.interpolate(real_images[:1], size=(112, 112), mode="bilinear", antialias=True).clamp(0, 1)
    predicted = real_classifier.predict(image).argmax(1)
    method = ALL_METHODS[name]
    first = method(real_classifier, image, None, layer="blocks.3", batch_size=40, progress=False)
    _check_maps(first, 1, 112)
    again = method(real_classifier, image, predicted, layer="blocks.3", batch_size=40, progress=False)
    assert torch.equal(again, first)


@pytest.mark.slow
def test_opticam_contract_on_real_model(real_classifier, real_images, real_predictions):
    from opticam_lib import opticam

    images = real_images[:2]
    predicted = real_predictions[:2].argmax(1)
    options = {"iterations": 3, "progress": False}
    first = opticam(real_classifier, images, None, **options)
    _check_maps(first, 2, 224)
    assert torch.equal(opticam(real_classifier, images, predicted, **options), first)
    seeded = opticam(real_classifier, images, predicted, init="random", seed=3, **options)
    _check_maps(seeded, 2, 224)
    assert torch.equal(opticam(real_classifier, images, predicted, init="random", seed=3, **options), seeded)


# ---------------------------------------------------------------------------------------------------------------
# bad inputs: every method answers with an InputError that names the problem

BAD_IMAGES = {
    "3d": (lambda: torch.rand(3, 32, 32), "batch dimension"),
    "1 channel": (lambda: torch.rand(2, 1, 32, 32), r"\(N, 3, H, W\)"),
    "5d": (lambda: torch.rand(1, 2, 3, 32, 32), r"\(N, 3, H, W\)"),
    "uint8": (lambda: (torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "uint8"),
    "above 1": (lambda: torch.rand(2, 3, 32, 32) * 255, r"\[0, 1\]"),
    "negative": (lambda: torch.rand(2, 3, 32, 32) - 0.5, r"\[0, 1\]"),
    "nan": (lambda: torch.full((2, 3, 32, 32), float("nan")), "NaN"),
    "empty": (lambda: torch.rand(0, 3, 32, 32), "empty"),
    "not a tensor": (lambda: [[0.5]], "torch.Tensor"),
}


@pytest.mark.parametrize("bad", list(BAD_IMAGES))
@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_bad_images_are_refused(name, bad, tiny_cnn):
    make, message = BAD_IMAGES[bad]
    method, options = ALL_METHODS[name], _fast_options(name)
    with pytest.raises(InputError, match=message):
        method(tiny_cnn, make(), None, **options)


BAD_TARGETS = {
    "too few": ([0, 1], "one class per image"),
    "too many": (torch.tensor([0, 1, 2, 3]), "one class per image"),
    "2d": (torch.zeros(3, 1, dtype=torch.long), "one class per image"),
    "out of range": (5, "out of range"),
    "negative": ([0, -1, 0], "out of range"),
    "float": (torch.tensor([0.0, 1.0, 2.0]), "integer"),
    "float list": ([0.5, 1.0, 2.0], "integer"),
    "bool": (True, "integer"),
}


@pytest.mark.parametrize("bad", list(BAD_TARGETS))
@pytest.mark.parametrize("name", [n for n in ALL_METHODS if n != "fakecam"])
def test_bad_targets_are_refused(name, bad, tiny_cnn, images):
    targets, message = BAD_TARGETS[bad]
    method, options = ALL_METHODS[name], _fast_options(name)
    with pytest.raises(InputError, match=message):
        method(tiny_cnn, images, targets, **options)


def test_imagenet_class_1000_is_out_of_range(real_classifier, real_images):
    with pytest.raises(InputError, match=r"out of range.*0\.\.999"):
        gradcam(real_classifier, real_images[:1], 1000)


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_unknown_layer_lists_valid_names(name, tiny_cnn, images):
    method, options = ALL_METHODS[name], _fast_options(name)
    with pytest.raises(InputError, match=r"unknown layer 'nope'.*features") as info:
        method(tiny_cnn, images, None, layer="nope", **options)
    assert "fc" in str(info.value)


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_other_float_dtypes_and_rectangular_images(name, bn_cnn, tiny_cnn):
    """float64 / float16 images are used in the model's dtype (float64 used to fail in the first convolution);
    non-square images give maps of their own size."""
    clf = tiny_cnn if name == "cam" else bn_cnn
    method, options = ALL_METHODS[name], _fast_options(name)
    x = make_images(2)
    reference = method(clf, x, [1, 2], **options)
    assert torch.equal(method(clf, x.double(), [1, 2], **options), reference)
    half = method(clf, x.half(), [1, 2], **options)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    rect = F.interpolate(x, size=(32, 48), mode="bilinear", align_corners=False)
    maps = method(clf, rect, [1, 2], **options)
    assert maps.shape == (2, 1, 32, 48) and 0 <= float(maps.min()) and float(maps.max()) <= 1


def test_single_image_batch_works(tiny_cnn):
    x = make_images(1)
    assert gradcam(tiny_cnn, x).shape == (1, 1, 32, 32)
