"""Propagation of neuron spaces through a symbolically traced model (DESIGN section 3).

``Propagator`` walks the fx graph in execution order and gives every tensor a value (``graph/spaces.py``). What
each op does is looked up in three tables, for modules, functions and methods, whose entries call the rules:

* ``layers.py``: layers that create neurons (linear, conv, embedding) and norms that act on them;
* ``joins.py``: element-wise joins (residual streams) and concatenation;
* ``attention.py``: head reshapes, score products, SDPA, ``nn.MultiheadAttention``, encoder layers;
* ``shapes.py``: flatten, transpose, permute, split, reduce and indexing (no neurons created).

Element-wise ops, activations, dropout, softmax and pooling keep the neurons. What is not understood becomes
``Unknown`` with one note naming the op; layers reading an ``Unknown`` tensor get fresh input nodes (as the
chain rule does on a dimension mismatch), and a parameterised module of an unknown kind falls back to the chain
rule for its own parameters. ``export_trace.py`` walks ATen graphs with the same rules.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from . import attention, joins, layers, shapes
from .shapes import call_args, has_feature
from .spaces import LazyInput, NotUnderstood, Param, Space, Unknown, is_feature_value
from .trace import is_layer_module
from .writer import GraphWriter

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
_SCALING_FUNCS = {operator.mul, operator.truediv, operator.imul, operator.itruediv, torch.mul, torch.div}
_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_", "maximum", "minimum"}
_BROADCAST_METHODS = {"expand", "expand_as", "repeat", "unsqueeze"}  # on a free-standing parameter (class tokens)
_SHAPE_METHODS = {"dim", "numel", "ndimension"}
_KEEP_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus, nn.Mish,
    nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.Softmax, nn.LogSoftmax,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)


def keep(x):
    """An op that keeps the neurons of its input (activations, dropout, pooling, casts)."""
    return x if is_feature_value(x) else None


class Propagator:
    """Walks a traced model and fills a ``GraphWriter`` (``self.graph``): its assembly, notes and fallbacks."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module, named_params: list[tuple[str, nn.Parameter]], *,
                 max_feat_size: int = 9, key_bias: str = "official"):
        self.gm, self.model = gm, model
        self.graph = GraphWriter(named_params, max_feat_size=max_feat_size, key_bias=key_bias)
        self.env: dict[fx.Node, Any] = {}
        self._modules = dict(gm.named_modules())

    @property
    def notes(self) -> list[str]:
        return self.graph.notes

    @property
    def fallback(self) -> dict[str, str]:
        return self.graph.fallback

    # ------------------------------------------------------------------ walk
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "output":
                continue
            try:
                value = self.visit(node)
            except NotUnderstood as err:
                value = self._unknown(node, str(err))
            self.env[node] = self._with_rank(node, value)
        for owner in self._traced_through():
            if any(not self.graph.placed(self.graph.index(p)) for p in owner[1].parameters(recurse=False)):
                self.graph.chain_fallback(*owner)  # the chain rule, as for a module kind not understood
        for idx, (name, _) in enumerate(self.graph.named_shapes):
            if not self.graph.placed(idx) and name not in self.fallback:
                self.fallback[name] = "not used by any layer the traced forward pass understands"

    def _traced_through(self) -> list[tuple[str, nn.Module]]:
        """Custom modules of ``model`` with parameters of their own (the trace went into them), as (name,
        module); the root's parameters are the model's own."""
        return [(name, mod) for name, mod in self.model.named_modules()
                if name and not is_layer_module(mod) and any(True for _ in mod.parameters(recurse=False))]

    def _with_rank(self, node: fx.Node, value):
        """Record the tensor rank where the tracer knows it (example-input traces carry shapes)."""
        val = node.meta.get("val")
        if isinstance(value, Space) and isinstance(val, torch.Tensor) and value.ndim != val.dim():
            return value.with_(ndim=val.dim())
        return value

    def visit(self, node: fx.Node):
        """The value of ``node``'s result."""
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
            return self._call_method(node.target, args, kwargs)
        raise NotUnderstood(f"fx op {node.op}")

    def _unknown(self, node: fx.Node, why: str):
        inputs = [self.env[n] for n in node.all_input_nodes]
        if any(isinstance(v, (Space, LazyInput)) or has_feature(v) for v in inputs):
            self.notes.append(f"{node.name}: not understood ({why}); later layers reading it get their own input nodes")
            return Unknown(why)
        if any(isinstance(v, Unknown) for v in inputs):
            return Unknown(why)
        return None

    def _get_attr(self, target: str):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        idx = self.graph.index(obj)
        if idx is not None:
            if obj.dim() == 0:
                raise NotUnderstood(f"scalar parameter {target} used directly (not through a layer)")
            return Param(idx, obj.shape[-1], obj.dim())
        return None  # buffers and constants carry no neurons

    # ------------------------------------------------------------------ modules
    def _call_module(self, node, mod: nn.Module, args, kwargs):
        g, name = self.graph, node.target
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(mod, nn.Linear):
            return layers.linear(g, name, mod, x, mod.in_features, mod.out_features, transposed=False)
        if type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None and mod.weight.dim() == 2:
            # Hugging Face GPT-2's linear layer: weight (in, out)
            return layers.linear(g, name, mod, x, mod.weight.shape[0], mod.weight.shape[1], transposed=True)
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            return layers.conv(g, name, mod, x)
        if isinstance(mod, nn.Embedding):
            return layers.embedding(g, name, mod, x)
        if isinstance(mod, layers.NORMS):
            return layers.norm(g, name, mod, x)
        if isinstance(mod, nn.MultiheadAttention):
            return attention.multihead_attention(g, name, mod, args, kwargs)
        if isinstance(mod, nn.TransformerEncoderLayer):
            return attention.encoder_layer(g, name, mod, x)
        if isinstance(mod, nn.TransformerDecoderLayer):
            return attention.decoder_layer(g, name, mod, x, call_args(args, kwargs, ("tgt", None), ("memory", None))[1])
        if isinstance(mod, nn.TransformerEncoder):
            return attention.transformer_stack(g, name, mod, x)
        if isinstance(mod, nn.TransformerDecoder):
            return attention.transformer_stack(g, name, mod, x, call_args(args, kwargs, ("tgt", None),
                                                                          ("memory", None))[1])
        if isinstance(mod, nn.Transformer):
            src, tgt = call_args(args, kwargs, ("src", None), ("tgt", None))
            memory = attention.transformer_stack(g, f"{name}.encoder", mod.encoder, src)
            return attention.transformer_stack(g, f"{name}.decoder", mod.decoder, tgt, memory)
        if isinstance(mod, nn.Flatten):
            return shapes.flatten(x, mod.start_dim, mod.end_dim)
        if isinstance(mod, _KEEP_MODULES):
            return keep(x)
        if any(True for _ in mod.parameters()):
            return g.chain_fallback(name, mod)
        raise NotUnderstood(f"module {type(mod).__name__}")

    # ------------------------------------------------------------------ functions and methods
    def _call_function(self, node, fn, args, kwargs):
        g = self.graph
        if fn in _ELEMENTWISE_FUNCS:
            return keep(args[0] if args else kwargs.get("input"))
        if fn in _BINARY_FUNCS:
            return joins.join(g, [*args[:2], kwargs.get("other")], "mul" if fn in _SCALING_FUNCS else "add")
        if fn is torch.flatten:
            return shapes.flatten(args[0], *call_args(args[1:], kwargs, ("start_dim", 0), ("end_dim", -1)))
        if fn in (torch.cat, torch.concat):
            return joins.cat(g, args[0], *call_args(args[1:], kwargs, ("dim", 0)))
        if fn in (torch.split, torch.chunk):
            return shapes.split(args[0], fn.__name__, *call_args(args[1:], kwargs, ("arg", None), ("dim", 0)))
        if fn in (torch.mean, torch.sum, torch.amax, torch.amin):
            return shapes.reduce(args[0], *call_args(args[1:], kwargs, ("dim", None), ("keepdim", False)))
        if fn is operator.getitem:
            return shapes.getitem(args[0], args[1], node.args[1])
        if fn in (operator.matmul, torch.matmul, torch.bmm):
            return attention.matmul(g, args[0], args[1])
        if fn is F.scaled_dot_product_attention:
            q, k, v = call_args(args, kwargs, ("query", None), ("key", None), ("value", None))
            return attention.attention(g, q, k, v)
        if fn is torch.transpose:
            return shapes.transpose(args[0], *call_args(args[1:], kwargs, ("dim0", 0), ("dim1", 1)))
        if fn is getattr:
            if args[1] == "shape":
                return shapes.shape_of(args[0])
            if args[1] in ("dtype", "device", "ndim", "is_cuda", "requires_grad"):
                return None
            if args[1] in ("data", "real"):
                return keep(args[0])
            if not has_feature(args):
                return None
            raise NotUnderstood(f"attribute {args[1]}")
        if not has_feature((args, kwargs)):
            return None  # an op on shapes or constants
        raise NotUnderstood(f"function {getattr(fn, '__name__', fn)}")

    def _call_method(self, method: str, args, kwargs):
        g, x, rest = self.graph, args[0], args[1:]
        if method in _SHAPE_METHODS:
            return None
        if method == "size":
            shape = shapes.shape_of(x)
            dim = rest[0] if rest else kwargs.get("dim")
            return shape if dim is None else shape.at(dim) if shape is not None else None
        if method in _ELEMENTWISE_METHODS:
            return keep(x)
        if method in _BINARY_METHODS:
            return joins.join(g, [x, *rest[:1], kwargs.get("other")], "mul" if method[:3] in ("mul", "div") else "add")
        if method in _BROADCAST_METHODS and isinstance(x, Param):
            return shapes.param_broadcast(x, method, rest, kwargs)
        if method == "flatten":
            return shapes.flatten(x, *call_args(rest, kwargs, ("start_dim", 0), ("end_dim", -1)))
        if method in ("view", "reshape"):
            return self._view(method, x, rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest)
        if method == "transpose":
            return shapes.transpose(x, *call_args(rest, kwargs, ("dim0", 0), ("dim1", 1)))
        if method == "permute":
            return shapes.permute(x, list(rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest))
        if method == "matmul":
            return attention.matmul(g, x, rest[0])
        if method in ("split", "chunk"):
            return shapes.split(x, method, *call_args(rest, kwargs, ("arg", None), ("dim", 0)))
        if method in ("mean", "sum", "amax", "amin"):
            return shapes.reduce(x, *call_args(rest, kwargs, ("dim", None), ("keepdim", False)))
        if not has_feature((args, kwargs)):
            return None
        raise NotUnderstood(f"method {method}")

    def _view(self, method: str, x, shape):
        """``view``/``reshape`` to ``shape`` (sizes as traced: ints, or None where a traced value)."""
        if isinstance(x, Param):
            return shapes.param_resized(x, [v if isinstance(v, int) else None for v in shape])
        if isinstance(x, LazyInput):
            if x.space is None:
                return LazyInput(f"{x.name}.{method}")
            x = x.space
        if isinstance(x, Space) and x.heads is not None:
            return attention.merge_heads(x, list(shape))
        if len(shape) == 2 and shape[1] == -1:
            return shapes.flatten(x, 1, -1)
        if isinstance(x, Space) and len(shape) >= 2 and x.plain and x.dim == -1:
            return attention.split_heads(x, list(shape))
        if not is_feature_value(x):
            return None
        raise NotUnderstood(f"{method} to {len(shape)} dimensions")
