"""Neuron spaces: which graph nodes the feature dimension of a traced tensor lives on.

While a traced model is walked (``graph/propagate.py``), every tensor value carries one of:

* ``Space``: the tensor has a feature dimension ``dim`` (a negative index, so batched and unbatched inputs agree)
  whose entries live on graph nodes. ``nodes[c]`` is the node of feature ``c``. After a flatten the feature
  dimension may cover several elements per node: flat feature ``f`` lives on ``nodes[(f // inner) % len(nodes)]``
  (``inner`` elements per node, repeated ``outer`` times). One of ``inner``/``outer`` may be unknown (``None``)
  when shapes are not known; the consuming layer resolves it from its input size.
* ``LazyInput``: a model input whose nodes are created by the first layer that reads it, with that layer's
  input size (the official graphs number the input neurons first).
* ``Unknown``: a tensor produced by something the propagation did not understand; layers reading it get fresh
  input nodes, as the chain rule does when dimensions do not match.
* ``Param``: a free-standing parameter (not a layer's weight) on its way to the features it joins: position
  embeddings, class tokens, layer scales (``joins.py`` places it where it meets them).
* anything else (``None``, ints, shapes): not a feature tensor.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import torch

_uid = itertools.count()


@dataclass(frozen=True, eq=False)
class Space:
    """A feature dimension on graph nodes. ``uid`` orders spaces by creation (later spaces have larger uids)."""

    nodes: torch.Tensor  # LongTensor [C] of node ids (builder-local ids)
    dim: int = -1  # negative index of the feature dimension
    ndim: int | None = None  # tensor rank, when known
    inner: int | None = 1
    outer: int | None = 1
    layer: int = -1  # parameter index of the weight that made these neurons (node sort key, assembly.py)
    heads: int | None = None  # attention heads the features are split into (head h: nodes[h*hd:(h+1)*hd])
    head_dim: int | None = None  # negative index of the head dimension when split
    kind: str = ""  # "embedding" for the output of an embedding lookup
    made_from: torch.Tensor | None = None  # input nodes of the layer that made these neurons
    # grouped-query attention's repeat_kv in progress: an axis of copies of each head right after the head
    # dimension (1 after the unsqueeze, then the copy count after the expand); merged into the heads by a reshape
    head_copies: int | None = None
    uid: int = field(default_factory=lambda: next(_uid))

    @property
    def size(self) -> int:
        return self.nodes.numel()

    @property
    def plain(self) -> bool:
        """One feature element per node (no flatten folded into the feature dimension, no head split)."""
        return self.inner == 1 and self.outer == 1 and self.heads is None

    def head_nodes(self) -> torch.Tensor:
        """[heads, size / heads] nodes per head."""
        return self.nodes.view(self.heads, -1)

    def with_(self, **changes) -> "Space":
        """A copy with some fields changed; keeps ``uid`` (it is the same neurons)."""
        return replace(self, **changes)

    def same_neurons(self, other: "Space") -> bool:
        return (self.size == other.size and self.inner == other.inner and self.outer == other.outer
                and torch.equal(self.nodes, other.nodes))

    def expand(self, features: int) -> torch.Tensor | None:
        """Node of each of ``features`` feature elements, resolving an unknown ``inner``/``outer``; None if the
        feature count does not fit this space."""
        c = self.size
        inner, outer = self.inner, self.outer
        if inner is None and outer is None:
            return None
        if inner is None:
            if features % (c * outer):
                return None
            inner = features // (c * outer)
        elif outer is None:
            if features % (c * inner):
                return None
            outer = features // (c * inner)
        if inner * outer * c != features:
            return None
        return self.nodes.repeat_interleave(inner).repeat(outer)


@dataclass(eq=False)
class LazyInput:
    """A model input; ``space`` is set by the first layer that reads it."""

    name: str
    space: Space | None = None


@dataclass(frozen=True, eq=False)
class Unknown:
    """A tensor whose neurons are not known; ``why`` was reported once where it arose."""

    why: str


@dataclass(frozen=True, eq=False)
class Scores:
    """Attention scores ``q @ k^T`` per head: no neurons of their own, they remember the query and key spaces."""

    q: Space
    k: Space


@dataclass(frozen=True, eq=False)
class Param:
    """A free-standing parameter, possibly sliced or broadcast on dimensions other than its last, which stays
    the feature dimension. ``index``: its index in the graph's flat order."""

    index: int
    features: int  # the size of its last dimension
    ndim: int | None = None  # its rank now (None: not known)


class NotUnderstood(Exception):
    """An op the propagation cannot map to neurons."""


def is_feature_value(value) -> bool:
    return isinstance(value, (Space, LazyInput, Unknown, Scores, Param))
