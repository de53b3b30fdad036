"""A controlled world where the truth is known: generated images, and a small CNN and a small ViT trained on them.

Saliency methods are hard to judge because nobody knows what a real classifier looks at. The paper argues
(section 5.4, Table 5) that classifiers use the context around the object, so bounding boxes are a poor ground
truth. Here the evidence is known by construction and measured on the trained models:

- every image has one **object** (class = shape and colour, e.g. "red disc") with its box and pixel mask, and a
  **context cue**: a striped patch in the background whose stripe orientation names a class. The cue agrees
  with the object's class in a chosen fraction of images (``context_agreement``, 0.9 by default). The object's
  contrast varies log-uniformly from nearly invisible to solid (``object_contrast``), so a model that uses the
  context gains where the object is faint; small **distractors** (the classes' shapes in the wrong colours)
  add clutter, and pixel noise and colour jitter blur the object's colour;
- ``generate(config, n, seed)`` renders a batch in vectorised torch, deterministic from the seed (thousands of
  images a second on a CPU); ``stream`` yields batches from ``(seed, index)``: nothing is stored;
- a batch re-renders itself without its context (``object_only``), without its object (``context_only``), with
  another class's context (``swapped_context``) or with any context (``with_context``), pixel noise unchanged;
- ``evidence(classifier)`` measures how much a trained model relies on the object and on the context, and
  ``map_mass(maps, batch)`` says which fraction of a saliency map lies on the object, on the context and
  elsewhere, so a map can be compared with what the model truly uses, not only with the box;
- three trained models, weights in ``opticam_lib/data`` (float16): ``world_cnn`` (ends in global average
  pooling and one linear layer, so CAM applies exactly), ``world_vit`` (timm ViT, class token, 8x8 patches) and
  ``world_cnn_permuted`` (the CNN trained on randomly permuted labels of a fixed training set, for the sanity
  checks of appendix G). ``load_classifier("world_cnn")`` loads them.

Reproduce the weights (a few minutes on 2 CPU cores each). They are the course's shipped files, so writing them
needs ``--overwrite-shipped`` (it replaces ``opticam_lib/data/world_*.pt`` and their entries in
``world_report.json``, the numbers the notebooks and the README quote); without it a run writes only where ``--out``
says, its report beside it::

    python -m opticam_lib.world train --arch cnn --overwrite-shipped
    python -m opticam_lib.world train --arch vit --overwrite-shipped
    python -m opticam_lib.world train --arch cnn --permuted-labels --overwrite-shipped
    python -m opticam_lib.world train --arch cnn --out runs/my_cnn.pt    # a model of your own
    python -m opticam_lib.world speed --no-report   # generator speed (--overwrite-shipped: into the report)
    python -m opticam_lib.world evidence --model world_cnn

Each training run writes its numbers (test accuracy with agreeing and swapped context, the evidence, training
time, steps, seed, config) into its report: ``world_report.json`` next to the weights (for the shipped models
``opticam_lib/data/world_report.json``). Bad settings get one ``error:`` line (exit status 2), other failures
exit with 1; ``load_classifier("world_cnn")`` refuses a checkpoint of another architecture, label setting or size.

The sub-package: ``scenes`` (the generator), ``reliance`` (what a model uses, where a map's mass lies),
``networks`` (the CNN, the ViT, checkpoints, the loader the model registry names), ``training`` (train and
report), ``__main__`` (the command line above). Importing it reads no file; weights are read when a model is
loaded, timm is imported when a ViT is built and tqdm when a model is trained.
"""

from opticam_lib.world.networks import (
    MODELS,
    WorldCNN,
    build_network,
    build_vit,
    classifier_from_checkpoint,
    load_checkpoint,
    make_classifier,
    weights_file,
)
from opticam_lib.world.reliance import MASS_PARTS, Evidence, MapMass, evidence, map_mass
from opticam_lib.world.scenes import (
    COLOURS,
    CONDITIONS,
    PALETTE,
    SHAPES,
    WorldBatch,
    WorldConfig,
    batch_at,
    generate,
    generator_speed,
    render,
    shape_masks,
    stream,
)
from opticam_lib.world.training import TrainResult, read_report, train

__all__ = [
    "COLOURS",
    "CONDITIONS",
    "MASS_PARTS",
    "MODELS",
    "PALETTE",
    "SHAPES",
    "Evidence",
    "MapMass",
    "TrainResult",
    "WorldBatch",
    "WorldCNN",
    "WorldConfig",
    "batch_at",
    "build_network",
    "build_vit",
    "classifier_from_checkpoint",
    "evidence",
    "generate",
    "generator_speed",
    "load_checkpoint",
    "make_classifier",
    "map_mass",
    "read_report",
    "render",
    "shape_masks",
    "stream",
    "train",
    "weights_file",
]

# The modules' names until 2026-11-29, when each was hidden by the function of the same name that this package
# re-exports: kept importable so that a saved notebook's ``from opticam_lib.world.evidence import ...`` still works.
import sys as _sys

from opticam_lib.world import reliance

for _old, _module in {"evidence": reliance}.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _module)
