"""The front door of every method: images, maps and targets checked once, each bad input an ``InputError``
that names the problem; and the validators of options (``validate_*``).

``prepare(classifier, images, targets)`` is what every saliency method calls first: images (N, 3, H, W)
float in [0, 1] on the model's device and dtype, and one class per image as a (N,) long tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from opticam_lib.errors import InputError

if TYPE_CHECKING:  # annotations only: the models import this module
    from opticam_lib.models.classifier import Classifier


def validate_unit_interval(
    values: Tensor, name: str, what: str = "must lie in [0, 1]", advice: str = "", tolerance: float = 1e-4
) -> None:
    """The one check that images, maps and probabilities share: ``values`` finite and within [0, 1] (to
    ``tolerance``), else an ``InputError``: "{name} contains NaN or infinite values", or
    "{name} {what}, got values in [lo, hi]{advice}"."""
    seen = values.detach()  # no graph needed (and a float() of a leaf that requires grad would warn)
    if not torch.isfinite(seen).all():
        raise InputError(f"{name} contains NaN or infinite values")
    lo, hi = float(seen.min()), float(seen.max())
    if lo < -tolerance or hi > 1 + tolerance:
        raise InputError(f"{name} {what}, got values in [{lo:.3g}, {hi:.3g}]{advice}")


def validate_images(images: object, name: str = "images") -> Tensor:
    """Check a batch of images and return it as a float tensor.

    Args:
        images: (N, 3, H, W) float tensor in [0, 1], finite. A single (3, H, W) image is refused with a hint.
    """
    if not isinstance(images, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, 3, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        raise InputError(f"{name} has shape {tuple(images.shape)}: add a batch dimension, e.g. images[None]")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if not images.is_floating_point():
        hint = " (divide uint8 images by 255)" if images.dtype == torch.uint8 else ""
        raise InputError(f"{name} must be float in [0, 1], got dtype {images.dtype}{hint}")
    validate_unit_interval(images, name, "must be raw RGB in [0, 1] (the model normalises inside)")
    return images


def validate_maps(maps: object, images: Tensor, name: str = "maps") -> Tensor:
    """Check saliency maps against their images: (N, 1, H, W) float in [0, 1], finite."""
    if not isinstance(maps, Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, 1, H, W), got {type(maps).__name__}")
    n, _, h, w = images.shape
    if maps.dim() == 3 and maps.shape == (n, h, w):
        maps = maps[:, None]
    if tuple(maps.shape) != (n, 1, h, w):
        raise InputError(
            f"{name} must have shape {(n, 1, h, w)} to match the images, got {tuple(maps.shape)}"
        )
    validate_unit_interval(maps, name)
    return maps.float()


def validate_targets(
    targets: int | Sequence[int] | Tensor | None,
    classifier: Classifier,
    images: Tensor,
) -> Tensor:
    """One class per image as a (N,) long tensor on the model's device.

    ``None`` means the predicted class of each image. An int is used for every image.
    """
    n = images.shape[0]
    if targets is None:
        return classifier.predict(images).argmax(dim=1)
    if isinstance(targets, str) or (
        isinstance(targets, Sequence)
        and not isinstance(targets, Tensor)
        and any(isinstance(x, str) for x in targets)
    ):
        raise InputError(
            f"targets must be integer class ids, got {targets!r}; a class name's id is "
            "classifier.categories.index(name)"
        )
    if isinstance(targets, int):
        targets = [targets] * n
    try:
        t = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(
            f"targets must be integer class ids (int, list, array or tensor), got {targets!r}"
        ) from e
    if t.dim() == 0:
        t = t.expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise InputError(f"targets must give one class per image ({n}), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise InputError(f"targets must be integer class ids, got dtype {t.dtype}")
    c = classifier.num_classes
    bad = [int(x) for x in t if not 0 <= int(x) < c]
    if bad:
        raise InputError(f"target class {bad[0]} out of range: {classifier.name!r} has classes 0..{c - 1}")
    return t.long().to(classifier.device)


def validate_positive_int(value: object, name: str) -> int:
    """``value`` if it is an int >= 1 (not a bool); else an ``InputError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return value


def validate_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; else an ``InputError`` naming ``name`` and listing the choices."""
    if not isinstance(value, str) or value not in choices:  # not a str: an array's `in` would be ambiguous
        shown = repr(value) if isinstance(value, str) else f"of type {type(value).__name__}"
        raise InputError(f"unknown {name} {shown}; choose one of: {', '.join(choices)}")
    return value


def as_python_scalar(value: object) -> object:
    """A NumPy or torch scalar (``np.float32(0.1)``, a 0-d tensor) as the Python number it holds; anything else
    unchanged, for the caller's own check."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def validate_number(
    value: object, name: str, *, low: float, high: float = math.inf, closed_low: bool
) -> float:
    """A real number (not bool) in (low, high) or [low, high), else an InputError naming the interval."""
    value = as_python_scalar(value)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if closed_low else value > low) and value < high
    if not ok:
        left = "[" if closed_low else "("
        right = "inf)" if high == math.inf else f"{high:g})"
        raise InputError(f"{name} must be a number in {left}{low:g}, {right}, got {value!r}")
    return float(value)


Targets = int | Sequence[int] | Tensor | None


def rounding_tolerance(dtype: torch.dtype) -> float:
    """The relative difference that rounding alone can put between two computations of one value in ``dtype``:
    1e-3 for float32 and float64, 8 machine epsilons of a half-precision dtype (about 0.8 % for float16, 6 % for
    bfloat16)."""
    return max(1e-3, 8 * torch.finfo(dtype).eps)


def model_dtype(classifier: Classifier) -> torch.dtype:
    """The float dtype of the classifier's parameters (float32 for a model without float parameters): what images
    are cast to before a forward pass."""
    return next((p.dtype for p in classifier.model.parameters() if p.is_floating_point()), torch.float32)


def validate_classifier(classifier: object) -> None:
    """Refuse what is not a ``Classifier``: a bare ``nn.Module``, a model's name, anything else (the library's
    methods need its target layer, device and class names)."""
    if isinstance(classifier, torch.nn.Module):
        raise InputError(
            f"classifier must be an opticam_lib Classifier, got the torch module {type(classifier).__name__}: wrap "
            "it with opticam_lib.wrap_classifier(model, target_layer, ...) (or load one with load_classifier)"
        )
    if isinstance(classifier, str):
        raise InputError(
            f"classifier must be an opticam_lib Classifier, got the string {classifier!r}: load it first with "
            f"opticam_lib.load_classifier({classifier!r})"
        )
    if not all(hasattr(classifier, a) for a in ("model", "device", "target_layer", "validate_logits")):
        raise InputError(
            f"classifier must be an opticam_lib Classifier (load_classifier or wrap_classifier), got "
            f"{type(classifier).__name__}"
        )


def prepare_images(classifier: Classifier, images: object) -> Tensor:
    """Checked images (N, 3, H, W) float in [0, 1] on the model's device in the model's float dtype (float64 or
    float16 input would otherwise fail in the first convolution, or silently change precision); a transformer's
    fixed input size checked."""
    validate_classifier(classifier)
    images = validate_images(images).to(classifier.device, dtype=model_dtype(classifier))
    size = (classifier.input_size, classifier.input_size)
    if classifier.prefix_tokens is not None and tuple(images.shape[-2:]) != size:
        raise InputError(
            f"model {classifier.name!r} is a transformer with a fixed input size: images must be "
            f"{size[0]} x {size[1]}, got {images.shape[-2]} x {images.shape[-1]} (resize them, e.g. "
            f"opticam_lib.images.load_image(path, size={size[0]}))"
        )
    return images


def prepare(classifier: Classifier, images: Tensor, targets: Targets) -> tuple[Tensor, Tensor]:
    """``prepare_images`` and one class per image (``validate_targets``)."""
    images = prepare_images(classifier, images)
    return images, validate_targets(targets, classifier, images)


def require_autograd(what: str) -> None:
    """Refuse to run a gradient-based ``what`` under ``torch.inference_mode()``, which no block inside can undo.

    (``torch.no_grad()`` is fine: the library turns gradients back on where it needs them.)
    """
    if torch.is_inference_mode_enabled():
        raise InputError(
            f"{what} needs gradients, but it was called inside torch.inference_mode(), where autograd is off for "
            "good: call it outside that block (torch.no_grad() is fine, the library turns gradients on itself)"
        )


def require_graph(output: Tensor, model: str, what: str) -> None:
    """Refuse a gradient-based ``what`` when ``output``, computed with autograd on from something that requires
    gradients, is not in the autograd graph: the network ``model`` cuts it inside its forward (a
    ``torch.no_grad()`` block or a ``.detach()``, as in a linear probe on a frozen backbone), so no gradient
    can reach the input or the layer."""
    if not output.requires_grad:
        raise InputError(
            f"{what} needs gradients through {model!r}, but its forward cuts the autograd graph (a torch.no_grad() "
            "block or a .detach() inside it, as in a linear probe on a frozen backbone): no gradient reaches the "
            "input or the layer. Use a gradient-free method (scorecam, ablationcam) or remove the cut"
        )


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has.

    Raises:
        InputError: a misspelled device ("gpu0"), one the library does not support ("meta"), an index that
            does not exist ("cpu:7", "cuda:3" on a machine with one GPU), or CUDA / MPS asked for where PyTorch
            sees none.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:1' or 'mps'") from e
    if dev.type not in ("cpu", "cuda", "mps"):  # meta, xpu, ...: PyTorch knows them, the library does not
        raise InputError(
            f"device {device!r} is not supported by the library: use 'cpu', 'cuda', 'cuda:1' or 'mps'"
        )
    if dev.type in ("cpu", "mps") and dev.index not in (None, 0):  # torch.device("cpu:7") is simply the CPU
        raise InputError(f"device {device!r}: there is one {dev.type.upper()} device, use '{dev.type}'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU here: use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(
            f"device {device!r} asked for, but PyTorch sees no MPS (Apple GPU) here: use device='cpu'"
        )
    return dev
