"""Shared fixtures: the reference files (golden data, official checkpoints) and the golden models.

Reference files are found through one environment variable, ``NINO_REFERENCE_DIR``: a directory holding
``golden/`` and ``upstream-checkpoints/``. Unset, it defaults here to ``../shared`` beside the repository (and
subprocesses of the tests inherit it). A test whose reference file is missing is skipped, saying which; with
``NINO_REQUIRE_GOLDEN=1`` (set by CI) it fails instead.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

REFERENCE_ENV = "NINO_REFERENCE_DIR"
os.environ.setdefault(REFERENCE_ENV, str(Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = Path(os.environ[REFERENCE_ENV])
GOLDEN = REFERENCE / "golden"
CHECKPOINTS = REFERENCE / "upstream-checkpoints"


def reference_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; else skip the test, or fail it when ``NINO_REQUIRE_GOLDEN=1``."""
    if path.is_file():
        return path
    message = f"{what} {path} not present ({REFERENCE_ENV}={REFERENCE})"
    if os.environ.get("NINO_REQUIRE_GOLDEN") == "1":
        pytest.fail(message + "; NINO_REQUIRE_GOLDEN=1 requires every reference file", pytrace=False)
    pytest.skip(message)


def golden_case(name: str) -> dict[str, torch.Tensor]:
    """Tensors of one golden case (``case1_nino_linear`` ...), or skip (fail) when the file is missing."""
    from safetensors.torch import load_file

    return load_file(reference_file(GOLDEN / f"{name}.safetensors", "golden data"))


def golden_index() -> dict:
    return json.loads(reference_file(GOLDEN / "golden.json", "golden index").read_text())


def official_checkpoint(name: str) -> Path:
    """Path of an official checkpoint (``nino_no_posw.pt`` ...), or skip (fail) when it is missing."""
    return reference_file(CHECKPOINTS / name, "official checkpoint")


class TwoLayer(nn.Module):
    """Linear(2,3) -> ReLU -> Linear(3,2), the golden cases 1 and 4a."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def fm16() -> nn.Sequential:
    """The FM-16 convnet of the official code (golden cases 2 and 4b)."""
    fc = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3, padding="same"), nn.ReLU(),
                       nn.Conv2d(32, 32, 3, padding="same"), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                       nn.Linear(32, 10))
    return fc


def _fashion_mnist_available() -> bool:
    from nino_optim.bench.data import is_available

    return is_available()


needs_fashion_mnist = pytest.mark.skipif(
    not _fashion_mnist_available(),
    reason="Fashion-MNIST not installed: `sudo apt-get install dataset-fashion-mnist` or set NINO_FASHION_MNIST=<dir>")


@functools.lru_cache(maxsize=1)
def fashion_mnist():
    """Fashion-MNIST, loaded once per test run."""
    from nino_optim.bench.data import load_fashion_mnist

    return load_fashion_mnist()


@pytest.fixture
def one_torch_thread():
    """Tiny models: one torch thread is as fast on an idle machine and much faster on a busy shared one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _official_gnn():
    from nino_optim import load_nowcaster

    return load_nowcaster(official_checkpoint("nino_no_posw.pt"))


@pytest.fixture(params=["random", "official"])
def symmetry_gnn(request):
    """The GNNs every symmetry test runs with: small with large random weights, and the official checkpoint."""
    if request.param == "official":
        return _official_gnn()
    from permutations import random_gnn

    return random_gnn()


def _kjv_available() -> bool:
    import shutil

    return shutil.which("bible") is not None


needs_kjv = pytest.mark.skipif(not _kjv_available(), reason="the King James Bible of the Debian package "
                               "bible-kjv is not installed (`sudo apt-get install bible-kjv`)")


@functools.lru_cache(maxsize=None)
def kjv():
    """The benchmark's text (train/validation bytes), loaded once per test run."""
    from nino_optim.bench.text import load_kjv

    return load_kjv()
