"""Attention in the propagation of neuron spaces (reference section 2.5).

Attention is recognised from the computation: a reshape that splits the features into heads, the score
product ``q @ k^T`` (or ``scaled_dot_product_attention``) and the product of the scores with the values.
It is wired as the official transformer graphs are:

* one head node per head, with head edges (type 11, constant 1) to the query neurons and the value neurons of
  its head;
* query, key and value weights get types 7, 8 and 9. Keys have no neurons of their own: scores pair query
  feature j with key feature j, so the key neurons are identified with the query neurons and the key weight
  runs from the query neurons back to the projection's input neurons (type 8), as in the official graphs;
* a fused q/k/v bias gets one node per part; the key bias attaches, with ``key_bias="official"``, to the input
  neuron j (what the official checkpoints were trained on) or, with ``"keys"``, to the query/key neuron j;
* the attention output lives on the value neurons, split into heads until a reshape merges them back.

Grouped-query attention (fewer key/value heads than query heads) shares neurons instead: a group's query heads
are one set of neurons (parallel edges for their weights), its key head is identified with them, and its value
head gets head edges from every head node of the group. The official Llama graphs approximate it otherwise
(keys on the first query neurons, reference 2.6), which is not symmetric under the model's head permutations.

Cross-attention (queries from one stream, keys and values from another: T5, BART, Whisper, ``nn.Transformer``'s
decoder) is wired the same way, with the key and value weights reading the other stream's neurons: the key
weight runs from the query neurons back to them. ``nn.MultiheadAttention`` (self- and cross-attention, fused or
separate projections) and ``nn.TransformerEncoderLayer``/``TransformerEncoder`` are wired from their parts. Rotary embeddings keep the query/key neurons (not modelled, as in the official graphs).
"""
from __future__ import annotations

import torch
from torch import nn

from . import joins, layers
from .assembly import EXTRA_ROLE
from .chain import edge_type_of
from .neural_graph import ATTN_K, ATTN_Q, ATTN_V, HEAD
from .shapes import call_args, has_feature, ndim_of, resolved
from .spaces import NotUnderstood, Param, Scores, Space, Unknown
from .writer import GraphWriter


def multihead_attention(g: GraphWriter, name: str, mod: nn.MultiheadAttention, args, kwargs):
    """``nn.MultiheadAttention``: q/k/v projections, heads, output projection."""
    q_in, k_in, v_in = call_args(args, kwargs, ("query", None), ("key", None), ("value", None))
    if not (q_in is k_in is v_in) or not mod._qkv_same_embed_dim or mod.in_proj_weight is None:
        return _projected_attention(g, name, mod, q_in, k_in, v_in)
    # self-attention with the fused weight: one edge block over all three parts, the edge order of the official
    # fused-qkv graphs (and of every graph built before cross-attention was understood)
    d, heads = mod.embed_dim, mod.num_heads
    w, b = g.param(mod, "in_proj_weight"), g.param(mod, "in_proj_bias")
    layer = g.weight_layer(name, w, b)
    in_nodes = g.input_nodes(q_in, d, -1, layer, name)
    qkv = g.output_space(3 * d, layer, ndim=ndim_of(q_in), made_from=in_nodes)
    if w is not None and not g.placed(w):
        g.dense(w, in_nodes, qkv.nodes, edge_type_of(g.name(w), (3 * d, d)),
                torch.arange(3 * d * d).view(3 * d, d).t()[..., None])
    g.attach(b, qkv)
    q, k, v = (qkv.with_(nodes=qkv.nodes[i * d:(i + 1) * d], heads=heads, head_dim=-3, dim=-1, ndim=4)
               for i in range(3))
    values = attention(g, q, k, v).with_(heads=None, head_dim=None, dim=-1, ndim=ndim_of(q_in))
    out = layers.linear(g, f"{name}.out_proj", mod.out_proj, values, d, d, transposed=False)
    return (out, None)  # (attention output, attention weights)


def _projected_attention(g: GraphWriter, name: str, mod: nn.MultiheadAttention, q_in, k_in, v_in):
    """Cross-attention (queries from one stream, keys and values from another) or separate q/k/v projections:
    each part projected from the neurons of its own input, then heads as for self-attention, so the key weight
    runs from the query neurons back to the other stream's neurons."""
    d, heads = mod.embed_dim, mod.num_heads
    if mod._qkv_same_embed_dim:
        weights, sizes = [g.param(mod, "in_proj_weight")] * 3, (d, d, d)
    else:
        weights = [g.param(mod, f"{part}_proj_weight") for part in "qkv"]
        sizes = (d, mod.kdim, mod.vdim)
    b = g.param(mod, "in_proj_bias")
    layer = g.weight_layer(name, weights[0], b)
    write = [w is not None and not g.placed(w) for w in weights]
    qkv = g.output_space(3 * d, layer, ndim=ndim_of(q_in))
    parts = []
    for i, (x, w, n_in) in enumerate(zip((q_in, k_in, v_in), weights, sizes)):
        in_nodes = g.input_nodes(x, n_in, -1, layer, name)
        nodes = qkv.nodes[i * d:(i + 1) * d]
        if write[i]:
            offset = i * d * n_in if mod._qkv_same_embed_dim else 0
            g.dense(w, in_nodes, nodes, edge_type_of(g.name(w), (d, n_in)),
                    (offset + torch.arange(d * n_in).view(d, n_in).t())[..., None])
        parts.append(qkv.with_(nodes=nodes, heads=heads, head_dim=-3, dim=-1, ndim=4, made_from=in_nodes))
    g.attach(b, qkv)
    values = attention(g, *parts).with_(heads=None, head_dim=None, dim=-1, ndim=ndim_of(q_in))
    out = layers.linear(g, f"{name}.out_proj", mod.out_proj, values, d, d, transposed=False)
    return (out, None)


def encoder_layer(g: GraphWriter, name: str, mod: nn.TransformerEncoderLayer, x):
    """``nn.TransformerEncoderLayer`` (post- or pre-norm) from its parts, as its forward computes it."""
    return _transformer_layer(g, name, mod, x, None)


def decoder_layer(g: GraphWriter, name: str, mod: nn.TransformerDecoderLayer, x, memory):
    """``nn.TransformerDecoderLayer``: self-attention, cross-attention to ``memory``, feed-forward."""
    return _transformer_layer(g, name, mod, x, memory)


def _transformer_layer(g: GraphWriter, name: str, mod, x, memory):
    """An encoder layer (``memory`` None) or a decoder layer, post- or pre-norm, from its parts."""
    if isinstance(x, Unknown):
        return x

    def first(out):
        return out[0] if isinstance(out, tuple) else out

    def self_attention(h):
        return first(multihead_attention(g, f"{name}.self_attn", mod.self_attn, (h, h, h), {}))

    def cross_attention(h):
        return first(multihead_attention(g, f"{name}.multihead_attn", mod.multihead_attn, (h, memory, memory), {}))

    def feed_forward(h):
        h = layers.linear(g, f"{name}.linear1", mod.linear1, h, mod.linear1.in_features,
                          mod.linear1.out_features, transposed=False)
        return layers.linear(g, f"{name}.linear2", mod.linear2, h, mod.linear2.in_features,
                             mod.linear2.out_features, transposed=False)

    blocks = [self_attention] + ([cross_attention] if memory is not None else []) + [feed_forward]
    for i, block in enumerate(blocks, start=1):
        norm = f"{name}.norm{i}", getattr(mod, f"norm{i}")
        if mod.norm_first:
            x = joins.join(g, [x, block(layers.norm(g, *norm, x))])
        else:
            x = layers.norm(g, *norm, joins.join(g, [x, block(x)]))
    return x


def transformer_stack(g: GraphWriter, name: str, mod, x, memory=None):
    """``nn.TransformerEncoder`` (``memory`` None) or ``nn.TransformerDecoder``: its layers, then its norm."""
    for i, layer in enumerate(mod.layers):
        x = _transformer_layer(g, f"{name}.layers.{i}", layer, x, memory)
    return x if mod.norm is None else layers.norm(g, f"{name}.norm", mod.norm, x)


def split_heads(x: Space, shape: list) -> Space:
    """``view(B, T, H, hd)`` of features: heads split off the feature dimension."""
    a, b = shape[-2], shape[-1]
    if isinstance(a, int) and a > 0:
        heads = a
    elif isinstance(b, int) and b > 0:
        heads = x.size // b if x.size % b == 0 else -1
    else:
        raise NotUnderstood("reshape of features with unknown sizes")
    if heads <= 0 or x.size % heads or (isinstance(b, int) and b > 0 and heads * b != x.size):
        raise NotUnderstood(f"reshape of {x.size} features to {shape[-2:]}")
    return x.with_(heads=heads, head_dim=-2, dim=-1, ndim=len(shape))


def merge_heads(x: Space, shape: list) -> Space:
    """``view(B, T, C)`` of (B, T, H, hd): heads merged back into one feature dimension."""
    last = shape[-1]
    if x.dim != -1 or x.head_dim != -2 or not (last is None or last == -1 or last == x.size):
        raise NotUnderstood("reshape of attention heads that does not merge them back")
    return x.with_(heads=None, head_dim=None, dim=-1, ndim=len(shape))


def matmul(g: GraphWriter, a, b):
    """``a @ b``: attention scores, scores times values, or features times a free-standing weight."""
    if isinstance(b, Param) and not isinstance(a, Param):
        return layers.weight_matmul(g, b, a)
    if isinstance(a, Space) and isinstance(b, Space) and a.heads and b.heads:
        if a.dim == -1 and b.dim == -2 and a.head_dim == b.head_dim == -3:
            return Scores(a, b)
    if isinstance(a, Scores) and isinstance(b, Space):
        return attention(g, a.q, a.k, b)
    if not has_feature((a, b)):
        return None
    raise NotUnderstood("matrix product of features")


def attention(g: GraphWriter, q, k, v, bias=None):
    """Wire one attention: head nodes, q/k/v edge types, keys on the query neurons (reference 2.5).

    ``bias``: what is added to the scores (an attention mask). A learned bias per head (T5's relative
    position table, embedded into one neuron per head) is identified with the head nodes of the first
    attention that adds it.

    Grouped-query attention (k and v with fewer heads than q, given as such or as repeated copies) is wired
    as shared neurons: the query heads of a group are one set of neurons (their weights become parallel
    edges), which the group's key head is identified with, and each value head is joined to the head nodes
    of its whole group. So permuting groups, heads within a group, or neurons within a head consistently
    (the model's symmetries) permutes the graph.
    """
    k, v = (_one_head(t, q) for t in (k, v))
    if not all(isinstance(t, Space) and t.heads for t in (q, k, v)):
        raise NotUnderstood("attention on tensors without heads")
    k, v = _distinct_heads(k), _distinct_heads(v)
    if q.heads % k.heads or q.heads % v.heads or q.size * k.heads != k.size * q.heads:
        raise NotUnderstood("attention with mismatched query/key/value sizes")
    key = ("attention", q.uid, tuple(q.nodes[:1].tolist()), tuple(k.nodes[:1].tolist()))
    if not g.first_time(key):
        return _repeated(v, q.heads)
    asm = g.assembly
    heads = asm.new_nodes(q.heads, q.layer, EXTRA_ROLE, index_base=-1)
    bias = resolved(bias)
    if isinstance(bias, Space) and bias.plain and bias.size == q.heads and g.first_time(("head bias", bias.uid)):
        asm.alias(bias.nodes, heads)
    for space, etype in ((q, ATTN_Q), (v, ATTN_V)):
        for block, mask in asm.blocks_into(space.nodes):
            if block.elem is not None and block.elem.shape[1] and len(g.shape(block.param)) >= 2:
                part = block if bool(mask.all()) else asm.split_block(block, mask)
                part.etype = etype
            elif not bool(mask.all()):  # a bias shared with other neurons (fused qkv): its own node here
                part = asm.split_block(block, mask)
                part.src = asm.new_nodes(1, space.layer, EXTRA_ROLE, index_base=block.param).expand_as(part.src)
        group = q.heads // space.heads  # head nodes per head of this space
        for i in range(group):  # head node g * group + i -> every neuron of head g
            head_of = (torch.arange(space.heads) * group + i).repeat_interleave(space.size // space.heads)
            asm.add_aux_block(heads[head_of], space.nodes, HEAD)
    group = q.heads // k.heads
    first = q.head_nodes()[::group]  # [k.heads, hd]: the query neurons standing for each group
    for i in range(1, group):  # the other query heads of a group are the same neurons
        asm.alias(q.head_nodes()[i::group].reshape(-1), first.reshape(-1))
    queries = first.reshape(-1)
    # keys: no neurons of their own; the key weight runs from the query neurons back to the block input
    pos = torch.full((int(k.nodes.max()) + 1,), -1, dtype=torch.long)
    pos[k.nodes] = torch.arange(k.size)
    for block, mask in asm.blocks_into(k.nodes):
        part = block if bool(mask.all()) else asm.split_block(block, mask)
        if len(g.shape(part.param)) >= 2:
            part.src, part.dst = queries[pos[part.dst]], part.src
            part.etype = ATTN_K
        else:
            if not bool(mask.all()):
                part.src = asm.new_nodes(1, q.layer, EXTRA_ROLE, index_base=part.param).expand_as(part.src)
            # key_bias="official": the official graph attaches key-bias element j to block-input neuron j
            # (reference 2.5), what its checkpoints were trained on, but not symmetric under q/k permutations;
            # "keys": to the key neurons, i.e. the query neurons they are identified with
            if g.key_bias == "official" and k.made_from is not None and k.made_from.numel() == k.size:
                part.dst = k.made_from[pos[part.dst]]
            else:
                part.dst = queries[pos[part.dst]]
    asm.alias(k.nodes, queries)
    return _repeated(v, q.heads)



def _one_head(x, q):
    """Multi-query attention's single key/value head: its view to one head looks like a plain unsqueeze."""
    if (isinstance(x, Space) and isinstance(q, Space) and q.heads and x.heads is None and x.plain and x.dim == -1
            and x.size * q.heads == q.size):
        return x.with_(heads=1, head_dim=-3)
    return x


def _distinct_heads(x: Space) -> Space:
    """``x`` with each head once: repeated copies of heads (grouped-query attention's repeat_kv) are dropped."""
    rows = x.head_nodes()
    copies = 1
    while copies < x.heads and torch.equal(rows[copies], rows[0]):
        copies += 1
    if copies == 1 or x.heads % copies or not torch.equal(rows, rows[::copies].repeat_interleave(copies, 0)):
        return x
    return x.with_(nodes=rows[::copies].reshape(-1), heads=x.heads // copies)


def _repeated(v: Space, heads: int) -> Space:
    """The attention output: ``heads`` heads, each on its value head's neurons (copies under grouped-query)."""
    nodes = v.head_nodes().repeat_interleave(heads // v.heads, 0).reshape(-1)
    return v.with_(nodes=nodes, heads=heads, dim=-1, head_dim=-3)
