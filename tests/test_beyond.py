"""Notebook 11's library: the optimisers and schedules of ``optimize`` (checked against torch.optim), patience
for per-image early stopping, time-to-quality curves, several classes of one image, early-stop study, the
exercise's checker and the upload helper."""

from __future__ import annotations

import base64
import datetime
import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from opticam_lib import InputError, evaluate, optimize
from opticam_lib.course.beyond import (
    curves_table,
    early_stop_study,
    explain_image,
    explain_top_classes,
    first_reaching,
    format_rows,
    image_from_upload,
    image_picker,
    map_overlap,
    one_at_a_time,
    plot_time_to_quality,
    time_to_quality,
)
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.opti_cam import lr_factor
from opticam_lib.metrics.classification import class_probability, classification_metrics, gains
from opticam_lib.metrics.evaluation import score_maps

FAST = {"progress": False}
NOW = datetime.datetime.now(datetime.timezone.utc)


def torch_reference(clf, image, target, iterations, make_opt, make_sched=None):
    """Maximise F (eq. 10) for one image with a torch optimiser (and scheduler) on -F."""
    acts, _ = features(clf, image)
    u = torch.full((1, acts.shape[1]), 0.5, requires_grad=True)
    opt = make_opt([u])
    sched = make_sched(opt) if make_sched else None
    history = []
    for _ in range(iterations):
        w = torch.softmax(u, dim=1)
        s = (w[:, :, None, None] * acts).sum(1, keepdim=True)
        up = F.interpolate(s, size=image.shape[-2:], mode="bilinear", align_corners=False)
        mask = (up - up.min()) / (up.max() - up.min())
        f = clf.model(image * mask)[0, target]
        (u.grad,) = torch.autograd.grad(-f, u)
        opt.step()
        if sched:
            sched.step()
        history.append(float(f.detach()))
    return u.detach(), torch.tensor(history)


# ---------------------------------------------------------------------------------------------------------------
# optimize: optimisers and schedules


def test_sgd_momentum_matches_torch(bn_cnn, images):
    ours = optimize(
        bn_cnn, images[:1], 2, iterations=10, lr=5.0, optimizer="sgd", momentum=0.9, tol=None, **FAST
    )
    u_ref, h_ref = torch_reference(
        bn_cnn, images[:1], 2, 10, lambda p: torch.optim.SGD(p, lr=5.0, momentum=0.9)
    )
    assert torch.allclose(ours.history[0], h_ref, atol=1e-5)
    assert torch.allclose(ours.u, u_ref, atol=1e-4)
    assert not torch.allclose(ours.u, torch.full_like(ours.u, 0.5)), "SGD must move u"


@pytest.mark.parametrize(
    ("schedule", "make_sched"),
    [
        ("cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=9, eta_min=0)),
        ("step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.1)),
    ],
)
def test_adam_schedules_match_torch(tiny_vit, images, schedule, make_sched):
    ours = optimize(tiny_vit, images[:1], 1, iterations=9, lr=0.2, schedule=schedule, tol=None, **FAST)
    u_ref, h_ref = torch_reference(
        tiny_vit, images[:1], 1, 9, lambda p: torch.optim.Adam(p, lr=0.2), make_sched
    )
    assert torch.allclose(ours.history[0], h_ref, atol=1e-5)
    assert torch.allclose(ours.u, u_ref, atol=1e-4)
    constant = optimize(tiny_vit, images[:1], 1, iterations=9, lr=0.2, tol=None, **FAST)
    assert not torch.allclose(ours.u, constant.u, atol=1e-4), "the schedule must change the result"


def test_lr_factor_values_and_callable(tiny_cnn, images):
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert [lr_factor("step", s, 10) for s in (0, 4, 5, 9)] == pytest.approx([1, 1, 0.1, 0.1])
    assert lr_factor("step", 4, 9) == 1.0 and lr_factor("step", 5, 9) == pytest.approx(0.1)  # ceil(9/2) = 5
    frozen_u = optimize(tiny_cnn, images, 0, iterations=4, schedule=lambda s, t: 0.0, tol=None, **FAST).u
    assert torch.equal(frozen_u, torch.full_like(frozen_u, 0.5)), "a zero learning rate leaves u alone"
    with pytest.raises(InputError, match="non-negative"):
        optimize(tiny_cnn, images, 0, iterations=2, schedule=lambda s, t: -1.0, **FAST)
    with pytest.raises(InputError, match="schedule"):
        optimize(tiny_cnn, images, 0, iterations=2, schedule="warmup", **FAST)
    with pytest.raises(InputError, match="optimizer"):
        optimize(tiny_cnn, images, 0, iterations=2, optimizer="lbfgs", **FAST)
    with pytest.raises(InputError, match="momentum"):
        optimize(tiny_cnn, images, 0, iterations=2, optimizer="sgd", momentum=1.0, **FAST)
    with pytest.raises(InputError, match="patience"):
        optimize(tiny_cnn, images, 0, iterations=2, patience=0, **FAST)


def test_patience_delays_the_stop(tiny_cnn, images):
    """A black image gives a constant map and objective: the change is 0 from iteration 2 on, so it stops after
    1 + patience iterations; the other images run on, unaffected."""
    x = images.clone()
    x[1] = 0
    for patience in (1, 3):
        r = optimize(tiny_cnn, x, [0, 1, 2], iterations=10, tol=1e-10, patience=patience, **FAST)
        assert r.iterations.tolist() == [10, 1 + patience, 10]
    full = optimize(tiny_cnn, x, [0, 1, 2], iterations=10, tol=None, **FAST)
    assert torch.allclose(r.maps[[0, 2]], full.maps[[0, 2]], atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# time to quality


def test_time_to_quality_checkpoints_and_scores(bn_cnn, images):
    targets = torch.tensor([0, 1, 2])
    curves = time_to_quality(
        bn_cnn,
        images,
        targets,
        {"Adam": {"lr": 0.1}, "SGD": {"optimizer": "sgd", "lr": 50.0}},
        iterations=7,
        every=3,
    )
    assert list(curves) == ["Adam", "SGD"]
    p = class_probability(bn_cnn, images, targets)
    for c in curves.values():
        assert c.iterations == [0, 3, 6, 7]
        assert c.seconds[0] == 0 and all(b >= a for a, b in zip(c.seconds, c.seconds[1:]))
        final = classification_metrics(p, class_probability(bn_cnn, images * c.result.maps, targets))
        assert c.AG[-1] == pytest.approx(final["AG"], abs=1e-4) and c.AD[-1] == pytest.approx(
            final["AD"], abs=1e-4
        )
        assert c.result.iterations.tolist() == [7, 7, 7]
    assert curves["Adam"].AG[0] == curves["SGD"].AG[0], "both start from the same uniform-weight map"
    rows = curves_table(curves, level=curves["Adam"].AG[-1])
    assert rows[0]["iterations to level"] == first_reaching(
        curves["Adam"].iterations, curves["Adam"].AG, rows[0]["AG"]
    )
    assert "setting" in format_rows(rows)
    fig = plot_time_to_quality(curves, reference=1.0)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    with pytest.raises(InputError, match="set by time_to_quality"):
        time_to_quality(bn_cnn, images, targets, {"x": {"iterations": 3}}, iterations=2)
    with pytest.raises(InputError, match="at least one"):
        time_to_quality(bn_cnn, images, targets, {}, iterations=2)


def test_time_to_quality_starts_each_setting_from_its_own_map(bn_cnn, images):
    """Iteration 0 is the setting's own start map: its layer, normalisation and activation (it was the default
    setting's map for every curve)."""
    from opticam_lib.methods.opti_cam import saliency_map

    targets = torch.tensor([0, 1, 2])
    layer = (
        bn_cnn.layer_names()[1] if bn_cnn.layer_names()[1] != bn_cnn.target_layer else bn_cnn.layer_names()[2]
    )
    settings = {"default": {}, "sigmoid": {"normalization": "sigmoid"}, "relu": {"activation": "relu"},
                "layer": {"layer": layer}}  # fmt: skip
    curves = time_to_quality(bn_cnn, images, targets, settings, iterations=2, every=2)
    p = class_probability(bn_cnn, images, targets)
    for name, options in settings.items():
        acts = features(bn_cnn, images, options.get("layer"))[0]
        start = saliency_map(
            torch.full(acts.shape[:2], 0.5),
            acts,
            (32, 32),
            options.get("normalization", "range"),
            options.get("activation", "identity"),
        )
        direct = classification_metrics(p, class_probability(bn_cnn, images * start, targets))
        assert curves[name].AG[0] == pytest.approx(direct["AG"]), name
        assert curves[name].AD[0] == pytest.approx(direct["AD"]), name
    assert curves["sigmoid"].AG[0] != pytest.approx(curves["default"].AG[0])


def test_time_to_quality_keeps_the_evaluation_a_shorter_run_gives(bn_cnn, images):
    """One run serves a Table 1 row and the curve beyond it (notebook 05): the kept checkpoint's maps and scores
    are those of ``evaluate`` with that many iterations, all images in one batch."""
    targets = torch.tensor([0, 1, 2])
    setting = {"lr": 0.1, "tol": 1e-10}
    curve = time_to_quality(bn_cnn, images, targets, {"paper": setting}, iterations=9, every=3, keep=(6, 9))[
        "paper"
    ]
    assert sorted(curve.evaluations) == [6, 9]
    for k, kept in curve.evaluations.items():
        ref = evaluate(
            bn_cnn, "opticam", images, targets, keep_maps=True, batch_size=3, iterations=k, **setting
        )
        assert kept.method == ref.method and kept.options["iterations"] == k
        assert torch.allclose(kept.maps, ref.maps, atol=1e-6)
        assert (kept.AD, kept.AG, kept.AI) == pytest.approx((ref.AD, ref.AG, ref.AI), abs=1e-4)
        i = curve.iterations.index(k)
        assert (curve.AG[i], curve.AD[i]) == (kept.AG, kept.AD)
        assert kept.T == pytest.approx(curve.seconds[i] / 3 * 8)
    assert curve.evaluations[6].maps.shape == (3, 1, *images.shape[-2:])
    with pytest.raises(InputError, match=r"keep=\[4\] are not checkpoints"):
        time_to_quality(bn_cnn, images, targets, {"x": {}}, iterations=9, every=3, keep=(4,))
    with pytest.raises(InputError, match=r"keep=\[12\]"):
        time_to_quality(bn_cnn, images, targets, {"x": {}}, iterations=9, every=3, keep=(12,))
    for bad in (9, None, "36", 9.0):  # a bare number (keep=[9] meant), nothing, a string of digits
        with pytest.raises(InputError, match="keep must be a list of checkpoint iterations"):
            time_to_quality(bn_cnn, images, targets, {"x": {}}, iterations=9, every=3, keep=bad)
    with pytest.raises(InputError, match="keep must be a positive integer"):
        time_to_quality(bn_cnn, images, targets, {"x": {}}, iterations=9, every=3, keep=[3.0])
    with pytest.raises(InputError, match="the maps of Opti-CAM"):  # score_maps checks what it is given
        score_maps(bn_cnn, "Opti-CAM", images, targets, torch.full((1, 1, *images.shape[-2:]), 5.0), 1.0, {})


def test_time_to_quality_keeps_the_final_maps_when_every_image_stopped_early(bn_cnn, images):
    targets = torch.tensor([0, 1, 2])
    curve = time_to_quality(bn_cnn, images, targets, {"x": {"tol": 1e9}}, iterations=9, every=3, keep=(9,))[
        "x"
    ]
    assert curve.result.iterations.tolist() == [2, 2, 2] and curve.iterations == [0, 2]
    kept = curve.evaluations[9]
    assert torch.equal(kept.maps, curve.result.maps.cpu()) and kept.AG == curve.AG[-1]


def test_first_reaching():
    assert first_reaching([0, 5, 10], [1.0, 3.0, 2.0], 2.5) == 5
    assert first_reaching([0, 5, 10], [1.0, 3.0, 2.0], 3.5) is None
    with pytest.raises(InputError):
        first_reaching([0, 5], [1.0], 1.0)


# ---------------------------------------------------------------------------------------------------------------
# several classes, early stop, overlap


def test_explain_top_classes_equals_one_class_at_a_time(tiny_cnn, images):
    cm = explain_top_classes(tiny_cnn, images[0], k=3, iterations=5)
    top = tiny_cnn.top(images[:1], 3)[0]
    assert cm.classes.tolist() == [c for c, _, _ in top] and cm.names == [n for _, n, _ in top]
    assert cm.maps.shape == (3, 1, 32, 32)
    assert torch.allclose(cm.p, torch.tensor([p for _, _, p in top]), atol=1e-5)
    for i, c in enumerate(cm.classes.tolist()):
        alone = optimize(tiny_cnn, images[:1], c, iterations=5, **FAST)
        assert torch.allclose(alone.maps[0], cm.maps[i], atol=1e-4)
    assert cm.o.shape == (3,) and ((cm.o >= 0) & (cm.o <= 1)).all()
    with pytest.raises(InputError, match="classes"):
        explain_top_classes(tiny_cnn, images[0], k=99)
    with pytest.raises(InputError, match=r"image must be one \(3, H, W\) tensor"):
        explain_top_classes(tiny_cnn, images, k=2)


def test_early_stop_study(tiny_cnn, images):
    x = images.clone()
    x[0] = 0  # constant objective: stops after 1 + patience iterations
    study = early_stop_study(tiny_cnn, x, [0, 1, 2], tol=1e-10, patience=2, iterations=8)
    assert study.used.tolist()[0] == 3 and study.budget == 8
    assert study.forwards_full == 24 and study.forwards_early == int(study.used.sum()) < 24
    assert study.full.iterations.tolist() == [8, 8, 8]
    assert study.used.tolist()[1:] == [8, 8]  # the others never stall: same maps as without early stopping
    assert torch.allclose(study.early.maps[1:], study.full.maps[1:], atol=1e-6)
    with pytest.raises(InputError, match="tol"):
        early_stop_study(tiny_cnn, x, [0, 1, 2], tol=0)


def test_early_stop_study_reuses_a_curve_of_the_same_run_and_refuses_another(tiny_cnn, images):
    targets = [0, 1, 2]
    curve = time_to_quality(tiny_cnn, images, targets, {"a": {"lr": 0.2}}, iterations=6, every=3)["a"]
    study = early_stop_study(
        tiny_cnn, images, targets, tol=1e-3, patience=2, iterations=6, lr=0.2, full=curve
    )
    assert study.full is curve.result and study.seconds_full == curve.seconds[-1]
    assert (study.AG_full, study.AD_full) == (curve.AG[-1], curve.AD[-1])
    alone = early_stop_study(tiny_cnn, images, targets, tol=1e-3, patience=2, iterations=6, lr=0.2)
    assert torch.allclose(alone.full.maps, curve.result.maps, atol=1e-6)  # the run it stands for
    assert (
        math.isclose(alone.AG_full, study.AG_full, abs_tol=1e-4)
        and study.forwards_full == alone.forwards_full
    )
    for kwargs, message in [
        ({"iterations": 5, "lr": 0.2}, "full ran 6 iterations, here iterations=5"),
        ({"iterations": 6, "lr": 0.1}, "full ran with lr=0.2, here lr=0.1"),
        (
            {"iterations": 6, "lr": 0.2, "optimizer": "rprop"},
            "full ran with optimizer='adam', here optimizer='rprop'",
        ),
    ]:
        with pytest.raises(InputError, match=message):
            early_stop_study(tiny_cnn, images, targets, tol=1e-3, full=curve, **kwargs)
    with pytest.raises(InputError, match="other images or classes"):
        early_stop_study(tiny_cnn, images, [0, 1, 1], tol=1e-3, iterations=6, lr=0.2, full=curve)
    with pytest.raises(InputError, match="a curve returned by time_to_quality"):
        early_stop_study(tiny_cnn, images, targets, tol=1e-3, iterations=6, lr=0.2, full=curve.result)
    with pytest.raises(InputError, match="other images or another classifier"):  # same targets, other pixels
        early_stop_study(tiny_cnn, images.flip(-1), targets, tol=1e-3, iterations=6, lr=0.2, full=curve)
    with pytest.raises(InputError, match=r"maps \(3, 1, 32, 32\), these images need \(3, 1, 16, 16\)"):
        early_stop_study(tiny_cnn, images[..., :16, :16], targets, tol=1e-3, iterations=6, lr=0.2, full=curve)
    # the same run described differently: the optimiser's defaults filled in, lists as tuples
    plain = time_to_quality(tiny_cnn, images, targets, {"p": {}}, iterations=6, every=3)["p"]
    same = {"lr": 0.1, "optimizer": "adam", "betas": [0.9, 0.999], "momentum": 0.9}
    study = early_stop_study(tiny_cnn, images, targets, tol=1e-3, iterations=6, full=plain, **same)
    assert study.full is plain.result
    stopping = time_to_quality(
        tiny_cnn, images, targets, {"s": {"lr": 0.2, "tol": 1e-3}}, iterations=6, every=3
    )
    with pytest.raises(InputError, match="stopped early"):
        early_stop_study(tiny_cnn, images, targets, tol=1e-3, iterations=6, lr=0.2, full=stopping["s"])


def test_one_at_a_time_reruns_each_image_alone(tiny_cnn, images):
    targets = [0, 1, 2]
    curve = time_to_quality(tiny_cnn, images, targets, {"a": {"lr": 0.2}}, iterations=6, every=3)["a"]
    study = one_at_a_time(tiny_cnn, images, targets, curve, names=["x", "y", "z"])
    for i in range(3):
        alone = optimize(tiny_cnn, images[i : i + 1], [targets[i]], iterations=6, lr=0.2, tol=None, **FAST)
        p = class_probability(tiny_cnn, images[i : i + 1], [targets[i]])
        o = class_probability(tiny_cnn, images[i : i + 1] * alone.maps, [targets[i]])
        assert math.isclose(float(study.AG_alone[i]), float(gains(p, o)[0] * 100), abs_tol=1e-4)
        change = float((alone.maps[0] - curve.result.maps[i]).abs().max())
        assert math.isclose(float(study.change[i]), change, abs_tol=1e-6)
        assert math.isclose(
            float(study.overlap[i]), map_overlap(alone.maps[0], curve.result.maps[i]), abs_tol=1e-6
        )
    p = class_probability(tiny_cnn, images, targets)
    o = class_probability(tiny_cnn, images * curve.result.maps, targets)
    assert math.isclose(float(study.AG_batch.mean()), classification_metrics(p, o)["AG"], abs_tol=1e-4)
    assert [r["image"] for r in study.rows()] == ["x", "y", "z"] and study.seconds > 0
    # the tiny model in float32 over 6 iterations: round-off stays small, so alone is the batch's map
    assert (study.overlap > 0.999).all() and (study.change < 1e-3).all()
    with pytest.raises(InputError, match="2 names for 3 images"):
        one_at_a_time(tiny_cnn, images, targets, curve, names=["x", "y"])
    with pytest.raises(InputError, match="names must be a list of 3 names"):
        one_at_a_time(tiny_cnn, images, targets, curve, names="xyz")
    with pytest.raises(InputError, match="batched ran other images or classes"):
        one_at_a_time(tiny_cnn, images[:2], targets[:2], curve)


def test_one_at_a_time_gives_each_image_its_own_start_and_the_same_random_one(tiny_cnn, images):
    targets = [0, 1, 2]
    start = torch.linspace(-1, 1, 3 * 6).reshape(3, 6)  # tiny_cnn's layer has 6 channels
    curve = time_to_quality(tiny_cnn, images, targets, {"t": {"init": start}}, iterations=4, every=2)["t"]
    study = one_at_a_time(tiny_cnn, images, targets, curve)
    assert (study.overlap > 0.999).all()  # row i of the (N, K) start for image i: the same optimisation
    random = time_to_quality(
        tiny_cnn, images, targets, {"r": {"init": "random", "seed": 0}}, iterations=4, every=2
    )
    study = one_at_a_time(tiny_cnn, images, targets, random["r"])  # each image alone draws the batch's start
    assert (study.overlap > 0.999).all()


def test_map_overlap():
    a = torch.zeros(1, 4, 4)
    b = torch.zeros(1, 4, 4)
    a[0, :2] = 1
    b[0, 1:3] = 1
    assert map_overlap(a, a) == 1.0 and map_overlap(a, b) == pytest.approx(4 / 12)
    assert map_overlap(torch.zeros(2, 2), torch.zeros(2, 2)) == 1.0
    with pytest.raises(InputError):
        map_overlap(a, torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------------------------
# your own images


def _png_bytes(color=(255, 0, 0), size=(40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_image_from_upload():
    image, name = image_from_upload([{"name": "red.png", "content": memoryview(_png_bytes())}], size=32)
    assert name == "red.png" and image.shape == (3, 32, 32)
    assert torch.allclose(image[0], torch.ones(32, 32)) and image[1:].abs().max() < 1e-6
    with pytest.raises(InputError, match="no file uploaded"):
        image_from_upload(())
    with pytest.raises(InputError, match=r"notes\.png"):
        image_from_upload([{"name": "notes.png", "content": b"not an image"}])


def test_image_picker_calls_show_and_reports_errors():
    pytest.importorskip("ipywidgets")
    seen = []
    box = image_picker(lambda image, name: seen.append((tuple(image.shape), name)) or name)
    upload, status = box.controls["upload"], box.controls["status"]
    upload.value = ({"name": "red.png", "type": "image/png", "size": 1, "content": memoryview(_png_bytes()),
                     "last_modified": NOW},)  # fmt: skip
    assert seen == [((3, 224, 224), "red.png")] and "done" in status.value
    assert [o["data"]["text/plain"] for o in box.controls["output"].outputs] == ["'red.png'"]
    upload.value = ({"name": "bad.jpg", "type": "image/jpeg", "size": 1, "content": memoryview(b"xx"),
                     "last_modified": NOW},)  # fmt: skip
    assert "error" in status.value and "bad.jpg" in status.value and len(seen) == 1


def test_image_picker_clears_the_previous_figure_and_names_the_file_on_error():
    pytest.importorskip("ipywidgets")

    def show(image, name):
        if name == "nan.png":
            raise InputError("images contain NaN or infinite values")
        return name

    box = image_picker(show)
    upload, status, out = box.controls["upload"], box.controls["status"], box.controls["output"]
    out.outputs = (
        {"output_type": "display_data", "data": {"text/plain": "red.png's figure"}, "metadata": {}},
    )
    upload.value = ({"name": "nan.png", "type": "image/png", "size": 1, "content": memoryview(_png_bytes()),
                     "last_modified": NOW},)  # fmt: skip
    assert "error: nan.png: images contain NaN" in status.value and out.outputs == ()


def test_image_picker_shows_a_figure_as_a_png_without_entering_its_output_widget(monkeypatch):
    """As the explorer: ``with out: display(...)`` would hang nbclient (see ``widgets.show_figure``)."""
    w = pytest.importorskip("ipywidgets")
    from matplotlib.figure import Figure

    def refuse(self):
        raise AssertionError("the picker entered its Output widget")

    monkeypatch.setattr(w.Output, "__enter__", refuse)
    box = image_picker(lambda image, name: Figure(figsize=(1, 1)))
    box.controls["upload"].value = ({"name": "red.png", "type": "image/png", "size": 1,
                                     "content": memoryview(_png_bytes()), "last_modified": NOW},)  # fmt: skip
    (shown,) = box.controls["output"].outputs
    assert "done" in box.controls["status"].value
    assert base64.b64decode(shown["data"]["image/png"]).startswith(b"\x89PNG")

    class Table:
        def _repr_html_(self) -> str:
            return "<b>top-3</b>"

    box = image_picker(lambda image, name: Table())
    box.controls["upload"].value = ({"name": "red.png", "type": "image/png", "size": 1,
                                     "content": memoryview(_png_bytes()), "last_modified": NOW},)  # fmt: skip
    assert box.controls["output"].outputs[0]["data"]["text/html"] == "<b>top-3</b>"


def test_cosine_schedule_formula():
    total = 30
    factors = [lr_factor("cosine", s, total) for s in range(total)]
    assert factors[0] == 1.0 and all(b < a for a, b in itertools.pairwise(factors))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))


def test_explain_image_figure(tiny_cnn, images):
    fig = explain_image(tiny_cnn, images[0], "img", k=2, iterations=3)
    panels = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is None]
    assert len(panels) == 3 and "Opti-CAM" in panels[2].get_title() and "p = " in panels[1].get_title()
    assert len(fig.axes) == 4  # one colour bar for the two maps
    with pytest.raises(InputError, match=r"image must be one \(3, H, W\) tensor"):
        explain_image(tiny_cnn, images)


def test_reaching_quality_needs_both_ag_and_ad():
    from opticam_lib.course.beyond import QualityCurve, quality_table

    ref = QualityCurve(
        "ref", {}, [0, 10, 20], [0.0, 1.0, 2.0], [5.0, 40.0, 50.0], [30.0, 3.0, 0.5], [0, 50, 100]
    )
    c = QualityCurve(
        "c", {}, [0, 5, 10, 15], [0.0, 0.5, 1.0, 1.5], [5.0, 49.5, 52.0, 51.0], [30.0, 4.0, 1.4, 1.2], [0] * 4
    )
    # at 5 AG is within 1 point but AD (4.0) is not within 1 of 0.5; at 10 both hold
    assert c.reaching_quality(50.0, 0.5) == (10, 1.0)
    assert c.reaching_quality(50.0, 0.5, margin=0.1) is None  # AG 52 but AD never <= 0.6
    assert ref.reaching_quality(50.0, 0.5) == (20, 2.0)  # the reference reaches itself at its end
    # a curve of its start alone (AG 0, AD 60) never reaches
    assert QualityCurve("s", {}, [0], [0.0], [60.0], [0.0], [100]).reaching_quality(50.0, 0.5) is None
    assert c.at(10) == {"AG": 52.0, "AD": 1.4, "AI": 0, "seconds": 1.0} and c.at(7) is None
    rows = quality_table({"c": c}, ref, at=(5, 20))
    assert rows == [
        {
            "setting": "c",
            "passes to ref.": 10,
            "seconds to ref.": 1.0,
            "AG@5": 49.5,
            "AD@5": 4.0,
            "AG@20": None,
            "AD@20": None,
            "AG end": 51.0,
            "AD end": 1.2,
        }
    ]
