"""The nowcaster interface: anything with ``predict(graph, states, k)``."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..graph.neural_graph import NeuralGraph


@runtime_checkable
class Nowcaster(Protocol):
    """Predicts parameters ``k`` state spacings past the newest of ``c`` past states.

    ``predict(graph, states, k)``: ``states`` is [P, c] in the graph's flat order, oldest to newest; returns the
    predicted flat parameters [P]. ``NiNoAdam(nowcaster=...)`` accepts any object with this method.
    """

    def predict(self, graph: NeuralGraph, states: torch.Tensor, k: int) -> torch.Tensor: ...
