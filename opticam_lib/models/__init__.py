"""Models: ``Classifier`` (a network plus what saliency methods need to know about it) and the registry of
named models, whose loaders are imported lazily (``"module:function"``), so importing this package loads no
network code.

- ``classifier``: ``Classifier``, ``InputNormalized``, ``wrap_classifier`` for your own network;
- ``registry``: ``load_classifier``, ``available_models``, ``register_model``, the weights cache;
- ``zoo``: the built-in loaders (EfficientNet-Lite0, ResNet50, VGG16-BN, ViT-B/16, DeiT-B/16).
"""

from opticam_lib.images import imagenet_categories
from opticam_lib.models.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    InputNormalized,
    wrap_classifier,
)
from opticam_lib.models.registry import (
    ModelSpec,
    available_models,
    load_classifier,
    load_state_dict,
    register_model,
    require_weights,
    weights_path,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Classifier",
    "InputNormalized",
    "ModelSpec",
    "available_models",
    "imagenet_categories",
    "load_classifier",
    "load_state_dict",
    "register_model",
    "require_weights",
    "weights_path",
    "wrap_classifier",
]
