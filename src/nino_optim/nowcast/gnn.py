"""The NiNo graph neural network (official architecture, reference section 1), for inference on neural graphs.

Edges carry the c scaled past states of their parameter(s); nodes start from positional features only.
``mp_layers`` rounds of FiLM-modulated mean message passing, each followed by SiLU and an edge update, turn
the edges into features from which the direct multi-step (DMS) head reads the change at horizon k.
The official model has a third message-passing layer whose output is never used (its weights in the released
checkpoint are untrained): it is not built here, which gives bit-identical outputs for less work.
Submodule names match the official state dict so that its checkpoints load strictly. ``NiNoGNN`` is a Hub model
(``from_pretrained``, ``save_pretrained``, ``push_to_hub``; ``nowcast/hub_model.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.neural_graph import NeuralGraph
from .hub_model import HubNowcaster
from .scaling import LayerwiseScaler
from .scatter import scatter_add_
from .stream import EDGE_STATES, stream_edge_forward


@dataclass
class NiNoConfig:
    """Hyperparameters of the NiNo GNN (names of the official constructor where one exists)."""

    hid: int = 128  # D
    ctx: int = 5  # c, past states per edge
    seq_len: int = 40  # K, horizons of the DMS head
    max_feat_size: int = 9  # F_max, feature slots per edge
    mp_layers: int = 2  # effective message-passing layers (the official 'layers' minus its dead last one)
    edge_types: int = 15
    lpe: int = 8
    wte_pos_enc: bool = False  # learned token-id embedding of word-embedding nodes
    vocab_size: int = 50257
    upd_scale: float = 1.0  # multiplier on the predicted change

    def to_dict(self) -> dict:
        return {"architecture": "nino-gnn", **asdict(self)}


def official_init_(module: nn.Module) -> None:
    """The official initialisation: N(0, 0.02) weights and embeddings, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class Projection(nn.Module):
    """Linear(d0, d1) [SiLU, Linear(d1, d2) ...] held as ``fc``: the official state-dict layout ``fc.i``."""

    def __init__(self, *dims: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i:
                layers.append(nn.SiLU())
            layers.append(nn.Linear(a, b))
        self.fc = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MessagePassing(nn.Module):
    """One PNA-style layer: ``m_st = gamma_st * pre([x_t, x_s]) + beta_st``, mean at t,
    ``x_t' = lin(post([x_t, a_t]))``."""

    def __init__(self, hid: int):
        super().__init__()
        self.edge_encoder = nn.Linear(hid, 2 * hid)  # [gamma | beta]
        self.pre_nns = nn.ModuleList([nn.Sequential(nn.Linear(2 * hid, hid))])
        self.post_nns = nn.ModuleList([nn.Sequential(nn.Linear(2 * hid, hid))])
        self.lin = nn.Linear(hid, hid)

    def forward(self, x: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x [N, D], e [E, D], edge_index [2, E] -> new x [N, D] (differentiable; ``stream.py`` for inference)."""
        hid = x.shape[1]
        pre = self.pre_nns[0][0]
        # pre([x_t, x_s]) = W_t x_t + W_s x_s + b: the node terms are computed once per node, not per edge.
        node_t = F.linear(x, pre.weight[:, :hid], pre.bias)
        node_s = F.linear(x, pre.weight[:, hid:])
        src, dst = edge_index
        gamma, beta = self.edge_encoder(e).chunk(2, dim=1)
        total = scatter_add_(x.new_zeros(x.shape), dst, gamma * (node_t[dst] + node_s[src]) + beta)
        degree = torch.bincount(dst, minlength=x.shape[0]).clamp_(min=1).to(x.dtype)
        mean = total / degree[:, None]
        return self.lin(self.post_nns[0][0](torch.cat([x, mean], dim=1)))


class EdgeUpdate(nn.Module):
    """``e_st' = lin1(SiLU(lin_e(e_st) + lin_s(x_s) + lin_t(x_t)))``, no residual, no norm."""

    def __init__(self, hid: int):
        super().__init__()
        self.lin_e, self.lin_s, self.lin_t, self.lin1 = (nn.Linear(hid, hid) for _ in range(4))

    def forward(self, x: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """New edge features [E, D] from node features x [N, D] and e [E, D] (differentiable)."""
        src, dst = edge_index
        return self.lin1(F.silu(self.lin_e(e) + self.lin_s(x)[src] + self.lin_t(x)[dst]))


class _GNN(nn.Module):
    def __init__(self, hid: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList(MessagePassing(hid) for _ in range(layers))
        self.edge_update = nn.ModuleList(EdgeUpdate(hid) for _ in range(layers))


class NiNoGNN(HubNowcaster, tags=["graph-neural-network"]):
    """The NiNo meta-model. Use ``predict``; it runs under ``torch.no_grad()`` and never changes its weights.

    ``NiNoGNN.from_pretrained(directory or repo id)``, ``.save_pretrained(directory)`` and ``.push_to_hub(repo id)``
    read and write ``config.json`` + ``model.safetensors`` (``nowcast/hub_model.py``).

    Args:
        config: a ``NiNoConfig``, or the dict of ``config.json`` (``None``: the defaults).
        chunk_size: edges processed at once at inference, which bounds the working memory.
        edge_state: how edge features live between inference passes: ``"float32"`` (E x D floats),
            ``"bfloat16"`` (half that, rounded), ``"recompute"`` (none kept, ~10-30% more time, same outputs as
            ``"float32"``) or ``"auto"``: float32 up to 256 MiB, else recompute. See ``nowcast/stream.py``.
    """

    architecture = "nino-gnn"
    config_class = NiNoConfig

    def __init__(self, config: NiNoConfig | dict | None = None, chunk_size: int = 2**16, edge_state: str = "auto"):
        super().__init__()
        if edge_state not in EDGE_STATES:
            raise ValueError(f"edge_state must be one of {EDGE_STATES}, got {edge_state!r}")
        self.config = config = self.coerce_config(config)
        self.chunk_size = chunk_size
        self.edge_state = edge_state
        hid = config.hid
        self.layer_embed = nn.Embedding(config.edge_types, hid)
        self.edge_proj = Projection(config.max_feat_size * config.ctx, hid)
        if config.wte_pos_enc:
            self.wte_pos_enc_layer = nn.Embedding(config.vocab_size + 1, hid)
        self.node_proj = Projection(max(1, config.lpe), hid)
        self.gnn = _GNN(hid, config.mp_layers)
        self.edge_out = Projection(hid, hid, config.max_feat_size * config.seq_len)
        self.reset_parameters()

    @property
    def max_horizon(self) -> int:
        return self.config.seq_len

    def reset_parameters(self) -> None:
        official_init_(self)

    def _node_features(self, graph_lpe: torch.Tensor, pos_w: torch.Tensor | None, num_nodes: int) -> torch.Tensor:
        """Initial node features [N, D]: LPE projection (+ token-id embedding); never parameter values."""
        cfg = self.config
        device = self.layer_embed.weight.device
        x = self.node_proj(graph_lpe.to(device)) if cfg.lpe else torch.zeros(num_nodes, cfg.hid, device=device)
        if cfg.wte_pos_enc and pos_w is not None:
            x = x + self.wte_pos_enc_layer(pos_w.to(device))
        return x

    def _check(self, edge_attr: torch.Tensor, num_edges: int, n_feat: int) -> None:
        cfg = self.config
        if n_feat > cfg.max_feat_size:
            raise ValueError(f"graph has {n_feat} feature slots per edge; this model takes at most {cfg.max_feat_size}")
        if edge_attr.shape != (num_edges, n_feat * cfg.ctx):
            raise ValueError(f"edge_attr must be [E={num_edges}, F*c={n_feat * cfg.ctx}], got {tuple(edge_attr.shape)}")

    def forward(self, edge_attr: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor,
                lpe: torch.Tensor, pos_w: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable pass for meta-training: predictions at every horizon.

        Args:
            edge_attr: [E, F * c] scaled edge features, feature-major.
            edge_index: [2, E]; edge_type: [E]; lpe: [N, lpe]; pos_w: [N] token ids or None.
        Returns:
            [E, F, K]: newest state + upd_scale * predicted change, for horizons 1..K.
        """
        cfg = self.config
        num_edges = edge_attr.shape[0]
        n_feat = edge_attr.shape[1] // cfg.ctx
        self._check(edge_attr, num_edges, n_feat)
        e = F.linear(edge_attr, self.edge_proj.fc[0].weight[:, : n_feat * cfg.ctx], self.edge_proj.fc[0].bias)
        e = e + self.layer_embed(edge_type)
        x = self._node_features(lpe, pos_w, lpe.shape[0])
        for conv, update in zip(self.gnn.convs, self.gnn.edge_update):
            x = F.silu(conv(x, e, edge_index))
            e = update(x, e, edge_index)
        delta = self.edge_out(e).view(num_edges, cfg.max_feat_size, cfg.seq_len)[:, :n_feat]
        newest = edge_attr.view(num_edges, n_feat, cfg.ctx)[:, :, -1:]
        return newest + cfg.upd_scale * delta

    @torch.no_grad()
    def edge_forward(self, edge_attr: torch.Tensor, graph: NeuralGraph, k: int) -> torch.Tensor:
        """Predicted edge values at horizon k in normalised space, streamed in bounded memory (inference).

        Args:
            edge_attr: [E, F * c] scaled edge features, feature-major (``graph.to_edges`` of scaled states).
            graph: the neural graph (edge_index, edge_type, lpe, pos_w).
            k: horizon, 1-based, in state spacings (1..seq_len).
        Returns:
            [E, F]: newest state + upd_scale * predicted change (``nowcast/stream.py``).
        """
        if not 1 <= k <= self.config.seq_len:
            raise ValueError(f"horizon k must be in 1..{self.config.seq_len}, got {k}")
        self._check(edge_attr, graph.num_edges, graph.feat_size)
        return stream_edge_forward(self, edge_attr, graph, k, self.chunk_size, self.edge_state)

    @torch.no_grad()
    def predict(self, graph: NeuralGraph, states: torch.Tensor, k: int) -> torch.Tensor:
        """states [P, c] raw, oldest to newest -> predicted parameters [P] (float32, on ``states.device``).

        Parameters the graph does not place keep their newest value.
        """
        if states.shape[1] != self.config.ctx:
            raise ValueError(f"this NiNo model takes {self.config.ctx} past states, got {states.shape[1]}")
        scaler = LayerwiseScaler(states, graph.params)
        scaled = scaler.scale(states)
        edge_values = self.edge_forward(graph.to_edges(scaled), graph, k).to(states.device)
        pred = scaler.unscale(graph.to_params(edge_values))
        unplaced = ~graph.placed_mask.to(states.device)
        pred[unplaced] = states[unplaced, -1].float()
        return pred
