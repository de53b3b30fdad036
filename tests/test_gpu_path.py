"""The GPU path's options (issue 13), checked on the CPU against the default path and by hand.

- ``fast_copy`` (batch norm folded into convolutions, channels-last) on a deep copy: the same logits, feature maps
  and Opti-CAM maps as the original model, whose modules, parameters, flags and hooks are left exactly as they were;
- ``graph=True``: on the CPU the capture is impossible, so the static, masked step runs eagerly; it says so once
  and gives the default path's maps, history and per-image iterations, also when images stop at different
  iterations (the default path drops them from the batch, the static path masks them).
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from conftest import SIZE, make_images
from torch import nn

from opticam_lib import InputError, optimize, wrap_classifier
from opticam_lib.errors import OptiCAMError
from opticam_lib.methods.feature_pass import features
from opticam_lib.models.fast import fast_copy

FAST = {"progress": False}
# the module, not the function ``opticam`` that ``opticam_lib.methods`` re-exports under the same name
opticam_module = importlib.import_module("opticam_lib.methods.opti_cam")


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["types"] == before["types"] and after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"] and after["hooks"] == before["hooks"]
    assert all(g is None for g in after["grads"])
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


def bn_by_hand(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """BN(conv(x)) in eval mode, written out: gamma * (conv(x) - mu) / sqrt(var + eps) + beta."""
    y = conv(x)
    shape = (1, -1, 1, 1)
    return (y - bn.running_mean.view(shape)) / torch.sqrt(
        bn.running_var.view(shape) + bn.eps
    ) * bn.weight.view(shape) + bn.bias.view(shape)


# ---- fast_copy ---------------------------------------------------------------------------------------------------


def test_fold_finds_both_pairs_and_matches_the_formula(bn_cnn, images):
    bn_cnn.model.train()  # the user's flags: the copy is in eval mode, the original stays in train mode
    before = snapshot(bn_cnn.model)
    fast, info = fast_copy(bn_cnn)
    assert info.folded == [("body.0", "body.1"), ("body.3", "body.4")]
    assert_untouched(bn_cnn.model, before)
    assert fast.model is not bn_cnn.model and not fast.model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert all(not p.requires_grad for p in fast.model.parameters())
    body = bn_cnn.net.body
    with torch.no_grad():
        want = bn_by_hand(body[0], body[1].eval(), images)
        got = fast.net.body[0](images)
    bn_cnn.model.train()
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("fold, channels_last", [(True, False), (False, True), (True, True)])
def test_folded_and_channels_last_maps_equal_the_default(bn_cnn, images, fold, channels_last, monkeypatch):
    import importlib

    opticam_module = importlib.import_module("opticam_lib.methods.opti_cam")  # the module, not the function

    before = snapshot(bn_cnn.model)
    ref = optimize(bn_cnn, images, iterations=6, tol=None, **FAST)
    asked, real = [], opticam_module.fast_copy

    def spy(classifier, **kw):  # the options must reach the copy (not be dropped on the way)
        asked.append((kw["fold_batchnorm"], kw["channels_last"]))
        return real(classifier, **kw)

    monkeypatch.setattr(opticam_module, "fast_copy", spy)
    got = optimize(
        bn_cnn, images, iterations=6, tol=None, fold_batchnorm=fold, channels_last=channels_last, **FAST
    )
    assert asked == [(fold, channels_last)]
    assert_untouched(bn_cnn.model, before)
    assert torch.equal(got.targets, ref.targets)
    assert torch.allclose(got.history, ref.history, atol=1e-5)
    assert torch.allclose(got.maps, ref.maps, atol=1e-4)


def test_fold_leaves_a_target_convolution_and_an_in_place_change_alone(images):
    class Tricky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.bn_a = nn.BatchNorm2d(4)
            self.b = nn.Conv2d(4, 4, 3, padding=1)  # modified in place before its batch norm: not affine
            self.bn_b = nn.BatchNorm2d(4)
            self.c = nn.Conv2d(4, 4, 3, padding=1)  # its output also feeds the head directly: shared
            self.bn_c = nn.BatchNorm2d(4)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn_a(self.a(x))
            z = self.b(y)
            z.mul_(2.0)
            z = torch.relu(self.bn_b(z))
            w = self.c(z)
            return self.fc(torch.cat([self.bn_c(w).mean((2, 3)), w.mean((2, 3))], dim=1))

    torch.manual_seed(0)
    net = Tricky()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    clf = wrap_classifier(net, "a", num_classes=3, input_size=SIZE, mean=None, std=None)
    fast, info = fast_copy(clf)  # "a" is the target layer: its feature maps must stay the original's
    assert info.folded == []
    # with another target layer, "a" folds; "b" (changed in place) and "c" (shared) still do not
    fast, info = fast_copy(clf, layer="bn_b")
    assert info.folded == [("a", "bn_a")]
    with torch.no_grad():
        assert torch.allclose(fast.model(images), clf.model.eval()(images), atol=1e-5)


def _conv_bn_net(bn: nn.Module, twice: bool = False) -> nn.Module:
    """conv -> bn -> ReLU -> conv (the target) -> pooling -> linear; with ``twice``, the same bn also runs on the
    pooled maps of the first convolution's block (one module, two calls)."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn, self.b, self.fc = (
                nn.Conv2d(3, 4, 3, padding=1),
                bn,
                nn.Conv2d(4, 4, 3),
                nn.Linear(4, 3),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.a(x)))
            if twice:
                y = torch.relu(self.bn(nn.functional.avg_pool2d(y, 2)))
            return self.fc(self.b(y).mean((2, 3)))

    torch.manual_seed(0)
    net = Net()
    if getattr(net.bn, "running_mean", None) is not None:
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
    return net


@pytest.mark.parametrize(
    "case",
    ["no running statistics", "called twice", "a hook on the conv", "a hook on the bn"],
)
def test_fold_leaves_pairs_it_cannot_fold_exactly_alone(images, case):
    """A batch norm without running statistics (batch statistics even in eval mode), one that runs twice, and a
    pair that carries the caller's hooks are not folded: the copy runs, with the original's maps and hooks."""
    bn = nn.BatchNorm2d(4, track_running_stats=case != "no running statistics")
    net = _conv_bn_net(bn, twice=case == "called twice")
    seen = []
    if case.startswith("a hook"):
        module = net.a if case.endswith("conv") else net.bn
        module.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    clf = wrap_classifier(net, "b", num_classes=3, input_size=SIZE, mean=None, std=None)
    before = snapshot(clf.model)
    fast, info = fast_copy(clf)
    assert info.folded == []
    assert_untouched(clf.model, before)
    with torch.no_grad():
        assert torch.allclose(fast.model(images), clf.model.eval()(images), atol=1e-5)
    seen.clear()
    ref = optimize(clf, images, 0, iterations=4, **FAST)
    plain = list(seen)
    seen.clear()
    got = optimize(clf, images, 0, iterations=4, fold_batchnorm=True, **FAST)
    assert torch.allclose(got.maps, ref.maps, atol=1e-5)
    if case.startswith("a hook"):  # in the copy the hook sees what it sees in the original, as often
        assert len(seen) > len(plain) > 0  # (plus fast_copy's check on its random input)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(plain, seen[-len(plain) :], strict=True))


def test_a_layer_inside_a_folded_batchnorm_act_keeps_its_name(images):
    from timm.layers import BatchNormAct2d

    bn = BatchNormAct2d(4, act_layer=nn.ReLU6)
    net = _conv_bn_net(bn)
    clf = wrap_classifier(net, "bn.act", num_classes=3, input_size=SIZE, mean=None, std=None)
    fast, info = fast_copy(clf)
    assert info.folded == [("a", "bn")] and "bn.act" in dict(fast.net.named_modules())
    ref = optimize(clf, images, 0, iterations=4, **FAST)
    got = optimize(clf, images, 0, iterations=4, fold_batchnorm=True, **FAST)
    assert torch.allclose(got.maps, ref.maps, atol=1e-4)


def test_the_copy_is_checked_with_tf32_off_and_the_settings_restored(bn_cnn, monkeypatch):
    import opticam_lib.models.fast as fast_module

    seen = []
    real = fast_module.capture

    def spy(*args, **kwargs):  # the check runs under capture: record the TF32 settings there
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_module, "capture", spy)
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        fast_copy(bn_cnn)
        assert seen == [(False, False), (False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fold_refuses_a_copy_that_computes_something_else(bn_cnn, monkeypatch):
    import opticam_lib.models.fast as fast_module

    def wrong(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
        bad = copy.deepcopy(conv)
        bad.weight.data.mul_(3.0)
        return bad

    monkeypatch.setattr(fast_module, "fuse_conv_bn_eval", wrong)
    before = snapshot(bn_cnn.model)
    with pytest.raises(OptiCAMError, match="differs from the original"):
        fast_copy(bn_cnn)
    assert_untouched(bn_cnn.model, before)


def test_fast_copy_refuses_bad_input(bn_cnn):
    with pytest.raises(InputError, match="Classifier"):
        fast_copy(bn_cnn.model)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown layer"):
        fast_copy(bn_cnn, layer="nope")


def test_fold_on_the_offline_model_with_timm_batchnorm_act(real_classifier, real_images):
    before = snapshot(real_classifier.model)
    fast, info = fast_copy(real_classifier, channels_last=True)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in real_classifier.model.modules())
    assert len(info.folded) == n_bn and ("conv_head", "bn2") in info.folded  # bn2 (the target) is BN + ReLU6
    assert_untouched(real_classifier.model, before)
    x = real_images[:2]
    want_acts, want_logits = features(real_classifier, x)
    got_acts, got_logits = features(fast, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got_logits, want_logits, atol=1e-3, rtol=1e-4)
    assert torch.allclose(got_acts, want_acts, atol=1e-4)
    assert float(want_acts.min()) >= 0  # ReLU6 kept after the folded bn2
    assert_untouched(real_classifier.model, before)


# ---- graph=True: the static, masked loop ----------------------------------------------------------------------------


@pytest.fixture
def fresh_messages(monkeypatch):
    monkeypatch.setattr(opticam_module, "_SAID", set())


def run_both(clf, x, **options):
    ref = optimize(clf, x, **options, **FAST)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        got = optimize(clf, x, graph=True, **options, **FAST)
    return ref, got, [str(w.message) for w in said if w.category is RuntimeWarning]


def assert_same(ref, got, atol: float = 1e-6) -> None:
    assert torch.equal(got.iterations, ref.iterations) and torch.equal(got.targets, ref.targets)
    assert torch.equal(got.history.isnan(), ref.history.isnan())
    assert torch.allclose(got.history, ref.history, atol=atol, equal_nan=True)
    assert torch.allclose(got.u, ref.u, atol=atol) and torch.allclose(got.maps, ref.maps, atol=10 * atol)


def test_graph_on_cpu_says_so_once_and_equals_the_default(tiny_cnn, images, fresh_messages):
    ref, got, said = run_both(tiny_cnn, images, iterations=5, tol=None)
    assert len(said) == 1 and "CUDA device" in said[0] and "'cpu'" in said[0]
    assert_same(ref, got)
    _, _, said_again = run_both(tiny_cnn, images, iterations=5, tol=None)
    assert said_again == []  # once per process


def test_graph_masks_images_that_stop_at_different_iterations(tiny_vit, fresh_messages):
    x = make_images(4)
    ref, got, _ = run_both(tiny_vit, x, iterations=10, tol=1e-2)
    # stops differ, all stopped
    assert len(set(ref.iterations.tolist())) > 1 and int(ref.iterations.max()) < 10
    assert_same(ref, got)


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "lr": 0.5, "schedule": "cosine"},
        {"objective": "iodiff", "selector": "logprob", "patience": 2, "tol": 1e-3},
        {"init": "random", "seed": 3, "normalization": "max", "activation": "relu"},
        {"amp": True, "amp_dtype": torch.bfloat16},
    ],
)
def test_graph_equals_the_default_for_other_options(tiny_model, images, options, fresh_messages):
    options = {"iterations": 6, "tol": None, **options}
    ref, got, _ = run_both(tiny_model, images, **options)
    assert_same(ref, got, atol=1e-2 if options.get("amp") else 1e-6)


def test_graph_with_rprop_runs_the_default_loop_and_says_so(tiny_cnn, images, fresh_messages):
    ref, got, said = run_both(tiny_cnn, images, iterations=5, tol=None, optimizer="rprop")
    assert any("iRprop+" in s for s in said)
    assert_same(ref, got, atol=0)


def test_graph_callback_sees_the_same_partial_results(tiny_vit, fresh_messages):
    x = make_images(4)
    seen: dict[bool, list] = {False: [], True: []}
    for graph in (False, True):
        optimize(
            tiny_vit, x, iterations=10, tol=1e-2, graph=graph, callback_every=1,
            callback=lambda step, r, g=graph: seen[g].append((step, r.iterations.tolist(), r.history.clone())),
            **FAST,
        )  # fmt: skip
    assert [s[:2] for s in seen[True]] == [s[:2] for s in seen[False]]
    for (_, _, h_ref), (_, _, h_got) in zip(seen[False], seen[True], strict=True):
        assert torch.allclose(h_got, h_ref, atol=1e-6, equal_nan=True)


def test_graph_names_a_nan_objective(images, fresh_messages):
    class TurnsNaN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            out = self.fc(self.features(x).mean(dim=(2, 3)))
            return out * float("nan") if self.calls > 1 else out

    clf = wrap_classifier(TurnsNaN(), "features", num_classes=3, input_size=32, mean=None, std=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputError, match=r"objective F or the weights u became NaN.*iteration 1"):
            optimize(clf, images, 0, iterations=3, graph=True, **FAST)


def test_gpu_options_are_checked(tiny_cnn, images):
    with pytest.raises(InputError, match="amp_dtype"):
        optimize(tiny_cnn, images, amp=True, amp_dtype=torch.float32, **FAST)
    with pytest.raises(InputError, match=r"amp_dtype=torch.bfloat16 applies under autocast: pass amp=True"):
        optimize(tiny_cnn, images, amp_dtype=torch.bfloat16, **FAST)  # was silently a float32 run
    for name in ("amp", "fold_batchnorm", "channels_last", "graph"):
        for bad in (1, None, "no"):
            with pytest.raises(InputError, match=f"{name} must be True or False"):
                optimize(tiny_cnn, images, **{name: bad}, **FAST)


def test_the_result_says_how_the_loop_ran(tiny_cnn, images, fresh_messages):
    assert optimize(tiny_cnn, images, iterations=2, **FAST).loop == "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert optimize(tiny_cnn, images, iterations=2, graph=True, **FAST).loop == "static"  # no CUDA here


def test_the_cached_interpolation_matrix_made_in_inference_mode_serves_a_backward_pass(tiny_cnn, images):
    from opticam_lib.methods.maps import interpolation_matrix, upsample

    interpolation_matrix.cache_clear()
    acts, _ = features(tiny_cnn, images)
    with torch.inference_mode():
        upsample(acts[:, :1], (SIZE, SIZE), "matrix")  # fills the cache
    got = optimize(tiny_cnn, images, iterations=2, upsampling="matrix", **FAST)
    assert got.maps.shape == (len(images), 1, SIZE, SIZE)


def test_the_model_is_restored_after_the_graph_loop_fails(bn_cnn, images, fresh_messages):
    bn_cnn.model.train()
    before = snapshot(bn_cnn.model)

    def boom(step: int, result: object) -> None:
        raise RuntimeError("stop here")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="stop here"):
            optimize(bn_cnn, images, iterations=3, graph=True, callback=boom, callback_every=1, **FAST)
    assert_untouched(bn_cnn.model, before)
    bn_cnn.model.eval()


def test_amp_turns_the_early_stop_off_and_says_so_once(tiny_cnn, images, fresh_messages):
    """In bfloat16, F repeats long before convergence: a change below tol would stop images after a few steps."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        # tol=1e3 would stop at 2
        got = optimize(tiny_cnn, images, 0, iterations=6, tol=1e3, amp=True, **FAST)
        optimize(tiny_cnn, images, 0, iterations=2, amp=True, **FAST)
    assert got.iterations.tolist() == [6, 6, 6]
    assert [str(w.message) for w in said].count(str(said[0].message)) == 1 and "early stop" in str(
        said[0].message
    )
    ref = optimize(tiny_cnn, images, 0, iterations=6, tol=None, amp=True, **FAST)
    assert torch.equal(got.maps, ref.maps)
    assert optimize(tiny_cnn, images, 0, iterations=6, tol=1e3, **FAST).iterations.tolist() == [
        2,
        2,
        2,
    ]  # float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_batch_norm_folds_on_a_half_precision_model(dtype):
    """The copy's check allows the dtype's own round-off: float16 folding alone moved world_cnn's logits by about
    0.01, over a tolerance sized for float32, so the option could never work there."""
    from opticam_lib import load_classifier, opticam

    clf = load_classifier("world_cnn")
    clf.model.to(dtype)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    maps = opticam(clf, x, iterations=1, progress=False, fold_batchnorm=True)
    assert maps.shape == (1, 1, 64, 64) and bool(torch.isfinite(maps).all())
