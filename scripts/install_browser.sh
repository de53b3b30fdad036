#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/test_browser.py), when it is missing; called by
# scripts/setup.sh. Never fails: the course and every other test work without a browser, so a failed install is a
# warning that says how to do it by hand.
#
#   OPTICAM_SETUP_BROWSER=0   do nothing (scripts/lab.sh sets this: the course needs no browser of its own)
#   OPTICAM_CHROMIUM          another Chromium binary to use instead of /usr/bin/chromium
set -uo pipefail

# The browser test drives Debian's Chromium (no browser is downloaded by Playwright): install it when missing and
# apt-get is there (as root, or with sudo); elsewhere say how (or set OPTICAM_CHROMIUM to another Chromium).
no_browser() {
  echo "[setup] WARNING: $1. The course and every other test work without it; tests/test_browser.py needs" \
    "Chromium: 'sudo apt-get install --no-install-recommends chromium' (or OPTICAM_CHROMIUM=/path/to/chromium," \
    "or OPTICAM_SKIP_BROWSER_TESTS=1 to skip that test on purpose)" >&2
}
if [ "${OPTICAM_SETUP_BROWSER:-1}" = 0 ]; then
  : # asked not to (scripts/lab.sh: the course needs no browser of its own)
elif [ ! -x "${OPTICAM_CHROMIUM:-/usr/bin/chromium}" ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    no_browser "no /usr/bin/chromium and no apt-get to install it"
  else
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
      no_browser "Chromium is missing and installing it needs root (no sudo here)"
    else
      echo "[setup] installing Debian's chromium for tests/test_browser.py${SUDO:+ (with sudo)}"
      if ! { $SUDO apt-get update -q &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; then
        no_browser "apt-get could not install chromium"
      fi
    fi
  fi
fi

exit 0
