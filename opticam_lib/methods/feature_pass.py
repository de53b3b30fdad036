"""The feature pass, in one place: a layer's feature maps A^k with no graph (``features``), or with the
gradients dy_c/dA^k of one backward pass (``activations_and_gradients``). Parameters are frozen during
the pass, so no ``.grad`` is left anywhere, and the caller's train/eval flags are restored."""

from __future__ import annotations

import torch
from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.hooks import Capture, capture, frozen
from opticam_lib.inputs import require_autograd
from opticam_lib.models.classifier import Classifier


def features(classifier: Classifier, images: Tensor, layer: str | None = None) -> tuple[Tensor, Tensor]:
    """One no-grad forward pass: the feature maps A (N, K, h, w) of ``layer`` and the logits (N, C), detached.

    Raises:
        InputError: the model's logits are not (N, C) or not finite (``Classifier.validate_logits``); the layer
            runs more than once in a forward pass (``_once``).
    """
    with frozen(classifier.model), capture(classifier, layer) as cap, torch.no_grad():
        logits = classifier.validate_logits(classifier.model(images.to(classifier.device)))
    return _once(cap, classifier, layer).detach(), logits.detach()


def _once(cap: Capture, classifier: Classifier, layer: str | None) -> Tensor:
    """The captured feature maps of one forward pass; refused when the layer ran more than once in it (one
    module reused, e.g. a single ReLU called after two convolutions): which call's maps would the map explain?"""
    if cap.calls > 1:
        name = layer or classifier.target_layer
        raise InputError(
            f"layer {name!r} runs {cap.calls} times in one forward pass of {classifier.name!r} (the same module "
            "is called more than once), so its feature maps are ambiguous: choose a layer that runs once, such "
            "as the convolution or block just before it"
        )
    return cap.activations


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
    require_autograd("a gradient-based map (Grad-CAM and its family)")
    x = images.to(classifier.device).detach().clone().requires_grad_(True)
    with frozen(classifier.model), capture(classifier, layer) as cap, torch.enable_grad():
        logits = classifier.validate_logits(classifier.model(x))
        score = logits.gather(1, targets[:, None]).sum()
        activations = _once(cap, classifier, layer)
        (grads,) = torch.autograd.grad(score, activations)
    if not bool(torch.isfinite(grads).all()):
        raise InputError(
            f"the gradients of the class scores of model {classifier.name!r} at its layer are NaN or infinite: "
            "check the model before explaining it"
        )
    return activations.detach(), grads.detach(), logits.detach()
