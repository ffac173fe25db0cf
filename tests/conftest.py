"""Shared fixtures: the reference data beside the repository (../shared) and the golden models."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "golden"
CHECKPOINTS = SHARED / "upstream-checkpoints"


def golden_case(name: str) -> dict[str, torch.Tensor]:
    """Tensors of one golden case (``case1_nino_linear`` ...), or skip when ../shared/golden is absent."""
    from safetensors.torch import load_file

    path = GOLDEN / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"golden data {path} not present (it lives in ../shared/golden beside the repository)")
    return load_file(path)


def golden_index() -> dict:
    path = GOLDEN / "golden.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return json.loads(path.read_text())


def official_checkpoint(name: str) -> Path:
    """Path of an official checkpoint (``nino_no_posw.pt`` ...), or skip when ../shared is absent."""
    path = CHECKPOINTS / name
    if not path.exists():
        pytest.skip(f"official checkpoint {path} not present (reference data in ../shared/upstream-checkpoints)")
    return path


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
    """Fashion-MNIST, loaded once per test session."""
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
    """The benchmark's text (train/validation bytes), loaded once per session."""
    from nino_optim.bench.text import load_kjv

    return load_kjv()
