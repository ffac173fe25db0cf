"""Sum-aggregation of edge messages at their target nodes: the GNN's only cross-edge operation.

Two backends behind one function: PyTorch's native ``index_add_`` and torch-scatter's ``scatter_add`` (the
``scatter`` extra). ``"auto"``, the default, uses torch-scatter when it is installed. Measured on this project's
CPU machine the two are equally fast; the choice exists for platforms where one of them is not.
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "native", "torch-scatter")
_backend = "auto"


def _torch_scatter():
    try:
        import torch_scatter
    except ImportError:
        return None
    return torch_scatter


def set_scatter_backend(name: str) -> None:
    """Choose ``"native"``, ``"torch-scatter"`` (which must be installed) or ``"auto"``."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown scatter backend {name!r}; choose from {BACKENDS}")
    if name == "torch-scatter" and _torch_scatter() is None:
        raise ImportError("the torch-scatter backend needs the torch-scatter package: "
                          "pip install 'nino-optim[scatter]'")
    _backend = name


def scatter_backend() -> str:
    """The backend in use: ``"native"`` or ``"torch-scatter"``."""
    if _backend == "auto":
        return "native" if _torch_scatter() is None else "torch-scatter"
    return _backend


def scatter_add_(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` in place and returned. out [N, D], index LongTensor [n], src [n, D]."""
    src = src.to(out.dtype)
    if scatter_backend() == "torch-scatter":
        return _torch_scatter().scatter_add(src, index, dim=0, out=out)
    return out.index_add_(0, index, src)
