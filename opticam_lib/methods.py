"""The registry of saliency methods: one name per method, one calling convention.

``method(classifier, images, targets=None, **options) -> maps`` with images (N, 3, H, W) float in [0, 1] and
maps (N, 1, H, W) float in [0, 1]. All are implemented in this library from their equations, so they share
hooks, state restoration, input checks and the black-pixel masking convention, except LIME and GradientShap,
which wrap Captum (the optional ``peers`` extra) behind the same convention and the same state restoration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from .attribution import gradientshap, lime
from .cam import cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from .errors import InputError
from .extremal import extremal_perturbation
from .masking import ablationcam, fakecam, scorecam
from .models import Classifier
from .opticam import opticam

Method = Callable[..., Tensor]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: the function, the name the paper's tables use, and its cost in passes."""

    fn: Method
    display: str
    cost: str


METHODS: dict[str, MethodInfo] = {
    "fakecam": MethodInfo(fakecam, "Fake-CAM", "none"),
    "cam": MethodInfo(cam, "CAM", "1 forward"),
    "gradcam": MethodInfo(gradcam, "Grad-CAM", "1 forward + 1 backward"),
    "gradcampp": MethodInfo(gradcampp, "Grad-CAM++", "1 forward + 1 backward"),
    "xgradcam": MethodInfo(xgradcam, "XGrad-CAM", "1 forward + 1 backward"),
    "layercam": MethodInfo(layercam, "Layer-CAM", "1 forward + 1 backward"),
    "hirescam": MethodInfo(hirescam, "HiRes-CAM", "1 forward + 1 backward"),
    "scorecam": MethodInfo(scorecam, "Score-CAM", "K forwards (K channels)"),
    "ablationcam": MethodInfo(ablationcam, "Ablation-CAM", "K forwards (K channels)"),
    "experturbation": MethodInfo(
        extremal_perturbation, "ExPerturbation", "T x (forward + backward), T = 800 iterations"
    ),
    "lime": MethodInfo(lime, "LIME", "S forwards, S = 1,000 samples (needs captum)"),
    "gradientshap": MethodInfo(
        gradientshap, "GradientShap", "S x (forward + backward), S = 50 (needs captum)"
    ),
    "opticam": MethodInfo(opticam, "Opti-CAM", "T x (forward + backward), T iterations"),
}

#: the methods that take a target layer (``layer=``); the others work on the input pixels (ExPerturbation,
#: LIME, GradientShap), the final linear layer (CAM) or nothing (Fake-CAM)
LAYER_METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcampp",
    "xgradcam",
    "layercam",
    "hirescam",
    "scorecam",
    "ablationcam",
    "opticam",
)
#: the methods that show a progress bar (``progress=``)
PROGRESS_METHODS: tuple[str, ...] = ("scorecam", "ablationcam", "experturbation", "lime", "opticam")


def get_method(name: str | Method) -> Method:
    """The function of a registered method (a callable passes through)."""
    if callable(name):
        return name
    key = name.lower().replace("-", "").replace("_", "").replace("+", "p")
    if key not in METHODS:
        raise InputError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}")
    return METHODS[key].fn


def display_name(name: str | Method) -> str:
    """The paper's name of a method (``"gradcam"`` -> ``"Grad-CAM"``)."""
    if callable(name):
        return getattr(name, "__name__", "custom")
    key = name.lower().replace("-", "").replace("_", "").replace("+", "p")
    return METHODS[key].display if key in METHODS else name


def explain(
    classifier: Classifier, images: Tensor, method: str | Method = "opticam", targets=None, **options
) -> Tensor:
    """Run ``method`` (a registered name or a function) with the common convention -> (N, 1, H, W) in [0, 1]."""
    return get_method(method)(classifier, images, targets, **options)
