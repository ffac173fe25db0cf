"""Rules for ops that combine tensors: element-wise joins (residual streams) and concatenation.

* **Residual joins.** Adding (or multiplying, e.g. a gated unit) two tensors on different neurons of equal size
  does not merge their nodes. As the official transformer graphs do, the result lives on the neurons of the more
  recently created operand (the branch output) and every other operand's neuron ``i`` gets a residual edge
  (type 10, constant 1) to neuron ``i`` of the result. Each layer thus keeps its own neurons, the official GPT-2
  wiring (``v.res``, ``mlp.c_fc.res``) is reproduced, and a function-preserving permutation must permute both
  sides of a residual edge alike, which is exactly the symmetry of a residual stream.
* Two embedding lookups added (token + position) share neurons, as in the official graphs.
* Concatenation along features joins spaces; along another dimension it needs the same neurons.
* **Free-standing parameters** meet the features where they are added, multiplied or concatenated, and are
  placed on those neurons (``place_param``), their last dimension running over the neurons: one row (a vector,
  or a ``(1, 1, D)`` token) is one node with an edge to each neuron, a table of R rows is R nodes. The edge type
  says how the parameter acts: added rows of a table (position embeddings) type 6 as GPT-2's position table;
  rows concatenated along the sequence (class, distillation, register tokens) type 5, as the token table whose
  rows they extend; a multiplied vector (layer scale) type 4 and an added one type 2, as a norm's weight and
  bias. A function-preserving permutation of the neurons permutes the parameter's last dimension alike, and
  the graph with it.
"""
from __future__ import annotations

import math

import torch

from .assembly import INPUT_ROLE
from .neural_graph import BIAS, NORM, POS_EMBED, RESIDUAL, TOKEN_EMBED
from .shapes import is_feature_dim, resolved
from .spaces import LazyInput, NotUnderstood, Param, Scores, Space, Unknown, is_feature_value
from .writer import GraphWriter


def join(g: GraphWriter, operands, how: str = "add"):
    """The value of an element-wise op of ``operands``: ``how`` is "add" (add, sub, maximum, ...) or "mul"
    (mul, div)."""
    values = [v for v in operands if is_feature_value(v)]
    params = [v for v in values if isinstance(v, Param)]
    if params:
        rest = [v for v in values if not isinstance(v, Param)]
        if not rest:
            raise NotUnderstood("combines free-standing parameters with each other")
        result = join(g, rest, how)
        if isinstance(result, Unknown):
            return result
        for p in params:
            place_param(g, p, resolved(result), how)
        return result
    if not values:
        return None
    if any(isinstance(v, Unknown) for v in values):
        return next(v for v in values if isinstance(v, Unknown))
    scores = [v for v in values if isinstance(v, Scores)]
    if scores:  # scaling or masking attention scores
        if len(values) == 1 or all(v is scores[0] for v in values):
            return scores[0]
        raise NotUnderstood("combines attention scores with other features")
    values = [resolved(v) for v in values]
    spaces = [v for v in values if isinstance(v, Space)]
    lazies = [v for v in values if isinstance(v, LazyInput)]
    if len(spaces) > 1 and all(s.kind == "embedding" and s.plain for s in spaces) and not lazies:
        # token + position embeddings: one table indexed by (token, position), so the same neurons
        first = min(spaces, key=lambda s: s.uid)
        if any(s.size != first.size for s in spaces):
            raise NotUnderstood("adds embeddings of different widths")
        for other in spaces:
            g.assembly.alias(other.nodes, first.nodes)
        return first
    if not spaces:
        if all(v is lazies[0] for v in lazies):
            return lazies[0]
        raise NotUnderstood("combines two model inputs before any layer")
    for lazy in lazies:  # an input added to a layer's output: its own neurons, joined like a residual
        ref = spaces[0]
        lazy.space = Space(g.assembly.new_nodes(ref.size, ref.layer, INPUT_ROLE), dim=ref.dim, ndim=ref.ndim,
                           layer=ref.layer, uid=-1)
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
        if g.first_time((other.uid, result.uid)):
            g.assembly.add_aux_block(other.nodes, result.nodes, RESIDUAL)
    return result


def cat(g: GraphWriter, tensors, dim: int = 0):
    """``torch.cat``: along the features the neurons are joined in order; along another dimension the parts must
    be on the same neurons."""
    values = list(tensors)
    if any(isinstance(v, Unknown) for v in values):
        return next(v for v in values if isinstance(v, Unknown))
    values = [resolved(v) for v in values]
    params = [v for v in values if isinstance(v, Param)]
    if params:  # tokens prepended or appended along the sequence
        spaces = [v for v in values if not isinstance(v, Param)]
        result = cat(g, spaces, dim) if len(spaces) > 1 else spaces[0] if spaces else None
        if not isinstance(result, Space) or is_feature_dim(result, dim):
            raise NotUnderstood("concatenates a free-standing parameter other than along the sequence")
        for p in params:
            place_param(g, p, result, "cat")
        return result
    if not all(isinstance(v, Space) for v in values):
        if not any(is_feature_value(v) for v in values):
            return None
        raise NotUnderstood("concatenates a tensor whose neurons are not known")
    if all(is_feature_dim(v, dim) for v in values):
        ref = max(values, key=lambda v: v.uid)
        if ref.heads is not None and all(v.heads == ref.heads and v.head_dim == ref.head_dim and v.inner == 1
                                         and v.outer == 1 for v in values):  # per head, e.g. rotate_half
            nodes = torch.cat([v.head_nodes() for v in values], dim=1).reshape(-1)
            return Space(nodes, dim=ref.dim, ndim=ref.ndim, layer=ref.layer, heads=ref.heads, head_dim=ref.head_dim)
        if not all(v.plain for v in values):
            raise NotUnderstood("concatenates flattened features")
        return Space(torch.cat([v.nodes for v in values]), dim=ref.dim, ndim=ref.ndim, layer=ref.layer)
    if all(v.same_neurons(values[0]) for v in values):
        return values[0]
    raise NotUnderstood("concatenates different neurons along a non-feature dimension")


def place_param(g: GraphWriter, p: Param, space, how: str) -> None:
    """Place free-standing parameter ``p`` on the neurons of ``space`` it meets by ``how`` ("add", "mul",
    "cat"); a parameter used again (e.g. in every step of a loop) stays where it was placed first."""
    if g.placed(p.index):
        return
    name, shape = g.name(p.index), g.shape(p.index)
    if not isinstance(space, Space) or not space.plain or space.dim != -1 or space.size != p.features:
        raise NotUnderstood(f"free-standing parameter {name} {tuple(shape)} does not run over the neurons it meets")
    rows = math.prod(shape) // p.features
    if how == "mul" and rows > 1:
        raise NotUnderstood(f"multiplies by a table of parameters ({name})")
    if rows == 1 and how != "cat":
        g.attach(p.index, space, NORM if how == "mul" else BIAS)
        return
    nodes = g.assembly.new_nodes(rows, p.index, INPUT_ROLE)
    g.dense(p.index, nodes, space.nodes, TOKEN_EMBED if how == "cat" else POS_EMBED,
            torch.arange(rows * p.features).view(rows, p.features)[..., None])
