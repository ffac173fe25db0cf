"""When NiNoAdam captures states and nowcasts, and how far ahead (the official timeline, reference 3.2-3.3).

With ``period=1000, context=5`` the parameters are captured before the base step on calls 200, 400, ..., 1000
(1-based call index); the call that fills the last slot (1000) is the nowcast call and replaces the base step.
"""
from __future__ import annotations

import math

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


def lr_mass_ratio(lrs: list[float], interval: int, ahead: int) -> float:
    """How far the coming ``ahead`` steps will move, relative to steps like those of the context window.

    A nowcaster trained at constant learning rates predicts the movement of ``ahead`` more steps at the pace of
    the states it reads. Under a decaying schedule the coming steps move less: this is the ratio of their
    learning-rate mass to that of as many steps at the context window's mean rate, in [0, 1].

    Args:
        lrs: the learning rate at each of the c captures, oldest first, ``interval`` steps apart (the newest at
            the nowcast call).
        interval: steps between captures.
        ahead: the horizon in steps (k * interval).

    The context rate is the trapezoid mean of ``lrs`` (the rate over the intervals the nowcaster saw). The future
    rate continues the least-squares linear trend of ``lrs`` from the newest value, floored at zero, which follows
    smooth decays (cosine, linear) closely. The ratio is capped at 1: a rising rate (warmup) never lengthens a
    jump beyond the k-decay, and a constant rate gives exactly 1.
    """
    c = len(lrs)
    if c == 0 or ahead <= 0:
        return 1.0
    if c == 1:
        context_rate, slope = float(lrs[0]), 0.0
    else:
        context_rate = (sum(lrs) - 0.5 * (lrs[0] + lrs[-1])) / (c - 1)
        mean_x, mean_y = (c - 1) / 2, sum(lrs) / c
        slope = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(lrs)) / sum((i - mean_x) ** 2 for i in range(c))
        slope /= interval  # per step
    if context_rate <= 0:  # nothing moved in the window: there is no pace to scale
        return 1.0
    now = max(0.0, float(lrs[-1]))
    if slope >= 0 or now + slope * ahead >= 0:
        future_rate = now + 0.5 * slope * ahead
    else:  # the trend reaches zero within the horizon at now / -slope steps
        future_rate = 0.5 * now * (now / -slope) / ahead
    return min(1.0, max(0.0, future_rate / context_rate))


def scaled_horizon(k: int, lrs: list[float], interval: int) -> tuple[int, float]:
    """A schedule-aware nowcast: (horizon to ask the nowcaster for, fraction of its jump to take).

    ``k' = k * lr_mass_ratio(lrs, interval, k * interval)`` is rounded up to the integer horizon ``K`` and the jump
    is taken the fraction ``k' / K`` of the way from the newest state; ``(k, 1.0)`` when the ratio is 1.
    """
    scaled = k * lr_mass_ratio(lrs, interval, k * interval)
    if scaled >= k:
        return k, 1.0
    asked = max(1, math.ceil(scaled - 1e-9))
    return asked, scaled / asked
