"""TIBAV (Chefer, Gur & Wolf, CVPR 2021): the LRP rules on hand-computed cases, relevance conservation through a
timm ViT, the degenerate case where it must agree with rollout, the registry's contract and state tests on a
tiny timm ViT (the twins of tests/test_cam.py and tests/test_hooks_and_state.py for the transformer-only
methods), and its refusals."""

from __future__ import annotations

import pytest
import torch
from conftest import TRANSFORMER_METHODS, make_images, make_timm_vit
from test_cam import BAD_IMAGES, BAD_TARGETS, _check_maps
from test_hooks_and_state import Bomb, _arm, assert_same_state, set_mixed_state, snapshot

from opticam_lib.errors import InputError
from opticam_lib.methods.attention import rollout
from opticam_lib.methods.registry import METHODS, get_method
from opticam_lib.methods.relevance import (
    add_relevance,
    clone_relevance,
    linear_relevance,
    matmul_relevance,
    rollout_of_cams,
    safe_divide,
    tibav,
    tibav_relevance,
)

NAMES = list(TRANSFORMER_METHODS)


# ---------------------------------------------------------------------------------------------------------------
# the LRP rules, by hand


def test_safe_divide_is_the_authors():
    out = safe_divide(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([2.0, 0.0, -1.0]))
    assert torch.allclose(out, torch.tensor([0.5, 0.0, -2.0]), atol=1e-8)


def test_linear_rule_by_hand():
    """x = (2, -1), W = [[1, -3], [2, 1]], R = (1, 1). Output 1: contributions 2*1 = 2 (x+ w+) and
    (-1)(-3) = 3 (x- w-), both positive: R -> (2/5, 3/5). Output 2: 2*2 = 4 (x+ w+) and (-1)*1 = -1 (x- w+,
    an inhibitor, dropped with beta = 0): R -> (1, 0). Total (1.4, 0.6); the bias plays no part."""
    x = torch.tensor([[2.0, -1.0]])
    w = torch.tensor([[1.0, -3.0], [2.0, 1.0]])
    r = linear_relevance(x, w, torch.tensor([[1.0, 1.0]]))
    assert torch.allclose(r, torch.tensor([[1.4, 0.6]]), atol=1e-6)


def test_add_rule_by_hand():
    """a = (1, 3), b = (1, -2), R = (1, 1): z = (2, 1), z-rule shares a R/z = (0.5, 3) (sum 3.5) and
    b R/z = (0.5, -2) (sum -1.5); rescaled to carry 3.5/5 and 1.5/5 of the total 2: a gets (0.2, 1.2), b gets
    (0.5, -2) * 0.6 / -1.5 = (-0.2, 0.8)."""
    ra, rb = add_relevance(
        torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, -2.0]]), torch.tensor([[1.0, 1.0]])
    )
    assert torch.allclose(ra, torch.tensor([[0.2, 1.2]]), atol=1e-6)
    assert torch.allclose(rb, torch.tensor([[-0.2, 0.8]]), atol=1e-6)
    # per image: a second image in the batch does not change the first one's shares
    ra2, _ = add_relevance(
        torch.tensor([[1.0, 3.0], [5.0, 5.0]]), torch.tensor([[1.0, -2.0], [1.0, 1.0]]), torch.ones(2, 2)
    )
    assert torch.allclose(ra2[0], ra[0], atol=1e-6)


def test_matmul_rule_by_hand():
    """x = [[1, 2]], y = [[3], [4]], R = 1: z = 11; R_x = x * y^T / 11 / 2 = (3/22, 8/22), R_y the same."""
    rx, ry = matmul_relevance(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0], [4.0]]), torch.tensor([[1.0]]))
    assert torch.allclose(rx, torch.tensor([[3 / 22, 8 / 22]]), atol=1e-6)
    assert torch.allclose(ry, torch.tensor([[3 / 22], [8 / 22]]), atol=1e-6)


def test_clone_rule_adds():
    x = torch.tensor([2.0, -1.0, 0.0])
    r = clone_relevance(x, torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.5, 0.5]))
    assert torch.allclose(r, torch.tensor([1.5, 2.5, 0.0]), atol=1e-6)  # nothing flows through a zero


def test_rollout_of_cams_by_hand():
    """Two blocks of 2 tokens: C = (I + c2)(I + c1), rows not renormalised."""
    c1 = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    c2 = torch.tensor([[[0.5, 0.0], [1.0, 0.0]]])
    expected = torch.tensor([[[1.5, 1.5], [1.0, 2.0]]])  # [[1.5, 0], [1, 1]] @ [[1, 1], [0, 1]]
    assert torch.allclose(rollout_of_cams([c1, c2]), expected)
    with pytest.raises(InputError, match="at least one block"):
        rollout_of_cams([])


# ---------------------------------------------------------------------------------------------------------------
# the method on a tiny timm ViT


def test_relevance_is_conserved_through_every_block():
    """LRP's test: the target logit's relevance (1) reaches the input of every block whole, per image."""
    clf = make_timm_vit(depth=3)
    result = tibav_relevance(clf, make_images(4), [0, 1, 2, 3])
    assert len(result.block_relevance) == 3
    for r in result.block_relevance:
        assert r.shape == (4, 17, 16)
        assert torch.allclose(r.sum(dim=(1, 2)), torch.ones(4), atol=1e-4)
    # the attention relevances: the A V product gives half of the attention output's relevance to A
    for a, ra in zip(result.attention, result.attention_relevance, strict=True):
        assert ra.shape == a.shape == (4, 2, 17, 17)
    assert torch.allclose(result.attention[0].sum(-1), torch.ones(4, 2, 17), atol=1e-5)


def _reference_relevances(clf, images: torch.Tensor, target: int) -> tuple[list, list]:
    """An independent LRP in float64, written the way the authors' ``layers_ours.py`` computes it: every
    rule as ``R_X = X * grad(Z, X, R / Z)`` with autograd, and q, k, v sliced out of the qkv output by name
    (``view(N, T, 3, heads, d)[:, :, i]``), so the relevance of the qkv output comes from autograd, not from
    re-stacking. Returns (R_A per block, R at each block's input), input side first, for one image."""
    import copy

    import torch.nn.functional as F

    net = copy.deepcopy(clf.net).double().eval()
    x = ((images.double() - 0.5) / 0.5)[:1]
    inputs, head_in = [], []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())) for b in net.blocks]
    handles.append(net.head.register_forward_hook(lambda m, a, o: head_in.append(a[0].detach())))
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()

    def sd(a, b):
        return safe_divide(a, b)

    def gradprop(fn, leaf, r):
        leaf = leaf.detach().requires_grad_(True)
        z = fn(leaf)
        (g,) = torch.autograd.grad(z, leaf, sd(r, z.detach()))
        return leaf.detach() * g

    def lin(layer, xin, r):
        w = layer.weight
        xp = xin.clamp(min=0).detach().requires_grad_(True)
        xn = xin.clamp(max=0).detach().requires_grad_(True)
        z1, z2 = F.linear(xp, w.clamp(min=0)), F.linear(xn, w.clamp(max=0))
        s = sd(r, (z1 + z2).detach())
        return (
            xp.detach() * torch.autograd.grad(z1, xp, s)[0] + xn.detach() * torch.autograd.grad(z2, xn, s)[0]
        )

    def add(a, b, r):
        ra = gradprop(lambda t: t + b, a, r)
        rb = gradprop(lambda t: a + t, b, r)
        sa, sb = ra.sum(), rb.sum()
        fa = sd(sa.abs(), sa.abs() + sb.abs()) * r.sum()
        fb = sd(sb.abs(), sa.abs() + sb.abs()) * r.sum()
        return ra * sd(fa, sa), rb * sd(fb, sb)

    r_a_blocks, r_in_blocks = [], []
    with torch.enable_grad():
        one_hot = torch.zeros(1, net.head.out_features, dtype=torch.float64)
        one_hot[0, target] = 1.0
        r_pooled = lin(net.head, head_in[0], one_hot)
        r = torch.zeros_like(inputs[-1])
        r[:, 0] = r_pooled
        for blk, xb in zip(reversed(list(net.blocks)), reversed(inputs), strict=True):
            attn = blk.attn
            h, (n, t, dim) = attn.num_heads, xb.shape
            d = dim // h
            with torch.no_grad():
                n1 = blk.norm1(xb)
                y = attn.qkv(n1)

                def qkv_of(yy, shape=(n, t, 3, h, d)):
                    parts = yy.view(*shape)
                    return [parts[:, :, i].transpose(1, 2) for i in range(3)]  # (N, h, T, d) each

                q, k, v = qkv_of(y)
                a = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
                o = (a @ v).transpose(1, 2).reshape(n, t, dim)
                b1 = attn.proj(o)
                x_mid = xb + b1
                n2 = blk.norm2(x_mid)
                g = blk.mlp.act(blk.mlp.fc1(n2))
                b2 = blk.mlp.fc2(g)
            r_mid_skip, r_b2 = add(x_mid, b2, r)
            r_n2 = lin(blk.mlp.fc1, n2, lin(blk.mlp.fc2, g, r_b2))
            r_mid = r_mid_skip + r_n2
            r_skip, r_b1 = add(xb, b1, r_mid)
            r_o = lin(attn.proj, o, r_b1)
            r_av = r_o.reshape(n, t, h, d).transpose(1, 2)
            r_a = gradprop(lambda aa, v=v: aa @ v, a, r_av) / 2
            # the v, q and k slots of the qkv output
            r_y = gradprop(lambda yy, a=a, f=qkv_of: a @ f(yy)[2], y, r_av) / 2
            r_y = r_y + gradprop(lambda yy, k=k, f=qkv_of: f(yy)[0] @ k.transpose(-2, -1), y, r_a) / 2
            r_y = r_y + gradprop(lambda yy, q=q, f=qkv_of: q @ f(yy)[1].transpose(-2, -1), y, r_a) / 2
            r = r_skip + lin(attn.qkv, n1, r_y)
            r_a_blocks.insert(0, r_a)
            r_in_blocks.insert(0, r)
    return r_a_blocks, r_in_blocks


def test_lrp_equals_an_autograd_reference():
    clf = make_timm_vit(depth=3, heads=2)
    x = make_images(1)
    result = tibav_relevance(clf, x, [3])
    ref_a, ref_in = _reference_relevances(clf, x, 3)
    # ours runs in float32: agreement to 1e-3 of the largest entry (a transposed or swapped q/k/v slot is off
    # by the order of the entries themselves)
    for ours, ref in zip(result.attention_relevance + result.block_relevance, ref_a + ref_in, strict=True):
        assert float((ours.double() - ref).abs().max()) <= 1e-3 * float(ref.abs().max())


def test_last_block_relevance_starts_at_the_class_token():
    """Only the class token feeds the head: in the last block, the attention output of the other tokens gets no
    relevance, so R_A is zero outside the class token's row."""
    clf = make_timm_vit(depth=2)
    result = tibav_relevance(clf, make_images(2), [1, 2])
    last = result.attention_relevance[-1]
    assert float(last[:, :, 1:].abs().max()) == 0.0
    assert float(last[:, :, 0].abs().max()) > 0.0


def _degenerate_vit():
    """One block, one head, values that do not depend on the token (v = the qkv bias): then
    ∂y_c/∂A_0j = (∂y_c/∂o_0)·v is the same for every j, and the LRP relevance of A A V is
    R_A[0, j] = A_0j Σ_d R_o[0, d] / 2; both variants' class-token row is a constant times A_0j, and so is
    rollout's ((A + I) / 2 over the patches)."""
    clf = make_timm_vit(depth=1, heads=1)
    attn = clf.net.blocks[0].attn
    d = attn.proj.in_features
    with torch.no_grad():
        attn.qkv.weight[2 * d :] = 0.0
        attn.qkv.bias[2 * d :] = torch.linspace(0.5, 1.5, d)
    return clf


@pytest.mark.parametrize("variant", ["lrp", "gradient"])
def test_agrees_with_rollout_in_the_degenerate_case(variant):
    clf = _degenerate_vit()
    x = make_images(3)
    reference = rollout(clf, x)
    agreed = 0
    for c in range(5):
        maps = tibav(clf, x, c, variant=variant)
        for i in range(3):  # where the constant is negative the positive part is zero: an all-zero map
            if float(maps[i].max()) == 0.0:
                continue
            assert torch.allclose(maps[i], reference[i], atol=1e-4)
            agreed += 1
    assert agreed >= 3


def test_the_map_depends_on_the_target_and_variants_differ(timm_vit, images):
    maps = [tibav(timm_vit, images, c) for c in (0, 3)]
    assert not torch.allclose(maps[0], maps[1])
    assert not torch.allclose(maps[0], tibav(timm_vit, images, 0, variant="gradient"))


def test_gradient_variant_uses_the_attention_itself(timm_vit, images):
    result = tibav_relevance(timm_vit, images, [0, 1, 2], variant="gradient")
    assert result.block_relevance == []
    for a, ra, g, cam in zip(
        result.attention, result.attention_relevance, result.gradients, result.cams, strict=True
    ):
        assert torch.equal(a, ra)
        assert torch.allclose(cam, (g * a).clamp(min=0).mean(dim=1))


def test_gradients_are_those_of_the_target_logit(timm_vit, images):
    """∂y_c/∂A of the last block, by a finite difference on the class token's attention row."""
    result = tibav_relevance(timm_vit, images[:1], [2], variant="gradient")
    g = result.gradients[-1][0, 0, 0]  # head 0, the class token's row
    # y_c is linear in the last block's A through A V, so the directional derivative is exact: perturb A_0j
    blk = timm_vit.net.blocks[-1]
    eps = 1e-3
    j = 5
    saved = blk.attn.fused_attn

    def hook(module, args, out):
        out = out.clone()
        out[0, 0, 0, j] += eps
        return out

    blk.attn.fused_attn = False
    handle = blk.attn.attn_drop.register_forward_hook(hook)
    try:
        with torch.no_grad():
            moved = timm_vit.model(images[:1])[0, 2]
    finally:
        handle.remove()
        blk.attn.fused_attn = saved
    with torch.no_grad():
        base = timm_vit.model(images[:1])[0, 2]
    assert float((moved - base) / eps) == pytest.approx(float(g[j]), rel=1e-2, abs=1e-4)


def test_the_world_vit_layout_is_accepted():
    from opticam_lib.world.networks import build_vit, make_classifier
    from opticam_lib.world.scenes import WorldConfig

    torch.manual_seed(0)
    clf = make_classifier("vit", build_vit(depth=2), WorldConfig(), (0.5,) * 3, (0.25,) * 3)
    x = torch.rand(2, 3, 64, 64)
    result = tibav_relevance(clf, x, [0, 1])
    assert torch.allclose(result.block_relevance[0].sum(dim=(1, 2)), torch.ones(2), atol=1e-4)
    _check_maps(tibav(clf, x, [0, 1]), 2, 64)


# ---------------------------------------------------------------------------------------------------------------
# refusals


def test_a_cnn_is_refused_before_any_work(tiny_cnn, images):
    with pytest.raises(InputError, match="not a vision transformer"):
        tibav(tiny_cnn, images)
    with pytest.raises(InputError, match="not a vision transformer"):
        get_method("tibav")(tiny_cnn, images)


def test_a_non_timm_transformer_is_refused(tiny_vit, images):
    """conftest's hand-written ViT: attention without num_heads or attn_drop."""
    with pytest.raises(InputError, match=r"timm VisionTransformer layout.*num_heads"):
        tibav(tiny_vit, images)


def test_other_pooling_and_unknown_variant_are_refused(timm_vit, images):
    with pytest.raises(InputError, match="variant"):
        tibav(timm_vit, images, variant="full")
    timm_vit.net.global_pool = "avg"
    with pytest.raises(InputError, match="class token"):
        tibav(timm_vit, images)


def test_a_block_laid_out_otherwise_is_refused(timm_vit, images):
    """A post-norm block (norm after the residual sum) passes the attribute check; the recomputation catches it."""
    blk = timm_vit.net.blocks[0]
    original = type(blk).forward

    def post_norm(self, x, attn_mask=None, is_causal=False):
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))

    blk.forward = post_norm.__get__(blk)
    with pytest.raises(InputError, match="pre-norm Block"):
        tibav(timm_vit, images)
    assert snapshot(timm_vit.model)["hooks"] == 0
    assert original is type(blk).forward


# ---------------------------------------------------------------------------------------------------------------
# the registry's contract and state tests, on a timm ViT


@pytest.mark.parametrize("name", NAMES)
def test_registered_as_transformer_only(name):
    assert METHODS[name].transformer_only and get_method(name) is TRANSFORMER_METHODS[name]
    assert METHODS[name].display == "TIBAV"


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, timm_vit, images):
    method = TRANSFORMER_METHODS[name]
    predicted = timm_vit.predict(images).argmax(1)
    first = method(timm_vit, images)
    _check_maps(first, 3, 32)
    assert torch.equal(method(timm_vit, images), first)
    assert torch.equal(method(timm_vit, images, predicted), first)
    assert torch.equal(method(timm_vit, images, predicted.tolist()), first)
    assert float(first.amax(dim=(1, 2, 3)).min()) == 1.0
    # a batch gives each image's own map
    alone = torch.cat([method(timm_vit, images[i : i + 1], predicted[i : i + 1]) for i in range(3)])
    assert torch.allclose(alone, first, atol=1e-5)
    # other float dtypes are used in the model's dtype
    assert torch.equal(method(timm_vit, images.double(), predicted), first)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fused", [True, False])
def test_state_restored_after_call(name, fused, timm_vit, images):
    for blk in timm_vit.net.blocks:
        blk.attn.fused_attn = fused
    for mixed in (False, True):
        if mixed:
            set_mixed_state(timm_vit.model)
        else:
            timm_vit.model.train()
        before = snapshot(timm_vit.model)
        TRANSFORMER_METHODS[name](timm_vit, images)
        assert_same_state(before, snapshot(timm_vit.model))
        assert [blk.attn.fused_attn for blk in timm_vit.net.blocks] == [fused, fused]


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name, timm_vit, images):
    x, targets = images.clone(), torch.tensor([0, 1, 2])
    TRANSFORMER_METHODS[name](timm_vit, x, targets)
    assert torch.equal(x, images) and targets.tolist() == [0, 1, 2]
    assert not x.requires_grad and x.grad is None


@pytest.mark.parametrize("name", NAMES)
def test_existing_grads_left_untouched(name, timm_vit, images):
    for p in timm_vit.model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = snapshot(timm_vit.model)
    TRANSFORMER_METHODS[name](timm_vit, images)
    assert_same_state(before, snapshot(timm_vit.model))


@pytest.mark.parametrize("name", NAMES)
def test_state_restored_after_exception_in_forward(name, timm_vit, images):
    timm_vit.net.norm = Bomb(timm_vit.net.norm, 1)  # the final norm, after every block has run
    set_mixed_state(timm_vit.model)
    before = snapshot(timm_vit.model)
    with pytest.raises(RuntimeError, match="boom in forward"):
        TRANSFORMER_METHODS[name](timm_vit, images, [0, 1, 2])
    assert_same_state(before, snapshot(timm_vit.model))
    assert all(blk.attn.fused_attn for blk in timm_vit.net.blocks)  # timm's default, put back
    timm_vit.net.norm.fuse = -1
    assert TRANSFORMER_METHODS[name](timm_vit, images, [0, 1, 2]).shape == (3, 1, 32, 32)


@pytest.mark.parametrize("name", NAMES)
def test_state_restored_after_exception_in_backward(name, timm_vit, images):
    set_mixed_state(timm_vit.model)
    before = snapshot(timm_vit.model)
    _, handle = _arm(timm_vit, fuse=1)
    try:
        with pytest.raises(RuntimeError, match="boom in backward"):
            TRANSFORMER_METHODS[name](timm_vit, images, [0, 1, 2])
    finally:
        handle.remove()
    assert_same_state(before, snapshot(timm_vit.model))


@pytest.mark.parametrize("bad", list(BAD_IMAGES))
@pytest.mark.parametrize("name", NAMES)
def test_bad_images_are_refused(name, bad, timm_vit):
    make, message = BAD_IMAGES[bad]
    with pytest.raises(InputError, match=message):
        TRANSFORMER_METHODS[name](timm_vit, make())


@pytest.mark.parametrize("bad", list(BAD_TARGETS))
@pytest.mark.parametrize("name", NAMES)
def test_bad_targets_are_refused(name, bad, timm_vit, images):
    targets, message = BAD_TARGETS[bad]
    with pytest.raises(InputError, match=message):
        TRANSFORMER_METHODS[name](timm_vit, images, targets)


# ---------------------------------------------------------------------------------------------------------------
# Tables 2 and 3: the TIBAV row, beside the paper's


def test_table2_has_the_tibav_row(timm_vit, images):
    from opticam_lib.paper.transformers import format_table2, table2

    rows = table2(timm_vit, images, [0, 1, 2], ["TIBAV", "rollout"])
    assert [r.method for r in rows] == ["TIBAV", "Rollout"]
    assert torch.equal(rows[0].maps, tibav(timm_vit, images, [0, 1, 2]))
    line = next(ln for ln in format_table2(rows).splitlines() if ln.startswith("TIBAV"))
    # the paper's ViT-B and DeiT-B
    assert [t for t in line.split() if t != "|"][-6:] == ["81.7", "0.8", "5.8", "62.3", "0.7", "7.1"]


@pytest.mark.parametrize("table, columns", [("2", ("AD", "AG", "AI")), ("3", ("I", "D"))])
def test_reproduce_runs_tibav_on_a_transformer(table, columns, tmp_path):
    from opticam_lib import load_classifier
    from opticam_lib.paper.reproduce import Config, default_methods, run
    from opticam_lib.paper.tables import paper_table

    vit = load_classifier("world_vit")
    defaults = default_methods(table, vit)
    assert "tibav" in defaults
    order = list(paper_table(table, "vit_b_16"))
    assert order.index("TIBAV") == order.index("Rollout") + 1
    assert defaults.index("tibav") == defaults.index("rollout") + 1
    config = Config(
        table=table, model="world_vit", images="world:2", methods=["tibav"], batch_size=2, steps=4,
        out=str(tmp_path / "out"),
    )  # fmt: skip
    result = run(config, progress=False)
    assert list(result.table) == ["TIBAV"]
    line = next(ln for ln in result.text.splitlines() if ln.startswith("TIBAV "))
    paper = paper_table(table, "vit_b_16")["TIBAV"]
    for c in columns:
        assert f"[{paper[c]:.1f}]" in line


def test_reproduce_refuses_tibav_on_a_cnn(tmp_path):
    from opticam_lib.paper.reproduce import Config, run

    config = Config(
        table="1", model="world_cnn", images="world:2", methods=["tibav"], out=str(tmp_path / "o")
    )
    with pytest.raises(InputError, match="TIBAV need a transformer"):
        run(config, progress=False)
