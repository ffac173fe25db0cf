"""Symbolic tracing of a model with torch.fx, parameterised modules kept as leaves.

A module that owns parameters directly (``Linear``, ``Conv2d``, ``LayerNorm``, a custom module with its own
``nn.Parameter``) is kept as one ``call_module`` node, so the propagation sees layers rather than their
arithmetic; containers (``Sequential``, blocks) are traced through. torch.nn's own parameter-free modules are
leaves as usual (``ReLU``, ``Dropout``, pooling, ``Flatten``).
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

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, nn.Sequential):
            return False
        if any(True for _ in m.parameters(recurse=False)):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace_layers(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model`` with layers as leaves. Raises whatever fx raises when it cannot trace."""
    tracer = LayerTracer()
    graph = tracer.trace(model)
    return fx.GraphModule(model, graph)
