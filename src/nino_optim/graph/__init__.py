"""Neural graphs: a model's neurons as nodes and its parameters as edges."""
from .builder import build_neural_graph, graph_parameters, unwrap_model
from .neural_graph import NeuralGraph, ParamSlot

__all__ = ["NeuralGraph", "ParamSlot", "build_neural_graph", "graph_parameters", "unwrap_model"]
