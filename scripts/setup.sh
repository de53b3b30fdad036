#!/usr/bin/env bash
# Set up everything the course, the CLI and the tests need, in ./.venv. Safe to run again (it only adds what
# is missing). Needs Python >= 3.10 and a package index (PyPI); nothing else is downloaded, ever.
#
#   TORCH_SPEC   the torch/torchvision requirement to install first
#                (default "torch==2.14.1 torchvision==0.29.1", the build this project is tested with;
#                 e.g. TORCH_SPEC="torch torchvision --index-url <your CPU wheel index>" on a laptop)
#   PYTHON       the interpreter that creates the venv (default: python3.11, else python3)
#   OPTICAM_SETUP_BROWSER=0   skip Chromium (only the browser test needs it; scripts/lab.sh sets this)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

bash scripts/install_browser.sh # Chromium for the browser test; a failure is a warning, not the end

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
