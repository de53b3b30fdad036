"""Score-CAM (eq. 3-4) against a slow explicit loop, Ablation-CAM against its closed form on a GAP + Linear
network and a loop on the token model, Fake-CAM, and ``features``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_images

from opticam_lib import InputError, ablationcam, fakecam, scorecam
from opticam_lib.methods.feature_pass import features


def hand_saliency(raw, size):
    """n(up(raw)) per map, with n(constant) := 0."""
    up = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi > lo, (up - lo) / (hi - lo).clamp(min=1e-30), torch.zeros_like(up))


def hand_mask(a, size):
    """n(up(A^k)) of eq. (3)-(4) for one (h, w) map, with n(constant) := 0."""
    up = F.interpolate(a[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    span = up.max() - up.min()
    return torch.zeros_like(up) if span == 0 else (up - up.min()) / span


def scorecam_loop(clf, images, targets, acts):
    """Eq. (3) one channel and one image at a time, black baseline x_b = 0, weights softmax(u)."""
    n, k = acts.shape[:2]
    size = tuple(images.shape[-2:])
    out = []
    with torch.no_grad():
        base = clf.model(torch.zeros_like(images[:1]))[0]
        for i in range(n):
            c = int(targets[i])
            u = torch.empty(k)
            for j in range(k):
                masked = images[i] * hand_mask(acts[i, j], size)
                u[j] = clf.model(masked[None])[0, c] - base[c]
            w = torch.softmax(u, dim=0)
            raw = torch.relu((w[:, None, None] * acts[i]).sum(0))
            out.append(hand_saliency(raw[None, None], size)[0])
    return torch.stack(out)


def test_features_returns_layer_output_and_logits(tiny_cnn, images):
    acts, logits = features(tiny_cnn, images)
    with torch.no_grad():
        assert torch.allclose(acts, tiny_cnn.net.features(images))
        assert torch.allclose(logits, tiny_cnn.model(images))
    assert not acts.requires_grad and not logits.requires_grad


def test_scorecam_equals_slow_loop_tiny_cnn(tiny_cnn, images):
    targets = torch.tensor([0, 2, 4])
    with torch.no_grad():
        acts = tiny_cnn.net.features(images)
    expected = scorecam_loop(tiny_cnn, images, targets, acts)
    for batch_size in (1, 4, 64):  # chunking does not change the result
        got = scorecam(tiny_cnn, images, targets, batch_size=batch_size, progress=False)
        assert torch.allclose(got, expected, atol=1e-4), batch_size


def test_scorecam_handles_dead_channels(tiny_cnn, images):
    """A channel that is zero everywhere gives a constant map: its mask is n(0) := 0 (eq. 6 of the paper), the
    masked image is black and its score equals the baseline's, u_k = 0: no NaN anywhere."""
    with torch.no_grad():
        tiny_cnn.net.features[2].weight[0] = 0
        tiny_cnn.net.features[2].bias[0] = -1.0  # channel 0 is relu(-1) = 0 everywhere
        acts = tiny_cnn.net.features(images)
    assert acts[:, 0].abs().max() == 0
    expected = scorecam_loop(tiny_cnn, images, torch.tensor([1, 1, 1]), acts)
    got = scorecam(tiny_cnn, images, 1, progress=False)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, expected, atol=1e-5)


def test_scorecam_equals_slow_loop_tokens(tiny_vit, images):
    targets = torch.tensor([1, 0, 3])
    net, block = tiny_vit.net, tiny_vit.net.blocks[0]
    with torch.no_grad():
        x = (images - 0.5) / 0.5
        t = net.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([net.cls_token.expand(3, -1, -1), t], dim=1) + net.pos_embed
        acts = block.norm1(t)[:, 1:].transpose(1, 2).reshape(3, -1, 4, 4)
    expected = scorecam_loop(tiny_vit, images, targets, acts)
    # batched and one-at-a-time forward passes differ by float rounding (measured 2e-5 on the map)
    got = scorecam(tiny_vit, images, targets, batch_size=5, progress=False)
    assert torch.allclose(got, expected, atol=1e-4)


def test_ablationcam_closed_form_on_gap_linear(tiny_cnn, images):
    """Zeroing channel k before GAP + Linear lowers y_c by W_ck * mean(A^k): w_k = W_ck mean(A^k) / y_c.

    (For the third image the weighted sum is negative everywhere: relu gives a constant zero map, which
    normalises to zeros, n(constant) := 0, in the library and in the hand computation alike.)"""
    targets = torch.tensor([3, 1, 0])
    with torch.no_grad():
        acts = tiny_cnn.net.features(images)
        y = tiny_cnn.model(images).gather(1, targets[:, None])  # (N, 1)
    w = tiny_cnn.net.fc.weight[targets].detach() * acts.mean(dim=(2, 3)) / y
    raw = torch.relu((w[:, :, None, None] * acts).sum(1, keepdim=True))
    expected = hand_saliency(raw, (32, 32))
    for batch_size in (1, 4):
        got = ablationcam(tiny_cnn, images, targets, batch_size=batch_size, progress=False)
        assert torch.allclose(got, expected, atol=1e-5)


def test_ablationcam_tokens_loop(tiny_vit, images):
    """Token model: channel k of the 16 patch tokens is zeroed, the class token is left as computed."""
    targets = torch.tensor([2, 2, 4])
    net, block = tiny_vit.net, tiny_vit.net.blocks[0]
    with torch.no_grad():
        x = (images - 0.5) / 0.5
        t = net.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([net.cls_token.expand(3, -1, -1), t], dim=1) + net.pos_embed
        n1 = block.norm1(t)

        def rest(n1_tokens):
            x1 = t + block.attn(n1_tokens)
            x2 = x1 + block.mlp(block.norm2(x1))
            return net.head(net.norm(x2)[:, 0])

        y = rest(n1).gather(1, targets[:, None])[:, 0]
        k = n1.shape[-1]
        w = torch.empty(3, k)
        for j in range(k):
            ablated = n1.clone()
            ablated[:, 1:, j] = 0
            w[:, j] = (y - rest(ablated).gather(1, targets[:, None])[:, 0]) / y
        acts = n1[:, 1:].transpose(1, 2).reshape(3, k, 4, 4)
    raw = torch.relu((w[:, :, None, None] * acts).sum(1, keepdim=True))
    got = ablationcam(tiny_vit, images, targets, batch_size=5, progress=False)
    assert torch.allclose(got, hand_saliency(raw, (32, 32)), atol=1e-4)


def test_fakecam_is_one_except_top_left():
    images = make_images(2, size=20)
    maps = fakecam(None, images)
    expected = torch.ones(2, 1, 20, 20)
    expected[:, :, 0, 0] = 0
    assert torch.equal(maps, expected)
    assert maps.dtype == torch.float32


def test_fakecam_ignores_model_and_target(tiny_cnn, images):
    assert torch.equal(fakecam(tiny_cnn, images, 3), fakecam(None, images))
    with pytest.raises(InputError):
        fakecam(None, images[0])


@pytest.mark.parametrize("method", [scorecam, ablationcam])
def test_batch_size_must_be_positive(method, tiny_cnn, images):
    for bad in (0, -3, 2.5):
        with pytest.raises(InputError, match="batch_size"):
            method(tiny_cnn, images, progress=False, batch_size=bad)
