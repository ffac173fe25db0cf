"""Subgraphs of a neural graph: one per transformer block, for models too large to nowcast as one graph.

A subgraph keeps the edges of a group of parameter tensors, the nodes those edges touch, and the auxiliary edges
(residual, head, self-loop) between kept nodes; nodes are renumbered and the positional encoding is computed on
the subgraph itself. Edges of other groups, and so messages across group borders, are dropped: that is the price
of the smaller graph (``experiments/subgraph_quality.py`` measures it).
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch

from .neural_graph import RESIDUAL, NeuralGraph, ParamSlot

# "h.3.", "layers.3.", "layer.3.", "blocks.3." anywhere in a parameter name: the block index.
BLOCK_PATTERN = r"(?:^|\.)(?:h|layers|layer|blocks)\.(\d+)\."


def group_by_block(graph: NeuralGraph, pattern: str = BLOCK_PATTERN) -> "OrderedDict[str, list[int]]":
    """Parameter-tensor indices (into ``graph.params``) per transformer block, in order, then the rest
    (embeddings, final norm, output layer) as ``"other"``."""
    groups: OrderedDict[str, list[int]] = OrderedDict()
    rest = []
    for i, p in enumerate(graph.params):
        match = re.search(pattern, p.name)
        if match:
            groups.setdefault(f"block {match.group(1)}", []).append(i)
        else:
            rest.append(i)
    if rest:
        groups["other"] = rest
    return groups


def subgraph(graph: NeuralGraph, tensors: list[int]) -> tuple[NeuralGraph, torch.Tensor]:
    """The subgraph holding ``graph.params[i]`` for i in ``tensors``.

    Returns:
        (subgraph, rows): ``rows`` LongTensor [P_sub] are the flat parameter indices of ``graph`` that the
        subgraph's flat parameters (in its own order) stand for.
    """
    slots = [graph.params[i] for i in sorted(tensors)]
    rows = torch.cat([torch.arange(p.offset, p.offset + p.numel) for p in slots])
    edge_of_row = graph.param_edge[rows]
    own_edges = edge_of_row[edge_of_row >= 0].unique()
    keep_node = torch.zeros(graph.num_nodes, dtype=torch.bool)
    keep_node[graph.edge_index[:, own_edges].reshape(-1)] = True
    keep_edge = (graph.edge_type >= RESIDUAL) & keep_node[graph.edge_index].all(0)  # auxiliary edges inside
    keep_edge[own_edges] = True
    old_edges = keep_edge.nonzero()[:, 0]  # ascending: the original edge order
    nodes = keep_node.nonzero()[:, 0]
    new_node = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    new_node[nodes] = torch.arange(len(nodes))
    new_edge = torch.full((graph.num_edges,), -1, dtype=torch.long)
    new_edge[old_edges] = torch.arange(len(old_edges))
    params, offset = [], 0
    for p in slots:
        params.append(ParamSlot(p.name, p.shape, offset, p.placed, p.edge_type))
        offset += p.numel
    param_edge = torch.where(edge_of_row >= 0, new_edge[edge_of_row.clamp(min=0)], edge_of_row)
    sub = NeuralGraph(num_nodes=len(nodes), edge_index=new_node[graph.edge_index[:, old_edges]],
                      edge_type=graph.edge_type[old_edges], feat_size=graph.feat_size, params=params,
                      param_edge=param_edge, param_slot=graph.param_slot[rows], pos_w=graph.pos_w[nodes],
                      fallback={p.name: graph.fallback[p.name] for p in slots if p.name in graph.fallback},
                      use_lpe=graph.use_lpe)
    return sub, rows
