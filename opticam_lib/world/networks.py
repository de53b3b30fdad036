"""The world's networks: a small CNN (GAP + one linear layer, so CAM applies) and a tiny timm ViT, their
checkpoints (``torch.load(weights_only=True)``) and the loader that the model registry names
(``load_classifier("world_cnn")``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from opticam_lib.errors import InputError, MissingWeightsError, first_line
from opticam_lib.models.classifier import Classifier, InputNormalized
from opticam_lib.world.scenes import WorldConfig

if TYPE_CHECKING:  # annotations only: timm is imported where it is used
    from timm.models.vision_transformer import VisionTransformer

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


class WorldCNN(nn.Module):
    """Four conv blocks (the first with stride 2, two max-pools), global average pooling, one linear layer.

    64 x 64 input -> ``features.3`` output (N, 2w, 8, 8) -> mean over space -> ``fc``. CAM applies exactly.
    """

    def __init__(self, num_classes: int = 4, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int = 1, pool: bool = False) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        w = width
        self.features = nn.Sequential(
            block(3, w // 2, stride=2),
            block(w // 2, w, pool=True),
            block(w, 2 * w, pool=True),
            block(2 * w, 2 * w),
        )
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) float, the image as ``InputNormalized`` passes it ((x - mean) / std, or [0, 1] without
        normalisation) -> logits (N, num_classes)."""
        return self.fc(self.features(x).mean(dim=(2, 3)))


def build_vit(
    num_classes: int = 4, size: int = 64, dim: int = 64, depth: int = 4, heads: int = 4, patch: int = 8
) -> VisionTransformer:
    """A tiny timm ``VisionTransformer`` with a class token, fused attention off (attention probabilities are
    materialised, so rollout and attention hooks see them)."""
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=size,
        patch_size=patch,
        num_classes=num_classes,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        mlp_ratio=2.0,
        class_token=True,
        global_pool="token",
    )
    for blk in net.blocks:
        blk.attn.fused_attn = False
    return net


def build_network(arch: str, num_classes: int, size: int, **kwargs: Any) -> nn.Module:
    """``"cnn"`` -> ``WorldCNN``; ``"vit"`` -> ``build_vit`` (``size``: input side in pixels, ViT only);
    ``kwargs`` go to that constructor."""
    if arch == "cnn":
        return WorldCNN(num_classes, **kwargs)
    if arch == "vit":
        return build_vit(num_classes, size, **kwargs)
    raise InputError(f"unknown arch {arch!r}; choose cnn or vit")


def _target_layer(arch: str, net: nn.Module) -> str:
    if arch == "cnn":
        return f"features.{len(net.features) - 1}"
    return f"blocks.{len(net.blocks) - 1}.norm1"


def make_classifier(
    arch: str,
    net: nn.Module,
    config: WorldConfig,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    name: str = "world",
    extra: dict | None = None,
) -> Classifier:
    """Wrap a world network as a ``Classifier`` (normalisation inside, class names, target layer, head)."""
    clf = Classifier(
        name=name,
        model=InputNormalized(net, mean, std).eval(),
        target_layer=_target_layer(arch, net),
        categories=config.categories,
        input_size=config.size,
        linear_head="fc" if arch == "cnn" else None,
        prefix_tokens=None if arch == "cnn" else 1,
        extra={"world_config": config, "arch": arch, **(extra or {})},
    )
    return clf


#: the registered world models: what each name's checkpoint must hold (``load_world_model`` checks it)
MODELS: dict[str, dict] = {
    "world_cnn": {"arch": "cnn", "permuted_labels": False, "size": 64},
    "world_vit": {"arch": "vit", "permuted_labels": False, "size": 64},
    "world_cnn_permuted": {"arch": "cnn", "permuted_labels": True, "size": 64},
}


def weights_file(name: str) -> Path:
    """``opticam_lib/data/<name>.pt``."""
    return DATA_DIR / f"{name}.pt"


def _train_command(name: str) -> str:
    spec = MODELS[name]
    return (
        f"python -m opticam_lib.world train --arch {spec['arch']}"
        + (" --permuted-labels" if spec["permuted_labels"] else "")
        + " --overwrite-shipped"
    )


def checkpoint_mismatch(name: str, meta: dict) -> str | None:
    """How a checkpoint's ``meta`` differs from what the registered world model ``name`` is (its ``arch``, whether
    its labels were permuted, its input size), or None when it matches (or ``name`` is not registered)."""
    spec = MODELS.get(name)
    if spec is None:
        return None
    problems = []
    if meta.get("arch") != spec["arch"]:
        problems.append(f"arch {meta.get('arch')!r} instead of {spec['arch']!r}")
    if bool(meta.get("permuted_labels", False)) != spec["permuted_labels"]:
        problems.append(
            "trained on permuted labels"
            if spec["permuted_labels"] is False
            else "not trained on permuted labels"
        )
    size = (meta.get("config") or {}).get("size") if isinstance(meta.get("config"), dict) else None
    if size is not None and spec.get("size") is not None and size != spec["size"]:
        problems.append(f"{size} px inputs instead of {spec['size']} px")
    return "; ".join(problems) or None


def load_checkpoint(path: str | Path) -> dict:
    """A world checkpoint: ``{"state_dict": ..., "meta": {...}}`` (``torch.load(weights_only=True)``).

    Raises:
        MissingWeightsError: the file cannot be read (truncated or corrupted), naming it and how to remake it.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "meta" not in checkpoint:
            raise ValueError("no state_dict and meta in it")
    except Exception as e:  # a truncated file: say which, not the unpickler's internals
        remake = _train_command(path.stem) if path.stem in MODELS else "python -m opticam_lib.world train ..."
        first = first_line(e)
        raise MissingWeightsError(
            f"{path} cannot be read as a world checkpoint ({type(e).__name__}: {first}); it is damaged or "
            f"incomplete. Restore it (git checkout -- {path.name} in opticam_lib/data/) or train it again with: "
            f"{remake}"
        ) from None
    return checkpoint


def classifier_from_checkpoint(
    checkpoint: dict, name: str = "world", normalize: bool = True, pretrained: bool = True
) -> Classifier:
    """Build the network a checkpoint describes; load its weights (upcast to float32) when ``pretrained``."""
    meta = checkpoint["meta"]
    config = WorldConfig.from_dict(meta["config"])
    with torch.random.fork_rng(devices=[]):  # building draws random weights: leave the caller's RNG alone
        net = build_network(meta["arch"], config.num_classes, config.size, **meta.get("arch_kwargs", {}))
    if pretrained:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
        )
    extra = {k: meta[k] for k in ("seed", "steps", "permuted_labels", "arch_kwargs") if k in meta}
    return make_classifier(
        meta["arch"],
        net,
        config,
        meta["mean"] if normalize else None,
        meta["std"] if normalize else None,
        name=name,
        extra=extra,
    )


def load_world_model(name: str, normalize: bool = True, pretrained: bool = True) -> Classifier:
    """The registry's loader of ``world_cnn``, ``world_vit`` and ``world_cnn_permuted`` (weights shipped in
    ``opticam_lib/data``); random weights of the same architecture when ``pretrained`` is False."""
    if name not in MODELS:
        raise InputError(f"unknown world model {name!r}; known: {', '.join(MODELS)}")
    path = weights_file(name)
    if not path.is_file():
        if pretrained:
            raise MissingWeightsError(f"{path} is missing; train it with: {_train_command(name)}")
        spec = MODELS[name]
        config = WorldConfig()
        net = build_network(spec["arch"], config.num_classes, config.size)
        return make_classifier(
            spec["arch"],
            net,
            config,
            (0.5,) * 3 if normalize else None,
            (0.25,) * 3 if normalize else None,
            name=name,
        )
    checkpoint = load_checkpoint(path)
    meta = checkpoint["meta"] if isinstance(checkpoint["meta"], dict) else {}
    mismatch = checkpoint_mismatch(name, meta)
    if mismatch:
        raise InputError(
            f"{path} is not a {name} checkpoint ({mismatch}); restore it (git checkout -- {path.name} in "
            f"opticam_lib/data/) or train it again with: {_train_command(name)}"
        )
    return classifier_from_checkpoint(checkpoint, name, normalize, pretrained)
