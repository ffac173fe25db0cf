"""The buffer of past parameter states that a nowcast reads, and where it lives."""
from __future__ import annotations

import warnings

import torch


def history_device_for(param_device: torch.device | str, requested: torch.device | str | None = None
                       ) -> tuple[torch.device, bool]:
    """Where a history of parameters on ``param_device`` lives, and whether its memory is pinned.

    Pure (nothing is allocated, no device is queried), so it can be called with any device.

    Args:
        param_device: the parameters' device.
        requested: an explicit ``history_device``, or None for the default: the parameters' device when it is the
            CPU, else the CPU. The history holds ``context`` copies of the model, more than Adam's own state, so
            by default it never takes accelerator memory; the price is one device-to-host copy per capture.
    Returns:
        (device, pin): ``pin`` is True for a CPU history of CUDA parameters, whose captures are then asynchronous
        copies into page-locked memory. Other accelerators get plain CPU memory and blocking copies.
    """
    param_device = torch.device(param_device)
    device = torch.device(requested) if requested is not None else (
        param_device if param_device.type == "cpu" else torch.device("cpu"))
    return device, device.type == "cpu" and param_device.type == "cuda"


class History:
    """One preallocated buffer [c, P] of captured flat parameter states.

    Stored slot-major so that a capture writes contiguous memory; ``states()`` is the [P, c] view that
    nowcasters read (column 0 oldest).

    With ``pin_memory`` the buffer is page-locked CPU memory and a capture of CUDA parameters only enqueues
    non-blocking device-to-host copies on each parameter device's current stream: the training loop does not
    wait for them. Every host-side access of the buffer (``states``, ``export``, ``restore`` and the next
    ``capture``) first waits for the copies still in flight, so what it sees is always complete; code that reads
    ``buffer`` directly calls ``synchronize()`` first.

    Args:
        params: tensors in the graph's flat order.
        context: c, the number of slots.
        device: where states are kept (e.g. ``"cpu"`` to save accelerator memory; ``history_device_for`` picks).
        dtype: how states are stored (e.g. ``torch.bfloat16`` halves the buffer; nowcasters compute in float32).
        pin_memory: page-lock a CPU buffer for asynchronous captures of CUDA parameters. Ignored where CUDA is
            not available (plain CPU memory, blocking copies); falls back to plain memory, with a warning, if
            the pinned allocation fails.
    """

    def __init__(self, params: list[torch.Tensor], context: int, device: torch.device | str,
                 dtype: torch.dtype, pin_memory: bool = False):
        self.sizes = [p.numel() for p in params]
        device = torch.device(device)
        pin_memory = pin_memory and device.type == "cpu" and torch.cuda.is_available()
        shape = (context, sum(self.sizes))
        self.buffer = None
        if pin_memory:
            try:
                self.buffer = torch.zeros(shape, dtype=dtype, pin_memory=True)
            except RuntimeError as err:  # page-locked memory is limited (ulimit -l, containers)
                warnings.warn(f"History: could not pin {_gib(shape, dtype):.2f} GiB of CPU memory ({err}); the "
                              f"history uses plain CPU memory and captures wait for their copies", stacklevel=3)
        if self.buffer is None:
            self.buffer = torch.zeros(shape, device=device, dtype=dtype)
        self.pinned = self.buffer.is_pinned() if pin_memory else False
        self._pending: list[torch.cuda.Event] = []  # copies into or out of the buffer not yet known complete

    def synchronize(self) -> None:
        """Wait until every copy into or out of the buffer has completed (a no-op without pending copies)."""
        for event in self._pending:
            event.synchronize()
        self._pending.clear()

    def _record(self, devices: set[torch.device]) -> None:
        """Mark the work enqueued so far on each device's current stream, for ``synchronize``."""
        for device in devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            self._pending.append(event)

    @torch.no_grad()
    def capture(self, params: list[torch.Tensor], slot: int) -> None:
        """Copy the current values of ``params`` into ``slot``; with a pinned buffer, CUDA tensors are copied
        asynchronously (stream-ordered: a later in-place update of a parameter does not change what is copied)."""
        self.synchronize()  # a CPU parameter's copy is a host write: nothing may still be reading the buffer
        devices = set()
        for chunk, p in zip(torch.split(self.buffer[slot], self.sizes), params):
            asynchronous = self.pinned and p.is_cuda
            chunk.copy_(p.detach().reshape(-1), non_blocking=asynchronous)
            if asynchronous:
                devices.add(p.device)
        self._record(devices)

    def states(self, device: torch.device | str | None = None) -> torch.Tensor:
        """[P, c] states, oldest first: a view of the buffer, or with ``device`` (another device) a copy there.

        Waits for captures still in flight. A copy from a pinned buffer to a CUDA device is asynchronous and
        stream-ordered, so CUDA work that reads it later on the same stream sees complete values.
        """
        self.synchronize()
        view = self.buffer.t()
        if device is None or torch.device(device) == self.buffer.device:
            return view
        device = torch.device(device)
        asynchronous = self.pinned and device.type == "cuda"
        out = view.to(device, non_blocking=asynchronous)
        if asynchronous:
            self._record({out.device})  # the buffer is being read: a later host write waits for it
        return out

    def export(self, filled: int) -> torch.Tensor:
        """A copy of the first ``filled`` slots, [filled, P], for checkpoints (on the buffer's device, in its
        dtype; not pinned)."""
        self.synchronize()
        return self.buffer[:filled].clone()

    def restore(self, slots: torch.Tensor) -> None:
        """Inverse of ``export``."""
        if slots.dim() != 2 or slots.shape[0] > self.buffer.shape[0] or slots.shape[1] != self.buffer.shape[1]:
            raise ValueError(f"saved history has shape {tuple(slots.shape)}; this optimizer keeps "
                             f"[<= {self.buffer.shape[0]}, {self.buffer.shape[1]}]: was it saved for another model?")
        self.synchronize()  # a capture still in flight must not land over the restored states
        self.buffer[: slots.shape[0]].copy_(slots)


def _gib(shape: tuple[int, int], dtype: torch.dtype) -> float:
    return shape[0] * shape[1] * dtype.itemsize / 2 ** 30
