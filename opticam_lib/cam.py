"""CAM (eq. 1) and the gradient family: Grad-CAM (eq. 2), Grad-CAM++, XGrad-CAM, Layer-CAM, HiRes-CAM.

One calling convention for every method of the library::

    maps = method(classifier, images, targets=None, **options)

with images (N, 3, H, W) float in [0, 1], targets one class id per image (None: the predicted class) and maps
(N, 1, H, W) float in [0, 1] at input resolution (bilinear upsampling, then min-max normalisation per image, eq. 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import check_images, check_targets
from .errors import InputError
from .hooks import capture, frozen
from .maps import combine, to_saliency
from .models import Classifier

Targets = int | Sequence[int] | Tensor | None


def activations_and_gradients(
    classifier: Classifier, images: Tensor, targets: Tensor, layer: str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and one backward pass: feature maps A, gradients dy_c/dA and the logits.

    Args:
        images: (N, 3, H, W) float in [0, 1] (checked by the caller).
        targets: (N,) long, class c of each image.
    Returns:
        A (N, K, h, w), dy_c/dA (N, K, h, w), logits (N, C); all detached.
        Parameters are frozen during the pass, so no ``.grad`` is left anywhere.
    """
    x = images.to(classifier.device).detach().clone().requires_grad_(True)
    with frozen(classifier.model), capture(classifier, layer) as cap, torch.enable_grad():
        logits = classifier.model(x)
        score = logits.gather(1, targets[:, None]).sum()
        (grads,) = torch.autograd.grad(score, cap.activations)
    return cap.activations.detach(), grads.detach(), logits.detach()


def _prepare(classifier: Classifier, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """Checked images on the model's device in the model's float dtype (float64 or float16 input would otherwise
    fail in the first convolution, or silently change precision), and one class per image."""
    dtype = next((p.dtype for p in classifier.model.parameters() if p.is_floating_point()), torch.float32)
    images = check_images(images).to(classifier.device, dtype=dtype)
    return images, check_targets(targets, classifier, images)


def cam(classifier: Classifier, images: Tensor, targets: Targets = None) -> Tensor:
    """CAM, eq. (1) with h = identity and w_k^c the weight of the final linear layer from channel k to class c.

    Exact only for networks whose target layer is followed by global average pooling and one linear layer
    (``classifier.linear_head``); the layer is therefore always the classifier's default target layer.
    Returns (N, 1, H, W) in [0, 1].
    """
    if classifier.linear_head is None:
        raise InputError(
            f"CAM needs a network that ends in global average pooling and one linear layer; {classifier.name!r} "
            "has none declared (linear_head=None). Use gradcam instead."
        )
    images, targets = _prepare(classifier, images, targets)
    head = classifier.layer(classifier.linear_head)
    with frozen(classifier.model), capture(classifier) as cap, torch.no_grad():
        classifier.model(images)
    acts = cap.activations
    weight = head.weight.detach()
    if weight.shape[1] != acts.shape[1]:
        raise InputError(
            f"linear head {classifier.linear_head!r} has {weight.shape[1]} inputs but layer "
            f"{classifier.target_layer!r} has {acts.shape[1]} channels: CAM does not apply"
        )
    return to_saliency(combine(weight[targets], acts, "identity"), images.shape[-2:])


def gradcam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Grad-CAM, eq. (1)-(2): ``relu(sum_k GAP(dy_c/dA^k) A^k)``. Returns (N, 1, H, W) in [0, 1]."""
    images, targets = _prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(grads.mean(dim=(2, 3)), acts, "relu"), images.shape[-2:])


def gradcampp(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018), with the usual exponential-score closed form.

    ``alpha = g^2 / (2 g^2 + sum_ij A g^3)``, ``w_k = sum_ij alpha relu(g)``, map ``relu(sum_k w_k A^k)``,
    where g = dy_c/dA. Returns (N, 1, H, W) in [0, 1].
    """
    images, targets = _prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    g2, g3 = grads.pow(2), grads.pow(3)
    denom = 2 * g2 + (acts.sum(dim=(2, 3), keepdim=True) * g3)
    denom = torch.where(denom != 0, denom, torch.ones_like(denom))
    alpha = g2 / denom
    weights = (alpha * torch.relu(grads)).sum(dim=(2, 3))
    return to_saliency(combine(weights, acts, "relu"), images.shape[-2:])


def xgradcam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij (A^k_ij / sum A^k) dy_c/dA^k_ij``. Returns (N, 1, H, W)."""
    images, targets = _prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    weights = (acts * grads).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + 1e-7)
    return to_saliency(combine(weights, acts, "relu"), images.shape[-2:])


def layercam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Layer-CAM (Jiang et al. 2021): per-location weights ``relu(dy_c/dA)``, map ``relu(sum_k relu(g) A^k)``."""
    images, targets = _prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(torch.relu(grads), acts, "relu"), images.shape[-2:])


def hirescam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """HiRes-CAM (Draelos & Carin 2020): the element-wise product, ``relu(sum_k g^k * A^k)``."""
    images, targets = _prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(grads, acts, "relu"), images.shape[-2:])
