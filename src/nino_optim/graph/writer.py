"""``GraphWriter``: what the propagation rules may do to the graph under construction.

The rules for layers (``layers.py``), joins (``joins.py``) and attention (``attention.py``) are functions of a
``GraphWriter`` and the values they read. It owns the ``GraphAssembly`` and the bookkeeping around it: which
parameter an object is, which parameters are placed, the notes for the user's warning and the reasons a
parameter is left out.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .assembly import EXTRA_ROLE, INPUT_ROLE, OUTPUT_ROLE, GraphAssembly
from .chain import build_chain_graph, edge_type_of
from .spaces import LazyInput, Space, Unknown


class GraphWriter:
    """Nodes, edge blocks, notes and fallbacks of one graph being built.

    Args:
        named_params: ``(name, parameter)`` in the graph's flat order.
        max_feat_size: feature slots per edge.
        key_bias: where an attention key bias attaches (``"official"`` or ``"keys"``, see ``build_neural_graph``).
    """

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], *, max_feat_size: int = 9,
                 key_bias: str = "official"):
        if key_bias not in ("official", "keys"):
            raise ValueError(f"key_bias must be 'official' or 'keys', got {key_bias!r}")
        self.key_bias = key_bias
        self.max_feat_size = max_feat_size
        self.named_shapes = [(name, tuple(p.shape)) for name, p in named_params]
        self.params = [p for _, p in named_params]
        self.param_index = {id(p): i for i, (_, p) in enumerate(named_params)}
        self.assembly = GraphAssembly(self.named_shapes)
        self.notes: list[str] = []  # what the user's warning lists
        self.fallback: dict[str, str] = {}  # parameter name -> why it is left out
        self.embedded: dict[int, Space] = {}  # lookup table (parameter index) -> the neurons it embeds into
        self._done: set = set()

    # ------------------------------------------------------------------ bookkeeping
    def first_time(self, key) -> bool:
        """True the first time ``key`` is seen: a join or an attention wired once, however often it is traced."""
        if key in self._done:
            return False
        self._done.add(key)
        return True

    def index(self, p) -> int | None:
        """The flat-order index of parameter object ``p`` (None for anything else)."""
        return None if p is None else self.param_index.get(id(p))

    def param(self, mod, attr: str) -> int | None:
        """The index of ``mod.<attr>`` when it is a parameter of the model."""
        return self.index(getattr(mod, attr, None))

    def name(self, idx: int) -> str:
        return self.named_shapes[idx][0]

    def shape(self, idx: int) -> tuple[int, ...]:
        return self.named_shapes[idx][1]

    def placed(self, idx: int | None) -> bool:
        return idx is not None and idx in self.assembly.placed

    def note(self, text: str) -> None:
        self.notes.append(text)

    # ------------------------------------------------------------------ nodes and edges
    def input_nodes(self, x, features: int, dim: int, layer: int, who: str) -> torch.Tensor:
        """Node of each of the ``features`` input elements of a layer; fresh nodes where they are not known."""
        if isinstance(x, LazyInput):
            if x.space is None:
                nodes = self.assembly.new_nodes(features, layer, INPUT_ROLE)
                x.space = Space(nodes, dim=dim, layer=layer)
                return nodes
            x = x.space
        if isinstance(x, Space):
            nodes = x.expand(features) if x.dim == dim else None
            if nodes is not None:
                return nodes
            where = f"its input has {x.size} neurons" + ("" if x.dim == dim else f" on dim {x.dim}, not {dim}")
            self.note(f"{who}: expects {features} inputs but {where}; its inputs get their own nodes")
        return self.assembly.new_nodes(features, layer, INPUT_ROLE)

    def output_space(self, size: int, layer: int, *, dim: int = -1, ndim: int | None = None, **fields) -> Space:
        """``size`` new output neurons of the layer whose weight is parameter ``layer``."""
        return Space(self.assembly.new_nodes(size, layer, OUTPUT_ROLE), dim=dim, ndim=ndim, layer=layer, **fields)

    def attach(self, idx: int | None, space: Space, etype: int | None = None) -> None:
        """A vector parameter acting on ``space``'s neurons (shape ``(size,)``, or ``(1, 1, size)`` and the like):
        its own node with one edge to each neuron (of type ``etype``, by default the official type of its name
        and shape)."""
        if idx is None or self.placed(idx):
            return
        name, shape = self.named_shapes[idx]
        if shape[-1:] != (space.size,) or math.prod(shape) != space.size or not space.plain:
            self.fallback[name] = f"shape {shape} does not match the {space.size} neurons it acts on"
            return
        node = self.assembly.new_nodes(1, space.layer, EXTRA_ROLE, index_base=idx)
        self.assembly.add_param_block(idx, node.expand(space.size), space.nodes,
                                      edge_type_of(name, shape) if etype is None else etype, torch.arange(space.size))

    def dense(self, w: int | None, in_nodes: torch.Tensor, out_nodes: torch.Tensor, etype: int,
              elem: torch.Tensor) -> None:
        """Weight edges: ``elem`` [n_in, n_out, feat] flat element indices; edge ``i * n_out + o``."""
        if w is None:
            return
        n_in, n_out = elem.shape[:2]
        src = in_nodes.repeat_interleave(n_out)
        dst = out_nodes.repeat(n_in)
        self.assembly.add_param_block(w, src, dst, etype, elem.reshape(n_in * n_out, -1))

    def weight_layer(self, name: str, w: int | None, b: int | None) -> int:
        """The sort key of a layer's nodes: its weight's index (or its bias's); notes a weight placed before."""
        if self.placed(w):
            self.note(f"{name}: its weight is shared with an earlier layer and placed there only")
            return w
        return w if w is not None else (b if b is not None else -1)

    # ------------------------------------------------------------------ what is not understood
    def module_fallback(self, name: str, params, why: str, silent: bool = False) -> Unknown:
        """Parameters ``params`` (indices) of layer ``name`` are left out, for reason ``why``."""
        for idx in params:
            if idx is not None and not self.placed(idx):
                self.fallback[self.name(idx)] = f"{name} {why}"
        if not silent:
            self.note(f"{name}: {why}; its parameters are left out")
        return Unknown(why)

    def chain_fallback(self, name: str, mod: nn.Module) -> Unknown:
        """A parameterised module of a kind not understood: the chain rule on its own parameters."""
        own = [(n, p) for n, p in mod.named_parameters() if id(p) in self.param_index
               and not self.placed(self.param_index[id(p)])]
        why = f"{type(mod).__name__} is not understood"
        self.note(f"{name} ({type(mod).__name__}): not understood; its parameters use the chain rule")
        if not own:
            return Unknown(why)
        sub, _ = build_chain_graph([(n, tuple(p.shape)) for n, p in own], lpe=False, max_feat_size=self.max_feat_size)
        first = self.param_index[id(own[0][1])]
        nodes = self.assembly.new_nodes(sub.num_nodes, first, OUTPUT_ROLE)
        src, dst = sub.edge_index
        for info, (n, p) in zip(sub.params, own):
            idx = self.param_index[id(p)]
            if not info.placed:
                self.fallback[f"{name}.{n}" if name else n] = sub.fallback.get(n, "not placed by the chain rule")
                continue
            edges = sub.param_edge[info.offset:info.offset + info.numel]
            slots = sub.param_slot[info.offset:info.offset + info.numel]
            uniq = torch.unique(edges)
            elem = torch.full((uniq.numel(), sub.feat_size), -1, dtype=torch.long)
            elem[torch.searchsorted(uniq, edges), slots] = torch.arange(info.numel)
            width = int((elem >= 0).sum(1).max())
            self.assembly.add_param_block(idx, nodes[src[uniq]], nodes[dst[uniq]], int(sub.edge_type[uniq[0]]),
                                          elem[:, :width])
        return Unknown(why)
