"""scripts/lab.sh: a non-loopback address is refused unless asked for, and as root the terminals are off."""

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
