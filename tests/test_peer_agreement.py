"""Our Grad-CAM and Score-CAM against pytorch-grad-cam (PyPI ``grad-cam``) on the same model, layer and images.

Their classes get our ``classifier.model`` (which takes [0, 1] input and normalises inside), the same module
as target layer and ``ClassifierOutputTarget(c)``; they return numpy (N, H, W) at input resolution, ours is
(N, 1, H, W): both are compared at the input resolution, per image, by Pearson correlation and by the largest
absolute difference.

What the two pipelines do differently, and what tolerance follows:

- Grad-CAM: both compute relu(sum_k GAP(dy_c/dA^k) A^k) at the layer's resolution. They min-max normalise it
  there, resize with cv2 (bilinear, half-pixel centres, like our align_corners=False), then, when aggregating
  layers, min-max normalise again at full resolution; we upsample then normalise once. Resizing is linear and
  min-max is affine, so the two orders give the same map: only float rounding differs. Tolerance: correlation
  > 0.99999 and max |difference| < 1e-5 (measured: 4e-7 on the tiny CNN, 7e-7 on efficientnet_lite0).
- Score-CAM: their masks are upsampled with ``UpsamplingBilinear2d``, i.e. align_corners=True, ours (eq. 3,
  like the authors' code) with align_corners=False; they add 1e-8 to the range. Different masks give different
  scores, and the softmax over channels amplifies score differences, so the maps can differ a lot on a real
  network (measured on efficientnet_lite0, layer blocks.3, 112 x 112: correlation 0.61 on chelsea and 0.37
  on coffee; 0.94 on chelsea at 224 x 224). The test therefore checks that this is the only difference: with their
  upsampling switched to align_corners=False the maps agree to rounding (correlation > 0.99999, max |difference|
  < 1e-5; measured 3e-7). On the tiny CNN (16 x 16 -> 32 x 32) the unpatched maps already agree (correlation
  > 0.999, max |difference| < 1e-3; measured 1.00000 and 1e-4).
- A target layer followed by an in-place ReLU (our ``bn_cnn``): their forward hook keeps a reference to the
  layer's output, which the in-place ReLU then overwrites, so they weight the *post*-ReLU activations with the
  gradient taken before the ReLU. We keep the layer's own output. The test reproduces their map by hand from
  that description (max |difference| < 1e-5) and shows that it differs from ours (measured correlation 0.78,
  0.87, 0.98 on the three images).

pytorch-grad-cam calls ``loss.backward()``, which fills ``.grad`` in the model's parameters: every test here
clears it so the session's shared classifier is left clean.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opticam_lib import gradcam, scorecam
from opticam_lib.hooks import hook_count

pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("cv2")

import pytorch_grad_cam.score_cam as peer_score_cam
from pytorch_grad_cam import GradCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


def peer(cls, clf, images, targets, layer=None, batch_size=None, reshape_transform=None):
    """Run a pytorch-grad-cam method on our model; returns (N, H, W) numpy. Leaves no hook and no .grad."""
    with cls(model=clf.model, target_layers=[clf.layer(layer)], reshape_transform=reshape_transform) as cam:
        if batch_size is not None:
            cam.batch_size = batch_size
        out = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in targets])
    for p in clf.model.parameters():
        p.grad = None
    assert hook_count(clf.model) == 0
    return out


def agreement(ours: torch.Tensor, theirs: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-image Pearson correlation and the largest absolute difference, at the same resolution."""
    assert ours.shape[0] == theirs.shape[0] and tuple(ours.shape[-2:]) == theirs.shape[-2:]
    a = ours[:, 0].numpy().reshape(len(ours), -1).astype(np.float64)
    b = theirs.reshape(len(theirs), -1).astype(np.float64)
    corr = np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
    return corr, float(np.abs(a - b).max())


@contextlib.contextmanager
def peer_upsampling_align_corners_false():
    """Swap pytorch-grad-cam's Score-CAM mask upsampling (align_corners=True) for ours (False)."""

    class Upsample(torch.nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size = size

        def forward(self, x):
            return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    original = peer_score_cam.torch.nn.UpsamplingBilinear2d
    peer_score_cam.torch.nn.UpsamplingBilinear2d = Upsample
    try:
        yield
    finally:
        peer_score_cam.torch.nn.UpsamplingBilinear2d = original


# ---------------------------------------------------------------------------------------------------------------
# Grad-CAM


def test_gradcam_agrees_tiny_cnn(tiny_cnn, images):
    targets = torch.tensor([0, 1, 2])
    corr, diff = agreement(gradcam(tiny_cnn, images, targets), peer(GradCAM, tiny_cnn, images, targets))
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)


def test_gradcam_agrees_tokens(tiny_vit, images):
    """Token model: their ``reshape_transform`` drops the class token and makes the 4 x 4 grid, as we do."""
    targets = torch.tensor([0, 3, 4])

    def reshape(tokens):
        n, _, d = tokens.shape
        return tokens[:, 1:].reshape(n, 4, 4, d).permute(0, 3, 1, 2)

    theirs = peer(GradCAM, tiny_vit, images, targets, reshape_transform=reshape)
    corr, diff = agreement(gradcam(tiny_vit, images, targets), theirs)
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)


def test_gradcam_agrees_efficientnet(real_classifier, real_images, real_predictions):
    targets = real_predictions.argmax(1)
    ours = gradcam(real_classifier, real_images, targets)
    corr, diff = agreement(ours, peer(GradCAM, real_classifier, real_images, targets))
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)


def test_inplace_relu_after_the_layer_explains_the_disagreement(bn_cnn, images):
    targets = torch.tensor([0, 1, 2])
    theirs = peer(GradCAM, bn_cnn, images, targets)
    net = bn_cnn.net
    with torch.no_grad():
        a = net.body[:5]((images - bn_cnn.model.mean) / bn_cnn.model.std)  # the BatchNorm output
    a_leaf = a.clone().requires_grad_(True)
    y = net.fc(net.pool(torch.relu(a_leaf)).flatten(1))
    (g,) = torch.autograd.grad(y.gather(1, targets[:, None]).sum(), a_leaf)
    weights = g.mean(dim=(2, 3))[:, :, None, None]

    def n_up(raw):
        up = F.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
        lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
        return (up - lo) / (hi - lo)

    their_recipe = n_up(torch.relu((weights * torch.relu(a)).sum(1, keepdim=True)))  # post-ReLU A, pre-ReLU g
    corr, diff = agreement(their_recipe, theirs)
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)
    ours = gradcam(bn_cnn, images, targets)
    assert torch.allclose(ours, n_up(torch.relu((weights * a).sum(1, keepdim=True))), atol=1e-5)
    corr, diff = agreement(ours, theirs)
    assert diff > 0.1 and (corr < 0.999).any(), (corr, diff)


# ---------------------------------------------------------------------------------------------------------------
# Score-CAM


def test_scorecam_agrees_tiny_cnn(tiny_cnn, images):
    targets = torch.tensor([0, 1, 2])
    ours = scorecam(tiny_cnn, images, targets, progress=False)
    corr, diff = agreement(ours, peer(ScoreCAM, tiny_cnn, images, targets))
    assert (corr > 0.999).all() and diff < 1e-3, (corr, diff)
    with peer_upsampling_align_corners_false():
        corr, diff = agreement(ours, peer(ScoreCAM, tiny_cnn, images, targets))
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)


@pytest.mark.slow
def test_scorecam_efficientnet_differs_only_by_align_corners(real_classifier, real_images):
    """efficientnet_lite0, layer ``blocks.3`` (80 channels), chelsea at 112 x 112 (7 x 7 maps): a few seconds
    per method instead of minutes for the 1,280 channels of ``bn2``."""
    images = F.interpolate(real_images[:1], size=(112, 112), mode="bilinear", antialias=True).clamp(0, 1)
    targets = real_classifier.predict(images).argmax(1)
    ours = scorecam(real_classifier, images, targets, layer="blocks.3", batch_size=80, progress=False)
    raw_corr, raw_diff = agreement(ours, peer(ScoreCAM, real_classifier, images, targets, "blocks.3", 80))
    with peer_upsampling_align_corners_false():
        theirs = peer(ScoreCAM, real_classifier, images, targets, "blocks.3", 80)
    corr, diff = agreement(ours, theirs)
    assert (corr > 0.99999).all() and diff < 1e-5, (corr, diff)
    # the unpatched maps are not the same: align_corners matters (measured correlation 0.61)
    assert raw_diff > 1e-3, (raw_corr, raw_diff)
