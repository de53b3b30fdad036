#!/usr/bin/env bash
# Set up everything the course, the CLI and the tests need, in ./.venv. Safe to run again (it only adds what
# is missing). Needs Python >= 3.10 and a package index (PyPI); nothing else is downloaded, ever.
#
#   TORCH_SPEC   the torch/torchvision requirement to install first
#                (default "torch==2.14.1 torchvision==0.29.1", the build this project is tested with;
#                 e.g. TORCH_SPEC="torch torchvision --index-url <your CPU wheel index>" on a laptop)
#   PYTHON       the interpreter that creates the venv (default: python3.11, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

# The browser test drives Debian's Chromium (no browser is downloaded by Playwright): install it when missing and
# apt-get is there (as root, or with sudo); elsewhere say how (or set OPTICAM_CHROMIUM to another Chromium).
if [ ! -x "${OPTICAM_CHROMIUM:-/usr/bin/chromium}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for tests/test_browser.py"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
  else
    echo "[setup] no /usr/bin/chromium and no apt-get: install Chromium and set OPTICAM_CHROMIUM=/path/to/it for" \
      "the browser test (or OPTICAM_SKIP_BROWSER_TESTS=1 to skip it on purpose)"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC (large: a few minutes)"
  # shellcheck disable=SC2086
  python -m pip install --quiet $TORCH_SPEC
fi
echo "[setup] installing opticam_lib and its tools (editable, with the dev extras)"
python -m pip install --quiet -e ".[dev]"
python -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
echo "[setup] done: $(python -c 'import torch, opticam_lib; print("torch", torch.__version__, "| opticam_lib", opticam_lib.__version__)')"
