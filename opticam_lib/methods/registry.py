"""The registry of saliency methods: one name per method, one calling convention.

``method(classifier, images, targets=None, **options) -> maps`` with images (N, 3, H, W) float in [0, 1] and
maps (N, 1, H, W) float in [0, 1]. All are implemented in this library from their equations, so they share
hooks, state restoration, input checks and the black-pixel masking convention, except LIME and GradientShap,
which wrap Captum (the optional ``peers`` extra) behind the same convention and the same state restoration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import Targets
from opticam_lib.methods.attribution import gradientshap, lime
from opticam_lib.methods.cam_family import cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from opticam_lib.methods.extremal import extremal_perturbation
from opticam_lib.methods.masking import ablationcam, fakecam, scorecam
from opticam_lib.methods.opti_cam import opticam
from opticam_lib.methods.relevance import tibav
from opticam_lib.models.classifier import Classifier

Method = Callable[..., Tensor]


@dataclass(frozen=True)
class MethodInfo:
    """One registered method, everything the library knows about it in one record.

    Attributes:
        fn: the function, ``fn(classifier, images, targets=None, **options) -> (N, 1, H, W) in [0, 1]``.
        display: the name the paper's tables use.
        cost: its cost in passes, in words.
        takes_layer: it accepts ``layer=`` (a target layer); the others work on the input pixels
            (ExPerturbation, LIME, GradientShap), the final linear layer (CAM) or nothing (Fake-CAM).
        shows_progress: it accepts ``progress=`` (a progress bar).
        transformer_only: it explains vision transformers only (TIBAV); a CNN is refused with an InputError.
    """

    fn: Method
    display: str
    cost: str
    takes_layer: bool = False
    shows_progress: bool = False
    transformer_only: bool = False


_GRADIENT = "1 forward + 1 backward"
METHODS: dict[str, MethodInfo] = {
    "fakecam": MethodInfo(fakecam, "Fake-CAM", "none"),
    "cam": MethodInfo(cam, "CAM", "1 forward"),
    "gradcam": MethodInfo(gradcam, "Grad-CAM", _GRADIENT, takes_layer=True),
    "gradcampp": MethodInfo(gradcampp, "Grad-CAM++", _GRADIENT, takes_layer=True),
    "xgradcam": MethodInfo(xgradcam, "XGrad-CAM", _GRADIENT, takes_layer=True),
    "layercam": MethodInfo(layercam, "Layer-CAM", _GRADIENT, takes_layer=True),
    "hirescam": MethodInfo(hirescam, "HiRes-CAM", _GRADIENT, takes_layer=True),
    "scorecam": MethodInfo(
        scorecam, "Score-CAM", "K forwards (K channels)", takes_layer=True, shows_progress=True
    ),
    "ablationcam": MethodInfo(
        ablationcam, "Ablation-CAM", "K forwards (K channels)", takes_layer=True, shows_progress=True
    ),
    "experturbation": MethodInfo(
        extremal_perturbation,
        "ExPerturbation",
        "T x (forward + backward), T = 800 iterations",
        shows_progress=True,
    ),
    "lime": MethodInfo(lime, "LIME", "S forwards, S = 1,000 samples (needs captum)", shows_progress=True),
    "gradientshap": MethodInfo(
        gradientshap, "GradientShap", "S x (forward + backward), S = 50 (needs captum)"
    ),
    "tibav": MethodInfo(
        tibav,
        "TIBAV",
        "1 forward + 1 backward + 1 LRP pass (timm ViTs only)",
        transformer_only=True,
    ),
    "opticam": MethodInfo(
        opticam, "Opti-CAM", "T x (forward + backward), T iterations", takes_layer=True, shows_progress=True
    ),
}

#: the methods that take a target layer (``layer=``), read from the records above
LAYER_METHODS: tuple[str, ...] = tuple(name for name, info in METHODS.items() if info.takes_layer)
#: the methods that show a progress bar (``progress=``), read from the records above
PROGRESS_METHODS: tuple[str, ...] = tuple(name for name, info in METHODS.items() if info.shows_progress)
#: the methods that explain vision transformers only, read from the records above
TRANSFORMER_METHODS: tuple[str, ...] = tuple(name for name, info in METHODS.items() if info.transformer_only)


#: other spellings of a method's name (the function's name where it differs from the key)
ALIASES: dict[str, str] = {
    "extremalperturbation": "experturbation",
    "extremalperturbations": "experturbation",
}


def method_key(name: str) -> str:
    """The registry's name of a method as users type it: ``"Grad-CAM++"``, ``"grad_cam++"`` -> ``"gradcampp"``;
    ``"extremal_perturbation"`` (the function's name) -> ``"experturbation"``."""
    key = name.lower().replace("-", "").replace("_", "").replace("+", "p").replace(" ", "")
    return ALIASES.get(key, key)


def validate_options(fn: Method, options: dict, name: str) -> None:
    """Refuse options that ``fn`` does not take, naming the ones it does (a misspelt or misplaced option would
    otherwise be a TypeError from deep inside the call).

    Raises:
        InputError: an option ``fn`` has no parameter for (nothing is checked for a ``fn`` taking ``**options``).
    """
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to check against
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    taken = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL][
        3:
    ]  # after classifier, images, targets
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise InputError(
            f"method {name!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(taken) or 'none'}"
        )


def get_method(name: str | Method) -> Method:
    """The function of a registered method (a callable passes through); anything else is an ``InputError``."""
    if callable(name):
        return name
    if not isinstance(name, str):
        # evaluate(classifier, method, images) vs explain(classifier, images, method)
        if isinstance(name, Tensor):
            raise InputError(
                f"method must be a registered name (str) or a callable, got a tensor of shape {tuple(name.shape)}:"
                " images and method swapped? The order is evaluate(classifier, method, images, targets) and"
                " explain(classifier, images, method, targets)"
            )
        raise InputError(
            "method must be a registered name (str) or a callable fn(classifier, images, targets, **options),"
            f" got {type(name).__name__} {name!r}; known methods: {', '.join(METHODS)}"
        )
    key = method_key(name)
    if key not in METHODS:
        raise InputError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[key].fn


def display_name(name: str | Method) -> str:
    """The paper's name of a method (``"gradcam"`` -> ``"Grad-CAM"``)."""
    if callable(name):
        return getattr(name, "__name__", "custom")
    key = method_key(name)
    return METHODS[key].display if key in METHODS else name


def explain(
    classifier: Classifier,
    images: Tensor,
    method: str | Method = "opticam",
    targets: Targets = None,
    **options: Any,
) -> Tensor:
    """Run ``method`` (a registered name or a function) with the common convention: images (N, 3, H, W) float in
    [0, 1] -> maps (N, 1, H, W) float in [0, 1]."""
    fn = get_method(method)
    validate_options(fn, options, display_name(method))
    return fn(classifier, images, targets, **options)
