"""``Classifier``: a network with what saliency methods need to know about it (target layer, classes,
input size, linear head, token layout), the input normalisation inside the model, and ``wrap_classifier``
for your own network."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError
from opticam_lib.inputs import usable_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


#: torch's messages when an input is too small for a layer (pooling or convolution)
TOO_SMALL: tuple[str, ...] = (
    "Output size is too small",
    "Kernel size can't be greater than actual input size",
)


def _misfit(message: str, x: Tensor) -> str | None:
    """Why images ``x`` do not fit a network, from torch's (or timm's) error ``message``; None for another error."""
    size = f"images of {x.shape[-2]} x {x.shape[-1]} pixels"
    torch_says = message.splitlines()[0] if message else ""
    if any(sign in message for sign in TOO_SMALL):  # a pooling or convolution with nothing left to slide over
        return f"{size} are too small for this network (torch: {torch_says}); use larger images"
    channels = re.search(r"expected input\[.*\] to have (\d+) channels", message)
    if channels:
        return (
            f"the network's first layer takes {channels.group(1)}-channel images, the library gives RGB (3 "
            f"channels; torch: {torch_says}): wrap a module that converts them first (for grayscale, "
            "x.mean(dim=1, keepdim=True))"
        )
    if "mat1 and mat2 shapes cannot be multiplied" in message or "doesn't match model" in message:
        return (
            f"{size} do not fit this network, which has a layer of a fixed input size (torch: {torch_says}): "
            "give images of the size it was built for, and that size as wrap_classifier's input_size"
        )
    return None


class InputNormalized(nn.Module):
    """``net((x - mean) / std)``: a network that takes (N, 3, H, W) float in [0, 1].

    With ``mean=None`` the input goes to ``net`` unchanged (the paper's appendix H, Table A14).
    Layer names (``"layer4"``, ``"features.42"``) are relative to ``net``.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.net = net
        self.normalized = mean is not None
        m = torch.as_tensor(mean if mean is not None else (0.0, 0.0, 0.0), dtype=torch.float32).view(
            1, -1, 1, 1
        )
        s = torch.as_tensor(std if std is not None else (1.0, 1.0, 1.0), dtype=torch.float32).view(
            1, -1, 1, 1
        )
        self.register_buffer("mean", m)
        self.register_buffer("std", s)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) float in [0, 1] -> logits (N, C).

        Raises:
            InputError: the images do not fit the network (too small, another size than a fixed-size layer
                takes, or another number of channels than its first layer takes).
        """
        # the buffers follow the input (a float16 or CUDA network wrapped with float32 CPU ones)
        if self.normalized:
            x = (x - self.mean.to(x)) / self.std.to(x)
        try:
            return self.net(x)
        except (RuntimeError, AssertionError) as err:  # AssertionError: timm checks the input size by assert
            why = _misfit(str(err), x)
            if why is None:
                raise
            raise InputError(why) from None


@dataclass
class Classifier:
    """A classifier and what saliency methods need to know about it.

    Attributes:
        name: registry name (``"efficientnet_lite0"``) or a user's label.
        model: ``InputNormalized`` (eval mode when made by ``load_classifier``; ``wrap_classifier`` keeps your
            network's flag); input (N, 3, H, W) float in [0, 1], output logits (N, C).
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
        """C, the number of classes (the length of ``categories``)."""
        return len(self.categories)

    def to(self, device: str | torch.device) -> Classifier:
        """Move the model to ``device`` (in place) and return self.

        Raises:
            InputError: a device this machine does not have or PyTorch does not know (``inputs.usable_device``).
        """
        self.model.to(usable_device(device))
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
        if not isinstance(name, str):
            example = self.target_layer if isinstance(self.target_layer, str) else "layer4"
            raise InputError(
                f"layer must be a module name (str), e.g. {example!r}, got {type(name).__name__} {name!r}"
            )
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

    def to_grid(self, activations: Tensor, input_size: tuple[int, int] | None = None) -> Tensor:
        """Feature maps as (N, K, h, w).

        CNN activations (N, K, h, w) pass through. Transformer tokens (N, T, K) lose their ``prefix_tokens``
        leading tokens and the remaining T' = h*w tokens (h = w = sqrt(T')) become (N, K, h, w).

        Args:
            activations: the layer's output, (N, K, h, w) or tokens (N, T, K).
            input_size: (H, W) of the images the model was given (``hooks.capture`` passes it). With it, a
                channels-last output (N, h, w, K) is recognised by its grid: read as channels first, its "grid"
                is w x K, whose shape does not follow the input's, while h x w would. Without it, only the square
                case is recognised (as many "channels" as rows).

        Raises:
            InputError: a channels-last output, a 1 x 1 grid, tokens that do not form a square grid.
        """
        if self.prefix_tokens is None:
            if activations.dim() != 4:
                raise InputError(
                    f"layer output has shape {tuple(activations.shape)}; a CNN layer must give (N, K, h, w). "
                    "For a transformer, set prefix_tokens so tokens are reshaped to a grid."
                )
            if _looks_channels_last(tuple(activations.shape[1:]), input_size):
                size = "" if input_size is None else f" for {input_size[0]} x {input_size[1]} images"
                raise InputError(
                    f"layer output has shape {tuple(activations.shape)}{size}, which looks channels-last "
                    "(N, h, w, K), as in Swin or ConvNeXt blocks of timm: the library needs (N, K, h, w). Choose a "
                    "layer that outputs channels first (e.g. a norm or conv after a permute), or wrap the layer so "
                    "it permutes."
                )
            self._check_spatial(activations)
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
        grid = tokens.transpose(1, 2).reshape(n, k, side, side)
        self._check_spatial(grid)
        return grid

    def _check_spatial(self, grid: Tensor) -> None:
        """A 1 x 1 grid (or an empty one) carries no spatial information: its map would be a constant."""
        h, w = grid.shape[-2:]
        if h * w <= 1:
            where = (
                "a layer before the global pooling"
                if self.prefix_tokens is None
                else f"a token layer (check prefix_tokens={self.prefix_tokens})"
            )
            raise InputError(
                f"the layer gives a {h} x {w} grid of feature maps: no spatial information to explain (the input "
                f"is too small for this network, or the layer comes after pooling). Choose {where}."
            )

    def validate_logits(self, logits: object, what: str = "outputs") -> Tensor:
        """``logits`` as the model must give them: a (N, C) float tensor with C = ``num_classes``, finite.

        Raises:
            InputError: a tuple or dict (models with auxiliary outputs: wrap them to return the logits only),
                another shape or class count, or NaN / infinite values (a std of 0, NaN weights, ...), naming the
                images concerned. A silently wrong map would follow from any of these.
        """
        if not isinstance(logits, Tensor):
            raise InputError(
                f"model {self.name!r} returned a {type(logits).__name__}, not a tensor of logits (N, C): wrap a "
                "model with auxiliary outputs so that its forward returns the class logits only"
            )
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise InputError(
                f"model {self.name!r} returned {what} of shape {tuple(logits.shape)}; expected logits (N, "
                f"{self.num_classes}) for its {self.num_classes} categories"
            )
        finite = torch.isfinite(logits).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero()[:, 0].tolist()
            raise InputError(
                f"model {self.name!r} gave NaN or infinite {what} for image(s) {bad[:10]} of the batch: check the "
                "model (its weights, its input normalisation) before explaining it"
            )
        return logits

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Class probabilities (N, C) for images (N, 3, H, W) float in [0, 1] (checked, cast to the model's device
        and dtype), in eval mode."""
        from opticam_lib.hooks import eval_mode
        from opticam_lib.inputs import prepare_images

        images = prepare_images(self, images)
        with eval_mode(self.model):
            return torch.softmax(self.validate_logits(self.model(images)).float(), dim=1)

    def top(self, images: Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
        """The k most probable classes of each image: [(class id, name, probability), ...] per image (all the
        classes, most probable first, when the model has fewer than k)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        probs = self.predict(images)
        values, indices = probs.topk(min(k, self.num_classes), dim=1)
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

    The caller's network keeps its train/eval flags: every method and metric switches the model to eval mode for
    its own passes and restores the flags it found. Call ``net.eval()`` yourself before calling
    ``classifier.model`` directly.
    """
    if not isinstance(net, nn.Module):
        raise InputError(
            f"wrap_classifier needs a torch.nn.Module, got {type(net).__name__} (wrap a function in a Module "
            "whose forward calls it)"
        )
    if isinstance(net, torch.jit.ScriptModule):  # scripted or traced
        raise InputError(
            f"wrap_classifier got a TorchScript module ({type(net).__name__}): it cannot carry the forward hooks "
            "the methods read the target layer with; wrap the Python nn.Module it was scripted or traced from"
        )
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise InputError(
            f"input_size must be a positive integer (the side of the square input), got {input_size!r}"
        )
    if prefix_tokens is not None and (
        isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0
    ):
        raise InputError(
            "prefix_tokens must be None (a CNN) or the number of tokens before the patch tokens (a non-negative "
            f"int: 1 for a class token, 2 with a distillation token), got {prefix_tokens!r}"
        )
    if isinstance(categories, str) or (
        categories is not None and not all(isinstance(c, str) for c in categories)
    ):
        raise InputError(f"categories must be a list of class names (str), got {categories!r}")
    if categories is not None and num_classes is not None and len(categories) != num_classes:
        raise InputError(f"{len(categories)} categories given for num_classes={num_classes}")
    if categories is None:
        if num_classes is None:
            raise InputError("give categories (a list of class names) or num_classes")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
        categories = [f"class {i}" for i in range(num_classes)]
    if len(categories) < 2:
        raise InputError(
            f"a classifier needs at least 2 classes, got {len(categories)}: the methods and metrics read class "
            "probabilities from a softmax over the logits (for one logit, wrap a network that outputs the two "
            "logits (0, z))"
        )
    if (mean is None) != (std is None):
        raise InputError(
            f"give both mean and std (the input becomes (x - mean) / std inside the model), or neither; got "
            f"mean={mean!r}, std={std!r}"
        )
    for values, what in ((mean, "mean"), (std, "std")):
        if values is None:
            continue
        v = torch.as_tensor(values, dtype=torch.float64)
        if v.shape != (3,) or not torch.isfinite(v).all():
            raise InputError(f"{what} must be 3 finite numbers (one per RGB channel), got {values!r}")
        if what == "std" and (v <= 0).any():
            raise InputError(f"std must be positive (the input is divided by it), got {values!r}")
    clf = Classifier(
        name=name,
        model=InputNormalized(net, mean, std).train(
            net.training
        ),  # the caller's flag, not nn.Module's default
        target_layer=target_layer,
        categories=list(categories),
        input_size=input_size,
        linear_head=linear_head,
        prefix_tokens=prefix_tokens,
    )
    clf.layer(target_layer)
    if linear_head is not None:
        head = clf.layer(linear_head)
        if not isinstance(head, nn.Linear):
            raise InputError(f"linear_head {linear_head!r} is not an nn.Linear")
        if head.out_features != len(clf.categories):
            raise InputError(
                f"linear_head {linear_head!r} has {head.out_features} outputs but the classifier has "
                f"{len(clf.categories)} classes: CAM needs the final layer, from pooled channels to class scores"
            )
    return clf


def copy_of(classifier: Classifier, purpose: str) -> Classifier:
    """A deep copy of ``classifier`` (its model included), for ``purpose`` (a few words: "to fold its batch
    norms"); the caller's classifier is never touched.

    Raises:
        InputError: the model holds something that cannot be copied (a lock, a file handle, a C++ object).
    """
    try:
        return copy.deepcopy(classifier)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise InputError(
            f"cannot copy the model {classifier.name!r} {purpose} ({type(e).__name__}: {first}): it holds "
            "something deepcopy cannot copy; move it out of the module"
        ) from None


def _looks_channels_last(shape: tuple[int, int, int], input_size: tuple[int, int] | None) -> bool:
    """Whether a (K, h, w) layer output is more likely (h, w, K) read as channels first.

    A real grid keeps the input's aspect ratio within the rounding of strided layers: refused when the grid's
    ratio h / w is off the input's H / W by more than a factor of 2 while the channels-last reading (K x h as the
    grid) matches it within a factor of 1.5, or off by more than 1.25 while the channels-last reading matches
    within 1.1 (stage 0 of Swin-T and ConvNeXt-T at 224 px: 56 x 56 x 96, whose w / h is 1.7). Without
    ``input_size``: only a square grid read as h "channels" (K == h != w) is recognised. An output whose
    channels number about as many as its columns, (7, 7, 7) or (56, 56, 64), cannot be told apart and passes.
    """
    k, h, w = shape
    if input_size is None:
        return k == h and w != h
    height, width = input_size
    if min(k, h, w, height, width) < 1:
        return False
    aspect = height / width

    def off(rows: int, cols: int) -> float:  # >= 1: how many times the grid's ratio differs from the input's
        ratio = (rows / cols) / aspect
        return max(ratio, 1 / ratio)

    return (off(h, w) > 2 and off(k, h) <= 1.5) or (off(h, w) > 1.25 and off(k, h) <= 1.1)
