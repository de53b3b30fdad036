"""Raw attention and rollout: the recomputed attention equals timm's own, and rollout matches a hand loop."""

import pytest
import torch

from opticam_lib import wrap_classifier
from opticam_lib.attention import attention_maps, raw_attention, rollout
from opticam_lib.errors import InputError
from opticam_lib.maps import to_saliency


@pytest.fixture(scope="module")
def tiny_vit():
    import timm

    torch.manual_seed(0)
    net = timm.models.VisionTransformer(
        img_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2
    )
    for blk in net.blocks:
        blk.attn.fused_attn = False  # so timm materialises the probabilities we compare against
    return wrap_classifier(net, "blocks.2.norm1", num_classes=5, input_size=32, prefix_tokens=1)


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


def test_recomputed_attention_equals_timms(tiny_vit):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with attention_maps(tiny_vit) as ours, torch.no_grad():
        tiny_vit.model(x)
    theirs = timm_attention(tiny_vit, x)
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)
    assert sum(len(m._forward_pre_hooks) for m in tiny_vit.net.modules()) == 0


def test_rollout_matches_hand_loop(tiny_vit):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    atts = timm_attention(tiny_vit, x)
    r = torch.eye(17)[None]
    for a in atts:
        m = (a.mean(dim=1) + torch.eye(17)) / 2
        m = m / m.sum(-1, keepdim=True)
        r = m @ r
    want = to_saliency(r[:, 0, 1:].reshape(1, 1, 4, 4), (32, 32))
    assert torch.allclose(rollout(tiny_vit, x), want, atol=1e-5)
    raw = atts[-1].mean(dim=1)[:, 0, 1:].reshape(1, 1, 4, 4)
    assert torch.allclose(raw_attention(tiny_vit, x), to_saliency(raw, (32, 32)), atol=1e-5)


def test_not_a_vit_is_refused():
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    clf = wrap_classifier(net, "0", num_classes=2)
    with pytest.raises(InputError, match="not a ViT"):
        rollout(clf, torch.rand(1, 3, 8, 8))
