"""Neural graphs: a model's neurons as nodes and its parameters as edges.

``build_neural_graph(model)`` derives the graph from the model's computation:

* ``trace.py``: symbolic torch.fx tracing with parameterised modules as leaves;
* ``export_trace.py``: tracing with example inputs (``torch.export``, ATen ops with shapes) where symbolic
  tracing fails or leaves ops not understood (Hugging Face models get example inputs by default);
* ``spaces.py``: the values a traced tensor carries (neuron spaces: the nodes its feature dimension lives on);
* ``propagate.py``: the walk over a symbolic trace and its op tables, ``aten.py`` the same over an ATen trace;
  both call the rules: ``layers.py`` (layers and norms), ``joins.py`` (residual joins, concatenation),
  ``attention.py`` (attention with head nodes), ``shapes.py`` (shape-only ops), through ``writer.py``
  (the graph under construction, notes and fallbacks);
* ``assembly.py``: nodes and edge blocks put into the official layout (exact for plain chains);
* ``chain.py``: the official chain rule, used where a model cannot be traced at all;
* ``neural_graph.py``: the ``NeuralGraph`` and its exact parameter <-> edge maps; ``lpe.py``: deterministic LPE.
"""
from .builder import build_neural_graph, graph_parameters, unwrap_model
from .neural_graph import NeuralGraph, ParamSlot

__all__ = ["NeuralGraph", "ParamSlot", "build_neural_graph", "graph_parameters", "unwrap_model"]
