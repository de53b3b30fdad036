"""The feature pass, in one place: a layer's feature maps A^k with no graph (``features``), or with the
gradients dy_c/dA^k of one backward pass (``activations_and_gradients``). Parameters are frozen during
the pass, so no ``.grad`` is left anywhere, and the caller's train/eval flags are restored."""

from __future__ import annotations

import torch
from torch import Tensor

from opticam_lib.errors import InputError, warn_caller
from opticam_lib.hooks import Capture, capture, frozen
from opticam_lib.inputs import require_autograd, require_graph
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
        A (N, K, h, w), dy_c/dA (N, K, h, w), in float32 at least (a float16 or bfloat16 model's maps would
        overflow in Grad-CAM++'s g^3), and the logits (N, C); all detached.
        Parameters are frozen during the pass, so no ``.grad`` is left anywhere.
    Raises:
        InputError: the layer's output does not reach the logits (a branch the forward pass discards); the
            gradients are not finite. An image whose class score does not depend on the layer (a gradient
            exactly 0) gets a ``UserWarning``: its gradient-based maps are all zero.
    """
    require_autograd("a gradient-based map (Grad-CAM and its family)")
    x = images.to(classifier.device).detach().clone().requires_grad_(True)
    with frozen(classifier.model), capture(classifier, layer) as cap, torch.enable_grad():
        logits = classifier.validate_logits(classifier.model(x))
        score = logits.gather(1, targets[:, None]).sum()
        activations = _once(cap, classifier, layer)
        what = "a gradient-based map (Grad-CAM and its family)"
        require_graph(score, classifier.name, what)
        require_graph(activations, classifier.name, f"{what} at layer {layer or classifier.target_layer!r}")
        (grads,) = torch.autograd.grad(score, activations, allow_unused=True)
    name = layer or classifier.target_layer
    if grads is None:
        raise InputError(
            f"the output of layer {name!r} does not reach the class scores of model {classifier.name!r} (a branch "
            "the forward pass discards): a gradient-based map of it would be meaningless; choose a layer on the "
            "path to the logits"
        )
    if not bool(torch.isfinite(grads).all()):
        raise InputError(
            f"the gradients of the class scores of model {classifier.name!r} at its layer are NaN or infinite: "
            "check the model before explaining it"
        )
    flat = grads.flatten(1)
    dead = [i for i in range(flat.shape[0]) if not bool(flat[i].any())]
    if dead:  # a true property of the layer (notebook 10 shows it on a ViT's last block), so a warning, not an error
        warn_caller(
            f"the class score of image(s) {dead} does not depend on the feature maps of layer {name!r} of model "
            f"{classifier.name!r} (the gradient there is exactly 0, e.g. the patch tokens of a transformer's last "
            "block, which only the class token leaves): a gradient-based map of it is all zero",
        )
    dtype = torch.promote_types(activations.dtype, torch.float32)  # float16/bfloat16 would overflow in g^3
    return activations.detach().to(dtype), grads.detach().to(dtype), logits.detach()
