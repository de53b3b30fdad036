"""Raw attention and rollout: the recomputed attention equals timm's own, rollout follows Abnar & Zuidema (and
Chefer et al.'s implementation, which the paper's baselines use), Table 2's runner and layout, the checkers."""

import pytest
import torch
from torch import nn

from opticam_lib import wrap_classifier
from opticam_lib.errors import InputError
from opticam_lib.hooks import hook_count
from opticam_lib.methods.attention import (
    attention_maps,
    attention_probabilities,
    class_token_grid,
    fuse_heads,
    raw_attention,
    rollout,
    rollout_matrix,
)
from opticam_lib.methods.maps import to_saliency
from opticam_lib.paper.tables import paper_table
from opticam_lib.paper.transformers import TABLE2_METHODS, TABLE2_SLOW, format_table2, table2


def make_vit(fused: bool, prefix: int = 1, seed: int = 0):
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = timm.models.VisionTransformer(
            img_size=32,
            patch_size=8,
            num_classes=5,
            embed_dim=32,
            depth=3,
            num_heads=2,
            mlp_ratio=2,
            reg_tokens=prefix - 1,
        )
    for blk in net.blocks:
        blk.attn.fused_attn = fused  # unfused: timm materialises the probabilities we compare against
        with torch.no_grad():
            # peaked attention, as in a trained model (random weights: near uniform)
            blk.attn.qkv.weight.mul_(10)
    return wrap_classifier(net, "blocks.2.norm1", num_classes=5, input_size=32, prefix_tokens=prefix)


@pytest.fixture(scope="module")
def tiny_vit():
    return make_vit(fused=False)


def timm_attention(clf, images):
    seen = []
    hooks = [
        b.attn.attn_drop.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
        for b in clf.net.blocks
    ]
    with torch.no_grad():
        clf.model(images)
    for h in hooks:
        h.remove()
    return seen


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_recomputed_attention_equals_timms(tiny_vit):
    x = images(2, 1)
    with attention_maps(tiny_vit) as ours, torch.no_grad():
        tiny_vit.model(x)
    theirs = timm_attention(tiny_vit, x)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert a.shape == (2, 2, 17, 17)
        assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(a.sum(-1), torch.ones(2, 2, 17), atol=1e-5)
    assert hook_count(tiny_vit.model) == 0


def test_fused_attention_gives_the_same_maps(tiny_vit):
    """With timm's fused kernel the probabilities are never materialised; the pre-hook recomputes them."""
    fused = make_vit(fused=True)
    x = images(2, 3)
    for a, b in zip(attention_probabilities(fused, x), timm_attention(tiny_vit, x)):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(rollout(fused, x), rollout(tiny_vit, x), atol=1e-5)


def chefer_rollout(all_layer_matrices, start_layer=0):
    """Transformer-Explainability's compute_rollout_attention, written from its description: add the identity,
    renormalise the rows, multiply each later block on the left."""
    eye = torch.eye(all_layer_matrices[0].shape[1])
    mats = [m + eye for m in all_layer_matrices]
    mats = [m / m.sum(dim=-1, keepdim=True) for m in mats]
    joint = mats[start_layer]
    for m in mats[start_layer + 1 :]:
        joint = m.bmm(joint)
    return joint


def test_rollout_follows_abnar_zuidema_and_chefer(tiny_vit):
    x = images(2, 2)
    atts = timm_attention(tiny_vit, x)
    # Abnar & Zuidema: A = 0.5 W_att + 0.5 I, W_att averaged over heads; rollout = A_L ... A_1
    eye = torch.eye(17)
    az = None
    for a in atts:
        m = 0.5 * a.mean(dim=1) + 0.5 * eye
        az = m if az is None else m @ az
    ch = chefer_rollout([a.mean(dim=1) for a in atts])
    assert torch.allclose(az, ch, atol=1e-6)
    assert torch.allclose(rollout_matrix(atts), az, atol=1e-6)
    # rows stay distributions
    assert torch.allclose(rollout_matrix(atts).sum(-1), torch.ones(2, 17), atol=1e-5)
    want = to_saliency(az[:, 0, 1:].reshape(2, 1, 4, 4), (32, 32))
    assert torch.allclose(rollout(tiny_vit, x), want, atol=1e-5)
    # start: blocks before it are left out
    assert torch.allclose(
        rollout_matrix(atts, start=1), chefer_rollout([a.mean(1) for a in atts], 1), atol=1e-6
    )


def test_rollout_order_matters():
    """A wrong multiplication order gives another matrix: the test above could not pass by symmetry."""
    g = torch.Generator().manual_seed(4)
    atts = [torch.softmax(torch.randn(1, 2, 6, 6, generator=g) * 3, -1) for _ in range(3)]
    hats = [(a.mean(1) + torch.eye(6)) / 2 for a in atts]
    assert not torch.allclose(rollout_matrix(atts), hats[0] @ hats[1] @ hats[2], atol=1e-4)
    assert torch.allclose(rollout_matrix(atts), hats[2] @ hats[1] @ hats[0], atol=1e-6)


def test_head_fusion_max_min_renormalise():
    g = torch.Generator().manual_seed(5)
    atts = [torch.softmax(torch.randn(2, 4, 5, 5, generator=g), -1) for _ in range(2)]
    for fusion in ("max", "min"):
        r = rollout_matrix(atts, fusion)
        assert torch.allclose(r.sum(-1), torch.ones(2, 5), atol=1e-5)
        fused = [getattr(a, fusion)(dim=1).values for a in atts]
        hats = [(f + torch.eye(5)) / (f + torch.eye(5)).sum(-1, keepdim=True) for f in fused]
        assert torch.allclose(r, hats[1] @ hats[0], atol=1e-6)
    assert torch.allclose(fuse_heads(atts[0], "mean"), atts[0].mean(1))
    with pytest.raises(InputError, match="head_fusion"):
        rollout_matrix(atts, "median")
    with pytest.raises(InputError, match="at least one block"):
        rollout_matrix([])
    with pytest.raises(InputError, match="start"):
        rollout_matrix(atts, start=2)
    with pytest.raises(InputError, match="N, heads, T, T"):
        fuse_heads(atts[0][0])


def test_raw_attention_is_the_last_block_class_row(tiny_vit):
    x = images(2, 6)
    atts = timm_attention(tiny_vit, x)
    raw = atts[-1].mean(dim=1)[:, 0, 1:].reshape(2, 1, 4, 4)
    assert torch.allclose(raw_attention(tiny_vit, x), to_saliency(raw, (32, 32)), atol=1e-5)
    first = atts[0].mean(dim=1)[:, 0, 1:].reshape(2, 1, 4, 4)
    assert torch.allclose(raw_attention(tiny_vit, x, block=0), to_saliency(first, (32, 32)), atol=1e-5)
    with pytest.raises(InputError, match="block"):
        raw_attention(tiny_vit, x, block=3)


def test_maps_ignore_the_target_and_keep_the_model_state(tiny_vit):
    x = images(3, 7)
    tiny_vit.model.train()
    flags = [p.requires_grad for p in tiny_vit.model.parameters()]
    for fn in (raw_attention, rollout):
        a, b = fn(tiny_vit, x, [0, 1, 2]), fn(tiny_vit, x, [4, 4, 4])
        assert torch.equal(a, b)  # class-agnostic (section 5.3.1)
        assert a.shape == (3, 1, 32, 32) and float(a.min()) == 0.0 and float(a.max()) == 1.0
    assert tiny_vit.model.training  # eval mode was only borrowed
    assert [p.requires_grad for p in tiny_vit.model.parameters()] == flags
    assert hook_count(tiny_vit.model) == 0
    tiny_vit.model.eval()


def test_prefix_tokens_are_dropped():
    # a class token and one register token, like DeiT's distillation token
    vit2 = make_vit(fused=False, prefix=2)
    x = images(1, 8)
    atts = attention_probabilities(vit2, x)
    assert atts[0].shape[-1] == 18
    want = to_saliency(rollout_matrix(atts)[:, 0, 2:].reshape(1, 1, 4, 4), (32, 32))
    assert torch.allclose(rollout(vit2, x), want, atol=1e-6)
    with pytest.raises(InputError, match="square grid"):
        class_token_grid(torch.rand(1, 18), 1)


def test_not_a_vit_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    clf = wrap_classifier(net, "0", num_classes=2)
    with pytest.raises(InputError, match="not a ViT"):
        rollout(clf, torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="not a ViT"):
        raw_attention(clf, torch.rand(1, 3, 8, 8))


def test_bad_images_are_refused(tiny_vit):
    with pytest.raises(InputError, match="batch dimension"):
        rollout(tiny_vit, torch.rand(3, 32, 32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        raw_attention(tiny_vit, torch.rand(1, 3, 32, 32) * 255)


def test_table2_names_rows_as_the_paper(tiny_vit):
    x = images(4, 9)
    rows = table2(
        tiny_vit, x, [0, 1, 2, 3], ["Fake-CAM", "gradcam", "RawAtt", "rollout", "Opti-CAM"], iterations=2
    )
    assert [r.method for r in rows] == ["Fake-CAM", "Grad-CAM", "RawAtt", "Rollout", "Opti-CAM"]
    for r in rows:
        assert r.maps.shape == (4, 1, 32, 32)
        assert 0 <= r.AD <= 100 and 0 <= r.AG <= 100 and 0 <= r.AI <= 100 and r.T >= 0
    assert torch.equal(rows[2].maps, raw_attention(tiny_vit, x))
    text = format_table2(rows)
    lines = text.splitlines()
    assert "paper ViT-B" in lines[0] and "paper DeiT-B" in lines[0]
    vit, deit = paper_table("2", "vit_b_16"), paper_table("2", "deit_b_16")
    rollout_line = next(line for line in lines if line.startswith("Rollout"))
    assert f"{vit['Rollout']['AD']:.1f}" in rollout_line and f"{deit['Rollout']['AG']:.1f}" in rollout_line
    assert f"{rows[3].AD:.1f}" in rollout_line
    with pytest.raises(InputError, match="unknown Table 2 method"):
        table2(tiny_vit, x, None, ["Ablation-CAM"])  # a row of Table 1, not of Table 2
    with pytest.raises(InputError, match="at least one row"):
        format_table2([])
    # every row of the paper's Table 2, in the paper's order
    assert [name for name, _ in TABLE2_METHODS] == list(paper_table("2", "vit_b_16"))


def test_table2_runs_the_slow_perturbation_rows_only_when_named(tiny_vit, monkeypatch):
    import sys

    evaluate_module = sys.modules[
        "opticam_lib.metrics.evaluation"
    ]  # (the package's ``evaluate`` is the function)

    seen = []
    real = evaluate_module.evaluate

    def spy(classifier, method, *args, **kwargs):
        name = (
            method
            if isinstance(method, str)
            else {"raw_attention": "rawatt"}.get(method.__name__, method.__name__)
        )
        seen.append(name)
        kept = {k: v for k, v in kwargs.items() if k in ("batch_size", "keep_maps")}
        # (the slow methods themselves are tested elsewhere)
        return real(classifier, "fakecam", *args, **kept)

    monkeypatch.setattr(evaluate_module, "evaluate", spy)
    x = images(2, 3)
    table2(tiny_vit, x, [0, 1])
    assert seen == [lib for _, lib in TABLE2_METHODS if lib not in TABLE2_SLOW]
    seen.clear()
    rows = table2(tiny_vit, x, [0, 1], ["ExPerturbation", "LIME", "GradientShap"])
    assert seen == ["experturbation", "lime", "gradientshap"]
    assert [r.method for r in rows] == ["ExPerturbation", "LIME", "GradientShap"]


def test_checkers_accept_solutions_and_explain_mistakes(capsys):
    from opticam_lib.course.exercises import check_rollout, check_tokens_to_grid

    def grid(tokens, prefix):
        n, t, k = tokens.shape
        side = int((t - prefix) ** 0.5)
        return tokens[:, prefix:].transpose(1, 2).reshape(n, k, side, side)

    def no_transpose(tokens, prefix):
        n, t, k = tokens.shape
        side = int((t - prefix) ** 0.5)
        return tokens[:, prefix:].reshape(n, k, side, side)

    def keeps_class_token(tokens, prefix):
        n, _, k = tokens.shape
        return tokens.transpose(1, 2).reshape(n, k, 4, 4)

    def unsolved(*args):
        raise NotImplementedError

    assert check_tokens_to_grid(grid) is True
    with pytest.raises(AssertionError, match="transpose"):
        check_tokens_to_grid(no_transpose)
    with pytest.raises(AssertionError, match="drop the prefix"):
        check_tokens_to_grid(keeps_class_token)
    assert check_tokens_to_grid(unsolved) is False
    assert "not solved yet" in capsys.readouterr().out

    def roll(atts):
        r = None
        for a in atts:
            m = (a.mean(1) + torch.eye(a.shape[-1])) / 2
            r = m if r is None else m @ r
        return r

    def wrong_order(atts):
        return roll(atts[::-1])

    def no_residual(atts):
        r = None
        for a in atts:
            r = a.mean(1) if r is None else a.mean(1) @ r
        return r

    def no_half(atts):
        r = None
        for a in atts:
            m = a.mean(1) + torch.eye(a.shape[-1])
            r = m if r is None else m @ r
        return r

    assert check_rollout(roll) is True
    with pytest.raises(AssertionError, match="wrong way"):
        check_rollout(wrong_order)
    with pytest.raises(AssertionError, match="residual"):
        check_rollout(no_residual)
    with pytest.raises(AssertionError, match=r"sum to 1: use \(A \+ I\) / 2, not A \+ I"):
        check_rollout(no_half)
    assert check_rollout(unsolved) is False
