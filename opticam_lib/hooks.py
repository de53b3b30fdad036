"""Capturing a layer's activations, and putting the caller's model back exactly as it was.

Every context manager here restores what it changed on exit, also when an exception is raised:
hooks are removed, each module's train/eval flag and each parameter's ``requires_grad`` are put back.
Gradients are taken with ``torch.autograd.grad`` on captured tensors, so nothing accumulates in ``.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError

if TYPE_CHECKING:  # annotations only: the models import this module
    from opticam_lib.models.classifier import Classifier


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode; restore each module's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter; both restored on exit.

    Freezing means a backward pass computes gradients for the input only (faster) and leaves no ``.grad`` in
    any parameter. Gradients already present in ``.grad`` before entry are left untouched.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


@dataclass
class Capture:
    """What ``capture`` recorded: the layer's output of the last forward pass, as a grid (N, K, h, w)."""

    raw: Tensor | None = None  # the layer's output as the layer gave it (graph kept when grads are on)
    grid: Tensor | None = None  # the same as (N, K, h, w), via Classifier.to_grid
    calls: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def activations(self) -> Tensor:
        """(N, K, h, w): the layer's output of the last forward pass (tokens reshaped to a grid for a ViT)."""
        if self.grid is None:
            raise InputError(
                "the target layer was not reached by the forward pass (a module the model defines but does not "
                "call, or one skipped for this input): choose a layer the forward pass goes through"
            )
        return self.grid


@contextmanager
def capture(classifier: Classifier, layer: str | None = None) -> Iterator[Capture]:
    """Record the output of ``layer`` (default: the classifier's target layer) at each forward pass.

    The hook hands a copy of the output to the rest of the network, so a later in-place operation (an
    in-place ReLU after a BatchNorm, say) cannot modify the captured tensor. With grad mode on, the
    captured grid stays in the graph, and ``torch.autograd.grad(score, cap.grid)`` gives dscore/dA.
    A second hook, on the classifier's model, notes the images' (H, W), so that ``Classifier.to_grid`` can tell a
    channels-last output from a grid. Both hooks are removed on exit, also after an exception.
    """
    module = classifier.layer(layer)
    cap = Capture()
    seen: dict[str, tuple[int, int]] = {}

    def see_input(
        _m: nn.Module, inp: tuple
    ) -> None:  # the images' (H, W), to recognise a channels-last layer
        if inp and isinstance(inp[0], Tensor) and inp[0].dim() == 4:
            seen["size"] = (int(inp[0].shape[-2]), int(inp[0].shape[-1]))

    def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        if not isinstance(out, Tensor):
            raise InputError(
                f"layer {layer or classifier.target_layer!r} returns {type(out).__name__}, not a tensor: choose "
                "a layer whose output is one tensor (e.g. the module inside it that makes the feature maps)"
            )
        grid = classifier.to_grid(out, seen.get("size"))
        cap.raw = out
        cap.grid = grid
        cap.calls += 1
        if classifier.prefix_tokens is None:
            return out.clone()  # the grid is ``out`` itself: the rest of the network depends on it
        # Tokens: the grid is a reshaped slice of ``out``. Rebuild the output from the grid, so that the rest
        # of the network depends on ``cap.grid`` and autograd.grad(score, cap.grid) works (a plain
        # ``out.clone()`` leaves the grid outside the graph of the score).
        tokens = grid.flatten(2).transpose(1, 2)
        return torch.cat([out[:, : classifier.prefix_tokens], tokens], dim=1)

    handles = []
    try:  # registered inside: a module that refuses the second hook leaves the first one removed too
        handles.append(classifier.model.register_forward_pre_hook(see_input))
        handles.append(module.register_forward_hook(hook))
        yield cap
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace_output(classifier: Classifier, layer: str | None, grid: Tensor) -> Iterator[None]:
    """Make ``layer`` output ``grid`` (N, K, h, w) instead of what it computes (for Ablation-CAM).

    For a transformer the grid is turned back into tokens, the prefix tokens kept as computed.
    """
    module = classifier.layer(layer)

    def hook(_m: nn.Module, _inp: tuple, out: Tensor) -> Tensor:
        if classifier.prefix_tokens is None:
            return grid.to(out.dtype)
        n, k = grid.shape[:2]
        tokens = grid.reshape(n, k, -1).transpose(1, 2)
        return torch.cat([out[:, : classifier.prefix_tokens], tokens.to(out.dtype)], dim=1)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def hook_count(model: nn.Module) -> int:
    """Number of forward/backward hooks registered on any module of ``model`` (0 after a clean call)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )
