"""TIBAV: Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention Visualization" (CVPR 2021), the
transformer baseline of the paper's Tables 2, 3 and A8 (ref. [63]; footnote 9 cites the authors' repository,
github.com/hila-chefer/Transformer-Explainability), for timm ``VisionTransformer`` classifiers.

Two variants, the same rollout of class-specific attention maps, different relevances R_A of the attention:

- ``variant="lrp"`` (default, the CVPR 2021 paper's method, ``method="transformer_attribution"`` in the
  authors' ``ViT_explanation_generator.LRP``): relevance is propagated with LRP from the target logit, started
  as the one-hot vector of the target class (R = 1 on class c), back through the head and every block. The
  rules are those of the authors' ``layers_ours.py``:

  * ``Linear``: the alpha-beta rule with alpha = 1, beta = 0 (bias ignored),
    ``R_i = x_i^+ sum_j w_ji^+ R_j / z_j + x_i^- sum_j w_ji^- R_j / z_j`` with
    ``z_j = sum_i x_i^+ w_ji^+ + x_i^- w_ji^-`` (the positive contributions only);
  * the two matrix products of attention (``Q K^T`` and ``A V``): R_X = X * (S Y^T) / 2, R_Y = Y * (X^T S) / 2
    with S = R / (X Y) (each operand gets half, so relevance is conserved);
  * a residual sum ``x + f(x)``: each term's z-rule share ``x * R / (x + f)``, rescaled so the two parts carry
    ``|sum_a| / (|sum_a| + |sum_b|)`` and ``|sum_b| / (...)`` of the total (per image here; the authors' code
    sums over the whole batch, which it always runs with one image);
  * the residual branch point (clone): the two relevances add;
  * LayerNorm, GELU, softmax, dropout, LayerScale, the class-token pooling: relevance passes unchanged.

  Every rule conserves the total relevance (up to units with no positive contribution to a linear layer and
  the 1e-9 of the authors' ``safe_divide``), so the relevance at the input of every block sums to 1 per image
  (``TIBAVResult.block_relevance``, tested).
- ``variant="gradient"`` (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability for
  Interpreting Bi-Modal and Encoder-Decoder Transformers", the ViT example of their Transformer-MM-Explainability
  repository): R_A is the attention A itself, no LRP. It is *not* the CVPR paper's method: the gradient-weighted
  attention only, cheaper and simpler, offered for comparison.

With the gradient of the target logit y_c with respect to each block's attention probabilities
``∇A = ∂y_c/∂A`` (N, heads, T, T), each block b gives (the CVPR paper's last two equations)

    Ā_b = I + E_h[(∇A_b ⊙ R_A_b)^+],        C = Ā_L Ā_{L-1} ... Ā_1   (N, T, T),

the later block on the left and rows not renormalised, as the authors' ``compute_rollout_attention`` computes
it (the paper writes the product as Ā^(1) ... Ā^(B)); the ICCV 2021 update R <- R + Ā' R from R = I is the same
product. The map is the class token's row of C over
the patch tokens (``C[:, 0, prefix:]``), upsampled and normalised to [0, 1] like rollout's
(``opticam_lib.methods.attention``). Unlike raw attention and rollout it depends on the target class.

The attention probabilities must be materialised for their gradient: each attention module's ``fused_attn`` is
switched off for the call and restored, and hooks (removed on exit, also on an error) read the attention after
``attn_drop`` and each block's input. The LRP pass recomputes each block from its input with the block's own
modules; the recomputation is checked against the block's real output, so a block laid out differently from
timm's pre-norm ``Block`` is refused instead of explained wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError
from opticam_lib.hooks import frozen
from opticam_lib.inputs import Targets, prepare, require_autograd, require_graph, validate_choice
from opticam_lib.methods.attention import class_token_grid
from opticam_lib.methods.maps import to_saliency
from opticam_lib.models.classifier import Classifier

TIBAV_VARIANTS: tuple[str, ...] = ("lrp", "gradient")


@dataclass
class TIBAVResult:
    """Everything one TIBAV call computes, detached, float32.

    Attributes:
        relevance: (N, T, T) the rollout C = Ā_L ... Ā_1; ``relevance[:, 0, prefix:]`` is the map.
        cams: L tensors (N, T, T), Ā_b - I = E_h[(∇A_b ⊙ R_A_b)^+], >= 0, input side first.
        attention: L tensors (N, heads, T, T), the attention probabilities A_b (rows sum to 1).
        gradients: L tensors (N, heads, T, T), ∂y_c/∂A_b of the target logit.
        attention_relevance: L tensors (N, heads, T, T), R_A_b (LRP relevances, or A_b for ``"gradient"``).
        block_relevance: L tensors (N, T, D), the LRP relevance at each block's input (empty for
            ``"gradient"``); each sums to 1 per image (conservation).
        logits: (N, C) the model's logits; targets: (N,) long, the explained classes.
    """

    relevance: Tensor
    cams: list[Tensor]
    attention: list[Tensor]
    gradients: list[Tensor]
    attention_relevance: list[Tensor]
    block_relevance: list[Tensor]
    logits: Tensor
    targets: Tensor


# ---------------------------------------------------------------------------------------------------------------
# the model's layout


def _sub(module: nn.Module, name: str) -> nn.Module:
    """``module.name``, or an identity when the module has no such child (timm omits some in older versions)."""
    sub = getattr(module, name, None)
    return sub if isinstance(sub, nn.Module) else nn.Identity()


def vit_blocks(classifier: Classifier) -> list[nn.Module]:
    """The blocks of a timm ``VisionTransformer``, input side first, after checking the layout TIBAV needs.

    Needed: ``prefix_tokens`` set on the classifier; ``net.blocks`` of pre-norm blocks (``norm1``, ``attn`` with
    ``qkv``/``num_heads``/``proj``/``attn_drop`` and no gate, ``norm2``, ``mlp`` with linear ``fc1`` and ``fc2``);
    a linear ``head`` on the class token (``global_pool="token"``, no attention pooling, no distillation head).

    Raises:
        InputError: naming what is missing (a CNN: "not a vision transformer").
    """
    net = classifier.net
    blocks = getattr(net, "blocks", None)
    if classifier.prefix_tokens is None or not isinstance(blocks, nn.Module) or len(list(blocks)) == 0:
        raise InputError(
            f"TIBAV explains vision transformers only; {classifier.name!r} is not a vision transformer "
            "(no prefix_tokens or no blocks): use a CAM method for a CNN"
        )
    problems: list[str] = []
    for i, blk in enumerate(blocks):
        attn, mlp = getattr(blk, "attn", None), getattr(blk, "mlp", None)
        if attn is None or mlp is None or not hasattr(blk, "norm1") or not hasattr(blk, "norm2"):
            problems.append(f"block {i} is not a pre-norm block (norm1, attn, norm2, mlp)")
            continue
        for name in ("qkv", "proj"):
            if not isinstance(getattr(attn, name, None), nn.Linear):
                problems.append(f"block {i}'s attention has no linear {name}")
        if not hasattr(attn, "num_heads") or not isinstance(getattr(attn, "attn_drop", None), nn.Module):
            problems.append(f"block {i}'s attention has no num_heads or attn_drop (not timm's Attention)")
        if getattr(attn, "gate", None) is not None:
            problems.append(f"block {i}'s attention is gated")
        for name in ("fc1", "fc2"):
            if not isinstance(getattr(mlp, name, None), nn.Linear):
                problems.append(f"block {i}'s MLP has no linear {name}")
    if not isinstance(getattr(net, "head", None), nn.Linear):
        problems.append("the head is not one linear layer")
    if getattr(net, "global_pool", "token") != "token" or getattr(net, "attn_pool", None) is not None:
        problems.append(f"the head pools with {getattr(net, 'global_pool', None)!r}, not the class token")
    if getattr(net, "head_dist", None) is not None:
        problems.append("the model has a distillation head")
    if problems:
        raise InputError(
            f"TIBAV needs a timm VisionTransformer layout; {classifier.name!r}: " + "; ".join(problems[:3])
        )
    return list(blocks)


@contextmanager
def _attention_recorded(
    net: nn.Module, blocks: Sequence[nn.Module]
) -> Iterator[tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]]:
    """During a forward pass, record each block's input and output, its attention probabilities (after
    ``attn_drop``, in the graph) and the head's input. Fused attention is off inside; hooks are removed and every
    ``fused_attn`` flag is restored on exit, also on an error.

    Yields:
        (block inputs, block outputs, attentions, head inputs), lists filled by the forward pass.
    """
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []
    attentions: list[Tensor] = []
    head_inputs: list[Tensor] = []

    def block_pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attn_mask", args[1] if len(args) > 1 else None)
        if mask is not None or kwargs.get("is_causal", False):
            raise InputError(
                "TIBAV: attention with a mask or causal attention is not a ViT classifier's layout"
            )
        inputs.append((args[0] if args else kwargs["x"]).detach())

    def block_hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        outputs.append(output.detach())

    def attention_hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        attentions.append(output)

    def head_hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        head_inputs.append(args[0].detach())

    flags = [(blk.attn, blk.attn.fused_attn) for blk in blocks if hasattr(blk.attn, "fused_attn")]
    handles = []
    try:
        for blk in blocks:
            handles.append(blk.register_forward_pre_hook(block_pre_hook, with_kwargs=True))
            handles.append(blk.register_forward_hook(block_hook))
            handles.append(blk.attn.attn_drop.register_forward_hook(attention_hook))
        handles.append(net.head.register_forward_hook(head_hook))
        for attn, _ in flags:
            attn.fused_attn = False  # materialise the attention probabilities
        yield inputs, outputs, attentions, head_inputs
    finally:
        for h in handles:
            h.remove()
        for attn, flag in flags:
            attn.fused_attn = flag


# ---------------------------------------------------------------------------------------------------------------
# the LRP rules of the authors' layers_ours.py


def safe_divide(a: Tensor, b: Tensor) -> Tensor:
    """The authors' ``safe_divide``: ``a / (b + 1e-9)`` where b != 0, and 0 where b == 0."""
    den = b + 1e-9
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def linear_relevance(x: Tensor, weight: Tensor, r: Tensor) -> Tensor:
    """LRP alpha-beta rule, alpha = 1, beta = 0, through ``y = x W^T + b`` (bias ignored).

    ``R_i = x_i^+ Σ_j w_ji^+ R_j / z_j + x_i^- Σ_j w_ji^- R_j / z_j``, ``z_j = Σ_i x_i^+ w_ji^+ + x_i^- w_ji^-``.

    Args:
        x: (..., in) the layer's input; weight: (out, in); r: (..., out) the relevance of the output.
    Returns:
        (..., in); sums to r's sum over the outputs with z_j > 0.
    """
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    px, nx = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(r, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def matmul_relevance(x: Tensor, y: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """LRP through ``z = x @ y`` (batched), half of the relevance to each operand.

    Args:
        x: (..., n, k); y: (..., k, m); r: (..., n, m).
    Returns:
        ``R_x = x * (S y^T) / 2`` (..., n, k) and ``R_y = y * (x^T S) / 2`` (..., k, m), ``S = r / (x @ y)``.
    """
    s = safe_divide(r, x @ y)
    return x * (s @ y.transpose(-2, -1)) / 2, y * (x.transpose(-2, -1) @ s) / 2


def add_relevance(a: Tensor, b: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """LRP through ``z = a + b`` (a residual connection), the authors' ``Add.relprop``, per image.

    The z-rule shares ``a * r / z`` and ``b * r / z`` are rescaled so that they carry
    ``|Σa| / (|Σa| + |Σb|)`` and ``|Σb| / (|Σa| + |Σb|)`` of Σr (sums over all but the batch dimension).

    Args:
        a, b, r: (N, ...) of one shape. Returns: (R_a, R_b), each (N, ...).
    """
    s = safe_divide(r, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, r.dim()))
    ra_sum, rb_sum, r_sum = (t.sum(dim=dims, keepdim=True) for t in (ra, rb, r))
    total = ra_sum.abs() + rb_sum.abs()
    ra_fact = safe_divide(ra_sum.abs(), total) * r_sum
    rb_fact = safe_divide(rb_sum.abs(), total) * r_sum
    return ra * safe_divide(ra_fact, ra_sum), rb * safe_divide(rb_fact, rb_sum)


def clone_relevance(x: Tensor, r1: Tensor, r2: Tensor) -> Tensor:
    """LRP at a branch point (the authors' ``Clone.relprop``): ``x * (r1 / x + r2 / x)``, i.e. r1 + r2 where x != 0."""
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


@dataclass
class _BlockParts:
    """One block recomputed from its input: what the rules need (float32, (N, heads, T, d) per head)."""

    x: Tensor
    n1: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    attention: Tensor
    proj_in: Tensor
    branch1: Tensor
    x_mid: Tensor
    n2: Tensor
    fc2_in: Tensor
    branch2: Tensor
    out: Tensor


def _block_parts(blk: nn.Module, x: Tensor) -> _BlockParts:
    """timm's ``Block.forward`` step by step (eval mode, no mask): x + ls1(attn(norm1(x))), then the MLP."""
    attn, mlp = blk.attn, blk.mlp
    n1 = blk.norm1(x)
    b, t, _ = n1.shape
    h = int(attn.num_heads)
    d = attn.qkv.out_features // (3 * h)
    q, k, v = attn.qkv(n1).reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = _sub(attn, "q_norm")(q), _sub(attn, "k_norm")(k)
    scale = getattr(attn, "scale", d**-0.5)
    a = _sub(attn, "attn_drop")(torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1))
    proj_in = _sub(attn, "norm")((a @ v).transpose(1, 2).reshape(b, t, h * d))
    branch1 = _sub(blk, "drop_path1")(_sub(blk, "ls1")(_sub(attn, "proj_drop")(attn.proj(proj_in))))
    x_mid = x + branch1
    n2 = blk.norm2(x_mid)
    fc2_in = _sub(mlp, "norm")(_sub(mlp, "drop1")(mlp.act(mlp.fc1(n2))))
    branch2 = _sub(blk, "drop_path2")(_sub(blk, "ls2")(_sub(mlp, "drop2")(mlp.fc2(fc2_in))))
    parts = (x, n1, q, k, v, a, proj_in, branch1, x_mid, n2, fc2_in, branch2, x_mid + branch2)
    return _BlockParts(*(p.float() for p in parts))


def _block_relevance(blk: nn.Module, p: _BlockParts, r_out: Tensor) -> tuple[Tensor, Tensor]:
    """The authors' ``Block.relprop`` and ``Attention.relprop``: relevance (N, T, D) at the block's output ->
    (relevance at its input (N, T, D), relevance of its attention probabilities R_A (N, heads, T, T))."""
    attn, mlp = blk.attn, blk.mlp
    r_mid_skip, r_branch2 = add_relevance(p.x_mid, p.branch2, r_out)
    r_fc2_in = linear_relevance(p.fc2_in, mlp.fc2.weight.float(), r_branch2)  # ls2, dropout: unchanged
    r_n2 = linear_relevance(p.n2, mlp.fc1.weight.float(), r_fc2_in)  # mlp.norm, GELU: unchanged
    r_mid = clone_relevance(p.x_mid, r_mid_skip, r_n2)  # norm2: unchanged
    r_in_skip, r_branch1 = add_relevance(p.x, p.branch1, r_mid)
    r_proj_in = linear_relevance(p.proj_in, attn.proj.weight.float(), r_branch1)  # ls1, attn.norm: unchanged
    n, h, t, d = p.v.shape
    r_av = r_proj_in.reshape(n, t, h, d).transpose(1, 2)
    r_attention, r_v = matmul_relevance(p.attention, p.v, r_av)
    r_q, r_kt = matmul_relevance(p.q, p.k.transpose(-2, -1), r_attention)  # softmax, attn_drop: unchanged
    r_qkv = torch.stack([r_q, r_kt.transpose(-2, -1), r_v]).permute(1, 3, 0, 2, 4).reshape(n, t, 3 * h * d)
    r_n1 = linear_relevance(p.n1, attn.qkv.weight.float(), r_qkv)  # q_norm, k_norm: unchanged
    return clone_relevance(p.x, r_in_skip, r_n1), r_attention


def rollout_of_cams(cams: Sequence[Tensor]) -> Tensor:
    """``C = (I + cam_L) ... (I + cam_1)`` (N, T, T) from L cams (N, T, T), input side first; rows not
    renormalised (the authors' ``compute_rollout_attention``, and R <- R + cam R of the ICCV 2021 version)."""
    if len(cams) == 0:
        raise InputError("TIBAV needs at least one block")
    eye = torch.eye(cams[0].shape[-1], dtype=cams[0].dtype, device=cams[0].device)
    joint = eye + cams[0]
    for cam in cams[1:]:
        joint = (eye + cam) @ joint
    return joint


# ---------------------------------------------------------------------------------------------------------------
# the method


def tibav_relevance(
    classifier: Classifier, images: Tensor, targets: Targets = None, variant: str = "lrp"
) -> TIBAVResult:
    """TIBAV's matrices for each image: one forward and one backward pass (∂y_c/∂A), then, for ``"lrp"``, one
    relevance pass through the head and the blocks (see the module's docstring).

    Args:
        images: (N, 3, H, W) float in [0, 1].
        targets: one class per image (None: the predicted class); the maps explain logit y_c.
        variant: ``"lrp"`` (the CVPR 2021 method) or ``"gradient"`` (the ICCV 2021 gradient-weighted attention).
    Raises:
        InputError: not a timm ViT layout, bad images, targets or variant.
    """
    validate_choice(variant, "variant", TIBAV_VARIANTS)
    blocks = vit_blocks(classifier)  # a CNN is refused before any work
    require_autograd("TIBAV")
    images, targets = prepare(classifier, images, targets)
    net = classifier.net
    x = images.detach().clone().requires_grad_(True)
    with frozen(classifier.model), _attention_recorded(net, blocks) as (ins, outs, atts, heads):
        with torch.enable_grad():
            logits = classifier.validate_logits(classifier.model(x))
            if not (len(ins) == len(outs) == len(atts) == len(blocks)) or len(heads) != 1:
                raise InputError(
                    f"TIBAV: the forward pass ran {len(ins)} blocks and {len(atts)} attention maps for "
                    f"{len(blocks)} blocks (each block must run once, with its attention's attn_drop)"
                )
            score = logits.gather(1, targets[:, None]).sum()
            require_graph(score, classifier.name, "TIBAV")
            grads = torch.autograd.grad(score, atts)
        attention = [a.detach().float() for a in atts]
        gradients = [g.detach().float() for g in grads]
        block_relevance: list[Tensor] = []
        if variant == "gradient":
            attention_relevance = attention
        else:
            with torch.no_grad():
                head = net.head
                one_hot = torch.zeros_like(logits, dtype=torch.float32)
                one_hot[torch.arange(len(targets), device=one_hot.device), targets] = 1.0
                r_pooled = linear_relevance(heads[0].float(), head.weight.float(), one_hot)
                r = torch.zeros_like(outs[-1], dtype=torch.float32)
                r[:, 0] = r_pooled  # the class token (norm, fc_norm, pooling: unchanged)
                attention_relevance = []
                for blk, x_in, x_out in zip(reversed(blocks), reversed(ins), reversed(outs), strict=True):
                    parts = _block_parts(blk, x_in)
                    tol = 1e-3 * (1.0 + float(x_out.abs().max()))
                    if not torch.allclose(parts.out, x_out.float(), rtol=1e-3, atol=tol):
                        raise InputError(
                            "TIBAV: recomputing a block from its input does not give its output: the block is "
                            "not laid out like timm's pre-norm Block (x + attn(norm1(x)), then x + mlp(norm2(x)))"
                        )
                    r, r_attention = _block_relevance(blk, parts, r)
                    attention_relevance.insert(0, r_attention)
                    block_relevance.insert(0, r)
    cams = [(g * ra).clamp(min=0).mean(dim=1) for g, ra in zip(gradients, attention_relevance, strict=True)]
    return TIBAVResult(
        relevance=rollout_of_cams(cams),
        cams=cams,
        attention=attention,
        gradients=gradients,
        attention_relevance=list(attention_relevance),
        block_relevance=block_relevance,
        logits=logits.detach(),
        targets=targets,
    )


def tibav(classifier: Classifier, images: Tensor, targets: Targets = None, variant: str = "lrp") -> Tensor:
    """TIBAV (Chefer, Gur & Wolf, CVPR 2021): the class token's row of ``C = Ā_L ... Ā_1`` over the patch tokens,
    ``Ā_b = I + E_h[(∂y_c/∂A_b ⊙ R_A_b)^+]`` with LRP relevances R_A (``variant="lrp"``, the paper's method) or
    with R_A = A (``variant="gradient"``, the authors' ICCV 2021 gradient-weighted attention).

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: one class per image (None: the predicted class).
    Returns:
        (N, 1, H, W) float in [0, 1] (the patch grid upsampled bilinearly, then min-max normalised).
    Raises:
        InputError: the classifier is not a timm vision transformer, or bad images, targets or variant.
    """
    result = tibav_relevance(classifier, images, targets, variant)
    grid = class_token_grid(result.relevance[:, 0], classifier.prefix_tokens)
    return to_saliency(grid, tuple(images.shape[-2:]))
