"""Learning-rate schedules of the benchmark: constant (the paper's protocol) or linear warmup + cosine decay.

A schedule is attached the way a user's loop drives one: a ``LambdaLR`` stepped right after every optimizer step
(through the optimizer's step post-hook, so the training loops stay the same for every schedule). With
``NiNoAdam`` the nowcast calls count as steps too, as they do in a user's loop.
"""
from __future__ import annotations

import math
from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

SCHEDULES = ("constant", "cosine")


def warmup_cosine(steps: int, warmup: float) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at step ``s`` (0-based): ``s / w`` for ``s < w`` (``w`` =
    ``round(warmup * steps)`` warmup steps), then ``0.5 * (1 + cos(pi * (s - w) / (steps - w)))``, which is 0 at
    ``s = steps``: the usual linear warmup + cosine decay to zero (e.g. ``transformers``'
    ``get_cosine_schedule_with_warmup``)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup}")
    w = round(warmup * steps)

    def multiplier(s: int) -> float:
        if s < w:
            return s / w
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - w) / max(1, steps - w))))

    return multiplier


def check_schedule(schedule: str, steps: int, warmup: float) -> None:
    """``ValueError`` for an unknown schedule, a non-positive ``steps`` or a warmup outside [0, 1)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
    warmup_cosine(steps, warmup)


def attach_schedule(optimizer: Optimizer, schedule: str, steps: int, warmup: float) -> LambdaLR | None:
    """Drive ``optimizer``'s learning rate by ``schedule`` over ``steps`` steps; None for ``"constant"``.

    The returned ``LambdaLR`` is stepped by a step post-hook of ``optimizer`` (kept alive by the hook).
    """
    check_schedule(schedule, steps, warmup)
    if schedule == "constant":
        return None
    scheduler = LambdaLR(optimizer, warmup_cosine(steps, warmup))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: scheduler.step())
    return scheduler
