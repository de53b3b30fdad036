"""End to end: every notebook with widgets, in a real JupyterLab, driven by a real (headless) Chromium.

nbval runs the notebooks in a kernel but never renders a widget: a broken widget front end (an ipywidgets /
JupyterLab version mismatch, a missing lab extension) would pass every other test and fail every student.
For each widget notebook (found by ``widget_cells``: a committed output showing a widget with a control in it,
or a call of a ``*_explorer(...)`` / ``*_picker(...)`` function), this test

1. writes a copy of the notebook without outputs to a temporary folder: the cells the widgets need (``SPECS``;
   by default every code cell up to the last widget cell) and the widget cells themselves, the real code;
2. starts JupyterLab on 127.0.0.1 with a random free port and a random token, in its own process group and
   with its own config, runtime, settings and workspace folders (the user's Jupyter set-up is neither read
   nor changed);
3. opens the copy in headless Chromium (Playwright for Python driving Debian's /usr/bin/chromium: no browser
   download), runs its cells and waits for the widgets to render, in a 1280x720 window (a projector);
4. checks that every control's description is fully visible (not cut off) and inside the window;
5. moves the keyboard focus to a slider with Tab and changes it with an arrow key, changes a dropdown (and
   uploads a photo where there is a file-upload control), and checks each time that the figure in the
   widget's output changed (the image the browser shows), that the control's value changed, that no error
   output, no "Error displaying widget", no "Failed to load model class" and no stuck "Loading widget..."
   appears, and that the saved notebook holds no error output;
6. saves screenshots to ``artifacts/browser/<notebook>/`` (gitignored), stops the server (also on failure)
   and checks that no process it started (server, kernel, browser) is left.

Needs ``pip install playwright`` (in the ``dev`` extras; its driver ships inside the wheel, no browser is
downloaded) and Debian's Chromium (``sudo apt-get install --no-install-recommends chromium``; ``.ci/run``
and ``scripts/setup.sh`` install it), or another Chromium binary named by ``OPTICAM_CHROMIUM``. When either is
missing the test FAILS and says how to install it; set ``OPTICAM_SKIP_BROWSER_TESTS=1`` to skip it on purpose.

``test_offline_site_in_chromium`` builds the offline site (two notebooks, the glossary and the guide), opens
``index.html`` over ``file://`` and follows every link: every page and fragment resolves, every image loads, the
equations are MathML the browser lays out, no raw ``$$`` is left, and nothing is fetched from the network.

To check a new widget notebook: nothing to do if the defaults fit (first slider, first dropdown, all cells up
to the widget); otherwise add an entry to ``SPECS``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = Path(os.environ.get("OPTICAM_BROWSER_ARTIFACTS", ROOT / "artifacts" / "browser"))
CHROMIUM = os.environ.get("OPTICAM_CHROMIUM", "/usr/bin/chromium")
SKIP_ENV = "OPTICAM_SKIP_BROWSER_TESTS"
CHROMIUM_ARGS = [  # headless on a machine with no screen, no GPU and no network beyond localhost
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WINDOW = {"width": 1280, "height": 720}  # a projector's resolution
BROKEN_WIDGET_TEXTS = (  # what ipywidgets 8's JupyterLab manager shows in place of a widget it cannot draw
    "Error displaying widget",
    "Failed to load model class",
    "Loading widget...",
    "Click to show javascript error",
)
SERVER_START_S = 120
RUN_CELLS_S = 420  # the copy's cells, kernel start included, on 2 loaded cores
WIDGET_UPDATE_S = 180  # one re-run of the explorer after a change

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------------------------
# Which notebooks have widgets, and which cells show them
# --------------------------------------------------------------------------------------------------------------

# a top-level call such as `opticam_explorer(...)`, `box = lib.widgets.image_picker(...)`, `display(x_explorer(...))`
WIDGET_CALL = re.compile(r"^(?:[\w, ]+=\s*)?(?:display\()?(?:[\w.]+\.)?\w+_(?:explorer|picker)\s*\(", re.M)
# a notebook's self-check quiz, `quiz("05")` (opticam_lib.course.quiz): radio buttons, no figure to redraw
QUIZ_CALL = re.compile(r'^quiz\("\d\d"\)', re.M)


def _widget_state(nb: dict) -> dict:
    return nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})


def _has_control(model_id: str, state: dict, seen: set[str] | None = None) -> bool:
    """Whether the widget ``model_id`` or a widget inside it takes user input (has a ``disabled`` trait:
    sliders, dropdowns, buttons, uploads; not labels, HTML, progress bars or boxes)."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in state.get("state", {}):
        return False
    seen.add(model_id)
    s = state["state"][model_id].get("state", {})
    if "disabled" in s:
        return True
    children = s.get("children", [])
    return any(
        _has_control(c.removeprefix("IPY_MODEL_"), state, seen) for c in children if isinstance(c, str)
    )


def widget_cells(nb: dict) -> list[int]:
    """Indices of the code cells that display an interactive widget.

    A cell counts if a committed output shows a widget containing a control (tqdm's progress bars do not
    count), or if its source calls a ``*_explorer(...)`` or ``*_picker(...)`` function.
    """
    state = _widget_state(nb)
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        # the self-check quizzes: one of them is answered by test_quiz_in_jupyterlab
        if QUIZ_CALL.search(source):
            continue
        views = [
            o["data"]["application/vnd.jupyter.widget-view+json"].get("model_id", "")
            for o in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        if any(_has_control(v, state) for v in views) or WIDGET_CALL.search(source):
            found.append(i)
    return found


def widget_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The notebooks ``folder/NN_*.ipynb`` that have at least one widget cell."""
    return [p for p in sorted(folder.glob("[0-9][0-9]_*.ipynb")) if widget_cells(json.loads(p.read_text()))]


# The course's notebooks start with the same cells: imports, `P = profile()`, then the model and the photos.
SETUP = r"^\s*(import|from)\s|\bprofile\(\)|load_classifier\(|load_samples\("


@dataclass
class Spec:
    """How to exercise one notebook's widgets.

    setup: a regular expression: the copy runs the notebook's *leading* code cells that match it (up to the
        first one that does not), then the widget cells. None: every code cell up to the last widget cell.
        The default, ``SETUP``, fits the course's first cells; a widget that needs a variable computed later
        shows a NameError, which fails the test: then give a wider pattern or None.
    slider, dropdown: the description of the slider to change with the keyboard and of the dropdown to
        change (None: the first one in the widget). A widget without one skips that step.
    Every change must redraw the figure (an image) in the widget's output.
    """

    setup: str | None = SETUP
    slider: str | None = None
    dropdown: str | None = None


SPECS: dict[str, Spec] = {
    # the Opti-CAM explorer: imports, profile, model and photos, then the explorer; not the worked examples in
    # between (most of the notebook's minute, and nbval runs them)
    "03_opti_cam": Spec(slider="iterations", dropdown="objective"),
    "07_ablations": Spec(slider="iterations", dropdown="objective"),  # the same explorer, more settings
    # the image picker: no slider or dropdown; Tab to its button, Enter, choose a photo (the defaults do this)
    "11_beyond_the_paper": Spec(),
}


def spec_for(path: Path) -> Spec:
    return SPECS.get(path.stem, Spec())


def test_widget_notebooks_are_found() -> None:
    """The discovery this module's main test depends on: notebook 03's explorer cell, and nothing of 00-02."""
    found = {p.stem: widget_cells(json.loads(p.read_text())) for p in widget_notebooks()}
    assert "03_opti_cam" in found, f"notebook 03's explorer was not discovered; found {found}"
    nb = json.loads((NOTEBOOKS / "03_opti_cam.ipynb").read_text())
    for i in found["03_opti_cam"]:
        assert "opticam_explorer(" in "".join(nb["cells"][i]["source"])
    for quiet in ("00_", "01_", "02_"):  # no widgets there (tqdm bars, if any, must not count)
        assert not any(stem.startswith(quiet) for stem in found), found


def small_copy(path: Path, spec: Spec, folder: Path) -> tuple[Path, list[int]]:
    """Write the cells to run, outputs cleared, to ``folder/<name>``; return it and the widget cells' new
    indices."""
    nb = json.loads(path.read_text())
    wanted = widget_cells(nb)
    code = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and i <= wanted[-1]]
    if spec.setup is None:
        keep = code
    else:
        keep = []
        for i in code:  # the leading cells that match
            if i in wanted or not re.search(spec.setup, "".join(nb["cells"][i]["source"]), re.M):
                break
            keep.append(i)
        keep += wanted
    cells = []
    for i in keep:
        cell = dict(nb["cells"][i], outputs=[], execution_count=None)
        cell["metadata"] = {}
        cells.append(cell)
    metadata = {k: v for k, v in nb["metadata"].items() if k != "widgets"}
    out = folder / path.name
    out.write_text(json.dumps(dict(nb, cells=cells, metadata=metadata), indent=1))
    return out, [keep.index(i) for i in wanted]


# --------------------------------------------------------------------------------------------------------------
# The tools: Playwright and Chromium, or a clear failure
# --------------------------------------------------------------------------------------------------------------

INSTALL_HELP = (
    "The browser test needs Playwright for Python and a Chromium binary:\n"
    "  .venv/bin/pip install playwright        (in the dev extras: pip install -e '.[dev]'; no browser download)\n"
    "  sudo apt-get install -y --no-install-recommends chromium    (Debian/Ubuntu: /usr/bin/chromium)\n"
    "or point OPTICAM_CHROMIUM at another Chromium/Chrome binary. scripts/setup.sh installs both.\n"
    f"To skip this test on purpose, set {SKIP_ENV}=1."
)


@pytest.fixture(scope="module")
def sync_playwright():
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        pytest.skip(f"{SKIP_ENV} is set: browser test skipped on purpose")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.fail(f"playwright is not installed ({err}).\n{INSTALL_HELP}", pytrace=False)
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}.\n{INSTALL_HELP}", pytrace=False)
    return sync_playwright


# --------------------------------------------------------------------------------------------------------------
# JupyterLab in its own process group, always stopped
# --------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``marker`` (the test's temporary folder): the server,
    its kernels (their connection files lie there) and Chromium (its profile lies there)."""
    import psutil  # a dependency of ipykernel, so present wherever JupyterLab runs

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if marker in cmd and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
                found.append((p.pid, cmd[:200]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@dataclass
class Lab:
    url: str
    token: str
    folder: Path
    process: subprocess.Popen
    log: Path


def stop(lab: Lab) -> None:
    """Ask the server to shut down (it stops its kernels), then end its process group, then anything left
    that mentions the test's folder (kernels run in sessions of their own)."""
    import psutil

    try:
        req = urllib.request.Request(
            f"{lab.url}api/shutdown", method="POST", headers={"Authorization": f"token {lab.token}"}
        )
        urllib.request.urlopen(req, timeout=10).close()
        lab.process.wait(timeout=30)
    except Exception:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if lab.process.poll() is None:
            try:
                os.killpg(lab.process.pid, sig)
                lab.process.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    left = []
    for pid, _ in processes_mentioning(str(lab.folder)):
        try:
            left.append(psutil.Process(pid))
            left[-1].kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=15)


@pytest.fixture
def lab(tmp_path_factory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("lab")
    (folder / "notebooks").mkdir()
    for sub in ("config", "data", "runtime", "settings", "workspaces", "ipython"):
        (folder / sub).mkdir()
    # settings as a student would have them, minus the "fetch Jupyter news?" question (no network here)
    notify = folder / "settings" / "@jupyterlab" / "apputils-extension"
    notify.mkdir(parents=True)
    (notify / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(folder / "config"),
        JUPYTER_DATA_DIR=str(folder / "data"),
        JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(folder / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"),
        IPYTHONDIR=str(folder / "ipython"),
        PYTHONUNBUFFERED="1",
        # one intra-op thread in the kernel, as in conftest.py (two were 10-40x slower on 2 loaded cores)
        OMP_NUM_THREADS=os.environ.get("OPTICAM_TEST_THREADS", "1"),
    )
    env.pop("OPTICAM_PROFILE", None)  # the default (laptop) profile, as in CI
    port, token = free_port(), secrets.token_hex(16)
    log = folder / "jupyterlab.log"
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={folder / 'notebooks'}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run-all and kernel status, as the menu does
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    the_lab = Lab(f"http://127.0.0.1:{port}/", token, folder, process, log)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                req = urllib.request.Request(
                    f"{the_lab.url}api/status", headers={"Authorization": f"token {token}"}
                )
                urllib.request.urlopen(req, timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
        yield the_lab
    finally:
        stop(the_lab)
        left = processes_mentioning(str(folder))
        assert not left, f"processes left behind after stopping JupyterLab: {left}"


# --------------------------------------------------------------------------------------------------------------
# Driving the page
# --------------------------------------------------------------------------------------------------------------

JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !w.sessionContext.pendingInput;
}"""

JS_ALL_RUN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""


def output_image(cell) -> bytes:
    """The PNG the browser shows in the widget's output area, as bytes (b'' if none)."""
    img = cell.locator(".widget-output img").last
    if img.count() == 0:
        return b""
    src = img.get_attribute("src") or ""
    return base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:") else src.encode()


def shoot(page, cell, path: Path) -> None:
    """A screenshot of the window (1280x720) with the bottom of the widget's output in view."""
    cell.locator(".jp-OutputArea").last.evaluate("e => e.scrollIntoView({block: 'end'})")
    page.wait_for_timeout(300)
    page.screenshot(path=path)


def broken_widget_messages(page) -> list[str]:
    text = page.locator(".jp-Notebook").inner_text()
    error_widgets = page.locator(".jupyter-widgets-error-widget").count()
    return [t for t in BROKEN_WIDGET_TEXTS if t in text] + [f"{error_widgets} error widget(s)"] * (
        error_widgets > 0
    )


def error_outputs(page) -> list[str]:
    """Tracebacks shown in the notebook, and errors the explorer shows in its status line."""
    shown = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    errors = [t for t in shown.all_inner_texts() if "Traceback" in t or "Error" in t]
    status = page.locator(".widget-html-content").all_inner_texts()
    return errors + [t for t in status if t.strip().lower().startswith("error")]


def wait_for(page, predicate: str, seconds: float, what: str) -> None:
    try:
        page.wait_for_function(predicate, timeout=seconds * 1000, polling=500)
    except Exception as err:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from err


def output_pixels(cell) -> bytes:
    """A screenshot (PNG) of the widget's output area: what the user sees there."""
    area = cell.locator(".widget-output").last
    return area.screenshot() if area.count() and area.is_visible() else b""  # empty: not visible


def wait_for_redraw(page, cell, before: tuple[bytes, bytes], what: str) -> tuple[bytes, bytes]:
    """Wait until the kernel is idle and the output image differs from ``before`` (image, pixels); check that
    the output area's pixels changed too; return the new (image, pixels)."""
    deadline = time.monotonic() + WIDGET_UPDATE_S
    while time.monotonic() < deadline:
        now = output_image(cell)
        if now and now != before[0] and page.evaluate(JS_KERNEL_IDLE):
            time.sleep(1.0)  # the final redraw, if a progress callback drew intermediate ones
            if output_image(cell) == now and page.evaluate(JS_KERNEL_IDLE):
                pixels = output_pixels(cell)
                assert pixels != before[1], f"the output area looks the same after {what}"
                return now, pixels
        time.sleep(0.5)
    raise AssertionError(f"the figure did not change within {WIDGET_UPDATE_S} s after {what}")


def wait_for_status(cell, text: str) -> None:
    """Wait until one of the widget's HTML lines (the explorer's status) contains ``text``."""
    deadline = time.monotonic() + WIDGET_UPDATE_S
    shown: list[str] = []
    while time.monotonic() < deadline:
        shown = cell.locator(".widget-html").all_inner_texts()
        if any(text in line for line in shown):
            return
        time.sleep(0.5)
    raise AssertionError(f"the status never said {text!r} within {WIDGET_UPDATE_S} s; it says {shown}")


def control(cell, kind: str, description: str | None):
    """The widget of ``kind`` ('slider' or 'dropdown') whose description is ``description`` (None: the
    first one)."""
    selector = {"slider": ".widget-slider", "dropdown": ".widget-dropdown"}[kind]
    found = cell.locator(selector)
    if description is not None:
        found = found.filter(has=cell.page.locator(".widget-label", has_text=re.compile(f"^{description}$")))
    return found.first if found.count() else None


CONTROLS = "select, .noUi-handle, button, textarea, input:not([type=file]):not([type=hidden])"
FOCUSABLE = "select, input, button, textarea, [tabindex]:not([tabindex='-1']), [contenteditable=true]"


def controls_not_reached_by_tab(page, cell) -> list[str]:
    """Focus the widget's first control and press Tab through the widget; return the controls (dropdowns,
    slider handles, buttons, text fields) that never got the focus, by their description."""
    controls = cell.locator(f".jupyter-widgets :is({CONTROLS})")
    if controls.count() == 0:
        return []
    page.evaluate("els => els.forEach(e => e.dataset.tabSeen = '')", controls.element_handles())
    cell.locator(f".jupyter-widgets :is({FOCUSABLE})").first.focus()
    for _ in range(cell.locator(FOCUSABLE).count() + 2):
        page.evaluate("() => { if (document.activeElement) document.activeElement.dataset.tabSeen = '1'; }")
        page.keyboard.press("Tab")
    return page.evaluate(
        """els => els.filter(e => e.dataset.tabSeen !== '1').map(e => {
            const box = e.closest('.widget-inline-hbox, .jupyter-widgets');
            const label = box && box.querySelector('.widget-label');
            return (label ? label.textContent : '') + ' <' + e.tagName.toLowerCase() + '>';
        })""",
        controls.element_handles(),
    )


def tab_to(page, cell, target) -> int | None:
    """Focus the widget's first control, then press Tab until ``target`` has the focus; return the number of
    presses (None if it never gets the focus)."""
    focusable = cell.locator(f".jupyter-widgets :is({FOCUSABLE})")
    focusable.first.focus()
    for presses in range(focusable.count() + 2):
        if target.evaluate("t => t === document.activeElement || t.contains(document.activeElement)"):
            return presses
        page.keyboard.press("Tab")
    return None


def check_labels(page, cell) -> list[str]:
    """Descriptions that are cut off or lie outside the window."""
    problems = page.evaluate(
        """(root) => {
        const out = [];
        for (const label of root.querySelectorAll('.widget-label, .widget-label-basic')) {
          const text = label.textContent.trim();
          if (!text || label.offsetParent === null) continue;
          const r = label.getBoundingClientRect();
          if (label.scrollWidth > label.clientWidth + 1)
            out.push(`'${text}': cut off (${label.scrollWidth} px of text in ${label.clientWidth} px)`);
          if (r.left < 0 || r.right > window.innerWidth)
            out.push(`'${text}': outside the ${window.innerWidth} px window (${r.left}-${r.right})`);
        }
        for (const b of root.querySelectorAll('.widget-upload, .widget-button, .widget-toggle-button')) {
          if (b.scrollWidth > b.clientWidth + 1) out.push(`button '${b.textContent.trim()}': cut off`);
        }
        for (const w of root.querySelectorAll('.widget-inline-hbox, .widget-upload')) {
          const r = w.getBoundingClientRect();
          if (r.width > 0 && r.right > window.innerWidth + 1) out.push(`a control ends at ${r.right} px`);
        }
        return out;
    }""",
        cell.element_handle(),
    )
    return problems


def test_widget_notebook_in_jupyterlab(notebook: Path, sync_playwright, lab: Lab) -> None:
    spec = spec_for(notebook)
    shots = ARTIFACTS / notebook.stem
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    copy, cells = small_copy(notebook, spec, lab.folder / "notebooks")
    console: list[str] = []
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(  # a fresh profile in the test's folder
            lab.folder / "chromium", executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport=WINDOW
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            # listening from the start turns the interception of file dialogs on well before any Enter
            # (expect_file_chooser turns it on without waiting, and lost the race on the loaded machine)
            choosers: list = []
            page.on("filechooser", lambda chooser: choosers.append(chooser))
            page.goto(f"{lab.url}lab/tree/{copy.name}?token={lab.token}", timeout=SERVER_START_S * 1000)
            wait_for(page, JS_KERNEL_IDLE, SERVER_START_S, "the notebook to open and its kernel to start")
            timings["open"] = time.monotonic() - t0

            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(1000)
            wait_for(page, JS_ALL_RUN, RUN_CELLS_S, f"the {copy.name} copy's cells to run")
            timings["run"] = time.monotonic() - t0 - timings["open"]
            # the leak check at the end finds processes by the test's folder: make sure it sees all three kinds
            running = " ".join(cmd for _, cmd in processes_mentioning(str(lab.folder)))
            for kind in ("jupyterlab", "ipykernel", "chrom"):
                assert kind in running, f"no {kind} process found by the leak check's marker"
            cell = page.locator(".jp-Notebook .jp-Cell").nth(cells[0])
            cell.scroll_into_view_if_needed()
            try:
                cell.locator(".jupyter-widgets").first.wait_for(timeout=60_000)
            except Exception as err:
                shown = cell.locator(".jp-OutputArea").inner_text()
                raise AssertionError(
                    f"no widget rendered in 60 s; the output shows: {shown[:500]!r}"
                ) from err
            page.wait_for_timeout(500)
            shoot(page, cell, shots / "1_rendered.png")
            cell.screenshot(path=shots / "1_widget.png")

            assert not broken_widget_messages(page), broken_widget_messages(page)
            assert not error_outputs(page), error_outputs(page)
            cut = check_labels(page, cell)
            assert not cut, f"descriptions not readable at {WINDOW['width']}x{WINDOW['height']}: {cut}"
            unreachable = controls_not_reached_by_tab(page, cell)
            assert not unreachable, f"controls that Tab never reaches: {unreachable}"
            first = (output_image(cell), output_pixels(cell))
            upload = cell.locator(".widget-upload")
            if not upload.count():  # a file picker shows nothing before a file is chosen
                assert first[0], "the widget's output shows no figure"

            # 1. a slider, with the keyboard only: Tab to it from the widget's first control, then an arrow key
            slider = control(cell, "slider", spec.slider)
            if slider is not None:
                handle = slider.locator(".noUi-handle, [role=slider], input[type=range]").first
                readout = slider.locator(".widget-readout")
                value_before = readout.inner_text() if readout.count() else None
                presses = tab_to(page, cell, handle)
                assert presses is not None, (
                    "the slider cannot be reached with Tab from the widget's first control"
                )
                for _ in range(3):  # three quick steps: the explorer stops the stale runs and draws the last
                    page.keyboard.press("ArrowRight")
                after = wait_for_redraw(page, cell, first, "a slider moved with the arrow key")
                if value_before is not None:
                    assert readout.inner_text() != value_before, "the arrow key did not change the slider"
                if spec.slider == "iterations":  # the status line reports the run of the slider's last value
                    wait_for_status(cell, f"{readout.inner_text().strip()} iterations in")
                shoot(page, cell, shots / "2_after_slider.png")
                first = after

            # 2. a dropdown: the next option
            dropdown = control(cell, "dropdown", spec.dropdown)
            if dropdown is not None:
                select = dropdown.locator("select")
                options = select.locator("option").all_inner_texts()
                assert len(options) > 1, "a dropdown with a single option"
                new = (select.evaluate("s => s.selectedIndex") + 1) % len(options)
                select.select_option(index=new)
                after = wait_for_redraw(page, cell, first, f"the dropdown changed to {options[new]!r}")
                shoot(page, cell, shots / "3_after_dropdown.png")
                first = after

            # 3. a file-upload control, with the keyboard: Tab to its button, Enter, choose one of the course's photos
            if upload.count():
                from opticam_lib.images import sample_names, sample_path

                assert tab_to(page, cell, upload.first) is not None, "Tab does not reach the upload button"
                page.keyboard.press("Enter")
                deadline = time.monotonic() + 30
                while not choosers and time.monotonic() < deadline:
                    page.wait_for_timeout(200)
                assert choosers, "Enter on the upload button opened no file dialog within 30 s"
                choosers[-1].set_files(str(sample_path(sample_names()[1])))
                after = wait_for_redraw(page, cell, first, "a photo was chosen with the upload button")
                shoot(page, cell, shots / "4_after_upload.png")

            assert not broken_widget_messages(page), broken_widget_messages(page)
            assert not error_outputs(page), error_outputs(page)
            cell.screenshot(path=shots / "5_widget_final.png")

            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for_timeout(1500)
        except BaseException:
            try:  # what the page looked like, for whoever reads the failure
                page.screenshot(path=shots / "failure.png")
                (shots / "failure.html").write_text(page.locator(".jp-Notebook").inner_html(timeout=5000))
            except Exception:
                pass
            raise
        finally:
            (shots / "console.log").write_text("\n".join(console))
            browser.close()
    saved = json.loads(copy.read_text())
    assert all(saved["cells"][i].get("execution_count") for i in cells), (
        "the notebook was not saved after the run"
    )
    errors = [o for c in saved["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"error outputs: {[e.get('ename') + ': ' + e.get('evalue') for e in errors]}"
    widget_console = [m for m in console if re.search(r"widget|model class|jupyter-widgets", m, re.I)]
    widget_errors = [m for m in widget_console if m.startswith(("error", "pageerror"))]
    assert not widget_errors, f"widget errors in the browser console: {widget_errors}"
    timings["total"] = time.monotonic() - t0
    (shots / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in timings.items()}))


def test_quiz_in_jupyterlab(sync_playwright, lab: Lab) -> None:
    """Answer one question of notebook 05's quiz in JupyterLab: a wrong option, then the right one, each time
    pressing Check, and read the feedback the widget shows. The copy holds only the notebook's quiz cell."""
    from opticam_lib.course.quiz import quiz

    source = NOTEBOOKS / "05_fake_cam_and_average_gain.ipynb"
    nb = json.loads(source.read_text())
    quiz_cell = next(
        c for c in nb["cells"] if c["cell_type"] == "code" and QUIZ_CALL.search("".join(c["source"]))
    )
    cell = dict(quiz_cell, outputs=[], execution_count=None, metadata={})
    copy = lab.folder / "notebooks" / "quiz_05.ipynb"
    metadata = {k: v for k, v in nb["metadata"].items() if k != "widgets"}
    copy.write_text(json.dumps(dict(nb, cells=[cell], metadata=metadata), indent=1))
    question = quiz("05").questions[0]  # as the widget shows it (choices in their shown order)
    right = [c.right for c in question.choices].index(True)
    wrong = (right + 1) % len(question.choices)
    shots = ARTIFACTS / "quiz_05"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            lab.folder / "chromium", executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport=WINDOW
        )
        try:
            page = browser.new_page()
            page.goto(f"{lab.url}lab/tree/{copy.name}?token={lab.token}", timeout=SERVER_START_S * 1000)
            wait_for(page, JS_KERNEL_IDLE, SERVER_START_S, "the notebook to open and its kernel to start")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_timeout(1000)
            wait_for(page, JS_ALL_RUN, RUN_CELLS_S, "the quiz cell to run")
            out = page.locator(".jp-Notebook .jp-Cell").first
            out.locator(".widget-radio-box").first.wait_for(timeout=60_000)
            first = out.locator(".widget-vbox .widget-vbox").first  # question 1's box
            assert question.choices[0].text[:20] in first.inner_text()
            feedback = first.locator(".widget-html").last
            check = first.locator("button", has_text="Check")
            first.locator(".widget-radio-box label").nth(wrong).click()
            check.click()
            page.wait_for_function(
                "e => e.innerText.includes('✗')", arg=feedback.element_handle(), timeout=30_000
            )
            assert "Try another option" in feedback.inner_text()
            first.locator(".widget-radio-box label").nth(right).click()
            check.click()
            page.wait_for_function(
                "e => e.innerText.includes('✓')", arg=feedback.element_handle(), timeout=30_000
            )
            assert question.choices[right].why[:30] in feedback.inner_text()
            assert not broken_widget_messages(page), broken_widget_messages(page)
            assert not error_outputs(page), error_outputs(page)
            first.screenshot(path=shots / "answered.png")
        except BaseException:
            try:
                page.screenshot(path=shots / "failure.png")
            except Exception:
                pass
            raise
        finally:
            browser.close()


def pytest_generate_tests(metafunc):  # pragma: no cover - collection hook
    if "notebook" in metafunc.fixturenames:
        found = widget_notebooks(Path(os.environ.get("OPTICAM_BROWSER_NOTEBOOKS", NOTEBOOKS)))
        metafunc.parametrize("notebook", found, ids=[p.stem for p in found])


# --------------------------------------------------------------------------------------------------------------
# The offline site (python -m opticam_lib.edition html), opened from disk
# --------------------------------------------------------------------------------------------------------------

SITE_NOTEBOOKS = (
    "00_welcome_and_setup",
    "03_opti_cam",
)  # two notebooks keep it fast; glossary and guide always

_BROKEN_IMAGES = (
    "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))"
)
_LINKS = "[...document.querySelectorAll('a[href]')].map(a => a.href)"
_MATH = """() => { const m = [...document.getElementsByTagName('math')];
  return [m.length, m.filter(e => e.getBoundingClientRect().width > 0).length]; }"""
_TARGET = """() => { const h = location.hash.slice(1); if (!h) return true;
  return !!(document.getElementById(h) || document.getElementById(decodeURIComponent(h))); }"""


def browse_site(page, start: str) -> tuple[list[str], dict[str, int], set[str]]:
    """Open ``start`` (a file:// URL) in ``page`` and follow every link to a local file, breadth first.

    Returns the problems found (a link to a missing file or fragment, an image that did not load, a math element
    the browser did not lay out, raw $$ in a page's text), {page name: number of math elements} of every page
    reached, and the links to elsewhere (not followed: the site is read offline)."""
    from urllib.parse import urldefrag, urlsplit
    from urllib.request import url2pathname

    problems: list[str] = []
    queue, seen, counts, external = [start], set(), {}, set()
    while queue:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        base, fragment = urldefrag(url)
        path = Path(url2pathname(urlsplit(base).path))
        if not path.is_file():
            problems.append(f"link to a missing file: {url}")
            continue
        page.goto(url, wait_until="load")
        if fragment and not page.evaluate(_TARGET):
            problems.append(f"no element for the fragment of {url}")
        if path.name in counts:
            continue
        broken = page.evaluate(_BROKEN_IMAGES)
        if broken:
            problems.append(f"{path.name}: images that did not load: {broken}")
        total, laid_out = page.evaluate(_MATH)
        counts[path.name] = total
        if laid_out != total:
            problems.append(f"{path.name}: {total - laid_out} math elements not laid out")
        if "$$" in page.inner_text("body"):
            problems.append(f"{path.name}: raw $$ in the rendered text")
        for href in page.evaluate(_LINKS):
            (queue.append if href.startswith("file:") else external.add)(href)
    return problems, counts, external


def test_offline_site_in_chromium(sync_playwright, tmp_path: Path) -> None:
    """Build the teacher's site for two notebooks (plus glossary and guide), open index.html over file:// with no network,
    follow every link (each page and each #fragment must resolve), and check on every page that each image loaded
    (naturalWidth > 0), that equations are MathML elements the browser lays out, that no raw $$ is left in the
    text, and that the pages asked for nothing but local files. The same walk must find the faults of a made-up
    broken site."""
    from opticam_lib.course.site import build_site, site_problems

    site = tmp_path / "site"
    report = build_site(NOTEBOOKS, site, SITE_NOTEBOOKS, teacher=True)  # the guide too: more links to walk
    assert not report.math_failures, [str(f) for f in report.math_failures]
    assert site_problems(site) == []
    expected = {f"{n}.html" for n in SITE_NOTEBOOKS} | {"index.html", "glossary.html", "teachers.html"}
    assert expected <= {p.name for p in site.glob("*.html")}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.html").write_text(
        '<a href="gone.html">x</a> <a href="index.html#nowhere">y</a> <img src="none.png" alt="">'
        ' <p>$$x^2$$</p> <a href="https://example.org">e</a>'
    )
    shots = ARTIFACTS / "site"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=WINDOW)
            remote: list[str] = []
            page.on(
                "request", lambda r: None if r.url.startswith(("file:", "data:")) else remote.append(r.url)
            )
            found, _, outside = browse_site(page, (bad / "index.html").as_uri())
            assert len(found) == 4 and outside == {"https://example.org/"}, found
            for fault in ("missing file", "fragment", "did not load", "raw $$"):
                assert any(fault in f for f in found), f"the walk missed: {fault} ({found})"
            problems, counts, external = browse_site(page, (site / "index.html").as_uri())
            page.goto((site / "glossary.html").as_uri())
            page.screenshot(path=str(shots / "glossary.png"))
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
    assert set(counts) == expected, f"pages reached from the index: {sorted(counts)}"
    for name in ("glossary.html", *(f"{n}.html" for n in SITE_NOTEBOOKS)):
        assert counts[name] > 10, f"{name}: only {counts[name]} math elements"
    assert not remote, f"the site asked the network for {remote[:5]}"
    assert all(h.startswith(("http:", "https:", "mailto:")) for h in external), sorted(external)
