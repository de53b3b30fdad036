"""Opti-CAM (eq. 8-11) and its variants (eq. 16-19, A1, A2), checked against hand computations and against
``torch.optim.Adam``; the optimisation's bookkeeping (per-image early stop, history, callback); and the claim
that it raises the masked logit and beats Grad-CAM's on real photographs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from opticam_lib import InputError, gradcam, opticam, optimize
from opticam_lib.hooks import capture
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import compute_objective, masked_score, saliency_map, select

FAST = {"progress": False}


def hand_map(weights, acts, size, normalization="range", activation="identity"):
    """n(up(h(sum_k w_k A^k))) written out (eq. 8 with the weights given, then eq. 16/17/18)."""
    s = (weights[:, :, None, None] * acts).sum(1, keepdim=True)
    if activation == "relu":
        s = torch.relu(s)
    up = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    if normalization == "sigmoid":
        return 1 / (1 + torch.exp(-up))
    hi = up.amax(dim=(2, 3), keepdim=True)
    if normalization == "max":
        return up.clamp(min=0) / hi
    lo = up.amin(dim=(2, 3), keepdim=True)
    return (up - lo) / (hi - lo)


def logit(clf, x, targets):
    with torch.no_grad():
        return clf.model(x).gather(1, targets[:, None])[:, 0]


# ---------------------------------------------------------------------------------------------------------------
# eq. 8 and the objective at iteration 0


def test_saliency_map_eq8_by_hand(tiny_cnn, images):
    acts, _ = features(tiny_cnn, images)
    u = torch.randn(3, acts.shape[1], generator=torch.Generator().manual_seed(1))
    w = torch.exp(u) / torch.exp(u).sum(1, keepdim=True)  # softmax by hand
    for normalization in ("range", "max", "sigmoid"):
        got = saliency_map(u, acts, (32, 32), normalization)
        assert torch.allclose(got, hand_map(w, acts, (32, 32), normalization), atol=1e-6)


@pytest.mark.parametrize("normalization", ["range", "max", "sigmoid"])
@pytest.mark.parametrize("activation", ["identity", "relu"])
def test_objective_at_iteration0_is_masked_logit_of_uniform_map(
    tiny_model, images, normalization, activation
):
    """Constant init u = 0.5: softmax(u) = 1/K, so F at iteration 0 is y_c(x ⊙ n(up(h(mean_k A^k))))."""
    targets = torch.tensor([0, 1, 2])
    result = optimize(
        tiny_model, images, targets, iterations=1, normalization=normalization, activation=activation, **FAST
    )
    acts, _ = features(tiny_model, images)
    k = acts.shape[1]
    mask = hand_map(torch.full((3, k), 1 / k), acts, (32, 32), normalization, activation)
    expected = logit(tiny_model, images * mask, targets)
    assert torch.allclose(result.history[:, 0], expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the optimiser: same u as torch.optim.Adam, batch = each image alone


def adam_reference(clf, image, target, iterations, lr):
    """Maximise F (eq. 10) for one image with torch.optim.Adam on -F; gradients only for u."""
    acts, _ = features(clf, image)
    k = acts.shape[1]
    u = torch.full((1, k), 0.5, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    history = []
    for _ in range(iterations):
        w = torch.softmax(u, dim=1)
        s = (w[:, :, None, None] * acts).sum(1, keepdim=True)
        up = F.interpolate(s, size=image.shape[-2:], mode="bilinear", align_corners=False)
        mask = (up - up.min()) / (up.max() - up.min())
        f = clf.model(image * mask)[0, target]
        (u.grad,) = torch.autograd.grad(-f, u)  # no .grad in the model's parameters
        opt.step()
        history.append(float(f.detach()))
    return u.detach(), torch.tensor(history)


@pytest.mark.parametrize("model", ["bn_cnn", "tiny_vit"])
def test_optimize_matches_torch_adam_on_one_image(model, request, images):
    clf = request.getfixturevalue(model)
    target = 3
    ours = optimize(clf, images[:1], target, iterations=15, lr=0.1, tol=None, **FAST)
    u_ref, history_ref = adam_reference(clf, images[:1], target, 15, 0.1)
    assert torch.allclose(ours.history[0], history_ref, atol=1e-5)
    assert torch.allclose(ours.u, u_ref, atol=1e-4)
    assert torch.allclose(ours.weights, torch.softmax(u_ref, dim=1), atol=1e-5)


def test_optimize_batch_equals_each_image_alone(tiny_model, images):
    """One u per image; Adam is element-wise; so a batch is optimised as each image alone.

    Compared on the maps and the objective: where a channel's true gradient is zero (a dead channel, whose
    weight only rescales a range-normalised map), float noise of order 1e-10 is what Adam normalises, and u
    may differ there without changing the map."""
    targets = torch.tensor([4, 0, 2])
    batch = optimize(tiny_model, images, targets, iterations=12, tol=None, **FAST)
    for i in range(3):
        alone = optimize(tiny_model, images[i : i + 1], targets[i : i + 1], iterations=12, tol=None, **FAST)
        assert torch.allclose(alone.history[0], batch.history[i], atol=1e-5)
        assert torch.allclose(alone.maps[0], batch.maps[i], atol=1e-4)
    # pre-BatchNorm features have no dead channel: u itself agrees there
    if tiny_model.name == "bn_cnn":
        alone = torch.cat(
            [
                optimize(tiny_model, images[i : i + 1], targets[i], iterations=12, tol=None, **FAST).u
                for i in range(3)
            ]
        )
        assert torch.allclose(alone, batch.u, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# early stop, history, callback


def test_per_image_early_stop(tiny_cnn, images):
    """A black image gives x ⊙ s = 0 for every s: its objective is flat, it stops after 2 iterations (the first
    change is 0 < tol) and its history is NaN afterwards. The others run every iteration and are unaffected."""
    x = images.clone()
    x[1] = 0
    targets = torch.tensor([1, 2, 3])
    r = optimize(tiny_cnn, x, targets, iterations=10, tol=1e-10, **FAST)
    assert r.history.shape == (3, 10)
    assert r.iterations.tolist() == [10, 2, 10]
    assert torch.isfinite(r.history[1, :2]).all() and torch.isnan(r.history[1, 2:]).all()
    assert r.history[1, 0] == r.history[1, 1]
    assert torch.isclose(
        r.history[1, 0], logit(tiny_cnn, torch.zeros_like(x[1:2]), targets[1:2])[0], atol=1e-6
    )
    assert torch.isfinite(r.history[[0, 2]]).all()
    others = optimize(tiny_cnn, images[[0, 2]], targets[[0, 2]], iterations=10, tol=1e-10, **FAST)
    assert torch.allclose(others.history, r.history[[0, 2]], atol=1e-6)
    assert torch.allclose(others.maps, r.maps[[0, 2]], atol=1e-5)


def test_all_images_stop_ends_the_loop(tiny_cnn):
    r = optimize(tiny_cnn, torch.zeros(2, 3, 32, 32), 0, iterations=50, **FAST)
    assert r.iterations.tolist() == [2, 2]
    assert torch.isnan(r.history[:, 2:]).all()


def test_tol_none_runs_every_iteration(tiny_cnn):
    r = optimize(tiny_cnn, torch.zeros(2, 3, 32, 32), 0, iterations=6, tol=None, **FAST)
    assert r.iterations.tolist() == [6, 6]
    assert torch.isfinite(r.history).all()


def test_result_fields(tiny_vit, images):
    r = optimize(tiny_vit, images, [1, 2, 3], iterations=5, tol=None, **FAST)
    k = 12
    assert r.maps.shape == (3, 1, 32, 32)
    assert r.u.shape == r.weights.shape == (3, k)
    assert r.history.shape == (3, 5)
    assert r.iterations.tolist() == [5, 5, 5]
    assert r.targets.tolist() == [1, 2, 3]
    assert (r.weights >= 0).all() and torch.allclose(r.weights.sum(1), torch.ones(3))
    assert r.seconds > 0
    acts, _ = features(tiny_vit, images)
    assert torch.allclose(r.maps, saliency_map(r.u, acts, (32, 32)), atol=1e-6)  # eq. 11: the map of u*
    assert torch.equal(opticam(tiny_vit, images, [1, 2, 3], iterations=5, tol=None, **FAST), r.maps)


def test_callback_every_k_iterations_with_partial_maps(bn_cnn, images):
    calls = []
    r = optimize(
        bn_cnn, images, 0, iterations=7, tol=None, callback=lambda s, p: calls.append((s, p)),
        callback_every=3, **FAST,
    )  # fmt: skip
    assert [s for s, _ in calls] == [3, 6, 7]  # every 3 iterations, and at the end
    for step, partial in calls:
        assert partial.maps.shape == (3, 1, 32, 32)
        assert (
            torch.isfinite(partial.history[:, :step]).all() and torch.isnan(partial.history[:, step:]).all()
        )
        assert partial.iterations.tolist() == [step] * 3
        # the partial maps are those of the current u: the maps of a run stopped at that step
        stopped = optimize(bn_cnn, images, 0, iterations=step, tol=None, **FAST)
        assert torch.allclose(partial.maps, stopped.maps, atol=1e-6)
    assert torch.equal(calls[-1][1].maps, r.maps)
    assert not torch.allclose(calls[0][1].maps, calls[1][1].maps)  # the maps evolve


def test_callback_not_repeated_at_the_end(tiny_cnn, images):
    steps = []
    optimize(
        tiny_cnn,
        images,
        0,
        iterations=10,
        tol=None,
        callback=lambda s, p: steps.append(s),
        callback_every=5,
        **FAST,
    )
    assert steps == [5, 10]


def test_callback_at_early_stop(tiny_cnn):
    steps = []
    optimize(
        tiny_cnn,
        torch.zeros(1, 3, 32, 32),
        0,
        iterations=10,
        callback=lambda s, p: steps.append(s),
        callback_every=4,
        **FAST,
    )
    assert steps == [2]


# ---------------------------------------------------------------------------------------------------------------
# objectives (eq. 10, 19, A1, A2) and selectors


def test_select_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 2.0]])
    t = torch.tensor([1, 0])
    assert torch.allclose(select(logits, t, "logit"), torch.tensor([math.log(3.0), 2.0]))
    assert torch.allclose(select(logits, t, "prob"), torch.tensor([0.75, 0.5]))  # 3 / (1 + 3), 1 / 2
    assert torch.allclose(select(logits, t, "logprob"), torch.tensor([math.log(0.75), math.log(0.5)]))
    with pytest.raises(InputError, match="selector"):
        select(logits, t, "margin")


def test_objectives_equal_their_formulas(bn_cnn, images):
    targets = torch.tensor([0, 3, 1])
    s = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    g_x = logit(bn_cnn, images, targets)
    g_in = logit(bn_cnn, images * s, targets)
    g_out = logit(bn_cnn, images * (1 - s), targets)
    expected = {
        "mask": g_in,  # eq. 10
        "diff": -(g_x - g_in).abs(),  # eq. 19
        "iomask": g_in - g_out,  # eq. A1
        "iodiff": -(g_x - g_in).abs() + (g_x - g_out).abs(),  # eq. A2
    }
    with torch.no_grad():
        for kind, value in expected.items():
            got = compute_objective(bn_cnn, images, s, targets, kind, "logit", original=g_x)
            assert torch.allclose(got, value, atol=1e-5), kind
    with pytest.raises(InputError, match="original"):
        compute_objective(bn_cnn, images, s, targets, "diff")


@pytest.mark.parametrize("objective", ["mask", "diff", "iomask", "iodiff"])
@pytest.mark.parametrize("selector", ["logit", "prob", "logprob"])
def test_optimize_objective_and_selector_at_iteration0(bn_cnn, images, objective, selector):
    """history[:, 0] is F of the uniform-weight map, for each objective and selector, computed by hand."""
    targets = torch.tensor([2, 2, 4])
    r = optimize(bn_cnn, images, targets, iterations=1, objective=objective, selector=selector, **FAST)
    acts, _ = features(bn_cnn, images)
    s = hand_map(torch.full((3, acts.shape[1]), 1 / acts.shape[1]), acts, (32, 32))

    def g(x):
        with torch.no_grad():
            y = bn_cnn.model(x)
        if selector == "prob":
            y = torch.exp(y) / torch.exp(y).sum(1, keepdim=True)
        elif selector == "logprob":
            y = y - torch.logsumexp(y, dim=1, keepdim=True)
        return y.gather(1, targets[:, None])[:, 0]

    g_x, g_in, g_out = g(images), g(images * s), g(images * (1 - s))
    expected = {
        "mask": g_in,
        "diff": -(g_x - g_in).abs(),
        "iomask": g_in - g_out,
        "iodiff": -(g_x - g_in).abs() + (g_x - g_out).abs(),
    }[objective]
    assert torch.allclose(r.history[:, 0], expected, atol=1e-5)


def test_masked_score_eq5_and_scorecam_difference(tiny_cnn, images):
    """Eq. (5)-(6): F(e_k) - F(0) = y_c(x ⊙ n(up(A^k))) - y_c(0), Score-CAM's u_k with the black baseline."""
    targets = torch.tensor([1, 1, 1])
    acts, _ = features(tiny_cnn, images)
    k = int(acts.mean(dim=(0, 2, 3)).argmax())  # a live channel (some of the tiny CNN's are dead)
    e_k = torch.zeros(3, acts.shape[1])
    e_k[:, k] = 1
    diff = masked_score(tiny_cnn, images, e_k, acts, targets) - masked_score(
        tiny_cnn, images, torch.zeros_like(e_k), acts, targets
    )
    mask = hand_map(e_k, acts, (32, 32))
    expected = logit(tiny_cnn, images * mask, targets) - logit(tiny_cnn, torch.zeros_like(images), targets)
    assert torch.allclose(diff, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# init


def test_random_init_does_not_depend_on_the_batch(tiny_cnn, images):
    """init="random": an image starts where it would alone, whatever its batch mates and position."""
    targets = torch.tensor([4, 0, 2])
    opts = dict(iterations=5, tol=None, init="random", seed=3, **FAST)
    batch = optimize(tiny_cnn, images, targets, **opts)
    flipped = optimize(tiny_cnn, images.flip(0), targets.flip(0), **opts)
    for i in range(3):
        alone = optimize(tiny_cnn, images[i : i + 1], targets[i : i + 1], **opts)
        assert torch.allclose(alone.history[0], batch.history[i], atol=1e-5)
        assert torch.allclose(alone.maps[0], batch.maps[i], atol=1e-4)
        assert torch.allclose(flipped.maps[2 - i], batch.maps[i], atol=1e-4)


def test_init_options(tiny_cnn, images):
    k = 6
    constant = optimize(tiny_cnn, images, 0, iterations=3, tol=None, **FAST)
    assert torch.allclose(
        optimize(tiny_cnn, images, 0, iterations=3, tol=None, init=torch.full((k,), 0.5), **FAST).u,
        constant.u,
    )
    a = optimize(tiny_cnn, images, 0, iterations=3, tol=None, init="random", seed=1, **FAST)
    b = optimize(tiny_cnn, images, 0, iterations=3, tol=None, init="random", seed=1, **FAST)
    c = optimize(tiny_cnn, images, 0, iterations=3, tol=None, init="random", seed=2, **FAST)
    assert torch.equal(a.u, b.u) and torch.equal(a.maps, b.maps)
    assert not torch.allclose(a.u, c.u)
    init = torch.randn(3, k)
    r = optimize(tiny_cnn, images, 0, iterations=1, init=init, **FAST)
    expected = logit(
        tiny_cnn,
        images * hand_map(torch.softmax(init, 1), features(tiny_cnn, images)[0], (32, 32)),
        torch.zeros(3, dtype=torch.long),
    )
    assert torch.allclose(r.history[:, 0], expected, atol=1e-5)


def test_amp_runs_on_cpu(tiny_cnn, images):
    maps = opticam(tiny_cnn, images, 0, iterations=3, amp=True, **FAST)
    assert maps.shape == (3, 1, 32, 32) and torch.isfinite(maps).all()
    assert 0 <= float(maps.min()) and float(maps.max()) <= 1


# ---------------------------------------------------------------------------------------------------------------
# bad options

BAD_OPTIONS = {
    "objective": ({"objective": "maximum"}, "unknown objective 'maximum'.*mask"),
    "normalization": ({"normalization": "softmax"}, "unknown normalization 'softmax'.*range"),
    "selector": ({"selector": "margin"}, "unknown selector 'margin'.*logit"),
    "init": ({"init": "zeros"}, "unknown init 'zeros'.*constant"),
    "init shape": ({"init": torch.zeros(5)}, "init tensor must have shape"),
    "activation": ({"activation": "tanh"}, "unknown activation 'tanh'"),
    "iterations 0": ({"iterations": 0}, "iterations must be a positive integer"),
    "iterations negative": ({"iterations": -5}, "iterations must be a positive integer"),
    "iterations float": ({"iterations": 2.5}, "iterations must be a positive integer"),
    "iterations bool": ({"iterations": True}, "iterations must be a positive integer"),
    "lr 0": ({"lr": 0}, "lr must be a positive number"),
    "lr negative": ({"lr": -0.1}, "lr must be a positive number"),
    "lr nan": ({"lr": float("nan")}, "lr must be a positive number"),
    "lr string": ({"lr": "0.1"}, "lr must be a positive number"),
    "lr bool": ({"lr": True}, "lr must be a positive number"),
    "callback_every": ({"callback_every": 0}, "callback_every must be a positive integer"),
}


@pytest.mark.parametrize("bad", list(BAD_OPTIONS))
def test_bad_options_are_refused(bad, tiny_cnn, images):
    """Refused before any forward pass (the layer's hook would count one), except an init tensor's shape,
    which needs the number of channels K."""
    options, message = BAD_OPTIONS[bad]
    with capture(tiny_cnn) as cap, pytest.raises(InputError, match=message):
        optimize(tiny_cnn, images, 0, **options, **FAST)
    assert cap.calls == (1 if bad == "init shape" else 0)


# ---------------------------------------------------------------------------------------------------------------
# the method does what it claims: the masked logit rises, and beats Grad-CAM's on real photographs


def test_objective_rises_on_tiny_models(tiny_model, images):
    r = optimize(tiny_model, images, None, iterations=15, tol=None, **FAST)
    assert (r.history[:, -1] > r.history[:, 0]).all(), r.history


@pytest.mark.slow
def test_opticam_raises_the_logit_and_beats_gradcam_on_real_photos(
    real_classifier, real_images, real_predictions
):
    """20 iterations (the paper uses 100) on the four photographs, class = prediction.

    Measured when this test was written (efficientnet_lite0, class = prediction): the objective goes from
    9.9 / 10.8 / 6.5 / 5.8 at iteration 0 to 12.2 / 12.4 / 9.1 / 9.8 after 20 Adam steps; after 25 steps the
    masked logits are 12.5 / 12.5 / 9.8 / 10.0 for Opti-CAM against 10.1 / 10.9 / 6.5 / 7.4 for Grad-CAM
    (unmasked 10.5 / 10.5 / 7.3 / 8.2)."""
    targets = real_predictions.argmax(1)
    r = optimize(real_classifier, real_images, targets, iterations=20, **FAST)
    assert (r.history[:, -1] > r.history[:, 0]).all(), r.history
    opti = logit(real_classifier, real_images * r.maps, targets)
    grad = logit(real_classifier, real_images * gradcam(real_classifier, real_images, targets), targets)
    assert (opti > grad).all(), (opti, grad)
    # the final map is at least as good as the last one evaluated (Adam's last step did not undo the progress)
    assert (opti >= r.history[:, -1] - 0.05).all(), (opti, r.history[:, -1])


# ---------------------------------------------------------------------------------------------------------------
# optimizer="rprop": iRprop+, beyond the paper (benchmarks/bench_time_to_quality.py measures its speed)


def hand_rprop(clf, x, target, iterations, step0=0.5):
    """iRprop+ written out for one image, from Igel & Huesken (2000): ascent on F(u), u0 = 0.5."""
    acts, _ = features(clf, x)
    u = torch.full(acts.shape[:2], 0.5)
    step, prev_g, last, prev_f = torch.full_like(u, step0), torch.zeros_like(u), torch.zeros_like(u), None
    t = torch.tensor([target])
    for _ in range(iterations):
        w = u.clone().requires_grad_(True)
        f = compute_objective(clf, x, saliency_map(w, acts, tuple(x.shape[-2:])), t)
        (g,) = torch.autograd.grad(f.sum(), w)
        g = torch.where(g.abs() > 1e-5 * g.abs().max(), g, torch.zeros_like(g))  # float noise has no sign
        f = f.detach()
        new_step, new_u, new_last, new_prev = step.clone(), u.clone(), torch.zeros_like(u), g.clone()
        for j in range(u.shape[1]):
            s = float(g[0, j] * prev_g[0, j])
            if s > 0:
                new_step[0, j] = min(step[0, j] * 1.2, 1.0)
            elif s < 0:
                new_step[0, j] = max(step[0, j] * 0.5, 1e-3)
            if s < 0:  # sign flipped: undo the last move only if F fell, and forget the gradient
                if prev_f is not None and float(f) < prev_f:
                    new_last[0, j] = -last[0, j]
                new_prev[0, j] = 0.0
            else:
                new_last[0, j] = new_step[0, j] * torch.sign(g[0, j])
            new_u[0, j] = u[0, j] + new_last[0, j]
        u, step, last, prev_g, prev_f = new_u, new_step, new_last, new_prev, float(f)
    return u


def test_rprop_matches_the_algorithm_written_out(tiny_cnn, images):
    got = optimize(tiny_cnn, images[:1], 2, iterations=8, optimizer="rprop", tol=None, **FAST)
    want = hand_rprop(tiny_cnn, images[:1], 2, 8)
    assert torch.allclose(got.u, want, atol=1e-5)


def test_rprop_batch_equals_each_image_alone(tiny_model, images):
    both = optimize(tiny_model, images, [0, 1, 2], iterations=6, optimizer="rprop", tol=None, **FAST)
    for i in range(images.shape[0]):
        alone = optimize(tiny_model, images[i : i + 1], i, iterations=6, optimizer="rprop", tol=None, **FAST)
        assert torch.allclose(both.u[i], alone.u[0], atol=1e-5)


def final_objective(clf, x, targets, r):
    acts, _ = features(clf, x)
    with torch.no_grad():
        return compute_objective(clf, x, saliency_map(r.u, acts, tuple(x.shape[-2:])), r.targets)


@pytest.mark.parametrize("model", ["tiny_cnn", "bn_cnn"])
def test_rprop_reaches_the_long_runs_objective_in_fewer_iterations(model, request, images):
    """The claim behind the option: iRprop+ gets to the objective of 100 Adam iterations (the paper's recipe)
    in far fewer iterations, image by image."""
    clf = request.getfixturevalue(model)
    y = torch.tensor([0, 1, 2])
    long = final_objective(clf, images, y, optimize(clf, images, y, iterations=100, tol=None, **FAST))
    fast = final_objective(
        clf, images, y, optimize(clf, images, y, iterations=40, optimizer="rprop", tol=None, **FAST)
    )
    short = final_objective(clf, images, y, optimize(clf, images, y, iterations=40, tol=None, **FAST))
    assert (fast >= long - 1e-3 * long.abs().clamp(min=1)).all(), (fast, long)
    assert (fast > short).any(), (fast, short)  # not trivial: Adam at the same budget is behind


def test_rprop_options_are_checked(tiny_cnn, images):
    with pytest.raises(InputError, match=r"unknown optimizer 'lbfgs'.*rprop"):
        optimize(tiny_cnn, images, 0, optimizer="lbfgs", **FAST)
    with pytest.raises(InputError, match="schedule must be 'constant'"):
        optimize(tiny_cnn, images, 0, optimizer="rprop", schedule="cosine", **FAST)


def test_a_nan_objective_is_named(images):
    from opticam_lib import wrap_classifier

    class TurnsNaN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.fc(self.features(x).mean(dim=(2, 3)))
            return out * float("nan") if self.calls > 1 else out  # fine for the feature pass only

    clf = wrap_classifier(TurnsNaN(), "features", num_classes=3, input_size=32, mean=None, std=None)
    with pytest.raises(InputError, match=r"objective F became NaN.*iteration 1.*optimizer='adam'"):
        optimize(clf, images, 0, iterations=3, **FAST)
