"""Training examples for NiNo: windows of c past and up to K future states of a recorded trajectory.

A window starts at a random saved state; its states are ``spacing`` optimizer steps apart (200, as at
inference with ``period=1000, context=5``), or, with ``stretch``, a spacing drawn around it: a trajectory seen
240 steps apart moves about as one trained 1.2x faster would at 200, so a stretched window stands in for a run
with another learning rate. Inputs and targets are scaled with the *inputs'* per-tensor statistics (reference
section 4.2), mapped to the trajectory's neural graph and zero-padded to the model's 9 feature slots. The mask
is 1 on real (parameter, horizon) entries only: not on padded slots, not past the trajectory's end, not on
auxiliary edges (residual, head, self-loop).
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..graph import NeuralGraph, build_neural_graph
from ..nowcast.scaling import LayerwiseScaler
from .trajectories import Trajectory, load_trajectory
from .zoo import build_model, example_inputs

MIN_FUTURE = 10  # the official dataset asserts at least 10 future states per window


@dataclass
class Window:
    """One example, or several collated into one disconnected graph (then E and N count all of theirs).
    E edges, N nodes, F = max_feat_size slots, c inputs, K horizons."""

    edge_attr: torch.Tensor  # [E, F * c] scaled inputs, feature-major
    target: torch.Tensor  # [E, F, K] scaled future states
    mask: torch.Tensor  # [E, F, K] bool
    edge_index: torch.Tensor  # [2, E]
    edge_type: torch.Tensor  # [E]
    lpe: torch.Tensor  # [N, 8]

    def to(self, device: torch.device | str) -> "Window":
        """The same window with every tensor on ``device``."""
        return Window(*(getattr(self, f).to(device, non_blocking=True) for f in self.__dataclass_fields__))


class WindowSampler:
    """Samples windows from a set of trajectories (each with its neural graph, built once).

    Args:
        paths: trajectory directories.
        context, horizon: c and K.
        spacing: optimizer steps between consecutive states of a window.
        stretch: windows draw their spacing uniformly from the multiples of the trajectory's saving interval
            within ``spacing * (1 +- stretch)`` (those the trajectory is long enough for); 0 keeps ``spacing``.
        max_feat_size: feature slots every window is padded to.
        device: where the states are kept and windows are made (an accelerator makes them much faster than the
            CPU, which would otherwise starve meta-training on it); the random draws stay on the CPU.
    """

    def __init__(self, paths: list[Path], *, context: int = 5, horizon: int = 40, spacing: int = 200,
                 stretch: float = 0.0, max_feat_size: int = 9, device: torch.device | str = "cpu"):
        if not 0 <= stretch < 1:
            raise ValueError(f"stretch must be in [0, 1), got {stretch}")
        self.context, self.horizon, self.spacing, self.max_feat_size = context, horizon, spacing, max_feat_size
        self.stretch = stretch
        self.device = torch.device(device)
        self.items: list[tuple[Trajectory, NeuralGraph, list[int]]] = []  # trajectory, graph, strides
        self._graphs: dict[str, NeuralGraph] = {}  # one graph (and LPE) per architecture, shared by its trajectories
        self.add(paths)
        if not self.items:
            raise ValueError("no trajectories to sample windows from")

    def add(self, paths: list[Path]) -> None:
        """Load more trajectories into the set (meta-training can take those of a collection still running)."""
        for path in paths:
            traj = load_trajectory(path)
            every = traj.meta["spec"]["save_every"]
            if self.spacing % every:
                raise ValueError(f"{path}: states every {every} steps cannot give a spacing of {self.spacing}")
            fits = lambda stride: traj.states.shape[0] >= (self.context + MIN_FUTURE - 1) * stride + 1
            if not fits(self.spacing // every):
                raise ValueError(f"{path}: {traj.states.shape[0]} states are too few for {self.context} inputs and "
                                 f"{MIN_FUTURE} targets {self.spacing} steps apart")
            low = max(1, math.ceil(self.spacing * (1 - self.stretch) / every - 1e-9))
            high = math.floor(self.spacing * (1 + self.stretch) / every + 1e-9)
            strides = [s for s in range(low, high + 1) if fits(s)]
            arch = traj.meta["spec"]["arch"]
            key = json.dumps(arch, sort_keys=True)
            if key not in self._graphs:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._graphs[key] = build_neural_graph(build_model(arch), example_inputs=example_inputs(arch))
                self._graphs[key].lpe  # computed once, here
            graph = self._graphs[key]
            if graph.num_params != traj.states.shape[1]:
                raise ValueError(f"{path}: {traj.states.shape[1]} parameters recorded, the model has {graph.num_params}")
            traj.states = traj.states.to(self.device)
            self.items.append((traj, graph, strides))

    def sample(self, generator: torch.Generator, windows: int = 1, flip_lpe: bool = True) -> Window:
        """``windows`` random windows of one trajectory, collated into one disconnected graph.

        The trajectory is uniform over the set, each window's start uniform over its states; each window is
        scaled with its own inputs' statistics and gets its own random LPE sign flips. The windows of one call
        share every tensor operation, so 4 cost about what 1 does (the official batches are 4 trajectories x
        4 windows); on a GPU that is what bounds meta-training speed.
        """
        traj, graph, strides = self.items[int(torch.randint(len(self.items), (1,), generator=generator))]
        stride = strides[0]  # a single stride draws nothing: runs without stretch keep their random stream
        if len(strides) > 1:
            stride = strides[int(torch.randint(len(strides), (1,), generator=generator))]
        n, c, K = traj.states.shape[0], self.context, self.horizon
        last_start = n - 1 - (c + MIN_FUTURE - 1) * stride
        starts = torch.randint(last_start + 1, (windows,), generator=generator)
        idx = starts[:, None] + stride * torch.arange(c + K)  # [B, c + K] saved states (inputs always exist)
        inside = (idx < n).to(self.device)
        states = traj.states[idx.clamp(max=n - 1).flatten().to(self.device)]  # [B * (c + K), P]
        states = states.view(windows, c + K, -1).permute(2, 0, 1).float()  # [P, B, c + K]
        scaled = LayerwiseScaler(states[..., :c], graph.params).scale(states) * inside  # 0 past the end
        E, N = graph.num_edges, graph.num_nodes
        edges = self._edges(graph, scaled.flatten(1)).view(E, self.max_feat_size, windows, c + K)
        edges = edges.permute(2, 0, 1, 3)  # [B, E, F, c + K]
        lpe, edge_index, edge_type, slots = graph.on_device(self.device, "window", lambda: (
            graph.lpe, graph.edge_index, graph.edge_type,
            self._edges(graph, torch.ones(graph.num_params, 1))[..., 0].bool() & (graph.edge_type < 10)[:, None]))
        lpe = lpe.expand(windows, -1, -1)
        if flip_lpe:
            lpe = lpe * (torch.randint(2, (windows, 1, lpe.shape[-1]), generator=generator) * 2 - 1).to(self.device)
        offsets = (torch.arange(windows) * N).to(self.device)
        return Window(edge_attr=edges[..., :c].reshape(windows * E, -1),
                      target=edges[..., c:].reshape(windows * E, self.max_feat_size, K),
                      mask=(slots[:, :, None] & inside[:, None, None, c:]).reshape(windows * E, -1, K),
                      edge_index=(edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1),
                      edge_type=edge_type.repeat(windows), lpe=lpe.reshape(windows * N, -1))

    def _edges(self, graph: NeuralGraph, values: torch.Tensor) -> torch.Tensor:
        """[P, T] -> [E, max_feat_size, T], zero-padded slots (auxiliary edges hold their marker in slot 0)."""
        edges = graph.to_edges(values).view(graph.num_edges, graph.feat_size, values.shape[1])
        return F.pad(edges, (0, 0, 0, self.max_feat_size - graph.feat_size))


def collate(windows: list[Window]) -> Window:
    """Batch windows into one disconnected graph."""
    offsets = torch.tensor([0] + [w.lpe.shape[0] for w in windows[:-1]]).cumsum(0)
    return Window(edge_attr=torch.cat([w.edge_attr for w in windows]),
                  target=torch.cat([w.target for w in windows]), mask=torch.cat([w.mask for w in windows]),
                  edge_index=torch.cat([w.edge_index + o for w, o in zip(windows, offsets)], dim=1),
                  edge_type=torch.cat([w.edge_type for w in windows]), lpe=torch.cat([w.lpe for w in windows]))


def masked_l1(pred: torch.Tensor, batch: Window) -> torch.Tensor:
    """Mean |pred - target| over the mask's valid entries (all horizons weighted equally).

    A masked sum rather than boolean indexing, which would wait for the GPU to count the valid entries."""
    return torch.where(batch.mask, (pred - batch.target).abs(), 0.0).sum() / batch.mask.sum()
