"""Transformer baselines of Table 2: raw attention (Dosovitskiy et al.) and attention rollout (Abnar & Zuidema).

Both read the attention probabilities of every block. They are recomputed from each attention module's input
with a forward pre-hook (so fused attention kernels need not be switched off); this works for modules laid out
like timm's ``Attention`` (``qkv`` linear, ``num_heads``, ``head_dim``, ``scale``, optional
``q_norm``/``k_norm``).

- **Raw attention** (section 5.3.1): the attention of the class token to the patch tokens in the *last*
  block, averaged over heads.
- **Rollout** (Abnar & Zuidema 2020, eq. 1 there; Chefer et al.'s Transformer-Explainability, the repository
  the paper cites for TIBAV in footnote 9, computes the same): each block's head-averaged attention
  :math:`W_l` gets the residual connection, :math:`\\hat A_l = \tfrac12 W_l + \tfrac12 I` (rows renormalised,
  which only matters for max/min head fusion), and the blocks are chained from the input side,
  :math:`R = \\hat A_L \\hat A_{L-1} \\cdots \\hat A_1`; the map is the class token's row of R over the patches.

Both maps depend on the image only, not on the target class (section 5.3.1): ``targets`` is accepted for the
common calling convention and ignored.

The paper's Table 2 layout (``table2``, ``format_table2``: AD/AG/AI/T per method with the paper's ViT-B and DeiT-B
numbers beside ours) lives in ``opticam_lib.paper.transformers``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import Targets, prepare_images, validate_choice, validate_images, validate_targets
from opticam_lib.methods.maps import to_saliency
from opticam_lib.models.classifier import Classifier

HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def attention_modules(classifier: Classifier) -> list[nn.Module]:
    """The attention modules of a timm-style ViT, in order (input side first).

    Raises:
        InputError: the network has no module with ``qkv`` and ``num_heads``, or the classifier does not
            declare ``prefix_tokens`` (it is not set up as a transformer).
    """
    mods = [m for m in classifier.net.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]
    if not mods or classifier.prefix_tokens is None:
        raise InputError(
            f"{classifier.name!r} has no timm-style attention modules (qkv, num_heads): not a ViT"
        )
    return mods


@contextmanager
def attention_maps(classifier: Classifier) -> Iterator[list[Tensor]]:
    """Collect each block's attention probabilities (N, heads, T, T), rows summing to 1, during a forward pass.

    One tensor per attention module and per forward pass, in the order the blocks run; detached. The hooks
    are removed on exit, also when an exception flies.

    Raises (during the forward pass):
        InputError: the module is called with an attention mask or as causal attention (not a ViT's layout).
    """
    store: list[Tensor] = []

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        if mask is not None or kwargs.get("is_causal", False):
            raise InputError(
                "attention with a mask or causal attention is not supported (not a ViT's layout)"
            )
        x = args[0] if args else kwargs["x"]
        b, t, c = x.shape
        h = module.num_heads
        d = getattr(module, "head_dim", c // h)
        qkv = module.qkv(x).reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        q = getattr(module, "q_norm", nn.Identity())(q)
        k = getattr(module, "k_norm", nn.Identity())(k)
        scale = getattr(module, "scale", d**-0.5)
        store.append(torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1).detach().float())

    handles = [m.register_forward_pre_hook(pre_hook, with_kwargs=True) for m in attention_modules(classifier)]
    try:
        yield store
    finally:
        for hd in handles:
            hd.remove()


def attention_probabilities(classifier: Classifier, images: Tensor) -> list[Tensor]:
    """One forward pass; each block's attention probabilities, a list of L tensors (N, heads, T, T).

    Args:
        images: (N, 3, H, W) float in [0, 1].
    """
    images = prepare_images(classifier, images)  # checked, the model's dtype, a fixed input size enforced
    attention_modules(classifier)  # a CNN is refused before the forward pass
    with frozen(classifier.model), attention_maps(classifier) as store, torch.no_grad():
        classifier.model(images)
    return list(store)


def fuse_heads(attention: Tensor, head_fusion: str = "mean") -> Tensor:
    """(N, heads, T, T) -> (N, T, T): the heads' mean (Abnar & Zuidema, the paper's baseline), max or min."""
    validate_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    if attention.dim() != 4:
        raise InputError(f"attention must have shape (N, heads, T, T), got {tuple(attention.shape)}")
    if head_fusion == "mean":
        return attention.mean(dim=1)
    return getattr(attention, head_fusion)(dim=1).values


def rollout_matrix(attentions: Sequence[Tensor], head_fusion: str = "mean", start: int = 0) -> Tensor:
    """Attention rollout, ``R = Â_L ... Â_{start+1}`` with ``Â_l = (W_l + I) / 2`` rows renormalised.

    Args:
        attentions: L tensors (N, heads, T, T), input side first, each row a probability distribution.
        head_fusion: how the heads of a block become one matrix W_l: ``"mean"`` (default, as in the paper's
            baseline), ``"max"`` or ``"min"``.
        start: index of the first block taken into account (0: all, as in the paper).
    Returns:
        (N, T, T): row i says how much of token i's representation after the last block flows from each input
        token; rows sum to 1.
    """
    if len(attentions) == 0:
        raise InputError("rollout needs the attention of at least one block")
    if not 0 <= start < len(attentions):
        raise InputError(f"start must be a block index in 0..{len(attentions) - 1}, got {start}")
    result: Tensor | None = None
    for a in attentions[start:]:
        fused = fuse_heads(a, head_fusion)
        eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
        a_hat = (fused + eye) / 2  # the residual connection: half attention, half identity
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        result = a_hat if result is None else a_hat @ result
    assert result is not None
    return result


def class_token_grid(rows: Tensor, prefix_tokens: int) -> Tensor:
    """The class token's attention row (N, T) -> (N, 1, h, w) over the T - prefix_tokens patch tokens.

    The first ``prefix_tokens`` entries (class, distillation tokens) are dropped, as ``Classifier.to_grid`` drops
    them from feature tokens; the remaining h*w entries are laid out row by row, h = w.
    """
    patches = rows[:, prefix_tokens:]
    t = patches.shape[1]
    side = round(t**0.5)
    if side * side != t:
        raise InputError(f"{t} patch tokens do not form a square grid (prefix_tokens={prefix_tokens})")
    return patches.reshape(-1, 1, side, side)


def _check_unused_targets(classifier: Classifier, images: Tensor, targets: Targets) -> None:
    if targets is not None:
        validate_targets(targets, classifier, validate_images(images))


def raw_attention(classifier: Classifier, images: Tensor, targets: Targets = None, block: int = -1) -> Tensor:
    """Raw attention: block ``block``'s (default the last) attention of the class token to the patches, averaged
    over heads, upsampled and normalised. -> (N, 1, H, W) in [0, 1]. ``targets`` does not change the map
    (class-agnostic) but is checked when given, so that a wrong class is not silently accepted."""
    _check_unused_targets(classifier, images, targets)
    atts = attention_probabilities(classifier, images)
    if not -len(atts) <= block < len(atts):
        raise InputError(f"block must index one of the {len(atts)} blocks, got {block}")
    att = fuse_heads(atts[block], "mean")  # (N, T, T)
    grid = class_token_grid(att[:, 0], classifier.prefix_tokens)
    return to_saliency(grid, tuple(images.shape[-2:]))


def rollout(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    head_fusion: str = "mean",
    start: int = 0,
) -> Tensor:
    """Attention rollout (Abnar & Zuidema): the class token's row of ``rollout_matrix`` over the patches,
    upsampled and normalised. -> (N, 1, H, W) in [0, 1]. ``targets`` does not change the map (class-agnostic)
    but is checked when given."""
    validate_choice(head_fusion, "head_fusion", HEAD_FUSIONS)
    _check_unused_targets(classifier, images, targets)
    r = rollout_matrix(attention_probabilities(classifier, images), head_fusion, start)
    grid = class_token_grid(r[:, 0], classifier.prefix_tokens)
    return to_saliency(grid, tuple(images.shape[-2:]))
