"""The buffer of past parameter states that a nowcast reads."""
from __future__ import annotations

import torch


class History:
    """One preallocated buffer [c, P] of captured flat parameter states.

    Stored slot-major so that a capture writes contiguous memory; ``states()`` is the [P, c] view that
    nowcasters read (column 0 oldest).

    Args:
        params: tensors in the graph's flat order.
        context: c, the number of slots.
        device, dtype: where and how states are kept (e.g. ``"cpu"`` to save accelerator memory).
    """

    def __init__(self, params: list[torch.Tensor], context: int, device: torch.device | str,
                 dtype: torch.dtype):
        self.sizes = [p.numel() for p in params]
        self.buffer = torch.zeros(context, sum(self.sizes), device=device, dtype=dtype)

    @torch.no_grad()
    def capture(self, params: list[torch.Tensor], slot: int) -> None:
        """Copy the current values of ``params`` into ``slot``."""
        for chunk, p in zip(torch.split(self.buffer[slot], self.sizes), params):
            chunk.copy_(p.detach().reshape(-1))

    def states(self) -> torch.Tensor:
        """[P, c] view of the buffer, oldest state first."""
        return self.buffer.t()

    def export(self, filled: int) -> torch.Tensor:
        """A copy of the first ``filled`` slots, [filled, P], for checkpoints."""
        return self.buffer[:filled].clone()

    def restore(self, slots: torch.Tensor) -> None:
        """Inverse of ``export``."""
        if slots.dim() != 2 or slots.shape[0] > self.buffer.shape[0] or slots.shape[1] != self.buffer.shape[1]:
            raise ValueError(f"saved history has shape {tuple(slots.shape)}; this optimizer keeps "
                             f"[<= {self.buffer.shape[0]}, {self.buffer.shape[1]}]: was it saved for another model?")
        self.buffer[: slots.shape[0]].copy_(slots)
