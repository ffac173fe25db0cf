"""Dense bipartite blocks in a neural graph's edge list, found from ``edge_index`` alone.

A weight with n_src inputs and n_dst outputs becomes n_src * n_dst edges. When they are stored source-major
(edge ``start + i * n_dst + j`` joins source node ``src + i`` to target node ``dst + j``), the features of those
edges are one [n_src, n_dst, D] array: gathering node features becomes a broadcast, and summing messages at the
targets a reduction along axis 0. The builders store weights this way, and the word embedding alone is ~90% of
a GPT's edges, so streamed inference (``nowcast/stream.py``) runs almost entirely on such views.

Blocks are read off the edge list, not taken from the builder, so they can never disagree with it: whatever is
not a block of at least ``min_edges`` edges (self-loops, residual and head edges, odd layouts) is "sparse" and
handled edge by edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Block:
    """Edges ``start .. start + n_src * n_dst - 1``, source-major, from nodes ``src ..`` to nodes ``dst ..``."""

    start: int
    src: int
    dst: int
    n_src: int
    n_dst: int

    @property
    def num_edges(self) -> int:
        return self.n_src * self.n_dst

    def split(self, max_edges: int) -> list["Block"]:
        """Row slices of this block with at most ``max(max_edges, n_dst)`` edges each (at least one row)."""
        rows = max(1, max_edges // self.n_dst)
        return [Block(self.start + r * self.n_dst, self.src + r, self.dst, min(rows, self.n_src - r), self.n_dst)
                for r in range(0, self.n_src, rows)]


@dataclass
class EdgeLayout:
    """A partition of the edges: dense ``blocks`` and the remaining ``sparse`` edge ids (LongTensor [E_s])."""

    blocks: list[Block]
    sparse: torch.Tensor

    @property
    def block_edges(self) -> int:
        return sum(b.num_edges for b in self.blocks)


def find_blocks(edge_index: torch.Tensor, min_edges: int = 256) -> EdgeLayout:
    """Partition the edges of ``edge_index`` [2, E] into source-major dense blocks and sparse edges.

    A run is a maximal stretch of consecutive edges with one source and consecutive targets; consecutive runs
    of equal length, equal first target and consecutive sources form a block. Blocks with fewer than
    ``min_edges`` edges are counted as sparse (per-block overhead would outweigh the gain).
    """
    src, dst = edge_index[0].long(), edge_index[1].long()
    num_edges = src.numel()
    if num_edges == 0:
        return EdgeLayout([], torch.zeros(0, dtype=torch.long))
    continues = torch.zeros(num_edges, dtype=torch.bool)
    continues[1:] = (src[1:] == src[:-1]) & (dst[1:] == dst[:-1] + 1)
    run_start = torch.nonzero(~continues).squeeze(1)
    run_len = torch.diff(run_start, append=torch.tensor([num_edges]))
    run_src, run_dst = src[run_start], dst[run_start]

    joins = torch.zeros(run_start.numel(), dtype=torch.bool)
    joins[1:] = (run_len[1:] == run_len[:-1]) & (run_dst[1:] == run_dst[:-1]) & (run_src[1:] == run_src[:-1] + 1)
    group_first = torch.nonzero(~joins).squeeze(1)
    group_runs = torch.diff(group_first, append=torch.tensor([run_start.numel()]))
    group_edges = group_runs * run_len[group_first]

    blocks = []
    covered = torch.zeros(num_edges, dtype=torch.bool)
    for g in torch.nonzero(group_edges >= min_edges).squeeze(1).tolist():
        r = int(group_first[g])
        block = Block(int(run_start[r]), int(run_src[r]), int(run_dst[r]), int(group_runs[g]), int(run_len[r]))
        blocks.append(block)
        covered[block.start: block.start + block.num_edges] = True
    return EdgeLayout(blocks, torch.nonzero(~covered).squeeze(1))
