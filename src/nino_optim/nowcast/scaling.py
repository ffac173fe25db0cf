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
        self._sizes = torch.tensor(sizes, device=states.device)
        self._rows = sum(sizes)
        if states.dim() == 3:
            self.mean, self.std = self._batched_statistics(states.float())  # [n_tensors, B]
            return
        means, stds = [], []
        for block in torch.split(states, sizes):
            block = block.float()
            means.append(block.mean())
            stds.append(block.std() if block.numel() > 1 else block.new_zeros(()))
        self.mean = torch.stack(means)  # [n_tensors]
        self.std = torch.stack(stds)

    def _batched_statistics(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per (tensor, window) mean and unbiased std of [P, B, c] states, as [n_tensors, B] each.

        Segment sums over rows instead of a loop over tensors: meta-training on a GPU is bound by the number of
        tensor operations, and a GPT has dozens of tensors. Sums are in float64, so that their order does not
        matter at float32 precision."""
        n_tensors, c = len(self._sizes), states.shape[-1]
        tensor_of_row = torch.arange(n_tensors, device=states.device).repeat_interleave(
            self._sizes, output_size=self._rows)  # [P]
        count = (self._sizes * c).double()[:, None]  # [n_tensors, 1]
        zeros = states.new_zeros(n_tensors, states.shape[1], dtype=torch.float64)
        mean = zeros.index_add(0, tensor_of_row, states.sum(-1, dtype=torch.float64)) / count
        deviation = states.double() - mean[tensor_of_row, :, None]
        variance = zeros.index_add(0, tensor_of_row, deviation.square().sum(-1)) / (count - 1).clamp(min=1)
        return mean.float(), variance.sqrt().float()  # a single value (count 1) has std 0, as in the loop

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
