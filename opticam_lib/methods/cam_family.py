"""CAM (eq. 1) and the gradient family: Grad-CAM (eq. 2), Grad-CAM++, XGrad-CAM, Layer-CAM, HiRes-CAM.

One calling convention for every method of the library::

    maps = method(classifier, images, targets=None, **options)

with images (N, 3, H, W) float in [0, 1], targets one class id per image (None: the predicted class) and maps
(N, 1, H, W) float in [0, 1] at input resolution (bilinear upsampling, then min-max normalisation per image, eq. 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import Targets, prepare, rounding_tolerance
from opticam_lib.methods.feature_pass import activations_and_gradients, features
from opticam_lib.methods.maps import combine, to_saliency
from opticam_lib.models.classifier import Classifier


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
    images, targets = prepare(classifier, images, targets)
    head = classifier.layer(classifier.linear_head)
    acts, logits = features(classifier, images)
    # as the gradient family: no half precision
    acts = acts.to(torch.promote_types(acts.dtype, torch.float32))
    # in eval mode a parametrised weight (spectral norm) is only read, not stepped
    with frozen(classifier.model), torch.no_grad():
        weight = head.weight.detach().to(acts.dtype)
        bias = None if head.bias is None else head.bias.detach().to(acts.dtype)
    if weight.shape[1] != acts.shape[1]:
        raise InputError(
            f"linear head {classifier.linear_head!r} has {weight.shape[1]} inputs but layer "
            f"{classifier.target_layer!r} has {acts.shape[1]} channels: CAM does not apply"
        )
    _require_pooled_head(classifier, acts, weight, bias, logits)
    return to_saliency(combine(weight[targets], acts, "identity"), images.shape[-2:])


def _require_pooled_head(
    classifier: Classifier, acts: Tensor, weight: Tensor, bias: Tensor | None, logits: Tensor
) -> None:
    """Refuse CAM when the logits are not the linear head applied to the global average of the target layer's
    maps (eq. 1 holds only then): a ReLU, a norm or another layer between them makes CAM's map another thing."""
    pooled = acts.mean(dim=(2, 3)) @ weight.T + (0 if bias is None else bias)
    got = logits.to(pooled.dtype)
    scale = got.abs().amax().clamp(min=1e-6)
    rel = rounding_tolerance(logits.dtype)  # a float16 / bfloat16 model rounds its own logits
    if (pooled - got).abs().amax() > rel * scale:
        raise InputError(
            f"the logits of {classifier.name!r} are not its linear head {classifier.linear_head!r} applied to the "
            f"global average of layer {classifier.target_layer!r} (largest difference "
            f"{float((pooled - got).abs().amax()):.3g} for logits up to {float(scale):.3g}): something sits "
            "between them (an activation, a norm, another layer), so CAM (eq. 1) does not apply. Use gradcam, "
            "or declare the layer that feeds the pooling"
        )


def gradcam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Grad-CAM, eq. (1)-(2): ``relu(sum_k GAP(dy_c/dA^k) A^k)``. Returns (N, 1, H, W) in [0, 1]."""
    images, targets = prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(grads.mean(dim=(2, 3)), acts, "relu"), images.shape[-2:])


def gradcampp(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018), with the usual exponential-score closed form.

    ``alpha = g^2 / (2 g^2 + sum_ij A g^3)``, ``w_k = sum_ij alpha relu(g)``, map ``relu(sum_k w_k A^k)``,
    where g = dy_c/dA. Returns (N, 1, H, W) in [0, 1].
    """
    images, targets = prepare(classifier, images, targets)
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
    """XGrad-CAM (Fu et al. 2020): ``w_k = sum_ij (A^k_ij / sum A^k) dy_c/dA^k_ij``. Returns (N, 1, H, W)
    float in [0, 1]."""
    images, targets = prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    weights = (acts * grads).sum(dim=(2, 3)) / (acts.sum(dim=(2, 3)) + 1e-7)
    return to_saliency(combine(weights, acts, "relu"), images.shape[-2:])


def layercam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """Layer-CAM (Jiang et al. 2021): per-location weights ``relu(dy_c/dA)``, map ``relu(sum_k relu(g) A^k)``.
    Returns (N, 1, H, W) float in [0, 1]."""
    images, targets = prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(torch.relu(grads), acts, "relu"), images.shape[-2:])


def hirescam(
    classifier: Classifier, images: Tensor, targets: Targets = None, layer: str | None = None
) -> Tensor:
    """HiRes-CAM (Draelos & Carin 2020): the element-wise product, ``relu(sum_k g^k * A^k)``.
    Returns (N, 1, H, W) float in [0, 1]."""
    images, targets = prepare(classifier, images, targets)
    acts, grads, _ = activations_and_gradients(classifier, images, targets, layer)
    return to_saliency(combine(grads, acts, "relu"), images.shape[-2:])
