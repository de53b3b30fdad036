"""The package's layering (ARCHITECTURE.md), read from the code: every import of every module, parsed with ``ast``.

- no import loop anywhere in ``opticam_lib`` and ``data_download`` (function-level imports count too; imports
  under ``if TYPE_CHECKING:`` do not, since they never run);
- the library wing imports neither the course, nor the paper's reproduction, nor the controlled world; the world
  imports only the library; the reproduction does not import the course; ``data_download`` imports nothing of
  ``opticam_lib`` and not torch;
- the model registry names its loaders (``"module:function"``) instead of importing network modules.
"""

from __future__ import annotations

import ast
import os
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("opticam_lib", "data_download")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module ``module`` imports (relative imports resolved)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)  # ``from pkg import submodule``
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@cache
def graph() -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    out = {}
    for name, path in files.items():
        raw = _imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        out[name] = {m for m in raw if m in files and m != name}
    return out


@cache
def all_imports() -> dict[str, set[str]]:
    """{module: every name it imports, third-party included}."""
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {n: _imports(ast.parse(p.read_text()), n, p.name == "__init__.py") for n, p in files.items()}


def wing(module: str) -> str:
    """library, world, course, paper, cli (the command line spans the wings) or data_download."""
    parts = module.split(".")
    if parts[0] == "data_download":
        return "data_download"
    if len(parts) > 1 and parts[1] in ("world", "course", "paper"):
        return parts[1]
    if module in ("opticam_lib.__main__", "opticam_lib.edition"):
        return "cli"
    return "library"


ALLOWED = {
    "library": {"library"},
    "world": {"library", "world"},
    "paper": {"library", "world", "paper"},
    "course": {"library", "world", "paper", "course"},
    "cli": {"library", "world", "paper", "course", "cli"},
    "data_download": {"data_download"},
}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return found


def longest_chain(g: dict[str, set[str]]) -> list[str]:
    """The longest path of imports (the graph has no loop)."""

    @cache
    def longest(v: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for w in sorted(g[v]):
            path = longest(w)
            if len(path) > len(best):
                best = path
        return (v, *best)

    return list(max((longest(v) for v in g), key=len))


def test_the_checker_sees_a_loop_and_a_wrong_wing():
    """The checks below can fail: a made-up graph with a loop and a library module importing the course."""
    fake = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles(fake) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert (
        wing("opticam_lib.methods.cam_family") == "library" and wing("opticam_lib.course.widgets") == "course"
    )
    assert "course" not in ALLOWED[wing("opticam_lib.methods.cam_family")]
    tree = ast.parse("import os\nif TYPE_CHECKING:\n    from x import y\nfrom . import z\n")
    assert _imports(tree, "opticam_lib.methods.cam_family", False) == {
        "os",
        "opticam_lib.methods",
        "opticam_lib.methods.z",
    }


def test_the_graph_covers_the_package():
    g = graph()
    assert "opticam_lib.methods.opti_cam" in g and "opticam_lib.course.exercises" in g
    assert "opticam_lib.methods.maps" in g["opticam_lib.methods.opti_cam"]


def test_no_import_loop():
    assert cycles(graph()) == []


@pytest.mark.parametrize("source", ["library", "world", "paper", "course", "data_download"])
def test_imports_run_downwards(source):
    wrong = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if wing(m) == source
        for t in targets
        if wing(t) not in ALLOWED[source]
    ]
    assert wrong == []


FLOORS = {"models": 1, "methods": 2, "metrics": 3}  # the ground floor is 0


def floor(module: str) -> int | None:
    """The library's floor of a module: ground 0, models 1, methods 2, metrics 3 (None: the namespace itself)."""
    if module == "opticam_lib":
        return None  # the package's __init__ re-exports every floor
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def test_the_library_floors_import_downwards():
    """ARCHITECTURE.md: the ground floor imports no model, models import no method, methods import no metric."""
    assert floor("opticam_lib.images") == 0 and floor("opticam_lib.methods.cam_family") == 2
    assert floor("opticam_lib.metrics.evaluation") > floor("opticam_lib.methods.registry")
    wrong = [
        f"{m} -> {t}"
        for m, targets in graph().items()
        if wing(m) == "library" and floor(m) is not None
        for t in targets
        if wing(t) == "library" and floor(t) is not None and floor(t) > floor(m)
    ]
    assert wrong == []


def test_data_download_imports_neither_the_library_nor_torch():
    for module, names in all_imports().items():
        if wing(module) == "data_download":
            roots = {n.split(".")[0] for n in names}
            assert not roots & {"opticam_lib", "torch", "torchvision", "timm"}, module


def test_the_registry_names_loaders_instead_of_importing_them():
    from opticam_lib.models.registry import _REGISTRY

    for name in ("efficientnet_lite0", "resnet50", "world_cnn"):
        assert isinstance(_REGISTRY[name].loader, str), name
    assert graph()["opticam_lib.models.registry"] <= {
        "opticam_lib.digests",  # file_digest: a leaf module (torch and hashlib only)
        "opticam_lib.errors",
        "opticam_lib.inputs",  # usable_device: a leaf module (it imports errors only)
        "opticam_lib.paths",
        "opticam_lib.models.classifier",
    }


def test_checkers_live_in_exercises_only():
    """``check_*`` is the name of an exercise checker, and all of them are in course/exercises.py."""
    for path in (ROOT / "opticam_lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # methods and nested functions too
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                assert path.name == "exercises.py", f"{path}: {node.name}"


def test_report_chain(capsys):
    """Print the longest import chain (for ARCHITECTURE.md and the notes); it is only reported."""
    chain = longest_chain(graph())
    with capsys.disabled():
        if os.environ.get("OPTICAM_SHOW_LAYERS"):
            print(f"\nlongest import chain ({len(chain)} modules): {' -> '.join(chain)}")
    assert len(chain) >= 2


@pytest.mark.parametrize("package", ["opticam_lib", "data_download"])
def test_no_module_is_hidden_by_a_name_its_package_exports(package):
    """``import opticam_lib.methods.opti_cam as m`` must give the module: a package that re-exports a function
    under its module's name (the old ``methods.opticam``) makes that import, ``mock.patch`` and the glossary's
    dotted names reach the function instead."""
    import importlib
    import pkgutil
    import types

    root = importlib.import_module(package)
    hidden = []
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        parent, _, leaf = info.name.rpartition(".")
        attribute = getattr(importlib.import_module(parent), leaf)
        if not isinstance(attribute, types.ModuleType):
            hidden.append(f"{info.name} is hidden by {parent}.{leaf}, a {type(attribute).__name__}")
    assert not hidden, "\n".join(hidden)


def test_the_old_module_names_still_import():
    """Saved notebooks of the course import from the modules' names before the renaming."""
    import importlib

    old = {
        "opticam_lib.methods.opticam": "opti_cam",
        "opticam_lib.methods.cam": "cam_family",
        "opticam_lib.methods.features": "feature_pass",
        "opticam_lib.methods.tibav": "relevance",
        "opticam_lib.metrics.evaluate": "evaluation",
        "opticam_lib.world.evidence": "reliance",
    }
    for name, new in old.items():
        assert importlib.import_module(name).__name__.endswith("." + new), name
