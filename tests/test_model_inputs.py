"""Bad models, bad options and bad targets get a clear ``InputError`` before any map is made (found by a user's
review: before, NaN logits gave all-zero maps, bad Adam settings a NaN u that looked converged, a mixed-case
method name in the CLI dropped --layer and --iterations)."""

from __future__ import annotations

import argparse

import pytest
import torch
from conftest import NUM_CLASSES, SIZE, TinyCNN, make_images
from torch import nn

from opticam_lib import (
    ablationcam,
    deletion_curve,
    evaluate,
    extremal_perturbation,
    gradcam,
    masked_probabilities,
    optimize,
    scorecam,
    wrap_classifier,
)
from opticam_lib.__main__ import _methods_arg, _methods_or_extra, _options
from opticam_lib.errors import InputError
from opticam_lib.methods.cam_family import cam
from opticam_lib.models.registry import load_classifier

FAST = {"iterations": 2, "progress": False}


def wrapped(net: nn.Module, layer: str = "features", **kw) -> object:
    return wrap_classifier(net, layer, num_classes=NUM_CLASSES, input_size=SIZE, mean=None, std=None, **kw)


class NaNLogits(TinyCNN):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out.index_fill(0, torch.tensor([1]), float("nan"))  # image 1 only


@pytest.mark.parametrize(
    "method",
    [
        lambda c, x: gradcam(c, x, 0),
        lambda c, x: cam(c, x, 0),
        lambda c, x: scorecam(c, x, 0, progress=False),
        lambda c, x: optimize(c, x, 0, **FAST),
        lambda c, x: gradcam(c, x, None),  # the predicted class of a NaN row is meaningless
    ],
    ids=["gradcam", "cam", "scorecam", "optimize", "predicted-class"],
)
def test_non_finite_logits_are_refused_not_turned_into_zero_maps(method):
    clf = wrapped(NaNLogits(), linear_head="fc")
    with pytest.raises(InputError, match=r"NaN or infinite outputs for image\(s\) \[1\]"):
        method(clf, make_images(3))


def test_a_model_with_auxiliary_outputs_or_another_class_count_is_named():
    class TupleOut(TinyCNN):
        def forward(self, x):
            return super().forward(x), x.mean()

    with pytest.raises(InputError, match="returned a tuple"):
        gradcam(wrapped(TupleOut()), make_images(2), 0)
    clf = wrap_classifier(
        TinyCNN(), "features", num_classes=NUM_CLASSES + 2, input_size=SIZE, mean=None, std=None
    )
    with pytest.raises(InputError, match=rf"expected logits \(N, {NUM_CLASSES + 2}\)"):
        gradcam(clf, make_images(2), 0)


class NaNAfterFirstPass(TinyCNN):
    """Finite logits on the first forward pass, NaN on every later one (masked or perturbed images)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        out = super().forward(x)
        return out if self.passes == 1 else out * float("nan")


@pytest.mark.parametrize(
    "method",
    [
        lambda c, x: scorecam(c, x, 0, progress=False),
        lambda c, x: ablationcam(c, x, 0, progress=False),
        lambda c, x: masked_probabilities(c, x, torch.rand(len(x), 1, SIZE, SIZE), 0),
        lambda c, x: deletion_curve(c, x, torch.rand(len(x), 1, SIZE, SIZE), 0, steps=3, progress=False),
        lambda c, x: extremal_perturbation(c, x, 0, iterations=2, progress=False),
    ],
    ids=["scorecam", "ablationcam", "masked_probabilities", "deletion_curve", "extremal"],
)
def test_logits_that_turn_nan_on_later_passes_are_refused(method):
    """Without a check on every pass these gave all-zero maps, NaN curves or an index error deep inside."""
    with pytest.raises(InputError, match="NaN or infinite"):
        method(wrapped(NaNAfterFirstPass(), linear_head="fc"), make_images(2))


def test_metrics_name_a_model_with_auxiliary_outputs():
    class TupleOut(TinyCNN):
        def forward(self, x):
            return super().forward(x), x.mean()

    clf, x = wrapped(TupleOut()), make_images(2)
    with pytest.raises(InputError, match="returned a tuple"):
        masked_probabilities(clf, x, torch.rand(2, 1, SIZE, SIZE), [0, 1])
    with pytest.raises(InputError, match="returned a tuple"):
        extremal_perturbation(clf, x, [0, 1], iterations=2, progress=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_methods_run_on_a_model_that_is_not_float32(dtype):
    clf = wrapped(TinyCNN(), linear_head="fc")
    clf.model.to(dtype)
    x = make_images(2)
    for maps in (
        scorecam(clf, x, [1, 2], progress=False),
        ablationcam(clf, x, [1, 2], progress=False),
        optimize(clf, x, [1, 2], **FAST).maps,
    ):
        assert maps.shape == (2, 1, SIZE, SIZE) and bool(torch.isfinite(maps).all())
        assert 0 <= float(maps.min()) and float(maps.max()) <= 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_gradientshap_runs_on_a_model_that_is_not_float32(dtype):
    pytest.importorskip("captum")
    from opticam_lib import gradientshap

    clf = wrapped(TinyCNN(), linear_head="fc")
    clf.model.to(dtype)
    maps = gradientshap(clf, make_images(1), [1], n_samples=4)
    assert maps.shape == (1, 1, SIZE, SIZE) and bool(torch.isfinite(maps).all())


def test_a_1x1_grid_is_refused_and_a_nearly_constant_map_is_not_stretched():
    from opticam_lib.methods.maps import normalize, upsample

    flat = upsample(torch.full((1, 1, 1, 1), 0.37), (32, 32))  # rounding makes it vary by about 1e-8
    assert torch.equal(normalize(flat), torch.zeros_like(flat))
    varied = torch.tensor([[[[1e-9, 3e-9]]]])  # tiny values but a real difference: still normalised
    assert torch.allclose(normalize(varied), torch.tensor([[[[0.0, 1.0]]]]))

    class Pooled(TinyCNN):  # a layer after the global pooling
        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    with pytest.raises(InputError, match="1 x 1 grid of feature maps"):
        gradcam(wrapped(Pooled(), "pool"), make_images(1), 0)


def test_a_layer_that_runs_twice_in_one_pass_is_refused():
    class Reused(TinyCNN):  # one ReLU module after both convolutions
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x):
            f = self.features
            return self.fc(self.pool(self.act(f[2](self.act(f[0](x))))).flatten(1))

    for method in (gradcam, lambda c, x, t: scorecam(c, x, t, progress=False)):
        with pytest.raises(InputError, match="'act' runs 2 times in one forward pass"):
            method(wrapped(Reused(), "act"), make_images(1), 0)


def test_gradient_methods_name_inference_mode_and_work_under_no_grad(tiny_cnn, images):
    with torch.inference_mode(), pytest.raises(InputError, match=r"inside torch\.inference_mode\(\)"):
        gradcam(tiny_cnn, images, 0)
    with torch.inference_mode(), pytest.raises(InputError, match="Opti-CAM needs gradients"):
        optimize(tiny_cnn, images, 0, **FAST)
    with torch.no_grad():
        assert evaluate(tiny_cnn, "gradcam", images, [0, 1, 2]).o.shape == (3,)


def test_predict_and_localization_check_and_cast_their_images(tiny_cnn, images):
    from opticam_lib.metrics.localization import localization_scores

    with pytest.raises(InputError, match="images"):
        tiny_cnn.predict((images * 255).to(torch.uint8))
    with pytest.raises(InputError, match="NaN"):
        tiny_cnn.predict(images.index_fill(0, torch.tensor([0]), float("nan")))
    assert torch.allclose(tiny_cnn.predict(images.double()), tiny_cnn.predict(images), atol=1e-6)
    maps = torch.rand(3, 1, SIZE, SIZE)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 20.0]])] * 3
    scores = localization_scores(tiny_cnn, images.double(), maps, boxes, [0, 1, 2])
    assert scores == localization_scores(tiny_cnn, images, maps, boxes, [0, 1, 2])


def test_attention_maps_check_the_size_and_the_targets_they_ignore(timm_vit):
    from opticam_lib.methods.attention import raw_attention, rollout

    with pytest.raises(InputError, match=f"images must be {SIZE} x {SIZE}"):
        rollout(timm_vit, make_images(1, size=16))
    for method in (raw_attention, rollout):
        with pytest.raises(InputError, match="out of range"):
            method(timm_vit, make_images(2), [0, 99])
        assert method(timm_vit, make_images(2), [0, 1]).shape == (2, 1, SIZE, SIZE)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"std": (0.0, 0.2, 0.2)}, "std must be positive"),
        ({"input_size": "32"}, "input_size must be a positive integer"),
        ({"prefix_tokens": -1}, "prefix_tokens must be None"),
        ({"prefix_tokens": 1.0}, "prefix_tokens must be None"),
        ({"num_classes": None, "categories": "abcde"}, "categories must be a list of class names"),
        ({"categories": ["a", "b"]}, "2 categories given for num_classes=5"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
        ({"std": (float("nan"), 1.0, 1.0)}, "std must be 3 finite numbers"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": None, "categories": []}, "at least 2 classes"),
    ],
)
def test_wrap_classifier_checks_its_settings(kw, match):
    base = {"num_classes": NUM_CLASSES, "input_size": SIZE}
    with pytest.raises(InputError, match=match):
        wrap_classifier(TinyCNN(), "features", **{**base, **kw})


@pytest.mark.parametrize(
    "options,match",
    [
        ({"lr": float("inf")}, "lr must be a finite"),
        ({"betas": (0.9, 1.0)}, r"betas must be two numbers in \[0, 1\)"),
        ({"betas": (0.9,)}, "betas must be two numbers"),
        ({"betas": "ab"}, "betas must be two numbers"),
        ({"eps": float("nan")}, "eps must be a finite positive"),
        ({"eps": -1.0}, "eps must be a finite positive"),
        ({"tol": float("nan")}, "tol must be None or a finite number"),
        ({"tol": "a"}, "tol must be None or a finite number"),
        ({"seed": "a"}, "seed must be None or an integer"),
        ({"callback": 3}, "callback must be None or a function"),
        ({"init": torch.full((8,), float("nan"))}, "init tensor holds NaN"),
    ],
)
def test_optimize_refuses_settings_that_would_make_u_nan(tiny_cnn, images, options, match):
    with pytest.raises(InputError, match=match):
        optimize(tiny_cnn, images, 0, **FAST, **options)


def test_u_that_overflows_during_the_run_is_an_error_not_a_converged_map(tiny_cnn, images):
    with pytest.raises(InputError, match="weights u became NaN or infinite at iteration"):
        optimize(tiny_cnn, images, 0, iterations=5, progress=False, lr=1e39)


@pytest.mark.parametrize("targets", ["cat", ["cat", "dog", "cow"]])
def test_a_class_name_as_target_says_how_to_get_its_id(tiny_cnn, images, targets):
    with pytest.raises(InputError, match=r"integer class ids.*categories.index"):
        gradcam(tiny_cnn, images, targets)


def test_a_transformer_names_its_input_size(tiny_vit):
    with pytest.raises(InputError, match=f"images must be {SIZE} x {SIZE}, got 40 x 32"):
        gradcam(tiny_vit, torch.rand(1, 3, 40, 32), 0)


def test_layer_problems_are_input_errors(tiny_cnn, images):
    with pytest.raises(InputError, match="layer must be a module name"):
        gradcam(tiny_cnn, images, 0, layer=3)

    class Unused(TinyCNN):
        def __init__(self):
            super().__init__()
            self.spare = nn.Conv2d(3, 3, 1)

    with pytest.raises(InputError, match="not reached by the forward pass"):
        gradcam(wrapped(Unused()), images, 0, layer="spare")


def test_a_channels_last_layer_is_refused_not_read_as_channels_first(images):
    class ChannelsLast(nn.Module):  # a Swin-like stage: (N, h, w, K) with K much larger than w
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 64, 8, stride=8)
            self.stage = nn.Identity()
            self.fc = nn.Linear(64, NUM_CLASSES)

        def forward(self, x):
            y = self.stage(self.stem(x).permute(0, 2, 3, 1))  # (N, 4, 4, 64)
            return self.fc(y.mean(dim=(1, 2)))

    with pytest.raises(InputError, match="looks channels-last"):
        gradcam(wrapped(ChannelsLast(), "stage"), images, 0)
    # a non-square input: the output (N, 4, 6, 64) used to be read as 4 maps of 6 x 64, a silently wrong map.
    # The grid 6 x 64 does not follow the 32 x 48 input, 4 x 6 does.
    wide = torch.rand(2, 3, SIZE, SIZE * 3 // 2)
    for method in (gradcam, scorecam):
        with pytest.raises(InputError, match=r"for 32 x 48 images, which looks channels-last"):
            method(wrapped(ChannelsLast(), "stage"), wide, 0)
    with pytest.raises(InputError, match="looks channels-last"):
        optimize(wrapped(ChannelsLast(), "stage"), wide, 0, iterations=1)


def test_channels_first_grids_of_any_aspect_pass(tiny_cnn):
    for height, width in ((32, 48), (48, 32), (32, 96), (40, 40)):
        maps = gradcam(tiny_cnn, torch.rand(2, 3, height, width), 0)
        assert maps.shape == (2, 1, height, width)
        assert torch.isfinite(maps).all()


@pytest.mark.parametrize(
    "shape, size, refused",
    [
        ((64, 7, 7), (224, 224), False),  # a real grid
        ((7, 7, 64), (224, 224), True),  # (7, 7, 64) channels-last
        ((7, 10, 64), (224, 320), True),  # non-square channels-last
        ((512, 7, 10), (224, 320), False),
        ((512, 2, 7), (40, 200), False),  # padding makes small grids' ratios round: 2 x 7 for 40 x 200
        ((7, 7, 7), (224, 224), False),  # cannot be told apart: passes
        ((16, 56, 56), (224, 224), False),
        ((56, 56, 16), (224, 224), True),
    ],
)
def test_channels_last_is_recognised_by_the_input_aspect(shape, size, refused):
    from opticam_lib.models.classifier import _looks_channels_last

    assert _looks_channels_last(shape, size) is refused


def test_cli_method_names_are_the_registrys_so_their_options_apply():
    assert _methods_arg("GradCAM,grad-cam++,Opti_CAM") == ["gradcam", "gradcampp", "opticam"]
    assert _methods_or_extra("RawAtt,OptiCAM") == ["rawatt", "opticam"]
    args = argparse.Namespace(layer="features", lr=0.05, iterations=2, quiet=True)
    (method,) = _methods_arg("OptiCAM")
    assert _options(args, method) == {"layer": "features", "lr": 0.05, "iterations": 2, "progress": False}
    with pytest.raises(argparse.ArgumentTypeError, match="unknown method 'gradkam'"):
        _methods_arg("gradkam")


def test_an_unusable_device_is_named():
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        load_classifier("world_cnn", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="sees no CUDA GPU"):
            load_classifier("world_cnn", device="cuda")
    clf = load_classifier("world_cnn")
    with pytest.raises(InputError, match="unknown device 'banana'"):
        clf.to("banana")
    with pytest.raises(InputError, match="not supported by the library"):
        clf.to("meta")
    assert next(clf.model.parameters()).device.type == "cpu"  # left where it was
    assert clf.to("cpu") is clf


def test_fakecam_checks_the_targets_it_ignores(tiny_cnn, images):
    from opticam_lib.methods.masking import fakecam

    assert fakecam(tiny_cnn, images, [0, 1, 2]).shape == (3, 1, SIZE, SIZE)
    for bad in ([1], 10, "cat"):
        with pytest.raises(InputError):
            fakecam(tiny_cnn, images, bad)


def test_boxes_at_another_resolution_or_of_another_shape_are_refused():
    from opticam_lib.metrics.localization import energy_pointing_game, localize

    saliency = torch.rand(64, 64)
    assert 0 <= energy_pointing_game(saliency, [[10, 10, 30, 30]]) <= 1
    with pytest.raises(InputError, match="covers no pixel of the 64 x 64 map"):
        energy_pointing_game(saliency, [[100, 100, 200, 200]])  # a box of the 224-pixel image
    with pytest.raises(InputError, match=r"covers no pixel"):
        localize(saliency, [[100, 100, 200, 200]], correct=True, probability=0.5)
    with pytest.raises(InputError, match=r"boxes must be \(4,\) or \(M, 4\)"):
        energy_pointing_game(saliency, [[1, 2, 3, 4, 5]])


def test_an_option_a_method_does_not_take_is_named_with_the_ones_it_does(tiny_cnn, images):
    from opticam_lib import evaluate, explain

    with pytest.raises(InputError, match=r"method 'Grad-CAM' has no option 'iterations'; its options: layer"):
        explain(tiny_cnn, images, "gradcam", 0, iterations=3)
    with pytest.raises(InputError, match="has no option 'iteration'"):
        evaluate(tiny_cnn, "opticam", images, 0, iteration=3)  # misspelt
    assert explain(tiny_cnn, images, "Grad-CAM", 0, layer="features").shape == (3, 1, SIZE, SIZE)


def test_wrap_classifier_leaves_the_callers_train_flags_alone(images):
    from conftest import BNCNN

    net = BNCNN().train()
    clf = wrap_classifier(net, "body.4", num_classes=NUM_CLASSES, input_size=SIZE)
    assert net.training and all(m.training for m in net.modules())
    gradcam(clf, images, 0)
    assert net.training and all(m.training for m in net.modules())  # eval for the pass, then restored
    net.eval()
    assert not wrap_classifier(net, "body.4", num_classes=NUM_CLASSES, input_size=SIZE).model.training


def test_top_lists_every_class_of_a_model_with_fewer_than_k(tiny_cnn, images):
    tops = tiny_cnn.top(images[:1], 10)[0]
    assert len(tops) == NUM_CLASSES and [p for *_, p in tops] == sorted((p for *_, p in tops), reverse=True)
    with pytest.raises(InputError, match="k must be a positive integer"):
        tiny_cnn.top(images[:1], 0)


@pytest.mark.parametrize("iterations", [0, -5, 2.5])
def test_the_explorer_refuses_a_bad_iteration_count(iterations):
    from opticam_lib.course.widgets import opticam_explorer
    from opticam_lib.paper.reproduce import load_image_spec

    clf = load_classifier("world_cnn")
    with pytest.raises(InputError, match="iterations must be a positive integer"):
        opticam_explorer(clf, load_image_spec("world:2", clf.input_size, clf), iterations=iterations)


def test_the_explorer_runs_on_a_model_with_fewer_than_five_classes():
    from opticam_lib.course.widgets import opticam_explorer
    from opticam_lib.paper.reproduce import load_image_spec

    clf = load_classifier("world_cnn")
    box = opticam_explorer(clf, load_image_spec("world:2", clf.input_size, clf), iterations=2)
    assert len(box.controls["target"].options) >= 1


class OffPath(nn.Module):
    """A network with a branch its forward pass computes and discards (``aux``): no map can be made of it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.aux = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv(x))
        self.aux(a)
        return self.fc(a.mean((2, 3)))


def test_a_layer_that_does_not_reach_the_logits_is_refused_not_mapped_to_zeros():
    from opticam_lib import gradcampp, layercam

    clf = wrap_classifier(OffPath(), "aux", num_classes=NUM_CLASSES, input_size=SIZE)
    x = make_images(2)
    for method in (gradcam, gradcampp, layercam):
        with pytest.raises(InputError, match="'aux' does not reach the class scores"):
            method(clf, x, [0, 1])
    with pytest.raises(InputError, match="does not reach the logits"):
        ablationcam(clf, x, [0, 1], progress=False)
    assert gradcam(wrap_classifier(OffPath(), "conv", num_classes=NUM_CLASSES, input_size=SIZE), x).amax() > 0


def test_a_layer_the_class_score_does_not_depend_on_gets_a_warning():
    """A ViT's patch tokens after its last block reach nothing but themselves (notebook 10 teaches this): the map is
    all zero, truly, and the user is told why."""
    vit = load_classifier("world_vit")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(
        UserWarning, match=r"image\(s\) \[0, 1\] does not depend on the feature maps of layer 'norm'"
    ) as seen:
        maps = gradcam(vit, x, [0, 1], layer="norm")
    assert float(maps.max()) == 0.0
    assert seen[0].filename == __file__  # the warning points at the caller's line, not inside the library
    with pytest.warns(UserWarning, match="does not depend") as seen:
        evaluate(vit, "gradcam", x, [0, 1], layer="norm")
    assert seen[0].filename == __file__


def test_ablation_cam_warns_for_an_image_whose_feature_maps_are_silent(tiny_cnn):
    x = make_images(2)
    with torch.no_grad():  # a ReLU layer silent for any image in [0, 1]: no channel has anything to ablate
        tiny_cnn.layer("features.2").bias.fill_(-100.0)
    with pytest.warns(UserWarning, match=r"Ablation-CAM: .* image\(s\) \[0, 1\] unchanged"):
        maps = ablationcam(tiny_cnn, x, [0, 1], progress=False)
    assert float(maps.max()) == 0.0


def test_the_gradient_family_computes_in_float32_on_a_half_precision_model():
    """Grad-CAM++'s g^3 overflows float16 (max 65504) when dy/dA is about 47: the map was all zero."""
    from opticam_lib import gradcampp, layercam

    clf = wrapped(TinyCNN(), linear_head="fc")
    with torch.no_grad():
        fc = clf.layer("fc")
        fc.weight.mul_(3000.0 / float(fc.weight.abs().max()))
    x = make_images(2)
    reference = {m: m(clf, x, [0, 1]) for m in (gradcam, gradcampp, layercam, cam)}
    clf.model.half()
    for method, expected in reference.items():
        maps = method(clf, x, [0, 1])
        assert maps.dtype == torch.float32, method.__name__
        assert float((maps - expected).abs().max()) < 0.05, method.__name__


@pytest.mark.parametrize("bad", ["module", "name", "object"])
def test_a_model_that_is_not_a_classifier_is_named(bad):
    from opticam_lib import fakecam

    given = {"module": TinyCNN(), "name": "world_cnn", "object": object()}[bad]
    hint = {"module": "wrap_classifier", "name": "load_classifier", "object": "got object"}[bad]
    x = make_images(1)
    for call in (lambda: gradcam(given, x), lambda: evaluate(given, "gradcam", x), lambda: fakecam(given, x)):
        with pytest.raises(InputError, match=hint):
            call()


def test_evaluate_runs_inside_inference_mode_for_methods_without_gradients():
    clf = wrapped(TinyCNN(), linear_head="fc")
    x = make_images(2)
    with torch.inference_mode():
        row = evaluate(clf, "fakecam", x, [0, 1])
        with pytest.raises(InputError, match="inference_mode"):
            evaluate(clf, "gradcam", x, [0, 1])
    assert row.AD == evaluate(clf, "fakecam", x, [0, 1]).AD


def test_opticam_options_of_the_wrong_type_get_an_input_error():
    import numpy as np

    clf = wrapped(TinyCNN(), linear_head="fc")
    x = make_images(1)
    for bad in (np.zeros(4), [0.0] * 4, 3):
        with pytest.raises(InputError, match="unknown init of type"):
            optimize(clf, x, [0], init=bad, **FAST)
    for schedule in (lambda step: 1.0, lambda step, total: "fast"):
        with pytest.raises(InputError, match="a schedule must be a function"):
            optimize(clf, x, [0], schedule=schedule, **FAST)
    assert optimize(clf, x, [0], lr=np.float32(0.1), **FAST).maps.shape == (1, 1, SIZE, SIZE)


def test_a_function_or_a_layer_that_returns_a_tuple_is_named():
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class Net(TinyCNN):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.pair(self.features(x))[0]).flatten(1))

    with pytest.raises(InputError, match=r"needs a torch\.nn\.Module, got function"):
        wrap_classifier(lambda x: x, "features", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match="'pair' returns tuple, not a tensor"):
        gradcam(wrapped(Net(), "pair"), make_images(1))


def test_small_input_slips_get_input_errors():
    import warnings

    clf = wrapped(TinyCNN(), linear_head="fc")
    with pytest.raises(InputError, match="unknown model"):
        load_classifier(["world_cnn"])
    with pytest.raises(InputError, match=r"got dtype torch.int64$"):
        gradcam(clf, torch.zeros(1, 3, SIZE, SIZE, dtype=torch.long))
    x = make_images(1).requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the range check read a leaf that requires grad: torch warned
        gradcam(clf, x)


def test_images_too_small_for_the_network_are_named():
    clf = load_classifier("world_cnn")
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    for call in (lambda: gradcam(clf, x), lambda: evaluate(clf, "fakecam", x), lambda: clf.predict(x)):
        with pytest.raises(InputError, match="images of 4 x 4 pixels are too small for this network"):
            call()
