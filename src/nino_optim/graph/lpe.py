"""Laplacian positional encoding (LPE) of a neural graph, made deterministic.

The official code takes eigenvectors 2..9 of the unweighted, symmetrised, symmetric-normalised Laplacian
(self-loops removed) with a random sign per column and a random ARPACK start vector, so two builds of the same
graph differ. Here the start vector is fixed and each column's sign is chosen so that its largest-magnitude
entry is positive: the same graph always gets the same encoding.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

DENSE_BELOW = 100  # nodes; the official code switches from dense eigh to ARPACK at this size


def normalized_laplacian(edge_index: torch.Tensor, num_nodes: int) -> sp.csr_matrix:
    """L = I - D^-1/2 A D^-1/2 of the unweighted, symmetrised graph without self-loops. [N, N] sparse."""
    src, dst = edge_index.cpu().numpy()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    adj = sp.coo_matrix((np.ones(2 * len(src)), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
                        shape=(num_nodes, num_nodes)).tocsr()
    adj.data[:] = 1.0  # duplicates coalesced to a single unweighted edge
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    return (sp.identity(num_nodes, format="csr") - d @ adj @ d).tocsr()


def laplacian_positional_encoding(edge_index: torch.Tensor, num_nodes: int, k: int = 8) -> torch.Tensor:
    """Eigenvectors 2..k+1 (ascending eigenvalue) of the normalised Laplacian, with fixed signs.

    Args:
        edge_index: LongTensor [2, E].
        num_nodes: N.
        k: number of eigenvectors kept.
    Returns:
        float32 [N, k]; columns beyond N-1 available eigenvectors are zero.
    """
    lap = normalized_laplacian(edge_index, num_nodes)
    want = min(k + 1, num_nodes)
    if num_nodes < DENSE_BELOW:
        vals, vecs = np.linalg.eigh(lap.toarray())
    else:
        v0 = np.full(num_nodes, 1.0 / np.sqrt(num_nodes))  # fixed start vector: ARPACK is then deterministic
        v0 += np.linspace(0.0, 1e-3, num_nodes)  # not an exact eigenvector, so ARPACK can leave it
        vals, vecs = spla.eigsh(lap, k=want, which="SA", v0=v0)
    order = np.argsort(vals, kind="stable")[:want]
    vecs = vecs[:, order[1:]]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    out = torch.zeros(num_nodes, k)
    out[:, : vecs.shape[1]] = torch.from_numpy(vecs).float()
    return out
