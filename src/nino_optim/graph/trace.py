"""Symbolic tracing of a model with torch.fx, layers kept as leaves.

torch.nn's parameterised modules (``Linear``, ``Conv2d``, ``LayerNorm``, ``MultiheadAttention``, ...) are kept as
one ``call_module`` node each, so the propagation sees layers rather than their arithmetic; torch.nn's
parameter-free modules are leaves as usual (``ReLU``, ``Dropout``, pooling, ``Flatten``). Containers and custom
modules are traced through, so a custom module's own ``nn.Parameter`` (a position embedding, a class token, a
layer scale) appears where the forward pass uses it. Where a custom module cannot be traced through
(control flow on its inputs), ``leaves="owners"`` keeps every module that owns parameters whole instead.
"""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn


class LayerTracer(fx.Tracer):
    """fx tracer whose leaves are torch.nn modules and every module that owns parameters directly.

    Buffers read in ``forward`` become ``get_attr`` nodes, so that e.g. ``self.mask[:, :, :T, :T]`` with a
    traced ``T`` can be recorded (plain fx would index the real buffer with a proxy and fail).
    """

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if isinstance(attr_val, torch.Tensor) and not isinstance(attr_val, nn.Parameter):
            for name, buf in self.root.named_buffers():
                if buf is attr_val:
                    if name not in parameter_proxy_cache:
                        parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                    return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def __init__(self, leaves: str = "layers"):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.Sequential):
            return False
        if any(True for _ in m.parameters(recurse=False)):
            return self.leaves == "owners" or is_layer_module(m)
        return super().is_leaf_module(m, module_qualified_name)


def is_layer_module(mod: nn.Module) -> bool:
    """Modules whose parameters the propagation reads as one layer: torch.nn's own (also as the subclasses that
    wrappers such as FSDP2's ``fully_shard`` make of them), and Hugging Face GPT-2's ``Conv1D``."""
    return type(mod).__name__ == "Conv1D" or any(
        cls.__module__.startswith("torch.nn.") and cls is not nn.Module for cls in type(mod).__mro__)


def trace_layers(model: nn.Module, leaves: str = "layers") -> fx.GraphModule:
    """The fx graph of ``model``; ``leaves``: "layers" (torch.nn layers) or "owners" (every module that owns
    parameters). Raises whatever fx raises when it cannot trace."""
    graph = LayerTracer(leaves).trace(model)
    return fx.GraphModule(model, graph)
