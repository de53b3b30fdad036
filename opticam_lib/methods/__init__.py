"""The saliency methods, one calling convention: ``method(classifier, images, targets=None, **options)`` with
images (N, 3, H, W) float in [0, 1] -> maps (N, 1, H, W) float in [0, 1].

- ``maps``: the combination h(sum_k w_k A^k), upsampling, normalisations (eq. 1, 4, 16-18);
- ``feature_pass``: the feature pass (A^k, and dy_c/dA^k);
- ``cam_family``: CAM and the gradient family (eq. 1-2); ``masking``: Score-CAM, Ablation-CAM, Fake-CAM (eq. 3-4);
- ``opti_cam``: Opti-CAM (eq. 5-12, 19, and A1, A2 of appendix F.2); ``extremal``: Extremal Perturbations; ``attribution``: LIME and
  GradientShap (Captum); ``attention``: raw attention and rollout for transformers; ``relevance``: Chefer et al.'s
  transformer attribution (TIBAV, LRP relevances or the gradient-weighted attention);
- ``registry``: one record per method (name, display name, cost, takes a layer, shows progress).
"""

from opticam_lib.methods.attention import (
    HEAD_FUSIONS,
    attention_maps,
    attention_modules,
    attention_probabilities,
    class_token_grid,
    fuse_heads,
    raw_attention,
    rollout,
    rollout_matrix,
)
from opticam_lib.methods.attribution import (
    BASELINES,
    LIME_RIDGE_ALPHA,
    MAX_SUPERPIXELS,
    REDUCTIONS,
    gradientshap,
    grid_superpixels,
    lime,
    lime_kernel,
    weighted_ridge,
)
from opticam_lib.methods.cam_family import cam, gradcam, gradcampp, hirescam, layercam, xgradcam
from opticam_lib.methods.extremal import (
    COLDNESS,
    JITTERS,
    PERTURBATIONS,
    VARIANTS,
    ExtremalResult,
    SmoothMaskGenerator,
    apply_perturbation,
    area_loss,
    area_reference,
    extremal_perturbation,
    gaussian_blur,
    optimize_extremal,
    perturbation_pyramid,
)
from opticam_lib.methods.feature_pass import activations_and_gradients, features
from opticam_lib.methods.maps import NORMALIZATIONS, Normalization, combine, normalize, to_saliency, upsample
from opticam_lib.methods.masking import ablationcam, fakecam, scorecam
from opticam_lib.methods.opti_cam import (
    INITS,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    SELECTORS,
    OptiCAMResult,
    Schedule,
    compute_objective,
    lr_factor,
    masked_score,
    opticam,
    optimize,
    saliency_map,
    select,
)
from opticam_lib.methods.registry import (
    LAYER_METHODS,
    METHODS,
    PROGRESS_METHODS,
    Method,
    MethodInfo,
    display_name,
    explain,
    get_method,
)
from opticam_lib.methods.relevance import TIBAV_VARIANTS, TIBAVResult, tibav, tibav_relevance

__all__ = [
    "BASELINES",
    "COLDNESS",
    "HEAD_FUSIONS",
    "INITS",
    "JITTERS",
    "LAYER_METHODS",
    "LIME_RIDGE_ALPHA",
    "MAX_SUPERPIXELS",
    "METHODS",
    "NORMALIZATIONS",
    "OBJECTIVES",
    "OPTIMIZERS",
    "PERTURBATIONS",
    "PROGRESS_METHODS",
    "REDUCTIONS",
    "SCHEDULES",
    "SELECTORS",
    "TIBAV_VARIANTS",
    "VARIANTS",
    "ExtremalResult",
    "Method",
    "MethodInfo",
    "Normalization",
    "OptiCAMResult",
    "Schedule",
    "SmoothMaskGenerator",
    "TIBAVResult",
    "ablationcam",
    "activations_and_gradients",
    "apply_perturbation",
    "area_loss",
    "area_reference",
    "attention_maps",
    "attention_modules",
    "attention_probabilities",
    "cam",
    "class_token_grid",
    "combine",
    "compute_objective",
    "display_name",
    "explain",
    "extremal_perturbation",
    "fakecam",
    "features",
    "fuse_heads",
    "gaussian_blur",
    "get_method",
    "gradcam",
    "gradcampp",
    "gradientshap",
    "grid_superpixels",
    "hirescam",
    "layercam",
    "lime",
    "lime_kernel",
    "lr_factor",
    "masked_score",
    "normalize",
    "opticam",
    "optimize",
    "optimize_extremal",
    "perturbation_pyramid",
    "raw_attention",
    "rollout",
    "rollout_matrix",
    "saliency_map",
    "scorecam",
    "select",
    "tibav",
    "tibav_relevance",
    "to_saliency",
    "upsample",
    "weighted_ridge",
    "xgradcam",
]

# The modules' names until 2026-11-29, when each was hidden by the function of the same name that this package
# re-exports: kept importable so that a saved notebook's ``from opticam_lib.methods.opticam import ...`` still works.
import sys as _sys

from opticam_lib.methods import cam_family, feature_pass, opti_cam, relevance

for _old, _module in {
    "opticam": opti_cam,
    "cam": cam_family,
    "features": feature_pass,
    "tibav": relevance,
}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _module)
