"""Streamed NiNo inference: one pass over the edges per message-passing layer, in bounded memory.

The GNN's only cross-edge operation is the mean of messages at each target node, and a message is linear in
its edge's features except for one product, so the sum of messages at node t splits into node terms and two
edge sums (W_pt, W_ps: the two halves of the pre-message layer; W_g, W_b: the gamma and beta rows of the
edge encoder; A_t = W_pt x_t + b_pre, C_s = W_ps x_s):

    sum_s [gamma_st * (A_t + C_s) + beta_st]
        = A_t * (W_g esum_t + deg_t b_g) + sum_s gamma_st * C_s + W_b esum_t + deg_t b_b,   esum_t = sum_s e_st

so per edge only gamma (one D x D product) is needed, beta never is. The edge update of layer l and the sums of
layer l+1 are done in the same pass (both need the new edge features), and the last pass feeds the DMS head
directly, so the edge features go through the big D x D products 7 times for 2 layers, the least possible.

Edges come in pieces of at most ``chunk`` edges: row slices of the graph's dense blocks (``graph/blocks.py``),
where node terms broadcast over an [n_src, n_dst, D] view and sums at targets are reductions along axis 0, and
chunks of the remaining sparse edges, which gather and ``scatter_add_``. With the ``"triton"`` scatter backend
on CUDA, a piece's two edge sums come from one fused kernel that never stores gamma (``fused.py``).

The live edge state between passes is kept in ``edge_state``: ``"float32"`` (exact), ``"bfloat16"`` (half the
memory; inputs to each pass rounded) or ``"recompute"`` (nothing kept: each pass rebuilds its input from the edge
attributes, ~2 extra D x D products per edge and pass; the outputs are bitwise those of ``"float32"``). ``"auto"``
(the default) keeps float32 up to 256 MiB of edge features and recomputes beyond, so memory stays bounded by the
chunk size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..graph.blocks import Block
from ..graph.neural_graph import NeuralGraph
from .scatter import scatter_add_, scatter_backend

EDGE_STATES = ("auto", "float32", "bfloat16", "recompute")
AUTO_STORE_BYTES = 2**28  # "auto" keeps float32 edge features up to this size (256 MiB), else recomputes


@dataclass
class _Piece:
    """A set of edges processed at once: a block's row slice (``block``) or sparse edge ids (``ids``, etc.)."""

    block: Block | None = None
    ids: torch.Tensor | None = None
    src: torch.Tensor | None = None
    dst: torch.Tensor | None = None
    edge_type: int | None = None  # the one edge type of all these edges, if they share one

    @property
    def size(self) -> int:
        return self.block.num_edges if self.block is not None else self.ids.numel()

    def rows(self, table: torch.Tensor) -> torch.Tensor:
        """Rows of a per-edge table [E, ...] for these edges (a view for blocks, a copy for sparse edges)."""
        if self.block is not None:
            return table[self.block.start: self.block.start + self.block.num_edges]
        return table.index_select(0, self.ids)

    def write(self, table: torch.Tensor, values: torch.Tensor) -> None:
        """``table[these edges] = values``."""
        if self.block is not None:
            table[self.block.start: self.block.start + self.block.num_edges].copy_(values)
        else:
            table.index_copy_(0, self.ids, values.to(table.dtype))

    def _grid(self, values: torch.Tensor) -> torch.Tensor:
        """values [n, D] as the block's array: [n_src, n_dst, D], or [n_dst, n_src, D] if target-major."""
        b = self.block
        rows, cols = (b.n_dst, b.n_src) if b.target_major else (b.n_src, b.n_dst)
        return values.view(rows, cols, values.shape[-1])

    def _at_src(self, node: torch.Tensor) -> torch.Tensor:
        """node [N, D] cut to the block's sources, shaped to broadcast against ``_grid``."""
        b = self.block
        part = node[b.src: b.src + b.n_src]
        return part[None] if b.target_major else part[:, None]

    def _at_dst(self, node: torch.Tensor) -> torch.Tensor:
        b = self.block
        part = node[b.dst: b.dst + b.n_dst]
        return part[:, None] if b.target_major else part[None]

    def add_node_terms_(self, values: torch.Tensor, by_src: torch.Tensor, by_dst: torch.Tensor) -> None:
        """``values[e] += by_src[src(e)] + by_dst[dst(e)]`` in place. values [n, D]; by_src, by_dst [N, D]."""
        if self.block is not None:
            grid = self._grid(values)
            grid += self._at_src(by_src)
            grid += self._at_dst(by_dst)
        else:
            values += by_src.index_select(0, self.src)
            values += by_dst.index_select(0, self.dst)

    def mul_src_(self, values: torch.Tensor, by_src: torch.Tensor) -> None:
        """``values[e] *= by_src[src(e)]`` in place."""
        if self.block is not None:
            self._grid(values).mul_(self._at_src(by_src))
        else:
            values *= by_src.index_select(0, self.src)

    def sum_at_dst_(self, out: torch.Tensor, values: torch.Tensor) -> None:
        """``out[dst(e)] += values[e]`` for these edges. out [N, D], values [n, D]."""
        if self.block is not None:
            b = self.block
            out[b.dst: b.dst + b.n_dst] += self._grid(values).sum(1 if b.target_major else 0)
        else:
            scatter_add_(out, self.dst, values)


def _fused_message_sums(device: torch.device, hid: int):
    """``fused.message_sums_`` where the ``"triton"`` backend is chosen and the kernel runs on ``device`` at
    hidden size ``hid``, else None (the unfused steps)."""
    if scatter_backend() != "triton":
        return None
    from . import fused  # imports triton: only for those who chose it

    return fused.message_sums_ if fused.runs_on(device) and fused.supports(hid) else None


def _pieces(graph: NeuralGraph, chunk: int, device: torch.device) -> list[_Piece]:
    """Row slices of the graph's blocks and chunks of its sparse edges, each at most ``chunk`` edges."""
    layout = graph.layout
    pieces = []
    for block in layout.blocks:
        types = graph.edge_type[block.start: block.start + block.num_edges]
        uniform = int(types[0]) if bool((types == types[0]).all()) else None
        pieces += [_Piece(block=part, edge_type=uniform) for part in block.split(chunk)]
    src, dst = graph.edge_index
    for start in range(0, layout.sparse.numel(), chunk):
        ids = layout.sparse[start: start + chunk]
        pieces.append(_Piece(ids=ids.to(device), src=src[ids].to(device), dst=dst[ids].to(device)))
    return pieces


@torch.no_grad()
def stream_edge_forward(gnn, edge_attr: torch.Tensor, graph: NeuralGraph, k: int, chunk: int,
                        edge_state: str = "float32") -> torch.Tensor:
    """The NiNo GNN's prediction at horizon k for every edge, streamed (see the module docstring).

    Args:
        gnn: a ``NiNoGNN`` (its weights, config and device are used).
        edge_attr: [E, F * c] scaled edge features, feature-major.
        graph: the neural graph of ``edge_attr``.
        k: horizon, 1..seq_len.
        chunk: at most this many edges per piece (a block row wider than ``chunk`` is one piece).
        edge_state: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"recompute"`` (how the edge features live
            between passes).
    Returns:
        [E, F] float32: newest state + upd_scale * predicted change, in normalised space.
    """
    if edge_state not in EDGE_STATES:
        raise ValueError(f"edge_state must be one of {EDGE_STATES}, got {edge_state!r}")
    cfg = gnn.config
    hid, n_feat, ctx = cfg.hid, graph.feat_size, cfg.ctx
    device = gnn.layer_embed.weight.device
    num_edges, num_nodes = graph.num_edges, graph.num_nodes
    edge_attr = edge_attr.to(device)
    edge_type = graph.edge_type.to(device)
    pieces = _pieces(graph, chunk, device)
    fused_sums = _fused_message_sums(device, hid)
    work = max((p.size for p in pieces), default=0)
    # Three [work, D] buffers: a pass's input edge features and its output alternate between buf_a and buf_b;
    # mid holds the edge update's hidden layer, then gamma or the head's hidden layer.
    buf_a, buf_b, mid = (torch.empty(work, hid, device=device) for _ in range(3))

    def other(e: torch.Tensor) -> torch.Tensor:
        """The one of buf_a / buf_b that does not hold ``e``, cut to its rows."""
        return (buf_b if e.data_ptr() == buf_a.data_ptr() else buf_a)[: e.shape[0]]

    proj = gnn.edge_proj.fc[0]
    w_in, b_in = proj.weight[:, : n_feat * ctx], proj.bias
    type_bias = gnn.layer_embed.weight + b_in  # [edge types, D]: the input layer's bias plus each type's embedding

    def initial(piece: _Piece, out: torch.Tensor) -> torch.Tensor:
        """Layer-0 edge features of a piece into ``out`` [n, D]."""
        attr = piece.rows(edge_attr).float()
        if piece.edge_type is not None:
            return torch.addmm(type_bias[piece.edge_type], attr, w_in.t(), out=out)
        torch.addmm(b_in, attr, w_in.t(), out=out)
        out += gnn.layer_embed(piece.rows(edge_type))
        return out

    def update(layer: int, piece: _Piece, e: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Edge update of ``layer``: out = lin1(silu(lin_e(e) + S[src] + T[dst])). ``e`` is not changed."""
        upd = gnn.gnn.edge_update[layer]
        h = mid[: e.shape[0]]
        torch.addmm(upd.lin_e.bias, e, upd.lin_e.weight.t(), out=h)
        piece.add_node_terms_(h, node_s[layer], node_t[layer])
        F.silu(h, inplace=True)
        return torch.addmm(upd.lin1.bias, h, upd.lin1.weight.t(), out=out)

    def accumulate(layer: int, piece: _Piece, e: torch.Tensor, sums: tuple[torch.Tensor, torch.Tensor],
                   c_src: torch.Tensor) -> None:
        """Add this piece's edge sum and sum of gamma * C_src at the targets (for ``layer``'s aggregation)."""
        esum, acc = sums
        enc = gnn.gnn.convs[layer].edge_encoder
        if fused_sums is not None:
            fused_sums(esum, acc, e, enc.weight[:hid], enc.bias[:hid], c_src, block=piece.block, src=piece.src,
                       dst=piece.dst)
            return
        piece.sum_at_dst_(esum, e)
        gamma = torch.addmm(enc.bias[:hid], e, enc.weight[:hid].t(), out=mid[: e.shape[0]])
        piece.mul_src_(gamma, c_src)
        piece.sum_at_dst_(acc, gamma)

    def aggregate(layer: int, x: torch.Tensor, sums: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Node update of ``layer`` from its sums: silu(lin(post([x, mean of messages])))."""
        esum, acc = sums
        conv = gnn.gnn.convs[layer]
        pre, enc = conv.pre_nns[0][0], conv.edge_encoder
        node_term = F.linear(x, pre.weight[:, :hid], pre.bias)
        gamma_sum = F.linear(esum, enc.weight[:hid]) + degree[:, None] * enc.bias[:hid]
        beta_sum = F.linear(esum, enc.weight[hid:]) + degree[:, None] * enc.bias[hid:]
        mean = (node_term * gamma_sum + acc + beta_sum) / degree.clamp(min=1)[:, None]
        return F.silu(conv.lin(conv.post_nns[0][0](torch.cat([x, mean], dim=1))))

    def source_term(layer: int, x: torch.Tensor) -> torch.Tensor:
        pre = gnn.gnn.convs[layer].pre_nns[0][0]
        return F.linear(x, pre.weight[:, hid:])

    def new_sums() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(num_nodes, hid, device=device), torch.zeros(num_nodes, hid, device=device)

    if edge_state == "auto":
        edge_state = "float32" if num_edges * hid * 4 <= AUTO_STORE_BYTES else "recompute"
    degree = torch.bincount(graph.edge_index[1].to(device), minlength=num_nodes).float()
    layers = cfg.mp_layers
    store = None if edge_state == "recompute" else torch.empty(num_edges, hid, device=device,
                                                                dtype=getattr(torch, edge_state))
    node_s: list[torch.Tensor] = []
    node_t: list[torch.Tensor] = []

    def load(layer: int, piece: _Piece) -> torch.Tensor:
        """The input edge features of ``layer``'s pass for a piece, in buf_a or buf_b."""
        n = piece.size
        if store is not None:
            rows = piece.rows(store)
            return rows if rows.dtype == torch.float32 else buf_a[:n].copy_(rows)
        e = initial(piece, buf_a[:n])
        for earlier in range(layer):  # rebuild through the updates already done (same ops, same values)
            e = update(earlier, piece, e, other(e))
        return e

    # Pass 0: initial edge features and the sums of layer 0.
    x = gnn._node_features(graph.lpe, graph.pos_w, num_nodes)
    sums, c_src = new_sums(), source_term(0, x)
    for piece in pieces:
        e = initial(piece, buf_a[: piece.size])
        if store is not None:
            piece.write(store, e)
        accumulate(0, piece, e, sums, c_src)

    hidden, head = gnn.edge_out.fc[0], gnn.edge_out.fc[2]
    w_out = head.weight.view(cfg.max_feat_size, cfg.seq_len, hid)[:n_feat, k - 1]
    b_out = head.bias.view(cfg.max_feat_size, cfg.seq_len)[:n_feat, k - 1]
    newest = edge_attr.view(num_edges, n_feat, ctx)[:, :, -1]
    out = torch.empty(num_edges, n_feat, device=device)
    for layer in range(layers):
        x = aggregate(layer, x, sums)
        upd = gnn.gnn.edge_update[layer]
        node_s.append(upd.lin_s(x))
        node_t.append(upd.lin_t(x))
        last = layer == layers - 1
        if not last:
            sums, c_src = new_sums(), source_term(layer + 1, x)
        for piece in pieces:
            e = load(layer, piece)
            e_new = update(layer, piece, e, other(e))
            if last:  # DMS head, straight from the final edge features
                h = torch.addmm(hidden.bias, e_new, hidden.weight.t(), out=mid[: piece.size])
                delta = F.linear(F.silu(h, inplace=True), w_out, b_out)
                piece.write(out, piece.rows(newest).float() + cfg.upd_scale * delta)
            else:
                if store is not None:
                    piece.write(store, e_new)
                accumulate(layer + 1, piece, e_new, sums, c_src)
    return out
