#!/usr/bin/env bash
# Set up everything the course, the CLI and the tests need, in ./.venv. Safe to run again (it only adds what
# is missing). Needs Python >= 3.10 and a package index (PyPI); nothing else is downloaded, ever.
#
#   TORCH_SPEC   the torch/torchvision requirement to install first
#                (default "torch==2.14.1 torchvision==0.29.1", the build this project is tested with;
#                 e.g. TORCH_SPEC="torch torchvision --index-url <your CPU wheel index>" on a laptop)
#   PYTHON       the interpreter that creates the venv (default: python3.11, else python3)
#   OPTICAM_SETUP_BROWSER=0   skip Chromium (only the browser test needs it; scripts/lab.sh sets this)
#   OPTICAM_SETUP_MIN_FREE_GB  free disk space the default torch build needs before it is installed (default 8:
#                it takes about 6.6 GB installed, with its CUDA libraries, and pip needs room to unpack it)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
DEFAULT_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}

# A disk that fills up half-way through the torch install leaves a broken venv and pip's "No space left on device"
# minutes later: check the room first (only when the default build is still to be installed).
if [ "$TORCH_SPEC" = "$DEFAULT_TORCH_SPEC" ] && ! { [ -x .venv/bin/python ] &&
  .venv/bin/python -c "import torch, torchvision" 2>/dev/null; }; then
  need_gb=${OPTICAM_SETUP_MIN_FREE_GB:-8}
  case $need_gb in '' | *[!0-9]*)
    echo "[setup] ERROR: OPTICAM_SETUP_MIN_FREE_GB must be a whole number of GB, not '$need_gb'" >&2
    exit 1
    ;;
  esac
  for dir in "$PWD" "${TMPDIR:-/tmp}"; do
    free_kb=$(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
      echo "[setup] ERROR: only $((free_kb / 1024 / 1024)) GB free in $dir; installing $DEFAULT_TORCH_SPEC" \
        "(with its CUDA libraries, about 6.6 GB) needs about $need_gb GB there. Free some space, or install a" \
        "smaller CPU-only build: TORCH_SPEC=\"torch torchvision --index-url <your CPU wheel index>\" bash scripts/setup.sh" >&2
      exit 1
    fi
  done
fi

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
