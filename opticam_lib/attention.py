"""Transformer baselines of Table 2: raw attention (Dosovitskiy et al.) and attention rollout (Abnar & Zuidema).

Both read the attention probabilities of every block. They are recomputed from each attention module's input
with a forward pre-hook (so fused attention kernels need not be switched off); this works for modules laid out
like timm's ``Attention`` (``qkv`` linear, ``num_heads``, ``scale``, optional ``q_norm``/``k_norm``).

Both maps depend on the image only, not on the target class (section 5.3.1): ``targets`` is accepted for the
common calling convention and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .cam import Targets
from .checks import check_choice, check_images
from .errors import InputError
from .hooks import frozen
from .maps import to_saliency
from .models import Classifier


def attention_modules(classifier: Classifier) -> list[nn.Module]:
    """The attention modules of a timm-style ViT, in order (input side first)."""
    mods = [m for m in classifier.net.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]
    if not mods or classifier.prefix_tokens is None:
        raise InputError(
            f"{classifier.name!r} has no timm-style attention modules (qkv, num_heads): not a ViT"
        )
    return mods


@contextmanager
def attention_maps(classifier: Classifier) -> Iterator[list[Tensor]]:
    """Collect each block's attention probabilities (N, heads, T, T) during a forward pass; hooks removed on exit."""
    store: list[Tensor] = []

    def pre_hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        b, t, c = x.shape
        h = module.num_heads
        qkv = module.qkv(x).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        q = getattr(module, "q_norm", nn.Identity())(q)
        k = getattr(module, "k_norm", nn.Identity())(k)
        scale = getattr(module, "scale", (c // h) ** -0.5)
        store.append(torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1).detach())

    handles = [m.register_forward_pre_hook(pre_hook) for m in attention_modules(classifier)]
    try:
        yield store
    finally:
        for hd in handles:
            hd.remove()


def _grid(classifier: Classifier, cls_row: Tensor) -> Tensor:
    """(N, T) attention of the class token to every token -> (N, 1, h, w) over the patch tokens."""
    patches = cls_row[:, classifier.prefix_tokens :]
    side = round(patches.shape[1] ** 0.5)
    return patches.reshape(-1, 1, side, side)


def _attentions(classifier: Classifier, images: Tensor) -> list[Tensor]:
    images = check_images(images).to(classifier.device)
    with frozen(classifier.model), attention_maps(classifier) as store, torch.no_grad():
        classifier.model(images)
    return store


def raw_attention(classifier: Classifier, images: Tensor, targets: Targets = None) -> Tensor:
    """The last block's attention of the class token to the patches, averaged over heads. -> (N, 1, H, W)."""
    att = _attentions(classifier, images)[-1].mean(dim=1)  # (N, T, T)
    return to_saliency(_grid(classifier, att[:, 0]), tuple(images.shape[-2:]))


def rollout(
    classifier: Classifier, images: Tensor, targets: Targets = None, head_fusion: str = "mean"
) -> Tensor:
    """Attention rollout: ``R = prod_l (A_l + I) / 2`` (rows renormalised), heads fused by mean/max/min;
    the class token's row of R over the patches. -> (N, 1, H, W) in [0, 1]."""
    check_choice(head_fusion, "head_fusion", ("mean", "max", "min"))
    atts = _attentions(classifier, images)
    result = None
    for a in atts:
        fused = getattr(a, head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused
        eye = torch.eye(fused.shape[-1], device=fused.device)
        a_hat = (fused + eye) / 2
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        result = a_hat if result is None else a_hat @ result
    return to_saliency(_grid(classifier, result[:, 0]), tuple(images.shape[-2:]))
