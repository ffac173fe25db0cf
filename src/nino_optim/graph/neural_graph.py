"""The neural graph: nodes are neurons, edges carry parameters, and an exact map between the two.

Conventions are those of the official NiNo code so that its checkpoints see the graphs they were trained on:
edges ``(source, target)`` with messages flowing source -> target; one edge per weight scalar (a 3x3 kernel
is one edge with 9 feature slots); auxiliary edges (residual, head) hold the constant 1 and self-loops the
constant 2 in slot 0, written in normalised space; edge features are feature-major (column ``f * T + t``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .blocks import EdgeLayout, find_blocks
from .lpe import laplacian_positional_encoding

# Edge types of the official code (reference section 2.2).
FC, BIAS, CONV, NORM, TOKEN_EMBED, POS_EMBED, ATTN_Q, ATTN_K, ATTN_V = 1, 2, 3, 4, 5, 6, 7, 8, 9
RESIDUAL, HEAD, SELF_LOOP = 10, 11, 13
AUX_VALUE = {RESIDUAL: 1.0, HEAD: 1.0, SELF_LOOP: 2.0}
LPE_DIM = 8


@dataclass(frozen=True)
class ParamSlot:
    """Where one parameter tensor lives in the flat vector, whether the graph places it, and its edge type."""

    name: str
    shape: tuple[int, ...]
    offset: int
    placed: bool
    edge_type: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class NeuralGraph:
    """A neural graph with its parameter <-> edge map.

    Attributes:
        num_nodes: N.
        edge_index: LongTensor [2, E]; row 0 source, row 1 target.
        edge_type: LongTensor [E]; 1-13 as in the official code.
        feat_size: F, the feature slots per edge (9 for 3x3 convs, 1 for linear-only models).
        params: one ``ParamSlot`` per parameter tensor, in ``named_parameters()`` order, tied parameters once.
        param_edge, param_slot: LongTensor [P]; the (edge, slot) holding flat parameter p (-1 where unplaced).
        pos_w: LongTensor [N]; token ids (1-based) for token-embedding nodes, 0 elsewhere.
        fallback: names of parameter tensors the graph could not place, with the reason.
    """

    num_nodes: int
    edge_index: torch.Tensor
    edge_type: torch.Tensor
    feat_size: int
    params: list[ParamSlot]
    param_edge: torch.Tensor
    param_slot: torch.Tensor
    pos_w: torch.Tensor
    fallback: dict[str, str] = field(default_factory=dict)
    use_lpe: bool = True
    _lpe: torch.Tensor | None = field(default=None, repr=False)
    _layout: EdgeLayout | None = field(default=None, repr=False)
    # tensors already copied to an accelerator, by (name, device): see on_device
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def num_params(self) -> int:
        return self.param_edge.numel()

    @property
    def placed_mask(self) -> torch.Tensor:
        """BoolTensor [P]: True where the flat parameter has an edge."""
        return self.param_edge >= 0

    @property
    def lpe(self) -> torch.Tensor:
        """Node positional features [N, 8]: deterministic Laplacian eigenvectors, or zeros with ``lpe=False``.

        Computed on first use and cached with the graph.
        """
        if self._lpe is None:
            if self.use_lpe:
                self._lpe = laplacian_positional_encoding(self.edge_index, self.num_nodes, LPE_DIM, self.layout)
            else:
                self._lpe = torch.zeros(self.num_nodes, LPE_DIM)
        return self._lpe

    @lpe.setter
    def lpe(self, value: torch.Tensor) -> None:
        """Restore a cached encoding [N, 8] (e.g. from a checkpoint, so a resumed run sees the same one)."""
        if tuple(value.shape) != (self.num_nodes, LPE_DIM):
            raise ValueError(f"LPE must be [{self.num_nodes}, {LPE_DIM}] for this graph, got {tuple(value.shape)}")
        self._lpe = value.detach().float().cpu()

    @property
    def has_lpe(self) -> bool:
        """Whether the positional encoding has been computed (or restored) already."""
        return self._lpe is not None

    @property
    def layout(self) -> EdgeLayout:
        """The edges as dense bipartite blocks plus sparse leftovers (``graph/blocks.py``); cached."""
        if self._layout is None:
            self._layout = find_blocks(self.edge_index)
        return self._layout

    def to_edges(self, states: torch.Tensor) -> torch.Tensor:
        """Map flat states to edge features.

        Args:
            states: [P, T] flat parameter states (T = number of states), already scaled if the caller scales.
        Returns:
            [E, F * T] float tensor, feature-major (column ``f * T + t``); unused slots are 0, auxiliary edges
            hold 1 and self-loops 2 in slot 0 for every t.
        """
        if states.dim() != 2 or states.shape[0] != self.num_params:
            raise ValueError(f"states must be [P={self.num_params}, T], got {tuple(states.shape)}")
        T = states.shape[1]
        out = states.new_zeros(self.num_edges, self.feat_size, T)
        edge, slot, placed = self._index_on(states.device)
        out[edge, slot] = states[placed]
        for etype, value in AUX_VALUE.items():  # edge ids, not a mask: indexing by a mask waits for a GPU
            ids = self.on_device(states.device, f"edges{etype}", lambda: (self.edge_type == etype).nonzero()[:, 0])
            out[ids, 0] = value
        return out.reshape(self.num_edges, self.feat_size * T)

    def to_params(self, edge_values: torch.Tensor, default: torch.Tensor | None = None) -> torch.Tensor:
        """Inverse of ``to_edges`` for one state.

        Args:
            edge_values: [E, F] (or [E, F, 1]) values per edge and slot.
            default: optional [P] values for parameters the graph does not place (else 0).
        Returns:
            [P] flat parameters.
        """
        edge_values = edge_values.reshape(self.num_edges, -1)
        if edge_values.shape[1] != self.feat_size:
            raise ValueError(f"edge_values must be [E={self.num_edges}, F={self.feat_size}], "
                             f"got {tuple(edge_values.shape)}")
        edge, slot, placed = self._index_on(edge_values.device)
        if default is None:
            out = edge_values.new_zeros(self.num_params)
        else:
            out = default.to(edge_values.device, edge_values.dtype).clone()
        out[placed] = edge_values[edge, slot]
        return out

    def _index_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edge, slot) of every placed parameter, and the index of each placed parameter, on ``device``."""
        def make():
            placed = self.placed_mask
            return self.param_edge[placed], self.param_slot[placed], placed.nonzero()[:, 0]
        return self.on_device(device, "index", make)

    def on_device(self, device: torch.device, name: str, make):
        """``make()``'s tensor(s) on ``device``: made each time on the CPU, copied to an accelerator once per
        ``name`` (meta-training maps thousands of windows of one graph there)."""
        if device.type == "cpu":
            return make()
        key = (name, str(device))
        if key not in self._on_device:
            value = make()
            self._on_device[key] = tuple(v.to(device) for v in value) if isinstance(value, tuple) else value.to(device)
        return self._on_device[key]

    def draw(self, path, max_pixels: int = 1500) -> str:
        """Save a PNG of the adjacency matrix coloured by edge type (source rows, target columns).

        Graphs with more than ``max_pixels`` nodes are binned (a pixel shows the highest edge type in its bin).
        Needs matplotlib. Returns ``summary()``.
        """
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        n = self.num_nodes
        size = min(n, max_pixels)
        scale = size / max(n, 1)
        img = torch.zeros(size, size, dtype=torch.long)
        src = (self.edge_index[0].double() * scale).long().clamp_max(size - 1)
        dst = (self.edge_index[1].double() * scale).long().clamp_max(size - 1)
        flat = img.view(-1)
        flat.scatter_reduce_(0, src * size + dst, self.edge_type.long(), reduce="amax")
        colours = ["white"] + [plt.get_cmap("tab20")(i) for i in range(14)]
        fig, ax = plt.subplots(figsize=(7, 6))
        shown = ax.imshow(img.numpy(), cmap=ListedColormap(colours), vmin=-0.5, vmax=14.5, interpolation="nearest")
        present = sorted(set(self.edge_type.tolist()))
        bar = fig.colorbar(shown, ax=ax, ticks=present)
        bar.set_label("edge type")
        ax.set_xlabel("target node" + (f" (binned x{1 / scale:.1f})" if scale < 1 else ""))
        ax.set_ylabel("source node")
        ax.set_title(f"{n} nodes, {self.num_edges} edges")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return self.summary()

    def summary(self) -> str:
        """A short text description: nodes, edges, edge-type histogram, placed vs fallback parameters."""
        hist = torch.bincount(self.edge_type).tolist()
        types = ", ".join(f"{t}: {n}" for t, n in enumerate(hist) if n)
        placed = int(self.placed_mask.sum())
        lines = [f"NeuralGraph: {self.num_nodes} nodes, {self.num_edges} edges (types {{{types}}}), F={self.feat_size}",
                 f"  parameters placed: {placed} of {self.num_params}"]
        lines += [f"  fallback: {name} ({why})" for name, why in self.fallback.items()]
        return "\n".join(lines)
