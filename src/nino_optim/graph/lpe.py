"""Laplacian positional encoding (LPE) of a neural graph, made deterministic.

The official code takes eigenvectors 2..9 of the unweighted, symmetrised, symmetric-normalised Laplacian
(self-loops removed) with a random sign per column and a random ARPACK start vector, so two builds of the same
graph differ. Here the start vector is fixed and each column's sign is chosen so that its largest-magnitude
entry is positive: the same graph always gets the same encoding.

ARPACK only needs products with the Laplacian. When the graph's dense blocks (``graph/blocks.py``) cover
disjoint node pairs, a block's part of A x is two range sums (every source gets the sum of x over the targets
and vice versa), so the product costs O(N + blocks + sparse edges) instead of O(E) and no E-sized matrix is
built. Where blocks overlap, the explicit sparse matrix is used (same matrix, same result).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .blocks import EdgeLayout

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


def _ranges_meet(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """Whether node ranges [a0, a1) and [b0, b1) intersect (broadcasting)."""
    return (a0 < b1) & (b0 < a1)


def block_laplacian(edge_index: torch.Tensor, num_nodes: int, layout: EdgeLayout) -> spla.LinearOperator | None:
    """The normalised Laplacian as an O(N + blocks + sparse edges) operator, or None if blocks overlap.

    Each block joins every node of its source range to every node of its target range. The operator equals
    ``normalized_laplacian`` when blocks either cover disjoint node pairs (in either direction) or one's pairs
    lie within another's, and no block joins a node to itself; otherwise None is returned. Sparse edges that
    repeat a block's pair are dropped, as the unweighted adjacency counts a pair once.
    """
    if not layout.blocks:
        return None
    s0 = np.array([b.src for b in layout.blocks])
    s1 = s0 + np.array([b.n_src for b in layout.blocks])
    t0 = np.array([b.dst for b in layout.blocks])
    t1 = t0 + np.array([b.n_dst for b in layout.blocks])
    if _ranges_meet(s0, s1, t0, t1).any():
        return None

    def within(a0, a1, b0, b1):
        return (b0 <= a0) & (a1 <= b1)

    # A block whose pairs another block already covers (e.g. keys stored as the reverse of queries) is dropped;
    # any other overlap between blocks means the fast operator would count a pair twice.
    contained = ((within(s0[:, None], s1[:, None], s0, s1) & within(t0[:, None], t1[:, None], t0, t1))
                 | (within(s0[:, None], s1[:, None], t0, t1) & within(t0[:, None], t1[:, None], s0, s1)))
    np.fill_diagonal(contained, False)
    contained &= ~np.tril(contained.T)  # of identical blocks, keep one
    keep = ~contained.any(axis=1)
    s0, s1, t0, t1 = s0[keep], s1[keep], t0[keep], t1[keep]
    pairs = ((_ranges_meet(s0[:, None], s1[:, None], s0, s1) & _ranges_meet(t0[:, None], t1[:, None], t0, t1))
             | (_ranges_meet(s0[:, None], s1[:, None], t0, t1) & _ranges_meet(t0[:, None], t1[:, None], s0, s1)))
    if (pairs & ~np.eye(len(s0), dtype=bool)).any():
        return None
    src, dst = edge_index[:, layout.sparse].cpu().numpy()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    covered = np.zeros(len(src), dtype=bool)  # sparse edges repeating a block's pair (e.g. k beside q): counted once
    for a0, a1, b0, b1 in zip(s0, s1, t0, t1):
        covered |= (((src >= a0) & (src < a1) & (dst >= b0) & (dst < b1))
                    | ((src >= b0) & (src < b1) & (dst >= a0) & (dst < a1)))
    src, dst = src[~covered], dst[~covered]
    sparse_adj = sp.coo_matrix((np.ones(2 * len(src)), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
                               shape=(num_nodes, num_nodes)).tocsr()
    sparse_adj.data[:] = 1.0

    def range_add(values_at_ranges: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
        """sum over (start, stop, value) arrays of value on [start, stop), as a length-N vector."""
        diff = np.zeros(num_nodes + 1)
        for start, stop, value in values_at_ranges:
            diff += np.bincount(start, value, num_nodes + 1) - np.bincount(stop, value, num_nodes + 1)
        return np.cumsum(diff[:-1])

    deg = range_add([(s0, s1, (t1 - t0).astype(float)), (t0, t1, (s1 - s0).astype(float))])
    deg += np.asarray(sparse_adj.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(deg)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x).ravel()
        z = inv_sqrt * x
        prefix = np.concatenate([[0.0], np.cumsum(z)])
        to_src, to_dst = prefix[t1] - prefix[t0], prefix[s1] - prefix[s0]  # each block's range sums
        az = range_add([(s0, s1, to_src), (t0, t1, to_dst)]) + sparse_adj @ z
        return x - inv_sqrt * az

    return spla.LinearOperator((num_nodes, num_nodes), matvec=matvec, dtype=np.float64)


def laplacian_positional_encoding(edge_index: torch.Tensor, num_nodes: int, k: int = 8,
                                  layout: EdgeLayout | None = None) -> torch.Tensor:
    """Eigenvectors 2..k+1 (ascending eigenvalue) of the normalised Laplacian, with fixed signs.

    Args:
        edge_index: LongTensor [2, E].
        num_nodes: N.
        k: number of eigenvectors kept.
        layout: the graph's dense blocks, if known: the Laplacian is then applied blockwise (faster, less memory).
    Returns:
        float32 [N, k]; columns beyond N-1 available eigenvectors are zero.
    """
    want = min(k + 1, num_nodes)
    if num_nodes < DENSE_BELOW:
        vals, vecs = np.linalg.eigh(normalized_laplacian(edge_index, num_nodes).toarray())
    else:
        lap = block_laplacian(edge_index, num_nodes, layout) if layout is not None else None
        if lap is None:
            lap = normalized_laplacian(edge_index, num_nodes)
        v0 = np.full(num_nodes, 1.0 / np.sqrt(num_nodes))  # fixed start vector: ARPACK is then deterministic
        v0 += np.linspace(0.0, 1e-3, num_nodes)  # not an exact eigenvector, so ARPACK can leave it
        # 40 Lanczos vectors instead of ARPACK's default 2k+1 = 19: half the restarts and products (41 against
        # 91 for a 3.4M-parameter GPT-2's graph), the same eigenpairs to 1e-13
        vals, vecs = spla.eigsh(lap, k=want, which="SA", v0=v0, ncv=min(num_nodes - 1, max(40, 2 * want + 1)))
    order = np.argsort(vals, kind="stable")[:want]
    vecs = vecs[:, order[1:]]
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1.0, signs)
    out = torch.zeros(num_nodes, k)
    out[:, : vecs.shape[1]] = torch.from_numpy(vecs).float()
    return out
