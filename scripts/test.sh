#!/usr/bin/env bash
# Set up a virtual environment on a fresh machine and run the whole test suite, slow tests included (CI runs
# this). A plain `pytest` runs the fast tests only.
# Usage: ./scripts/test.sh [pytest args]   (e.g. -m "not slow" for the fast tests, -m slow for the slow ones)
# Reference files (golden data, official checkpoints): $NINO_REFERENCE_DIR, by default ../shared beside the
# repository (tests/conftest.py); NINO_REQUIRE_GOLDEN=1 makes a missing one a failure instead of a skip.
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
python -m pytest -q -m "slow or not slow" "$@"  # a later -m in "$@" takes precedence
