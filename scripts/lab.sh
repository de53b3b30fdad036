#!/usr/bin/env bash
# Open the course: JupyterLab on notebooks/, with the first notebook open, offline.
#
#   bash scripts/lab.sh                      # from the repository root (or from anywhere: it finds its way)
#   OPTICAM_LAB_PORT=9000 bash scripts/lab.sh
#   bash scripts/lab.sh --ServerApp.some_option=...     # extra arguments go to `jupyter lab`
#
# Set-up: if .venv is missing or lacks the course's packages, runs scripts/setup.sh first (a few minutes, once;
# it needs a package index such as PyPI). After that nothing is downloaded: JupyterLab's news feed, update check
# and extension-manager queries are switched off.
#
# Port: OPTICAM_LAB_PORT (default 8888; if taken, JupyterLab tries the next ones and prints the one it got).
# Address: OPTICAM_LAB_IP (default 127.0.0.1: only this machine can connect; the URL carries a secret token).
#   Any other address opens the server (and its Python) to the network: it is refused unless
#   OPTICAM_LAB_ALLOW_REMOTE=1 is set too, and then a warning is printed. Prefer the SSH tunnel below.
# As root (containers, CI): JupyterLab needs --allow-root, which is added; its terminals (a root shell in the
#   browser) are then switched off unless OPTICAM_LAB_TERMINALS=1.
# OPTICAM_LAB_DRY_RUN=1 prints the jupyter command instead of running it.
# Browser: opened automatically when there is a desktop (macOS, $DISPLAY or $WAYLAND_DISPLAY); otherwise, or with
#   OPTICAM_LAB_BROWSER=0, open the URL that JupyterLab prints (http://127.0.0.1:PORT/lab/...?token=...).
#   OPTICAM_LAB_BROWSER=1 forces it on.
# Stop: press Ctrl-C twice in this terminal (once asks for confirmation). Save your notebooks first; closing the
#   browser tab alone leaves the server running.
# Paper settings: OPTICAM_PROFILE=paper bash scripts/lab.sh (needs `python -m data_download resnet50`; notebook 09 also
#   `python -m data_download imagenet-val --from ...`; `python -m data_download LIST` says which files).
#
# On a remote machine (a lab server, a cloud VM) over SSH: start it there as usual,
#     ssh user@remote            then   bash scripts/lab.sh
# and from your own computer forward the port (same number on both ends), then open the printed URL locally:
#     ssh -N -L 8888:127.0.0.1:8888 user@remote
# Keep OPTICAM_LAB_IP=127.0.0.1 there: the tunnel reaches it, the rest of the network does not.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${OPTICAM_LAB_PORT:-8888}
IP=${OPTICAM_LAB_IP:-127.0.0.1}
case "$IP" in
127.0.0.1 | localhost | ::1) ;;
*)
  if [ "${OPTICAM_LAB_ALLOW_REMOTE:-0}" != 1 ]; then
    echo "[lab] refusing OPTICAM_LAB_IP=$IP: anyone who can reach this machine on port $PORT and learns the token" >&2
    echo "[lab] could run code as you. Use the SSH tunnel described at the top of scripts/lab.sh, or set" >&2
    echo "[lab] OPTICAM_LAB_ALLOW_REMOTE=1 if you really mean to serve on $IP." >&2
    exit 2
  fi
  echo "[lab] WARNING: serving on $IP (not this machine only): protect the token, and prefer an SSH tunnel" >&2
  ;;
esac
FIRST=$(cd notebooks && ls [0-9][0-9]_*.ipynb 2>/dev/null | head -n 1 || true)

if ! [ -x .venv/bin/python ] ||
  ! .venv/bin/python -c "import opticam_lib, jupyterlab, ipywidgets, jupyterlab_widgets, torch" 2>/dev/null; then
  echo "[lab] .venv is missing or incomplete: running scripts/setup.sh (without the tests' browser)"
  OPTICAM_SETUP_BROWSER=0 bash scripts/setup.sh
fi

args=(
  --ServerApp.root_dir="$PWD/notebooks"
  --ip="$IP"
  --port="$PORT"
  --LabApp.news_url=None
  --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate
  --LabApp.extension_manager=readonly
)
if [ -n "$FIRST" ]; then args+=(--LabApp.default_url="/lab/tree/$FIRST"); fi

browser=${OPTICAM_LAB_BROWSER:-}
if [ -z "$browser" ]; then
  if [ "$(uname -s)" = Darwin ] || [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then browser=1; else browser=0; fi
fi
if [ "$browser" = 0 ]; then args+=(--no-browser); fi
if [ "$(id -u)" = 0 ]; then # containers and CI machines often run as root
  args+=(--allow-root)
  if [ "${OPTICAM_LAB_TERMINALS:-0}" != 1 ]; then args+=(--ServerApp.terminals_enabled=False); fi
fi

echo "[lab] JupyterLab on $IP:$PORT, notebooks/ (first: ${FIRST:-none}); stop with Ctrl-C twice"
if [ "${OPTICAM_LAB_DRY_RUN:-0}" = 1 ]; then
  echo .venv/bin/python -m jupyterlab "${args[@]}" "$@"
  exit 0
fi
exec .venv/bin/python -m jupyterlab "${args[@]}" "$@"
