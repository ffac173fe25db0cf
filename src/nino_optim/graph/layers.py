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

import torch
from torch import nn

from .assembly import INPUT_ROLE
from .chain import edge_type_of
from .neural_graph import POS_EMBED, TOKEN_EMBED
from .shapes import ndim_of
from .spaces import LazyInput, Space, Unknown
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


def conv(g: GraphWriter, name: str, mod, x):
    """``Conv1d``/``Conv2d``: one edge per (input channel, output channel) pair, the kernel in its slots."""
    w, b = g.param(mod, "weight"), g.param(mod, "bias")
    spatial = mod.weight.dim() - 2
    feat = math.prod(mod.weight.shape[2:])
    if feat > g.max_feat_size:
        why = f"kernel of {feat} elements exceeds the {g.max_feat_size} feature slots"
        for idx in (w, b):
            if idx is not None:
                g.fallback[g.name(idx)] = why if idx == w else f"bias of a layer left out ({why})"
        g.note(f"{name}: {why}; the layer is left out")
        return Unknown(why)
    layer = g.weight_layer(name, w, b)
    c_in, c_out, groups = mod.in_channels, mod.out_channels, mod.groups
    per, opg = c_in // groups, c_out // groups
    in_nodes = g.input_nodes(x, c_in, -(spatial + 1), layer, name)
    out = g.output_space(c_out, layer, dim=-(spatial + 1), ndim=ndim_of(x) or spatial + 2)
    if w is not None and not g.placed(w):
        o = torch.arange(c_out)
        i = torch.arange(per)
        src = in_nodes[(o // opg)[None, :] * per + i[:, None]]  # [per, c_out]
        elem = ((o[None, :] * per + i[:, None]) * feat)[..., None] + torch.arange(feat)  # [per, c_out, feat]
        etype = edge_type_of(g.name(w), tuple(mod.weight.shape))
        g.assembly.add_param_block(w, src.reshape(-1), out.nodes.repeat(per), etype, elem.reshape(per * c_out, feat))
    g.attach(b, out)
    return out


def embedding(g: GraphWriter, name: str, mod, x) -> Space:
    """A lookup table (vocab, d): one node per row, its d entries on edges to the d output neurons."""
    w = g.param(mod, "weight")
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
