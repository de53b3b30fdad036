"""The exercises that rebuild a method end to end: Grad-CAM from a hook (notebook 01), the Opti-CAM loop (03, the
capstone), the cost prediction (04) and iRprop+'s step (11). Each checker accepts right answers written in
different styles, reminds on an unsolved one, and names the typical wrong answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from opticam_lib.course.exercises import (
    check_cost_prediction,
    check_gradcam,
    check_opticam_loop,
    check_rprop_step,
)
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import saliency_map


def todo(*_args, **_kwargs):
    raise NotImplementedError


# --- notebook 01: Grad-CAM from a hook -------------------------------------------------------------------------


def gradcam_by_hand(
    classifier,
    images,
    targets,
    layer,
    *,
    relu=True,
    prob=False,
    keep_hook=False,
    backward=False,
    hires=False,
    upsample=True,
    nearest=False,
):
    """Grad-CAM with a plain forward hook, and switches for the typical mistakes."""
    kept = {}
    handle = classifier.layer(layer).register_forward_hook(lambda _m, _i, out: kept.update(A=out))
    try:
        logits = classifier.model(images)
        scores = torch.softmax(logits, 1) if prob else logits
        score = scores.gather(1, targets[:, None]).sum()
        A = kept["A"]
        if backward:
            A.retain_grad()
            score.backward()
            G = A.grad
        else:
            (G,) = torch.autograd.grad(score, A)
    finally:
        if not keep_hook:
            handle.remove()
    A = A.detach()
    if hires:
        S = (G * A).sum(dim=1, keepdim=True)
    else:
        S = (G.mean(dim=(2, 3))[:, :, None, None] * A).sum(dim=1, keepdim=True)
    if relu:
        S = torch.relu(S)
    if upsample:
        mode = {"mode": "nearest"} if nearest else {"mode": "bilinear", "align_corners": False}
        S = F.interpolate(S, size=images.shape[-2:], **mode)
    lo = S.amin(dim=(2, 3), keepdim=True)
    span = S.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (S - lo) / span.clamp(min=1e-12), torch.zeros_like(S)).detach()


def test_check_gradcam_accepts_a_hook_and_autograd(capsys):
    assert check_gradcam(gradcam_by_hand) is True
    assert "✓" in capsys.readouterr().out


def test_check_gradcam_notes_gradients_left_in_the_parameters(capsys):
    assert check_gradcam(lambda *a: gradcam_by_hand(*a, backward=True)) is True
    assert ".grad" in capsys.readouterr().out


def test_check_gradcam_unsolved(capsys):
    assert check_gradcam(todo) is False
    assert "not solved yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake, hint",
    [
        ({"relu": False}, "no ReLU"),
        ({"prob": True}, "probability"),
        ({"hires": True}, "HiRes-CAM"),
        ({"keep_hook": True}, "hook\\(s\\) left"),
        ({"upsample": False}, "upsample"),
        ({"nearest": True}, "bilinear"),
    ],
)
def test_check_gradcam_names_mistakes(mistake, hint):
    with pytest.raises(AssertionError, match=hint):
        check_gradcam(lambda *a: gradcam_by_hand(*a, **mistake))


def test_check_gradcam_names_the_sum_of_all_logits_and_the_predicted_class():
    def all_logits(classifier, images, targets, layer):
        kept = {}
        h = classifier.layer(layer).register_forward_hook(lambda _m, _i, out: kept.update(A=out))
        try:
            logits = classifier.model(images)
        finally:
            h.remove()
        (G,) = torch.autograd.grad(logits.sum(), kept["A"])  # every class at once: wrong
        S = torch.relu((G.mean(dim=(2, 3))[:, :, None, None] * kept["A"]).sum(1, keepdim=True)).detach()
        S = F.interpolate(S, size=images.shape[-2:], mode="bilinear", align_corners=False)
        lo, hi = S.amin(dim=(2, 3), keepdim=True), S.amax(dim=(2, 3), keepdim=True)
        return (S - lo) / (hi - lo)

    with pytest.raises(AssertionError, match="sum of all logits"):
        check_gradcam(all_logits)

    def predicted(classifier, images, targets, layer):
        with torch.no_grad():
            mine = classifier.model(images).argmax(1)
        return gradcam_by_hand(classifier, images, mine, layer)

    with pytest.raises(AssertionError, match="predicted classes"):
        check_gradcam(predicted)


# --- notebook 03: the Opti-CAM loop ------------------------------------------------------------------------------


def opticam_by_hand(
    classifier,
    images,
    targets,
    iterations,
    lr=0.1,
    *,
    init=0.5,
    sign=1.0,
    softmax=True,
    normalise=True,
    prob=False,
    recompute=False,
    torch_adam=False,
    extra=0,
    stale_maps=False,
):
    """The Opti-CAM loop with Adam written out (or torch.optim.Adam), and switches for the typical mistakes."""
    acts, _ = features(classifier, images)
    size = tuple(images.shape[-2:])
    u = torch.full(acts.shape[:2], init)

    def mask(u_, acts_):
        if softmax and normalise:
            return saliency_map(u_, acts_, size)
        w = torch.softmax(u_, 1) if softmax else u_
        s = F.interpolate(
            (w[:, :, None, None] * acts_).sum(1, keepdim=True),
            size=size,
            mode="bilinear",
            align_corners=False,
        )
        if not normalise:
            return s
        lo, hi = s.amin(dim=(2, 3), keepdim=True), s.amax(dim=(2, 3), keepdim=True)
        return (s - lo) / (hi - lo)

    if torch_adam:
        u.requires_grad_(True)
        adam = torch.optim.Adam([u], lr=lr, maximize=True)
    m, v = torch.zeros_like(u), torch.zeros_like(u)
    previous = u.detach().clone()
    for t in range(1, iterations + 1 + extra):
        if recompute:
            acts, _ = features(classifier, images)
        u_ = u if torch_adam else u.clone().requires_grad_(True)
        out = classifier.model(images * mask(u_, acts))
        scores = torch.softmax(out, 1) if prob else out
        f = scores.gather(1, targets[:, None])[:, 0]
        (g,) = torch.autograd.grad(f.sum(), u_)
        previous = u.detach().clone()
        if torch_adam:
            u.grad = g
            adam.step()
            continue
        g = sign * g
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        u = u + lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
    u = u.detach()
    with torch.no_grad():
        return u, mask(previous if stale_maps else u, acts)


@pytest.mark.parametrize("torch_adam", [False, True], ids=["Adam by hand", "torch.optim.Adam"])
def test_check_opticam_loop_accepts_the_loop(torch_adam, capsys):
    assert check_opticam_loop(lambda *a: opticam_by_hand(*a, torch_adam=torch_adam)) is True
    assert "✓" in capsys.readouterr().out


def test_check_opticam_loop_unsolved(capsys):
    assert check_opticam_loop(todo) is False


@pytest.mark.parametrize(
    "mistake, hint",
    [
        ({"softmax": False}, "no softmax"),
        ({"sign": -1.0}, "maximises"),
        ({"normalise": False}, "not normalised"),
        ({"prob": True}, "probability"),
        ({"init": 0.0}, "shifted by a constant"),
        ({"extra": 1}, "too many"),
        ({"recompute": True}, "compute them once"),
        ({"stale_maps": True}, "previous u"),
    ],
)
def test_check_opticam_loop_names_mistakes(mistake, hint):
    with pytest.raises(AssertionError, match=hint):
        check_opticam_loop(lambda *a: opticam_by_hand(*a, **mistake))


def test_check_opticam_loop_names_plain_gradient_ascent_and_a_wrong_shape():
    def sgd(classifier, images, targets, iterations, lr=0.1):
        acts, _ = features(classifier, images)
        u = torch.full(acts.shape[:2], 0.5)
        for _ in range(iterations):
            u_ = u.clone().requires_grad_(True)
            f = classifier.model(images * saliency_map(u_, acts, images.shape[-2:])).gather(
                1, targets[:, None]
            )
            (g,) = torch.autograd.grad(f.sum(), u_)
            u = u + lr * g
        return u, saliency_map(u, acts, images.shape[-2:])

    with pytest.raises(AssertionError, match="plain gradient ascent"):
        check_opticam_loop(sgd)
    with pytest.raises(AssertionError, match="two tensors"):
        check_opticam_loop(lambda *a: opticam_by_hand(*a)[0])
    with pytest.raises(AssertionError, match="one u per image"):
        check_opticam_loop(lambda *a: (opticam_by_hand(*a)[0][0], opticam_by_hand(*a)[1]))


# --- notebook 04: which is cheaper ---------------------------------------------------------------------------


def cost(forward_s, backward_ratio, channels, iterations, images, chunk):
    f_batch, f_chunk = forward_s[images], forward_s[chunk]
    return {
        "Score-CAM": images * (f_batch + channels * f_chunk),
        "Opti-CAM": images * (f_batch + iterations * f_batch * (1 + backward_ratio)),
    }


def test_check_cost_prediction_accepts_the_model(capsys):
    assert check_cost_prediction(cost) is True
    out = capsys.readouterr().out
    # on the CPU case a chunk of 32 costs more per image than the batch of 8: 489.6 s against 45.3 s; on the GPU
    # cases: VGG16-like 8 (1.6e-3 + 512 x 0.76e-3) = 3.13 s against 8 (1.6e-3 + 100 x 4.8e-3) = 3.85 s;
    # ResNet50-like 8 (1.7e-3 + 2048 x 0.93e-3) = 15.25 s against 8 (1.7e-3 + 100 x 5.1e-3) = 4.09 s
    assert "Opti-CAM, Score-CAM, Opti-CAM" in out


def test_check_cost_prediction_unsolved(capsys):
    assert check_cost_prediction(todo) is False


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda f, r, k, t, n, c: {**cost(f, r, k, t, n, c), "Score-CAM": n * (f[n] + k * f[n])}, "chunks"),
        (lambda f, r, k, t, n, c: {**cost(f, r, k, t, n, c), "Opti-CAM": n * (f[n] + t * f[n])}, "backward"),
        (lambda f, r, k, t, n, c: {**cost(f, r, k, t, n, c), "Score-CAM": n * k * f[c]}, "feature pass"),
        (lambda f, r, k, t, n, c: {k_: v / n for k_, v in cost(f, r, k, t, n, c).items()}, "one image"),
        (lambda f, r, k, t, n, c: {"score": 1.0, "opti": 2.0}, "keys"),
        (lambda f, r, k, t, n, c: {**cost(f, r, k, t, n, c), "Opti-CAM": 1.0}, "expected"),
    ],
)
def test_check_cost_prediction_names_mistakes(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check_cost_prediction(wrong)


# --- notebook 11: iRprop+'s step -----------------------------------------------------------------------------


def rprop_step(
    u, grad, f, state, *, undo="fell", sign=True, zero_after_flip=True, clamp=True, up=1.2, down=0.5
):
    grad = torch.where(grad.abs() > 1e-5 * grad.abs().amax(dim=1, keepdim=True), grad, 0.0)
    same = grad * state["grad"]
    step = torch.where(
        same > 0, state["step"] * up, torch.where(same < 0, state["step"] * down, state["step"])
    )
    if clamp:
        step = step.clamp(1e-3, 1.0)
    flip = same < 0
    fell = (f < state["f"])[:, None]
    ahead = step * (grad.sign() if sign else grad)
    back = {"fell": torch.where(fell, -state["move"], 0.0), "always": -state["move"], "never": 0.0}[undo]
    move = torch.where(flip, back, ahead)
    stored = torch.where(flip, 0.0, grad) if zero_after_flip else grad
    return u + move, {"grad": stored, "step": step, "move": move, "f": f}


def test_check_rprop_step_accepts_irprop_plus(capsys):
    assert check_rprop_step(rprop_step) is True
    assert "✓" in capsys.readouterr().out


def test_check_rprop_step_unsolved(capsys):
    assert check_rprop_step(todo) is False


@pytest.mark.parametrize(
    "mistake, hint",
    [
        ({"undo": "always"}, "Rprop\\+"),
        ({"undo": "never"}, "iRprop-"),
        ({"sign": False}, "sign"),
        ({"zero_after_flip": False}, "gradient of 0"),
        ({"up": 0.5, "down": 1.2}, "not the reverse"),
        ({"clamp": False}, "within \\[1e-3, 1\\]"),
    ],
)
def test_check_rprop_step_names_mistakes(mistake, hint):
    with pytest.raises(AssertionError, match=hint):
        check_rprop_step(lambda *a: rprop_step(*a, **mistake))


def test_check_rprop_step_names_descent_and_a_broken_state():
    def descent(u, grad, f, state):
        return rprop_step(u, -grad, f, state)

    with pytest.raises(AssertionError, match="went down"):
        check_rprop_step(descent)
    with pytest.raises(AssertionError, match="state"):
        check_rprop_step(lambda u, g, f, s: (u + 0.1 * g.sign(), {"grad": g}))
