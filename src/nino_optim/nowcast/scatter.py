"""Sum-aggregation of edge messages at their target nodes: the GNN's only cross-edge operation."""
from __future__ import annotations

import torch


def scatter_add_(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``out[index[i]] += src[i]`` in place. out [N, D], index LongTensor [n], src [n, D].

    PyTorch's native ``index_add_`` (as fast as torch-scatter on CPU); kept behind one function so that other
    backends can be swapped in.
    """
    return out.index_add_(0, index, src.to(out.dtype))
