"""The caller's model comes back exactly as it was: hooks removed, each module's train/eval flag and each
parameter's ``requires_grad`` restored, no ``.grad`` created, BatchNorm statistics untouched; after success and
after an exception raised mid-way. Memory stays flat over repeated calls. The hook helpers on their own."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
import torch
from conftest import ALL_METHODS, _fast_options, make_images
from torch import nn

from opticam_lib import gradcam, opticam, optimize, scorecam
from opticam_lib.errors import InputError
from opticam_lib.hooks import capture, eval_mode, frozen, hook_count, replace_output

GRAD_METHODS = [n for n in ALL_METHODS if n != "fakecam"]
#: the methods that make no backward pass through the model (forward passes only, under no_grad)
NO_BACKWARD = {"cam", "scorecam", "ablationcam", "lime"}


def snapshot(model: nn.Module) -> dict:
    """Everything a saliency method must leave as it found it."""
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.clone() for name, b in model.named_buffers()},
        "hooks": hook_count(model),
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert after["hooks"] == 0 == before["hooks"]
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    for name, g in before["grad"].items():
        if g is None:
            assert after["grad"][name] is None, f".grad created in {name}"
        else:
            assert torch.equal(after["grad"][name], g), f".grad changed in {name}"
    for name, p in before["params"].items():
        assert torch.equal(after["params"][name], p), name
    for name, b in before["buffers"].items():  # BatchNorm running statistics: the call ran in eval mode
        assert torch.equal(after["buffers"][name], b), name


def set_mixed_state(model: nn.Module) -> None:
    """Some submodules in train mode, others in eval; some parameters frozen, others not."""
    for i, (_, m) in enumerate(model.named_modules()):
        m.training = i % 2 == 0  # this module only (Module.train() would recurse)
    for i, (_, p) in enumerate(model.named_parameters()):
        p.requires_grad_(i % 3 != 0)


def run(name, clf, images, targets=None, **extra):
    method, options = ALL_METHODS[name], _fast_options(name)
    return method(clf, images, targets, **{**options, **extra})


# ---------------------------------------------------------------------------------------------------------------
# state restored after success


@pytest.mark.parametrize("name", GRAD_METHODS)
def test_state_restored_after_call_in_train_mode(name, tiny_model, images):
    if name == "cam" and tiny_model.linear_head is None:
        pytest.skip("no linear head")
    tiny_model.model.train()
    before = snapshot(tiny_model.model)
    maps = run(name, tiny_model, images)
    assert_same_state(before, snapshot(tiny_model.model))
    tiny_model.model.eval()  # the maps are those of the model in eval mode (BatchNorm running statistics)
    assert torch.equal(run(name, tiny_model, images), maps)


@pytest.mark.parametrize("name", GRAD_METHODS)
def test_state_restored_mixed_modes_and_partly_frozen(name, tiny_model, images):
    if name == "cam" and tiny_model.linear_head is None:
        pytest.skip("no linear head")
    set_mixed_state(tiny_model.model)
    before = snapshot(tiny_model.model)
    assert any(before["training"].values()) and not all(before["training"].values())
    assert any(before["requires_grad"].values()) and not all(before["requires_grad"].values())
    run(name, tiny_model, images)
    assert_same_state(before, snapshot(tiny_model.model))


@pytest.mark.parametrize("name", list(ALL_METHODS))
def test_inputs_are_not_modified(name, tiny_cnn, images):
    """No method writes into the caller's images or targets (in place or through a view)."""
    x = images.clone()
    targets = torch.tensor([0, 1, 2])
    run(name, tiny_cnn, x, targets)
    assert torch.equal(x, images)
    assert targets.tolist() == [0, 1, 2]
    assert not x.requires_grad and x.grad is None


def test_existing_grads_left_untouched(tiny_cnn, images):
    for p in tiny_cnn.model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = snapshot(tiny_cnn.model)
    gradcam(tiny_cnn, images)
    optimize(tiny_cnn, images, iterations=3, progress=False)
    assert_same_state(before, snapshot(tiny_cnn.model))


@pytest.mark.slow
def test_real_classifier_state_restored(real_classifier, real_images):
    model = real_classifier.model
    before = snapshot(model)
    assert not any(before["training"].values())
    gradcam(real_classifier, real_images[:1])
    optimize(real_classifier, real_images[:1], iterations=2, progress=False)
    assert_same_state(before, snapshot(model))


# ---------------------------------------------------------------------------------------------------------------
# state restored after an exception raised mid-way


class Bomb(nn.Module):
    """Identity that raises on its ``fuse``-th forward pass."""

    def __init__(self, inner: nn.Module, fuse: int) -> None:
        super().__init__()
        self.inner = inner
        self.fuse = fuse
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fuse:
            raise RuntimeError("boom in forward")
        return self.inner(x)


# (targets, fuse): which forward pass raises, chosen to fall inside the method's own work (after the first
# forward pass: targets=None spends one on the prediction)
EXPLODE_AT = {
    "cam": (None, 2),
    "gradcam": (None, 2),
    "gradcampp": (None, 2),
    "xgradcam": (None, 2),
    "layercam": (None, 2),
    "hirescam": (None, 2),
    "scorecam": ([0, 1, 2], 3),  # features, baseline, then a masked batch
    "ablationcam": ([0, 1, 2], 3),  # features, then the second ablation batch, under replace_output
    "opticam": ([0, 1, 2], 4),  # features, iterations 1 and 2, then the third
    "experturbation": ([0, 1, 2], 3),  # the third iteration
    "lime": ([0, 1, 2], 2),  # the second chunk of perturbed images
    "gradientshap": ([0, 1, 2], 2),  # the second image's samples
}


@pytest.mark.parametrize("name", GRAD_METHODS)
def test_state_restored_after_exception_in_forward(name, tiny_cnn, images):
    tiny_cnn.net.pool = Bomb(tiny_cnn.net.pool, EXPLODE_AT[name][1])
    set_mixed_state(tiny_cnn.model)
    before = snapshot(tiny_cnn.model)
    extra = {"batch_size": 3} if name == "ablationcam" else {}
    with pytest.raises(RuntimeError, match="boom in forward"):
        run(name, tiny_cnn, images, EXPLODE_AT[name][0], **extra)
    assert_same_state(before, snapshot(tiny_cnn.model))
    # and the model still works: the next call succeeds
    tiny_cnn.net.pool.fuse = -1
    assert run(name, tiny_cnn, images, EXPLODE_AT[name][0], **extra).shape == (3, 1, 32, 32)


def test_the_method_list_is_the_registry():
    """Every registered method is covered by these tests (the transformer-only ones by their twins in
    tests/test_tibav.py, on a timm ViT), and nothing else."""
    from conftest import TRANSFORMER_METHODS

    from opticam_lib.methods.registry import METHODS

    assert set(ALL_METHODS) | set(TRANSFORMER_METHODS) == set(METHODS)
    assert not set(ALL_METHODS) & set(TRANSFORMER_METHODS)
    assert {n for n, info in METHODS.items() if info.transformer_only} == set(TRANSFORMER_METHODS)


class _BackwardBomb(torch.autograd.Function):
    """Identity forward; its backward raises on the ``fuse``-th backward call of a counter."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.counter["calls"] += 1
        if ctx.counter["calls"] == ctx.counter["fuse"]:
            raise RuntimeError("boom in backward")
        return grad, None


def _arm(clf, fuse: int) -> tuple[dict, object]:
    """A forward hook on the model that routes its logits through ``_BackwardBomb`` (so every backward pass goes
    through it); returns the counter and the hook's handle (the test removes it before comparing states)."""
    counter = {"calls": 0, "fuse": fuse}
    module = clf.model

    def hook(mod, args, out):
        return _BackwardBomb.apply(out, counter) if torch.is_grad_enabled() and out.requires_grad else out

    return counter, module.register_forward_hook(hook)


@pytest.mark.parametrize("model", ["tiny_cnn", "bn_cnn", "tiny_vit"])
@pytest.mark.parametrize("name", GRAD_METHODS)
def test_state_restored_after_exception_in_backward(name, model, images, request):
    clf = request.getfixturevalue(model)
    if name == "cam" and clf.linear_head is None:
        pytest.skip("CAM needs a linear head")
    targets = [0, 1, 2]
    counter, handle = _arm(clf, fuse=-1)  # count the backward passes through the target layer first
    try:
        run(name, clf, images, targets)
    finally:
        handle.remove()
    if name in NO_BACKWARD:
        assert counter["calls"] == 0, f"{name} was expected to make no backward pass"
        return
    assert counter["calls"] > 0, f"{name} made no backward pass through the model"
    set_mixed_state(clf.model)
    before = snapshot(clf.model)
    counter, handle = _arm(clf, fuse=max(1, counter["calls"] // 2 + 1))  # mid-way
    try:
        with pytest.raises(RuntimeError, match="boom in backward"):
            run(name, clf, images, targets)
    finally:
        handle.remove()
    assert_same_state(before, snapshot(clf.model))


def test_state_restored_after_exception_in_callback(bn_cnn, images):
    set_mixed_state(bn_cnn.model)
    before = snapshot(bn_cnn.model)

    def callback(step, partial):
        raise KeyboardInterrupt("stop from the callback")

    with pytest.raises(KeyboardInterrupt):
        optimize(bn_cnn, images, 0, iterations=10, callback=callback, callback_every=2, progress=False)
    assert_same_state(before, snapshot(bn_cnn.model))


def test_state_restored_after_exception_in_target_layer(tiny_vit, images):
    """A target layer whose output cannot be reshaped to a grid: the error is raised inside the hook."""
    tiny_vit.prefix_tokens = 2  # 15 patch tokens: not a square
    tiny_vit.model.train()
    before = snapshot(tiny_vit.model)
    with pytest.raises(InputError, match="square"):
        gradcam(tiny_vit, images, 0)
    assert_same_state(before, snapshot(tiny_vit.model))


# ---------------------------------------------------------------------------------------------------------------
# memory flat over repeated calls


def _live_tensors() -> tuple[int, int]:
    gc.collect()
    tensors = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]
    return len(tensors), sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, options",
    [
        (gradcam, {}),
        (opticam, {"iterations": 5, "progress": False}),
        (scorecam, {"progress": False}),
    ],
)
def test_memory_flat_over_repeated_calls(method, options, bn_cnn, images):
    for _ in range(2):  # warm-up: lazy imports, caches
        method(bn_cnn, images, **options)
    count0, bytes0 = _live_tensors()
    tracemalloc.start()
    try:
        for _ in range(20):
            method(bn_cnn, images, **options)
            assert hook_count(bn_cnn.model) == 0
        python_growth = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    count1, bytes1 = _live_tensors()
    assert (count1, bytes1) == (count0, bytes0)
    assert python_growth < 50_000, python_growth  # bytes still held by Python after the 20 calls


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; the test is skipped elsewhere)."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_resident_memory_flat_over_a_thousand_calls(tiny_cnn, images):
    """1,000 calls of each cheap method on a tiny model: the process's resident memory grows by a few MB at most
    after warm-up (a leaked hook or activation per call would grow it by tens of MB)."""
    cheap = ["cam", "gradcam", "gradcampp", "layercam", "fakecam"]
    for name in cheap:  # warm-up
        for _ in range(20):
            run(name, tiny_cnn, images, [0, 1, 2])
    gc.collect()
    start = _rss_mb()
    for name in cheap:
        for _ in range(1000):
            run(name, tiny_cnn, images, [0, 1, 2])
        assert hook_count(tiny_cnn.model) == 0
    gc.collect()
    grown = _rss_mb() - start
    assert grown < 8, f"resident memory grew by {grown:.1f} MB over {1000 * len(cheap)} calls"


def test_memory_check_detects_a_leaking_hook(bn_cnn, images):
    """The check above is sensitive: a hook that keeps each activation (the authors' defect) is caught."""
    kept = []
    handle = bn_cnn.layer().register_forward_hook(lambda m, i, o: kept.append(o.detach()))
    try:
        gradcam(bn_cnn, images)
        count0, _ = _live_tensors()
        for _ in range(5):
            gradcam(bn_cnn, images)
        count1, _ = _live_tensors()
    finally:
        handle.remove()
    assert count1 >= count0 + 5


# ---------------------------------------------------------------------------------------------------------------
# the helpers


def test_eval_mode_restores_each_flag_even_on_error(bn_cnn):
    set_mixed_state(bn_cnn.model)
    flags = {n: m.training for n, m in bn_cnn.model.named_modules()}
    with eval_mode(bn_cnn.model):
        assert not any(m.training for m in bn_cnn.model.modules())
    assert {n: m.training for n, m in bn_cnn.model.named_modules()} == flags
    with pytest.raises(ValueError), eval_mode(bn_cnn.model):
        raise ValueError
    assert {n: m.training for n, m in bn_cnn.model.named_modules()} == flags


def test_frozen_restores_requires_grad_even_on_error_and_nests(bn_cnn):
    set_mixed_state(bn_cnn.model)
    flags = {n: p.requires_grad for n, p in bn_cnn.model.named_parameters()}
    with frozen(bn_cnn.model):
        with frozen(bn_cnn.model):
            assert not any(p.requires_grad for p in bn_cnn.model.parameters())
        assert not any(p.requires_grad for p in bn_cnn.model.parameters())
        assert not any(m.training for m in bn_cnn.model.modules())
    assert {n: p.requires_grad for n, p in bn_cnn.model.named_parameters()} == flags
    with pytest.raises(ValueError), frozen(bn_cnn.model):
        raise ValueError
    assert {n: p.requires_grad for n, p in bn_cnn.model.named_parameters()} == flags


def test_capture_keeps_the_output_before_an_inplace_relu(bn_cnn, images):
    x = (images - bn_cnn.model.mean) / bn_cnn.model.std
    with torch.no_grad():
        expected = bn_cnn.net.body[:5](x)
        with capture(bn_cnn) as cap:
            logits = bn_cnn.model(images)
            # the layer's output, and the images' size at the model's input
            assert hook_count(bn_cnn.model) == 2
        assert hook_count(bn_cnn.model) == 0
        assert torch.allclose(logits, bn_cnn.net(x))  # the rest of the network is unchanged
    assert (cap.activations < 0).any()  # not overwritten by the in-place ReLU that follows
    assert torch.allclose(cap.activations, expected)
    assert cap.calls == 1


def test_capture_keeps_only_the_last_pass(tiny_cnn):
    with torch.no_grad(), capture(tiny_cnn) as cap:
        for i in range(3):
            tiny_cnn.model(make_images(1, seed=i))
    assert cap.calls == 3
    assert cap.activations.shape == (1, 6, 16, 16)
    with torch.no_grad():
        assert torch.allclose(cap.activations, tiny_cnn.net.features(make_images(1, seed=2)))


def test_capture_reports_a_layer_not_reached(tiny_cnn):
    with capture(tiny_cnn) as cap, pytest.raises(InputError, match="not reached"):
        cap.activations  # noqa: B018


def test_capture_tokens_reshape_and_keep_the_graph(tiny_vit, images):
    x = images.clone().requires_grad_(True)
    with capture(tiny_vit) as cap:
        y = tiny_vit.model(x)
    assert cap.activations.shape == (3, 12, 4, 4)
    assert torch.equal(cap.activations[:, :, 1, 2], cap.raw[:, 1 + 1 * 4 + 2, :])  # row-major patches
    (g,) = torch.autograd.grad(y[:, 0].sum(), cap.activations)
    assert g.shape == (3, 12, 4, 4) and g.abs().sum() > 0
    with torch.no_grad():
        assert torch.allclose(y, tiny_vit.net((images - 0.5) / 0.5))


def test_replace_output_cnn_and_tokens(tiny_cnn, tiny_vit, images):
    with torch.no_grad():
        grid = torch.zeros(3, 6, 16, 16)
        with replace_output(tiny_cnn, None, grid):
            y = tiny_cnn.model(images)
        assert torch.allclose(y, tiny_cnn.net.fc.bias.expand(3, -1))  # GAP of zeros -> the bias
        assert hook_count(tiny_cnn.model) == 0
        with capture(tiny_vit) as cap:
            y0 = tiny_vit.model(images)
        with replace_output(tiny_vit, None, cap.activations.clone()):
            y1 = tiny_vit.model(images)  # same tokens back: same logits, class token kept
        assert torch.allclose(y0, y1, atol=1e-6)
        assert hook_count(tiny_vit.model) == 0


# ---------------------------------------------------------------------------------------------------------------
# evaluate's warm-up pass


def test_evaluate_warm_up_runs_one_untimed_pass_and_restores_state(bn_cnn, images):
    """The warm-up is one extra forward pass before the clock starts; the model comes back as it was."""
    from opticam_lib.metrics.evaluation import evaluate

    set_mixed_state(bn_cnn.model)
    before = snapshot(bn_cnn.model)
    calls = []
    handle = bn_cnn.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        evaluate(bn_cnn, "gradcam", images, warmup=False)
        cold = len(calls)
        calls.clear()
        with_warmup = evaluate(bn_cnn, "gradcam", images, warmup=True)
    finally:
        handle.remove()
    assert len(calls) == cold + 1
    assert_same_state(before, snapshot(bn_cnn.model))
    assert with_warmup.T >= 0
