"""A faster copy of a frozen classifier for inference-only work (issue 13): batch norm folded into the convolutions,
channels-last memory layout. The caller's classifier and model are never modified.

A frozen model in eval mode computes ``BN(conv(x)) = gamma * (W * x + b - mu) / sqrt(var + eps) + beta``, an affine
function of the convolution's output, so the pair is one convolution with scaled weights and a shifted bias
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). The pairs are found by running the model once on a small input
and watching which batch norm receives exactly the tensor a convolution returned (same object, not modified in
place) and, in the autograd graph, that nothing else uses it, so any network works, whatever its code looks like;
a convolution whose output also goes elsewhere, or that is the target layer, is left alone, and so is a pair where a
module runs twice per pass, carries a hook of the caller's, or a batch norm has no running statistics. The copy is
checked against the original on a random input before it is returned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

from opticam_lib.errors import InputError, OptiCAMError
from opticam_lib.hooks import capture, frozen
from opticam_lib.inputs import rounding_tolerance
from opticam_lib.models.classifier import Classifier, copy_of


@dataclass
class FastInfo:
    """What ``fast_copy`` did: the folded (convolution, batch norm) pairs by name, and the memory layout."""

    folded: list[tuple[str, str]]
    channels_last: bool


class _DropAct(nn.Module):
    """What stays of timm's ``BatchNormAct2d`` once its batch norm is folded: its ``drop`` then its ``act``, under
    the same names (so a layer such as ``bn2.act`` keeps its name in the copy)."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop, self.act = drop, act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(x))


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of a batch norm once folded: nothing (``nn.Identity``) for a plain one; the dropout and the
    activation of timm's ``BatchNormAct2d`` (BN, then drop, then act); None for any other subclass, and for a batch
    norm without running statistics (it normalises with the batch's, even in eval mode: not an affine map)."""
    if bn.running_mean is None or bn.running_var is None:
        return None
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop"):
        return _DropAct(bn.drop, bn.act)
    return None


def _has_hooks(module: nn.Module) -> bool:
    """Whether the caller put hooks on ``module`` (folding would change what they see, or drop them)."""
    return any(
        getattr(module, name, None)
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for CUDA convolutions and matrix products inside the block (PyTorch's settings restored after), so
    that float32 means float32 in a comparison. On a GPU cuDNN uses TF32 (10 mantissa bits) by default, whose
    rounding alone can exceed a check meant for float round-off; nothing changes on a CPU."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _consumers(root: torch.autograd.graph.Node | None) -> dict[torch.autograd.graph.Node, int]:
    """How many edges of the autograd graph below ``root`` lead to each node (the number of uses of its output)."""
    count: dict[torch.autograd.graph.Node, int] = {}
    seen: set[torch.autograd.graph.Node] = set()
    todo = [root] if root is not None else []
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                count[child] = count.get(child, 0) + 1
                todo.append(child)
    return count


def _reparametrized(module: nn.Module) -> bool:
    """Whether ``module``'s weight is computed (``torch.nn.utils.parametrize``, or the older hook-based
    ``weight_norm``, which keeps ``weight_g`` and ``weight_v``) rather than stored."""
    return parametrize.is_parametrized(module) or hasattr(module, "weight_g")


def _find_pairs(model: nn.Module, example: Tensor, skip: set[str]) -> list[tuple[str, str]]:
    """(conv name, bn name) of every Conv2d whose output goes, unchanged, into one BatchNorm2d and nowhere else.

    One forward pass with a graph: a hook records each convolution's output, a pre-hook on each batch norm
    checks that it receives that very tensor, not modified in place since; the autograd graph tells how many
    operations use the convolution's output (it must be exactly one, the batch norm). Each of the two must run
    once per forward pass, and neither may carry hooks of the caller's."""
    names = {id(m): n for n, m in model.named_modules()}
    hooked = {n for n, m in model.named_modules() if _has_hooks(m)}  # before ours are added
    produced: dict[int, tuple[str, Tensor, int]] = {}  # id(output) -> (conv name, output, version)
    grad_fns: dict[str, torch.autograd.graph.Node | None] = {}
    uses: dict[str, list[str]] = {}  # conv name -> the batch norms that took its output
    calls: dict[str, int] = {}
    modified: set[str] = set()

    def on_conv(m: nn.Module, _inp: tuple, out: Tensor) -> None:
        name = names[id(m)]
        calls[name] = calls.get(name, 0) + 1
        produced[id(out)] = (name, out, out._version)
        grad_fns[name] = out.grad_fn

    def on_bn(m: nn.Module, inp: tuple) -> None:
        calls[names[id(m)]] = calls.get(names[id(m)], 0) + 1
        x = inp[0]
        hit = produced.get(id(x))
        if hit is not None and hit[1] is x:
            conv, _, version = hit
            if x._version == version:
                uses.setdefault(conv, []).append(names[id(m)])
            else:
                modified.add(conv)  # changed in place between the two: not an affine pair

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(on_conv))
            elif isinstance(m, nn.BatchNorm2d):
                handles.append(m.register_forward_pre_hook(on_bn))
        with torch.enable_grad():
            out = model(example.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    consumers = _consumers(out.grad_fn if isinstance(out, Tensor) else None)
    modules = dict(model.named_modules())
    pairs = []
    for conv, bns in uses.items():
        if len(bns) != 1 or calls.get(conv, 0) != 1 or calls.get(bns[0], 0) != 1:
            continue  # shared, or one of the two called twice: leave it
        if conv in modified or conv in skip or {conv, bns[0]} & hooked:
            continue  # modified in place, the target layer itself, or hooked by the caller: leave it
        if any(_reparametrized(modules[n]) for n in (conv, bns[0])):
            continue  # weight norm or another parametrisation computes the weight: folding would replace it
        node = grad_fns.get(conv)
        if node is None or consumers.get(node, 0) != 1:
            continue  # its output is used elsewhere too
        if _bn_replacement(modules[bns[0]]) is not None:
            pairs.append((conv, bns[0]))
    return pairs


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def fast_copy(
    classifier: Classifier,
    *,
    fold_batchnorm: bool = True,
    channels_last: bool = False,
    layer: str | None = None,
    atol: float = 1e-3,
    size: tuple[int, int] | None = None,
) -> tuple[Classifier, FastInfo]:
    """A copy of ``classifier`` for frozen inference: batch norm folded into convolutions, optionally channels-last.

    Args:
        classifier: any classifier; it and its model are left exactly as they were (the copy is a deep copy).
        fold_batchnorm: fold each (Conv2d, BatchNorm2d) pair found (see the module's docstring).
        channels_last: store the copy's weights channels-last (feed it channels-last images for the fast kernels).
        layer: the feature layer to keep intact (default: the classifier's target layer); a convolution that is
            this layer is not folded, so its feature maps A^k stay those of the original model.
        atol: the copy's logits and feature maps must match the original's within ``atol + rel * max |value|``
            on a random input in [0, 1], computed with TF32 off (``strict_fp32``), otherwise ``OptiCAMError``;
            ``rel`` is 1e-3 for float32 and float64 models and 8 machine epsilons of a half-precision model's dtype
            (about 0.8 % for float16, 6 % for bfloat16: folding rounds the new weights to that precision).
        size: (H, W) of the random input the copy is traced and checked on: the images' size, which a network
            with a fixed-size head needs (default: the classifier's ``input_size``, square).
    Returns:
        ``(copy, info)``: a ``Classifier`` in eval mode with frozen parameters (``requires_grad`` off), on the
        same device and dtype, and ``FastInfo`` naming the folded pairs.
    """
    if not isinstance(classifier, Classifier):
        raise InputError(f"fast_copy takes a Classifier, got {type(classifier).__name__}")
    target = classifier.target_layer if layer is None else layer
    classifier.layer(target)  # an unknown layer is refused with the valid names
    model = copy_of(classifier, "for fold_batchnorm or channels_last (use them False)").model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fast = replace(classifier, model=model, extra=dict(classifier.extra))
    device = classifier.device
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    gen = torch.Generator().manual_seed(0)
    height, width = (classifier.input_size, classifier.input_size) if size is None else size
    example = torch.rand(2, 3, height, width, generator=gen).to(device, dtype)
    folded: list[tuple[str, str]] = []
    if fold_batchnorm:
        prefix = (
            "net."  # names are found on the whole model (with the input normalisation), layers on ``net``
        )
        pairs = _find_pairs(model, example, {prefix + target})
        modules = dict(model.named_modules())
        for conv, bn in pairs:
            bn_module = modules[bn]
            replacement = _bn_replacement(bn_module)
            assert replacement is not None  # _find_pairs kept only these
            _set_module(model, conv, fuse_conv_bn_eval(modules[conv], bn_module))
            _set_module(model, bn, replacement)
            folded.append((conv.removeprefix(prefix), bn.removeprefix(prefix)))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # the copy must compute what the original computes (in true float32: TF32's rounding is not the folding's)
    x = example.contiguous(memory_format=torch.channels_last) if channels_last else example
    with strict_fp32(), torch.no_grad():
        with frozen(classifier.model), capture(classifier, target) as cap:
            want_logits = classifier.model(example)
            want_acts = cap.activations.clone()
        with capture(fast, target) as cap:
            got_logits = model(x)
            got_acts = cap.activations
    rel = rounding_tolerance(dtype)  # float16 / bfloat16 round the folded weights themselves
    for what, want, got in (("logits", want_logits, got_logits), ("feature maps", want_acts, got_acts)):
        tol = atol + rel * float(want.abs().max())
        err = float((want - got).abs().max())
        if not err <= tol:
            raise OptiCAMError(
                f"the folded copy of {classifier.name!r} differs from the original in its {what} by {err:.3g} "
                f"(tolerance {tol:.3g}); use fold_batchnorm=False for this model"
            )
    fast.extra["fast"] = FastInfo(folded=folded, channels_last=channels_last)
    return fast, fast.extra["fast"]
