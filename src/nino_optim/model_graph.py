"""The neural graph of the model an optimizer trains: built once, from example inputs where tracing needs them.

Symbolic tracing needs no inputs, but models with data-dependent control flow (or ops it cannot follow) trace
better with example inputs. When the input-free graph is imperfect, a forward pre-hook keeps the first
training batch (references, no copy) and removes itself; the graph is then rebuilt from that batch the first
time it is needed (``NiNoAdam`` asks at the end of its first step, so that problems are reported then). Without a
forward pass by then, the input-free graph is used and its warnings are shown.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .graph import NeuralGraph, build_neural_graph, unwrap_model
from .graph.neural_graph import LPE_DIM


class ModelGraph:
    """Lazily finalised ``NeuralGraph`` of ``model``.

    Args:
        model: the module being trained (compiled or DDP wrappers are unwrapped by the builder).
        lpe: compute Laplacian positional node features.
    """

    def __init__(self, model: nn.Module, lpe: bool):
        self.model, self.use_lpe = model, lpe
        self._inputs: tuple[tuple, dict] | None = None
        self._pending_lpe: torch.Tensor | None = None
        self._hook = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = build_neural_graph(model, lpe=lpe)
        # The builder's own report ("neural graph of ...") means the graph is imperfect; others pass through.
        self._warnings = [w for w in caught if str(w.message).startswith("neural graph of")]
        for w in caught:
            if w not in self._warnings:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._graph: NeuralGraph | None = None if self._warnings else graph
        self._provisional = graph
        if self._warnings:
            self._hook = unwrap_model(model).register_forward_pre_hook(self._keep_inputs, with_kwargs=True)

    @classmethod
    def of(cls, graph: NeuralGraph) -> "ModelGraph":
        """A ``ModelGraph`` that is final already (e.g. the chain of a parameter list)."""
        self = cls.__new__(cls)
        self.model, self.use_lpe, self._inputs, self._pending_lpe, self._hook = None, graph.use_lpe, None, None, None
        self._warnings, self._graph, self._provisional = [], graph, None
        return self

    @property
    def ready(self) -> bool:
        """Whether the graph is final (built, or built from example inputs)."""
        return self._graph is not None

    def _keep_inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        detach = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        self._inputs = (tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()})
        self._hook.remove()

    def get(self) -> NeuralGraph:
        """The final graph (built now if needed)."""
        if self._graph is None:
            self._hook.remove()
            graph = None
            if self._inputs is not None:
                try:
                    graph = build_neural_graph(self.model, lpe=self.use_lpe, example_inputs=self._inputs)
                except Exception as err:  # fall back to the input-free graph rather than stop training
                    warnings.warn(f"NiNoAdam: building the graph from the first batch failed ({err}); using the "
                                  f"graph traced without inputs", stacklevel=3)
            if graph is None or graph.num_params != self._provisional.num_params:
                graph = self._provisional
                for w in self._warnings:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            self._graph, self._inputs, self._provisional = graph, None, None
            if self._pending_lpe is not None:
                self.restore_lpe(self._pending_lpe)
        return self._graph

    def restore_lpe(self, lpe: torch.Tensor) -> None:
        """Use a saved positional encoding [N, 8] (from a checkpoint); applied once the graph is final."""
        if self._graph is None:
            self._pending_lpe = lpe
        elif tuple(lpe.shape) == (self._graph.num_nodes, LPE_DIM):
            self._graph.lpe = lpe
        else:
            warnings.warn(f"NiNoAdam: the checkpoint's positional encoding has shape {tuple(lpe.shape)}, this "
                          f"graph has {self._graph.num_nodes} nodes; it is recomputed instead", stacklevel=3)
        self._pending_lpe = None if self._graph is not None else lpe
