"""Neural graphs: a model's neurons as nodes and its parameters as edges.

``build_neural_graph(model)`` derives the graph from the model's computation:

* ``trace.py``: symbolic torch.fx tracing with parameterised modules as leaves;
* ``export_trace.py``: tracing with example inputs (``torch.export``, ATen ops with shapes) where symbolic
  tracing fails or leaves ops not understood (Hugging Face models get token ids by default);
* ``spaces.py``: neuron spaces, the nodes a tensor's feature dimension lives on;
* ``propagate.py``: propagation of spaces through the traced graph (layers, norms, residual joins,
  concatenation), with per-op / per-module fallback; ``attention.py``: attention with head nodes;
* ``assembly.py``: nodes and edge blocks put into the official layout (exact for plain chains);
* ``chain.py``: the official chain rule, used where a model cannot be traced at all;
* ``neural_graph.py``: the ``NeuralGraph`` and its exact parameter <-> edge maps; ``lpe.py``: deterministic LPE.
"""
from .builder import build_neural_graph, graph_parameters, unwrap_model
from .neural_graph import NeuralGraph, ParamSlot

__all__ = ["NeuralGraph", "ParamSlot", "build_neural_graph", "graph_parameters", "unwrap_model"]
