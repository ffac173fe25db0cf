"""Rules for the layers that create neurons or act on them (DESIGN section 3).

* ``linear``, ``conv`` (stride, padding, dilation, groups as the data flows) and ``embedding`` create new
  neurons; their weights become edges (input-major, kernel in the feature slots, official edge types). A bias
  gets its own node with edges to the neurons it is added to.
* ``norm`` (BatchNorm, LayerNorm, GroupNorm, RMSNorm) keeps the neurons and attaches one node per parameter
  (weight type 4, bias type 2) to the neurons it normalises.

Every weight checks its input size against the neurons it reads (``GraphWriter.input_nodes``), so a graph is
never silently wrong.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from .assembly import INPUT_ROLE
from .chain import edge_type_of
from .neural_graph import FC, POS_EMBED, TOKEN_EMBED
from .shapes import ndim_of, resolved
from .spaces import LazyInput, NotUnderstood, Param, Space, Unknown
from .writer import GraphWriter

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def linear(g: GraphWriter, name: str, mod, x, n_in: int, n_out: int, transposed: bool):
    """``x @ W^T + b`` with ``W`` (n_out, n_in), or (n_in, n_out) when ``transposed`` (Hugging Face Conv1D)."""
    w, b = g.param(mod, "weight"), g.param(mod, "bias")
    if g.placed(w) and b is None:  # e.g. a tied lm_head: placed once, where first used (the official graphs agree)
        return Unknown("output of a layer with a shared weight")
    layer = g.weight_layer(name, w, b)
    in_nodes = g.input_nodes(x, n_in, -1, layer, name)
    out = g.output_space(n_out, layer, ndim=ndim_of(x), made_from=in_nodes)
    if w is not None and not g.placed(w):
        elem = torch.arange(n_out * n_in)
        elem = (elem.view(n_in, n_out) if transposed else elem.view(n_out, n_in).t())[..., None]
        g.dense(w, in_nodes, out.nodes, edge_type_of(g.name(w), (n_out, n_in)), elem)
    g.attach(b, out)
    return out


def weight_matmul(g: GraphWriter, p: Param, x):
    """``x @ W`` with a free-standing 2-D parameter ``W`` (n_in, n_out): a linear layer without a bias."""
    shape = g.shape(p.index)
    if len(shape) != 2 or p.ndim != 2:
        raise NotUnderstood(f"matrix product with parameter {g.name(p.index)} of shape {tuple(shape)}")
    mod = SimpleNamespace(weight=g.params[p.index], bias=None)
    return linear(g, g.name(p.index).rpartition(".")[0], mod, x, shape[0], shape[1], transposed=True)


def conv(g: GraphWriter, name: str, mod, x):
    """``Conv1d``/``Conv2d``: one edge per (input channel, output channel) pair, the kernel in its slots.

    A kernel of more elements than the slots (7x7 stems, depthwise 7x7 blocks) becomes ``ceil(K / slots)``
    parallel edges per channel pair, edge ``j`` holding kernel elements ``j * slots ...`` in row-major order (the
    last one padded). A patch embedding (stride = kernel, no padding) with such a kernel is a linear layer
    instead (``patch_embedding``)."""
    w, b = g.param(mod, "weight"), g.param(mod, "bias")
    spatial = mod.weight.dim() - 2
    feat = math.prod(mod.weight.shape[2:])
    if feat > g.max_feat_size and _is_patchify(mod):
        return patch_embedding(g, name, mod, x)
    layer = g.weight_layer(name, w, b)
    c_in, c_out, groups = mod.in_channels, mod.out_channels, mod.groups
    per, opg = c_in // groups, c_out // groups
    in_nodes = g.input_nodes(x, c_in, -(spatial + 1), layer, name)
    out = g.output_space(c_out, layer, dim=-(spatial + 1), ndim=ndim_of(x) or spatial + 2)
    if w is not None and not g.placed(w):
        slots = min(feat, g.max_feat_size)
        chunks = -(-feat // slots)
        o = torch.arange(c_out)
        i = torch.arange(per)
        src = in_nodes[(o // opg)[None, :] * per + i[:, None]]  # [per, c_out]
        elem = ((o[None, :] * per + i[:, None]) * feat)[..., None] + torch.arange(feat)  # [per, c_out, feat]
        if chunks > 1:  # [per, c_out * chunks, slots]: the chunks of one pair are neighbouring edges
            elem = F.pad(elem, (0, chunks * slots - feat), value=-1).view(per, c_out * chunks, slots)
            src = src.repeat_interleave(chunks, dim=1)
        etype = edge_type_of(g.name(w), tuple(mod.weight.shape))
        g.assembly.add_param_block(w, src.reshape(-1), out.nodes.repeat_interleave(chunks).repeat(per), etype,
                                   elem.reshape(-1, slots))
    g.attach(b, out)
    return out


def patch_embedding(g: GraphWriter, name: str, mod, x):
    """A convolution over non-overlapping patches (stride = kernel, no padding) is, per patch, a linear layer over
    the C*K inputs of a patch: placed as one (type 1 edges), input feature ``c * K + j`` (channel c, kernel
    element j in row-major order) on its own input neuron when the convolution reads the model's input (a
    ViT's pixels), on channel c's neuron when it reads an earlier layer's neurons."""
    w, b = g.param(mod, "weight"), g.param(mod, "bias")
    spatial = mod.weight.dim() - 2
    c_in, c_out = mod.in_channels, mod.out_channels
    k = math.prod(mod.weight.shape[2:])
    layer = g.weight_layer(name, w, b)
    source = resolved(x)
    if isinstance(source, Space) and source.plain and source.dim == -(spatial + 1) and source.size == c_in:
        in_nodes = source.nodes.repeat_interleave(k)
    elif isinstance(source, LazyInput):  # pixels: every position of a patch is an input of its own
        in_nodes = g.assembly.new_nodes(c_in * k, layer, INPUT_ROLE)
    else:
        in_nodes = g.input_nodes(source, c_in * k, -(spatial + 1), layer, name)
    out = g.output_space(c_out, layer, dim=-(spatial + 1), ndim=ndim_of(x) or spatial + 2)
    if w is not None and not g.placed(w):
        g.dense(w, in_nodes, out.nodes, FC, torch.arange(c_out * c_in * k).view(c_out, c_in * k).t()[..., None])
    g.attach(b, out)
    return out


def _is_patchify(mod) -> bool:
    """Stride equal to the kernel, no padding, no dilation, one group: every input element in one patch."""
    kernel = tuple(mod.weight.shape[2:])
    stride, padding, dilation = (_per_dim(getattr(mod, a, d), len(kernel)) for a, d in
                                 (("stride", 1), ("padding", 0), ("dilation", 1)))
    return stride == kernel and padding in ((0,) * len(kernel), "valid") and dilation == (1,) * len(kernel) \
        and mod.groups == 1


def _per_dim(value, n: int):
    if isinstance(value, str):
        return value
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return value * n if len(value) == 1 else value


def embedding(g: GraphWriter, name: str, mod, x) -> Space:
    """A lookup table (vocab, d): one node per row, its d entries on edges to the d output neurons."""
    w = g.param(mod, "weight")
    if w in g.embedded:  # one table looked up again (an encoder-decoder's shared tokens): the same neurons
        return g.embedded[w]
    layer = g.weight_layer(name, w, None)
    vocab, d = mod.num_embeddings, mod.embedding_dim
    from_input = isinstance(x, LazyInput)  # token ids come from the input, position ids from arange
    etype = TOKEN_EMBED if from_input and "pos" not in name.split(".")[-1] else POS_EMBED
    tokens = g.assembly.new_nodes(vocab, layer, INPUT_ROLE)
    ndim = 3 if from_input else None  # token ids (B, T): rank known; positions may be (T,) or (1, T)
    out = g.output_space(d, layer, ndim=ndim, kind="embedding")
    if w is not None and not g.placed(w):
        g.dense(w, tokens, out.nodes, etype, torch.arange(vocab * d).view(vocab, d)[..., None])
        if etype == TOKEN_EMBED:
            g.assembly.set_pos_w(tokens, torch.arange(1, vocab + 1))
        g.embedded[w] = out
    return out


def norm(g: GraphWriter, name: str, mod: nn.Module, x):
    """A torch.nn normalisation module on ``x``."""
    w, b = g.param(mod, "weight"), g.param(mod, "bias")
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        dims = (-1, -2) if isinstance(mod, nn.BatchNorm1d) else (-3,)
        size = mod.num_features
    elif isinstance(mod, nn.GroupNorm):
        dims, size = (-1, -2, -3, -4), mod.num_channels
    else:  # LayerNorm, RMSNorm: over the last dimension only
        shape = tuple(mod.normalized_shape)
        if len(shape) != 1:
            return g.module_fallback(name, (w, b), f"normalises over {len(shape)} dimensions")
        dims, size = (-1,), shape[0]
    return norm_on(g, name, w, b, x, dims, size, group=isinstance(mod, nn.GroupNorm))


def norm_on(g: GraphWriter, name: str, w: int | None, b: int | None, x, dims: tuple, size: int,
            group: bool = False):
    """Norm parameters ``w``, ``b`` (indices) act on the ``size`` neurons of ``x`` (feature dim in ``dims``)."""
    if isinstance(x, LazyInput):
        if x.space is None:
            layer = w if w is not None else (b if b is not None else -1)
            x.space = Space(g.assembly.new_nodes(size, layer, INPUT_ROLE), dim=dims[0], layer=layer)
        x = x.space
    if isinstance(x, Unknown):
        return g.module_fallback(name, (w, b), "its input neurons are not known", silent=True)
    if not isinstance(x, Space) or x.dim not in dims or x.size != size or not x.plain:
        return g.module_fallback(name, (w, b), "does not match the neurons of its input")
    if group and x.ndim is not None and x.dim != -(x.ndim - 1):
        return g.module_fallback(name, (w, b), "its channels are not dimension 1")
    g.attach(w, x)
    g.attach(b, x)
    return x
