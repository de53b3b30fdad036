"""A user's own network, wrapped with ``wrap_classifier``: the cases an adversarial probe on torchvision and timm
architectures found (channels-last stage-0 layers, half precision, a graph cut inside the forward, heads that are
not CAM's, one class, TorchScript, models that cannot be copied or are fixed-size), each on a tiny network."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import NUM_CLASSES, SIZE, TinyCNN, make_images
from torch import nn

import opticam_lib as ol
from opticam_lib.errors import InputError
from opticam_lib.hooks import hook_count
from opticam_lib.metrics.sanity import cascading_randomization


class ChannelsLastStem(nn.Module):
    """A Swin / ConvNeXt-like stage 0: patchify by 4, then a LayerNorm over channels in (N, h, w, K) layout."""

    def __init__(self, width: int = 96) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.patch(x).permute(0, 2, 3, 1))  # (N, h, w, K)
        return self.fc(t.mean(dim=(1, 2)))


def test_a_stage_0_channels_last_layer_is_refused_not_read_as_channels_first() -> None:
    """224 px through a stride-4 patchify: (N, 56, 56, 96). Read channels first, 56 "channels" of 56 x 96 maps
    (a ratio 1.7 off the input's, under the old factor-2 rule): a silently wrong map."""
    clf = ol.wrap_classifier(ChannelsLastStem().eval(), "norm", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match=r"\(2, 56, 56, 96\).*channels-last"):
        ol.gradcam(clf, torch.rand(2, 3, 224, 224), [0, 1])


def test_a_half_precision_network_gets_its_normalisation_in_its_dtype() -> None:
    torch.manual_seed(0)
    net = TinyCNN().eval()
    ref = ol.wrap_classifier(
        net, "features", num_classes=NUM_CLASSES, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4)
    )
    half = ol.wrap_classifier(
        TinyCNN().eval().half(),
        "features",
        num_classes=NUM_CLASSES,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.3, 0.4),
    )
    half.net.load_state_dict({k: v.half() for k, v in net.state_dict().items()})
    x = make_images(2)
    got = ol.gradcam(half, x, [0, 1])  # raised "Input type (float) and weight type (half)" before
    assert got.shape == (2, 1, SIZE, SIZE) and torch.isfinite(got).all()
    assert torch.corrcoef(torch.stack([got.flatten(), ol.gradcam(ref, x, [0, 1]).flatten()]))[0, 1] > 0.99


class FrozenBackbone(nn.Module):
    """A linear probe: the backbone runs under ``torch.no_grad()``, only the head sees gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyCNN()
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(6, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f)


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("gradcam", {}),
        ("opticam", {"iterations": 2}),
        ("experturbation", {"iterations": 2}),
        ("gradientshap", {}),
    ],
)
def test_a_network_that_cuts_the_graph_is_named_for_gradient_methods(method: str, options: dict) -> None:
    """Grad-CAM and Opti-CAM raised torch's "element 0 of tensors does not require grad"; extremal perturbation
    optimised its area term alone, the same map for every image and class."""
    if method == "gradientshap":
        pytest.importorskip("captum")
    clf = ol.wrap_classifier(FrozenBackbone().eval(), "backbone.features", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match="cuts the autograd graph"):
        ol.explain(clf, make_images(2), method, targets=[0, 1], **options)
    assert hook_count(clf.model) == 0


def test_a_network_that_cuts_the_graph_still_runs_gradient_free_methods() -> None:
    clf = ol.wrap_classifier(FrozenBackbone().eval(), "backbone.features", num_classes=NUM_CLASSES)
    result = ol.evaluate(clf, "fakecam", make_images(2), [0, 1])  # its warm-up did a backward pass and failed
    assert result.maps is None or torch.isfinite(result.maps).all()


def test_cam_refuses_a_head_that_is_not_the_final_pooled_linear_layer() -> None:
    net = TinyCNN(classes=12).eval()
    with pytest.raises(InputError, match="has 12 outputs but the classifier has 5 classes"):
        ol.wrap_classifier(net, "features", num_classes=NUM_CLASSES, linear_head="fc")

    class ReluBeforeHead(TinyCNN):  # DenseNet's layout: a ReLU between the layer and the pooling
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(torch.relu(self.features(x) - 0.1)).flatten(1))

    clf = ol.wrap_classifier(ReluBeforeHead().eval(), "features", num_classes=NUM_CLASSES, linear_head="fc")
    with pytest.raises(InputError, match=r"CAM \(eq. 1\) does not apply"):
        ol.cam(clf, make_images(2), [0, 1])
    # bfloat16 rounds its logits by about 0.3 %: still CAM's head
    for dtype in (torch.float32, torch.bfloat16):
        net = TinyCNN().eval().to(dtype)
        exact = ol.wrap_classifier(net, "features", num_classes=NUM_CLASSES, linear_head="fc")
        assert ol.cam(exact, make_images(2), [0, 1]).shape == (2, 1, SIZE, SIZE)


def test_cam_reads_a_spectral_norm_head_without_stepping_its_power_iteration() -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    torch.nn.utils.parametrizations.spectral_norm(net.fc)
    net.train()
    clf = ol.wrap_classifier(net, "features", num_classes=NUM_CLASSES, linear_head="fc")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ol.cam(clf, make_images(2), [0, 1])
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # _u and _v moved before
    assert net.training


def test_wrap_classifier_refuses_one_class_a_lone_std_and_torchscript() -> None:
    with pytest.raises(InputError, match="at least 2 classes"):
        ol.wrap_classifier(TinyCNN(classes=1).eval(), "features", num_classes=1)
    with pytest.raises(InputError, match="both mean and std"):
        ol.wrap_classifier(
            TinyCNN().eval(), "features", num_classes=NUM_CLASSES, mean=None, std=(0.5, 0.5, 0.5)
        )
    with pytest.raises(InputError, match="TorchScript"):
        ol.wrap_classifier(torch.jit.script(TinyCNN().eval()), "features", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match=r"module name \(str\), e.g. 'layer4', got NoneType None"):
        ol.wrap_classifier(TinyCNN().eval(), None, num_classes=NUM_CLASSES)  # type: ignore[arg-type]


def test_a_module_that_refuses_a_hook_leaves_none_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    clf = ol.wrap_classifier(TinyCNN().eval(), "features", num_classes=NUM_CLASSES)

    def refuse(*_a: object, **_k: object) -> None:
        raise RuntimeError("register_forward_hook is not supported here")

    monkeypatch.setattr(clf.layer("features"), "register_forward_hook", refuse)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="not supported"):
            ol.gradcam(clf, make_images(2), [0, 1])
    assert hook_count(clf.model) == 0  # the model's pre-hook, registered first, stayed once per call


class FixedSize(nn.Module):
    """Conv-BN-ReLU, then a flatten and a linear layer that fix the input size to 64 x 64."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4))
        self.fc = nn.Linear(8 * 16 * 16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.f(x).flatten(1))


def test_fold_batchnorm_traces_at_the_images_size_and_skips_parametrised_convolutions() -> None:
    torch.manual_seed(0)
    x = make_images(2, size=64)
    fixed = ol.wrap_classifier(FixedSize().eval(), "f.2", num_classes=NUM_CLASSES)  # input_size stays 224
    plain = ol.opticam(fixed, x, [0, 1], iterations=2, progress=False)
    folded = ol.opticam(fixed, x, [0, 1], iterations=2, progress=False, fold_batchnorm=True)  # traced at 224
    assert torch.allclose(plain, folded, atol=1e-4)
    net = FixedSize().eval()
    torch.nn.utils.parametrizations.weight_norm(net.f[0])
    normed = ol.wrap_classifier(net, "f.2", num_classes=NUM_CLASSES, input_size=64)
    # a KeyError before
    folded = ol.opticam(normed, x, [0, 1], iterations=2, progress=False, fold_batchnorm=True)
    assert torch.allclose(ol.opticam(normed, x, [0, 1], iterations=2, progress=False), folded, atol=1e-4)


def test_a_model_that_cannot_be_copied_is_named() -> None:
    net = TinyCNN().eval()
    net.lock = threading.Lock()  # type: ignore[assignment]
    clf = ol.wrap_classifier(net, "features", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match=r"cannot copy the model .*fold_batchnorm.*cannot pickle"):
        ol.opticam(clf, make_images(2), [0, 1], iterations=2, progress=False, fold_batchnorm=True)
    with pytest.raises(InputError, match=r"cannot copy the model .*to randomise its layers"):
        next(iter(cascading_randomization(clf, ["features.2"], seed=0)))


def test_images_that_do_not_fit_the_network_are_named() -> None:
    """torch's own errors (18 frames deep) became one line each."""
    gray = TinyCNN()
    gray.features[0] = nn.Conv2d(1, 8, 3, padding=1)
    clf = ol.wrap_classifier(gray.eval(), "features", num_classes=NUM_CLASSES)
    with pytest.raises(InputError, match="first layer takes 1-channel images, the library gives RGB"):
        ol.gradcam(clf, make_images(2), [0, 1])
    fixed = ol.wrap_classifier(FixedSize().eval(), "f.2", num_classes=NUM_CLASSES, input_size=64)
    with pytest.raises(InputError, match="images of 96 x 96 pixels do not fit this network"):
        ol.gradcam(fixed, make_images(2, size=96), [0, 1])
    with pytest.raises(InputError, match="images of 96 x 96 pixels do not fit this network"):
        ol.evaluate(fixed, "fakecam", make_images(2, size=96), [0, 1])
