"""Subgraph mode: nowcast a model one transformer block at a time (``graph/subgraph.py``)."""
from __future__ import annotations

import torch
from torch import nn

from ..graph.neural_graph import NeuralGraph
from ..graph.subgraph import BLOCK_PATTERN, group_by_block, subgraph


class SubgraphNowcaster(nn.Module):
    """Runs ``nowcaster`` on one subgraph per transformer block and one for the remaining parameters.

    Peak memory follows the largest subgraph instead of the whole graph; messages across block borders are lost,
    which changes the predictions (measured by ``experiments/subgraph_quality.py``). Use it with
    ``NiNoAdam(..., nowcaster=SubgraphNowcaster(load_nowcaster("default")), nowcaster_device=...)``.

    Args:
        nowcaster: any object with ``predict(graph, states, k)``.
        pattern: regular expression whose first group is a parameter name's block index.
    """

    def __init__(self, nowcaster, pattern: str = BLOCK_PATTERN):
        super().__init__()
        self.inner = nowcaster
        self.pattern = pattern
        self.max_horizon = getattr(nowcaster, "max_horizon", 40)
        self._parts: tuple[NeuralGraph, list[tuple[NeuralGraph, torch.Tensor]]] | None = None

    def parts(self, graph: NeuralGraph) -> list[tuple[NeuralGraph, torch.Tensor]]:
        """(subgraph, flat rows of ``graph`` it covers) per group; built once per graph."""
        if self._parts is None or self._parts[0] is not graph:
            groups = group_by_block(graph, self.pattern).values()
            self._parts = (graph, [subgraph(graph, tensors) for tensors in groups])
        return self._parts[1]

    @torch.no_grad()
    def predict(self, graph: NeuralGraph, states: torch.Tensor, k: int) -> torch.Tensor:
        """states [P, c] -> predicted parameters [P] (float32), each group predicted on its own subgraph."""
        out = torch.empty(states.shape[0], device=states.device)
        for sub, rows in self.parts(graph):
            rows = rows.to(states.device)
            out[rows] = self.inner.predict(sub, states[rows], k).to(out.dtype)
        return out
