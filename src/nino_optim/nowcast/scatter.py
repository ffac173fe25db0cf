"""Sum-aggregation of edge messages at their target nodes: the GNN's only cross-edge operation.

Backends behind one switch: PyTorch's native ``index_add_`` (the default), torch-scatter's ``scatter_add`` (the
``scatter`` extra; ``set_scatter_backend("torch-scatter")``) and ``"triton"`` (the ``fused`` extra). Native is the
default because it measured faster here: 0.40 s against 0.49 s to sum 2M rows of 128 floats into 50k on one CPU
thread (torch 2.13, torch-scatter 2.1.2 built from source). On an H200 the fused Triton path was correct but
3.6x slower than native for a whole nowcast (``fused.py``); torch-scatter was not tried there.

``"triton"`` does not change ``scatter_add_`` (it falls back to ``index_add_``): it makes streamed inference
(``stream.py``) compute each piece's message sums with the fused kernel of ``fused.py`` instead, on CUDA tensors
(or CPU tensors under Triton's interpreter, ``TRITON_INTERPRET=1``); elsewhere streamed inference runs as native.
"""
from __future__ import annotations

import importlib

import torch

BACKENDS = ("native", "torch-scatter", "triton")
_backend = "native"


def _optional(module: str):
    """The module if it can be imported, else None (the optional backends' packages)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def set_scatter_backend(name: str) -> None:
    """Choose ``"native"``, ``"torch-scatter"`` or ``"triton"`` (the last two must be installed) for every
    nowcaster."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown scatter backend {name!r}; choose from {BACKENDS}")
    if name == "torch-scatter" and _optional("torch_scatter") is None:
        raise ImportError("the torch-scatter backend needs the torch-scatter package: "
                          "pip install 'nino-optim[scatter]'")
    if name == "triton" and _optional("triton") is None:
        raise ImportError("the triton backend needs the triton package (bundled with CUDA builds of PyTorch on "
                          "Linux): pip install 'nino-optim[fused]'")
    _backend = name


def scatter_backend() -> str:
    """The backend in use."""
    return _backend


def scatter_add_(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` in place and returned. out [N, D], index LongTensor [n], src [n, D].

    The ``"triton"`` backend uses ``index_add_`` here: its kernel is the fused one of streamed inference.
    """
    src = src.to(out.dtype)
    if _backend == "torch-scatter":
        return _optional("torch_scatter").scatter_add(src, index, dim=0, out=out)
    return out.index_add_(0, index, src)
