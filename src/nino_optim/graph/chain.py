"""The chain rule of the official code: a model as a sequence of layers in ``named_parameters()`` order.

A layer is a weight (``ndim >= 2``, PyTorch layout ``(out, in, *kernel)``) followed by the 1-D tensors (bias,
norm weight and bias) that act on its outputs. Node layout, edge order and edge types follow the official
generic graph (reference section 2.1): the first layer's inputs are nodes ``0..n_in-1``; each layer then gets
one extra node per 1-D tensor, followed by its ``n_out`` output neurons; a weight's edges are input-major
(edge ``i * n_out + j``) with the kernel in the feature slots; self-loops for every node come last.

Unlike the official code, dimensions are checked: a layer whose input size does not match the previous
layer's output gets fresh input nodes (with a warning), and tensors that cannot be placed (scalars, kernels
over ``max_feat_size`` elements, 1-D tensors that do not match their layer) are reported instead of crashing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .neural_graph import BIAS, CONV, FC, NORM, SELF_LOOP, NeuralGraph, ParamSlot


def edge_type_of(name: str, shape: tuple[int, ...]) -> int:
    """Official edge type of a parameter tensor from its name and shape."""
    if len(shape) == 2:
        return FC
    if len(shape) == 4:
        return CONV
    if len(shape) == 1 and name.endswith(".weight"):
        return NORM
    return BIAS  # biases, scalars, Conv1d (3-D) weights: "anything else" in the official code


@dataclass
class _Layer:
    weight: int  # index into the tensor list
    extras: list[int] = field(default_factory=list)  # 1-D tensors acting on this layer's outputs


def build_chain_graph(named_shapes: list[tuple[str, tuple[int, ...]]], *, lpe: bool = True,
                      max_feat_size: int = 9) -> tuple[NeuralGraph, list[str]]:
    """Build the chain neural graph of a list of ``(name, shape)`` in ``named_parameters()`` order.

    Returns:
        (graph, notes): notes describe every place where the chain assumption did not hold.
    """
    fallback: dict[str, str] = {}
    notes: list[str] = []
    layers: list[_Layer] = []
    for idx, (name, shape) in enumerate(named_shapes):
        if len(shape) == 0:
            fallback[name] = "scalar parameter"
        elif len(shape) >= 2:
            feat = math.prod(shape[2:])
            if feat > max_feat_size:
                fallback[name] = f"kernel of {feat} elements exceeds the {max_feat_size} feature slots"
                layers.append(_Layer(weight=-1))  # breaks the chain
            else:
                layers.append(_Layer(weight=idx))
        elif layers and layers[-1].weight >= 0 and named_shapes[layers[-1].weight][1][0] == shape[0]:
            layers[-1].extras.append(idx)
        else:
            fallback[name] = "1-D tensor that does not match the outputs of the preceding layer"

    num_nodes = 0
    prev_out: range | None = None
    src_blocks, dst_blocks, type_blocks = [], [], []
    num_edges = 0
    param_edge_of: dict[int, torch.Tensor] = {}
    param_slot_of: dict[int, torch.Tensor] = {}
    for layer in layers:
        if layer.weight < 0:
            prev_out = None
            continue
        name, shape = named_shapes[layer.weight]
        n_out, n_in, feat = shape[0], shape[1], math.prod(shape[2:])
        if prev_out is None or len(prev_out) != n_in:
            if prev_out is not None:
                notes.append(f"{name}: expects {n_in} inputs but the preceding layer has {len(prev_out)} outputs; "
                             f"its inputs get their own nodes")
            prev_out = range(num_nodes, num_nodes + n_in)
            num_nodes += n_in
        extra_nodes = range(num_nodes, num_nodes + len(layer.extras))
        num_nodes += len(layer.extras)
        out_nodes = range(num_nodes, num_nodes + n_out)
        num_nodes += n_out

        # Weight block: edge i * n_out + o joins input i to output o; w[o, i, s] sits in slot s.
        ins = torch.arange(prev_out.start, prev_out.stop)
        outs = torch.arange(out_nodes.start, out_nodes.stop)
        src_blocks.append(ins.repeat_interleave(n_out))
        dst_blocks.append(outs.repeat(n_in))
        type_blocks.append(torch.full((n_in * n_out,), edge_type_of(name, shape)))
        o, i, s = torch.meshgrid(torch.arange(n_out), torch.arange(n_in), torch.arange(feat), indexing="ij")
        param_edge_of[layer.weight] = (num_edges + i * n_out + o).reshape(-1)
        param_slot_of[layer.weight] = s.reshape(-1)
        num_edges += n_in * n_out

        for extra, node in zip(layer.extras, extra_nodes):
            extra_name = named_shapes[extra][0]
            src_blocks.append(torch.full((n_out,), node))
            dst_blocks.append(outs)
            type_blocks.append(torch.full((n_out,), edge_type_of(extra_name, (n_out,))))
            param_edge_of[extra] = torch.arange(num_edges, num_edges + n_out)
            param_slot_of[extra] = torch.zeros(n_out, dtype=torch.long)
            num_edges += n_out
        prev_out = out_nodes

    loops = torch.arange(num_nodes)
    src_blocks.append(loops)
    dst_blocks.append(loops)
    type_blocks.append(torch.full((num_nodes,), SELF_LOOP))

    params, edge_parts, slot_parts = [], [], []
    offset = 0
    for idx, (name, shape) in enumerate(named_shapes):
        placed = idx in param_edge_of
        slot = ParamSlot(name, tuple(shape), offset, placed, edge_type_of(name, tuple(shape)))
        params.append(slot)
        edge_parts.append(param_edge_of.get(idx, torch.full((slot.numel,), -1)))
        slot_parts.append(param_slot_of.get(idx, torch.full((slot.numel,), -1)))
        offset += slot.numel
    feat_size = max([1] + [math.prod(named_shapes[l.weight][1][2:]) for l in layers if l.weight >= 0])
    empty = torch.zeros(0, dtype=torch.long)
    graph = NeuralGraph(
        num_nodes=num_nodes,
        edge_index=torch.stack([torch.cat(src_blocks), torch.cat(dst_blocks)]).long(),
        edge_type=torch.cat(type_blocks).long(),
        feat_size=feat_size,
        params=params,
        param_edge=torch.cat(edge_parts or [empty]).long(),
        param_slot=torch.cat(slot_parts or [empty]).long(),
        pos_w=torch.zeros(num_nodes, dtype=torch.long),
        fallback=fallback,
        use_lpe=lpe,
    )
    return graph, notes
