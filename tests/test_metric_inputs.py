"""Input checks of the metrics: every bad argument is an ``InputError`` naming the problem, float64 images are
accepted as the methods accept them, and valid float32 input gives the same numbers as before the checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from opticam_lib import (
    InputError,
    area_under_curve,
    average_drop,
    average_gain,
    average_increase,
    classification_metrics,
    deletion_curve,
    evaluate,
    explain,
    get_method,
    gradcam,
    insertion_curve,
    masked_probabilities,
)
from opticam_lib.metrics.classification import class_probability, drops, gains

TARGETS = [1, 2, 3]
CURVES = {"deletion": deletion_curve, "insertion": insertion_curve}


@pytest.fixture
def maps(tiny_cnn, images):
    return gradcam(tiny_cnn, images, TARGETS)


def reference_probability(clf, x, targets):
    dtype = next(clf.model.parameters()).dtype
    with torch.no_grad():
        probs = torch.softmax(clf.model(x.to(dtype)).float(), dim=1)
    return probs[torch.arange(len(targets)), torch.as_tensor(targets)]


# --- 1. batch_size and steps of the curves; class_probability's arguments ----------------------------------------


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("batch_size", [0, -1, -5, 2.5, True, "4", None])
def test_curves_refuse_a_bad_batch_size(tiny_cnn, images, maps, curve, batch_size):
    with pytest.raises(InputError, match=r"batch_size must be a positive integer, got"):
        CURVES[curve](tiny_cnn, images, maps, TARGETS, steps=4, batch_size=batch_size, progress=False)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("steps", [0, -3, 2.0, True])
def test_curves_refuse_bad_steps(tiny_cnn, images, maps, curve, steps):
    with pytest.raises(InputError, match=r"steps must be a positive integer"):
        CURVES[curve](tiny_cnn, images, maps, TARGETS, steps=steps, progress=False)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 9, 100])
def test_curves_do_not_depend_on_batch_size(tiny_cnn, images, maps, batch_size):
    want = deletion_curve(tiny_cnn, images, maps, TARGETS, steps=8, batch_size=32, progress=False)
    got = deletion_curve(tiny_cnn, images, maps, TARGETS, steps=8, batch_size=batch_size, progress=False)
    assert got.shape == (3, 9) and torch.isfinite(got).all()
    assert torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_class_probability_refuses_a_bad_batch_size(tiny_cnn, images, batch_size):
    with pytest.raises(InputError, match=r"batch_size must be a positive integer"):
        class_probability(tiny_cnn, images, torch.tensor(TARGETS), batch_size=batch_size)


def test_class_probability_refuses_bad_images_and_targets(tiny_cnn, images):
    with pytest.raises(InputError, match=r"targets must give one class per image \(3\), got shape \(2,\)"):
        class_probability(tiny_cnn, images, torch.tensor([1, 2]))
    with pytest.raises(InputError, match=r"targets must give one class per image \(3\), got shape \(3, 1\)"):
        class_probability(tiny_cnn, images, torch.tensor(TARGETS)[:, None])
    with pytest.raises(InputError, match=r"targets must be integer class ids, got dtype torch.float32"):
        class_probability(tiny_cnn, images, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match=r"target class 5 out of range: 'tiny_cnn' has classes 0..4"):
        class_probability(tiny_cnn, images, torch.tensor([1, 5, 2]))
    with pytest.raises(InputError, match=r"target class -1 out of range"):
        class_probability(tiny_cnn, images, torch.tensor([1, -1, 2]))
    with pytest.raises(InputError, match=r"images must have shape \(N, 3, H, W\), got \(3, 32, 32\)"):
        class_probability(tiny_cnn, images[0], torch.tensor(TARGETS))
    with pytest.raises(InputError, match=r"images must be float"):
        class_probability(tiny_cnn, (images * 255).to(torch.uint8), torch.tensor(TARGETS))


def test_class_probability_valid_input(tiny_cnn, images):
    got = class_probability(tiny_cnn, images, torch.tensor(TARGETS), batch_size=2)
    assert torch.allclose(got, reference_probability(tiny_cnn, images, TARGETS), atol=1e-6)
    assert torch.equal(class_probability(tiny_cnn, images, TARGETS), got)  # a list of classes works too


# --- 2. float64 images (and maps), as the methods accept them -------------------------------------------------------


def test_masked_probabilities_accept_float64(tiny_cnn, images, maps):
    p32, o32 = masked_probabilities(tiny_cnn, images, maps, TARGETS)
    p64, o64 = masked_probabilities(tiny_cnn, images.double(), maps.double(), TARGETS)
    assert p64.dtype == o64.dtype == torch.float32
    assert torch.allclose(p64, p32, atol=1e-6) and torch.allclose(o64, o32, atol=1e-6)
    # float32: the numbers of an independent computation
    assert torch.allclose(p32, reference_probability(tiny_cnn, images, TARGETS), atol=1e-6)
    assert torch.allclose(o32, reference_probability(tiny_cnn, images * maps, TARGETS), atol=1e-6)


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("substrate", ["rise", "black"])
def test_curves_accept_float64(tiny_cnn, images, maps, curve, substrate):
    fn = CURVES[curve]
    want = fn(tiny_cnn, images, maps, TARGETS, steps=6, progress=False, substrate=substrate)
    got = fn(tiny_cnn, images.double(), maps.double(), TARGETS, steps=6, progress=False, substrate=substrate)
    assert got.shape == want.shape == (3, 7)
    assert torch.allclose(got, want, atol=1e-5)


def test_curves_float32_endpoints(tiny_cnn, images, maps):
    """Valid float32 input: deletion starts on the intact image and ends on black (``"black"``), insertion ends
    on the intact image."""
    p = reference_probability(tiny_cnn, images, TARGETS)
    dele = deletion_curve(tiny_cnn, images, maps, TARGETS, steps=4, progress=False, substrate="black")
    ins = insertion_curve(tiny_cnn, images, maps, TARGETS, steps=4, progress=False, substrate="black")
    assert torch.allclose(dele[:, 0], p, atol=1e-6) and torch.allclose(ins[:, -1], p, atol=1e-6)
    black = reference_probability(tiny_cnn, torch.zeros_like(images), TARGETS)
    assert torch.allclose(dele[:, -1], black, atol=1e-6)


def test_evaluate_accepts_float64(tiny_cnn, images):
    want = evaluate(tiny_cnn, "gradcam", images, TARGETS, batch_size=2)
    got = evaluate(tiny_cnn, "gradcam", images.double(), TARGETS, batch_size=2)
    assert torch.allclose(got.p, want.p, atol=1e-6) and torch.allclose(got.o, want.o, atol=1e-5)
    assert got.AD == pytest.approx(want.AD, abs=1e-3) and got.AI == want.AI
    p, o = masked_probabilities(tiny_cnn, images, gradcam(tiny_cnn, images, TARGETS), TARGETS)
    assert torch.allclose(want.p, p, atol=1e-6) and torch.allclose(want.o, o, atol=1e-6)


def test_metrics_on_a_float64_model(tiny_cnn, images, maps):
    """A model in float64: float32 images are cast to its dtype, as the methods do."""
    tiny_cnn.model.double()
    p, o = masked_probabilities(tiny_cnn, images, maps, TARGETS)
    assert torch.allclose(p, reference_probability(tiny_cnn, images.double(), TARGETS).float(), atol=1e-6)
    assert torch.allclose(
        o, reference_probability(tiny_cnn, images.double() * maps, TARGETS).float(), atol=1e-6
    )
    curve = deletion_curve(tiny_cnn, images, maps, TARGETS, steps=4, progress=False)
    assert torch.allclose(curve[:, 0], p, atol=1e-6)
    assert evaluate(tiny_cnn, "gradcam", images, TARGETS).p.shape == (3,)


# --- 3. the scalar metrics: AD, AG, AI and the area under a curve ---------------------------------------------------

P_IMAGE = torch.tensor([0.5, 0.4, 0.9])
P_MASKED = torch.tensor([0.3, 0.6, 0.9])
SCALARS = {"average_drop": average_drop, "average_gain": average_gain, "average_increase": average_increase}


def test_scalar_metrics_valid_values():
    assert average_drop(P_IMAGE, P_MASKED) == pytest.approx(100 * (0.2 / 0.5) / 3)
    assert average_gain(P_IMAGE, P_MASKED) == pytest.approx(100 * (0.2 / 0.6) / 3)
    assert average_increase(P_IMAGE, P_MASKED) == pytest.approx(100 / 3)
    assert classification_metrics(P_IMAGE, P_MASKED) == {
        "AD": average_drop(P_IMAGE, P_MASKED),
        "AG": average_gain(P_IMAGE, P_MASKED),
        "AI": average_increase(P_IMAGE, P_MASKED),
    }
    # the per-image terms of eq. (13) and (15), whose means (in %) are AD and AG
    assert torch.allclose(drops(P_IMAGE, P_MASKED), torch.tensor([0.2 / 0.5, 0.0, 0.0]).double())
    assert torch.allclose(gains(P_IMAGE, P_MASKED), torch.tensor([0.0, 0.2 / 0.6, 0.0]).double())


@pytest.mark.parametrize("name", SCALARS)
def test_scalar_metrics_accept_lists_and_numpy(name):
    fn = SCALARS[name]
    want = fn(P_IMAGE, P_MASKED)
    assert fn(P_IMAGE.tolist(), P_MASKED.tolist()) == pytest.approx(want)
    assert fn(P_IMAGE.numpy(), P_MASKED.numpy()) == pytest.approx(want)
    assert fn(P_IMAGE.double(), P_MASKED) == pytest.approx(want)
    assert fn([1.0], [0]) == fn(torch.tensor([1.0]), torch.tensor([0.0]))  # ints in [0, 1] are probabilities
    assert fn([0.5, 0.4], [0.3, 0.2]) == pytest.approx(
        fn(np.array([0.5, 0.4]), np.array([0.3, 0.2])), abs=1e-12
    )


@pytest.mark.parametrize("name", SCALARS)
@pytest.mark.parametrize(
    ("p", "o", "message"),
    [
        (P_IMAGE, P_MASKED[:1], r"p and o must have the same shape \(N,\), got p \(3,\) and o \(1,\)"),
        (P_IMAGE, P_MASKED[:, None], r"o must have shape \(N,\), one probability per image, got \(3, 1\)"),
        (
            P_IMAGE[:, None],
            P_MASKED[:, None],
            r"p must have shape \(N,\), one probability per image, got \(3, 1\)",
        ),
        (P_IMAGE[0], P_MASKED[0], r"p must have shape \(N,\), one probability per image, got \(\)"),
        (P_IMAGE[:0], P_MASKED[:0], r"p is empty: at least one image is needed"),
        (P_IMAGE * 5, P_MASKED, r"p must be probabilities in \[0, 1\], got values in \[2, 4.5\]"),
        (P_IMAGE, P_MASKED - 1, r"o must be probabilities in \[0, 1\], got values in \[-0.7, -0.1\]"),
        (P_IMAGE, torch.tensor([0.1, float("nan"), 0.2]), r"o contains NaN or infinite values"),
        (torch.tensor([0.1, float("inf"), 0.2]), P_MASKED, r"p contains NaN or infinite values"),
        ("abc", P_MASKED, r"p must be a tensor, list or array of numbers of shape \(N,\).* got str"),
        (
            P_IMAGE,
            [[0.1, 0.2], [0.3]],
            r"o must be a tensor, list or array of numbers of shape \(N,\).* got list",
        ),
        (P_IMAGE, torch.tensor([True, False, True]), r"o must hold real numbers, got dtype torch.bool"),
        (P_IMAGE, torch.tensor([0.1, 0.2, 0.3]) + 0j, r"o must hold real numbers, got dtype torch.complex64"),
    ],
)
def test_scalar_metrics_refuse_bad_input(name, p, o, message):
    with pytest.raises(InputError, match=message):
        SCALARS[name](p, o)


def test_classification_metrics_refuse_bad_input():
    with pytest.raises(InputError, match=r"p and o must have the same shape"):
        classification_metrics(P_IMAGE, P_MASKED[:2])


CURVE = torch.tensor([[1.0, 0.5, 0.0], [0.2, 0.2, 0.2]])


def test_area_under_curve_valid_values():
    got = area_under_curve(CURVE)
    assert got.shape == (2,) and got.dtype == torch.float32
    assert torch.allclose(got, torch.tensor([0.5, 0.2]))
    assert torch.allclose(got, torch.trapezoid(CURVE, dx=1 / 2, dim=1))
    one = area_under_curve(CURVE[0])  # one curve (T,) -> its area, a 0-dim tensor
    assert one.shape == () and float(one) == pytest.approx(0.5)
    assert area_under_curve(CURVE.double()).dtype == torch.float64
    assert torch.allclose(area_under_curve(CURVE.numpy()), got.double())  # arrays and lists: float64
    assert torch.allclose(area_under_curve(CURVE.tolist()), got.double())
    assert float(area_under_curve([0, 1])) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("curves", "message"),
    [
        (CURVE[:, :1], r"curves must have at least 2 points \(T >= 2\), got shape \(2, 1\)"),
        (CURVE[0, :1], r"curves must have at least 2 points \(T >= 2\), got shape \(1,\)"),
        (CURVE[:0], r"curves is empty: at least one curve is needed, got shape \(0, 3\)"),
        (CURVE[None], r"curves must have shape \(N, T\) or \(T,\), got \(1, 2, 3\)"),
        (torch.tensor(0.5), r"curves must have shape \(N, T\) or \(T,\), got \(\)"),
        (CURVE * 2, r"curves must be probabilities in \[0, 1\], got values in \[0, 2\]"),
        (CURVE - 0.5, r"curves must be probabilities in \[0, 1\], got values in \[-0.5, 0.5\]"),
        (torch.tensor([0.1, float("nan")]), r"curves contains NaN or infinite values"),
        (
            {"a": 1},
            r"curves must be a tensor, list or array of numbers of shape \(N, T\) or \(T,\), got dict",
        ),
    ],
)
def test_area_under_curve_refuses_bad_input(curves, message):
    with pytest.raises(InputError, match=message):
        area_under_curve(curves)


def test_area_under_real_curves(tiny_cnn, images, maps):
    curves = deletion_curve(tiny_cnn, images, maps, TARGETS, steps=5, progress=False)
    auc = area_under_curve(curves)
    assert torch.allclose(auc, torch.trapezoid(curves, dx=1 / 5, dim=1), atol=1e-6)


# --- 4. evaluate checks the maps of a custom method; get_method refuses what is not a method -----------------------


def _maps_of(value):
    def bad_method(classifier, images, targets=None):
        if callable(value):
            return value(images)
        return torch.full((images.shape[0], 1, *images.shape[-2:]), value)

    return bad_method


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (_maps_of(float("nan")), r"contains NaN or infinite values"),
        (_maps_of(float("inf")), r"contains NaN or infinite values"),
        (_maps_of(3.0), r"must lie in \[0, 1\], got values in \[3, 3\]"),
        (_maps_of(-0.5), r"must lie in \[0, 1\], got values in \[-0.5, -0.5\]"),
        (
            _maps_of(lambda x: torch.rand(x.shape[0], 1, 5, 5)),
            r"must have shape \(2, 1, 32, 32\) .* \(2, 1, 5, 5\)",
        ),
        (
            _maps_of(lambda x: torch.rand(1, 1, 32, 32)),
            r"must have shape \(2, 1, 32, 32\) .* \(1, 1, 32, 32\)",
        ),
        (_maps_of(lambda x: x.mean(1, keepdim=True).numpy()), r"must be a torch.Tensor .* got ndarray"),
        (_maps_of(lambda x: None), r"must be a torch.Tensor .* got NoneType"),
    ],
)
def test_evaluate_checks_the_maps_of_a_custom_method(tiny_cnn, images, method, message):
    with pytest.raises(InputError, match=message) as info:
        evaluate(tiny_cnn, method, images, TARGETS, batch_size=2)
    assert "bad_method" in str(info.value)  # the message names the method


def test_evaluate_names_the_batch_of_bad_maps(tiny_cnn, images):
    def late_nan(classifier, x, targets=None):
        m = torch.rand(x.shape[0], 1, *x.shape[-2:])
        return m * float("nan") if x.shape[0] == 1 else m  # the last batch of 3 images in batches of 2

    with pytest.raises(InputError, match=r"method 'late_nan' \(images 2\.\.2\) contains NaN"):
        evaluate(tiny_cnn, late_nan, images, TARGETS, batch_size=2)


def test_evaluate_accepts_valid_custom_maps(tiny_cnn, images):
    def ones(classifier, x, targets=None):
        return torch.ones(x.shape[0], x.shape[-2], x.shape[-1])  # (N, H, W): a channel is added

    result = evaluate(tiny_cnn, ones, images, TARGETS, keep_maps=True)
    assert torch.equal(result.p, result.o) and result.AD == 0 and result.maps.shape == (3, 1, 32, 32)
    assert result.method == "ones"


@pytest.mark.parametrize("method", [3, None, 2.5, ["gradcam"], b"gradcam"])
def test_get_method_refuses_what_is_not_a_method(method):
    with pytest.raises(InputError, match=r"method must be a registered name \(str\) or a callable"):
        get_method(method)


def test_evaluate_and_explain_refuse_what_is_not_a_method(tiny_cnn, images):
    with pytest.raises(InputError, match=r"method must be a registered name .* got int 3"):
        evaluate(tiny_cnn, 3, images, TARGETS)
    with pytest.raises(InputError, match=r"method must be a registered name .* got NoneType None"):
        explain(tiny_cnn, images, None)
    assert get_method("Grad-CAM") is gradcam and get_method(gradcam) is gradcam
    with pytest.raises(InputError, match=r"unknown method 'gradcan'"):
        get_method("gradcan")


def test_swapped_images_and_method_are_named(tiny_cnn, images):
    # evaluate(classifier, method, images) but explain(classifier, images, method): a swap says so
    with pytest.raises(InputError, match=r"tensor of shape \(3, 3, 32, 32\): images and method swapped"):
        evaluate(tiny_cnn, images, "gradcam", TARGETS)
    with pytest.raises(InputError, match=r"images and method swapped"):
        explain(tiny_cnn, "gradcam", images)


def test_same_numbers_as_the_methods_for_valid_float32(tiny_cnn, images):
    """evaluate's AD/AG/AI are those of masked_probabilities on the same maps, to float precision."""
    result = evaluate(tiny_cnn, "gradcam", images, TARGETS, keep_maps=True)
    p, o = masked_probabilities(tiny_cnn, images, result.maps, TARGETS)
    assert torch.equal(result.p, p) and torch.equal(result.o, o)
    assert classification_metrics(p, o) == {"AD": result.AD, "AG": result.AG, "AI": result.AI}


def test_lists_are_read_as_float64():
    assert average_drop([0.5, 0.4], [0.3, 0.2]) == pytest.approx(45.0, abs=1e-12)  # not float32's 44.999998
