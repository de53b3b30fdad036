"""Table 2 of the paper: the transformer rows (ViT-B, DeiT-B), run with ``table2`` and laid out beside the
paper's numbers with ``format_table2``."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from opticam_lib.errors import InputError
from opticam_lib.inputs import Targets
from opticam_lib.methods.attention import raw_attention, rollout
from opticam_lib.models.classifier import Classifier

#: Table 2's rows, in the paper's order, as (the paper's name, method); TIBAV is ``methods/relevance.py`` (the CVPR
#: 2021 LRP variant, its default).
TABLE2_METHODS: tuple[tuple[str, str], ...] = (
    ("Fake-CAM", "fakecam"),
    ("Grad-CAM", "gradcam"),
    ("Grad-CAM++", "gradcampp"),
    ("Score-CAM", "scorecam"),
    ("XGrad-CAM", "xgradcam"),
    ("Layer-CAM", "layercam"),
    ("ExPerturbation", "experturbation"),
    ("RawAtt", "rawatt"),
    ("Rollout", "rollout"),
    ("TIBAV", "tibav"),
    ("HiRes-CAM", "hirescam"),
    ("LIME", "lime"),
    ("GradientShap", "gradientshap"),
    ("Opti-CAM", "opticam"),
)


#: the perturbation methods left out of ``table2`` unless named: ExPerturbation runs 800 forward and backward
#: passes per batch, LIME 1,000 forward passes per image and GradientShap 50 forward and backward passes per image
TABLE2_SLOW: tuple[str, ...] = ("experturbation", "lime", "gradientshap")


def table2(
    classifier: Classifier,
    images: Tensor,
    targets: Targets = None,
    methods: Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    keep_maps: bool = True,
    iterations: int = 100,
    lr: float = 0.1,
    progress: bool = False,
) -> list:
    """AD, AG, AI and T (seconds per batch of 8) of each method, named as in the paper's Table 2.

    Args:
        images: (N, 3, H, W) float in [0, 1]; targets: one class per image (the paper: the ground truth).
        methods: the paper's names (``"Grad-CAM"``, ``"RawAtt"``...) or the library's (``"gradcam"``,
            ``"rollout"``); default every row of ``TABLE2_METHODS`` but the slow ``TABLE2_SLOW``.
        iterations, lr: Opti-CAM's settings (the paper: 100 and 0.1).
        progress: print one line per method as it finishes.
    Returns:
        a list of ``opticam_lib.metrics.evaluation.Evaluation``, one per method, ``method`` set to the paper's name, maps
        (N, 1, H, W) kept when ``keep_maps``.
    """
    from opticam_lib.metrics.evaluation import evaluate

    known = {paper: lib for paper, lib in TABLE2_METHODS}
    known.update({lib: lib for _, lib in TABLE2_METHODS})
    names = {lib: paper for paper, lib in TABLE2_METHODS}
    default = [lib for _, lib in TABLE2_METHODS if lib not in TABLE2_SLOW]
    chosen = default if methods is None else list(methods)
    rows = []
    for m in chosen:
        if m not in known:
            raise InputError(
                f"unknown Table 2 method {m!r}; choose from: {', '.join(p for p, _ in TABLE2_METHODS)}"
            )
        lib = known[m]
        fn = {"rawatt": raw_attention, "rollout": rollout}.get(lib, lib)
        options: dict = {"iterations": iterations, "lr": lr} if lib == "opticam" else {}
        if lib in ("experturbation", "lime"):
            options["progress"] = False
        ev = evaluate(classifier, fn, images, targets, batch_size=batch_size, keep_maps=keep_maps, **options)
        ev.method = names[lib]
        if progress:
            print(f"{ev.method:<12} AD {ev.AD:5.1f}  AG {ev.AG:5.1f}  AI {ev.AI:5.1f}  T {ev.T:.3f} s")
        rows.append(ev)
    return rows


def format_table2(
    rows: Sequence, paper_models: Sequence[str] = ("vit_b_16", "deit_b_16"), ours: str = "ours"
) -> str:
    """The paper's Table 2 layout as text: our AD/AG/AI/T per method, then the paper's AD/AG/AI for each of
    ``paper_models`` (``-`` where the paper has no row for the method).

    Args:
        rows: ``Evaluation`` objects (``table2``'s) or dicts with method, AD, AG, AI and T.
    """
    from opticam_lib.paper.tables import paper_table

    if not rows:
        raise InputError("format_table2 needs at least one row")
    short = {"vit_b_16": "ViT-B", "deit_b_16": "DeiT-B"}
    papers = [(short.get(m, m), paper_table("2", m)) for m in paper_models]
    cols = ("AD", "AG", "AI")
    w = 7
    top = f"{'':<12}{ours:^{w * 4}}"
    head = f"{'METHOD':<12}" + "".join(f"{c:>{w}}" for c in ("AD↓", "AG↑", "AI↑", "T"))
    for name, _ in papers:
        top += f" |{'paper ' + name:^{w * 3}}"
        head += " |" + "".join(f"{c:>{w}}" for c in ("AD↓", "AG↑", "AI↑"))
    lines = [top, head]
    for r in rows:
        d = r.row() if hasattr(r, "row") else r
        line = (
            f"{d['method']:<12}"
            + "".join(f"{float(d[c]):>{w}.1f}" for c in cols)
            + f"{float(d['T']):>{w}.2f}"
        )
        for _, table in papers:
            vals = table.get(str(d["method"]), {})
            line += " |" + "".join(
                f"{'-':>{w}}" if vals.get(c) is None else f"{float(vals[c]):>{w}.1f}" for c in cols
            )
        lines.append(line)
    return "\n".join(lines)
