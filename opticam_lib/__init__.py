"""opticam_lib: saliency maps for image classifiers around Opti-CAM (Zhang et al., CVIU 2024).

Three wings (ARCHITECTURE.md): the library (this namespace: models, methods, metrics, images, plots), the
course (``opticam_lib.course``, what only the notebooks use) and the paper's reproduction
(``opticam_lib.paper``); the controlled world is ``opticam_lib.world``.

Calling convention of every method: ``method(classifier, images, targets=None, **options) -> maps`` with images
(N, 3, H, W) float in [0, 1] and maps (N, 1, H, W) float in [0, 1].

    >>> from opticam_lib import load_classifier, load_samples, opticam, evaluate
    >>> clf = load_classifier()                      # efficientnet_lite0, offline
    >>> s = load_samples()                           # real photos with classes and boxes
    >>> maps = opticam(clf, s.images[:2], s.labels[:2], iterations=30)
"""

from typing import Any

from opticam_lib.errors import (
    InputError,
    MissingDataError,
    MissingDependencyError,
    MissingWeightsError,
    OptiCAMError,
)
from opticam_lib.methods.attribution import gradientshap, lime
from opticam_lib.methods.cam_family import cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from opticam_lib.methods.extremal import extremal_perturbation
from opticam_lib.methods.masking import ablationcam, fakecam, scorecam
from opticam_lib.methods.opti_cam import OptiCAMResult, opticam, optimize
from opticam_lib.methods.registry import METHODS, display_name, explain, get_method
from opticam_lib.methods.relevance import tibav
from opticam_lib.metrics.classification import (
    average_drop,
    average_gain,
    average_increase,
    classification_metrics,
    masked_probabilities,
)
from opticam_lib.metrics.curves import area_under_curve, deletion_curve, insertion_curve
from opticam_lib.metrics.evaluation import Evaluation, evaluate, format_table
from opticam_lib.models import Classifier, available_models, load_classifier, wrap_classifier
from opticam_lib.profiles import profile, use_profile

__version__ = "0.1.0"


_LAZY = ("ImageSet", "load_image", "load_images", "load_samples")


def __getattr__(name: str) -> Any:
    """The photo loaders (``load_samples``, ...), imported on first use: they import PIL and read the manifest."""
    if name in _LAZY:
        from opticam_lib import images

        return getattr(images, name)
    raise AttributeError(f"module 'opticam_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The package's names, the lazily imported loaders included."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "METHODS",
    "Classifier",
    "Evaluation",
    "ImageSet",
    "InputError",
    "MissingDataError",
    "MissingDependencyError",
    "MissingWeightsError",
    "OptiCAMError",
    "OptiCAMResult",
    "ablationcam",
    "area_under_curve",
    "available_models",
    "average_drop",
    "average_gain",
    "average_increase",
    "cam",
    "classification_metrics",
    "deletion_curve",
    "display_name",
    "evaluate",
    "explain",
    "extremal_perturbation",
    "fakecam",
    "format_table",
    "get_method",
    "gradcam",
    "gradcampp",
    "gradientshap",
    "hirescam",
    "insertion_curve",
    "layercam",
    "lime",
    "load_classifier",
    "load_image",
    "load_images",
    "load_samples",
    "masked_probabilities",
    "opticam",
    "optimize",
    "profile",
    "scorecam",
    "tibav",
    "use_profile",
    "wrap_classifier",
    "xgradcam",
]
