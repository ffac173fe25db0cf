"""Layer-wise scaling of parameter states (official method 'std', reference section 1.7).

One (mean, unbiased std) pair per parameter tensor, over all its elements and all c states together.
States are scaled as ``(x - mean) / (std + eps)`` and predictions unscaled as ``y * std + mean``: the eps is
not added back, as in the official code, so that its checkpoints see what they were trained on.
"""
from __future__ import annotations

import torch

from ..graph.neural_graph import ParamSlot

EPS = 1e-6


class LayerwiseScaler:
    """Per-tensor statistics of states [P, c], and the maps into and out of normalised space.

    Args:
        states: [P, c] raw states (any float dtype; statistics are computed in float32), or [P, B, c]: B windows
            at once (meta-training), each with its own statistics.
        params: the graph's ``ParamSlot`` list, which splits the P rows into tensors.
    """

    def __init__(self, states: torch.Tensor, params: list[ParamSlot]):
        sizes = [p.numel for p in params]
        reduce = {} if states.dim() == 2 else {"dim": (0, 2)}  # all of a tensor's elements and states
        means, stds = [], []
        for block in torch.split(states, sizes):
            block = block.float()
            means.append(block.mean(**reduce))
            stds.append(block.std(**reduce) if block.shape[0] * block.shape[-1] > 1
                        else block.new_zeros(block.shape[1:-1]))
        self.mean = torch.stack(means)  # [n_tensors] or [n_tensors, B]
        self.std = torch.stack(stds)
        self._sizes = torch.tensor(sizes, device=states.device)
        self._rows = sum(sizes)

    def _per_row(self, values: torch.Tensor) -> torch.Tensor:
        # output_size given, so that on a GPU the length need not be read back (a wait for the device)
        return values.repeat_interleave(self._sizes, dim=0, output_size=self._rows)[..., None]  # [P, 1] / [P, B, 1]

    def scale(self, states: torch.Tensor) -> torch.Tensor:
        """[P, T] raw -> [P, T] float32 normalised ([P, B, T] with B windows' statistics)."""
        return (states.float() - self._per_row(self.mean)) / (self._per_row(self.std) + EPS)

    def unscale(self, values: torch.Tensor) -> torch.Tensor:
        """[P] or [P, T] normalised -> raw (float32)."""
        squeeze = values.dim() == 1
        values = values[:, None] if squeeze else values
        out = values.float() * self._per_row(self.std) + self._per_row(self.mean)
        return out[:, 0] if squeeze else out
