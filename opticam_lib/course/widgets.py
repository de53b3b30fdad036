"""ipywidgets explorers. They only wire controls to library functions (``explore_opticam`` and
``plots.opticam_panel``), so everything they show can be computed and tested without a browser.

Every control is a standard ipywidget (reachable with Tab, changed with the arrow keys) with a
readable description; figures use large fonts for projectors.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure

from opticam_lib.course.ablations import candidate_layers
from opticam_lib.course.figures import opticam_panel
from opticam_lib.errors import InputError
from opticam_lib.inputs import validate_choice, validate_positive_int, validate_targets
from opticam_lib.methods.maps import NORMALIZATIONS
from opticam_lib.methods.opti_cam import DEFAULT_LR, OBJECTIVES, OptiCAMResult, optimize
from opticam_lib.metrics.classification import class_probability
from opticam_lib.models.classifier import Classifier

if TYPE_CHECKING:  # only for the annotation: any object with .images, .labels and .names will do
    import ipywidgets

    from opticam_lib.images import ImageSet


class _Superseded(Exception):
    """Raised inside a running optimisation when a newer setting of the explorer arrives."""


@dataclass
class Exploration:
    """One run of the explorer: the result and the figure that shows it."""

    result: OptiCAMResult
    figure: Figure
    p: float
    o: float


def show_figure(out: ipywidgets.Output, fig: Figure) -> None:
    """Make ``fig`` (as a PNG) the only thing ``out`` shows, in one update of the widget's synced ``outputs``.

    Not ``with out: display(fig)``: that routes a display message through the Output widget, and nbclient (which
    runs notebooks for ``jupyter nbconvert --execute`` and for the course's grader) answers such a message on the
    kernel's shell channel while it is waiting there for the cell's reply; the cell then hangs until nbclient's
    timeout, forever without one (jupyter/nbclient#312). Setting the state sends nothing back."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    out.outputs = (
        {"output_type": "display_data", "data": {"image/png": png, "text/plain": repr(fig)}, "metadata": {}},
    )


def show_result(out: ipywidgets.Output, shown: object) -> None:
    """Make ``shown`` the only thing ``out`` shows, as ``show_figure`` does: a matplotlib figure as a PNG, anything
    else in every format IPython's display would give it (images, HTML, text), without entering the widget."""
    if isinstance(shown, Figure):
        show_figure(out, shown)
        return
    from IPython.core.formatters import format_display_data

    data, metadata = format_display_data(shown)
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def clear_figure(out: ipywidgets.Output) -> None:
    """Empty an ipywidgets ``Output`` (after an error: the figure below is not the new setting's) by emptying its
    synced ``outputs``: in a kernel and outside one, and without ``clear_output``, which routes a message through
    the widget as ``with out: display(...)`` does (see ``show_figure``)."""
    out.outputs = ()


def explore_opticam(
    classifier: Classifier,
    image: torch.Tensor,
    target: int,
    *,
    layer: str | None = None,
    objective: str = "mask",
    normalization: str = "range",
    lr: float | None = 0.1,
    iterations: int = 30,
    callback: Callable[[int, OptiCAMResult], None] | None = None,
    progress: bool = False,
    input_normalization: bool = True,
    optimizer: str = "adam",
) -> Exploration:
    """Run Opti-CAM on one image (3, H, W) in [0, 1] for class ``target`` and draw ``plots.opticam_panel``.

    The explorer widget calls exactly this; notebooks call it once first for a static figure.
    ``input_normalization=False`` feeds the network raw [0, 1] pixels, for the map and for p and o
    (the paper's appendix H, ``ablations.without_input_normalization``). ``optimizer="rprop"`` (iRprop+) reaches
    the paper's quality in fewer iterations (notebook 11); ``lr=None`` takes the optimizer's default.
    ``callback(step, partial_result)`` goes to ``optimize`` (called every ``iterations // 20`` steps).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(
            f"image must be one image (3, H, W) float in [0, 1], got {shape}"
            + (
                "; from a batch, pass images[i]"
                if isinstance(image, torch.Tensor) and image.dim() == 4
                else ""
            )
        )
    if not input_normalization:
        from opticam_lib.course.ablations import without_input_normalization

        classifier = without_input_normalization(classifier)
    images = image[None].to(classifier.device)
    t = validate_targets([target], classifier, images)
    result = optimize(
        classifier,
        images,
        t,
        layer=layer,
        objective=objective,
        normalization=normalization,
        optimizer=optimizer,
        lr=lr,
        iterations=iterations,
        callback=callback,
        callback_every=max(1, iterations // 20),
        progress=progress,
    )
    p = float(class_probability(classifier, images, t)[0])
    o = float(class_probability(classifier, images * result.maps, t)[0])
    title = f"class {target}: {classifier.categories[target]}"
    fig = opticam_panel(image, result.maps[0], result.history[0], title, (p, o), objective=objective)
    return Exploration(result, fig, p, o)


def opticam_explorer(
    classifier: Classifier,
    samples: ImageSet,
    layers: Sequence[str] | None = None,
    iterations: int = 30,
    optimizer: str = "adam",
) -> ipywidgets.VBox:
    """An ipywidgets explorer: image, target class (ground truth, the top 5, the least probable), layer,
    objective, normalisation, optimiser (Adam, the paper's, or iRprop+), learning rate (iRprop+: its first step),
    iterations, and input normalisation on or off.

    Any change re-runs the optimisation (with a progress bar) and redraws the panel. The first run happens before
    this returns; later runs happen in a background thread, so the notebook stays responsive: a change made while
    one runs stops it at its next progress tick, and only the latest setting is drawn. The explorer runs on a copy
    of ``classifier``'s model taken when it is built (the caller's model is never hooked from the background; a
    change to its weights made later shows in a new explorer). Returns the widget box;
    ``box.controls`` maps names (``"image"``, ``"target"``, ``"layer"``, ``"objective"``, ``"normalization"``,
    ``"optimizer"``, ``"lr"``, ``"iterations"``, ``"input_normalization"``, ``"progress"``, ``"status"``,
    ``"output"``) to the widgets, and ``box.wait()`` blocks until the latest change is drawn (for code that sets
    ``box.controls[...].value`` and then reads the figure or the status).
    """
    import ipywidgets as w

    iterations = validate_positive_int(iterations, "iterations")
    if len(samples.names) == 0:
        raise InputError("samples holds no image: give at least one (e.g. opticam_lib.images.load_samples())")
    labels = [int(v) for v in samples.labels]
    wrong = [v for v in labels if not 0 <= v < classifier.num_classes]
    if wrong:
        raise InputError(
            f"samples has label {wrong[0]}, but {classifier.name!r} has classes 0..{classifier.num_classes - 1}: "
            "give images of the model's own classes"
        )
    style = {"description_width": "initial"}
    wide = w.Layout(width="420px")
    image = w.Dropdown(  # options are (label, value) pairs: the name is shown, the index is the value
        options=[(str(name), i) for i, name in enumerate(samples.names)],
        value=0,
        description="image",
        style=style,
        layout=wide,
    )
    target = w.Dropdown(description="target class", style=style, layout=wide)
    layer = w.Dropdown(
        options=list(layers or candidate_layers(classifier)), description="layer", style=style, layout=wide
    )
    objective = w.Dropdown(options=list(OBJECTIVES), value="mask", description="objective", style=style)
    normalization = w.Dropdown(
        options=list(NORMALIZATIONS), value="range", description="normalisation", style=style
    )
    validate_choice(optimizer, "optimizer", ("adam", "rprop"))
    solver = w.Dropdown(
        options=[("Adam (the paper's)", "adam"), ("iRprop+ (faster)", "rprop")],
        value=optimizer,
        description="optimiser",
        style=style,
    )
    lr = w.FloatLogSlider(
        value=DEFAULT_LR[optimizer],
        base=10,
        min=-3,
        max=0,
        step=0.25,
        description="learning rate",
        continuous_update=False,
        style=style,
        layout=wide,
    )
    raw = w.Checkbox(
        value=True,
        description="input normalisation (off: appendix H, Table A14)",
        style=style,
        layout=wide,
        indent=False,
    )
    its = w.IntSlider(
        value=iterations,
        min=1,
        max=max(200, 2 * iterations),  # room above the paper's 100 (notebook 05 goes to 150)
        description="iterations",
        continuous_update=False,
        style=style,
        layout=wide,
    )
    bar = w.IntProgress(value=0, min=0, max=iterations, description="optimising", style=style)
    status = w.HTML()
    out = w.Output()

    busy = {"on": False}
    # Runs after a change go to a worker thread, so the kernel keeps reading widget messages while one runs: a
    # change made meanwhile bumps ``generation``, the running optimisation stops at its next progress tick, and only
    # the latest setting is run and drawn (arrow-keying through the image list runs once, not once per image).
    # The runs use a copy of the model taken now: Opti-CAM hooks and freezes the model it runs on, and the
    # notebook's next cells may use the caller's model while a run goes on. ``model_lock`` keeps the copy to one
    # user at a time. A model that cannot be copied runs in the caller's thread, as a cell would.
    try:
        classifier = replace(classifier, model=copy.deepcopy(classifier.model))
        background = True
    except Exception as err:  # e.g. a module holding an uncopyable object
        warnings.warn(
            f"the explorer could not copy the model ({type(err).__name__}: {err}); it runs each change before "
            "the notebook takes the next one",
            RuntimeWarning,
            stacklevel=2,
        )
        background = False
    state: dict = {"generation": 0, "pending": None, "worker": None}
    state_lock = threading.Lock()
    model_lock = threading.Lock()

    def set_targets(*_):
        i = image.value
        gt = int(samples.labels[i])
        with model_lock:
            top = classifier.top(samples.images[i : i + 1], 5)[0]
            probs = classifier.predict(samples.images[i : i + 1])[0]
        opts = [(f"{gt}: {classifier.categories[gt]} (ground truth)", gt)]
        opts += [(f"{c}: {name} (p={p:.2f})", c) for c, name, p in top if c != gt]
        least = int(probs.argmin())
        if least not in [v for _, v in opts]:
            opts.append(
                (
                    f"{least}: {classifier.categories[least]} (least probable, p={float(probs[least]):.1e})",
                    least,
                )
            )
        busy["on"] = True  # changing the options must not trigger a run of its own
        try:
            target.options = opts
            target.value = gt
        finally:
            busy["on"] = False

    def setting() -> dict:
        """The controls' values now, read when the change arrives (the worker never reads the controls)."""
        return {
            "index": image.value,
            "target": int(target.value),
            "layer": layer.value,
            "objective": objective.value,
            "normalization": normalization.value,
            "lr": lr.value,
            "iterations": its.value,
            "input_normalization": raw.value,
            "optimizer": solver.value,
        }

    def stale(generation: int) -> bool:
        return state["generation"] != generation

    def work(generation: int, chosen: dict) -> None:
        """Run one setting and draw it, unless a newer change arrives first (then stop and draw nothing)."""
        bar.max = chosen["iterations"]
        bar.value = 0

        def tick(step, _partial):
            if stale(generation):
                raise _Superseded
            bar.value = step

        try:
            with model_lock:
                if stale(generation):
                    return
                ex = explore_opticam(
                    classifier,
                    samples.images[chosen["index"]],
                    chosen["target"],
                    layer=chosen["layer"],
                    objective=chosen["objective"],
                    normalization=chosen["normalization"],
                    lr=chosen["lr"],
                    iterations=chosen["iterations"],
                    callback=tick,
                    input_normalization=chosen["input_normalization"],
                    optimizer=chosen["optimizer"],
                )
        except _Superseded:
            return
        except Exception as err:  # show it where the user looks, instead of in the kernel's log
            if not stale(generation):
                status.value = f"<span style='color:#b00'>error: {html.escape(str(err))}</span>"
                clear_figure(out)  # the previous figure is not this setting's
            return
        if stale(generation):
            return
        bar.value = bar.max
        status.value = (
            f"p = {ex.p:.3f} → o = {ex.o:.3f} after masking; "
            f"{int(ex.result.iterations[0])} iterations in {ex.result.seconds:.1f} s"
        )
        show_figure(out, ex.figure)

    def worker() -> None:
        while True:
            with state_lock:
                job = state["pending"]
                state["pending"] = None
                if job is None:
                    state["worker"] = None
                    return
            work(*job)

    def supersede() -> int:
        """A change arrived: whatever runs now is stale. Returns the new generation."""
        with state_lock:
            state["generation"] += 1
            state["pending"] = None
            return state["generation"]

    def run(*_):
        if busy["on"]:
            return
        generation = supersede()
        status.value = "<i>running…</i>"
        if not background:
            work(generation, setting())
            return
        with state_lock:
            if stale(generation):
                return  # a newer change arrived meanwhile (another thread of the caller's)
            state["pending"] = (generation, setting())
            if state["worker"] is None:
                state["worker"] = threading.Thread(target=worker, name="opticam-explorer", daemon=True)
                state["worker"].start()

    def wait(timeout: float | None = None) -> bool:
        """Block until the latest setting has been run and drawn (or ``timeout`` seconds pass); True when idle.
        For code that drives the explorer through ``box.controls`` and then reads its figure or status."""
        with state_lock:
            thread = state["worker"]
        if thread is not None:
            thread.join(timeout)
        with state_lock:
            return state["worker"] is None

    def set_solver(change):
        busy["on"] = True  # one run for the change of optimiser, with its own default step
        try:
            lr.value = DEFAULT_LR[change["new"]]
        finally:
            busy["on"] = False
        run()

    def change_image(_change):
        supersede()  # stop the running optimisation now: new targets need the model
        try:
            set_targets()
        except Exception as err:  # e.g. a NaN image: say which, and do not leave the previous image's figure
            status.value = f"<span style='color:#b00'>error: {html.escape(f'{image.label}: {err}')}</span>"
            clear_figure(out)
            return
        run()

    set_targets()
    image.observe(change_image, names="value")
    solver.observe(set_solver, names="value")
    for control in (target, layer, objective, normalization, lr, its, raw):
        control.observe(run, names="value")
    # the first run in the caller's thread: the cell shows its figure when it ends
    work(supersede(), setting())
    controls = w.VBox(
        [
            image,
            target,
            layer,
            w.HBox([objective, normalization]),
            solver,
            lr,
            its,
            raw,
            w.HBox([bar, status]),
        ]
    )
    box = w.VBox([controls, out])
    # named handles on the controls, for tests and for users who want to drive the explorer from code
    box.controls = {
        "image": image,
        "target": target,
        "layer": layer,
        "objective": objective,
        "normalization": normalization,
        "optimizer": solver,
        "lr": lr,
        "iterations": its,
        "input_normalization": raw,
        "progress": bar,
        "status": status,
        "output": out,
    }
    box.wait = wait
    return box
