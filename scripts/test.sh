#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the test suite.
# Usage: ./scripts/test.sh [pytest args]   (e.g. -m slow for the long tests)
set -euo pipefail
cd "$(dirname "$0")/.."

# Real data for the benchmark tests, from the Debian mirror: Fashion-MNIST and the King James Bible (lm task).
if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v bible > /dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends dataset-fashion-mnist bible-kjv
fi

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
# torch first and pinned: a CPU wheel on local disk. An unpinned torch would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
pip install -q -e '.[test,examples]'
python -m pytest -q "$@"
