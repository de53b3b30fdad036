#!/usr/bin/env bash
# The project's test command (README, .ci/run): lint and format checks, unit tests, notebook validation.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export MPLBACKEND=${MPLBACKEND:-Agg}
echo "[test] ruff check"; ruff check .
echo "[test] ruff format --check"; ruff format --check .
targets=(tests)
if compgen -G "notebooks/[0-9][0-9]_*.ipynb" >/dev/null; then targets+=(notebooks); fi
echo "[test] pytest ${targets[*]}"
python -m pytest -q --nbval-lax -p no:cacheprovider "${targets[@]}" "$@"
