"""Dense bipartite blocks in a neural graph's edge list, found from ``edge_index`` alone.

A weight with n_src inputs and n_dst outputs becomes n_src * n_dst edges. When they are stored source-major
(edge ``start + i * n_dst + j`` joins source node ``src + i`` to target node ``dst + j``), the features of those
edges are one [n_src, n_dst, D] array: gathering node features becomes a broadcast, and summing messages at the
targets a reduction along axis 0. Target-major blocks (edge ``start + j * n_src + i``; the official graphs store
attention keys this way) are [n_dst, n_src, D] arrays, reduced along axis 1. The builders store weights in one
of these layouts, and the word embedding alone is ~90% of a GPT's edges, so streamed inference
(``nowcast/stream.py``) runs almost entirely on such views.

Blocks are read off the edge list, not taken from the builder, so they can never disagree with it: whatever is
not a block of at least ``min_edges`` edges (self-loops, residual and head edges, odd layouts) is "sparse" and
handled edge by edge.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Block:
    """Edges ``start .. start + n_src * n_dst - 1`` joining every node ``src ..`` to every node ``dst ..``.

    Source-major (edge ``start + i * n_dst + j`` is ``src + i -> dst + j``) unless ``target_major`` (edge
    ``start + j * n_src + i``).
    """

    start: int
    src: int
    dst: int
    n_src: int
    n_dst: int
    target_major: bool = False

    @property
    def num_edges(self) -> int:
        return self.n_src * self.n_dst

    def split(self, max_edges: int) -> list["Block"]:
        """Slices along the outer axis with at most ``max(max_edges, inner size)`` edges each (at least a row)."""
        outer, inner = (self.n_dst, self.n_src) if self.target_major else (self.n_src, self.n_dst)
        rows = max(1, max_edges // inner)
        parts = []
        for r in range(0, outer, rows):
            n = min(rows, outer - r)
            if self.target_major:
                parts.append(Block(self.start + r * inner, self.src, self.dst + r, self.n_src, n, True))
            else:
                parts.append(Block(self.start + r * inner, self.src + r, self.dst, n, self.n_dst))
        return parts


@dataclass
class EdgeLayout:
    """A partition of the edges: dense ``blocks`` and the remaining ``sparse`` edge ids (LongTensor [E_s])."""

    blocks: list[Block]
    sparse: torch.Tensor

    @property
    def block_edges(self) -> int:
        return sum(b.num_edges for b in self.blocks)


def find_blocks(edge_index: torch.Tensor, min_edges: int = 256) -> EdgeLayout:
    """Partition the edges of ``edge_index`` [2, E] into dense blocks and sparse edges.

    A run is a maximal stretch of consecutive edges with one source and consecutive targets; consecutive runs
    of equal length, equal first target and consecutive sources form a source-major block. Consecutive
    single-target blocks with equal sources and consecutive targets form a target-major block. Blocks with
    fewer than ``min_edges`` edges are counted as sparse (per-block overhead would outweigh the gain).
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
    group_runs = torch.diff(group_first, append=torch.tensor([run_start.numel()]))  # n_src of each group
    group_width = run_len[group_first]  # n_dst of each group
    group_src, group_dst = run_src[group_first], run_dst[group_first]

    # Columns: consecutive single-target groups over the same sources with consecutive targets.
    column = group_width == 1
    stacks = torch.zeros(group_first.numel(), dtype=torch.bool)
    stacks[1:] = (column[1:] & column[:-1] & (group_runs[1:] == group_runs[:-1])
                  & (group_src[1:] == group_src[:-1]) & (group_dst[1:] == group_dst[:-1] + 1))
    stack_first = torch.nonzero(~stacks).squeeze(1)
    stack_cols = torch.diff(stack_first, append=torch.tensor([group_first.numel()]))
    stack_edges = stack_cols * group_runs[stack_first] * group_width[stack_first]

    blocks = []
    covered = torch.zeros(num_edges, dtype=torch.bool)
    for i in torch.nonzero(stack_edges >= min_edges).squeeze(1).tolist():
        g, cols = int(stack_first[i]), int(stack_cols[i])
        corner = (int(run_start[group_first[g]]), int(group_src[g]), int(group_dst[g]), int(group_runs[g]))
        block = Block(*corner, cols, True) if cols > 1 else Block(*corner, int(group_width[g]))
        blocks.append(block)
        covered[block.start: block.start + block.num_edges] = True
    return EdgeLayout(blocks, torch.nonzero(~covered).squeeze(1))
