"""Appendix G: cascading randomisation, the similarity measures, the label-permutation comparison, verdicts."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata
from torch import nn

from opticam_lib import fakecam, gradcam, wrap_classifier
from opticam_lib.course.exercises import check_spearman
from opticam_lib.course.sanity_checks import plot_cascade, show_cascade, show_comparison
from opticam_lib.errors import InputError
from opticam_lib.metrics.sanity import (
    MEASURES,
    cascading_randomization,
    compare_models,
    default_cascade,
    edge_detector,
    hog_similarity,
    parameter_randomization_test,
    randomization_table,
    randomize_module,
    similarities,
    spearman,
    ssim,
    verdicts,
)


def test_a_cascade_step_randomises_everything_above_its_layer():
    """VGG-like stack: the step at features.4 must also randomise features.5 (a batch norm) and features.7, 8,
    which sit between it and the previous step's layer, not only the layers named in the list."""
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    net = nn.Sequential()
    net.add_module("features", features)
    net.add_module("pool", nn.Flatten())
    net.add_module("classifier", nn.Linear(4 * 8 * 8, 3))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-1, 1)
    clf = wrap_classifier(net, "features.9", input_size=32, num_classes=3)
    steps = dict(cascading_randomization(clf, ["classifier", "features.7", "features.4"], seed=0))
    original = clf.net.state_dict()

    def changed(step: str) -> set[str]:
        now = steps[step].net.state_dict()
        return {k.rsplit(".", 1)[0] for k in now if not torch.equal(now[k], original[k])}

    assert changed("classifier") == {"classifier"}
    assert changed("features.7") == {"classifier", "features.7", "features.8"}
    assert changed("features.4") == {"classifier", "features.4", "features.5", "features.7", "features.8"}


def tiny_cnn(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("bn1", nn.BatchNorm2d(8))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(8, 8, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 4))
    clf = wrap_classifier(net.eval(), "relu2", num_classes=4, input_size=16, linear_head="fc")
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that resetting them is visible
        net.bn1.running_mean.uniform_(-1, 1)
        net.bn1.running_var.uniform_(0.5, 2)
        net.bn1.weight.uniform_(0.5, 2)
        net.bn1.bias.uniform_(-1, 1)
    return clf


def images(n: int = 3, size: int = 16, seed: int = 0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- similarity measures ------------------------------------------------------------------------------------


def test_similarities_by_hand():
    a = torch.arange(256.0).reshape(1, 16, 16) / 255
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, 1 - a) == pytest.approx(-1.0)
    assert spearman(a, a**3) == pytest.approx(1.0)  # rank-based: any increasing transform
    assert ssim(a, a) == pytest.approx(1.0)
    b = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert hog_similarity(b, b) == pytest.approx(1.0)
    assert ssim(b, 1 - b) < 0.5
    c = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert abs(spearman(b, c)) < 0.2 and abs(hog_similarity(b, c)) < 0.5  # independent noise


def test_spearman_is_pearson_of_average_ranks():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(100, generator=g) * 5).floor()  # many ties
    b = a + torch.rand(100, generator=g) * 3
    want = pearsonr(rankdata(a.numpy()), rankdata(b.numpy())).statistic
    assert spearman(a, b) == pytest.approx(want, abs=1e-9)


def test_average_ranks_match_scipy():
    from opticam_lib.metrics.sanity import average_ranks

    g = np.random.default_rng(0)
    for x in (g.random(50), g.integers(0, 4, 60).astype(float), np.array([2.0, 2.0, 2.0]), np.array([1.0])):
        assert np.array_equal(average_ranks(x), rankdata(x))


def test_constant_maps():
    a = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    z = torch.zeros(1, 16, 16)
    assert spearman(a, z) == 0.0 and hog_similarity(a, z) == 0.0
    assert spearman(z, z) == 1.0 and hog_similarity(z, z) == 1.0  # identical maps are not "uncorrelated"


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="differ in size"):
        spearman(torch.rand(1, 8, 8), torch.rand(1, 9, 9))
    with pytest.raises(InputError, match="one map at a time"):
        ssim(torch.rand(2, 16, 16), torch.rand(2, 16, 16))
    with pytest.raises(InputError, match="too small"):
        hog_similarity(torch.rand(1, 8, 8), torch.rand(1, 8, 8))
    with pytest.raises(InputError, match="same shape"):
        similarities(torch.rand(2, 1, 16, 16), torch.rand(3, 1, 16, 16))


def test_abs_and_no_abs_agree_on_nonnegative_maps_only():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 16, 16, generator=g), torch.rand(2, 1, 16, 16, generator=g)
    s = similarities(a, b)
    assert np.allclose(s["rank correlation (abs)"], s["rank correlation (no abs)"])
    signed = torch.linspace(-1, 1, 256).reshape(1, 16, 16)
    assert spearman(signed.abs(), signed.abs()) == pytest.approx(1.0)
    assert spearman(signed.abs(), signed) < 0.2  # the sign matters without abs


def test_check_spearman_accepts_a_right_answer_and_rejects_pearson(capsys):
    def right(a, b):
        return float(pearsonr(rankdata(a.flatten().numpy()), rankdata(b.flatten().numpy())).statistic)

    def pearson(a, b):
        return float(pearsonr(a.flatten().numpy(), b.flatten().numpy()).statistic)

    def ordinal_ranks(a, b):  # ties broken by position: wrong on maps with ties
        ra = a.flatten().argsort().argsort().float().numpy()
        rb = b.flatten().argsort().argsort().float().numpy()
        return float(pearsonr(ra, rb).statistic)

    def unsolved(a, b):
        raise NotImplementedError

    assert check_spearman(right) is True
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Pearson"):
        check_spearman(pearson)
    with pytest.raises(AssertionError, match="average rank"):
        check_spearman(ordinal_ranks)
    assert check_spearman(unsolved) is False
    assert "not solved" in capsys.readouterr().out


# --- randomisation ------------------------------------------------------------------------------------------


def test_cascade_randomises_in_order_and_leaves_original_untouched():
    clf = tiny_cnn()
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in clf.model.named_parameters()}
    steps = list(cascading_randomization(clf, ["fc", "conv2", "bn1", "conv1"], seed=1))
    assert [s for s, _ in steps] == ["original", "fc", "conv2", "bn1", "conv1"]
    assert steps[0][1] is clf
    for k, v in clf.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert {n: p.requires_grad for n, p in clf.model.named_parameters()} == flags
    assert not clf.model.training
    original = clf.model.state_dict()
    changed = [
        {k for k, v in c.model.state_dict().items() if not torch.equal(v, original[k])} for _, c in steps
    ]
    assert changed[0] == set()
    assert changed[1] == {"net.fc.weight", "net.fc.bias"}  # only the top layer so far
    assert changed[2] == changed[1] | {"net.conv2.weight", "net.conv2.bias"}
    bn = {"net.bn1.weight", "net.bn1.bias", "net.bn1.running_mean", "net.bn1.running_var"}
    assert bn <= changed[3] and changed[2] <= changed[3]
    assert changed[4] == changed[3] | {"net.conv1.weight", "net.conv1.bias"}
    last = steps[-1][1].net
    assert torch.equal(last.bn1.running_mean, torch.zeros(8)) and torch.equal(
        last.bn1.running_var, torch.ones(8)
    )
    assert all(not c.model.training for _, c in steps)


def test_each_step_is_its_own_copy():
    clf = tiny_cnn()
    steps = dict(cascading_randomization(clf, ["fc", "conv2"], seed=0))
    w = steps["conv2"].net.fc.weight.clone()
    with torch.no_grad():
        steps["fc"].net.fc.weight.zero_()  # modifying one step leaves the next one alone
    assert torch.equal(steps["conv2"].net.fc.weight, w)


def test_randomisation_is_deterministic_from_the_seed_and_leaves_global_rng_alone():
    clf = tiny_cnn()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = [c.model.state_dict() for _, c in cascading_randomization(clf, ["fc", "conv2"], seed=7)]
    assert torch.equal(torch.get_rng_state(), state)
    b = [c.model.state_dict() for _, c in cascading_randomization(clf, ["fc", "conv2"], seed=7)]
    c = [c.model.state_dict() for _, c in cascading_randomization(clf, ["fc", "conv2"], seed=8)]
    assert all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert not torch.equal(a[-1]["net.conv2.weight"], c[-1]["net.conv2.weight"])


def test_randomised_weights_have_the_stated_scale():
    lin = nn.Linear(400, 300)
    randomize_module(lin, torch.Generator().manual_seed(0))
    assert float(lin.weight.detach().std()) == pytest.approx(1 / 20, rel=0.05)  # N(0, 1/fan_in), fan_in = 400
    assert torch.equal(lin.bias, torch.zeros(300))


def test_unknown_empty_repeated_or_parameter_free_layers_are_refused():
    clf = tiny_cnn()
    with pytest.raises(InputError, match="unknown layer"):
        list(cascading_randomization(clf, ["nope"]))
    with pytest.raises(InputError, match="at least one layer"):
        list(cascading_randomization(clf, []))
    with pytest.raises(InputError, match="twice"):
        list(cascading_randomization(clf, ["fc", "fc"]))
    with pytest.raises(InputError, match="no parameters"):
        list(cascading_randomization(clf, ["relu2"]))
    with pytest.raises(InputError, match="no default cascade"):
        default_cascade(clf)


def test_default_cascades_name_real_layers():
    from opticam_lib import load_classifier

    for name in ("world_cnn", "world_cnn_permuted"):
        clf = load_classifier(name, pretrained=False)
        layers = default_cascade(clf)
        assert len(layers) == 5 and layers[0] == clf.linear_head
        assert [s for s, _ in cascading_randomization(clf, layers)] == ["original", *layers]


# --- the test, the table, the verdicts ------------------------------------------------------------------------


def test_randomization_test_shapes_first_step_identity_and_controls():
    clf = tiny_cnn()
    x = images()
    res = parameter_randomization_test(clf, gradcam, x, torch.tensor([0, 1, 2]), ["fc", "conv2"])
    assert res.steps == ["original", "fc", "conv2"] and res.method == "gradcam"
    for name, sims in res.similarity.items():
        assert sims.shape == (3, 3), name
        assert sims[0] == pytest.approx([1.0] * 3, abs=1e-6), name  # the original compared with itself
    # a method that ignores the model cannot change: similarity 1 at every step, on every measure
    for control in (fakecam, edge_detector):
        r = parameter_randomization_test(clf, control, x, None, ["fc", "conv2"])
        for name, sims in r.similarity.items():
            assert np.allclose(sims, 1.0, atol=1e-6), (control.__name__, name)


def test_gradcam_maps_change_when_the_head_is_randomised():
    clf = tiny_cnn()
    x = images(6, seed=1)
    res = parameter_randomization_test(clf, "gradcam", x, None, ["fc", "conv2", "conv1"], seed=0)
    assert not all(torch.equal(m, res.maps[0]) for m in res.maps[1:])
    assert res.similarity["SSIM"][1:].mean() < 0.99


def test_table_and_verdicts():
    clf = tiny_cnn()
    x = images()
    results = [
        parameter_randomization_test(clf, m, x, [0, 1, 2], ["fc", "conv2"], name=n)
        for m, n in ((fakecam, "Fake-CAM"), ("gradcam", "Grad-CAM"))
    ]
    t = randomization_table(results)
    assert set(t.columns) >= {"method", "step", "position", "measure", "mean", "std", "n"}
    assert len(t) == 2 * 3 * len(MEASURES)
    v = verdicts(t)
    assert len(v) == 2 * 2  # methods x randomised steps
    fake = v[v["method"] == "Fake-CAM"]
    assert not fake["passes"].any() and np.allclose(fake["worst"], 1.0)
    # the verdict is the stated criterion, recomputed here by hand
    for _, row in v.iterrows():
        g = t[(t["method"] == row["method"]) & (t["step"] == row["step"])]
        assert row["passes"] == bool(g["mean"].max() < 0.5)
        assert row["worst"] == pytest.approx(g["mean"].max())
    assert len(verdicts(t, steps=["fc"])) == 2
    with pytest.raises(InputError, match="unknown steps"):
        verdicts(t, steps=["nope"])
    with pytest.raises(InputError, match="threshold"):
        verdicts(t, threshold=0)
    with pytest.raises(InputError, match="no results"):
        randomization_table([])


def test_mismatched_inputs_are_refused():
    clf = tiny_cnn()
    with pytest.raises(InputError):
        parameter_randomization_test(clf, "gradcam", images(2), torch.tensor([0, 1, 2]), ["fc"])
    with pytest.raises(InputError, match="unknown method"):
        parameter_randomization_test(clf, "nope", images(2), None, ["fc"])


def test_compare_models_label_permutation_layout():
    a, b = tiny_cnn(0), tiny_cnn(1)
    x = images(4)
    same = compare_models(a, a, "gradcam", x, [0, 1, 2, 3])
    for name, v in same.similarity.items():
        assert np.allclose(v, 1.0, atol=1e-6), name  # a model against itself
    diff = compare_models(a, b, "gradcam", x, [0, 1, 2, 3])
    assert diff.maps_a.shape == (4, 1, 16, 16) and not torch.equal(diff.maps_a, diff.maps_b)
    t = diff.table()
    assert list(t["step"].unique()) == ["permuted"] and len(t) == len(MEASURES)
    assert len(verdicts(t)) == 1
    both = randomization_table([same, diff])  # comparisons go into the same tidy table
    assert len(both) == 2 * len(MEASURES) and set(both["step"]) == {"permuted"}
    with pytest.raises(InputError, match="target classes"):
        compare_models(a, b, "gradcam", x, None)
    other = wrap_classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)), "1", num_classes=5)
    with pytest.raises(InputError, match="differ"):
        compare_models(a, other, "gradcam", x, [0, 1, 2, 3])


def test_edge_detector_follows_the_convention():
    x = torch.zeros(2, 3, 16, 16)
    x[:, :, :, 8:] = 1.0  # a vertical edge
    m = edge_detector(None, x)
    assert m.shape == (2, 1, 16, 16) and float(m.min()) >= 0 and float(m.max()) == 1.0
    assert float(m[0, 0, :, 7:9].min()) == 1.0 and float(m[0, 0, :, :5].max()) == 0.0


def test_figures():
    clf = tiny_cnn()
    x = images(3, size=32)
    results = [parameter_randomization_test(clf, "gradcam", x, None, ["fc", "conv2"])]
    fig = plot_cascade(randomization_table(results))
    assert len(fig.axes) == len(MEASURES)
    panels = [ax for ax in show_cascade(x, results, index=[0, 1]).axes if ax.images]  # not the colour bar
    assert len(panels) == 2 * 4
    with pytest.raises(InputError, match="index"):
        show_cascade(x, results, index=[5])
    comp = compare_models(clf, tiny_cnn(1), "gradcam", x, [0, 1, 2])
    assert len([ax for ax in show_comparison(x, [comp], index=[0, 1]).axes if ax.images]) == 2 * 3
