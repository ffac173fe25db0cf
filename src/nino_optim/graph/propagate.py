"""Propagation of neuron spaces through a traced model (DESIGN section 3).

Walks the fx graph in execution order and gives every tensor a ``Space`` (``graph/spaces.py``):

* ``Linear``, ``Conv1d``/``Conv2d`` (stride, padding, dilation, groups as the data flows) and ``Embedding``
  create new neurons; their weights become edges (input-major, kernel in the slots, official edge types). A bias
  gets its own node with edges to the neurons it is added to.
* ``BatchNorm``, ``LayerNorm``, ``GroupNorm``, ``RMSNorm`` keep the neurons and attach one node per parameter
  (weight type 4, bias type 2) to the neurons they normalise.
* Element-wise ops, activations, dropout, softmax, pooling, flatten after a global pool keep the neurons; a
  flatten over spatial positions maps each flattened feature to its channel's node (checked by the next layer).
* Concatenation along features joins spaces; splitting/chunking/slicing along features takes parts of them.
* Attention (head reshapes, score products, SDPA, ``nn.MultiheadAttention``): ``graph/attention.py``.
* Two embedding lookups added (token + position) share neurons, as in the official graphs.
* **Residual joins.** Adding (or multiplying, e.g. a gated unit) two tensors on different neurons of equal size
  does not merge their nodes. As the official transformer graphs do, the result lives on the neurons of the more
  recently created operand (the branch output) and every other operand's neuron ``i`` gets a residual edge
  (type 10, constant 1) to neuron ``i`` of the result. Each layer thus keeps its own neurons, the official GPT-2
  wiring (``v.res``, ``mlp.c_fc.res``) is reproduced, and a function-preserving permutation must permute both
  sides of a residual edge alike, which is exactly the symmetry of a residual stream.

What is not understood becomes ``Unknown`` with one note naming the op; layers reading an ``Unknown`` tensor get
fresh input nodes (as the chain rule does on a dimension mismatch), and a parameterised module of an unknown
kind falls back to the chain rule for its own parameters. Every weight checks its input size against the
neurons it reads, so a graph is never silently wrong.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .assembly import EXTRA_ROLE, INPUT_ROLE, OUTPUT_ROLE, GraphAssembly
from .attention import AttentionMixin
from .chain import build_chain_graph, edge_type_of
from .neural_graph import POS_EMBED, RESIDUAL, TOKEN_EMBED
from .spaces import LazyInput, NotUnderstood, Scores, Space, Unknown, is_feature_value

_ELEMENTWISE_FUNCS = {
    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.abs, torch.neg, torch.sqrt, torch.rsqrt,
    torch.sin, torch.cos, torch.square, torch.clamp, torch.clip, torch.softmax, torch.log_softmax, torch.erf,
    F.relu, F.relu6, F.gelu, F.silu, F.elu, F.selu, F.celu, F.leaky_relu, F.softplus, F.mish, F.hardtanh,
    F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.logsigmoid, F.softmax, F.log_softmax, F.dropout,
    F.dropout1d, F.dropout2d, F.alpha_dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    operator.neg, operator.pos, torch.nn.functional.normalize, operator.pow, torch.pow, torch.masked_fill,
}
_ELEMENTWISE_METHODS = {
    "relu", "sigmoid", "tanh", "exp", "log", "abs", "neg", "sqrt", "rsqrt", "sin", "cos", "square", "clamp", "clip",
    "softmax", "log_softmax", "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type",
    "type_as", "pow", "erf", "relu_", "sigmoid_", "tanh_", "clamp_", "requires_grad_", "masked_fill",
    "masked_fill_",
}
_BINARY_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub, operator.imul,
    operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
}
_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_", "maximum", "minimum"}
_SHAPE_METHODS = {"dim", "numel", "ndimension"}


@dataclass(frozen=True)
class ShapeOf:
    """``x.shape`` / ``x.size()`` of a tensor whose neurons are known: indexing it at the feature dimension gives
    the number of neurons (so ``q, k, v = qkv(x).split(c, 2)`` with ``c = x.shape[-1]`` is understood); any other
    entry stays unknown (None)."""

    space: Space

    def at(self, index) -> int | None:
        n = self.space.ndim
        if not isinstance(index, int) or (index >= 0 and n is None):
            return None
        d = index - n if index >= 0 else index
        plain = self.space.plain and self.space.heads is None
        return int(self.space.size) if plain and d == self.space.dim else None
_KEEP_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus, nn.Mish,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


class Propagator(AttentionMixin):
    """Walks a traced model and fills a ``GraphAssembly``; collects notes and per-parameter fallback reasons."""

    def __init__(self, gm: fx.GraphModule, named_params: list[tuple[str, nn.Parameter]], *,
                 max_feat_size: int = 9, key_bias: str = "official"):
        if key_bias not in ("official", "keys"):
            raise ValueError(f"key_bias must be 'official' or 'keys', got {key_bias!r}")
        self.key_bias = key_bias
        self.gm = gm
        self.named_shapes = [(name, tuple(p.shape)) for name, p in named_params]
        self.param_index = {id(p): i for i, (_, p) in enumerate(named_params)}
        self.max_feat_size = max_feat_size
        self.assembly = GraphAssembly(self.named_shapes)
        self.notes: list[str] = []
        self.fallback: dict[str, str] = {}
        self.env: dict[fx.Node, Any] = {}
        self._joined: set[tuple[int, int]] = set()
        self._modules = dict(gm.named_modules())

    # ------------------------------------------------------------------ walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                continue
            try:
                value = self._visit(node)
            except NotUnderstood as err:
                value = self._unknown(node, str(err))
            self.env[node] = self._with_rank(node, value)
        for idx, (name, _) in enumerate(self.named_shapes):
            if idx not in self.assembly.placed and name not in self.fallback:
                self.fallback[name] = "not used by any layer the traced forward pass understands"

    def _with_rank(self, node: fx.Node, value):
        """Record the tensor rank where the tracer knows it (example-input traces carry shapes)."""
        val = node.meta.get("val")
        if isinstance(value, Space) and isinstance(val, torch.Tensor) and value.ndim != val.dim():
            return value.with_(ndim=val.dim())
        return value

    def _visit(self, node: fx.Node):
        if node.op == "placeholder":
            return LazyInput(node.name)
        args = fx.node.map_arg(node.args, lambda n: self.env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.env[n])
        if node.op == "get_attr":
            return self._get_attr(node.target)
        if node.op == "call_module":
            return self._call_module(node, self._modules[node.target], args, kwargs)
        if node.op == "call_function":
            return self._call_function(node, node.target, args, kwargs)
        if node.op == "call_method":
            return self._call_method(node, node.target, args, kwargs)
        raise NotUnderstood(f"fx op {node.op}")

    def _unknown(self, node: fx.Node, why: str):
        inputs = [self.env[n] for n in node.all_input_nodes]
        if any(isinstance(v, (Space, LazyInput)) or _has_feature(v) for v in inputs):
            self.notes.append(f"{node.name}: not understood ({why}); later layers reading it get their own input nodes")
            return Unknown(why)
        if any(isinstance(v, Unknown) for v in inputs):
            return Unknown(why)
        return None

    def _get_attr(self, target: str):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, nn.Parameter) and id(obj) in self.param_index:
            raise NotUnderstood(f"parameter {target} used directly (not through a layer)")
        return None  # buffers and constants carry no neurons

    # ------------------------------------------------------------------ modules
    def _call_module(self, node, mod: nn.Module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()), None)
        name = node.target
        if isinstance(mod, nn.Linear):
            return self._linear(name, mod, x, mod.in_features, mod.out_features, transposed=False)
        if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
            # Hugging Face GPT-2's linear layer: weight (in, out)
            return self._linear(name, mod, x, mod.weight.shape[0], mod.weight.shape[1], transposed=True)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            return self._conv(name, mod, x)
        if isinstance(mod, nn.Embedding):
            return self._embedding(name, mod, x)
        if isinstance(mod, _NORMS):
            return self._norm(name, mod, x)
        if isinstance(mod, nn.MultiheadAttention):
            return self._multihead_attention(name, mod, args, kwargs)
        if isinstance(mod, nn.TransformerEncoderLayer):
            return self._encoder_layer(name, mod, x)
        if isinstance(mod, nn.TransformerEncoder):
            for i, layer in enumerate(mod.layers):
                x = self._encoder_layer(f"{name}.layers.{i}", layer, x)
            return x if mod.norm is None else self._norm(f"{name}.norm", mod.norm, x)
        if isinstance(mod, nn.Flatten):
            return self._flatten(x, mod.start_dim, mod.end_dim)
        if isinstance(mod, _KEEP_MODULES):
            return self._keep(x)
        if any(True for _ in mod.parameters()):
            return self._chain_fallback(name, mod)
        raise NotUnderstood(f"module {type(mod).__name__}")

    def _param(self, mod: nn.Module, attr: str) -> int | None:
        p = getattr(mod, attr, None)
        if p is None:
            return None
        return self.param_index.get(id(p))

    def _input_nodes(self, x, features: int, dim: int, layer: int, who: str) -> torch.Tensor:
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
            self.notes.append(f"{who}: expects {features} inputs but {where}; its inputs get their own nodes")
        return self.assembly.new_nodes(features, layer, INPUT_ROLE)

    def _attach(self, idx: int | None, space: Space) -> None:
        """A 1-D parameter acting on ``space``'s neurons: its own node with one edge to each neuron."""
        if idx is None or idx in self.assembly.placed:
            return
        name, shape = self.named_shapes[idx]
        if shape != (space.size,) or not space.plain:
            self.fallback[name] = f"shape {shape} does not match the {space.size} neurons it acts on"
            return
        node = self.assembly.new_nodes(1, space.layer, EXTRA_ROLE, index_base=idx)
        self.assembly.add_param_block(idx, node.expand(space.size), space.nodes, edge_type_of(name, shape),
                                      torch.arange(space.size))

    def _dense(self, w: int | None, in_nodes: torch.Tensor, out_nodes: torch.Tensor, etype: int,
               elem: torch.Tensor) -> None:
        """Weight edges: ``elem`` [n_in, n_out, feat] flat element indices; edge ``i * n_out + o``."""
        if w is None:
            return
        n_in, n_out = elem.shape[:2]
        src = in_nodes.repeat_interleave(n_out)
        dst = out_nodes.repeat(n_in)
        self.assembly.add_param_block(w, src, dst, etype, elem.reshape(n_in * n_out, -1))

    def _weight_layer(self, name: str, w: int | None, b: int | None) -> int:
        if w is not None and w in self.assembly.placed:
            self.notes.append(f"{name}: its weight is shared with an earlier layer and placed there only")
            return w
        return w if w is not None else (b if b is not None else -1)

    def _linear(self, name: str, mod: nn.Module, x, n_in: int, n_out: int, transposed: bool):
        w, b = self._param(mod, "weight"), self._param(mod, "bias")
        if w is not None and w in self.assembly.placed and b is None:  # e.g. a tied lm_head: placed once, where
            return Unknown("output of a layer with a shared weight")  # first used (the official graphs agree)
        layer = self._weight_layer(name, w, b)
        in_nodes = self._input_nodes(x, n_in, -1, layer, name)
        out = Space(self.assembly.new_nodes(n_out, layer, OUTPUT_ROLE), dim=-1, ndim=_ndim(x), layer=layer,
                    made_from=in_nodes)
        if w is not None and w not in self.assembly.placed:
            elem = torch.arange(n_out * n_in)
            elem = (elem.view(n_in, n_out) if transposed else elem.view(n_out, n_in).t())[..., None]
            self._dense(w, in_nodes, out.nodes, edge_type_of(self.named_shapes[w][0], (n_out, n_in)), elem)
        self._attach(b, out)
        return out

    def _conv(self, name: str, mod: nn.Conv1d | nn.Conv2d, x):
        w, b = self._param(mod, "weight"), self._param(mod, "bias")
        spatial = mod.weight.dim() - 2
        feat = math.prod(mod.weight.shape[2:])
        if feat > self.max_feat_size:
            why = f"kernel of {feat} elements exceeds the {self.max_feat_size} feature slots"
            for idx in (w, b):
                if idx is not None:
                    self.fallback[self.named_shapes[idx][0]] = why if idx == w else f"bias of a layer left out ({why})"
            self.notes.append(f"{name}: {why}; the layer is left out")
            return Unknown(why)
        layer = self._weight_layer(name, w, b)
        c_in, c_out, g = mod.in_channels, mod.out_channels, mod.groups
        per, opg = c_in // g, c_out // g
        in_nodes = self._input_nodes(x, c_in, -(spatial + 1), layer, name)
        ndim = _ndim(x) or spatial + 2
        out = Space(self.assembly.new_nodes(c_out, layer, OUTPUT_ROLE), dim=-(spatial + 1), ndim=ndim, layer=layer)
        if w is not None and w not in self.assembly.placed:
            o = torch.arange(c_out)
            i = torch.arange(per)
            src = in_nodes[(o // opg)[None, :] * per + i[:, None]]  # [per, c_out]
            elem = ((o[None, :] * per + i[:, None]) * feat)[..., None] + torch.arange(feat)  # [per, c_out, feat]
            etype = edge_type_of(self.named_shapes[w][0], tuple(mod.weight.shape))
            self.assembly.add_param_block(w, src.reshape(-1), out.nodes.repeat(per), etype,
                                          elem.reshape(per * c_out, feat))
        self._attach(b, out)
        return out

    def _embedding(self, name: str, mod: nn.Embedding, x) -> Space:
        w = self._param(mod, "weight")
        layer = self._weight_layer(name, w, None)
        vocab, d = mod.num_embeddings, mod.embedding_dim
        from_input = isinstance(x, LazyInput)  # token ids come from the input, position ids from arange
        etype = TOKEN_EMBED if from_input and "pos" not in name.split(".")[-1] else POS_EMBED
        tokens = self.assembly.new_nodes(vocab, layer, INPUT_ROLE)
        ndim = 3 if from_input else None  # token ids (B, T): rank known; positions may be (T,) or (1, T)
        out = Space(self.assembly.new_nodes(d, layer, OUTPUT_ROLE), dim=-1, ndim=ndim, layer=layer,
                    kind="embedding")
        if w is not None and w not in self.assembly.placed:
            self._dense(w, tokens, out.nodes, etype, torch.arange(vocab * d).view(vocab, d)[..., None])
            if etype == TOKEN_EMBED:
                self.assembly.set_pos_w(tokens, torch.arange(1, vocab + 1))
        return out

    def _norm(self, name: str, mod: nn.Module, x):
        w, b = self._param(mod, "weight"), self._param(mod, "bias")
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            dims = (-1, -2) if isinstance(mod, nn.BatchNorm1d) else (-3,)
            size = mod.num_features
        elif isinstance(mod, nn.GroupNorm):
            dims, size = (-1, -2, -3, -4), mod.num_channels
        else:  # LayerNorm, RMSNorm: over the last dimension only
            shape = tuple(mod.normalized_shape)
            if len(shape) != 1:
                return self._module_fallback(name, (w, b), f"normalises over {len(shape)} dimensions")
            dims, size = (-1,), shape[0]
        return self._norm_on(name, w, b, x, dims, size, group=isinstance(mod, nn.GroupNorm))

    def _norm_on(self, name: str, w: int | None, b: int | None, x, dims: tuple, size: int, group: bool = False):
        """Norm parameters ``w``, ``b`` (indices) act on the ``size`` neurons of ``x`` (feature dim in ``dims``)."""
        if isinstance(x, LazyInput):
            if x.space is None:
                layer = w if w is not None else (b if b is not None else -1)
                x.space = Space(self.assembly.new_nodes(size, layer, INPUT_ROLE), dim=dims[0], layer=layer)
            x = x.space
        if isinstance(x, Unknown):
            return self._module_fallback(name, (w, b), "its input neurons are not known", silent=True)
        if not isinstance(x, Space) or x.dim not in dims or x.size != size or not x.plain:
            return self._module_fallback(name, (w, b), "does not match the neurons of its input")
        if group and x.ndim is not None and x.dim != -(x.ndim - 1):
            return self._module_fallback(name, (w, b), "its channels are not dimension 1")
        self._attach(w, x)
        self._attach(b, x)
        return x

    def _module_fallback(self, name: str, params, why: str, silent: bool = False) -> Unknown:
        for idx in params:
            if idx is not None and idx not in self.assembly.placed:
                self.fallback[self.named_shapes[idx][0]] = f"{name} {why}"
        if not silent:
            self.notes.append(f"{name}: {why}; its parameters are left out")
        return Unknown(why)

    def _chain_fallback(self, name: str, mod: nn.Module) -> Unknown:
        """A parameterised module of a kind not understood: the chain rule on its own parameters."""
        own = [(n, p) for n, p in mod.named_parameters() if id(p) in self.param_index
               and self.param_index[id(p)] not in self.assembly.placed]
        why = f"{type(mod).__name__} is not understood"
        self.notes.append(f"{name} ({type(mod).__name__}): not understood; its parameters use the chain rule")
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

    # ------------------------------------------------------------------ functions and methods
    def _call_function(self, node, fn, args, kwargs):
        if fn in _ELEMENTWISE_FUNCS:
            return self._keep(args[0] if args else kwargs.get("input"))
        if fn in _BINARY_FUNCS:
            return self._join(node, [*args[:2], kwargs.get("other")])
        if fn is torch.flatten:
            return self._flatten(args[0], *_args(args[1:], kwargs, ("start_dim", 0), ("end_dim", -1)))
        if fn in (torch.cat, torch.concat):
            return self._cat(node, args[0], *_args(args[1:], kwargs, ("dim", 0)))
        if fn in (torch.split, torch.chunk):
            return self._split(node, args[0], fn.__name__, *_args(args[1:], kwargs, ("arg", None), ("dim", 0)))
        if fn in (torch.mean, torch.sum, torch.amax, torch.amin):
            return self._reduce(args[0], *_args(args[1:], kwargs, ("dim", None), ("keepdim", False)))
        if fn is operator.getitem:
            return self._getitem(args[0], args[1], node.args[1])
        if fn in (operator.matmul, torch.matmul, torch.bmm):
            return self._matmul(args[0], args[1])
        if fn is F.scaled_dot_product_attention:
            q, k, v = _args(args, kwargs, ("query", None), ("key", None), ("value", None))
            return self._attention(q, k, v)
        if fn is torch.transpose:
            return self._transpose(args[0], *_args(args[1:], kwargs, ("dim0", 0), ("dim1", 1)))
        if fn is getattr:
            if args[1] == "shape":
                return _shape_of(args[0])
            if args[1] in ("dtype", "device", "ndim", "is_cuda", "requires_grad"):
                return None
            if args[1] in ("data", "real"):
                return self._keep(args[0])
            if not _has_feature(args):
                return None
            raise NotUnderstood(f"attribute {args[1]}")
        if not _has_feature((args, kwargs)):
            return _plain(args, kwargs)
        raise NotUnderstood(f"function {getattr(fn, '__name__', fn)}")

    def _call_method(self, node, method: str, args, kwargs):
        x, rest = args[0], args[1:]
        if method in _SHAPE_METHODS:
            return None
        if method == "size":
            shape = _shape_of(x)
            dim = rest[0] if rest else kwargs.get("dim")
            return shape if dim is None else shape.at(dim) if shape is not None else None
        if method in _ELEMENTWISE_METHODS:
            return self._keep(x)
        if method in _BINARY_METHODS:
            return self._join(node, [x, *rest[:1], kwargs.get("other")])
        if method == "flatten":
            return self._flatten(x, *_args(rest, kwargs, ("start_dim", 0), ("end_dim", -1)))
        if method in ("view", "reshape"):
            shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            if isinstance(x, LazyInput):
                if x.space is None:
                    return LazyInput(f"{x.name}.{method}")
                x = x.space
            if isinstance(x, Space) and x.heads is not None:
                return self._merge_heads(x, list(shape))
            if len(shape) == 2 and shape[1] == -1:
                return self._flatten(x, 1, -1)
            if isinstance(x, Space) and len(shape) >= 2 and x.plain and x.dim == -1:
                return self._split_heads(x, list(shape))
            if not is_feature_value(x):
                return None
            raise NotUnderstood(f"{method} to {len(shape)} dimensions")
        if method in ("transpose", "permute"):
            if method == "transpose":
                return self._transpose(x, *_args(rest, kwargs, ("dim0", 0), ("dim1", 1)))
            dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
            return self._permute(x, list(dims))
        if method == "matmul":
            return self._matmul(x, rest[0])
        if method in ("split", "chunk"):
            return self._split(node, x, method, *_args(rest, kwargs, ("arg", None), ("dim", 0)))
        if method in ("mean", "sum", "amax", "amin"):
            return self._reduce(x, *_args(rest, kwargs, ("dim", None), ("keepdim", False)))
        if not _has_feature((args, kwargs)):
            return _plain(args, kwargs)
        raise NotUnderstood(f"method {method}")

    def _keep(self, x):
        return x if is_feature_value(x) else None

    def _transpose(self, x, d0: int, d1: int):
        if isinstance(x, Scores) or not is_feature_value(x):
            return x if isinstance(x, Scores) else None
        if isinstance(x, LazyInput):
            raise NotUnderstood("transpose of a model input")
        if isinstance(x, Unknown):
            return x
        if x.ndim is None:
            if d0 >= 0 or d1 >= 0:
                raise NotUnderstood("transpose of a tensor of unknown rank")
            n = None
        else:
            n = x.ndim
            d0, d1 = d0 - n if d0 >= 0 else d0, d1 - n if d1 >= 0 else d1
        swap = {d0: d1, d1: d0}
        return x.with_(dim=swap.get(x.dim, x.dim),
                       head_dim=None if x.head_dim is None else swap.get(x.head_dim, x.head_dim))

    def _permute(self, x, dims: list):
        if not isinstance(x, Space):
            if isinstance(x, (Unknown, Scores)) or not is_feature_value(x):
                return x if is_feature_value(x) else None
            raise NotUnderstood("permute of a model input")
        n = len(dims)
        new_of = {(d % n) - n: k - n for k, d in enumerate(dims)}  # old negative dim -> new negative dim
        return x.with_(dim=new_of[x.dim], ndim=n,
                       head_dim=None if x.head_dim is None else new_of[x.head_dim])

    def _join(self, node, operands):
        values = [v for v in operands if is_feature_value(v)]
        if not values:
            return None
        if any(isinstance(v, Unknown) for v in values):
            return next(v for v in values if isinstance(v, Unknown))
        scores = [v for v in values if isinstance(v, Scores)]
        if scores:  # scaling or masking attention scores
            if len(values) == 1 or all(v is scores[0] for v in values):
                return scores[0]
            raise NotUnderstood("combines attention scores with other features")
        values = [v.space if isinstance(v, LazyInput) and v.space is not None else v for v in values]
        spaces = [v for v in values if isinstance(v, Space)]
        lazies = [v for v in values if isinstance(v, LazyInput)]
        if len(spaces) > 1 and all(s.kind == "embedding" and s.plain for s in spaces) and not lazies:
            # token + position embeddings: one table indexed by (token, position), so the same neurons
            first = min(spaces, key=lambda s: s.uid)
            if any(s.size != first.size for s in spaces):
                raise NotUnderstood("adds embeddings of different widths")
            for other in spaces:
                self.assembly.alias(other.nodes, first.nodes)
            return first
        if not spaces:
            if all(v is lazies[0] for v in lazies):
                return lazies[0]
            raise NotUnderstood("combines two model inputs before any layer")
        for lazy in lazies:  # an input added to a layer's output: its own neurons, joined like a residual
            ref = spaces[0]
            lazy.space = Space(self.assembly.new_nodes(ref.size, ref.layer, INPUT_ROLE), dim=ref.dim,
                               ndim=ref.ndim, layer=ref.layer, uid=-1)
            spaces.append(lazy.space)
        first = min(spaces, key=lambda s: s.uid)
        if all(s.size == first.size and s.heads == first.heads and s.dim == first.dim
               and torch.equal(s.nodes.sort().values, first.nodes.sort().values) for s in spaces):
            # the same neurons in another order within heads (rotary embeddings: x * cos + rotate_half(x) * sin)
            return first
        result = max(spaces, key=lambda s: s.uid)
        for other in spaces:
            if other.same_neurons(result):
                continue
            if other.size == 1 and other.plain:  # broadcast of a single neuron (e.g. a scalar gate)
                continue
            if other.size != result.size or not (other.plain and result.plain) or other.dim != result.dim:
                raise NotUnderstood(f"combines {other.size} neurons with {result.size} neurons")
            key = (other.uid, result.uid)
            if key not in self._joined:
                self._joined.add(key)
                self.assembly.add_aux_block(other.nodes, result.nodes, RESIDUAL)
        return result

    def _feature_dim(self, space: Space, dim: int) -> bool:
        if dim < 0:
            return dim == space.dim
        if space.ndim is not None:
            return dim - space.ndim == space.dim
        return dim == 1  # rank unknown: batch-first convention, dimension 1 holds the features

    def _flatten(self, x, start: int = 0, end: int = -1):
        if isinstance(x, LazyInput):
            return LazyInput(f"{x.name}.flatten") if x.space is None else self._flatten(x.space, start, end)
        if not isinstance(x, Space):
            return x
        if not x.plain:
            raise NotUnderstood("flattens an already flattened feature dimension")
        if x.ndim is None:
            if start != 1 or end != -1:
                raise NotUnderstood(f"flatten({start}, {end}) of a tensor of unknown rank")
            # batch-first: everything after the batch dimension is flattened
            return x.with_(dim=-1, ndim=2, inner=1 if x.dim == -1 else None, outer=None if x.dim == -1 else 1)
        n = x.ndim
        s, e = start % n, end % n
        f = n + x.dim
        if f > e:
            return x.with_(ndim=n - (e - s))
        if f < s:
            return x.with_(dim=x.dim + (e - s), ndim=n - (e - s))
        return x.with_(dim=-(n - e), ndim=n - (e - s),
                       inner=1 if f == e else None, outer=1 if f == s else None)

    def _cat(self, node, tensors, dim: int = 0):
        values = list(tensors)
        if any(isinstance(v, Unknown) for v in values):
            return next(v for v in values if isinstance(v, Unknown))
        values = [v.space if isinstance(v, LazyInput) and v.space is not None else v for v in values]
        if not all(isinstance(v, Space) for v in values):
            if not any(is_feature_value(v) for v in values):
                return None
            raise NotUnderstood("concatenates a tensor whose neurons are not known")
        if all(self._feature_dim(v, dim) for v in values):
            ref = max(values, key=lambda v: v.uid)
            if ref.heads is not None and all(v.heads == ref.heads and v.head_dim == ref.head_dim and v.inner == 1
                                             and v.outer == 1 for v in values):  # per head, e.g. rotate_half
                nodes = torch.cat([v.head_nodes() for v in values], dim=1).reshape(-1)
                return Space(nodes, dim=ref.dim, ndim=ref.ndim, layer=ref.layer, heads=ref.heads,
                             head_dim=ref.head_dim)
            if not all(v.plain for v in values):
                raise NotUnderstood("concatenates flattened features")
            return Space(torch.cat([v.nodes for v in values]), dim=ref.dim, ndim=ref.ndim, layer=ref.layer)
        if all(v.same_neurons(values[0]) for v in values):
            return values[0]
        raise NotUnderstood("concatenates different neurons along a non-feature dimension")

    def _split(self, node, x, how: str, arg, dim: int = 0):
        if isinstance(x, LazyInput) and x.space is not None:
            x = x.space
        if not isinstance(x, Space):
            raise NotUnderstood(f"{how} of a tensor whose neurons are not known")
        if not self._feature_dim(x, dim):
            n = len(arg) if isinstance(arg, (list, tuple)) else None
            if n is None:
                raise NotUnderstood(f"{how} along a non-feature dimension into an unknown number of parts")
            return tuple(x for _ in range(n))
        if not x.plain:
            raise NotUnderstood(f"{how} of flattened features")
        if how == "chunk":
            size = -(-x.size // arg)
            sizes = [min(size, x.size - i) for i in range(0, x.size, size)]
        elif isinstance(arg, int):
            sizes = [min(arg, x.size - i) for i in range(0, x.size, arg)]
        else:
            sizes = list(arg)
        parts = torch.split(x.nodes, sizes)
        return tuple(x.with_(nodes=p) for p in parts)

    def _reduce(self, x, dim=None, keepdim: bool = False):
        if isinstance(x, LazyInput):
            return x if x.space is None else self._reduce(x.space, dim, keepdim)
        if not isinstance(x, Space):
            return x if isinstance(x, Unknown) else None
        if dim is None:
            return None
        dims = [dim] if isinstance(dim, int) else list(dim)
        if x.ndim is None and any(d >= 0 for d in dims):
            raise NotUnderstood("reduces dimensions of a tensor of unknown rank")
        neg = [d - x.ndim if d >= 0 else d for d in dims]
        if x.dim in neg:
            return None  # a statistic over the neurons (e.g. a hand-written norm): broadcast, no neurons
        if keepdim:
            return x
        after = sum(1 for d in neg if d > x.dim)
        return x.with_(dim=x.dim + after, ndim=None if x.ndim is None else x.ndim - len(neg))

    def _getitem(self, x, index, raw=None):
        """Indexing: ``raw`` is the index as traced (bounds that are traced values are not known)."""
        if isinstance(x, (tuple, list)):
            return x[index]
        if isinstance(x, ShapeOf):
            return x.at(index)
        if isinstance(x, LazyInput):
            return LazyInput(f"{x.name}[]") if x.space is None else self._getitem(x.space, index, raw)
        if not isinstance(x, Space):
            return x if isinstance(x, (Unknown, Scores)) else None
        items = index if isinstance(index, tuple) else (index,)
        raws = raw if isinstance(raw, tuple) else (raw,) if raw is not None else items
        if any(i is not Ellipsis and not isinstance(i, (int, slice)) for i in items) or items.count(Ellipsis) > 1:
            raise NotUnderstood("indexing with None, a tensor or a traced value")
        if Ellipsis in items:
            k = items.index(Ellipsis)
            if k and x.ndim is None:
                raise NotUnderstood("indexing a tensor of unknown rank")
            after = len(items) - k - 1
            dims = [j - x.ndim for j in range(k)] + [None] + [j - after for j in range(after)]
        else:
            if x.ndim is None:
                raise NotUnderstood("indexing a tensor of unknown rank")
            dims = [j - x.ndim for j in range(len(items))]
        dropped = [d for item, d in zip(items, dims) if isinstance(item, int)]
        nodes = None
        for item, rawitem, d in zip(items, raws, dims):
            if d is None or item == slice(None) and not _traced_slice(rawitem):
                continue
            if d == x.head_dim and x.heads is not None:
                raise NotUnderstood("indexes attention heads")
            if d != x.dim:
                continue
            if not isinstance(item, slice) or _traced_slice(rawitem) or item.step not in (None, 1):
                raise NotUnderstood("indexes the feature dimension with a traced or non-slice index")
            if not (x.inner == 1 and x.outer == 1):
                raise NotUnderstood("slices flattened features")
            nodes = (x.head_nodes()[:, item] if x.heads is not None else x.nodes[item]).reshape(-1)
        changes = {"dim": x.dim + sum(1 for d in dropped if d > x.dim),
                   "ndim": None if x.ndim is None else x.ndim - len(dropped)}
        if x.head_dim is not None:
            changes["head_dim"] = x.head_dim + sum(1 for d in dropped if d > x.head_dim)
        if nodes is not None:
            changes["nodes"] = nodes
        return x.with_(**changes)


def _traced_slice(item) -> bool:
    """A slice whose bounds are traced values (their numbers are not known symbolically)."""
    return isinstance(item, slice) and any(isinstance(v, fx.Node) for v in (item.start, item.stop, item.step))


def _args(args, kwargs, *spec):
    """Positional-or-keyword arguments with defaults: ``spec`` is ``(name, default)`` pairs."""
    out = []
    for k, (name, default) in enumerate(spec):
        if k < len(args):
            out.append(args[k])
        elif name in kwargs:
            out.append(kwargs[name])
        elif name == "arg" and ("split_size_or_sections" in kwargs or "chunks" in kwargs
                                or "split_size" in kwargs):
            out.append(kwargs.get("split_size_or_sections", kwargs.get("chunks", kwargs.get("split_size"))))
        else:
            out.append(default)
    return out


def _has_feature(value) -> bool:
    if is_feature_value(value):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_feature(v) for v in value)
    if isinstance(value, dict):
        return any(_has_feature(v) for v in value.values())
    return False


def _shape_of(x) -> ShapeOf | None:
    if isinstance(x, LazyInput):
        x = x.space
    return ShapeOf(x) if isinstance(x, Space) else None


def _plain(args, kwargs):
    """Result of an op on non-feature values (shapes, constants): no neurons."""
    return None


def _ndim(x) -> int | None:
    if isinstance(x, LazyInput):
        x = x.space
    return x.ndim if isinstance(x, Space) else None
