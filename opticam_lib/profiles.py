"""Two sets of defaults: ``laptop`` (the course runs on 2 CPU cores in minutes) and ``paper`` (sections 5.1, 5.3.2,
appendix A).

The active profile comes from the environment variable ``OPTICAM_PROFILE`` (``laptop`` when unset), or from
``use_profile(name)`` in a notebook. The notebooks read the model, Opti-CAM's iterations and learning rate,
the insertion/deletion steps and the batch size from here, so switching to the paper's settings is one line.
What the switch leaves as it is: notebooks 01 and 02 explain ``efficientnet_lite0`` in both profiles (their
walk-throughs name its layers) and 10 its small ViT; every notebook but 09 (whose randomisation test reads
``images``) explains the sample photos (under ``paper``, 05 runs insertion/deletion, Max-Sensitivity and ADCC
on all of them with Quantus's 10 noise draws, and selectivity at all ten exponents); 03, 04, 10 and 11 run on
CUDA where there is one (the whole notebook), the others on the CPU. The paper's
tables on ImageNet at scale are ``python -m opticam_lib reproduce``'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from opticam_lib.errors import InputError


@dataclass(frozen=True)
class Profile:
    """Settings that trade time for fidelity to the paper."""

    name: str
    model: str  # the classifier the notebooks load
    images: str  # "samples" (offline photos) or "imagenet-val:1000" (needs data_download)
    iterations: int  # Opti-CAM iterations (paper: 100)
    lr: float  # Opti-CAM learning rate (paper: 0.1)
    insertion_steps: int  # insertion/deletion steps (paper: 224 at 224 px)
    batch_size: int  # images per batch (paper's T column: 8)
    note: str


PROFILES: dict[str, Profile] = {
    "laptop": Profile(
        name="laptop",
        model="efficientnet_lite0",
        images="samples",
        iterations=100,  # the paper's: Opti-CAM is close to convergence on the sample photos by then (notebook 05)
        lr=0.1,
        insertion_steps=28,
        batch_size=8,
        note="offline default: runs every notebook in minutes on 2 CPU cores; not the paper's numbers",
    ),
    "paper": Profile(
        name="paper",
        model="resnet50",
        images="imagenet-val:1000",
        iterations=100,
        lr=0.1,
        insertion_steps=224,
        batch_size=8,
        note="the paper's model (section 5.1), iterations and learning rate (appendix A) and insertion/deletion steps "
        "(section 5.3.2); needs python -m data_download "
        "resnet50 (notebook 09 also the ImageNet images: python -m data_download imagenet-val --from ...); the "
        "notebooks keep the sample photos but 09: python -m opticam_lib reproduce runs the tables on ImageNet",
    ),
}

_active: str | None = None


def use_profile(name: str) -> Profile:
    """Make ``name`` the active profile for this process and return it."""
    global _active
    if name not in PROFILES:
        raise InputError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    _active = name
    return PROFILES[name]


def profile(**overrides: Any) -> Profile:
    """The active profile (``use_profile``, else ``$OPTICAM_PROFILE``, else ``laptop``), with overrides."""
    name = _active or os.environ.get("OPTICAM_PROFILE", "laptop")
    if name not in PROFILES:
        raise InputError(f"OPTICAM_PROFILE={name!r} is not a profile; choose one of: {', '.join(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]
