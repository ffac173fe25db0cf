"""Assembling a ``NeuralGraph`` from node groups and edge blocks collected in any order.

The propagation (``graph/propagate.py``) creates nodes and edges in the order the traced forward pass runs. The
final graph is put into the official layout (reference section 2.1) by sorting:

* nodes by the key ``(layer, role, index)``: ``layer`` is the ``named_parameters()`` index of the weight that
  creates or first reads the nodes, ``role`` is -1 for input neurons created for that weight, 0 for the extra
  nodes of 1-D tensors acting on its outputs (ordered by their own parameter index) and 1 for its output neurons;
* edge blocks by the ``named_parameters()`` index of their parameter; an auxiliary block (residual, head)
  follows the parameter block created just before it; self-loops come last.

For a plain chain this reproduces the official node and edge numbering exactly; for any other model it gives a
deterministic numbering that follows the parameter order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .chain import edge_type_of
from .neural_graph import SELF_LOOP, NeuralGraph, ParamSlot

INPUT_ROLE, EXTRA_ROLE, OUTPUT_ROLE = -1, 0, 1


@dataclass(eq=False)
class _Block:
    src: torch.Tensor  # [M] builder-local node ids
    dst: torch.Tensor  # [M]
    etype: int
    param: int  # parameter index, or -1 for auxiliary edges
    elem: torch.Tensor | None  # [M, feat] flat element index within the parameter (None for auxiliary blocks)
    order: float  # sort key


class GraphAssembly:
    """Collects nodes and edge blocks; ``finish`` returns the ``NeuralGraph``."""

    def __init__(self, named_shapes: list[tuple[str, tuple[int, ...]]]):
        self.named_shapes = named_shapes
        self._keys: list[torch.Tensor] = []  # [n, 3] per node group
        self.num_nodes = 0
        self._blocks: list[_Block] = []
        self._last_param_order = -1.0
        self._aux_count = 0
        self.placed: set[int] = set()
        self.param_type: dict[int, int] = {}  # edge type of each placed parameter (its first block)
        self._pos_w: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._alias: dict[int, int] = {}

    def alias(self, nodes: torch.Tensor, onto: torch.Tensor) -> None:
        """Identify ``nodes[i]`` with ``onto[i]``: the former disappear from the graph."""
        for a, b in zip(nodes.tolist(), onto.tolist()):
            if a != b:
                self._alias[a] = b

    def blocks_into(self, nodes: torch.Tensor, params_only: bool = True):
        """(block, mask) for every edge block with edges into ``nodes``; blocks may be edited in place."""
        out = []
        if nodes.numel() == 0:
            return out
        lo, hi = int(nodes.min()), int(nodes.max())
        member = torch.zeros(self.num_nodes, dtype=torch.bool)
        member[nodes] = True
        for b in self._blocks:
            if (params_only and b.param < 0) or b.dst.numel() == 0:
                continue
            if int(b.dst.max()) < lo or int(b.dst.min()) > hi:
                continue
            mask = member[b.dst]
            if mask.any():
                out.append((b, mask))
        return out

    def split_block(self, block: "_Block", mask: torch.Tensor) -> "_Block":
        """Move the edges ``mask`` of ``block`` into a new block of the same parameter (placed right after it)."""
        new = _Block(block.src[mask], block.dst[mask], block.etype, block.param,
                     None if block.elem is None else block.elem[mask], block.order)
        block.src, block.dst = block.src[~mask], block.dst[~mask]
        if block.elem is not None:
            block.elem = block.elem[~mask]
        self._blocks.insert(self._blocks.index(block) + 1, new)
        return new

    def set_pos_w(self, nodes: torch.Tensor, values: torch.Tensor) -> None:
        """Token-id node features (``pos_w``) of token-embedding nodes."""
        self._pos_w.append((nodes, values))

    def new_nodes(self, n: int, layer: int, role: int, index_base: int = 0) -> torch.Tensor:
        """``n`` new nodes with sort keys ``(layer, role, index_base + i)``; returns their ids."""
        ids = torch.arange(self.num_nodes, self.num_nodes + n)
        key = torch.stack([torch.full((n,), layer), torch.full((n,), role), index_base + torch.arange(n)], 1)
        self._keys.append(key)
        self.num_nodes += n
        return ids

    def add_param_block(self, param: int, src: torch.Tensor, dst: torch.Tensor, etype: int,
                        elem: torch.Tensor) -> None:
        """Edges ``src[m] -> dst[m]`` carrying elements ``elem[m, s]`` of parameter ``param`` in slot ``s``."""
        if elem.dim() == 1:
            elem = elem[:, None]
        assert src.shape == dst.shape == elem.shape[:1]
        self._blocks.append(_Block(src.long(), dst.long(), etype, param, elem.long(), float(param)))
        self._last_param_order = float(param)
        self.placed.add(param)

    def add_aux_block(self, src: torch.Tensor, dst: torch.Tensor, etype: int) -> None:
        """Auxiliary edges (residual, head): constant value, no parameter."""
        self._aux_count += 1
        order = self._last_param_order + 0.5 - 1.0 / (self._aux_count + 2)  # after the last param block, in order
        self._blocks.append(_Block(src.long(), dst.long(), etype, -1, None, order))

    def finish(self, *, fallback: dict[str, str], lpe: bool) -> NeuralGraph:
        """The ``NeuralGraph``. Consumes the collected blocks (their tensors are released): call it once."""
        rep = torch.arange(self.num_nodes)
        for a in self._alias:
            b = a
            while b in self._alias:
                b = self._alias[b]
            rep[a] = b
        kept = rep == torch.arange(self.num_nodes)
        n = int(kept.sum())
        if self._keys:
            keys = torch.cat(self._keys)
            old = torch.arange(self.num_nodes)[kept]
            perm = old[_lexsort(keys[kept])]  # perm[new] = old
        else:
            perm = torch.zeros(0, dtype=torch.long)
        relabel = torch.empty(self.num_nodes, dtype=torch.long)
        relabel[perm] = torch.arange(n)
        relabel = relabel[rep]

        # sorted() is stable: the blocks of one parameter keep their order
        blocks = sorted((b for b in self._blocks if b.src.numel()), key=lambda b: b.order)
        feat_size = max([1] + [b.elem.shape[1] for b in blocks if b.elem is not None])
        total = 0
        param_sizes = [math.prod(s) for _, s in self.named_shapes]
        starts = [0]
        for size in param_sizes:
            starts.append(starts[-1] + size)
        param_edge = torch.full((starts[-1],), -1, dtype=torch.long)
        param_slot = torch.full((starts[-1],), -1, dtype=torch.long)
        # Written straight into preallocated arrays, each block's tensors released once written: a 30M-parameter
        # GPT has 30M edges, and lists of parts plus their concatenation would hold them three times over.
        num_edges = sum(b.src.numel() for b in blocks) + n
        edge_index = torch.empty(2, num_edges, dtype=torch.long)
        edge_type = torch.empty(num_edges, dtype=torch.long)
        for b in blocks:
            m = b.src.numel()
            torch.index_select(relabel, 0, b.src, out=edge_index[0, total: total + m])
            torch.index_select(relabel, 0, b.dst, out=edge_index[1, total: total + m])
            edge_type[total: total + m] = b.etype
            if b.elem is not None:
                edge = (total + torch.arange(m))[:, None].expand_as(b.elem)
                slot = torch.arange(b.elem.shape[1])[None, :].expand_as(b.elem)
                valid = b.elem >= 0
                if bool(valid.all()):
                    flat = starts[b.param] + b.elem.reshape(-1)
                    param_edge[flat] = edge.reshape(-1)
                    param_slot[flat] = slot.reshape(-1)
                else:
                    flat = starts[b.param] + b.elem[valid]
                    param_edge[flat] = edge[valid]
                    param_slot[flat] = slot[valid]
            b.src = b.dst = torch.zeros(0, dtype=torch.long)
            b.elem = None if b.elem is None else b.elem[:0]
            total += m
        edge_index[:, total:] = torch.arange(n)  # self-loops
        edge_type[total:] = SELF_LOOP

        for b in reversed(blocks):  # a parameter's type: that of its first block
            if b.param >= 0:
                self.param_type[b.param] = b.etype
        params = []
        for idx, (name, shape) in enumerate(self.named_shapes):
            placed = bool((param_edge[starts[idx]:starts[idx + 1]] >= 0).all()) and param_sizes[idx] > 0
            if not placed:  # all or nothing: a partly placed tensor is not placed
                param_edge[starts[idx]:starts[idx + 1]] = -1
                param_slot[starts[idx]:starts[idx + 1]] = -1
            etype = self.param_type.get(idx, edge_type_of(name, tuple(shape)))
            params.append(ParamSlot(name, tuple(shape), starts[idx], placed, etype))
        pos_w = torch.zeros(n, dtype=torch.long)
        for nodes, values in self._pos_w:
            pos_w[relabel[nodes]] = values
        return NeuralGraph(
            num_nodes=n,
            edge_index=edge_index,
            edge_type=edge_type,
            feat_size=feat_size,
            params=params,
            param_edge=param_edge,
            param_slot=param_slot,
            pos_w=pos_w,
            fallback=fallback,
            use_lpe=lpe,
        )


def _lexsort(keys: torch.Tensor) -> torch.Tensor:
    """Indices that sort the rows of ``keys`` [n, k] lexicographically (stable)."""
    perm = torch.arange(keys.shape[0])
    for col in reversed(range(keys.shape[1])):
        order = torch.sort(keys[perm, col], stable=True).indices
        perm = perm[order]
    return perm
