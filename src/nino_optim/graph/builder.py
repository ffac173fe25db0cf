"""``build_neural_graph``: the neural graph of any ``nn.Module``."""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .chain import build_chain_graph
from .aten import ExportPropagator
from .export_trace import default_example_inputs, export_graph
from .propagate import Propagator
from .trace import trace_layers
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


def build_neural_graph(model: nn.Module, *, lpe: bool = True, max_feat_size: int = 9,
                       key_bias: str = "official", example_inputs=None) -> NeuralGraph:
    """Build the neural graph of ``model`` from its computation.

    Args:
        model: any ``nn.Module`` (a compiled or DDP-wrapped module is unwrapped).
        lpe: compute Laplacian positional node features; ``False`` gives zeros (exact comparisons).
        max_feat_size: feature slots per edge; a larger kernel is split over parallel edges (a patch embedding
            becomes a linear layer over its patches), except in the chain rule, which leaves it out.
        key_bias: where an attention key bias attaches: ``"official"`` (element j to block-input neuron j, as
            the official GPT-2 graphs that the checkpoints were trained on) or ``"keys"`` (to the key neurons,
            which share the query neurons; unlike the official wiring, symmetric under within-head permutations).
        example_inputs: a tuple of positional inputs, a dict of keyword inputs, or ``(args, kwargs)``, used to
            trace with ``torch.export`` where symbolic tracing fails (Hugging Face language models get token ids
            by default).
    Returns:
        the ``NeuralGraph``; every parameter is either placed or named in ``graph.fallback``.

    The model is traced with torch.fx (``graph/trace.py``) and neuron spaces are propagated through the traced
    graph (``graph/propagate.py``); for a plain chain the result is the official graph, node for node. Where the
    model cannot be traced, the official chain rule (``graph/chain.py``) is used for the whole model; where one
    module is not understood, for that module. Either way one warning says what happened.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_neural_graph expects an nn.Module, got {type(model).__name__}")
    named_params = graph_parameters(model)
    if not named_params:
        raise ValueError(f"{type(model).__name__} has no parameters: there is nothing to build a graph of")
    graph, notes = build_traced_graph(unwrap_model(model), named_params, lpe=lpe, max_feat_size=max_feat_size,
                                      key_bias=key_bias, example_inputs=example_inputs)
    problems = notes + [f"{name} left out of the graph: {why}" for name, why in graph.fallback.items()]
    if problems:
        warnings.warn(f"neural graph of {type(unwrap_model(model)).__name__}: " + "; ".join(problems),
                      stacklevel=2)
    return graph


def _split_inputs(example_inputs) -> tuple[tuple, dict]:
    if isinstance(example_inputs, dict):
        return (), example_inputs
    if (isinstance(example_inputs, tuple) and len(example_inputs) == 2 and isinstance(example_inputs[0], tuple)
            and isinstance(example_inputs[1], dict)):
        return example_inputs
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    return tuple(example_inputs), {}


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def build_traced_graph(model: nn.Module, named_params: list[tuple[str, nn.Parameter]], *, lpe: bool = True,
                       max_feat_size: int = 9, key_bias: str = "official",
                       example_inputs=None) -> tuple[NeuralGraph, list[str]]:
    """The traced graph and its notes.

    Symbolic tracing first; where it fails, or leaves something not understood, tracing with example inputs
    (which records concrete shapes) when there are any, keeping the result with fewer problems; the chain rule
    where neither traces.
    """
    named = [(name, tuple(p.shape)) for name, p in named_params]
    options = dict(max_feat_size=max_feat_size, key_bias=key_bias)
    symbolic, symbolic_error = None, None
    for leaves in ("layers", "owners"):  # custom modules traced through; kept whole where that fails
        try:
            symbolic = Propagator(trace_layers(model, leaves), model, named_params, **options)
            symbolic.run()
            if not symbolic.notes and not symbolic.fallback:
                return _finish(symbolic, lpe)
            break
        except Exception as err:  # noqa: BLE001 - any tracing failure: try example inputs, then the chain rule
            symbolic, symbolic_error = None, symbolic_error or _first_line(err)
    inputs = _split_inputs(example_inputs) if example_inputs is not None else default_example_inputs(model)
    exported, export_error = None, None
    if inputs is not None:
        try:
            gm, placeholders = export_graph(model, *inputs)
            exported = ExportPropagator(gm, model, placeholders, named_params, **options)
            exported.run()
        except Exception as err:  # noqa: BLE001
            exported, export_error = None, _first_line(err)
    candidates = [p for p in (symbolic, exported) if p is not None]
    if candidates:
        best = min(candidates, key=lambda p: (len(p.fallback), len(p.notes)))  # symbolic first on ties
        return _finish(best, lpe)
    graph, notes = build_chain_graph(named, lpe=lpe, max_feat_size=max_feat_size)
    why = (f"nor torch.export with the example inputs ({export_error})" if export_error
           else "and there are no example inputs")
    return graph, [f"torch.fx cannot trace the model ({symbolic_error}) {why}; "
                   f"the chain rule of the official code is used"] + notes


def _finish(prop: Propagator, lpe: bool) -> tuple[NeuralGraph, list[str]]:
    graph = prop.graph.assembly.finish(fallback=prop.fallback, lpe=lpe)
    for info in graph.params:
        if not info.placed and info.name not in graph.fallback:
            graph.fallback[info.name] = "only partly placed"
    return graph, prop.notes
