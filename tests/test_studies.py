"""opticam_lib.course.faithfulness: selectivity (Fig. A4), insertion/deletion of several methods, tables next to the paper's."""

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from opticam_lib import evaluate, fakecam, gradcam, wrap_classifier
from opticam_lib.course.faithfulness import (
    PAPER_ALPHAS,
    CurveStudy,
    insertion_deletion,
    plot_curves,
    plot_p_vs_o,
    plot_selectivity,
    selectivity,
    with_paper,
)
from opticam_lib.errors import InputError
from opticam_lib.metrics.classification import average_drop, average_gain, average_increase, class_probability


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


@pytest.fixture(scope="module")
def setup():
    clf = tiny_cnn()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2])
    maps = {"Grad-CAM": gradcam(clf, images, targets), "Fake-CAM": fakecam(clf, images, targets)}
    return clf, images, targets, maps


def test_selectivity_matches_metrics_by_hand(setup):
    clf, images, targets, maps = setup
    table = selectivity(clf, images, maps, targets, alphas=(0.5, 1, 2))
    assert list(table.columns) == ["method", "alpha", "AD", "AG", "AI"]
    assert len(table) == 2 * 3
    assert list(table["method"].unique()) == ["Grad-CAM", "Fake-CAM"]
    p = class_probability(clf, images, targets)
    for name, m in maps.items():
        for a in (0.5, 1, 2):
            o = class_probability(clf, images * m.pow(a), targets)
            row = table[(table.method == name) & (table.alpha == a)].iloc[0]
            assert row.AD == pytest.approx(average_drop(p, o))
            assert row.AG == pytest.approx(average_gain(p, o))
            assert row.AI == pytest.approx(average_increase(p, o))


def test_selectivity_alpha_one_equals_evaluate(setup):
    clf, images, targets, _ = setup
    ev = evaluate(clf, "gradcam", images, targets)
    table = selectivity(clf, images, {"Grad-CAM": gradcam(clf, images, targets)}, targets, alphas=(1,))
    assert table.AD[0] == pytest.approx(ev.AD)
    assert table.AG[0] == pytest.approx(ev.AG)
    assert table.AI[0] == pytest.approx(ev.AI)


def test_selectivity_binary_map_is_invariant_to_alpha(setup):
    # Fake-CAM is 0/1: any power leaves it unchanged, so every alpha gives the same numbers
    clf, images, targets, maps = setup
    table = selectivity(clf, images, {"Fake-CAM": maps["Fake-CAM"]}, targets, alphas=PAPER_ALPHAS)
    assert len(table) == len(PAPER_ALPHAS)
    assert table.AD.nunique() == 1 and table.AG.nunique() == 1 and table.AI.nunique() == 1


def test_selectivity_rejects_bad_inputs(setup):
    clf, images, targets, maps = setup
    with pytest.raises(InputError, match="positive"):
        selectivity(clf, images, maps, targets, alphas=(0, 1))
    with pytest.raises(InputError, match="empty"):
        selectivity(clf, images, {}, targets)
    with pytest.raises(InputError, match="Bad"):
        selectivity(clf, images, {"Bad": maps["Grad-CAM"][:2]}, targets)


def test_plot_selectivity_returns_figure(setup):
    clf, images, targets, maps = setup
    fig = plot_selectivity(selectivity(clf, images, maps, targets, alphas=(0.5, 1, 2)))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_xscale() == "log"
    import pandas as pd

    with pytest.raises(InputError, match="lacks"):
        plot_selectivity(pd.DataFrame({"method": ["a"], "alpha": [1.0]}))


def test_insertion_deletion_study(setup):
    clf, images, targets, maps = setup
    study = insertion_deletion(clf, images, maps, targets, steps=4)
    assert isinstance(study, CurveStudy)
    assert study.steps == 4
    assert set(study.insertion) == set(study.deletion) == set(maps)
    for name in maps:
        assert study.insertion[name].shape == (3, 5)
        # deletion starts from the intact image, insertion ends on it
        p = class_probability(clf, images, targets)
        assert torch.allclose(study.deletion[name][:, 0], p, atol=1e-5)
        assert torch.allclose(study.insertion[name][:, -1], p, atol=1e-5)
        mean_colour = clf.model.mean.expand_as(images)  # RISE's deletion substrate (0 after normalisation)
        assert torch.allclose(
            study.deletion[name][:, -1], class_probability(clf, mean_colour, targets), atol=1e-5
        )
    rows = study.rows()
    assert [r["method"] for r in rows] == list(maps)
    assert all(0 <= r["I"] <= 100 and 0 <= r["D"] <= 100 for r in rows)
    auc = study.auc()["Grad-CAM"]
    assert auc.shape == (3, 2)
    assert rows[0]["I"] == pytest.approx(float(auc[:, 0].mean()) * 100)
    assert isinstance(plot_curves(study, 1), Figure)
    with pytest.raises(InputError):
        plot_curves(study, 3)


def test_insertion_deletion_defaults_to_predicted_class(setup):
    clf, images, _, maps = setup
    study = insertion_deletion(clf, images, {"Fake-CAM": maps["Fake-CAM"]}, steps=2)
    assert torch.equal(study.targets, clf.predict(images).argmax(1).cpu())
    with pytest.raises(InputError, match="empty"):
        insertion_deletion(clf, images, {})


def test_with_paper_side_by_side(setup):
    clf, images, targets, _ = setup
    ev = evaluate(clf, "fakecam", images, targets)
    text = with_paper([ev, {"method": "Unknown", "AD": 1.0, "AG": 2.0, "AI": 3.0, "note": "2 images"}])
    lines = text.splitlines()
    assert "paper, Table 1, resnet50" in lines[0]
    fake = next(line for line in lines if line.startswith("Fake-CAM"))
    assert fake.split("|")[1].split() == ["0.8", "1.6", "46.0"]  # the paper's Table 1, ResNet50
    unknown = next(line for line in lines if line.startswith("Unknown"))
    assert unknown.split("|")[1].split() == ["-", "-", "-", "2", "images"]
    t3 = with_paper([{"method": "Opti-CAM", "I": 50.0, "D": 10.0}], table="3", columns=("I", "D"))
    assert t3.splitlines()[-1].split("|")[1].split() == ["62.0", "19.7"]
    with pytest.raises(InputError):
        with_paper([])


def test_plot_p_vs_o(setup):
    clf, images, targets, _ = setup
    evs = [evaluate(clf, m, images, targets) for m in ("fakecam", "gradcam")]
    fig = plot_p_vs_o(evs)
    assert isinstance(fig, Figure)
    assert "Fake-CAM" in fig.axes[0].get_title()
    assert len(plot_p_vs_o(evs * 3, cols=4).axes) == 8  # 6 panels + 2 blank


def test_with_paper_prints_table4_ms_with_two_decimals_and_missing_values_as_dashes():
    rows = [
        {"method": "Opti-CAM", "AOPC": 5.0, "MS": 0.123, "ADCC": float("nan")},
        {"method": "Score-CAM", "AOPC": 7.25, "MS": None, "ADCC": 50.0},
    ]
    lines = with_paper(rows, table="4", columns=("AOPC", "MS", "ADCC")).splitlines()
    opti = next(line for line in lines if line.startswith("Opti-CAM"))
    ours, paper = opti.split("|")
    assert ours.split()[1:] == ["5.0", "0.12", "-"]
    assert paper.split() == ["6.3", "1.03", "65.5"]  # the paper's Table 4, ResNet50
    score = next(line for line in lines if line.startswith("Score-CAM"))
    assert score.split("|")[0].split()[1:] == ["7.2", "-", "50.0"]


def test_table4_study_runs_ms_and_adcc_only_where_asked(setup):
    pytest.importorskip("quantus")
    from opticam_lib.course.faithfulness import table4_study
    from opticam_lib.metrics.more_metrics import aopc, table4_scores

    clf, images, targets, _ = setup
    maps = {"gradcam": gradcam(clf, images, targets), "fakecam": fakecam(clf, images, targets)}
    study = table4_study(clf, images, targets, maps, explain=["gradcam"], subset=[0, 2], samples=2, regions=3)
    assert [r["method"] for r in study.rows] == ["Grad-CAM", "Fake-CAM"]
    grad, fake = study.rows
    assert grad["AOPC"] == pytest.approx(
        100 * float(aopc(clf, images, maps["gradcam"], targets, regions=3).mean())
    )
    direct = table4_scores(clf, images[[0, 2]], "gradcam", targets[[0, 2]], maps=maps["gradcam"][[0, 2]],
                           metrics=("MS", "ADCC"), samples=2)  # fmt: skip
    assert grad["MS"] == pytest.approx(float(direct["MS"].mean()))
    assert grad["ADCC"] == pytest.approx(100 * float(direct["ADCC"].mean()))
    assert fake["MS"] != fake["MS"] and fake["ADCC"] != fake["ADCC"]  # NaN: not asked
    assert study.subset == [0, 2] and study.images == 3 and study.samples == 2
    with pytest.raises(InputError, match="without maps"):
        table4_study(clf, images, targets, maps, explain=["opticam"], regions=3)
