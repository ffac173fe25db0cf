"""When NiNoAdam captures states and nowcasts, and how far ahead (the official timeline, reference 3.2-3.3).

With ``period=1000, context=5`` the parameters are captured before the base step on calls 200, 400, ..., 1000
(1-based call index); the call that fills the last slot (1000) is the nowcast call and replaces the base step.
"""
from __future__ import annotations

import numpy as np


def validate_timeline(period: int, context: int) -> int:
    """Check ``period`` and ``context`` and return the capture interval ``period // context``."""
    for name, value in (("period", period), ("context", context)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if period % context:
        raise ValueError(f"period ({period}) must be a multiple of context ({context}) so that states are "
                         f"captured every period // context steps; try period={context * round(period / context)}")
    return period // context


def capture_slot(call: int, interval: int, context: int) -> int | None:
    """History slot (0 = oldest) that 1-based call ``call`` captures into, or None if it captures nothing."""
    if call % interval:
        return None
    return (call // interval - 1) % context


def filled_slots(calls_done: int, interval: int, context: int) -> int:
    """Slots of the current cycle holding a state after ``calls_done`` completed calls."""
    return (calls_done // interval) % context


def k_schedule(max_steps: int, period: int, max_horizon: int = 40, power: float = 2.0) -> list[int]:
    """Horizon k for each nowcast: ``round(linspace(K**(1/p), 1, max_steps // period) ** p)``.

    ``power=0`` disables the decay (k = K throughout). Rounding is numpy's half-to-even, as in the official code.

    >>> k_schedule(10_000, 1000)
    [40, 33, 26, 21, 16, 11, 8, 5, 3, 1]
    """
    n = max(1, max_steps // period)
    if power == 0:
        return [max_horizon] * n
    return [int(k) for k in np.round(np.linspace(max_horizon ** (1 / power), 1, num=n) ** power)]


def horizon_at(call: int, schedule: list[int], period: int) -> int:
    """k for the nowcast on 1-based call ``call`` (the schedule's last value once it runs out)."""
    return schedule[min(len(schedule) - 1, (call - 1) // period)]
