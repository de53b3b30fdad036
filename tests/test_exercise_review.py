"""The exercise checkers after a review: the notebooks' reference solutions still get exactly their saved ✓ line
and a pass receipt; right answers written otherwise (a no_grad helper, float64, no default for ``size``, extra
state, a time rounded to the millisecond) pass; wrong answers the checkers used to let through (a fixed size, NaN
on a constant map, a pasted number, the image's position as its class) fail; and each hint names the mistake
that was made, not another one."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from opticam_lib.course import exercises as ex
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import saliency_map

# --- the notebooks' reference solutions (the "# SOLUTION" cells), copied as they are ---------------------------


def masked_probability(classifier, images, masks, targets):  # 00
    with torch.no_grad():
        logits = classifier.model(images * masks)  # black where masks == 0
    probs = torch.softmax(logits, dim=1)
    return probs[torch.arange(len(targets)), targets]


def my_gradcam(classifier, images, targets, layer, *, size=None, guard=True):  # 01 (+ switches for mistakes)
    kept = {}
    handle = classifier.layer(layer).register_forward_hook(
        lambda module, inputs, output: kept.update(A=output)
    )
    try:
        logits = classifier.model(images)
    finally:
        handle.remove()
    A = kept["A"]
    y_c = logits.gather(1, targets[:, None]).sum()
    (G,) = torch.autograd.grad(y_c, A)
    w = G.mean(dim=(2, 3))
    S = torch.relu((w[:, :, None, None] * A.detach()).sum(dim=1, keepdim=True))
    S = F.interpolate(S, size=size or images.shape[-2:], mode="bilinear", align_corners=False)
    lo = S.amin(dim=(2, 3), keepdim=True)
    span = S.amax(dim=(2, 3), keepdim=True) - lo
    if not guard:
        return (S - lo) / span
    return torch.where(span > 0, (S - lo) / span.clamp(min=1e-12), torch.zeros_like(S))


def my_saliency_map(u, acts, size=(8, 8)):  # 03
    weights = torch.softmax(u, dim=1)[:, :, None, None]
    S = (weights * acts).sum(dim=1, keepdim=True)
    S = F.interpolate(S, size=size, mode="bilinear", align_corners=False)
    lo = S.amin(dim=(2, 3), keepdim=True)
    span = S.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (S - lo) / span.clamp(min=1e-12), torch.zeros_like(S))


def my_opticam(classifier, images, targets, iterations, lr=0.1, *, log=False, reduce="sum"):  # 03 capstone
    acts, _ = features(classifier, images)
    size = tuple(images.shape[-2:])
    u = torch.full(acts.shape[:2], 0.5, device=acts.device)
    m, v = torch.zeros_like(u), torch.zeros_like(u)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, iterations + 1):
        u_ = u.clone().requires_grad_(True)
        masked = images * saliency_map(u_, acts, size)
        score = classifier.model(masked).gather(1, targets[:, None])[:, 0]
        (g,) = torch.autograd.grad(getattr(score, reduce)(), u_)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = u + lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        if log:  # a learner's extra pass, only to print the score
            with torch.no_grad():
                classifier.model(images * saliency_map(u, acts, size))
    return u, saliency_map(u, acts, size)


def my_cost(forward_s, backward_ratio, channels, iterations, images, chunk):  # 04
    f_batch, f_chunk = forward_s[images], forward_s[chunk]
    return {
        "Score-CAM": images * (f_batch + channels * f_chunk),
        "Opti-CAM": images * (f_batch + iterations * f_batch * (1 + backward_ratio)),
    }


def my_average_gain(p, o):  # 05
    return float(((o - p).clamp(min=0) / (1 - p)).mean() * 100)


def my_spearman(a, b):  # 09
    def ranks(v):
        v = v.flatten().double()
        smaller = (v[None, :] < v[:, None]).sum(dim=1)
        equal = (v[None, :] == v[:, None]).sum(dim=1)
        return smaller + (equal + 1) / 2

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / torch.sqrt((ra @ ra) * (rb @ rb)))


def my_tokens_to_grid(tokens, prefix_tokens):  # 10
    patches = tokens[:, prefix_tokens:]
    n, t, k = patches.shape
    side = round(t**0.5)
    return patches.transpose(1, 2).reshape(n, k, side, side)


def my_rollout(attentions, *, heads="mean"):  # 10 (+ a switch for the summed heads)
    R = None
    for a in attentions:
        W = getattr(a, heads)(dim=1)
        A_hat = 0.5 * W + 0.5 * torch.eye(W.shape[-1], dtype=W.dtype)
        R = A_hat if R is None else A_hat @ R
    return R


def my_rprop_step(u, grad, f, state):  # 11
    grad = torch.where(grad.abs() > 1e-5 * grad.abs().amax(dim=1, keepdim=True), grad, 0.0)
    same = grad * state["grad"]
    step = torch.where(
        same > 0, state["step"] * 1.2, torch.where(same < 0, state["step"] * 0.5, state["step"])
    )
    step = step.clamp(1e-3, 1.0)
    flipped = same < 0
    fell = (f < state["f"])[:, None]
    move = torch.where(flipped, torch.where(fell, -state["move"], 0.0), step * grad.sign())
    new_state = {"grad": torch.where(flipped, 0.0, grad), "step": step, "move": move, "f": f}
    return u + move, new_state


# the ✓ lines the notebooks saved for these solutions: they must not change
SAVED = {
    "check_masked_probability": (
        masked_probability,
        "✓ correct: x ⊙ m on raw pixels (black where m = 0), softmax, then the target class of each image.",
    ),
    "check_gradcam": (
        my_gradcam,
        "✓ correct: hook, class logit, gradient, spatial mean, weighted sum, ReLU, bilinear upsampling and range "
        "normalisation: the library's Grad-CAM.",
    ),
    "check_saliency_map": (
        my_saliency_map,
        "✓ correct: softmax weights, a convex combination, bilinear upsampling, then range normalisation.",
    ),
    "check_opticam_loop": (
        my_opticam,
        "✓ correct: your loop gives optimize's u and maps to within 1e-5 after 4 Adam steps, with 5 forward passes "
        "per image (the features once, then one masked pass per step).",
    ),
    "check_cost_prediction": (
        my_cost,
        "✓ correct: on the three cases the cheaper method is Opti-CAM, Score-CAM, Opti-CAM: on a GPU Score-CAM's "
        "large chunks can make it the cheaper one (VGG16, K = 512), as in the paper's Table 1, but not at K = 2048.",
    ),
    "check_average_gain": (
        my_average_gain,
        "✓ correct: AG = 24.4% on this random case; [o - p]+ / (1 - p) mirrors AD's [p - o]+ / p.",
    ),
    "check_spearman": (
        my_spearman,
        "✓ correct: the correlation of the ranks; any increasing transform of a map leaves it at 1.",
    ),
    "check_tokens_to_grid": (
        my_tokens_to_grid,
        "✓ correct: prefix tokens dropped, channels first, the h*w patch tokens laid out row by row.",
    ),
    "check_rollout": (
        my_rollout,
        "✓ correct: (A + I) / 2 per block, heads averaged, multiplied from the first block to the last.",
    ),
    "check_rprop_step": (
        my_rprop_step,
        "✓ correct: 12 of your iRprop+ steps give optimize(optimizer='rprop')'s u to within 1e-5: signs only, "
        "steps growing by 1.2 and halving, undone only where a flip came with a fall of F.",
    ),
}


@pytest.mark.parametrize("name", sorted(SAVED))
def test_the_reference_solutions_print_their_saved_line_and_a_pass_receipt(name, monkeypatch, capsys):
    monkeypatch.setattr(ex, "_SECRET", {"token": "secret"})
    fn, line = SAVED[name]
    assert getattr(ex, name)(fn) is True
    assert capsys.readouterr().out.splitlines() == [line, ex.receipt(name, "secret")]


# --- 1. a no_grad helper of one's own is not the library's answer ---------------------------------------------


def test_masked_probability_with_a_no_grad_helper_passes(capsys):
    @torch.no_grad()
    def logits_of(c, x):
        return c.model(x)

    assert ex.check_masked_probability(
        lambda c, x, m, t: torch.softmax(logits_of(c, x * m), 1)[range(len(t)), t]
    )
    assert "library's own answer" not in capsys.readouterr().out


def test_calling_the_no_grad_library_answer_still_fails():
    from opticam_lib.metrics.classification import class_probability

    with pytest.raises(AssertionError, match=r"library's own answer.*class_probability"):
        ex.check_masked_probability(lambda c, x, m, t: class_probability(c, x * m, t))


def test_answer_codes_are_the_librarys_own():
    for checker in ex.ANSWERS:
        for code in ex._answer_codes(checker):
            assert code.co_filename.startswith(ex._LIBRARY), (checker, code)


# --- 2. check_saliency_map passes the size and checks it -------------------------------------------------------


def _saliency_at(size=None, scale=None):
    def fn(u, acts, size_=(8, 8)):
        S = (torch.softmax(u, 1)[:, :, None, None] * acts).sum(1, keepdim=True)
        up = {"scale_factor": scale} if scale else {"size": size}
        S = F.interpolate(S, mode="bilinear", align_corners=False, **up)
        lo, hi = S.amin(dim=(2, 3), keepdim=True), S.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (S - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(S))

    return fn


@pytest.mark.parametrize("fn", [_saliency_at(size=(8, 8)), _saliency_at(scale=2)], ids=["(8, 8)", "scale 2"])
def test_saliency_map_with_a_fixed_size_fails(fn):
    with pytest.raises(AssertionError, match=r"upsample to `size`, the third argument"):
        ex.check_saliency_map(fn)


def test_saliency_map_without_a_default_size_passes(capsys):
    def no_default(u, acts, size):
        return my_saliency_map(u, acts, size)

    assert ex.check_saliency_map(no_default) is True
    assert "✓" in capsys.readouterr().out


def test_saliency_map_without_a_size_parameter_gets_a_hint():
    with pytest.raises(AssertionError, match=r"my_saliency_map\(u, acts, size\)"):
        ex.check_saliency_map(lambda u, acts: my_saliency_map(u, acts))


# --- 3. NaN on a constant map ---------------------------------------------------------------------------------


def test_saliency_map_without_the_guard_fails_on_an_all_zero_map():
    def unguarded(u, acts, size):
        S = F.interpolate(
            (torch.softmax(u, 1)[:, :, None, None] * acts).sum(1, keepdim=True),
            size=size,
            mode="bilinear",
            align_corners=False,
        )
        lo, hi = S.amin(dim=(2, 3), keepdim=True), S.amax(dim=(2, 3), keepdim=True)
        return (S - lo) / (hi - lo)

    with pytest.raises(AssertionError, match=r"NaN: .* divides by zero"):
        ex.check_saliency_map(unguarded)


def test_gradcam_without_the_guard_fails_on_a_map_the_relu_empties():
    with pytest.raises(AssertionError, match=r"NaN: .* divides by zero"):
        ex.check_gradcam(lambda *a: my_gradcam(*a, guard=False))


# --- 4. check_average_gain: no pasted number --------------------------------------------------------------------


def test_average_gain_pasted_from_the_feedback_fails(capsys):
    with pytest.raises(AssertionError) as wrong:
        ex.check_average_gain(lambda p, o: 0.0)
    assert "24.38" not in str(wrong.value) and "24.4" not in str(wrong.value)
    with pytest.raises(AssertionError, match=r"not eq\. \(15\)'s value"):
        ex.check_average_gain(lambda p, o: 24.38)  # what the old feedback printed
    with pytest.raises(AssertionError):
        ex.check_average_gain(lambda p, o: ex.average_gain(*_first_gain_case()) if len(p) == 50 else 0.0)
    assert "✓" not in capsys.readouterr().out


def _first_gain_case():
    g = torch.Generator().manual_seed(5)
    p = torch.rand(50, generator=g) * 0.98 + 0.01
    return p, torch.rand(50, generator=g)


# --- 5. check_masked_probability: targets are not the positions ------------------------------------------------


def test_masked_probability_by_position_fails():
    with pytest.raises(AssertionError, match="the image's position"):
        ex.check_masked_probability(lambda c, x, m, t: torch.softmax(c.model(x * m), 1).diag())


# --- 6. check_rprop_step: a state of one's own ------------------------------------------------------------------


def test_rprop_step_with_extra_state_passes(capsys):
    def counted(u, grad, f, state):
        u, new = my_rprop_step(u, grad, f, state)
        return u, {
            **new,
            "t": state.get("t", 0) + 1,
            "history": [*state.get("history", []), float(f.mean())],
            "last_u": u.numpy().copy(),
        }

    assert ex.check_rprop_step(counted) is True
    assert "✓" in capsys.readouterr().out


def test_rprop_step_with_a_required_value_that_is_not_a_tensor_gets_a_hint():
    def numpy_f(u, grad, f, state):
        u, new = my_rprop_step(u, grad, f, {**state, "f": torch.as_tensor(state["f"])})
        return u, {**new, "f": f.numpy()}

    with pytest.raises(AssertionError, match=r"state\['f'\] must be a tensor, got ndarray"):
        ex.check_rprop_step(numpy_f)


# --- 7. float64 answers --------------------------------------------------------------------------------------


def test_float64_answers_pass_rollout_and_tokens_to_grid(capsys):
    assert ex.check_rollout(lambda atts: my_rollout([a.double() for a in atts])) is True
    assert ex.check_tokens_to_grid(lambda tokens, p: my_tokens_to_grid(tokens.double(), p)) is True
    assert capsys.readouterr().out.count("✓") == 2


# --- 8. check_rollout: summed heads -----------------------------------------------------------------------------


def test_rollout_with_summed_heads_is_named():
    with pytest.raises(AssertionError, match="the heads are summed: average them"):
        ex.check_rollout(lambda atts: my_rollout(atts, heads="sum"))


# --- 9. check_spearman: dense ranks, the no-ties formula -----------------------------------------------------------


def _pearson(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def dense_ranks(a, b):
    ra, rb = (rankdata(v.flatten().numpy(), method="dense") for v in (a, b))
    return _pearson(ra, rb)


def textbook_formula(a, b):
    ra, rb = (rankdata(v.flatten().numpy()) for v in (a, b))
    n = ra.size
    return float(1 - 6 * ((ra - rb) ** 2).sum() / (n * (n**2 - 1)))


def test_spearman_with_dense_ranks_is_named():
    with pytest.raises(AssertionError, match="ties share the average of the ranks they occupy") as wrong:
        ex.check_spearman(dense_ranks)
    assert "Pearson's correlation of the values" not in str(wrong.value)


def test_spearman_with_the_no_ties_formula_is_named():
    with pytest.raises(AssertionError, match="assumes no ties") as wrong:
        ex.check_spearman(textbook_formula)
    assert "give tied values their average rank" not in str(wrong.value)


# --- 10. check_tokens_to_grid: "drop the prefix" only when it was kept --------------------------------------------


def test_tokens_to_grid_view_after_transpose_is_not_told_to_drop_the_prefix():
    def view(tokens, prefix):
        patches = tokens[:, prefix:]
        n, t, k = patches.shape
        side = round(t**0.5)
        return patches.transpose(1, 2).view(n, k * t).view(n, k, side, side)  # a view cannot merge

    with pytest.raises(AssertionError, match="contiguous") as wrong:
        ex.check_tokens_to_grid(view)
    assert "drop the prefix" not in str(wrong.value)


def test_tokens_to_grid_with_a_fixed_grid_is_not_told_to_drop_the_prefix():
    def four_by_four(tokens, prefix):
        n, _, k = tokens.shape
        return tokens[:, prefix:].transpose(1, 2).reshape(n, k, 4, 4)

    with pytest.raises(AssertionError, match=r"9 patch tokens make a 3x3 grid") as wrong:
        ex.check_tokens_to_grid(four_by_four)
    assert "drop the prefix" not in str(wrong.value)


# --- 11. check_opticam_loop: extra passes, the mean -------------------------------------------------------------


def test_opticam_loop_with_a_logging_pass_is_not_blamed_on_the_features():
    with pytest.raises(AssertionError, match="more forward passes than needed") as wrong:
        ex.check_opticam_loop(lambda *a: my_opticam(*a, log=True))
    assert "compute them once" not in str(wrong.value)


def test_opticam_loop_with_the_mean_is_named():
    with pytest.raises(AssertionError, match="the sum over the images, not the mean"):
        ex.check_opticam_loop(lambda *a: my_opticam(*a, reduce="mean"))


# --- 12. check_cost_prediction: rounded answers, keys ---------------------------------------------------------------


def test_cost_rounded_to_the_millisecond_passes(capsys):
    assert ex.check_cost_prediction(lambda *a: {k: round(v, 3) for k, v in my_cost(*a).items()}) is True
    assert "✓" in capsys.readouterr().out


def test_cost_with_an_extra_key_passes(capsys):
    def extra(*a):
        got = my_cost(*a)
        return {**got, "cheaper": min(got, key=got.get)}

    assert ex.check_cost_prediction(extra) is True
    assert "✓" in capsys.readouterr().out


def test_cost_with_mixed_key_types_gets_a_hint():
    with pytest.raises(AssertionError, match=r"'Opti-CAM' missing \(your keys: 'Score-CAM', 1\)"):
        ex.check_cost_prediction(lambda *a: {"Score-CAM": my_cost(*a)["Score-CAM"], 1: 2.0})


def test_cost_feedback_tells_values_apart_beyond_the_tolerance():
    with pytest.raises(AssertionError) as wrong:
        ex.check_cost_prediction(lambda *a: {k: v + 2e-3 for k, v in my_cost(*a).items()})
    expected, got = re.search(r"expected (\S+) s, got (\S+) s", str(wrong.value)).groups()
    assert expected != got


# --- 13. check_gradcam: a fixed size ---------------------------------------------------------------------------------


def test_gradcam_with_a_fixed_size_is_told_to_take_the_images():
    with pytest.raises(AssertionError, match="the image's own size, taken from the images") as wrong:
        ex.check_gradcam(lambda *a: my_gradcam(*a, size=(224, 224)))
    assert "upsample the (224, 224) grid" not in str(wrong.value)


# --- 14. a function's result instead of the function ---------------------------------------------------------------


CHECKERS = sorted(name for name in dir(ex) if name.startswith("check_"))


@pytest.mark.parametrize("name", CHECKERS)
@pytest.mark.parametrize("given", [torch.zeros(2, 3), 0.5, None], ids=["tensor", "float", "None"])
def test_a_result_instead_of_a_function_gets_a_hint(name, given, monkeypatch, capsys):
    monkeypatch.setattr(ex, "_SECRET", {"token": "secret"})
    with pytest.raises(AssertionError, match=r"pass your function itself \(without calling it\)"):
        getattr(ex, name)(given)
    assert capsys.readouterr().out.splitlines() == [ex.receipt(name, "secret", "fail")]


# --- 15. _close on results that live on the GPU ------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_close_compares_a_cuda_result():
    want = torch.rand(2, 3)
    ex._close(want.cuda(), want, "a CUDA result")
    with pytest.raises(AssertionError, match="values differ"):
        ex._close(want.cuda() + 1, want, "a CUDA result")
