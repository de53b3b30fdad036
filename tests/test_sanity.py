"""Appendix G: cascading randomisation and the similarity measures."""

import pytest
import torch
from torch import nn

from opticam_lib import gradcam, wrap_classifier
from opticam_lib.sanity import (
    cascading_randomization,
    hog_similarity,
    parameter_randomization_test,
    spearman,
    ssim,
)


def tiny_cnn():
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(8, 8, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 4))
    return wrap_classifier(net, "relu2", num_classes=4, input_size=16, linear_head="fc")


def test_similarities_by_hand():
    a = torch.arange(256.0).reshape(1, 16, 16) / 255
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, 1 - a) == pytest.approx(-1.0)
    assert spearman(a, torch.zeros_like(a)) == 0.0
    assert ssim(a, a) == pytest.approx(1.0)
    b = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert hog_similarity(b, b) == pytest.approx(1.0)
    assert ssim(b, 1 - b) < 0.5


def test_cascade_randomises_in_order_and_leaves_original_untouched():
    clf = tiny_cnn()
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    steps = list(cascading_randomization(clf, ["fc", "conv2", "conv1"], seed=1))
    assert [s for s, _ in steps] == ["original", "fc", "conv2", "conv1"]
    for k, v in clf.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = [
        {n for n, p in c.net.named_parameters() if not torch.equal(p, dict(clf.net.named_parameters())[n])}
        for _, c in steps
    ]
    assert changed[0] == set()
    assert changed[1] == {"fc.weight", "fc.bias"}  # only the top layer so far
    assert {"fc.weight", "conv2.weight"} <= changed[2]
    assert {"fc.weight", "conv2.weight", "conv1.weight"} <= changed[3]


def test_randomization_test_shapes_and_first_step_identity():
    clf = tiny_cnn()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    res = parameter_randomization_test(clf, gradcam, images, torch.tensor([0, 1]), ["fc", "conv2"])
    assert res.steps == ["original", "fc", "conv2"]
    for name, sims in res.similarity.items():
        assert sims.shape == (3, 2), name
        assert sims[0] == pytest.approx([1.0, 1.0], abs=1e-6), name  # the original compared with itself


def test_unknown_layer_is_refused():
    from opticam_lib.errors import InputError

    with pytest.raises(InputError, match="unknown layer"):
        list(cascading_randomization(tiny_cnn(), ["nope"]))
