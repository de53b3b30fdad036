"""Models: the offline efficientnet_lite0 weights are the right ones, the registry and the weights cache answer
clearly when something is missing or corrupted, and ``Classifier`` / ``wrap_classifier`` behave as documented.
No network is used: missing weights must produce an error, never a download."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyCNN, make_images
from torch import nn

from opticam_lib import InputError, MissingWeightsError, available_models, load_classifier, wrap_classifier
from opticam_lib.methods.feature_pass import activations_and_gradients
from opticam_lib.models.registry import load_state_dict, weights_path

# ---------------------------------------------------------------------------------------------------------------
# efficientnet_lite0, the offline default


def test_efficientnet_lite0_predicts_the_photographs(real_classifier, real_predictions):
    """chelsea is a cat (ImageNet 281-285: tabby, tiger, Persian, Siamese, Egyptian), coffee an espresso (967)."""
    top = real_predictions.argmax(1)
    assert 281 <= int(top[0]) <= 285, real_classifier.categories[int(top[0])]
    assert int(top[1]) == 967
    assert float(real_predictions[1, 967]) > 0.5
    assert float(real_predictions[0, 281:286].sum()) > 0.5
    assert real_classifier.categories[967] == "espresso"


def test_top_lists_names_and_probabilities(real_classifier, real_images):
    top = real_classifier.top(real_images[1:2], k=3)
    assert len(top) == 1 and len(top[0]) == 3
    cls, name, p = top[0][0]
    assert (cls, name) == (967, "espresso") and 0.5 < p <= 1
    assert top[0][0][2] >= top[0][1][2] >= top[0][2][2]


def test_efficientnet_lite0_description(real_classifier):
    clf = real_classifier
    assert clf.name == "efficientnet_lite0"
    assert clf.num_classes == 1000 and len(clf.categories) == 1000
    assert clf.input_size == 224
    assert clf.target_layer == "bn2" and clf.linear_head == "classifier"
    assert clf.model.normalized and not clf.model.training
    assert clf.device == torch.device("cpu")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(clf.model(x), clf.net((x - 0.5) / 0.5), atol=1e-5)


def test_efficientnet_lite0_linear_head_follows_global_pooling(real_classifier, real_images):
    """CAM needs y = W GAP(A) + b after the target layer: then dy_c/dA = W_c / (h w) everywhere."""
    acts, grads, logits = activations_and_gradients(real_classifier, real_images[:1], torch.tensor([285]))
    h, w = acts.shape[-2:]
    head = real_classifier.layer("classifier")
    expected = head.weight[285].detach()[None, :, None, None].expand_as(grads) / (h * w)
    assert torch.allclose(grads, expected, atol=1e-7)
    assert torch.allclose(logits, head(acts.mean(dim=(2, 3))).detach(), atol=1e-4)


def test_pretrained_false_and_normalize_false(real_classifier, real_images):
    random = load_classifier(pretrained=False, normalize=False)
    assert not random.model.normalized
    x = real_images[:2]
    with torch.no_grad():
        assert torch.equal(random.model(x), random.net(x))  # no normalisation inside
        ours = real_classifier.model(x)
        theirs = random.model(x)
    assert not torch.allclose(ours, theirs, atol=1e-2)
    assert (theirs.argmax(1) != ours.argmax(1)).any() or (theirs - ours).abs().max() > 1
    # random weights differ from the shipped ones
    shipped = real_classifier.net.state_dict()
    differing = [
        k
        for k, v in random.net.state_dict().items()
        if v.is_floating_point() and not torch.equal(v, shipped[k])
    ]
    assert len(differing) > 100


def test_efficientnet_lite0_state_dict_fills_every_tensor():
    import timm

    from opticam_lib.models.zoo import efficientnet_lite0_state_dict

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = efficientnet_lite0_state_dict(net)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.endswith("num_batches_tracked") for k in missing)
    assert len(state) == len([k for k in net.state_dict() if not k.endswith("num_batches_tracked")])


# ---------------------------------------------------------------------------------------------------------------
# the registry and the weights cache


def test_available_models_lists_the_papers_models():
    models = available_models()
    for name in ("efficientnet_lite0", "resnet50", "vgg16_bn", "vit_b_16", "deit_b_16"):
        assert models.get(name)


def test_unknown_model_lists_known_ones():
    with pytest.raises(
        InputError, match=r"unknown model 'resnet5'.*known models:.*efficientnet_lite0.*resnet50"
    ):
        load_classifier("resnet5")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTICAM_CACHE", str(tmp_path))
    return tmp_path


def test_missing_weights_give_the_fetch_command(empty_cache):
    with pytest.raises(MissingWeightsError, match="python -m data_download resnet50") as info:
        load_classifier("resnet50")
    assert str(empty_cache) in str(info.value)
    assert weights_path("resnet50").parent == empty_cache / "weights"
    for name in ("vgg16_bn", "vit_b_16", "deit_b_16"):
        with pytest.raises(MissingWeightsError, match=f"python -m data_download {name}"):
            load_classifier(name)


def test_corrupted_weights_are_refused_by_checksum(empty_cache):
    path = weights_path("resnet50")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights" * 100)
    assert path.name == "resnet50-0676ba61.pth"
    with pytest.raises(
        MissingWeightsError,
        match=r"does not match its checksum.*expected 0676ba61.*python -m data_download resnet50 --force",
    ):
        load_classifier("resnet50")


def test_unreadable_weights_without_checksum_are_refused_clearly(tmp_path):
    """A file whose name carries no checksum (safetensors, a hand-made .pth): a clear error, not a parser's."""
    for name in ("vit.safetensors", "model.pth"):
        bad = tmp_path / name
        bad.write_bytes(b"\x00garbage" * 64)
        with pytest.raises(
            MissingWeightsError, match=r"corrupted or incomplete.*python -m data_download vit_b_16 --force"
        ):
            load_state_dict(bad, "vit_b_16")


def test_weights_with_a_matching_checksum_load(tmp_path):
    import hashlib

    state = {"w": torch.arange(4.0)}
    tmp = tmp_path / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    good = tmp_path / f"tiny-{digest}.pth"
    tmp.rename(good)
    assert torch.equal(load_state_dict(good)["w"], state["w"])


def test_pretrained_false_needs_no_weights(empty_cache):
    clf = load_classifier("resnet50", pretrained=False)
    assert clf.target_layer == "layer4" and clf.linear_head == "fc"


# ---------------------------------------------------------------------------------------------------------------
# Classifier and wrap_classifier


def test_wrap_classifier_checks_its_arguments():
    with pytest.raises(InputError, match="num_classes"):
        wrap_classifier(TinyCNN(), "features")
    with pytest.raises(InputError, match=r"unknown layer 'featurez'.*features"):
        wrap_classifier(TinyCNN(), "featurez", num_classes=5)
    with pytest.raises(InputError, match=r"not an nn\.Linear"):
        wrap_classifier(TinyCNN(), "features", num_classes=5, linear_head="pool")


def test_unknown_layer_message_lists_all_names_when_nothing_is_close(tiny_cnn):
    with pytest.raises(InputError, match=r"unknown layer 'xyz'.*features.*pool.*fc.*layer_names"):
        tiny_cnn.layer("xyz")
    with pytest.raises(InputError, match="unknown layer ''"):
        tiny_cnn.layer("")
    assert tiny_cnn.layer() is tiny_cnn.net.features
    assert tiny_cnn.layer_names() == [
        "features",
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "pool",
        "fc",
    ]


def test_wrapped_model_normalises_inside(tiny_cnn):
    net = TinyCNN()
    clf = wrap_classifier(net, "features", num_classes=5, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))
    x = make_images(2)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.5, 0.25]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(clf.model(x), net((x - mean) / std), atol=1e-6)
    assert clf.model.training == net.training  # the caller's flag, kept (methods switch to eval and back)
    assert clf.categories == [f"class {i}" for i in range(5)]


def test_to_grid(tiny_cnn, tiny_vit):
    a = torch.randn(2, 4, 3, 3)
    assert tiny_cnn.to_grid(a) is a
    with pytest.raises(InputError, match=r"\(N, K, h, w\)"):
        tiny_cnn.to_grid(torch.randn(2, 10, 4))
    tokens = torch.randn(2, 17, 12)
    grid = tiny_vit.to_grid(tokens)
    assert grid.shape == (2, 12, 4, 4)
    assert torch.equal(grid[1, 5, 2, 3], tokens[1, 1 + 2 * 4 + 3, 5])
    with pytest.raises(InputError, match="tokens"):
        tiny_vit.to_grid(a)
    with pytest.raises(InputError, match="square"):
        tiny_vit.to_grid(torch.randn(2, 16, 12))  # 15 patch tokens after the class token


def test_predict_restores_train_mode(bn_cnn):
    bn_cnn.model.train()
    probs = bn_cnn.predict(make_images(2))
    assert bn_cnn.model.training and all(m.training for m in bn_cnn.model.modules())
    assert torch.allclose(probs.sum(1), torch.ones(2))


class _NoParameters(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_device_of_a_model_without_parameters():
    net = nn.Sequential(nn.Identity(), _NoParameters())
    clf = wrap_classifier(net, "0", num_classes=3, mean=None, std=None)
    assert clf.device == torch.device("cpu")
