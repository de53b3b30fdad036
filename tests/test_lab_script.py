"""scripts/lab.sh: a non-loopback address is refused unless asked for, and as root the terminals are off;
scripts/install_browser.sh: a browser that cannot be installed is a warning, never the end of the set-up;
scripts/setup.sh: a disk too full for the torch build is named before anything is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lab(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "lab.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPTICAM_LAB_DRY_RUN": "1", "OPTICAM_LAB_BROWSER": "0", **env},
    )


def test_a_network_address_is_refused_unless_allowed():
    refused = _lab(OPTICAM_LAB_IP="0.0.0.0")
    assert refused.returncode == 2 and "refusing OPTICAM_LAB_IP=0.0.0.0" in refused.stderr
    assert "jupyterlab" not in refused.stdout
    allowed = _lab(OPTICAM_LAB_IP="0.0.0.0", OPTICAM_LAB_ALLOW_REMOTE="1")
    assert allowed.returncode == 0 and "WARNING" in allowed.stderr and "--ip=0.0.0.0" in allowed.stdout


def test_the_default_is_this_machine_only_and_root_gets_no_terminals():
    run = _lab()
    assert run.returncode == 0, run.stderr
    command = run.stdout.strip().splitlines()[-1]
    assert "--ip=127.0.0.1" in command
    root = os.geteuid() == 0
    assert ("--allow-root" in command) == root
    assert ("--ServerApp.terminals_enabled=False" in command) == root
    if root:
        asked = _lab(OPTICAM_LAB_TERMINALS="1").stdout
        assert "--allow-root" in asked and "terminals_enabled=False" not in asked


# scripts/install_browser.sh (run by setup.sh): a missing browser never stops the set-up -------------------------


def _install_browser(tmp_path: Path, uid: str, sudo: bool, apt_rc: int | None, **env: str):
    """Run install_browser.sh with fake ``id``, ``apt-get`` (None: absent) and ``sudo``, logging their calls."""
    fake = tmp_path / "bin"
    fake.mkdir(parents=True)
    log = tmp_path / "calls.log"

    def tool(name: str, body: str) -> None:
        (fake / name).write_text(f"#!/bin/bash\n{body}\n")
        (fake / name).chmod(0o755)

    tool("id", f"echo {uid}")
    if apt_rc is not None:
        tool("apt-get", f'echo "apt-get $*" >> {log}; exit {apt_rc}')
    if sudo:
        tool("sudo", f'echo "sudo $*" >> {log}; exec "$@"')
    (fake / "env").symlink_to("/usr/bin/env")
    run = subprocess.run(
        ["/bin/bash", str(ROOT / "scripts" / "install_browser.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(fake), "OPTICAM_CHROMIUM": str(tmp_path / "no-chromium"), **env},
    )
    return run, (log.read_text().splitlines() if log.exists() else [])


def test_without_root_or_sudo_the_browser_is_a_warning(tmp_path):
    run, calls = _install_browser(tmp_path, uid="1000", sudo=False, apt_rc=0)
    assert run.returncode == 0 and calls == []
    assert "needs root (no sudo here)" in run.stderr and "OPTICAM_SKIP_BROWSER_TESTS=1" in run.stderr


def test_a_failed_apt_get_is_a_warning(tmp_path):
    run, calls = _install_browser(tmp_path, uid="0", sudo=False, apt_rc=100)
    assert run.returncode == 0 and calls == ["apt-get update -q"]
    assert "apt-get could not install chromium" in run.stderr


def test_root_installs_chromium_and_others_use_sudo(tmp_path):
    run, calls = _install_browser(tmp_path / "root", uid="0", sudo=False, apt_rc=0)
    assert run.returncode == 0 and run.stderr == ""
    assert calls == ["apt-get update -q", "apt-get install -y -q --no-install-recommends chromium"]
    run, calls = _install_browser(tmp_path / "user", uid="1000", sudo=True, apt_rc=0)
    assert run.returncode == 0 and calls[0] == "sudo apt-get update -q" and calls[-1].endswith("chromium")


def test_no_apt_get_or_asked_not_to(tmp_path):
    run, calls = _install_browser(tmp_path / "a", uid="0", sudo=False, apt_rc=None)
    assert run.returncode == 0 and "no apt-get" in run.stderr
    run, calls = _install_browser(tmp_path / "b", uid="0", sudo=False, apt_rc=0, OPTICAM_SETUP_BROWSER="0")
    assert run.returncode == 0 and calls == [] and run.stderr == ""


# scripts/setup.sh: a disk too small for the default torch build stops the set-up before it starts ---------------


def _setup_with_free_disk(tmp_path: Path, free_gb: float, **env: str) -> subprocess.CompletedProcess:
    """Run a copy of setup.sh (no .venv yet) with a fake ``df`` reporting ``free_gb`` free and an interpreter that
    fails, so that nothing is installed: the run ends at the disk check or at the venv's creation."""
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "install_browser.sh"):
        (project / "scripts" / name).write_text((ROOT / "scripts" / name).read_text())
    fake = tmp_path / "bin"
    fake.mkdir()
    kb = int(free_gb * 1024 * 1024)
    (fake / "df").write_text(
        f"#!/bin/bash\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f'echo "/dev/x 999999999 1 {kb} 1% $2"\n'
    )
    (fake / "df").chmod(0o755)
    return subprocess.run(
        ["bash", str(project / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
        env={
            **os.environ,
            "PATH": f"{fake}:{os.environ['PATH']}",
            "PYTHON": "false",
            "OPTICAM_SETUP_BROWSER": "0",
            "TMPDIR": str(tmp_path),
            **env,
        },
    )


def test_setup_names_a_disk_too_full_for_torch_before_installing(tmp_path):
    run = _setup_with_free_disk(tmp_path / "full", free_gb=2.5)
    assert run.returncode == 1
    assert "only 2 GB free" in run.stderr and "needs about 8 GB" in run.stderr and "TORCH_SPEC=" in run.stderr
    assert not (tmp_path / "full" / "project" / ".venv").exists()
    # enough room: past the check (the fake interpreter then fails to create the venv)
    run = _setup_with_free_disk(tmp_path / "room", free_gb=20)
    assert run.returncode != 0 and "GB free" not in run.stderr and "creating .venv" in run.stdout
    # another torch build: its size is unknown, so no check
    run = _setup_with_free_disk(tmp_path / "cpu", free_gb=2.5, TORCH_SPEC="torch torchvision")
    assert "GB free" not in run.stderr and "creating .venv" in run.stdout
    run = _setup_with_free_disk(tmp_path / "bad", free_gb=20, OPTICAM_SETUP_MIN_FREE_GB="8GB")
    assert run.returncode == 1 and "whole number of GB, not '8GB'" in run.stderr
