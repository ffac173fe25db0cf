"""``build_neural_graph``: the neural graph of any ``nn.Module``."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .chain import build_chain_graph
from .neural_graph import NeuralGraph


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module that owns the parameters: strips ``torch.compile`` and DDP/DataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def graph_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``named_parameters()`` of the unwrapped model, tied parameters once: the graph's flat order."""
    return list(unwrap_model(model).named_parameters())


def build_neural_graph(model: nn.Module, *, lpe: bool = True, max_feat_size: int = 9) -> NeuralGraph:
    """Build the neural graph of ``model``.

    Args:
        model: any ``nn.Module`` (a compiled or DDP-wrapped module is unwrapped).
        lpe: compute Laplacian positional node features; ``False`` gives zeros (exact comparisons).
        max_feat_size: feature slots per edge; larger kernels are left out of the graph.
    Returns:
        the ``NeuralGraph``; every parameter is either placed or named in ``graph.fallback``.

    Connectivity currently follows the official chain rule (``graph/chain.py``), which is exact for plain MLPs
    and convnets; where the model breaks the chain assumption, one warning says where.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_neural_graph expects an nn.Module, got {type(model).__name__}")
    named = [(name, tuple(p.shape)) for name, p in graph_parameters(model)]
    if not named:
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to build a graph of")
    graph, notes = build_chain_graph(named, lpe=lpe, max_feat_size=max_feat_size)
    problems = notes + [f"{name} left out of the graph: {why}" for name, why in graph.fallback.items()]
    if problems:
        warnings.warn(f"neural graph of {type(unwrap_model(model)).__name__}: " + "; ".join(problems),
                      stacklevel=2)
    return graph
