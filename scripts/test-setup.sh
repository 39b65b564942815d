#!/usr/bin/env bash
# What the tests need beyond the Python packages, from Debian's package archive only:
#   - the real sample media (scripts/fetch-sample-media.sh: cached, idempotent);
#   - Chromium, for the browser test of the demo gallery (tests/test_demo_browser.py).
# Chromium is installed with apt-get when it is missing and we are root; otherwise this says
# how to install it, and the browser test skips with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/fetch-sample-media.sh

if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    echo "chromium already installed"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "chromium installed"
else
    echo "note: no chromium; the browser test will skip (apt-get install -y chromium as root)" >&2
fi
