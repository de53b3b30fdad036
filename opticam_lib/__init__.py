"""opticam_lib: saliency maps for image classifiers around Opti-CAM (Zhang et al., CVIU 2024).

Calling convention of every method: ``method(classifier, images, targets=None, **options) -> maps`` with images
(N, 3, H, W) float in [0, 1] and maps (N, 1, H, W) float in [0, 1].

    >>> from opticam_lib import load_classifier, load_samples, opticam, evaluate
    >>> clf = load_classifier()                      # efficientnet_lite0, offline
    >>> s = load_samples()                           # real photos with classes and boxes
    >>> maps = opticam(clf, s.images[:2], s.labels[:2], iterations=30)
"""

from .attribution import gradientshap, lime
from .cam import cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from .errors import InputError, MissingDataError, MissingDependencyError, MissingWeightsError, OptiCAMError
from .evaluate import Evaluation, evaluate, format_table
from .extremal import extremal_perturbation
from .masking import ablationcam, fakecam, scorecam
from .methods import METHODS, display_name, explain, get_method
from .metrics import (
    area_under_curve,
    average_drop,
    average_gain,
    average_increase,
    classification_metrics,
    deletion_curve,
    insertion_curve,
    masked_probabilities,
)
from .models import Classifier, available_models, load_classifier, wrap_classifier
from .opticam import OptiCAMResult, opticam, optimize
from .profiles import profile, use_profile

__version__ = "0.1.0"


def __getattr__(name: str):
    # images.py is built alongside; import lazily so the core works without it
    if name in ("load_samples", "load_image", "load_images", "ImageSet"):
        from . import images

        return getattr(images, name)
    raise AttributeError(f"module 'opticam_lib' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Classifier",
    "Evaluation",
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
    "masked_probabilities",
    "opticam",
    "optimize",
    "profile",
    "scorecam",
    "use_profile",
    "wrap_classifier",
    "xgradcam",
]
