"""Score-CAM's and Ablation-CAM's channel weights: the ``channel_weights`` option, and the shipped cache of
``opticam_lib.course.channel_cache`` (built on tiny models here; the shipped file recomputed on one photo)."""

from __future__ import annotations

import pytest
import torch

from opticam_lib import ablationcam, scorecam
from opticam_lib.course.channel_cache import (
    build_channel_cache,
    cache_path,
    cached_channel_weights,
)
from opticam_lib.digests import image_digests, model_digest
from opticam_lib.errors import InputError, MissingDataError
from opticam_lib.inputs import prepare
from opticam_lib.methods.feature_pass import features
from opticam_lib.methods.masking import ablation_weights, channel_scores


def test_given_weights_give_the_same_maps(tiny_model, images):
    y = torch.tensor([0, 1, 2])
    x, t = prepare(tiny_model, images, y)
    acts, logits = features(tiny_model, x)
    u = channel_scores(tiny_model, x, t, acts, batch_size=3)
    w = ablation_weights(tiny_model, x, t, acts, logits, batch_size=5)
    assert torch.allclose(
        scorecam(tiny_model, images, y, progress=False, channel_weights=u),
        scorecam(tiny_model, images, y, progress=False),
        atol=1e-6,
    )
    assert torch.allclose(
        ablationcam(tiny_model, images, y, progress=False, channel_weights=w),
        ablationcam(tiny_model, images, y, progress=False),
        atol=1e-6,
    )


def test_given_weights_are_used_and_no_masked_pass_runs(tiny_model, images, monkeypatch):
    """Other weights give the maps of those weights (so the option is not ignored), with no forward pass per
    channel (the reason the option exists)."""
    from opticam_lib.methods import masking
    from opticam_lib.methods.maps import combine, to_saliency

    y = torch.tensor([0, 1, 2])
    x, _ = prepare(tiny_model, images, y)
    acts, _ = features(tiny_model, x)
    w = torch.randn(acts.shape[:2], generator=torch.Generator().manual_seed(0))

    def refuse(*args, **kwargs):
        raise AssertionError("a masked forward pass ran although the channel weights were given")

    monkeypatch.setattr(masking, "channel_scores", refuse)
    monkeypatch.setattr(masking, "ablation_weights", refuse)
    size = tuple(images.shape[-2:])
    got = scorecam(tiny_model, images, y, progress=False, channel_weights=w)
    assert torch.allclose(got, to_saliency(combine(torch.softmax(w, dim=1), acts, "relu"), size), atol=1e-6)
    got = ablationcam(tiny_model, images, y, progress=False, channel_weights=w)
    assert torch.allclose(got, to_saliency(combine(w, acts, "relu"), size), atol=1e-6)


def test_channel_subsets_leave_the_others_at_zero(tiny_cnn, images):
    x, t = prepare(tiny_cnn, images, [0, 1, 2])
    acts, _ = features(tiny_cnn, x)
    full = channel_scores(tiny_cnn, x, t, acts)
    some = torch.tensor([1, 3])
    part = channel_scores(tiny_cnn, x, t, acts, channels=some)
    assert torch.allclose(part[:, some], full[:, some], atol=1e-6)
    rest = torch.ones(acts.shape[1], dtype=torch.bool)
    rest[some] = False
    assert (part[:, rest] == 0).all()


def test_given_weights_are_checked(tiny_cnn, images):
    k = features(tiny_cnn, images)[0].shape[1]
    with pytest.raises(InputError, match=r"channel_weights has shape \(3, 2\).*\(3, " + str(k)):
        scorecam(tiny_cnn, images, progress=False, channel_weights=torch.zeros(3, 2))
    bad = torch.zeros(3, k)
    bad[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        ablationcam(tiny_cnn, images, progress=False, channel_weights=bad)


def test_cache_round_trip_and_keys(tiny_cnn, images, tmp_path):
    path = tmp_path / "cache.pt"
    y = torch.tensor([0, 1, 2])
    built = build_channel_cache(tiny_cnn, images, y, ["a", "b", "c"], path=path, progress=False)
    assert path.is_file() and not path.with_suffix(".tmp").exists()
    loaded = cached_channel_weights(tiny_cnn, images, y, path=path)
    for m in ("scorecam", "ablationcam"):
        assert torch.equal(loaded.weights[m], built.weights[m])
        assert loaded.seconds(m) == built.meta["seconds"][m]
    assert loaded.meta["names"] == ["a", "b", "c"] and "python -m opticam_lib precompute" in loaded.note()
    maps = scorecam(tiny_cnn, images, y, progress=False, channel_weights=loaded.weights["scorecam"])
    assert torch.allclose(maps, scorecam(tiny_cnn, images, y, progress=False), atol=1e-6)
    # every key is checked, and the message names what differs and the command
    with pytest.raises(MissingDataError, match=r"other target classes.*python -m opticam_lib precompute"):
        cached_channel_weights(tiny_cnn, images, torch.tensor([1, 1, 2]), path=path)
    with pytest.raises(MissingDataError, match="other images"):
        cached_channel_weights(tiny_cnn, images.flip(-1), y, path=path)
    other_layer = next(n for n in tiny_cnn.layer_names() if n != tiny_cnn.target_layer)
    with pytest.raises(MissingDataError, match="layer"):
        cached_channel_weights(tiny_cnn, images, y, layer=other_layer, path=path)
    with torch.no_grad():
        next(tiny_cnn.model.parameters()).add_(1.0)
    with pytest.raises(MissingDataError, match="other model weights"):
        cached_channel_weights(tiny_cnn, images, y, path=path)


def test_missing_and_corrupt_cache_files(tiny_cnn, images, tmp_path):
    with pytest.raises(MissingDataError, match=r"no channel-weight cache.*precompute"):
        cached_channel_weights(tiny_cnn, images, [0, 1, 2], path=tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MissingDataError, match=r"cannot be read.*precompute"):
        cached_channel_weights(tiny_cnn, images, [0, 1, 2], path=bad)


def test_a_readable_but_incomplete_cache_is_named(tiny_cnn, images, tmp_path):
    y = torch.tensor([0, 1, 2])
    path = tmp_path / "w.pt"
    good = build_channel_cache(tiny_cnn, images, y, path=path, progress=False)
    saved = torch.load(path, weights_only=True)
    damaged = {
        "no date": ({**saved, "meta": {k: v for k, v in saved["meta"].items() if k != "date"}}, "lacks date"),
        "a list": ([1, 2], "lacks meta, weights"),
        "meta a list": ({**saved, "meta": [1]}, "lacks meta"),
        "no weights": ({"meta": saved["meta"]}, "lacks weights"),
        "1-D weights": ({**saved, "weights": {"scorecam": torch.zeros(3)}}, "not a finite"),
        "unknown method": ({**saved, "weights": {**saved["weights"], "x": torch.zeros(3, 2)}}, "not a whole"),
    }
    for name, (content, words) in damaged.items():  # noqa: B007 (the name shows in a failure's locals)
        torch.save(content, path)
        with pytest.raises((MissingDataError, InputError), match=f"{words}.*precompute"):
            cached_channel_weights(tiny_cnn, images, y, path=path)
    torch.save(saved, path)
    assert cached_channel_weights(tiny_cnn, images, y, path=path).note() == good.note()


def test_digests(tiny_cnn, images):
    q = (images * 255).round() / 255  # on the 8-bit grid: a float round-off does not change the digest
    assert image_digests(q) == image_digests((q + 1e-6).clamp(0, 1))
    assert image_digests(images)[0] != image_digests(images.flip(-1))[0]
    from conftest import make_tiny_cnn

    same, other = make_tiny_cnn(), make_tiny_cnn()
    assert model_digest(same) == model_digest(make_tiny_cnn())  # the same weights built again
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    assert model_digest(other) != model_digest(same)


@pytest.mark.slow
def test_shipped_cache_recomputed_on_one_photo(real_classifier):
    """The shipped file matches the sample photos, and one photo's weights recomputed here agree with it."""
    from opticam_lib import load_samples

    s = load_samples()
    if not cache_path(real_classifier.name, "bn2").is_file():
        pytest.skip("the bn2 cache is not shipped yet: python -m opticam_lib precompute --layer bn2")
    cache = cached_channel_weights(real_classifier, s.images, s.labels, layer="bn2")
    i = s.names.index("coffee")
    x, t = prepare(real_classifier, s.images[i : i + 1], s.labels[i : i + 1])
    acts, logits = features(real_classifier, x, "bn2")
    u = channel_scores(real_classifier, x, t, acts, batch_size=64)
    assert torch.allclose(u[0], cache.weights["scorecam"][i], atol=1e-3, rtol=1e-4)
    some = torch.randperm(acts.shape[1], generator=torch.Generator().manual_seed(0))[:256]
    w = ablation_weights(real_classifier, x, t, acts, logits, "bn2", channels=some, batch_size=64)
    assert torch.allclose(w[0, some], cache.weights["ablationcam"][i, some], atol=1e-4, rtol=1e-4)
