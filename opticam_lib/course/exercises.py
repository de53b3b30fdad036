"""Checkers for the course's exercises.

Each checker takes the student's function (or answer), runs it on small cases whose answer the library
computes independently, and prints ``✓`` with a short explanation, or raises ``AssertionError`` with a hint.
A function that still raises ``NotImplementedError`` gets a reminder instead of a failure, so a notebook with
unsolved exercises still runs top to bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from opticam_lib.course.ablations import TARGET_RULES
from opticam_lib.methods.maps import combine, normalize
from opticam_lib.methods.opticam import saliency_map
from opticam_lib.metrics.classification import (
    average_drop,
    average_gain,
    average_increase,
)
from opticam_lib.metrics.localization import energy_pointing_game, union_mask
from opticam_lib.metrics.sanity import _flat, spearman


def _run(fn: Callable, *args):
    try:
        return fn(*args), True
    except NotImplementedError:
        print(
            "… not solved yet: replace `raise NotImplementedError` with your code, then run this cell again."
        )
        return None, False


def _close(got: object, want: Tensor, what: str, atol: float = 1e-5) -> None:
    if not isinstance(got, Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if not torch.allclose(got.float(), want.float(), atol=atol, rtol=1e-4):
        err = float((got.float() - want.float()).abs().max())
        raise AssertionError(f"{what}: values differ from the expected ones (max error {err:.3g})")


def _cases(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    acts = torch.rand(2, 5, 4, 4, generator=g)
    grads = torch.randn(2, 5, 4, 4, generator=g)
    return acts, grads


def check_gradcam_weights(fn: Callable[[Tensor], Tensor]) -> bool:
    """Exercise (notebook 01): eq. (2), ``w_k = GAP(dy_c / dA^k)``; fn(grads (N, K, h, w)) -> (N, K)."""
    _, grads = _cases()
    got, done = _run(fn, grads)
    if not done:
        return False
    _close(got, grads.mean(dim=(2, 3)), "Grad-CAM weights")
    print("✓ correct: each channel's weight is the spatial average of its gradient (eq. 2).")
    return True


def check_cam_combination(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """Exercise (notebook 01): eq. (1) with h = relu; fn(weights (N, K), acts (N, K, h, w)) -> (N, 1, h, w)."""
    acts, grads = _cases(1)
    w = grads.mean(dim=(2, 3))
    got, done = _run(fn, w, acts)
    if not done:
        return False
    _close(got, combine(w, acts, "relu"), "relu(sum_k w_k A^k)")
    print("✓ correct: a weighted sum over channels, then relu keeps what raises the class score (eq. 1).")
    return True


def check_range_normalization(fn: Callable[[Tensor], Tensor]) -> bool:
    """Exercise (notebook 02): eq. (4); fn(maps (N, 1, H, W)) -> same, in [0, 1], constant maps -> zeros."""
    acts, _ = _cases(2)
    maps = torch.cat([acts[:, :1] * 3 - 1, torch.full((1, 1, 4, 4), 0.7)])
    got, done = _run(fn, maps)
    if not done:
        return False
    if isinstance(got, Tensor) and torch.isnan(got).any():
        raise AssertionError("a constant map gave NaN: (A - min A) / (max A - min A) divides by zero there")
    _close(got, normalize(maps, "range"), "range normalisation")
    print("✓ correct: every map now spans [0, 1], and a constant map gives zeros instead of NaN (eq. 4).")
    return True


def check_saliency_map(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """Exercise (notebook 03): eq. (8) + n(up(.)); fn(u (N, K), acts (N, K, h, w)) -> (N, 1, 8, 8) in [0, 1]."""
    acts, grads = _cases(3)
    u = grads[:, :, 0, 0]
    got, done = _run(fn, u, acts)
    if not done:
        return False
    _close(got, saliency_map(u, acts, (8, 8)), "n(up(sum_k softmax(u)_k A^k))")
    print("✓ correct: softmax weights, a convex combination, bilinear upsampling, then range normalisation.")
    return True


def check_scorecam_cost(answer: int, channels: int, images: int) -> bool:
    """Exercise (notebook 04): how many forward passes Score-CAM needs for ``images`` images and ``channels``."""
    want = channels * images
    if answer != want:
        raise AssertionError(
            f"{answer} is not right: Score-CAM masks each image once per channel. Try again with channels x images."
        )
    print(f"✓ correct: {want} forward passes (one per channel per image), and no backward pass.")
    return True


def check_average_gain(fn: Callable[[Tensor, Tensor], float]) -> bool:
    """Exercise (notebook 05): eq. (15); fn(p (N,), o (N,)) -> AG in percent."""
    g = torch.Generator().manual_seed(5)
    p = torch.rand(50, generator=g) * 0.98 + 0.01
    o = torch.rand(50, generator=g)
    got, done = _run(fn, p, o)
    if not done:
        return False
    want = average_gain(p, o)
    if abs(float(got) - want) > 1e-3:
        hint = ""
        if abs(float(got) - average_increase(p, o)) < 1e-3:
            hint = " (that is AI, eq. 14: it counts images, it does not measure the gain)"
        elif abs(float(got) - average_drop(p, o)) < 1e-3:
            hint = " (that is AD, eq. 13: swap the roles of p and o and divide by 1 - p)"
        raise AssertionError(f"AG should be {want:.2f}%, got {float(got):.2f}%{hint}")
    print(f"✓ correct: AG = {want:.1f}% on this random case; [o - p]+ / (1 - p) mirrors AD's [p - o]+ / p.")
    return True


def check_masked_probability(fn: Callable[..., Tensor]) -> bool:
    """Exercise (notebook 00): the class probability of a masked image, the quantity behind eq. (3), (10), (13)-(15).

    ``fn(classifier, images (N, 3, H, W) in [0, 1], masks (N, 1, H, W) in [0, 1], targets (N,)) -> (N,)``: the
    softmax probability of class ``targets[i]`` on ``images[i] * masks[i]``. Checked on a tiny random classifier
    with ImageNet normalisation inside, so masking the normalised tensor (grey pixels) is told apart.
    """
    from torch import nn

    from opticam_lib.metrics.classification import class_probability
    from opticam_lib.models.classifier import IMAGENET_MEAN, IMAGENET_STD, wrap_classifier

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)
        )
        clf = wrap_classifier(net, "0", name="tiny", num_classes=4, input_size=16)
        images = torch.rand(4, 3, 16, 16)
        masks = torch.rand(4, 1, 16, 16)
    masks[0] = 0
    masks[0, :, :, :8] = 1  # keep the left half only
    targets = torch.tensor([0, 1, 2, 3])
    got, done = _run(fn, clf, images, masks, targets)
    if not done:
        return False
    want = class_probability(clf, images * masks, targets)
    if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
        got = got.detach().cpu()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = clf.model(images * masks)
            grey = torch.softmax(net((images - mean) / std * masks), dim=1)
        picked = logits.gather(1, targets[:, None])[:, 0]
        wrong = {
            "these are logits: apply the softmax over classes first": picked,
            "the masks were not applied: multiply the images by their masks": class_probability(
                clf, images, targets
            ),
            "you masked the normalised tensor (masked pixels become the mean grey); multiply the raw [0, 1] "
            "image by the mask and let the model normalise inside": grey.gather(1, targets[:, None])[:, 0],
        }
        for hint, value in wrong.items():
            if torch.allclose(got.float(), value, atol=1e-5) and not torch.allclose(value, want, atol=1e-5):
                raise AssertionError(hint)
    elif isinstance(got, Tensor) and got.dim() == 2:
        raise AssertionError(
            f"got shape {tuple(got.shape)}: keep one number per image, the probability of its target class"
        )
    _close(got, want, "class probability of the masked image")
    print("✓ correct: x ⊙ m on raw pixels (black where m = 0), softmax, then the target class of each image.")
    return True


def check_tokens_to_grid(fn: Callable[[Tensor, int], Tensor]) -> bool:
    """Exercise (notebook 10): a transformer's tokens as feature maps, as ``Classifier.to_grid`` does.

    ``fn(tokens (N, T, K), prefix_tokens) -> (N, K, h, w)``: drop the first ``prefix_tokens`` tokens (class,
    distillation), then lay the h*w patch tokens out row by row with the K channels first.
    """
    from torch import nn

    from opticam_lib.models.classifier import wrap_classifier

    g = torch.Generator().manual_seed(9)
    cases = [(torch.randn(2, 1 + 16, 3, generator=g), 1), (torch.randn(1, 2 + 9, 5, generator=g), 2)]
    for tokens, prefix in cases:
        clf = wrap_classifier(nn.Sequential(nn.Identity()), "0", num_classes=2, prefix_tokens=prefix)
        want = clf.to_grid(tokens)
        n, _, k = tokens.shape
        side = want.shape[-1]
        try:
            got, done = _run(fn, tokens, prefix)
        except RuntimeError as e:  # a reshape that cannot work, e.g. with the class token kept
            raise AssertionError(
                f"{e}. With {tokens.shape[1]} tokens and {prefix} prefix token(s), drop the prefix first: "
                f"{tokens.shape[1] - prefix} patch tokens make a {side}x{side} grid"
            ) from None
        if not done:
            return False
        if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
            no_transpose = tokens[:, prefix:].reshape(n, k, side, side)
            if torch.allclose(got, no_transpose) and not torch.allclose(no_transpose, want):
                raise AssertionError(
                    "the shape is right but the values are scrambled: tokens are (N, T, K); move the channels "
                    "first (transpose(1, 2)) before reshaping to (N, K, h, w)"
                )
            wrong_end = tokens[:, : tokens.shape[1] - prefix].transpose(1, 2).reshape(n, k, side, side)
            if torch.allclose(got, wrong_end):
                raise AssertionError(
                    "you dropped the last tokens: the class token comes first in the sequence"
                )
        _close(got, want, f"grid of tokens (prefix_tokens={prefix})")
    print("✓ correct: prefix tokens dropped, channels first, the h*w patch tokens laid out row by row.")
    return True


def check_rollout(fn: Callable[[list[Tensor]], Tensor]) -> bool:
    """Exercise (notebook 10): attention rollout (Abnar & Zuidema), heads averaged.

    ``fn(attentions) -> (N, T, T)`` with ``attentions`` a list of L tensors (N, heads, T, T), input side first;
    expected: ``Â_L ... Â_1`` with ``Â_l = (mean over heads of A_l + I) / 2``.
    """
    from opticam_lib.methods.attention import rollout_matrix

    g = torch.Generator().manual_seed(10)
    atts = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g) * 2, dim=-1) for _ in range(3)]
    got, done = _run(fn, [a.clone() for a in atts])
    if not done:
        return False
    want = rollout_matrix(atts)
    if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
        eye = torch.eye(5)
        mean = [a.mean(dim=1) for a in atts]
        hats = [(m + eye) / 2 for m in mean]
        no_residual = mean[2] @ mean[1] @ mean[0]
        wrong_order = hats[0] @ hats[1] @ hats[2]
        if torch.allclose(got, no_residual, atol=1e-5):
            raise AssertionError(
                "that is the product of the attention matrices alone: add the residual connection, "
                "(A + I) / 2, before multiplying"
            )
        if torch.allclose(got, wrong_order, atol=1e-5):
            raise AssertionError(
                "the product runs the wrong way: the first block acts first, R = Â_3 @ Â_2 @ Â_1"
            )
        if torch.allclose(got.sum(-1), torch.full_like(got.sum(-1), 8.0), atol=1e-3):
            raise AssertionError("the rows should sum to 1: use (A + I) / 2, not A + I")
    _close(got, want, "rollout")
    print("✓ correct: (A + I) / 2 per block, heads averaged, multiplied from the first block to the last.")
    return True


def check_area_loss(fn: Callable[[Tensor, float], Tensor]) -> bool:
    """Exercise (notebook 06): the ranking area constraint of extremal perturbations.

    ``fn(masks (N, ...), area) -> (N,)`` with ``R_a(m) = mean_i (sort(m)_i - r_a,i)^2``, the mask values sorted in
    ascending order and r_a the reference: floor(M (1 - a)) zeros, then ones (M values per mask).
    """
    from opticam_lib.methods.extremal import area_loss, area_reference

    g = torch.Generator().manual_seed(11)
    masks = torch.rand(3, 1, 6, 5, generator=g)
    masks[1] = (masks[1] > 0.7).float()  # a binary mask
    area = 0.2
    got, done = _run(fn, masks.clone(), area)
    if not done:
        return False
    want = area_loss(masks, area)
    if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
        flat = masks.flatten(1)
        ref = area_reference(flat.shape[1], area)
        wrong = {
            "unsorted": ((flat - ref) ** 2).mean(dim=1),
            "descending": ((flat.sort(dim=1, descending=True).values - ref) ** 2).mean(dim=1),
            "sum": ((flat.sort(dim=1).values - ref) ** 2).sum(dim=1),
            "mean area": (flat.mean(dim=1) - area) ** 2,
        }
        hints = {
            "unsorted": "sort the mask values first: R_a compares the *sorted* mask with r_a, wherever the pixels are",
            "descending": "sort in ascending order: r_a starts with its zeros and ends with its ones",
            "sum": "average the squared differences over the M values (a mean), do not sum them",
            "mean area": "(mean(m) - a)^2 only constrains the average; R_a compares every sorted value with r_a",
        }
        for key, value in wrong.items():
            if torch.allclose(got.float(), value, atol=1e-6):
                raise AssertionError(hints[key])
    _close(got, want, "R_a(m)", atol=1e-6)
    print(
        "✓ correct: R_a(m) = mean (sort(m) - r_a)^2, zero only for a mask equal to 1 on a fraction a of its "
        "pixels and 0 elsewhere."
    )
    return True


def check_target_rule(fn) -> bool:
    """Exercise (notebook 07): the target classes of Table A9 from class probabilities.

    ``fn(probs (N, C) in [0, 1], labels (N,), rule) -> (N,)`` long class ids, for every rule of
    ``TARGET_RULES``. Prints ``✓`` when right, a reminder while ``fn`` raises ``NotImplementedError``; raises
    ``AssertionError`` with a hint otherwise.
    """
    from opticam_lib.course.exercises import _run

    g = torch.Generator().manual_seed(6)
    probs = torch.softmax(torch.randn(6, 9, generator=g) * 2, dim=1)
    labels = torch.tensor([0, 3, 8, 1, 5, 2])
    order = probs.argsort(dim=1, descending=True)
    want = {"ground_truth": labels, "most": order[:, 0], "second": order[:, 1], "least": order[:, -1]}
    for rule in TARGET_RULES:
        got, done = _run(fn, probs.clone(), labels.clone(), rule)
        if not done:
            return False
        if not isinstance(got, Tensor) or tuple(got.shape) != (6,):
            shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
            raise AssertionError(f"rule {rule!r}: expected a (N,) tensor of class ids, got {shape}")
        if got.is_floating_point():
            raise AssertionError(
                f"rule {rule!r}: these look like probabilities; return class ids (argmax, argsort)"
            )
        if not torch.equal(got.long(), want[rule]):
            hint = ""
            for other, value in want.items():
                if other != rule and torch.equal(got.long(), value):
                    hint = f" (that is the {other!r} class)"
            if rule == "second" and torch.equal(got.long(), probs.argsort(dim=1)[:, 1]):
                hint = " (that is the second LEAST probable: sort in descending order)"
            raise AssertionError(f"rule {rule!r}: wrong classes{hint}")
    print(
        "✓ correct: ground truth from the labels; most, second and least from the model's own probabilities."
    )
    return True


def check_first_reaching(fn: Callable[[Sequence[int], Sequence[float], float], int | None]) -> bool:
    """Exercise (notebook 11): ``fn(iterations, ag, level)`` -> the first checkpoint whose AG is at least
    ``level``, or None when no checkpoint reaches it. Checked on curves that rise, dip and never arrive."""
    from opticam_lib.course.exercises import _run

    cases = [
        (([0, 5, 10, 15], [1.0, 4.0, 9.0, 12.0], 8.0), 10),
        (([0, 5, 10, 15], [1.0, 9.0, 7.0, 12.0], 8.0), 5),  # not monotone: the first time counts
        (([0, 5, 10], [1.0, 2.0, 3.0], 8.0), None),  # never reached
        (([0, 10, 20], [3.0, 8.0, 9.0], 8.0), 10),  # reaching the level exactly counts
        (([0, 10], [9.0, 1.0], 8.0), 0),
    ]
    for (its, ag, level), want in cases:
        got, done = _run(fn, its, ag, level)
        if not done:
            return False
        if want is None and got is not None:
            raise AssertionError(
                f"AG {ag} at iterations {its} never reaches {level}: return None, got {got!r}"
            )
        if want is not None and got != want:
            hint = (
                " (the first checkpoint at or above the level, not the best one)" if got is not None else ""
            )
            raise AssertionError(
                f"AG {ag} at iterations {its}, level {level}: expected {want}, got {got!r}{hint}"
            )
    print("✓ correct: the first checkpoint at or above the level, None when the curve never gets there.")
    return True


def check_energy_pointing_game(fn) -> bool:
    """Exercise (notebook 08): the energy pointing game (EP = precision, eq. A3) by hand.

    ``fn(saliency (H, W) float >= 0, box (4,) xyxy pixels, x1/y1 exclusive) -> float in [0, 1]``: the share of
    the map's mass inside the box. Checked against ``localization.energy_pointing_game`` on random maps and
    boxes; recall (A4), the pointing game (A6) and a swapped x/y are recognised and named.
    """
    from opticam_lib.course.exercises import _run

    g = torch.Generator().manual_seed(7)
    s = torch.rand(24, 32, generator=g) ** 3
    box = torch.tensor([5.0, 3.0, 19.0, 13.0])  # x0, y0, x1, y1: wider than tall, away from the corner
    got, done = _run(fn, s.clone(), box.clone())
    if not done:
        return False
    want = energy_pointing_game(s, box[None])
    try:
        value = float(got)
    except (TypeError, ValueError):
        raise AssertionError(f"return one number (a float); got {type(got).__name__}") from None
    if abs(value - want) > 1e-4:
        u = union_mask(box[None], tuple(s.shape))
        hints = {
            "that is recall (A4): divide by the total mass of the map, not by the box's area": float(
                s[u].sum()
            )
            / float(u.sum()),
            "that is the standard pointing game (A6): EP measures mass, not where the maximum is": float(
                u.flatten()[int(s.argmax())]
            ),
            "x and y are swapped: rows are y (from y0 to y1), columns are x": float(
                s[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])].sum() / s.sum()
            ),
            "that is in percent: return a fraction in [0, 1]": 100 * want,
        }
        for hint, v in hints.items():
            if abs(value - v) < 1e-4:
                raise AssertionError(hint)
        raise AssertionError(f"EP should be {want:.4f} on this case, got {value:.4f}")
    s2 = torch.zeros(10, 10)
    s2[0, 0] = 3.0
    s2[5, 5] = 1.0
    got2, _ = _run(fn, s2, torch.tensor([4.0, 4.0, 8.0, 8.0]))
    if abs(float(got2) - 0.25) > 1e-4:
        raise AssertionError(
            f"on a map with mass 3 outside and 1 inside the box, EP is 0.25; got {float(got2)}"
        )
    print(
        f"✓ correct: EP = {want:.3f} here, the share of the map's mass inside the box. A map that spreads over the"
        " context loses EP, however useful that context is to the model."
    )
    return True


def check_spearman(fn: Callable[[Tensor, Tensor], float]) -> bool:
    """Exercise (notebook 09): Spearman rank correlation of two maps, ties given their average rank.

    ``fn(a, b) -> float`` for two tensors of the same shape (flattened); checked against scipy on random maps,
    maps with ties, a monotone transform (must give exactly 1) and a reversal (-1). Prints ``✓`` or raises
    ``AssertionError`` with a hint; an unsolved exercise (``NotImplementedError``) gets a reminder.
    """
    g = torch.Generator().manual_seed(8)
    a = torch.rand(1, 12, 12, generator=g)
    b = 0.5 * a + 0.5 * torch.rand(1, 12, 12, generator=g)
    ties_a = (a * 4).floor() / 4  # four values only: many ties
    ties_b = (b * 3).floor() / 3
    try:
        fn(a, b)
    except NotImplementedError:
        print(
            "… not solved yet: replace `raise NotImplementedError` with your code, then run this cell again."
        )
        return False
    cases = {
        "two random maps": (a, b),
        "maps with ties": (ties_a, ties_b),
        "a map and its cube (same order)": (a, a**3),
        "a map and its reverse": (a, 1 - a),
    }
    for what, (x, y) in cases.items():
        got = float(fn(x, y))
        want = spearman(x, y)
        if abs(got - want) > 1e-6:
            hint = ""
            if abs(got - float(np.corrcoef(_flat(x), _flat(y))[0, 1])) < 1e-6:
                hint = ": that is Pearson's correlation of the values; correlate their ranks instead"
            elif what == "maps with ties":
                hint = ": give tied values their average rank (e.g. scipy.stats.rankdata)"
            raise AssertionError(f"{what}: expected {want:.4f}, got {got:.4f}{hint}")
    print("✓ correct: the correlation of the ranks; any increasing transform of a map leaves it at 1.")
    return True
