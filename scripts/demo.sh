#!/usr/bin/env bash
# The README's demo from a fresh machine: Adam vs NiNoAdam on Fashion-MNIST (FM-16), about 10 minutes on a
# 2-core CPU. Arguments are passed to examples/demo.py (e.g. --steps 10000 --eval-every 50 --out x.png;
# --official DIR adds the official NiNo checkpoint DIR/nino_no_posw.pt to the comparison).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
# torch first, pinned: this resolves to the local CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install torch==2.13.0
python -m pip install -e '.[examples]'

if [ -n "${NINO_FASHION_MNIST:-}" ]; then
    if [ ! -f "$NINO_FASHION_MNIST/train-images-idx3-ubyte.gz" ]; then
        echo "NINO_FASHION_MNIST=$NINO_FASHION_MNIST holds no Fashion-MNIST *-ubyte.gz files" >&2
        exit 1
    fi
elif [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "Fashion-MNIST not found: installing the Debian package dataset-fashion-mnist" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO apt-get install -y dataset-fashion-mnist
fi

exec python examples/demo.py "$@"
