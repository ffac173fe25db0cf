#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the test suite.
# Usage: ./scripts/test.sh [pytest args]   (e.g. -m slow for the long tests)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's Fashion-MNIST for the benchmark tests (real data, installs offline from the Debian mirror).
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
# torch first and pinned: a CPU wheel on local disk. An unpinned torch would pull a multi-GB CUDA build.
pip install -q torch==2.13.0
pip install -q -e '.[test,examples]'
python -m pytest -q "$@"
