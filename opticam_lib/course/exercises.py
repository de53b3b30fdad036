"""Checkers for the course's exercises.

Each checker takes the student's function (or answer), runs it on small cases whose answer the library
computes independently, and prints ``✓`` with a short explanation, or raises ``AssertionError`` with a hint.
A function that still raises ``NotImplementedError`` gets a reminder instead of a failure, so a notebook with
unsolved exercises still runs top to bottom.

Under the grader (``course.grader``), a checker that passes also prints a receipt: a line keyed with a secret
the grader puts in the kernel's environment (``GRADER_TOKEN_ENV``; taken out of the environment as soon as this
module is imported or a checker runs), so a cell that merely prints ``✓`` is not taken for a pass. A function
that calls the library's own answer to its exercise (``average_gain`` for ``check_average_gain``, say) fails
with a hint: the exercise is to write it. Neither is proof against a student set on cheating (the grader runs
the student's code in the same process): they keep honest students' grades honest.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import numpy as np
import torch
from torch import Tensor

from opticam_lib.course.ablations import TARGET_RULES
from opticam_lib.methods.maps import combine, normalize
from opticam_lib.methods.opti_cam import saliency_map
from opticam_lib.metrics.classification import (
    average_drop,
    average_gain,
    average_increase,
)
from opticam_lib.metrics.localization import energy_pointing_game, union_mask
from opticam_lib.metrics.sanity import _flat, spearman

GRADER_TOKEN_ENV = "OPTICAM_GRADER_TOKEN"
RECEIPT_PREFIX = "[grader receipt]"


def receipt(checker: str, token: str, status: str = "pass") -> str:
    """The line ``checker`` prints, when the grader's ``token`` is in the environment, after it ran: ``status`` is
    ``"pass"``, ``"fail"`` (it raised AssertionError) or ``"not attempted"`` (the function still raises
    NotImplementedError). ``RECEIPT_PREFIX``, the checker's name, the status unless a pass, and an HMAC-SHA256 of
    name and status keyed with the token (16 hex digits): a line no student can print without the token."""
    message = checker if status == "pass" else f"{checker}:{status}"
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()[:16]
    return (
        f"{RECEIPT_PREFIX} {checker} {digest}"
        if status == "pass"
        else f"{RECEIPT_PREFIX} {checker} {status} {digest}"
    )


_SECRET: dict[str, str] = {}
# the library functions that already answer each exercise ("module:qualname"): calling one directly from the
# student's function is not doing the exercise
ANSWERS: dict[str, tuple[str, ...]] = {
    "check_range_normalization": ("opticam_lib.methods.maps:normalize",),
    "check_saliency_map": ("opticam_lib.methods.opti_cam:saliency_map",),
    "check_average_gain": (
        "opticam_lib.metrics.classification:average_gain",
        "opticam_lib.metrics.classification:classification_metrics",
    ),
    "check_masked_probability": ("opticam_lib.metrics.classification:class_probability",),
    "check_tokens_to_grid": ("opticam_lib.models.classifier:Classifier.to_grid",),
    "check_rollout": ("opticam_lib.methods.attention:rollout_matrix",),
    "check_area_loss": ("opticam_lib.methods.extremal:area_loss",),
    "check_target_rule": ("opticam_lib.course.ablations:choose_targets",),
    "check_energy_pointing_game": ("opticam_lib.metrics.localization:energy_pointing_game",),
    "check_spearman": ("opticam_lib.metrics.sanity:spearman",),
    "check_gradcam": ("opticam_lib.methods.cam_family:gradcam",),
    "check_opticam_loop": ("opticam_lib.methods.opti_cam:optimize", "opticam_lib.methods.opti_cam:opticam"),
    "check_rprop_step": ("opticam_lib.methods.opti_cam:optimize", "opticam_lib.methods.opti_cam:opticam"),
}
_LIBRARY = str(Path(__file__).resolve().parents[1]) + os.sep
_INSTALLED = tuple(
    {sysconfig.get_paths()[k] + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


def _grader_token() -> str | None:
    """The grader's secret: moved out of ``os.environ`` on first sight (a student's code that reads the
    environment later finds nothing), kept here."""
    token = os.environ.pop(GRADER_TOKEN_ENV, None)
    if token:
        _SECRET["token"] = token
    return _SECRET.get("token")


_grader_token()


def _answer_codes(checker: str) -> dict[object, str]:
    """The code objects of the library functions that answer ``checker``'s exercise, with their names."""
    import importlib

    codes: dict[object, str] = {}
    for spec in ANSWERS.get(checker, ()):
        module, qualname = spec.split(":")
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        name = qualname.rsplit(".", 1)[-1]
        while obj is not None:  # the public function and what it wraps
            code = getattr(obj, "__code__", None)
            # only the library function's own code: a decorator's wrapper (torch's no_grad, say) is shared by every
            # function it decorates, and calling any of those is not calling the answer
            if code is not None and code.co_filename.startswith(_LIBRARY) and code.co_name == name:
                codes[code] = f"{module}.{qualname}"
            obj = getattr(obj, "__wrapped__", None)
    return codes


def _from_outside(frame: FrameType | None) -> bool:
    """Whether the first caller that is neither library code nor installed code (torch's ``no_grad`` wrapper,
    functools) is the student's own: outside ``opticam_lib``."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_LIBRARY):
            return False
        if not name.startswith(_INSTALLED):
            return True
        frame = frame.f_back
    return False


@contextmanager
def _answers_called(codes: dict[object, str]) -> Iterator[list[str]]:
    """Collect, while the block runs, the answers among ``codes`` (``_answer_codes``) called from outside the
    library (the student's code); the checker itself may call them."""
    called: list[str] = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in codes and not called and _from_outside(frame.f_back):
            called.append(codes[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(profile if codes else previous)
    try:
        yield called
    finally:
        sys.setprofile(previous)


def _unwrapped(fn: object) -> object:
    """What ``fn`` runs in the end: through ``functools.partial``, decorators (``__wrapped__``) and bound methods."""
    for _ in range(10):
        inner = getattr(fn, "func", None) or getattr(fn, "__wrapped__", None) or getattr(fn, "__func__", None)
        if inner is None:
            break
        fn = inner
    return fn


def _graded(checker: Callable[..., bool]) -> Callable[..., bool]:
    """Make ``checker`` fail when the student's function is, or calls, the library's answer (``ANSWERS``), and
    print its receipt (``receipt``: pass, fail or not attempted) when the grader's token is set."""

    def report(status: str) -> None:
        token = _grader_token()
        if token:
            print(receipt(checker.__name__, token, status))

    @functools.wraps(checker)
    def wrapper(*args: object, **kwargs: object) -> bool:
        fn = args[0] if args else next(iter(kwargs.values()), None)
        if not callable(fn):
            report("fail")
            raise AssertionError(_not_a_function(checker.__name__, fn))
        codes = _answer_codes(checker.__name__)
        given = _unwrapped(fn)
        called = [codes[given.__code__]] if getattr(given, "__code__", None) in codes else []
        try:
            with _answers_called(codes) as calls:
                try:
                    passed = checker(*args, **kwargs)
                except AssertionError:
                    if not (called or calls):
                        raise
                    passed = False
            called += calls
            if called:
                name = called[0].rsplit(".", 1)[-1]
                raise AssertionError(
                    f"your function is or calls the library's own answer, {called[0]}: the exercise is to write "
                    f"{name} yourself (the library's version is what the checker compares with)"
                ) from None
        except AssertionError:
            report("fail")
            raise
        report("pass" if passed is True else "not attempted")
        return passed

    return wrapper


def _not_a_function(checker: str, given: object) -> str:
    """The hint for a checker handed something other than a function (the function's result, say)."""
    kind = f"a tensor of shape {tuple(given.shape)}" if isinstance(given, Tensor) else type(given).__name__
    return (
        f"pass your function itself (without calling it): {checker}(my_function), not "
        f"{checker}(my_function(...)); got {kind}"
    )


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
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if not torch.allclose(got, want, atol=atol, rtol=1e-4):
        err = float((got - want).abs().max())
        raise AssertionError(f"{what}: values differ from the expected ones (max error {err:.3g})")


def _scalar(got: object, what: str) -> float:
    """``got`` as a finite float, or ``AssertionError`` with a hint (not one number, NaN, infinite)."""
    if isinstance(got, str | bytes) or (isinstance(got, Tensor) and got.numel() != 1):
        kind = f"a tensor of shape {tuple(got.shape)}" if isinstance(got, Tensor) else type(got).__name__
        raise AssertionError(f"{what}: return one number (a float); got {kind}")
    try:
        value = float(got)
    except (TypeError, ValueError, RuntimeError):
        raise AssertionError(f"{what}: return one number (a float); got {type(got).__name__}") from None
    if value != value:
        raise AssertionError(
            f"{what}: your result is NaN (a mean over an empty selection, or a division by zero?)"
        )
    if value in (float("inf"), float("-inf")):
        raise AssertionError(f"{what}: your result is {value} (a division by zero?)")
    return value


def _off(got: float, want: float, tol: float) -> bool:
    """True when ``got`` is not within ``tol`` of ``want``; NaN and infinities are always off."""
    return not abs(got - want) <= tol


def _cases(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    acts = torch.rand(2, 5, 4, 4, generator=g)
    grads = torch.randn(2, 5, 4, 4, generator=g)
    return acts, grads


@_graded
def check_range_normalization(fn: Callable[[Tensor], Tensor]) -> bool:
    """Exercise (notebook 02): eq. (4); fn(maps (N, 1, H, W)) -> same, in [0, 1], constant maps -> zeros."""
    acts, _ = _cases(2)
    maps = torch.cat([acts[:, :1] * 3 - 1, torch.full((1, 1, 4, 4), 0.7)])
    want = normalize(maps, "range")
    got, done = _run(fn, maps.clone())
    if not done:
        return False
    if isinstance(got, Tensor) and torch.isnan(got).any():
        raise AssertionError("a constant map gave NaN: (A - min A) / (max A - min A) divides by zero there")
    _close(got, want, "range normalisation")
    print("✓ correct: every map now spans [0, 1], and a constant map gives zeros instead of NaN (eq. 4).")
    return True


def _takes(fn: Callable, *args: object) -> bool:
    """Whether ``fn`` can be called with ``args`` (True when its signature cannot be read)."""
    import inspect

    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature to read (a builtin): let the call tell
        return True
    return True


def _nan_on_constant(got: object, what: str) -> None:
    """``AssertionError`` naming the division by zero when ``got``, for a map that is constant, holds NaN."""
    if isinstance(got, Tensor) and got.is_floating_point() and bool(torch.isnan(got).any()):
        raise AssertionError(
            f"{what} gave NaN: (S - min S) / (max S - min S) divides by zero where the map is constant; give such "
            "a map zeros (e.g. torch.where(span > 0, (S - lo) / span.clamp(min=1e-12), torch.zeros_like(S)))"
        )


@_graded
def check_saliency_map(fn: Callable[[Tensor, Tensor, tuple[int, int]], Tensor]) -> bool:
    """Exercise (notebook 03): eq. (8) + n(up(.)); fn(u (N, K), acts (N, K, h, w), size) -> (N, 1, *size) in [0, 1].

    Checked at size (8, 8), at a size that is neither square nor a multiple of the grid's, and on an all-zero map
    (a constant map gives zeros, not NaN)."""
    acts, grads = _cases(3)
    u = grads[:, :, 0, 0]
    if not _takes(fn, u, acts, (8, 8)):
        raise AssertionError(
            "define your function as my_saliency_map(u, acts, size): the checker passes the size to upsample to"
        )
    empty = acts.clone()
    empty[1] = 0.0  # all-zero feature maps (a ReLU that kept nothing): a constant map
    cases = [(acts, (8, 8), ""), (acts, (6, 10), " at size=(6, 10)"), (empty, (8, 8), " on an all-zero map")]
    for a, size, where in cases:
        want = saliency_map(u, a, size)
        got, done = _run(fn, u.clone(), a.clone(), size)
        if not done:
            return False
        if isinstance(got, Tensor) and got.dim() == 4 and tuple(got.shape[-2:]) != size:
            raise AssertionError(
                f"size={size} gave maps of {tuple(got.shape[-2:])} pixels: upsample to `size`, the third argument "
                "(F.interpolate(S, size=size, mode='bilinear', align_corners=False)), not a fixed size or scale"
            )
        if where == " on an all-zero map":
            _nan_on_constant(got, "an all-zero map")
        _close(got, want, f"n(up(sum_k softmax(u)_k A^k)){where}")
    print("✓ correct: softmax weights, a convex combination, bilinear upsampling, then range normalisation.")
    return True


@_graded
def check_average_gain(fn: Callable[[Tensor, Tensor], float]) -> bool:
    """Exercise (notebook 05): eq. (15); fn(p (N,), o (N,)) -> AG in percent.

    Checked on two random cases; a wrong answer is told what it is (AI, AD, a fraction) where it is one, never
    the expected value (a number to paste would pass a case)."""
    cases = []
    for seed, n in ((5, 50), (15, 20)):
        g = torch.Generator().manual_seed(seed)
        p = torch.rand(n, generator=g) * 0.98 + 0.01
        cases.append((p, torch.rand(n, generator=g)))
    shown = average_gain(*cases[0])
    for p, o in cases:
        want = average_gain(p, o)
        got, done = _run(fn, p.clone(), o.clone())
        if not done:
            return False
        value = _scalar(got, "AG")
        if _off(value, want, 1e-3):
            hint = ": average [o - p]+ / (1 - p) over the images, times 100"
            if abs(value - average_increase(p, o)) < 1e-3:
                hint = " (that is AI, eq. 14: it counts images, it does not measure the gain)"
            elif abs(value - average_drop(p, o)) < 1e-3:
                hint = " (that is AD, eq. 13: swap the roles of p and o and divide by 1 - p)"
            elif abs(100 * value - want) < 1e-3:
                hint = " (a fraction: AG is in percent, multiply by 100)"
            raise AssertionError(
                f"AG on a random case of {len(p)} images: got {value:.2f}%, which is not eq. (15)'s value{hint}"
            )
    print(f"✓ correct: AG = {shown:.1f}% on this random case; [o - p]+ / (1 - p) mirrors AD's [p - o]+ / p.")
    return True


@_graded
def check_masked_probability(fn: Callable[..., Tensor]) -> bool:
    """Exercise (notebook 00): the class probability of a masked image, the quantity behind eq. (3), (10), (13)-(15).

    ``fn(classifier, images (N, 3, H, W) in [0, 1], masks (N, 1, H, W) in [0, 1], targets (N,)) -> (N,)``: the
    softmax probability of class ``targets[i]`` on ``images[i] * masks[i]``. Checked on a tiny random classifier
    with ImageNet normalisation inside, so masking the normalised tensor (grey pixels) is told apart, and with
    targets that are not the images' positions, so picking ``probs[i, i]`` is too.
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
    targets = torch.tensor([2, 0, 3, 1])  # not the images' positions: probs[i, i] is told apart
    want = class_probability(clf, images * masks, targets)
    got, done = _run(fn, clf, images.clone(), masks.clone(), targets.clone())
    if not done:
        return False
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
            "you picked column i of row i, the image's position: pick each image's target class, column "
            "targets[i] (probs[torch.arange(N), targets])": torch.softmax(logits, dim=1).diagonal(),
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


@_graded
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
            got, done = _run(fn, tokens.clone(), prefix)
        except RuntimeError as e:  # a reshape that cannot work, e.g. with the class token kept
            raise AssertionError(_reshape_hint(e, tokens, prefix, side)) from None
        if not done:
            return False
        if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
            got = got.detach().float().cpu()  # float64 answers compare too
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


def _reshape_hint(error: RuntimeError, tokens: Tensor, prefix: int, side: int) -> str:
    """The tokens-to-grid checker's hint for a RuntimeError: "drop the prefix" only when the reshape got all T
    tokens, a word on ``view`` after ``transpose``, else the counts."""
    import re

    t = tokens.shape[1]
    grid = f"{t - prefix} patch tokens make a {side}x{side} grid"
    size = re.search(r"input of size (\d+)", str(error))
    if size and int(size[1]) == tokens.numel():
        return f"{error}. With {t} tokens and {prefix} prefix token(s), drop the prefix first: {grid}"
    if "view size is not compatible" in str(error):
        return f"{error}. After transpose the tensor is not contiguous: use .reshape(...) (or .contiguous().view(...))"
    return f"{error}. With {t} tokens and {prefix} prefix token(s), {grid}"


@_graded
def check_rollout(fn: Callable[[list[Tensor]], Tensor]) -> bool:
    """Exercise (notebook 10): attention rollout (Abnar & Zuidema), heads averaged.

    ``fn(attentions) -> (N, T, T)`` with ``attentions`` a list of L tensors (N, heads, T, T), input side first;
    expected: ``Â_L ... Â_1`` with ``Â_l = (mean over heads of A_l + I) / 2``.
    """
    from opticam_lib.methods.attention import rollout_matrix

    g = torch.Generator().manual_seed(10)
    atts = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g) * 2, dim=-1) for _ in range(3)]
    want = rollout_matrix(atts)
    got, done = _run(fn, [a.clone() for a in atts])
    if not done:
        return False
    if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
        got = got.detach().float().cpu()  # float64 answers compare too
        eye = torch.eye(5)
        mean = [a.mean(dim=1) for a in atts]
        hats = [(m + eye) / 2 for m in mean]
        no_residual = mean[2] @ mean[1] @ mean[0]
        wrong_order = hats[0] @ hats[1] @ hats[2]
        summed = [(a.sum(dim=1) + eye) / 2 for a in atts]
        no_half = [m + eye for m in mean]
        if torch.allclose(got, no_residual, atol=1e-5):
            raise AssertionError(
                "that is the product of the attention matrices alone: add the residual connection, "
                "(A + I) / 2, before multiplying"
            )
        if torch.allclose(got, wrong_order, atol=1e-5):
            raise AssertionError(
                "the product runs the wrong way: the first block acts first, R = Â_3 @ Â_2 @ Â_1"
            )
        if torch.allclose(got, summed[2] @ summed[1] @ summed[0], atol=1e-4):
            raise AssertionError(
                "the heads are summed: average them (a.mean(dim=1)), so that each row of W sums to 1, "
                "then (W + I) / 2"
            )
        if torch.allclose(got, no_half[2] @ no_half[1] @ no_half[0], atol=1e-4):
            raise AssertionError("the rows should sum to 1: use (A + I) / 2, not A + I")
        if torch.allclose(got.sum(-1), torch.full_like(got.sum(-1), 8.0), atol=1e-3):
            raise AssertionError(
                "the rows should sum to 1: average the heads (mean, not sum) and add the residual as (A + I) / 2"
            )
    _close(got, want, "rollout")
    print("✓ correct: (A + I) / 2 per block, heads averaged, multiplied from the first block to the last.")
    return True


@_graded
def check_area_loss(fn: Callable[[Tensor, float], Tensor]) -> bool:
    """Exercise (notebook 06): the ranking area constraint of extremal perturbations.

    ``fn(masks (N, ...), area) -> (N,)`` with ``R_a(m) = mean_i (sort(m)_i - r_a,i)^2``, the mask values sorted in
    ascending order and r_a the reference: floor(M (1 - a)) zeros, then ones (M values per mask).
    """
    from opticam_lib.methods.extremal import area_loss, area_reference

    g = torch.Generator().manual_seed(11)
    masks = torch.rand(3, 1, 6, 5, generator=g)
    masks[1] = (masks[1] > 0.7).float()  # a binary mask
    area = 0.31  # M (1 - a) = 20.7 for M = 30: floor, round and ceil give different references
    want = area_loss(masks, area)
    got, done = _run(fn, masks.clone(), area)
    if not done:
        return False
    if isinstance(got, Tensor) and tuple(got.shape) == tuple(want.shape):
        flat = masks.flatten(1)
        ref = area_reference(flat.shape[1], area)
        wrong = {
            "unsorted": ((flat - ref) ** 2).mean(dim=1),
            "descending": ((flat.sort(dim=1, descending=True).values - ref) ** 2).mean(dim=1),
            "sum": ((flat.sort(dim=1).values - ref) ** 2).sum(dim=1),
            "mean area": (flat.mean(dim=1) - area) ** 2,
            "rounded": ((flat.sort(dim=1).values - _rounded_reference(flat.shape[1], area)) ** 2).mean(dim=1),
        }
        hints = {
            "unsorted": "sort the mask values first: R_a compares the *sorted* mask with r_a, wherever the pixels are",
            "descending": "sort in ascending order: r_a starts with its zeros and ends with its ones",
            "sum": "average the squared differences over the M values (a mean), do not sum them",
            "mean area": "(mean(m) - a)^2 only constrains the average; R_a compares every sorted value with r_a",
            "rounded": "r_a has floor(M (1 - a)) zeros: round M (1 - a) down, not to the nearest or up "
            "(area_reference does it)",
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


def _rounded_reference(numel: int, area: float) -> Tensor:
    """r_a with M (1 - a) rounded up instead of down (a learner's slip the area-loss checker names)."""
    ref = torch.ones(numel)
    ref[: math.ceil(numel * (1 - area))] = 0
    return ref


@_graded
def check_target_rule(fn: Callable[[Tensor, Tensor, str], Tensor]) -> bool:
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


@_graded
def check_energy_pointing_game(fn: Callable[[Tensor, Tensor], float]) -> bool:
    """Exercise (notebook 08): the energy pointing game (EP = precision, eq. A3) by hand.

    ``fn(saliency (H, W) float >= 0, box (4,) xyxy pixels, x1/y1 exclusive) -> float in [0, 1]``: the share of
    the map's mass inside the box. Checked against ``localization.energy_pointing_game`` on random maps and
    boxes; recall (A4), the pointing game (A6) and a swapped x/y are recognised and named.
    """
    from opticam_lib.course.exercises import _run

    g = torch.Generator().manual_seed(7)
    s = torch.rand(24, 32, generator=g) ** 3
    box = torch.tensor([5.0, 3.0, 19.0, 13.0])  # x0, y0, x1, y1: wider than tall, away from the corner
    want = energy_pointing_game(s, box[None])
    got, done = _run(fn, s.clone(), box.clone())
    if not done:
        return False
    value = _scalar(got, "EP")
    if _off(value, want, 1e-4):
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
    got2, _ = _run(fn, s2.clone(), torch.tensor([4.0, 4.0, 8.0, 8.0]))
    value2 = _scalar(got2, "EP on a map with mass 3 outside and 1 inside the box")
    if _off(value2, 0.25, 1e-4):
        raise AssertionError(f"on a map with mass 3 outside and 1 inside the box, EP is 0.25; got {value2}")
    print(
        f"✓ correct: EP = {want:.3f} here, the share of the map's mass inside the box. A map that spreads over the"
        " context loses EP, however useful that context is to the model."
    )
    return True


def _spearman_mistakes(x: Tensor, y: Tensor) -> list[tuple[float, str]]:
    """The typical wrong Spearman correlations of two maps, with their hints, the most specific first: dense ranks
    (on maps with ties they are Pearson's of the values too), the no-ties formula, Pearson of the values."""
    from opticam_lib.metrics.sanity import average_ranks

    def pearson(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a, b)[0, 1])

    def formula(a: np.ndarray, b: np.ndarray) -> float:
        n = a.size
        return float(1 - 6 * ((a - b) ** 2).sum() / (n * (n * n - 1)))

    fx, fy = _flat(x).astype(np.float64), _flat(y).astype(np.float64)
    dx, dy = (np.unique(v, return_inverse=True)[1].reshape(-1) + 1.0 for v in (fx, fy))
    ax, ay = average_ranks(fx), average_ranks(fy)
    dense = (
        ": ties share the average of the ranks they occupy: the values 5, 7, 7, 9 get ranks 1, 2.5, 2.5, 4, "
        "not the dense ranks 1, 2, 2, 3"
    )
    no_ties = (
        ": 1 - 6 sum(d^2) / (n (n^2 - 1)) assumes no ties: with ties it is not the correlation of the ranks; "
        "compute the Pearson correlation of the (average) ranks"
    )
    return [
        (pearson(dx, dy), dense),
        (formula(dx, dy), dense + "; and" + no_ties[1:]),
        (formula(ax, ay), ": that formula," + no_ties[1:]),
        (pearson(fx, fy), ": that is Pearson's correlation of the values; correlate their ranks instead"),
    ]


@_graded
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
    _, solved = _run(fn, a.clone(), b.clone())
    if not solved:
        return False
    cases = {
        "two random maps": (a, b),
        "maps with ties": (ties_a, ties_b),
        "a map and its cube (same order)": (a, a**3),
        "a map and its reverse": (a, 1 - a),
    }
    for what, (x, y) in cases.items():
        want = spearman(x, y)
        got = _scalar(fn(x.clone(), y.clone()), what)
        if _off(got, want, 1e-6):
            hint = ""
            for value, named in _spearman_mistakes(x, y):
                if abs(got - value) < 1e-6 and _off(value, want, 1e-6):
                    hint = named
                    break
            else:
                if what == "maps with ties":
                    hint = ": give tied values their average rank (e.g. scipy.stats.rankdata)"
            raise AssertionError(f"{what}: expected {want:.4f}, got {got:.4f}{hint}")
    print("✓ correct: the correlation of the ranks; any increasing transform of a map leaves it at 1.")
    return True


# --------------------------------------------------------------------------------------------------------------
# Exercises that rebuild a method end to end (notebooks 01, 03, 04, 11), checked against the library
# --------------------------------------------------------------------------------------------------------------


def _tiny_problem(seed: int = 0, n: int = 3, size: int = 16):
    """A tiny CNN wrapped as a Classifier (conv-relu x3, GAP, Linear(6, 4); ``"3"`` is the second ReLU, 6 maps of
    8 x 8 followed by a convolution, ``"5"`` the last one before the pooling), ``n`` random images and targets
    that are not all the predicted class. Deterministic; the caller's random state is untouched."""
    from torch import nn

    from opticam_lib.models.classifier import wrap_classifier

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 6, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 4),
        )
        clf = wrap_classifier(net, "3", name="tiny", num_classes=4, input_size=size)
        images = torch.rand(n, 3, size, size)
    with torch.no_grad():
        predicted = clf.model(images).argmax(dim=1)
    targets = (predicted + torch.arange(n) % 2) % 4  # every other image explains a class it does not predict
    return clf, images, targets


def _same(a: object, b: Tensor, atol: float) -> bool:
    return (
        isinstance(a, Tensor)
        and tuple(a.shape) == tuple(b.shape)
        and bool(torch.allclose(a.detach().float().cpu(), b.float().cpu(), atol=atol, rtol=0))
    )


def _named(got: Tensor, wrong: dict[str, Tensor], right: Tensor, atol: float) -> None:
    """Raise ``AssertionError(hint)`` for the first typical mistake ``got`` matches (and ``right`` does not)."""
    for hint, value in wrong.items():
        if _same(got, value, atol) and not _same(right, value, atol):
            raise AssertionError(hint)


@_graded
def check_gradcam(fn: Callable[..., Tensor]) -> bool:
    """Exercise (notebook 01): Grad-CAM end to end, from a hook to the map.

    ``fn(classifier, images (N, 3, H, W), targets (N,), layer) -> (N, 1, H, W)``: capture the layer's feature
    maps A with a forward hook (and remove it), differentiate each image's class logit y_c with respect to A,
    weights = spatial mean of the gradient (eq. 2), relu of the weighted sum (eq. 1), bilinear upsampling to the
    image's size, min-max normalisation per map. Checked against ``gradcam`` on a tiny CNN at an inner layer
    (where the gradient varies over the map) and at the last one, then on a map the ReLU leaves all zero (NaN
    there, from a normalisation without the guard, is named); typical mistakes are named.
    """
    from opticam_lib.hooks import hook_count
    from opticam_lib.methods.cam_family import gradcam, hirescam
    from opticam_lib.methods.feature_pass import activations_and_gradients
    from opticam_lib.methods.maps import to_saliency, upsample

    for layer in ("3", "5"):
        clf, images, targets = _tiny_problem(1)
        want = gradcam(clf, images, targets, layer=layer)
        got, done = _run(fn, clf, images.clone(), targets.clone(), layer)
        if not done:
            return False
        if hook_count(clf.model):
            raise AssertionError(
                f"{hook_count(clf.model)} hook(s) left on the model: remove yours (handle.remove(), in a finally "
                "block), or it runs again at every later forward pass"
            )
        acts, grads, logits = activations_and_gradients(clf, images, targets, layer)
        size = tuple(images.shape[-2:])
        if isinstance(got, Tensor) and got.dim() == 4 and tuple(got.shape[-2:]) != size:
            shown = tuple(got.shape[-2:])
            if shown == tuple(acts.shape[-2:]):
                raise AssertionError(
                    f"got maps of {shown} pixels: upsample the {shown} grid bilinearly to the image's {size} "
                    "(F.interpolate(..., mode='bilinear', align_corners=False))"
                )
            raise AssertionError(
                f"got maps of {shown} pixels for images of {size}: the map must have the image's own size, "
                "taken from the images (size=images.shape[-2:]), not a fixed one"
            )
        w = grads.mean(dim=(2, 3))
        probs_grads = _grads_of(
            clf, images, layer, lambda out, t=targets: torch.softmax(out, 1).gather(1, t[:, None])
        )
        all_grads = _grads_of(clf, images, layer, lambda out: out)
        predicted = logits.argmax(dim=1)
        wrong = {
            "no ReLU: Grad-CAM is relu(sum_k w_k A^k); without it the cells against the class are folded into "
            "the normalised map": to_saliency(combine(w, acts, "identity"), size),
            "you differentiated the probability: eq. (2) uses the class logit y_c (before the softmax)": to_saliency(
                combine(probs_grads.mean(dim=(2, 3)), acts, "relu"), size
            ),
            "you differentiated the sum of all logits: select each image's own class, logits.gather(1, "
            "targets[:, None]), before the backward pass": to_saliency(
                combine(all_grads.mean(dim=(2, 3)), acts, "relu"), size
            ),
            "that is HiRes-CAM (gradient times activation cell by cell): Grad-CAM averages the gradient over "
            "each map first, one weight per channel": hirescam(clf, images, targets, layer=layer),
            "the weights come from the activations: eq. (2) averages the *gradient* dy_c/dA^k": to_saliency(
                combine(acts.mean(dim=(2, 3)), acts, "relu"), size
            ),
            "these are the maps of the predicted classes: explain `targets`, the class given for each image": gradcam(
                clf, images, predicted, layer=layer
            ),
            "normalise by the range, (S - min S) / (max S - min S), not by the maximum": normalize(
                upsample(combine(w, acts, "relu"), size), "max"
            ),
            "nearest-neighbour upsampling: use mode='bilinear', align_corners=False": normalize(
                torch.nn.functional.interpolate(combine(w, acts, "relu"), size=size, mode="nearest"), "range"
            ),
        }
        if isinstance(got, Tensor):
            _named(got, wrong, want, 1e-5)
        _close(got, want, f"Grad-CAM maps at layer {layer!r}")
    grads_left = any(p.grad is not None for p in clf.model.parameters())
    # a map the ReLU leaves empty: every target class weighs each feature map of the last layer negatively, so
    # sum_k w_k A^k <= 0 everywhere (A >= 0 after the ReLU) and the map is all zeros, which eq. (4) must keep
    clf, images, targets = _tiny_problem(1)
    with torch.no_grad():
        head = [m for m in clf.model.modules() if isinstance(m, torch.nn.Linear)][-1]
        head.weight[targets] = -head.weight[targets].abs()
    want = gradcam(clf, images, targets, layer="5")
    got, _ = _run(fn, clf, images.clone(), targets.clone(), "5")
    _nan_on_constant(got, "a map the ReLU leaves all zero (every weighted sum negative)")
    _close(got, want, "Grad-CAM maps where the ReLU leaves nothing (all zeros)")
    note = (
        " (your backward pass also filled the parameters' .grad: torch.autograd.grad(score, A) computes only "
        "what you ask for)"
        if grads_left
        else ""
    )
    print(
        "✓ correct: hook, class logit, gradient, spatial mean, weighted sum, ReLU, bilinear upsampling and range "
        f"normalisation: the library's Grad-CAM.{note}"
    )
    return True


def _grads_of(clf, images: Tensor, layer: str, score: Callable[[Tensor], Tensor]) -> Tensor:
    """d(sum of score(logits)) / dA at ``layer``, for the checkers' typical mistakes."""
    from opticam_lib.hooks import capture, frozen

    x = images.detach().clone().requires_grad_(True)  # parameters are frozen: the graph starts at the input
    with frozen(clf.model), capture(clf, layer) as cap, torch.enable_grad():
        out = clf.model(x)
        (g,) = torch.autograd.grad(score(out).sum(), cap.activations)
    return g.detach()


def _opticam_reference(
    clf,
    images: Tensor,
    targets: Tensor,
    iterations: int,
    lr: float = 0.1,
    *,
    softmax: bool = True,
    sign: float = 1.0,
    normalise: bool = True,
    selector: str = "logit",
    adam: bool = True,
    bias_correction: bool = True,
    init: float = 0.5,
    mean: bool = False,
) -> tuple[Tensor, Tensor]:
    """Opti-CAM by hand with switches for the checker's typical mistakes: (u, maps)."""
    from opticam_lib.methods.feature_pass import features
    from opticam_lib.methods.maps import upsample
    from opticam_lib.methods.opti_cam import select

    acts, _ = features(clf, images)
    size = tuple(images.shape[-2:])
    u = torch.full(acts.shape[:2], init)
    m, v = torch.zeros_like(u), torch.zeros_like(u)

    def mask(u_: Tensor) -> Tensor:
        s = combine(torch.softmax(u_, dim=1) if softmax else u_, acts, "identity")
        return normalize(upsample(s, size), "range") if normalise else upsample(s, size)

    for t in range(1, iterations + 1):
        u_ = u.clone().requires_grad_(True)
        f = select(clf.model(images * mask(u_)), targets, selector)
        (g,) = torch.autograd.grad(f.mean() if mean else f.sum(), u_)
        g = sign * g
        with torch.no_grad():
            if adam:
                m = 0.9 * m + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                mh, vh = (m / (1 - 0.9**t), v / (1 - 0.999**t)) if bias_correction else (m, v)
                u = u + lr * mh / (vh.sqrt() + 1e-8)
            else:
                u = u + lr * g
    with torch.no_grad():
        return u, mask(u)


@_graded
def check_opticam_loop(fn: Callable[..., tuple[Tensor, Tensor]]) -> bool:
    """Exercise (notebook 03, the capstone): the Opti-CAM loop, written by hand.

    ``fn(classifier, images (N, 3, H, W), targets (N,), iterations, lr=0.1) -> (u (N, K), maps (N, 1, H, W))``:
    feature maps once, u = 0.5, then ``iterations`` times: softmax weights, the map n(up(.)), the logit of each
    image's class on the masked image, its gradient with respect to u, one Adam step of *ascent* (betas 0.9,
    0.999, eps 1e-8). Checked against ``optimize(..., tol=None)`` to within 1e-5 on a tiny CNN, 4 iterations;
    typical mistakes are named (the gradient of the mean over the images among them), and so is a loop that
    recomputes the features at every iteration (the same numbers, one forward pass more per iteration; told from
    other extra passes, a forward pass only for logging say, by the passes on the unmasked images).
    """
    from opticam_lib.methods.opti_cam import optimize

    iterations = 4
    clf, images, targets = _tiny_problem(2)
    ref = optimize(clf, images, targets, iterations=iterations, lr=0.1, tol=None, progress=False)
    seen = [0, 0]  # images forwarded, passes on the unmasked images (feature passes)

    def count(_module, inputs, _output) -> None:
        x = inputs[0]
        seen[0] += int(x.shape[0])
        if tuple(x.shape) == tuple(images.shape) and torch.equal(x.detach().cpu(), images):
            seen[1] += 1

    handle = clf.model.register_forward_hook(count)
    try:
        out, done = _run(fn, clf, images.clone(), targets.clone(), iterations)
    finally:
        handle.remove()
    if not done:
        return False
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise AssertionError(f"return two tensors, (u, maps); got {type(out).__name__}")
    u, maps = out
    n = images.shape[0]
    if not isinstance(u, Tensor) or tuple(u.shape) != tuple(ref.u.shape):
        shape = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise AssertionError(
            f"u: expected shape {tuple(ref.u.shape)} (one u per image and channel), got {shape}"
        )
    u = u.detach().float().cpu()
    shift = u - ref.u.cpu()
    if float(shift.abs().max()) > 1e-4 and torch.allclose(shift, shift.mean(), atol=1e-5):
        raise AssertionError(
            "your maps are right but u is shifted by a constant: the softmax ignores a constant (u = 0 and "
            "u = 0.5 give the same weights and gradients), but optimize starts from u = 0.5"
        )
    variants = {
        "no softmax: the weights are softmax(u) (eq. 8), positive and summing to 1": {"softmax": False},
        "u went down the gradient: Opti-CAM *maximises* F (eq. 9); with torch.optim.Adam pass maximize=True, or "
        "step on -F": {"sign": -1.0},
        "the mask is not normalised: n(up(S)) maps each map to [0, 1] (eq. 4) before masking": {
            "normalise": False
        },
        "you maximised the probability: eq. (10) uses the logit y_c of the masked image": {
            "selector": "prob"
        },
        "plain gradient ascent (u + lr * g): the paper uses Adam (eq. 9, appendix A)": {"adam": False},
        "Adam without its bias corrections m / (1 - 0.9^t) and v / (1 - 0.999^t)": {"bias_correction": False},
        "you differentiated the mean of the scores: take the gradient of the sum over the images, not the mean "
        "(the mean divides every gradient by N; Adam undoes that only up to its eps)": {"mean": True},
    }
    wrong = {
        hint: _opticam_reference(clf, images, targets, iterations, **kw)[0] for hint, kw in variants.items()
    }
    wrong["one Adam step too many: run exactly `iterations` steps"] = _opticam_reference(
        clf, images, targets, iterations + 1
    )[0]
    wrong["one Adam step too few: run exactly `iterations` steps"] = _opticam_reference(
        clf, images, targets, iterations - 1
    )[0]
    wrong["learning rate 0.01: use lr (0.1, the paper's)"] = _opticam_reference(
        clf, images, targets, iterations, lr=0.01
    )[0]
    _named(u, wrong, ref.u, 1e-5)
    _close(u, ref.u, "u after the last Adam step", atol=1e-5)
    if isinstance(maps, Tensor) and tuple(maps.shape) == tuple(ref.maps.shape):
        if _same(maps, _opticam_reference(clf, images, targets, iterations - 1)[1], 1e-5) and not _same(
            maps, ref.maps, 1e-5
        ):
            raise AssertionError(
                "u is right but the maps are those of the previous u: compute them from the final u"
            )
    _close(maps, ref.maps, "the maps n(up(sum_k softmax(u)_k A^k)) of the final u", atol=1e-5)
    if seen[0] >= n * 2 * iterations:
        passes = f"the right numbers, but {seen[0] // n} forward passes per image where optimize needs {iterations + 1}"
        if seen[1] > 1:
            raise AssertionError(
                f"{passes}: the feature maps do not depend on u, so compute them once, before the loop"
            )
        raise AssertionError(
            f"{passes} (the features once, then one masked pass per step): more forward passes than needed; drop "
            "the extra ones (a pass only to log the score, say: the score of each step is already computed)"
        )
    print(
        f"✓ correct: your loop gives optimize's u and maps to within 1e-5 after {iterations} Adam steps, with "
        f"{seen[0] // n} forward passes per image (the features once, then one masked pass per step)."
    )
    return True


@_graded
def check_cost_prediction(fn: Callable[..., dict[str, float]]) -> bool:
    """Exercise (notebook 04): predict Score-CAM's and Opti-CAM's time from measured passes.

    ``fn(forward_s, backward_ratio, channels, iterations, images, chunk) -> {"Score-CAM": s, "Opti-CAM": s}``,
    seconds for ``images`` images, where ``forward_s[b]`` is the time per image of one forward pass in a batch of
    ``b`` and a backward pass costs ``backward_ratio`` forward passes. Score-CAM: the feature pass of the batch,
    then ``channels`` masked passes per image, forwarded in chunks of ``chunk``; Opti-CAM: the feature pass, then
    ``iterations`` forward and backward passes of the batch. Checked on a CPU-like and two GPU-like cases (the
    paper's VGG16 and ResNet50, where the cheaper method differs); typical mistakes are named. Times rounded to the
    millisecond pass; keys other than the two are ignored.
    """
    cases = [  # (forward_s, backward_ratio, channels, iterations, images, chunk)
        ({8: 0.0245, 32: 0.0478}, 1.3, 1280, 100, 8, 32),  # a 2-core CPU: a chunk of 32 costs more per image
        ({8: 1.6e-3, 256: 0.76e-3}, 2.0, 512, 100, 8, 256),  # VGG16-like GPU: Score-CAM cheaper
        ({8: 1.7e-3, 256: 0.93e-3}, 2.0, 2048, 100, 8, 256),  # ResNet50-like GPU: Opti-CAM cheaper
    ]
    cheaper = []
    for forward_s, ratio, k, t, n, chunk in cases:
        got, done = _run(fn, dict(forward_s), ratio, k, t, n, chunk)
        if not done:
            return False
        fn_, fc = forward_s[n], forward_s[chunk]
        want = {"Score-CAM": n * (fn_ + k * fc), "Opti-CAM": n * (fn_ + t * fn_ * (1 + ratio))}
        if not isinstance(got, dict):
            raise AssertionError(
                f"return a dict with the keys 'Score-CAM' and 'Opti-CAM'; got {type(got).__name__}"
            )
        missing = [key for key in want if key not in got]
        if missing:
            yours = ", ".join(repr(key) for key in got) or "none"
            raise AssertionError(
                f"return a dict with the keys 'Score-CAM' and 'Opti-CAM'; {' and '.join(map(repr, missing))} "
                f"missing (your keys: {yours})"
            )
        mistakes = {
            "Score-CAM": {
                "a pass does not always cost the same: Score-CAM forwards its masked images in chunks of `chunk`, "
                "at forward_s[chunk] per image": n * (fn_ + k * fn_),
                "the feature pass is missing: both methods first run the batch once (forward_s[images])": n
                * k
                * fc,
                "the feature pass runs once on the batch of `images` (forward_s[images]), not in a chunk": n
                * (k + 1)
                * fc,
                "that is for one image: multiply by the number of images": fn_ + k * fc,
            },
            "Opti-CAM": {
                "each iteration is a forward *and* a backward pass: (1 + backward_ratio) forward passes": n
                * (fn_ + t * fn_),
                "the feature pass is missing: both methods first run the batch once (forward_s[images])": n
                * t
                * fn_
                * (1 + ratio),
                "that is for one image: multiply by the number of images": fn_ + t * fn_ * (1 + ratio),
            },
        }
        for method, value in want.items():
            g = _scalar(got[method], f"{method} (a number of seconds)")
            if _off(g, value, _cost_tolerance(value)):
                for hint, v in mistakes[method].items():
                    if not _off(g, v, _cost_tolerance(v)):
                        raise AssertionError(f"{method}: {hint}")
                raise AssertionError(
                    f"{method} with forward_s={forward_s}, backward_ratio={ratio}, channels={k}, iterations={t}, "
                    f"images={n}, chunk={chunk}: expected {value:.6f} s, got {g:.6f} s"
                )
        cheaper.append(min(want, key=want.get))
    print(
        f"✓ correct: on the three cases the cheaper method is {', '.join(cheaper)}: on a GPU Score-CAM's large "
        "chunks can make it the cheaper one (VGG16, K = 512), as in the paper's Table 1, but not at K = 2048."
    )
    return True


def _cost_tolerance(seconds: float) -> float:
    """How far a predicted time may be from the cost model's: half a millisecond (an answer rounded to the
    millisecond passes; the named mistakes are all further off), or 1e-6 of it for long times."""
    return max(5e-4, 1e-6 * abs(seconds)) * (1 + 1e-9)  # 1e-9: the float error of rounding


def _rprop_reference(kind: str = "") -> Callable[[Tensor, Tensor, Tensor, dict], tuple[Tensor, dict]]:
    """iRprop+'s step as ``optimize(optimizer="rprop")`` takes it, or one of the checker's typical mistakes."""
    from opticam_lib.methods.opti_cam import RPROP_ETAS, RPROP_STEPS, RPROP_ZERO

    up, down = RPROP_ETAS[::-1] if kind == "swapped" else RPROP_ETAS

    def step_fn(u: Tensor, grad: Tensor, f: Tensor, state: dict) -> tuple[Tensor, dict]:
        grad = torch.where(grad.abs() > RPROP_ZERO * grad.abs().amax(dim=1, keepdim=True), grad, 0.0)
        kept = grad * state["grad"]
        step = torch.where(
            kept > 0, state["step"] * up, torch.where(kept < 0, state["step"] * down, state["step"])
        )
        if kind != "no_clamp":
            step = step.clamp(*RPROP_STEPS)
        flip = kept < 0
        fell = (f < state["f"])[:, None]
        direction = -1.0 if kind == "descent" else 1.0
        forward = step * (grad if kind == "magnitude" else grad.sign()) * direction
        if kind == "always_undo":
            move = torch.where(flip, -state["move"], forward)
        elif kind == "never_undo":
            move = torch.where(flip, 0.0, forward)
        else:
            move = torch.where(flip, torch.where(fell, -state["move"], 0.0), forward)
        new_grad = grad if kind == "keep_grad" else torch.where(flip, 0.0, grad)
        return u + move, {"grad": new_grad, "step": step, "move": move, "f": f.clone()}

    return step_fn


def _copied(value: object) -> object:
    """A copy of one value of the iRprop+ state, so that a step cannot change what the loop keeps: tensors
    cloned, other values (a step counter, a list, an array of the learner's own) deep-copied where they can be."""
    import copy

    if isinstance(value, Tensor):
        return value.clone()
    try:
        return copy.deepcopy(value)
    except Exception:  # not copyable: passed as it is
        return value


def _rprop_run(step_fn: Callable, clf, images: Tensor, targets: Tensor, iterations: int) -> Tensor:
    """Opti-CAM's loop with ``step_fn`` as the optimiser's step: the final u."""
    from opticam_lib.methods.feature_pass import features
    from opticam_lib.methods.opti_cam import compute_objective, saliency_map

    acts, _ = features(clf, images)
    size = tuple(images.shape[-2:])
    u = torch.full(acts.shape[:2], 0.5)
    state = {
        "grad": torch.zeros_like(u),
        "step": torch.full_like(u, 0.5),
        "move": torch.zeros_like(u),
        "f": torch.full((u.shape[0],), float("nan")),
    }
    for _ in range(iterations):
        u_ = u.clone().requires_grad_(True)
        f = compute_objective(clf, images, saliency_map(u_, acts, size), targets)
        (grad,) = torch.autograd.grad(f.sum(), u_)
        out = step_fn(u.clone(), grad.detach(), f.detach(), {k: _copied(v) for k, v in state.items()})
        if not (isinstance(out, tuple | list) and len(out) == 2 and isinstance(out[1], dict)):
            raise AssertionError("return (u, state): the new u and the new state dict")
        u, state = out
        if not isinstance(u, Tensor) or tuple(u.shape) != tuple(acts.shape[:2]):
            raise AssertionError(f"u must keep its shape {tuple(acts.shape[:2])}")
        missing = {"grad", "step", "move", "f"} - set(state)
        if missing:
            raise AssertionError(
                f"the state must keep the keys 'grad', 'step', 'move' and 'f'; missing {missing}"
            )
        for key in ("grad", "step", "move", "f"):
            if not isinstance(state[key], Tensor):
                raise AssertionError(
                    f"state[{key!r}] must be a tensor, got {type(state[key]).__name__}: keep the state's values as "
                    "torch tensors (torch.where(...), f.clone()); extra keys of your own may hold anything"
                )
        u = u.detach()
    return u


@_graded
def check_rprop_step(fn: Callable[[Tensor, Tensor, Tensor, dict], tuple[Tensor, dict]]) -> bool:
    """Exercise (notebook 11): one step of iRprop+, the sign-based optimiser of ``optimize(optimizer="rprop")``.

    ``fn(u (N, K), grad = dF/du (N, K), f = F (N,), state) -> (new u, new state)`` with ``state`` a dict:
    ``"grad"`` the previous gradient (0 after a sign flip), ``"step"`` each coordinate's step, ``"move"`` its
    last move, ``"f"`` the previous F (NaN at first). Run inside an Opti-CAM loop on a tiny CNN for 12 iterations
    from ``{"grad": 0, "step": 0.5, "move": 0, "f": NaN}`` and compared with ``optimize(optimizer="rprop",
    tol=None)`` to within 1e-5; typical mistakes (Rprop+ that always undoes, iRprop- that never does, the
    gradient's size, descent, no clamp, swapped factors, a stored gradient not zeroed after a flip) are named.
    """
    from opticam_lib.methods.opti_cam import optimize

    iterations = 12
    clf, images, targets = _tiny_problem(3)
    probe = torch.zeros(1, 2)
    try:
        fn(
            probe.clone(),
            torch.ones(1, 2),
            torch.zeros(1),
            {
                "grad": torch.zeros(1, 2),
                "step": torch.full((1, 2), 0.5),
                "move": torch.zeros(1, 2),
                "f": torch.full((1,), float("nan")),
            },
        )
    except NotImplementedError:
        print(
            "… not solved yet: replace `raise NotImplementedError` with your code, then run this cell again."
        )
        return False
    got = _rprop_run(fn, clf, images, targets, iterations)
    ref = optimize(clf, images, targets, iterations=iterations, optimizer="rprop", tol=None, progress=False).u
    hints = {
        "descent": "u went down the gradient: Opti-CAM maximises F, so move by +step * sign(dF/du)",
        "magnitude": "you moved by step * gradient: iRprop+ uses only the *sign* of each coordinate's gradient",
        "always_undo": "you undo the last move at every sign flip (that is Rprop+): iRprop+ undoes it only where "
        "the image's F fell (f < state['f']); otherwise the coordinate stays put",
        "never_undo": "you never undo (that is iRprop-): where the sign flipped *and* F fell, move back by "
        "-state['move']",
        "keep_grad": "after a sign flip, store a gradient of 0 for that coordinate, so that the next step "
        "neither grows nor shrinks it",
        "no_clamp": "keep every step within [1e-3, 1] (clamp after growing or shrinking it)",
        "swapped": "the step grows by 1.2 while the sign holds and halves (0.5) when it flips, not the reverse",
    }
    wrong = {
        hint: _rprop_run(_rprop_reference(kind), clf, images, targets, iterations)
        for kind, hint in hints.items()
    }
    _named(got, wrong, ref, 1e-5)
    _close(got, ref, f"u after {iterations} iRprop+ steps", atol=1e-5)
    print(
        f"✓ correct: {iterations} of your iRprop+ steps give optimize(optimizer='rprop')'s u to within 1e-5: signs "
        "only, steps growing by 1.2 and halving, undone only where a flip came with a fall of F."
    )
    return True
