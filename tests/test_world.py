"""The controlled world: a deterministic generator whose ground truth matches its pixels, the committed models
and the accuracies they report, the evidence measure, map mass, and saliency methods on world_cnn / world_vit."""

import ast
import math
import re
from pathlib import Path

import pytest
import torch

from opticam_lib import available_models, cam, gradcam, load_classifier, opticam
from opticam_lib.errors import InputError
from opticam_lib.methods.attention import rollout
from opticam_lib.metrics.localization import union_mask
from opticam_lib.world.networks import MODELS, weights_file
from opticam_lib.world.reliance import evidence, map_mass
from opticam_lib.world.scenes import PALETTE, WorldBatch, WorldConfig, batch_at, generate, stream
from opticam_lib.world.training import REPORT_PATH, read_report, train

CLEAN = WorldConfig(noise=0.0, colour_jitter=0.0)  # exact pixel colours


def _fields(b: WorldBatch) -> dict:
    return {
        "images": b.images,
        "labels": b.labels,
        "boxes": b.boxes,
        "object_masks": b.object_masks,
        "context_masks": b.context_masks,
        "context_agrees": b.context_agrees,
        "context_labels": b.context_labels,
    }


# --- generator -------------------------------------------------------------------------------------------------


def test_generate_shapes_and_ranges():
    b = generate(WorldConfig(), 32, seed=0)
    s = 64
    assert b.images.shape == (32, 3, s, s) and b.images.dtype == torch.float32
    assert float(b.images.min()) >= 0 and float(b.images.max()) <= 1
    assert b.labels.shape == (32,) and b.labels.dtype == torch.long
    assert b.boxes.shape == (32, 4)
    assert b.object_masks.shape == b.context_masks.shape == (32, 1, s, s)
    assert set(b.object_masks.unique().tolist()) <= {0.0, 1.0}
    assert set(b.context_masks.unique().tolist()) <= {0.0, 1.0}
    assert b.context_agrees.dtype == torch.bool and b.context_labels.shape == (32,)
    assert len(b) == 32 and len(b[3:7]) == 4 and len(b[0]) == 1


def test_generate_is_deterministic():
    a, b, c = generate(None, 16, seed=3), generate(None, 16, seed=3), generate(None, 16, seed=4)
    for name, t in _fields(a).items():
        assert torch.equal(t, _fields(b)[name]), name
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.boxes, c.boxes)
    # streamed batches are a function of (seed, index) only
    it = stream(None, 8, seed=5)
    next(it)
    assert torch.equal(next(it).images, batch_at(None, 8, 5, 1).images)
    assert not torch.equal(batch_at(None, 8, 5, 1).images, batch_at(None, 8, 6, 1).images)


def test_boxes_and_masks_match_the_pixels():
    b = generate(CLEAN, 64, seed=1)
    for i in range(len(b)):
        om, cm = b.object_masks[i, 0].bool(), b.context_masks[i, 0].bool()
        assert om.any() and cm.any()
        ys, xs = om.nonzero(as_tuple=True)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        assert b.boxes[i].tolist() == box  # the box is the object mask's bounding box (x1, y1 exclusive)
        assert torch.equal(union_mask(b.boxes[i][None], (64, 64)) & om, om)  # same convention as localization
        assert not (om & cm).any()
        img = b.images[i]
        colour = b.params["object_colour"][i]
        assert torch.allclose(img[:, om], colour[:, None].expand(3, int(om.sum())), atol=1e-6)
        # the context pixels are the two stripe tones, grey (equal channels)
        tones = img[0, cm].unique()
        assert len(tones) == 2 and torch.equal(img[0, cm], img[2, cm])
        # background pixels (no object, context or distractor) are the image's plain grey
        rest = ~(om | cm | b.distractor_masks[i, 0].bool())
        assert torch.allclose(img[:, rest], b.params["background"][i].expand(3, int(rest.sum())))
    # the drawn colour is the class colour blended with the background grey by the object's alpha
    p = b.params
    assert torch.equal(p["object_base_colour"], PALETTE[b.labels])
    blend = (
        p["object_alpha"][:, None] * p["object_base_colour"]
        + (1 - p["object_alpha"][:, None]) * p["background"][:, None]
    )
    assert torch.allclose(p["object_colour"], blend)


def test_colours_contrast_and_noise():
    shapes_only = generate(WorldConfig(colour_by_class=False), 64, seed=2)
    idx = shapes_only.params["object_colour_index"]
    assert set(idx.tolist()) <= set(range(len(PALETTE))) and len(set(idx.tolist())) > 4
    alpha = generate(WorldConfig(size=16, distractors=0), 2000, seed=3).params["object_alpha"]
    assert float(alpha.min()) >= 0.01 and float(alpha.max()) <= 1.0
    # log-uniform: median at the geometric mean
    assert abs(float(alpha.log().median()) - math.log(0.1)) < 0.25
    solid = generate(WorldConfig(object_contrast=(1.0, 1.0), colour_jitter=0.0, noise=0.0), 8, seed=3)
    assert torch.equal(solid.params["object_colour"], PALETTE[solid.labels])
    noisy = generate(WorldConfig(noise=0.1, colour_jitter=0.0), 32, seed=2)
    inside = noisy.object_masks[:, 0].bool()
    diff = (
        noisy.images.permute(1, 0, 2, 3)[:, inside]
        - noisy.params["object_colour"].repeat_interleave(inside.flatten(1).sum(1), dim=0).T
    )
    assert 0.05 < float(diff.std()) < 0.12  # Gaussian noise of std 0.1, clipped to [0, 1]


@pytest.mark.parametrize("agreement", [0.9, 0.5, 0.25, 0.0])
def test_context_agreement_fraction(agreement):
    n = 3000
    b = generate(WorldConfig(context_agreement=agreement, size=16, distractors=0), n, seed=7)
    frac = float(b.context_agrees.float().mean())
    margin = 4 * math.sqrt(max(agreement * (1 - agreement), 1e-4) / n)
    assert abs(frac - agreement) <= margin
    assert torch.equal(b.context_agrees, b.context_labels == b.labels)
    # the disagreeing contexts are spread over the other classes
    wrong = b.context_labels[~b.context_agrees]
    if len(wrong) > 100:
        assert len(wrong.unique()) == 4


def test_variants_keep_the_scene():
    b = generate(None, 32, seed=11)
    obj, ctx, sw, nei = b.object_only(), b.context_only(), b.swapped_context(seed=1), b.neither()
    assert obj.context_masks.sum() == 0 and (obj.context_labels == -1).all() and not obj.context_agrees.any()
    assert torch.equal(obj.object_masks, b.object_masks)
    assert ctx.object_masks.sum() == 0 and torch.equal(ctx.context_labels, b.context_labels)
    assert torch.equal(ctx.boxes, b.boxes)  # where the object was
    assert (sw.context_labels != sw.labels).all() and not sw.context_agrees.any()
    assert torch.equal(sw.labels, b.labels)
    # outside the context patch the swapped images are pixel-identical (same noise, object, distractors)
    patch = (b.context_masks + sw.context_masks).clamp(max=1).bool().expand_as(b.images)
    assert torch.equal(sw.images[~patch], b.images[~patch])
    # the object-only image equals the original off the context cue
    keep = ~b.context_masks.bool().expand_as(b.images)
    assert torch.equal(obj.images[keep], b.images[keep])
    assert nei.object_masks.sum() == 0 and nei.context_masks.sum() == 0
    agree = b.agreeing_context()
    assert agree.context_agrees.all()
    with pytest.raises(InputError):
        b.with_context(torch.tensor([9] * 32))


def test_config_validation_and_round_trip():
    cfg = WorldConfig(num_classes=6, context_agreement=0.5, object_size=(0.2, 0.3), distractors=0)
    assert WorldConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.categories == [
        "red disc",
        "green square",
        "blue triangle",
        "yellow plus",
        "magenta ring",
        "cyan diamond",
    ]
    assert WorldConfig(colour_by_class=False).categories == ["disc", "square", "triangle", "plus"]
    for bad in (
        {"num_classes": 1},
        {"num_classes": 9},
        {"context_agreement": 1.5},
        {"object_size": (0.5, 0.2)},
        {"distractors": -1},
        {"size": 8},
        {"object_contrast": (0.0, 1.0)},
        {"object_contrast": (0.5, 1.5)},
    ):
        with pytest.raises(InputError):
            WorldConfig(**bad)
    with pytest.raises(InputError):
        generate(cfg, 0)
    b = generate(WorldConfig(num_classes=8, size=96), 16, seed=0)  # every shape renders at another size
    assert b.images.shape == (16, 3, 96, 96) and (b.object_masks.flatten(1).sum(1) > 20).all()


# --- map mass ---------------------------------------------------------------------------------------------------


def test_map_mass():
    b = generate(None, 8, seed=4)
    on_object = map_mass(b.object_masks, b)
    assert torch.allclose(on_object.object, torch.ones(8))
    on_context = map_mass(b.context_masks, b.object_masks, b.context_masks)
    assert torch.allclose(on_context.context, torch.ones(8))
    uniform = map_mass(torch.ones_like(b.object_masks), b).as_tensor()
    assert torch.allclose(uniform.sum(1), torch.ones(8))
    area = b.object_masks.flatten(1).mean(1)
    assert torch.allclose(uniform[:, 0], area)
    zero = map_mass(torch.zeros_like(b.object_masks), b).as_tensor()  # no mass counts as uniform
    assert torch.allclose(zero, uniform)
    assert set(map_mass(b.object_masks, b).mean()) == {"object", "context", "elsewhere"}
    with pytest.raises(InputError):
        map_mass(b.object_masks, b.object_masks)


# --- the committed models ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report():
    return read_report()


@pytest.fixture(scope="module")
def world_cnn():
    return load_classifier("world_cnn")


@pytest.fixture(scope="module")
def world_vit():
    return load_classifier("world_vit")


def test_import_is_cheap():
    """The registry names the world's loader lazily; the world's modules import no timm/tqdm at import time and
    read no weights at import time."""
    import opticam_lib.models.registry as registry
    import opticam_lib.world as world

    assert "opticam_lib.world" not in open(registry.__file__).read().replace(
        '"opticam_lib.world.networks:', ""
    )
    for path in Path(world.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top for a in n.names} | {
            n.module for n in top if isinstance(n, ast.ImportFrom)
        }
        assert not any(str(m).split(".")[0] in ("timm", "tqdm") for m in names), path
        module_level = [n for n in tree.body if not isinstance(n, ast.FunctionDef | ast.ClassDef | ast.If)]
        calls = [ast.unparse(c.func) for n in module_level for c in ast.walk(n) if isinstance(c, ast.Call)]
        assert not any(c.endswith(".load") or "checkpoint" in c for c in calls), (path, calls)
    assert {"world_cnn", "world_vit", "world_cnn_permuted"} <= set(available_models())


def test_committed_files_and_report(report):
    for name in MODELS:
        assert weights_file(name).is_file(), name
        assert name in report["models"], name
        entry = report["models"][name]
        assert entry["file_bytes"] == weights_file(name).stat().st_size
        for key in ("train_seconds", "steps", "seed", "config", "machine", "test", "evidence"):
            assert key in entry, (name, key)
    assert sum(weights_file(n).stat().st_size for n in MODELS) < 3 * 2**20
    speeds = [m["images_per_s"] for m in report["generator"]["measurements"]]
    assert speeds and min(speeds) > 100 and all("machine" in m for m in report["generator"]["measurements"])
    assert REPORT_PATH.is_file()


@pytest.fixture(scope="module")
def loaded(world_cnn, world_vit):
    return {
        "world_cnn": world_cnn,
        "world_vit": world_vit,
        "world_cnn_permuted": load_classifier("world_cnn_permuted"),
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_models_load_through_the_registry(name, loaded):
    clf = loaded[name]
    cfg = clf.extra["world_config"]
    assert clf.input_size == cfg.size == 64
    assert clf.categories == cfg.categories
    assert clf.model.normalized and not clf.model.training
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())
    if MODELS[name]["arch"] == "cnn":
        assert clf.linear_head == "fc" and clf.target_layer == "features.3" and clf.prefix_tokens is None
    else:
        assert clf.prefix_tokens == 1 and clf.target_layer.endswith(".norm1")
        assert all(not blk.attn.fused_attn for blk in clf.net.blocks)
    raw = load_classifier(name, normalize=False, pretrained=False)
    assert not raw.model.normalized


@pytest.mark.parametrize("name", ["world_cnn", "world_vit"])
def test_committed_models_reach_the_reported_accuracy(name, report, loaded):
    """A fresh evaluation on new held-out scenes (another seed than the report's) matches the report."""
    entry = report["models"][name]
    ev = evidence(loaded[name], n=256, seed=987654)
    c = ev.conditions
    assert c["both"]["accuracy"] >= entry["test"]["accuracy_agreeing"] - 0.05
    assert c["swapped"]["accuracy"] >= entry["test"]["accuracy_swapped"] - 0.10
    assert c["natural"]["accuracy"] >= entry["test"]["accuracy_natural"] - 0.05
    assert c["both"]["accuracy"] >= 0.9  # it works
    assert c["swapped"]["accuracy"] < c["both"]["accuracy"] - 0.05  # and the context matters
    assert c["object"]["accuracy"] > 0.6 and c["context"]["accuracy"] > 0.4  # both carry evidence
    assert abs(c["neither"]["accuracy"] - 0.25) < 0.12  # no evidence: chance
    assert abs(ev.context_reliance - entry["evidence"]["context_reliance"]) < 0.1
    faint, clear = ev.by_contrast("swapped", bins=2)  # the context wins where the object is faint
    assert faint["follows_context"] > clear["follows_context"] + 0.2


def test_permuted_twin_memorised_and_knows_nothing(report, loaded):
    entry = report["models"]["world_cnn_permuted"]
    assert entry["permuted_labels"] and entry["train_accuracy_random_labels"] > 0.9
    clf = loaded["world_cnn_permuted"]
    c = evidence(clf, n=256, seed=55, conditions=("natural",)).conditions
    assert abs(c["natural"]["accuracy"] - 0.25) < 0.12
    twin = loaded["world_cnn"]
    assert [n for n, _ in clf.net.named_parameters()] == [n for n, _ in twin.net.named_parameters()]


# --- evidence separates a context-reliant model from a context-free one -----------------------------------------


@pytest.fixture(scope="module")
def context_free():
    """A small CNN trained where the context is independent of the class (agreement 1/K)."""
    cfg = WorldConfig(context_agreement=0.25)
    return train(
        "cnn",
        steps=80,
        seed=1,
        config=cfg,
        batch_size=32,
        arch_kwargs={"width": 8},
        eval_n=0,
        progress=False,
        lr=1e-2,
    )


def test_evidence_separates_context_use(world_cnn, context_free):
    kept = ("both", "swapped", "context")
    ours = evidence(world_cnn, n=200, seed=21, conditions=kept)
    free = evidence(context_free.classifier, WorldConfig(), n=200, seed=21, conditions=kept)
    assert ours.context_reliance > 0.15
    assert abs(free.context_reliance) < 0.08
    assert ours.context_reliance > free.context_reliance + 0.1
    assert ours.conditions["context"]["accuracy"] > 0.5
    assert free.conditions["context"]["accuracy"] < 0.4  # the context alone tells it nothing
    assert free.conditions["both"]["accuracy"] > 0.4  # it did learn the object (faint ones aside)
    d = ours.as_dict()
    assert set(d["conditions"]) == set(kept) and "context_reliance" in d
    assert "context reliance" in ours.table()
    with pytest.raises(InputError):
        evidence(world_cnn, n=8, conditions=("nothing",))


def test_training_smoke(context_free):
    losses = context_free.losses
    assert len(losses) == 80
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20 - 0.1
    ck = context_free.checkpoint
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    assert ck["meta"]["arch"] == "cnn" and ck["meta"]["config"]["context_agreement"] == 0.25
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    perm = train(
        "cnn",
        steps=6,
        permuted_labels=True,
        train_set=32,
        batch_size=16,
        eval_n=0,
        progress=False,
        arch_kwargs={"width": 8},
    )
    assert 0 <= perm.report["train_accuracy_random_labels"] <= 1 and perm.report["train_set"] == 32
    assert torch.equal(torch.rand(3), expected)  # training and loading leave the global RNG alone


# --- saliency methods on the world models ----------------------------------------------------------------------


def test_cam_on_world_cnn_finds_object_and_context(world_cnn):
    b = generate(world_cnn.extra["world_config"], 16, seed=31).agreeing_context()
    maps = cam(world_cnn, b.images, b.labels)
    assert maps.shape == (16, 1, 64, 64)
    mass = map_mass(maps, b).as_tensor()
    area = map_mass(torch.ones_like(maps), b).as_tensor()
    assert float(mass[:, :2].sum(1).mean()) > float(area[:, :2].sum(1).mean()) + 0.1
    g = gradcam(world_cnn, b.images[:4], b.labels[:4])
    assert g.shape == (4, 1, 64, 64)


def test_token_reshape_on_world_vit(world_vit):
    b = generate(world_vit.extra["world_config"], 3, seed=32)
    for maps in (
        gradcam(world_vit, b.images, b.labels),
        opticam(world_vit, b.images, b.labels, iterations=3, progress=False),
        rollout(world_vit, b.images),
    ):
        assert maps.shape == (3, 1, 64, 64)
        assert float(maps.min()) >= 0 and float(maps.max()) <= 1 and torch.isfinite(maps).all()


def test_missing_weights_say_how_to_train(tmp_path, monkeypatch):
    import opticam_lib.world.networks as networks
    from opticam_lib.errors import MissingWeightsError

    monkeypatch.setattr(networks, "DATA_DIR", tmp_path)
    with pytest.raises(
        MissingWeightsError, match=re.escape("python -m opticam_lib.world train --arch cnn --permuted-labels")
    ):
        load_classifier("world_cnn_permuted")
    clf = load_classifier("world_cnn", pretrained=False)  # the architecture, random weights
    assert clf.num_classes == 4 and clf.linear_head == "fc"


def test_a_damaged_checkpoint_names_the_file_and_how_to_remake_it(tmp_path, monkeypatch):
    import opticam_lib.world.networks as networks
    from opticam_lib.errors import MissingWeightsError

    good = networks.weights_file("world_cnn").read_bytes()
    monkeypatch.setattr(networks, "DATA_DIR", tmp_path)
    (tmp_path / "world_cnn.pt").write_bytes(good[: len(good) // 2])  # a save cut short
    with pytest.raises(
        MissingWeightsError, match=r"world_cnn\.pt cannot be read as a world checkpoint"
    ) as err:
        load_classifier("world_cnn")
    assert "python -m opticam_lib.world train --arch cnn" in str(err.value)


def test_train_command_writes_weights_and_report(tmp_path, capsys):
    from opticam_lib.world.__main__ import main
    from opticam_lib.world.networks import load_checkpoint

    out, rep = tmp_path / "tiny.pt", tmp_path / "report.json"
    args = ["train", "--arch", "cnn", "--steps", "3", "--eval-n", "16", "--batch-size", "8", "--threads", "1"]
    args += [
        "--out",
        str(out),
        "--report",
        str(rep),
        "--arch-kwargs",
        '{"width": 8}',
        "--config",
        '{"size": 32}',
    ]
    assert main(args) == 0
    entry = read_report(rep)["models"]["tiny"]
    assert entry["file_bytes"] == out.stat().st_size and entry["steps"] == 3 and entry["config"]["size"] == 32
    assert entry["command"].startswith("python -m opticam_lib.world train --arch cnn --steps 3 --seed 0")
    assert "test" in entry and "swapped context" in capsys.readouterr().out
    ck = load_checkpoint(out)
    assert ck["meta"]["arch_kwargs"] == {"width": 8}
