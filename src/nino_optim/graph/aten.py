"""Propagation of neuron spaces through an ATen graph traced with example inputs (``export_trace.py``).

``ExportPropagator`` maps ATen ops onto the rules of the symbolic path (``propagate.py``): parameters arrive as
placeholders, ``aten.linear``/``aten.addmm``/``aten.conv*`` are layers, ``aten.layer_norm`` a norm,
``aten.scaled_dot_product_attention`` attention, and shapes are known everywhere, so reshapes are read from the
recorded output shapes.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.fx as fx
from torch import nn

from . import attention, joins, layers, shapes
from .propagate import Propagator, keep
from .shapes import has_feature
from .spaces import LazyInput, NotUnderstood, Param, Space, Unknown, is_feature_value

aten = torch.ops.aten


class ExportPropagator(Propagator):
    """``Propagator`` over an ATen graph from ``torch.export``."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module, placeholder_params: dict[str, str],
                 named_params, **kwargs):
        super().__init__(gm, model, named_params, **kwargs)
        self.placeholder_params = placeholder_params

    def visit(self, node: fx.Node):
        if node.op == "placeholder":
            if self.placeholder_params.get(node.name):
                return self.model.get_parameter(self.placeholder_params[node.name])
            user_input = node.name in self.placeholder_params and isinstance(node.meta.get("val"), torch.Tensor)
            return LazyInput(node.name) if user_input else None  # buffers and constants carry no neurons
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            args = fx.node.map_arg(node.args, lambda n: self.env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.env[n])
            return self._aten(node, node.target.overloadpacket, args, kwargs)
        return super().visit(node)

    def _layer_name(self, weight) -> str:
        idx = self.graph.index(weight)
        return self.graph.name(idx).rsplit(".", 1)[0] if idx is not None else "?"

    def _aten(self, node: fx.Node, op, args, kwargs):
        out_val = node.meta.get("val")
        if "val" in node.meta and out_val is None:  # ops without a result (shape assertions)
            return None
        if op in _LAYER_OPS:
            return self._layer(op, args)
        if op is aten.index and isinstance(args[0], nn.Parameter) and args[0].dim() == 2 and len(args[1]) == 1:
            return self._lookup(args[0], args[1][0])  # weight[ids] (Whisper's decoder positions)
        if isinstance(out_val, torch.Tensor) and not (out_val.is_floating_point() or out_val.is_complex()):
            # token ids, positions, masks: no neurons; ids derived from an input stay input ids (a decoder's
            # shifted labels are token ids for its embedding)
            inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, LazyInput)]
            return LazyInput(inputs[0].name) if inputs else None
        if op in _STATISTICS or not node.users:  # losses; results nothing reads
            return None
        args = [self._value(a) for a in args]
        g = self.graph
        if op is aten.where:  # masking: the kept values' neurons (the condition has none)
            return joins.join(g, list(args[1:3]))
        if op in (aten.scaled_dot_product_attention,):
            return attention.attention(g, *args[:3], bias=args[3] if len(args) > 3 else kwargs.get("attn_mask"))
        if op in (aten.matmul, aten.bmm):
            return attention.matmul(g, args[0], args[1])
        if op in (aten.view, aten.reshape, aten._unsafe_view, aten.unsqueeze, aten.squeeze, aten.expand,
                  aten.select):
            return self._reshape(node, args[0], out_val)
        if op in (aten.transpose,):
            return shapes.transpose(args[0], args[1], args[2])
        if op in (aten.permute,):
            return shapes.permute(args[0], list(args[1]))
        if op in (aten.split, aten.split_with_sizes, aten.chunk):
            return shapes.split(args[0], "chunk" if op is aten.chunk else "split", args[1],
                                args[2] if len(args) > 2 else 0)
        if op in (aten.cat,):
            return joins.cat(g, args[0], args[1] if len(args) > 1 else 0)
        if op in (aten.flatten,):
            return shapes.flatten(args[0], *(list(args[1:3]) + [0, -1][len(args) - 1:]))
        if op in (aten.mean, aten.sum, aten.amax, aten.amin):
            return shapes.reduce(args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else False)
        if op in (aten.add, aten.sub, aten.mul, aten.div, aten.maximum, aten.minimum):
            return joins.join(g, list(args[:2]), "mul" if op in (aten.mul, aten.div) else "add")
        if op in _ATEN_KEEP:
            return keep(args[0])
        if op in (aten.slice,):
            return self._slice(node, args[0], *(list(args[1:4]) + [None] * (4 - len(args))))
        if not has_feature((args, kwargs)):
            return None
        raise NotUnderstood(f"op {op.__name__}")

    def _layer(self, op, args):
        """ATen ops that are layers: their weights (and biases) are parameters of the model."""
        g = self.graph
        if op is aten.embedding:
            return self._lookup(args[0], args[1])
        if op in (aten.linear, aten.conv1d, aten.conv2d) and not isinstance(args[1], nn.Parameter):
            raise NotUnderstood(f"{op.__name__} with a weight that is not a parameter")
        if op is aten.linear:
            w, b = args[1], args[2] if len(args) > 2 else None
            return layers.linear(g, self._layer_name(w), SimpleNamespace(weight=w, bias=b), args[0], w.shape[1],
                                 w.shape[0], transposed=False)
        if op is aten.addmm:  # bias + x @ W with W (in, out): Hugging Face Conv1D
            b, x, w = args[0], args[1], args[2]
            if not isinstance(w, nn.Parameter):
                raise NotUnderstood("matrix product with a weight that is not a parameter")
            mod = SimpleNamespace(weight=w, bias=b if isinstance(b, nn.Parameter) else None)
            return layers.linear(g, self._layer_name(w), mod, x, w.shape[0], w.shape[1], transposed=True)
        if op in (aten.conv1d, aten.conv2d):
            w, b = args[1], args[2] if len(args) > 2 else None
            stride, padding, dilation, groups = (list(args[3:7]) + [1, 0, 1, 1][len(args[3:7]):])
            mod = SimpleNamespace(weight=w, bias=b, in_channels=w.shape[1] * groups, out_channels=w.shape[0],
                                  groups=groups, stride=stride, padding=padding, dilation=dilation)
            return layers.conv(g, self._layer_name(w), mod, args[0])
        if op in (aten.layer_norm, aten.rms_norm):
            shape = list(args[1])
            w = args[2] if len(args) > 2 else None
            b = args[3] if op is aten.layer_norm and len(args) > 3 else None
            idx = [g.index(p) if isinstance(p, nn.Parameter) else None for p in (w, b)]
            name = self._layer_name(w if w is not None else b)
            if len(shape) != 1:
                return g.module_fallback(name, idx, f"normalises over {len(shape)} dimensions")
            return layers.norm_on(g, name, idx[0], idx[1], args[0], (-1,), shape[0])
        if op is aten.group_norm:
            w, b = args[2], args[3]
            idx = [g.index(p) if isinstance(p, nn.Parameter) else None for p in (w, b)]
            size = args[0].size if isinstance(args[0], Space) else -1
            return layers.norm_on(g, self._layer_name(w), idx[0], idx[1], args[0], (-1, -2, -3, -4), size,
                                  group=True)
        w, b = args[1], args[2]  # batch norms
        idx = [g.index(p) if isinstance(p, nn.Parameter) else None for p in (w, b)]
        size = w.shape[0] if isinstance(w, torch.Tensor) else (b.shape[0] if isinstance(b, torch.Tensor) else -1)
        out = layers.norm_on(g, self._layer_name(w if w is not None else b), idx[0], idx[1], args[0],
                             (-1, -2, -3), size, group=True)
        return out if op is aten.batch_norm else (out, None, None, None, None)

    def _lookup(self, w, ids):
        """Rows of table ``w`` [rows, d] at ``ids``: an embedding layer."""
        mod = SimpleNamespace(weight=w, num_embeddings=w.shape[0], embedding_dim=w.shape[1])
        return layers.embedding(self.graph, self._layer_name(w), mod, ids)

    def _value(self, a):
        """An argument as the rules see it: a parameter outside a layer is a free-standing ``Param``."""
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(v) for v in a)
        idx = self.graph.index(a) if isinstance(a, nn.Parameter) and a.dim() > 0 else None
        return a if idx is None else Param(idx, a.shape[-1], a.dim())

    def _reshape(self, node: fx.Node, x, out_val):
        """A view/reshape/unsqueeze/select read from the recorded shapes of its input and output."""
        if isinstance(x, LazyInput):
            return LazyInput(f"{x.name}.view") if x.space is None else self._reshape(node, x.space, out_val)
        if isinstance(x, Param) and isinstance(out_val, torch.Tensor):
            return shapes.param_resized(x, list(out_val.shape))
        if not isinstance(x, Space):
            return x if isinstance(x, Unknown) else None
        in_val = node.args[0].meta.get("val")
        if not isinstance(out_val, torch.Tensor) or not isinstance(in_val, torch.Tensor):
            raise NotUnderstood("reshape without recorded shapes")
        shape_in, shape_out = list(in_val.shape), list(out_val.shape)
        f = len(shape_in) + x.dim
        if x.heads is not None:
            h = len(shape_in) + x.head_dim
            repeated = _repeat_heads(x, h, shape_in, shape_out)
            if repeated is not None:
                return repeated
            # keep the trailing layout from the head dimension on: dims before it may be merged or split
            if shape_in[h:] == shape_out[len(shape_out) - (len(shape_in) - h):]:
                return x.with_(ndim=len(shape_out))
            if x.dim == -1 and x.head_dim == -2 and shape_out[-1] == x.size:
                return x.with_(heads=None, head_dim=None, ndim=len(shape_out))
            raise NotUnderstood("reshape of attention heads")
        if not x.plain:
            raise NotUnderstood("reshape of flattened features")
        tail = shape_in[f:]
        if len(shape_out) >= len(tail) and shape_out[len(shape_out) - len(tail):] == tail:
            return x.with_(ndim=len(shape_out))  # the feature dim and what follows are unchanged
        if x.dim == -1 and len(shape_out) >= 2 and shape_out[-2] * shape_out[-1] == x.size:
            return x.with_(heads=shape_out[-2], head_dim=-2, ndim=len(shape_out))
        if x.dim == -1 and shape_out[-1] % x.size == 0 and len(shape_out) < len(shape_in):
            return shapes.flatten(x, len(shape_in) - (len(shape_in) - len(shape_out) + 1), -1)
        raise NotUnderstood(f"reshape {shape_in} -> {shape_out}")

    def _slice(self, node: fx.Node, x, dim=0, start=None, end=None):
        if isinstance(x, Param):
            return self._reshape(node, x, node.meta.get("val"))
        if not isinstance(x, Space):
            return x if is_feature_value(x) else None
        d = dim - x.ndim if dim >= 0 else dim
        if x.heads is not None and d == x.head_dim:
            raise NotUnderstood("slice of attention heads")
        if d != x.dim:
            return x
        if not (x.inner == 1 and x.outer == 1):
            raise NotUnderstood("slice of flattened features")
        nodes = x.head_nodes()[:, start:end] if x.heads is not None else x.nodes[start:end]
        return x.with_(nodes=nodes.reshape(-1))


def _repeat_heads(x: Space, h: int, shape_in: list, shape_out: list) -> Space | None:
    """Grouped-query attention's ``repeat_kv`` (``x[:, :, None].expand(..., r, ...).reshape(...)``), one op at a
    time: the repeated heads are copies of the same neurons. None when the op is not such a step."""
    if x.head_copies is None and shape_out == shape_in[:h + 1] + [1] + shape_in[h + 1:]:
        return x.with_(head_copies=1, head_dim=x.head_dim - 1, ndim=len(shape_out))  # unsqueeze after the heads
    if x.head_copies is None:
        return None
    if len(shape_out) == len(shape_in) and shape_out[:h + 1] == shape_in[:h + 1] and \
            shape_out[h + 2:] == shape_in[h + 2:]:
        return x.with_(head_copies=shape_out[h + 1])  # expand the copies
    if shape_out == shape_in[:h] + [shape_in[h] * shape_in[h + 1]] + shape_in[h + 2:]:
        nodes = x.head_nodes().repeat_interleave(x.head_copies, 0).reshape(-1)  # merge copies into heads
        return x.with_(nodes=nodes, heads=x.heads * x.head_copies, head_dim=x.head_dim + 1, head_copies=None,
                       ndim=len(shape_out))
    raise NotUnderstood("reshape of repeated attention heads")


_BATCH_NORMS = {op for op in (getattr(aten, name, None) for name in (
    "batch_norm", "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit", "native_batch_norm")) if op is not None}

_LAYER_OPS = {aten.embedding, aten.linear, aten.addmm, aten.conv1d, aten.conv2d, aten.layer_norm, aten.rms_norm,
              aten.group_norm} | _BATCH_NORMS

# what reduces features to a statistic without neurons (losses)
_STATISTICS = {op for op in (getattr(aten, name, None) for name in (
    "cross_entropy_loss", "nll_loss", "nll_loss_nd", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy_with_logits", "kl_div")) if op is not None}

_ATEN_KEEP = {
    aten.relu, aten.gelu, aten.silu, aten.tanh, aten.sigmoid, aten.exp, aten.pow, aten.dropout, aten.contiguous,
    aten.clone, aten.alias, aten.detach, aten._to_copy, aten.to, aten.softmax, aten._softmax, aten.log_softmax,
    aten.masked_fill, aten.neg, aten.rsqrt, aten.sqrt, aten.abs, aten.square, aten.clamp, aten.hardtanh,
    aten.leaky_relu, aten.elu, aten.max_pool2d, aten.avg_pool2d, aten.adaptive_avg_pool2d, aten.max_pool1d,
    aten.avg_pool1d, aten.adaptive_avg_pool1d, aten.relu_, aten.gelu_, aten.silu_, aten.feature_dropout,
    aten.native_dropout, aten.type_as, aten.lift_fresh_copy,
}
