"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, offline (numpy + gzip only).

The four IDX files live in ``/usr/share/datasets/fashion-mnist`` (override with ``NINO_FASHION_MNIST``).
The split is the paper's (reference section 5.1): train = the first 55,000 training images
(n - n // 12), test = all 10,000 test images, pixels scaled to [0, 1] then normalised with
mean 0.2860, std 0.3530. No augmentation.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "NINO_FASHION_MNIST"
MEAN, STD = 0.2860, 0.3530
FILES = {"train_images": ("train-images-idx3-ubyte.gz", 16), "train_labels": ("train-labels-idx1-ubyte.gz", 8),
         "test_images": ("t10k-images-idx3-ubyte.gz", 16), "test_labels": ("t10k-labels-idx1-ubyte.gz", 8)}


class DatasetMissingError(FileNotFoundError):
    """The Fashion-MNIST files are not where we looked."""


@dataclass
class FashionMNIST:
    """Normalised tensors: ``train_x`` [N, 1, 28, 28] float32, ``train_y`` [N] int64, same for test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def subset(self, train: int | None = None, test: int | None = None) -> "FashionMNIST":
        """The first ``train`` training and ``test`` test examples (for quick tests)."""
        return FashionMNIST(self.train_x[:train], self.train_y[:train], self.test_x[:test], self.test_y[:test])

    def to(self, device: torch.device | str) -> "FashionMNIST":
        """The same tensors on ``device`` (not copied where they are there already)."""
        return FashionMNIST(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def fashion_mnist_dir() -> Path:
    """Where the IDX files are read from: ``$NINO_FASHION_MNIST`` or the Debian package's directory."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _missing_message(root: Path, name: str) -> str:
    return (f"Fashion-MNIST file {name} not found in {root}. Install the data offline with "
            f"`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; it puts the files in {DEFAULT_DIR}), "
            f"or point {ENV_VAR} at a directory holding the four *-ubyte.gz files.")


def is_available(root: str | os.PathLike | None = None) -> bool:
    """True when all four IDX files are present."""
    root = Path(root) if root is not None else fashion_mnist_dir()
    return all((root / name).is_file() for name, _ in FILES.values())


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_raw(root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The four arrays, uint8: images [60000, 28, 28] / [10000, 28, 28], labels [60000] / [10000]."""
    root = Path(root) if root is not None else fashion_mnist_dir()
    arrays = {}
    for key, (name, offset) in FILES.items():
        path = root / name
        if not path.is_file():
            raise DatasetMissingError(_missing_message(root, name))
        arrays[key] = _read_idx(path, offset)
    arrays["train_images"] = arrays["train_images"].reshape(-1, 28, 28)
    arrays["test_images"] = arrays["test_images"].reshape(-1, 28, 28)
    if len(arrays["train_images"]) != len(arrays["train_labels"]) or \
            len(arrays["test_images"]) != len(arrays["test_labels"]):
        raise ValueError(f"Fashion-MNIST files in {root} are inconsistent (image and label counts differ)")
    return arrays


def _normalise(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.copy()).float().div_(255).sub_(MEAN).div_(STD).unsqueeze_(1)


def load_fashion_mnist(root: str | os.PathLike | None = None, *, paper_split: bool = True) -> FashionMNIST:
    """Fashion-MNIST as normalised tensors.

    Args:
        root: directory with the IDX ``.gz`` files (default: ``fashion_mnist_dir()``).
        paper_split: keep only the first ``n - n // 12`` (55,000) training images, as the official code does.

    Raises:
        DatasetMissingError: with the install command, when a file is missing.
    """
    raw = load_raw(root)
    n = len(raw["train_images"])
    keep = n - n // 12 if paper_split else n
    return FashionMNIST(
        train_x=_normalise(raw["train_images"][:keep]),
        train_y=torch.from_numpy(raw["train_labels"][:keep].astype(np.int64)),
        test_x=_normalise(raw["test_images"]),
        test_y=torch.from_numpy(raw["test_labels"].astype(np.int64)),
    )
