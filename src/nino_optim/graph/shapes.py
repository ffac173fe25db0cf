"""The shape algebra of neuron spaces: where the feature dimension goes under shape-only ops.

Flatten, transpose, permute, split, reduce and indexing move, fold or cut a tensor's feature dimension without
creating neurons. Each function here takes the value a tensor carries (``graph/spaces.py``) and returns the value
of the result, or raises ``NotUnderstood``. Nothing here writes to the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from .spaces import LazyInput, NotUnderstood, Param, Scores, Space, Unknown, is_feature_value


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


def shape_of(x) -> ShapeOf | None:
    x = resolved(x)
    return ShapeOf(x) if isinstance(x, Space) else None


def resolved(x):
    """A model input that a layer has read already stands for that layer's input space."""
    return x.space if isinstance(x, LazyInput) and x.space is not None else x


def ndim_of(x) -> int | None:
    x = resolved(x)
    return x.ndim if isinstance(x, Space) else None


def has_feature(value) -> bool:
    """Whether ``value`` (or anything in a tuple, list or dict of values) is a feature tensor."""
    if is_feature_value(value):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_feature(v) for v in value)
    if isinstance(value, dict):
        return any(has_feature(v) for v in value.values())
    return False


def call_args(args, kwargs, *spec):
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


def is_feature_dim(space: Space, dim: int) -> bool:
    """Whether ``dim`` (as the op names it) is the feature dimension of ``space``."""
    if dim < 0:
        return dim == space.dim
    if space.ndim is not None:
        return dim - space.ndim == space.dim
    return dim == 1  # rank unknown: batch-first convention, dimension 1 holds the features


def flatten(x, start: int = 0, end: int = -1):
    if isinstance(x, Param):
        if x.ndim is None or end % x.ndim == x.ndim - 1:
            raise NotUnderstood("flattens the feature dimension of a parameter")
        return Param(x.index, x.features, x.ndim - (end % x.ndim - start % x.ndim))
    if isinstance(x, LazyInput):
        return LazyInput(f"{x.name}.flatten") if x.space is None else flatten(x.space, start, end)
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
    return x.with_(dim=-(n - e), ndim=n - (e - s), inner=1 if f == e else None, outer=1 if f == s else None)


def transpose(x, d0: int, d1: int):
    _no_param(x, "transpose")
    if isinstance(x, Scores) or not is_feature_value(x):
        return x if isinstance(x, Scores) else None
    if isinstance(x, LazyInput):
        raise NotUnderstood("transpose of a model input")
    if isinstance(x, Unknown):
        return x
    if x.ndim is None:
        if d0 >= 0 or d1 >= 0:
            raise NotUnderstood("transpose of a tensor of unknown rank")
    else:
        n = x.ndim
        d0, d1 = d0 - n if d0 >= 0 else d0, d1 - n if d1 >= 0 else d1
    swap = {d0: d1, d1: d0}
    return x.with_(dim=swap.get(x.dim, x.dim), head_dim=None if x.head_dim is None else swap.get(x.head_dim, x.head_dim))


def permute(x, dims: list):
    _no_param(x, "permute")
    if not isinstance(x, Space):
        if isinstance(x, (Unknown, Scores)) or not is_feature_value(x):
            return x if is_feature_value(x) else None
        raise NotUnderstood("permute of a model input")
    n = len(dims)
    new_of = {(d % n) - n: k - n for k, d in enumerate(dims)}  # old negative dim -> new negative dim
    return x.with_(dim=new_of[x.dim], ndim=n, head_dim=None if x.head_dim is None else new_of[x.head_dim])


def split(x, how: str, arg, dim: int = 0):
    """``split``/``chunk``: a tuple of parts (the same neurons for a split along another dimension)."""
    x = resolved(x)
    _no_param(x, how)
    if not isinstance(x, Space):
        raise NotUnderstood(f"{how} of a tensor whose neurons are not known")
    if not is_feature_dim(x, dim):
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
    return tuple(x.with_(nodes=p) for p in x.nodes.split(sizes))


def reduce(x, dim=None, keepdim: bool = False):
    """``mean``/``sum``/``amax``/``amin``: over the features it is a statistic without neurons."""
    _no_param(x, "reduction")
    if isinstance(x, LazyInput):
        return x if x.space is None else reduce(x.space, dim, keepdim)
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


def traced_slice(item) -> bool:
    """A slice whose bounds are traced values (their numbers are not known symbolically)."""
    return isinstance(item, slice) and any(isinstance(v, fx.Node) for v in (item.start, item.stop, item.step))


def getitem(x, index, raw=None):
    """Indexing: ``raw`` is the index as traced (bounds that are traced values are not known)."""
    if isinstance(x, (tuple, list)):
        return x[index]
    if isinstance(x, ShapeOf):
        return x.at(index)
    if isinstance(x, LazyInput):
        return LazyInput(f"{x.name}[]") if x.space is None else getitem(x.space, index, raw)
    if isinstance(x, Param):
        return _param_getitem(x, index if isinstance(index, tuple) else (index,),
                              raw if isinstance(raw, tuple) else (raw,) if raw is not None else None)
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
        if d is None or item == slice(None) and not traced_slice(rawitem):
            continue
        if d == x.head_dim and x.heads is not None:
            raise NotUnderstood("indexes attention heads")
        if d != x.dim:
            continue
        if not isinstance(item, slice) or traced_slice(rawitem) or item.step not in (None, 1):
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


def _no_param(x, what: str) -> None:
    if isinstance(x, Param):
        raise NotUnderstood(f"{what} of a free-standing parameter")


def _param_getitem(x: Param, items: tuple, raws: tuple | None) -> Param:
    """``param[index]`` that leaves its last (feature) dimension whole, e.g. ``pos[:, :T]``."""
    raws = raws if raws is not None and len(raws) == len(items) else items
    if any(i is not Ellipsis and i is not None and not isinstance(i, (int, slice)) for i in items):
        raise NotUnderstood("indexes a parameter with a tensor or a traced value")
    real = [k for k, i in enumerate(items) if i is not None and i is not Ellipsis]
    if Ellipsis in items:
        last = len(items) - 1
        touches = items[last] is not Ellipsis
    else:
        if x.ndim is None:
            raise NotUnderstood("indexes a parameter of unknown rank")
        last = real[-1] if len(real) == x.ndim else None
        touches = last is not None
    if touches and (items[last] != slice(None) or traced_slice(raws[last])):
        raise NotUnderstood("indexes the feature dimension of a parameter")
    ndim = None if x.ndim is None else x.ndim - sum(isinstance(i, int) for i in items) + items.count(None)
    return Param(x.index, x.features, ndim)


def param_resized(x: Param, sizes) -> Param:
    """A parameter viewed or broadcast to ``sizes`` (ints, or -1 / None where not known): only while its last
    dimension stays whole."""
    sizes = list(sizes)
    last = sizes[-1] if sizes else None
    if not (last is None or last == -1 or last == x.features):
        raise NotUnderstood("reshapes the feature dimension of a parameter")
    return Param(x.index, x.features, len(sizes))


def param_broadcast(x: Param, method: str, args, kwargs) -> Param:
    """``expand``, ``expand_as``, ``repeat`` or ``unsqueeze`` of a free-standing parameter (a class token
    broadcast to the batch), as traced: sizes are ints, or None where a traced value."""
    if method == "expand_as":
        return Param(x.index, x.features, ndim_of(args[0]) if args else None)
    sizes = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
    if method == "unsqueeze":
        d = sizes[0] if sizes else kwargs.get("dim")
        if not isinstance(d, int) or d == -1 or x.ndim is None or d == x.ndim:
            raise NotUnderstood("unsqueeze after the feature dimension of a parameter")
        return Param(x.index, x.features, x.ndim + 1)
    sizes = [v if isinstance(v, int) else None for v in sizes]
    if method == "repeat":
        if sizes and sizes[-1] != 1:
            raise NotUnderstood("repeats the feature dimension of a parameter")
        sizes = sizes[:-1] + [None]
    return param_resized(x, sizes)
