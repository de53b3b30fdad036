"""opticam_lib.course.ablations: the option grid of notebook 07 against direct calls of optimize and the metrics,
the target rules of Table A9, the classifier without input normalisation (Table A14), the paper's rows,
the figures and the exercise checker. Tiny models only (conftest), so every run takes milliseconds."""

from __future__ import annotations

import pytest
import torch
from conftest import make_images
from matplotlib.figure import Figure

from opticam_lib import InputError, classification_metrics, optimize
from opticam_lib.course.ablations import (
    DEFAULTS,
    TARGET_RULES,
    GridCache,
    ablation_settings,
    candidate_layers,
    choose_targets,
    paper_rows,
    paper_target_classes,
    plot_lr_iterations,
    plot_study,
    run_grid,
    side_by_side,
    without_input_normalization,
)
from opticam_lib.course.exercises import check_target_rule
from opticam_lib.images import sample_names
from opticam_lib.methods.opti_cam import DEFAULT_LR
from opticam_lib.metrics.classification import class_probability
from opticam_lib.paper.tables import paper_value
from opticam_lib.profiles import PROFILES

LABELS = torch.tensor([1, 3, 0])


def direct(clf, images, targets, labels, iterations, **options):
    """AD/AG/AI of an Opti-CAM run made by hand: optimize (no early stop), then p and o of the labels."""
    maps = optimize(clf, images, targets, iterations=iterations, tol=None, progress=False, **options).maps
    p = class_probability(clf, images, labels)
    o = class_probability(clf, images * maps, labels)
    return classification_metrics(p, o), maps


# --------------------------------------------------------------------------------------------------------------
# target rules and input normalisation


def test_choose_targets_follows_the_model_probabilities(bn_cnn, images):
    probs = bn_cnn.predict(images)
    order = probs.argsort(dim=1, descending=True)
    assert torch.equal(choose_targets(bn_cnn, images, LABELS, "ground_truth"), LABELS)
    assert torch.equal(choose_targets(bn_cnn, images, LABELS, "most"), order[:, 0])
    assert torch.equal(choose_targets(bn_cnn, images, LABELS, "second"), order[:, 1])
    assert torch.equal(choose_targets(bn_cnn, images, LABELS, "least"), probs.argmin(dim=1))
    second = choose_targets(bn_cnn, images, LABELS, "second")
    assert (second != choose_targets(bn_cnn, images, LABELS, "most")).all()
    with pytest.raises(InputError, match="unknown target rule"):
        choose_targets(bn_cnn, images, LABELS, "random")
    with pytest.raises(InputError):
        choose_targets(bn_cnn, images, [1, 2], "most")  # one label per image


def test_without_input_normalization_shares_the_network(bn_cnn, images):
    raw = without_input_normalization(bn_cnn)
    assert raw.net is bn_cnn.net  # same weights, nothing copied
    assert not raw.model.normalized and bn_cnn.model.normalized  # the original is untouched
    assert raw.target_layer == bn_cnn.target_layer and raw.categories == bn_cnn.categories
    with torch.no_grad():
        assert torch.allclose(raw.model(images), bn_cnn.net(images))
        mean, std = bn_cnn.model.mean, bn_cnn.model.std
        assert torch.allclose(bn_cnn.model(images), bn_cnn.net((images - mean) / std))
        assert not torch.allclose(raw.model(images), bn_cnn.model(images))
    assert not raw.model.training


def test_without_input_normalization_keeps_each_modules_flag(bn_cnn, images):
    """The network is shared: wrapping it must not set every module to one mode (a frozen BatchNorm of a model in
    train mode became trainable again, a dropout left on in an eval model was switched off)."""
    bn_cnn.model.train()
    modules = list(bn_cnn.net.modules())
    modules[1].eval()
    before = [m.training for m in bn_cnn.model.modules()]
    raw = without_input_normalization(bn_cnn)
    assert [m.training for m in bn_cnn.model.modules()] == before
    assert raw.model.training
    run_grid(bn_cnn, images, LABELS, {"input_normalization": [False]}, iterations=2)
    assert [m.training for m in bn_cnn.model.modules()] == before


def test_the_cache_tells_other_images_and_weights_apart(tiny_cnn, images):
    """A shared cache was keyed by object ids: a temporary tensor that reused a freed one's id, or images or
    weights changed in place, got another run's numbers. Now the key holds their values' digests."""
    cache = GridCache()
    first = run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=2, cache=cache).table
    other = images.flip(-1)
    again = run_grid(tiny_cnn, other, LABELS, {"lr": [0.1]}, iterations=2, cache=cache).table
    assert cache.hits == 0
    fresh = run_grid(tiny_cnn, other, LABELS, {"lr": [0.1]}, iterations=2).table
    assert again["AG"].tolist() == fresh["AG"].tolist()
    images.mul_(0.5)  # in place: same object, other values
    run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=2, cache=cache)
    assert cache.hits == 0
    with torch.no_grad():
        next(tiny_cnn.net.parameters()).add_(0.1)  # weights changed in place
    run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=2, cache=cache)
    assert cache.hits == 0
    run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=2, cache=cache)
    assert cache.hits == 1  # the same images and weights: reused
    assert len(first) == len(again)


def test_without_input_normalization_refuses_other_models(bn_cnn):
    from dataclasses import replace

    bare = replace(bn_cnn, model=bn_cnn.net)
    with pytest.raises(InputError, match="InputNormalized"):
        without_input_normalization(bare)


# --------------------------------------------------------------------------------------------------------------
# the grid


def test_grid_rows_equal_direct_runs(bn_cnn, images):
    grid = {"objective": ["mask", "diff"], "normalization": ["range", "sigmoid"]}
    res = run_grid(bn_cnn, images, LABELS, grid, iterations=3)
    t = res.table
    assert list(t.columns) == ["objective", "normalization", "iterations", "AD", "AG", "AI", "n"]
    assert len(t) == 4 and (t["iterations"] == 3).all() and (t["n"] == 3).all()
    assert t[["objective", "normalization"]].drop_duplicates().shape[0] == 4
    for _, row in t.iterrows():
        want, maps = direct(
            bn_cnn, images, LABELS, LABELS, 3, objective=row["objective"], normalization=row["normalization"]
        )
        for m in ("AD", "AG", "AI"):
            assert row[m] == pytest.approx(want[m], abs=1e-9)
        assert torch.allclose(res.maps[(row["objective"], row["normalization"])], maps)
    # per-image rows: one per configuration and image, p and o in [0, 1]
    per = res.per_image
    assert len(per) == 4 * 3 and per["p"].between(0, 1).all() and per["o"].between(0, 1).all()
    # the four configurations do not all give the same maps
    maps = list(res.maps.values())
    assert any(not torch.allclose(maps[0], m) for m in maps[1:])


def test_checkpoints_equal_shorter_runs(tiny_cnn, images):
    res = run_grid(tiny_cnn, images, LABELS, {"lr": [0.05, 0.5]}, iterations=4, checkpoints=(1, 2, 4))
    t = res.table
    assert sorted(t["iterations"].unique().tolist()) == [1, 2, 4] and len(t) == 6
    for _, row in t.iterrows():
        want, _ = direct(tiny_cnn, images, LABELS, LABELS, int(row["iterations"]), lr=row["lr"])
        assert row["AG"] == pytest.approx(want["AG"], abs=1e-9)
        assert row["AD"] == pytest.approx(want["AD"], abs=1e-9)
    with pytest.raises(InputError, match="checkpoints"):
        run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=2, checkpoints=(1, 3))


def test_cache_reuses_a_shared_configuration(tiny_cnn, images, monkeypatch):
    import opticam_lib.course.ablations as ab

    calls = []
    real = ab._run_one

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(ab, "_run_one", counting)
    cache = GridCache()
    a = run_grid(tiny_cnn, images, LABELS, {"lr": [0.1, 1.0]}, iterations=4, checkpoints=(2, 4), cache=cache)
    assert len(calls) == 2
    # the default configuration (lr 0.1) at 2 iterations is a checkpoint of the first run: no new run
    b = run_grid(tiny_cnn, images, LABELS, {"objective": ["mask", "diff"]}, iterations=2, cache=cache)
    assert len(calls) == 3 and cache.hits == 1
    shared = a.table[(a.table["lr"] == 0.1) & (a.table["iterations"] == 2)].iloc[0]
    mask = b.table[b.table["objective"] == "mask"].iloc[0]
    assert mask["AG"] == shared["AG"] and mask["AD"] == shared["AD"]
    # and it is what a fresh run gives
    fresh = run_grid(tiny_cnn, images, LABELS, {"objective": ["mask"]}, iterations=2).table.iloc[0]
    assert len(calls) == 4  # no cache given: a run of its own
    assert fresh["AG"] == pytest.approx(mask["AG"], abs=1e-12)
    # a checkpoint the cache does not hold is run again
    run_grid(tiny_cnn, images, LABELS, {"objective": ["mask"]}, iterations=3, cache=cache)
    assert len(calls) == 5 and cache.hits == 1


def test_target_rules_in_the_grid(bn_cnn, images):
    res = run_grid(bn_cnn, images, LABELS, {"target": list(TARGET_RULES)}, iterations=2)
    per = res.per_image
    for rule in TARGET_RULES:
        part = per[per["target"] == rule]
        assert part["map_class"].tolist() == choose_targets(bn_cnn, images, LABELS, rule).tolist()
        assert part["eval_class"].tolist() == LABELS.tolist()  # the metrics follow the ground truth
    # each map is the map of its own class
    _, least_maps = direct(bn_cnn, images, choose_targets(bn_cnn, images, LABELS, "least"), LABELS, 2)
    assert torch.allclose(res.maps[("least",)], least_maps)
    # evaluate_on="target": the metrics follow the class the map explains
    own = run_grid(bn_cnn, images, LABELS, {"target": ["least"]}, iterations=2, evaluate_on="target")
    part = own.per_image
    assert part["eval_class"].tolist() == part["map_class"].tolist()
    want = class_probability(bn_cnn, images * least_maps, torch.tensor(part["map_class"].tolist()))
    assert torch.allclose(torch.tensor(part["o"].tolist(), dtype=torch.float64), want.double(), atol=1e-6)


def test_most_probable_equals_ground_truth_where_the_model_is_right(bn_cnn, images):
    labels = bn_cnn.predict(images).argmax(dim=1)  # a model that is right on every image
    res = run_grid(bn_cnn, images, labels, {"target": ["ground_truth", "most"]}, iterations=2)
    gt, most = res.table.iloc[0], res.table.iloc[1]
    assert gt["AG"] == most["AG"] and gt["AD"] == most["AD"]
    assert torch.equal(res.maps[("ground_truth",)], res.maps[("most",)])


def test_input_normalization_option(bn_cnn, images):
    res = run_grid(bn_cnn, images, LABELS, {"input_normalization": [True, False]}, iterations=2)
    per = res.per_image
    p_on = torch.tensor(per[per["input_normalization"]]["p"].tolist(), dtype=torch.float64)
    p_off = torch.tensor(per[~per["input_normalization"]]["p"].tolist(), dtype=torch.float64)
    raw = without_input_normalization(bn_cnn)
    assert torch.allclose(p_on, class_probability(bn_cnn, images, LABELS).double(), atol=1e-6)
    assert torch.allclose(p_off, class_probability(raw, images, LABELS).double(), atol=1e-6)
    assert not torch.allclose(p_on, p_off)
    want, maps = direct(raw, images, LABELS, LABELS, 2)
    off = res.table[~res.table["input_normalization"]].iloc[0]
    assert off["AG"] == pytest.approx(want["AG"], abs=1e-9)
    assert torch.allclose(res.maps[(False,)], maps)
    with pytest.raises(InputError, match="True or False"):
        run_grid(bn_cnn, images, LABELS, {"input_normalization": ["no"]}, iterations=1)


def test_candidate_layers_of_vgg16_bn_are_the_papers_stage_ends():
    """VGG16-BN's target, features.42, sits in a numbered stack: the study compares the ReLUs that end earlier
    stages (Table A13's kind of layer), never the head after it (classifier.5, .4, .3 were picked and gave no
    feature maps)."""
    from opticam_lib import load_classifier
    from opticam_lib.methods.feature_pass import features

    vgg = load_classifier("vgg16_bn", pretrained=False)  # the architecture: no download
    layers = candidate_layers(vgg)
    assert layers == ["features.42", "features.32", "features.22", "features.12"]
    x = torch.rand(1, 3, 64, 64)
    for layer in layers:
        assert features(vgg, x, layer)[0].dim() == 4, layer


def test_list_of_configurations_and_layers(tiny_vit, images):
    configs = [{"objective": "iomask"}, {"layer": "blocks.0.norm2", "lr": 0.5}]
    res = run_grid(tiny_vit, images, LABELS, configs, iterations=2)
    assert res.keys == ("objective", "layer", "lr")
    t = res.table
    assert t["objective"].tolist() == ["iomask", DEFAULTS["objective"]]
    assert t["lr"].tolist() == [DEFAULT_LR["adam"], 0.5]
    want, _ = direct(tiny_vit, images, LABELS, LABELS, 2, layer="blocks.0.norm2", lr=0.5)
    assert t.iloc[1]["AG"] == pytest.approx(want["AG"], abs=1e-9)


def test_grid_leaves_the_model_as_it_was(bn_cnn, images):
    flags = [p.requires_grad for p in bn_cnn.model.parameters()]
    run_grid(bn_cnn, images, LABELS, {"input_normalization": [True, False], "lr": [0.1]}, iterations=2)
    assert [p.requires_grad for p in bn_cnn.model.parameters()] == flags
    assert all(p.grad is None for p in bn_cnn.model.parameters())
    assert not bn_cnn.model.training and bn_cnn.model.normalized


@pytest.mark.parametrize(
    ("grid", "match"),
    [
        ({}, "empty"),
        ([], "empty"),
        ({"colour": ["red"]}, "unknown grid option"),
        ({"objective": "mask"}, "non-empty list"),
        ({"objective": []}, "non-empty list"),
        ({"objective": ["best"]}, "objective"),
        ({"target": ["random"]}, "target"),
    ],
)
def test_bad_grids_are_refused(tiny_cnn, images, grid, match):
    with pytest.raises(InputError, match=match):
        run_grid(tiny_cnn, images, LABELS, grid, iterations=1)


def test_bad_arguments_are_refused(tiny_cnn, images):
    with pytest.raises(InputError, match="evaluate_on"):
        run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=1, evaluate_on="prediction")
    with pytest.raises(InputError, match="iterations"):
        run_grid(tiny_cnn, images, LABELS, {"lr": [0.1]}, iterations=0)
    with pytest.raises(InputError):
        run_grid(tiny_cnn, images * 255, LABELS, {"lr": [0.1]}, iterations=1)


def test_best_row(tiny_cnn, images):
    res = run_grid(tiny_cnn, images, LABELS, {"lr": [0.01, 1.0]}, iterations=3)
    t = res.table
    assert res.best("AG")["AG"] == t["AG"].max() and res.best("AD")["AD"] == t["AD"].min()
    with pytest.raises(InputError):
        res.best("T")


# --------------------------------------------------------------------------------------------------------------
# settings, the paper's rows, figures, the checker


def test_settings_per_profile():
    laptop = ablation_settings(PROFILES["laptop"])
    paper = ablation_settings(PROFILES["paper"])
    for s in (laptop, paper):
        assert s.iterations in s.checkpoints and max(s.checkpoints) >= s.iterations
        assert 0.1 in s.lrs and list(s.checkpoints) == sorted(set(s.checkpoints))
    assert paper.iterations == 100 and paper.images is None and max(paper.checkpoints) == 100
    # both at convergence (the paper's 100 iterations); the laptop on four photos
    assert laptop.iterations == paper.iterations == 100 and max(laptop.checkpoints) == 100
    assert len(laptop.images) == 4 and set(laptop.images) <= set(sample_names())


def test_paper_rows_and_target_classes():
    t6 = paper_rows("6", "vgg16_bn", {"mask, sigmoid": "Opti-CAM (mask, sigmoid)", "Grad-CAM": "Grad-CAM"})
    assert t6.loc["mask, sigmoid", "AG"] == paper_value("6", "vgg16_bn", "Opti-CAM (mask, sigmoid)", "AG")
    assert t6.loc["Grad-CAM", "AI"] == paper_value("6", "vgg16_bn", "Grad-CAM", "AI")
    with pytest.raises(InputError, match="no row"):
        paper_rows("6", "vgg16_bn", {"x": "Opti-CAM (best)"})
    a9 = paper_target_classes("Opti-CAM")
    assert list(a9.index) == list(TARGET_RULES)
    assert a9.loc["least", "AD"] == paper_value("A9", "resnet50", "Opti-CAM", "AD_least")
    assert a9.loc["ground_truth", "AG"] == paper_value("A9", "resnet50", "Opti-CAM", "AG_ground_truth")
    with pytest.raises(InputError):
        paper_target_classes("Opti-CAM++")


def test_side_by_side():
    import pandas as pd

    ours = pd.DataFrame({"AD": [1.234, 5.0], "AG": [2.0, 3.0], "AI": [50.0, 75.0]}, index=["a", "b"])
    paper = pd.DataFrame({"AD": [9.0, 8.0], "AG": [7.0, float("nan")], "AI": [6.0, 5.0]}, index=["b", "c"])
    text = side_by_side(ours, paper, "laptop", "paper")
    lines = text.splitlines()
    assert len(lines) == 2 + 3
    row_a = next(line for line in lines if line.startswith("a "))
    assert "1.2" in row_a and row_a.rstrip().endswith("-")  # the paper has no row a
    row_b = next(line for line in lines if line.startswith("b "))
    assert "9.0" in row_b and "5.0" in row_b
    row_c = next(line for line in lines if line.startswith("c "))
    assert row_c.split("|")[0].split()[1:] == ["-", "-", "-"] and "-" in row_c.split("|")[1]


def test_figures(tiny_cnn):
    images = make_images(2)
    labels = torch.tensor([1, 2])
    res = run_grid(tiny_cnn, images, labels, {"lr": [0.1, 1.0]}, iterations=3, checkpoints=(1, 3))
    fig = plot_lr_iterations(res.table)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_title()]) == 3
    two = res.table[res.table["iterations"] == 3]
    fig = plot_study(two, x="lr", title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    with pytest.raises(InputError, match="lacks columns"):
        plot_study(two, x="objective")
    with pytest.raises(InputError, match="lacks columns"):
        plot_lr_iterations(two.drop(columns=["lr"]))


def test_checker(capsys):
    def solved(probs, labels, rule):
        if rule == "ground_truth":
            return labels
        order = probs.argsort(dim=1, descending=True)
        return {"most": order[:, 0], "second": order[:, 1], "least": order[:, -1]}[rule]

    def unsolved(probs, labels, rule):
        raise NotImplementedError

    def ascending(probs, labels, rule):
        return (
            labels
            if rule == "ground_truth"
            else probs.argsort(dim=1)[:, {"most": -1, "second": 1, "least": 0}[rule]]
        )

    def values(probs, labels, rule):
        return probs.max(dim=1).values

    assert check_target_rule(solved) is True
    assert "✓" in capsys.readouterr().out
    assert check_target_rule(unsolved) is False
    assert "not solved yet" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="second LEAST"):
        check_target_rule(ascending)
    with pytest.raises(AssertionError, match="probabilities"):
        check_target_rule(values)
