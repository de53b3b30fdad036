"""Masking-based maps: Score-CAM (eq. 3-4), Ablation-CAM, and Fake-CAM (the trivial map of Poppi et al. 2021).

Same calling convention as ``opticam_lib.methods.cam_family``: ``method(classifier, images, targets=None, **options)`` returns
(N, 1, H, W) float in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from opticam_lib.errors import InputError, warn_caller
from opticam_lib.hooks import frozen, replace_output
from opticam_lib.inputs import (
    Targets,
    prepare,
    validate_classifier,
    validate_images,
    validate_positive_int,
    validate_targets,
)
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.maps import combine, normalize, to_saliency, upsample
from opticam_lib.models.classifier import Classifier


def channel_scores(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    activations: Tensor,
    channels: Tensor | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Tensor:
    """Score-CAM's eq. (3)-(4) channel by channel: ``u_k = f(x ⊙ n(up(A^k)))_c - f(x_b)_c``.

    The black baseline x_b = 0, bilinear ``up`` and range ``n`` (eq. 4). The masked images of each image are
    forwarded in chunks of ``batch_size``.

    Args:
        images: (N, 3, H, W) float in [0, 1], checked, on the model's device.
        targets: (N,) long, the class c of each image.
        activations: (N, K, h, w) the feature maps A^k of those images.
        channels: (M,) long, the channels to score (default all K); the others keep u_k = 0.
        progress: a progress bar over the N * M forward passes.
    Returns:
        (N, K) float, u_k of every channel.
    """
    n, k = activations.shape[:2]
    todo = torch.arange(k, device=activations.device) if channels is None else channels.to(activations.device)
    size = tuple(images.shape[-2:])
    scores = torch.zeros(n, k, device=activations.device, dtype=torch.float32)  # whatever the model's dtype
    bar = tqdm(total=n * len(todo), desc="Score-CAM forward passes", disable=not progress, leave=False)
    with frozen(classifier.model), torch.no_grad():
        black = torch.zeros_like(images[:1])
        baseline = classifier.validate_logits(classifier.model(black), "outputs for a black image")[0].float()
        for i in range(n):
            c = int(targets[i])
            for start in range(0, len(todo), batch_size):
                idx = todo[start : start + batch_size]
                masks = normalize(upsample(activations[i, idx, None], size), "range")  # eq. (4): (B, 1, H, W)
                masked = images[i : i + 1] * masks.to(images.dtype)
                logits = classifier.validate_logits(classifier.model(masked), "outputs for masked images")
                scores[i, idx] = logits[:, c].float() - baseline[c]  # eq. (3)
                bar.update(len(idx))
    bar.close()
    return scores


def ablation_weights(
    classifier: Classifier,
    images: Tensor,
    targets: Tensor,
    activations: Tensor,
    logits: Tensor,
    layer: str | None = None,
    channels: Tensor | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Tensor:
    """Ablation-CAM's channel weights: ``w_k = (y_c - y_c^(k)) / y_c``, with y_c^(k) the logit when feature map
    k is set to zero at ``layer``; one forward pass per channel.

    Args:
        images: (N, 3, H, W) float in [0, 1], checked, on the model's device.
        targets: (N,) long; activations: (N, K, h, w) at ``layer``; logits: (N, C) of the unablated images.
        channels: (M,) long, the channels to ablate (default all K); the others keep w_k = 0.
    Returns:
        (N, K) float.
    """
    n, k = activations.shape[:2]
    todo = torch.arange(k, device=activations.device) if channels is None else channels.to(activations.device)
    weights = torch.zeros(n, k, device=activations.device, dtype=torch.float32)  # whatever the model's dtype
    bar = tqdm(total=n * len(todo), desc="Ablation-CAM forward passes", disable=not progress, leave=False)
    with frozen(classifier.model), torch.no_grad():
        for i in range(n):
            c = int(targets[i])
            y = logits[i, c].float()
            for start in range(0, len(todo), batch_size):
                idx = todo[start : start + batch_size]
                grid = activations[i : i + 1].repeat(len(idx), 1, 1, 1)
                grid[torch.arange(len(idx)), idx] = 0
                with replace_output(classifier, layer, grid):
                    out = classifier.model(images[i : i + 1].expand(len(idx), -1, -1, -1))
                    ablated = classifier.validate_logits(out, "outputs with a channel ablated")[:, c].float()
                denom = y if y.abs() > 1e-7 else torch.ones_like(y)
                weights[i, idx] = (y - ablated) / denom
                bar.update(len(idx))
    bar.close()
    return weights


def _given_weights(channel_weights: Tensor, activations: Tensor) -> Tensor:
    """Check precomputed per-channel values against the feature maps: (N, K), finite."""
    if not isinstance(channel_weights, Tensor):
        raise InputError(f"channel_weights must be a tensor (N, K), got {type(channel_weights).__name__}")
    want = tuple(activations.shape[:2])
    if tuple(channel_weights.shape) != want:
        raise InputError(
            f"channel_weights has shape {tuple(channel_weights.shape)}, but the layer gives {want} (images, channels)"
        )
    if not torch.isfinite(channel_weights).all():
        raise InputError("channel_weights contains NaN or infinite values")
    return channel_weights.to(activations.device, torch.float32)


def scorecam(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    layer: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    channel_weights: Tensor | None = None,
) -> Tensor:
    """Score-CAM, eq. (3)-(4): one forward pass per channel (``channel_scores``).

    Weights ``softmax(u)`` over channels, map ``relu(sum_k softmax(u)_k A^k)``; a progress bar over all N*K
    forward passes. ``channel_weights`` (N, K), the scores u of eq. (3) computed before (for these images,
    targets and layer), skips those passes: one forward pass for the feature maps remains.
    Returns (N, 1, H, W) in [0, 1].
    """
    images, targets = prepare(classifier, images, targets)
    batch_size = validate_positive_int(batch_size, "batch_size")
    acts, _ = features(classifier, images, layer)
    if channel_weights is not None:
        scores = _given_weights(channel_weights, acts)
    else:
        scores = channel_scores(classifier, images, targets, acts, batch_size=batch_size, progress=progress)
    return to_saliency(combine(torch.softmax(scores, dim=1), acts, "relu"), tuple(images.shape[-2:]))


def ablationcam(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    layer: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    channel_weights: Tensor | None = None,
) -> Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): one forward pass per channel with that channel zeroed.

    Weights from ``ablation_weights``, map ``relu(sum_k w_k A^k)``. ``channel_weights`` (N, K), the w_k computed
    before, skips the K passes per image. Returns (N, 1, H, W) in [0, 1].
    """
    images, targets = prepare(classifier, images, targets)
    batch_size = validate_positive_int(batch_size, "batch_size")
    acts, logits = features(classifier, images, layer)
    if channel_weights is not None:
        weights = _given_weights(channel_weights, acts)
    else:
        weights = ablation_weights(
            classifier, images, targets, acts, logits, layer, batch_size=batch_size, progress=progress
        )
        dead = [i for i in range(weights.shape[0]) if not bool(weights[i].any())]
        if len(dead) == weights.shape[0] and bool(acts.flatten(1).any(dim=1).all()):
            raise InputError(
                f"zeroing any channel of layer {layer or classifier.target_layer!r} leaves every class score "
                f"unchanged: the layer does not reach the logits of {classifier.name!r} (a branch the forward pass "
                "discards?), so Ablation-CAM's maps would be all zero; choose a layer on the path"
            )
        if dead:
            warn_caller(
                f"Ablation-CAM: zeroing any channel of layer {layer or classifier.target_layer!r} leaves the class "
                f"score of image(s) {dead} unchanged (silent feature maps, or a score that does not depend on "
                "them): their maps are all zero",
            )
    return to_saliency(combine(weights, acts, "relu"), tuple(images.shape[-2:]))


def fakecam(classifier: Classifier | None, images: Tensor, targets: Targets = None) -> Tensor:
    """Fake-CAM (Poppi et al. 2021): 1 everywhere except 0 at the top-left pixel.

    It ignores the model and the target, yet wins average drop and average increase; average gain (eq. 15)
    exposes it. Returns (N, 1, H, W) in {0, 1}.
    """
    images = validate_images(images)
    if classifier is not None:  # ignored, but a wrong call is still a wrong call
        validate_classifier(classifier)
        if targets is not None:
            validate_targets(targets, classifier, images)
    maps = torch.ones(images.shape[0], 1, *images.shape[-2:], device=images.device)
    maps[:, :, 0, 0] = 0
    return maps
