"""WNN+ (official ``gnn=False`` variant, reference section 1.6): one small MLP applied to every parameter.

Each scalar parameter is predicted from its own c scaled past states plus an embedding of its edge type; there
is no message passing and no node feature. Layer-wise scaling and the k-decay make it the paper's WNN+. ``WNN`` is
a Hub model (``from_pretrained``, ``save_pretrained``, ``push_to_hub``; ``nowcast/hub_model.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..graph.neural_graph import NeuralGraph
from .gnn import Projection, official_init_
from .hub_model import HubNowcaster
from .scaling import LayerwiseScaler


@dataclass
class WNNConfig:
    """Hyperparameters of WNN+ (official constructor names)."""

    hid: int = 128
    ctx: int = 5
    seq_len: int = 40
    edge_types: int = 15
    mlp_layers: int = 4
    upd_scale: float = 1.0

    def to_dict(self) -> dict:
        return {"architecture": "wnn", **asdict(self)}


class WNN(HubNowcaster):
    """Per-parameter nowcaster: ``delta_k = MLP(Linear(history) + type_embedding)[k - 1]``.

    Args:
        config: a ``WNNConfig``, or the dict of ``config.json`` (``None``: the defaults).
        chunk_size: parameters processed at once in ``predict``.
    """

    architecture = "wnn"
    config_class = WNNConfig

    def __init__(self, config: WNNConfig | dict | None = None, chunk_size: int = 2**20):
        super().__init__()
        self.config = config = self.coerce_config(config)
        self.chunk_size = chunk_size
        hid = config.hid
        self.layer_embed = nn.Embedding(config.edge_types, hid)
        self.edge_proj = Projection(config.ctx, hid)
        layers: list[nn.Module] = []
        for i in range(config.mlp_layers):
            layers += [nn.Linear(hid, config.seq_len if i == config.mlp_layers - 1 else hid), nn.SiLU()]
        self.edge_mlp = Projection()
        self.edge_mlp.fc = nn.Sequential(*layers[:-1])
        official_init_(self)

    @property
    def max_horizon(self) -> int:
        return self.config.seq_len

    @torch.no_grad()
    def forward_scaled(self, scaled: torch.Tensor, edge_type: torch.Tensor, k: int) -> torch.Tensor:
        """scaled [n, c] normalised histories, edge_type LongTensor [n] -> [n] newest + upd_scale * change at k."""
        cfg = self.config
        if not 1 <= k <= cfg.seq_len:
            raise ValueError(f"horizon k must be in 1..{cfg.seq_len}, got {k}")
        last = self.edge_mlp.fc[-1]
        h = self.edge_proj.fc(scaled) + self.layer_embed(edge_type)
        delta = F.linear(self.edge_mlp.fc[:-1](h), last.weight[k - 1: k], last.bias[k - 1: k])[:, 0]
        return scaled[:, -1] + cfg.upd_scale * delta

    @torch.no_grad()
    def predict(self, graph: NeuralGraph, states: torch.Tensor, k: int) -> torch.Tensor:
        """states [P, c] raw, oldest to newest -> predicted parameters [P] (float32, on ``states.device``)."""
        if states.shape[1] != self.config.ctx:
            raise ValueError(f"this WNN model takes {self.config.ctx} past states, got {states.shape[1]}")
        device = self.layer_embed.weight.device
        scaler = LayerwiseScaler(states, graph.params)
        scaled = scaler.scale(states)
        # Each scalar's edge type: that of its edge (a fused qkv weight carries types 7, 8 and 9), else its tensor's.
        types = torch.cat([torch.full((p.numel,), p.edge_type, dtype=torch.long) for p in graph.params])
        placed = graph.placed_mask
        types[placed] = graph.edge_type[graph.param_edge[placed]]
        out = torch.empty(states.shape[0], device=states.device)
        for start in range(0, states.shape[0], self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            out[sl] = self.forward_scaled(scaled[sl].to(device), types[sl].to(device), k).to(out.device)
        return scaler.unscale(out)
