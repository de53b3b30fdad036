"""A regular (non-editable) install ships the whole library: every package of the source tree, its data files, and
imports from the built wheel alone. (The editable install the course uses would hide a missing subpackage.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a clean copy: a build/ folder left by an earlier build would leak in
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for top in ("opticam_lib", "data_download"):
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
    cmd += ["-w", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("opticam_lib-*.whl")
    return path


def test_every_package_and_data_file_is_in_the_wheel(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for top in ("opticam_lib", "data_download"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert rel in names, f"{rel} is not in the wheel: its package would be missing after pip install"
        for src in (ROOT / top).rglob("*.py"):
            assert src.relative_to(ROOT).as_posix() in names, src
    data = [p for p in (ROOT / "opticam_lib" / "data").rglob("*") if p.is_file()]
    assert data, "opticam_lib/data has files"
    for p in data:
        assert p.relative_to(ROOT).as_posix() in names, f"data file {p.name} is not shipped"


def test_the_wheel_alone_imports_every_module(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import importlib, pkgutil, opticam_lib, data_download\n"
        f"assert opticam_lib.__file__.startswith({str(site)!r}), opticam_lib.__file__\n"
        "mods = [m.name for m in pkgutil.walk_packages(opticam_lib.__path__, 'opticam_lib.')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "from opticam_lib.images import load_samples\n"
        "assert len(load_samples(size=32)) == 10\n"
        "print(len(mods))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) > 40  # methods, metrics, models, course, paper, world, ...
