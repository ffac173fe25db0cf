"""Steps to a target accuracy: the paper's benchmark metric (reference section 5.1).

``train_steps_to_target`` trains one model with one optimizer on the paper's protocol (batch 128, shuffled by a
generator seeded with the run seed, so every method sees the same initialisation and batch order), evaluates
test accuracy every ``eval_every`` steps on the full test set, and returns the curve together with the first
step at which each accuracy threshold was reached. The official code evaluates after every step; a coarser
``eval_every`` rounds each "steps to target" up to the next evaluation.

On a NiNoAdam nowcast call (``opt.need_grads`` is False) the batch is drawn but forward/backward are skipped,
as the official loop does; the call still counts as one optimizer step.

Two batch orders: ``"randperm"`` (a fresh ``torch.randperm`` from one generator seeded with the run seed, each
epoch) and ``"dataloader"``, the official ``train_vision.py`` order: a shuffled ``torch.utils.data.DataLoader``
(batch 128, last partial batch kept) whose generator is re-seeded with ``seed + epoch`` at every epoch.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import Optimizer

from .data import FashionMNIST
from .tasks import Task, build_model


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads and return the number used.

    ``None`` picks the CPUs this process may use minus those other processes keep busy (1-minute load
    average, rounded), at least 1. On a small shared machine this matters more than it seems: with 2 threads on
    2 cores and one core taken by another job, every parallel region waits for the descheduled thread, and a
    FM-16 step measured 3x slower than with 1 thread (~150 vs ~50 ms; 19 ms with 2 threads on an idle machine).
    """
    if threads is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        try:
            busy = round(os.getloadavg()[0])
        except (AttributeError, OSError):
            busy = 0
        threads = cpus - min(busy, cpus)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy in [0, 1] of ``model`` on images ``x`` [N, C, H, W] and labels ``y`` [N], in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i: i + batch_size].to(device))
        correct += int((logits.argmax(1) == y[i: i + batch_size].to(device)).sum())
    model.train(was_training)
    return correct / max(1, len(x))


@dataclass
class Curve:
    """One training run: the evaluated metric at each evaluated step and the first step reaching each threshold.

    ``values[i]`` (test accuracy for the image tasks, validation perplexity for the LM task) was measured after
    ``steps[i]`` optimizer steps (step 0 = initial model). ``higher_is_better`` says which way thresholds are
    crossed. ``train_loss[i]`` is the mean training loss over the steps since the previous evaluation (NaN for
    step 0 and for intervals made only of nowcast calls). ``reached[t]`` is the first evaluated step whose value
    is at least (or, lower being better, at most) t, or None. ``nowcast_times[i]`` is the duration of the
    ``step()`` call at ``nowcast_steps[i]`` (the first includes building the neural graph). Times are seconds:
    ``train_time`` excludes evaluation, ``wall_time`` is the whole run.
    """

    name: str
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    reached: dict[float, int | None] = field(default_factory=dict)
    nowcast_steps: list[int] = field(default_factory=list)
    nowcast_times: list[float] = field(default_factory=list)
    train_time: float = 0.0
    eval_time: float = 0.0
    wall_time: float = 0.0
    finite: bool = True
    higher_is_better: bool = True

    def add(self, step: int, value: float, loss: float) -> None:
        """Record one evaluation and update ``reached``."""
        self.steps.append(step)
        self.values.append(value)
        self.train_loss.append(loss)
        for t in self.reached:
            if self.reached[t] is None and _meets(value, t, self.higher_is_better):
                self.reached[t] = step

    @property
    def final_value(self) -> float:
        """The metric at the last evaluation (NaN before any)."""
        return self.values[-1] if self.values else float("nan")

    @property
    def best_value(self) -> float:
        """The best metric over the run (NaN before any evaluation)."""
        if not self.values:
            return float("nan")
        return max(self.values) if self.higher_is_better else min(self.values)

    def value_around(self, step: int) -> tuple[float | None, float | None]:
        """The metric at the last evaluation before ``step`` and at the first one at or after it."""
        before = [a for s, a in zip(self.steps, self.values) if s < step]
        after = [a for s, a in zip(self.steps, self.values) if s >= step]
        return (before[-1] if before else None), (after[0] if after else None)

    def to_dict(self) -> dict:
        """A JSON-serialisable copy (threshold keys become strings)."""
        return {"name": self.name, "steps": self.steps, "values": self.values, "train_loss": self.train_loss,
                "reached": {str(k): v for k, v in self.reached.items()}, "nowcast_steps": self.nowcast_steps,
                "nowcast_times": self.nowcast_times, "higher_is_better": self.higher_is_better,
                "train_time": self.train_time, "eval_time": self.eval_time, "wall_time": self.wall_time,
                "finite": self.finite}


def _meets(value: float | None, threshold: float, higher_is_better: bool) -> bool:
    if value is None or value != value:
        return False
    return value >= threshold - 1e-12 if higher_is_better else value <= threshold + 1e-12


def reduction(steps: int | None, baseline: int | None) -> float | None:
    """Percent fewer steps than the baseline (positive = faster), or None if either did not reach the target."""
    if steps is None or baseline is None or baseline == 0:
        return None
    return 100.0 * (baseline - steps) / baseline


def first_reached(steps: Iterable[int], values: Iterable[float], threshold: float,
                  higher_is_better: bool = True) -> int | None:
    """The first step whose value is >= ``threshold`` (<= when lower is better), or None when never reached."""
    for s, v in zip(steps, values):
        if _meets(v, threshold, higher_is_better):
            return int(s)
    return None


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """Shuffled index batches forever: a fresh permutation from ``generator`` each epoch, last batch kept."""
    while True:
        perm = torch.randperm(n, generator=generator)
        yield from perm.split(batch_size)


def _dataloader_batches(n: int, batch_size: int, seed: int) -> Iterable[torch.Tensor]:
    """Index batches in the order of the official loop: a shuffled DataLoader re-seeded with seed + epoch."""
    from itertools import count

    from torch.utils.data import DataLoader

    generator = torch.Generator()
    loader = DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator)
    for epoch in count():
        generator.manual_seed(seed + epoch)
        yield from loader


BATCH_ORDERS = ("randperm", "dataloader")


def run_steps(optimizer: Optimizer, steps: int, eval_every: int, curve: Curve,
              next_batch: Callable[[], Callable[[], torch.Tensor]], record: Callable[[int, float], None], *,
              after_step: Callable[[], None] | None = None, stop: Callable[[], bool] | None = None) -> None:
    """The training loop of every benchmark task, filling ``curve``'s times, nowcasts and finiteness.

    ``next_batch()`` draws the step's batch (on every step, nowcasts included, so the batch order never depends on
    the method) and returns a function computing its loss. On a NiNoAdam nowcast call (``need_grads`` False) the
    loss is not computed, as in the official loop. ``record(step, mean training loss since the last evaluation)``
    runs every ``eval_every`` steps and at the last step; then a non-finite loss since the last evaluation ends
    the run, and so may ``stop()``.
    """
    # The loss is summed where it is computed and read once per evaluation: reading it every step would make
    # an accelerator wait for each step to finish. A non-finite loss is therefore noticed at the next evaluation.
    loss_sum, loss_count = 0.0, 0
    train_start = time.perf_counter()
    for step in range(1, steps + 1):
        loss_of_batch = next_batch()
        if getattr(optimizer, "need_grads", True):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of_batch()
            loss.backward()
            optimizer.step()
            loss_sum, loss_count = loss_sum + loss.detach(), loss_count + 1
        else:  # a nowcast call: gradients are not used, so forward/backward are skipped (official loop)
            t0 = time.perf_counter()
            optimizer.step()
            curve.nowcast_times.append(time.perf_counter() - t0)
            curve.nowcast_steps.append(step)
        if after_step is not None:
            after_step()
        if step % eval_every == 0 or step == steps:
            mean_loss = float(loss_sum) / loss_count if loss_count else float("nan")
            curve.finite = curve.finite and (not loss_count or math.isfinite(mean_loss))
            curve.train_time += time.perf_counter() - train_start
            record(step, mean_loss)
            loss_sum, loss_count = 0.0, 0
            train_start = time.perf_counter()
            if not curve.finite or (stop is not None and stop()):
                break


def train_steps_to_target(make_optimizer: Callable[[nn.Module], Optimizer], data: FashionMNIST, *,
                          steps: int, eval_every: int, thresholds: Iterable[float] = (), seed: int = 0,
                          model: str | Task | Callable[[], nn.Module] = "fm16", batch_size: int = 128,
                          eval_batch_size: int = 1000, name: str = "run", stop_when_reached: bool = False,
                          progress: bool = False, log: Callable[[str], None] | None = None,
                          log_every: int | None = None, order: str = "randperm",
                          on_eval: Callable[[int, float], None] | None = None,
                          device: torch.device | str = "cpu") -> Curve:
    """Train a fresh model with ``make_optimizer(model)`` for ``steps`` optimizer steps and record its curve.

    Args:
        make_optimizer: builds the optimizer for the model, e.g. ``lambda m: torch.optim.Adam(m.parameters(),
            lr=6e-3)`` or ``lambda m: NiNoAdam(m.parameters(), model=m, lr=6e-3, max_steps=steps)``.
        data: normalised train/test tensors (``load_fashion_mnist()``).
        steps: optimizer steps (calls to ``step()``, nowcasts included).
        eval_every: evaluate test accuracy every this many steps (and at step 0 and the last step).
        thresholds: test accuracies in [0, 1] whose first-reaching step is recorded.
        seed: seeds the model initialisation (``torch.manual_seed``) and the batch order (its own generator).
        model: a task name / ``Task`` (built with ``build_model(task, seed)``) or a zero-argument factory
            (called after ``torch.manual_seed(seed)``).
        stop_when_reached: stop as soon as every threshold has been reached.
        progress: show a tqdm bar when tqdm is installed.
        log: called with a one-line message after each evaluation (e.g. ``print``), if given.
        log_every: call ``log`` only on steps that are multiples of this (and the last step).
        on_eval: called with (step, accuracy) after each evaluation, if given.
        order: ``"randperm"`` or ``"dataloader"`` (the official loop's batch order; see the module docstring).
        device: where the model and the data live (initialisation and batch order are drawn on the CPU, so a
            seed gives the same run on every device up to floating-point differences).

    Returns:
        a ``Curve``. A non-finite training loss stops the run early with ``finite=False``.
    """
    if steps <= 0 or eval_every <= 0:
        raise ValueError(f"steps and eval_every must be positive, got {steps} and {eval_every}")
    if order not in BATCH_ORDERS:
        raise ValueError(f"order must be one of {BATCH_ORDERS}, got {order!r}")
    thresholds = sorted(float(t) for t in thresholds)
    start = time.perf_counter()
    if callable(model) and not isinstance(model, (str, Task)):
        torch.manual_seed(seed)
        net = model()
    else:
        net = build_model(model, seed)
    net.to(device).train()
    data = data.to(device)
    optimizer = make_optimizer(net)
    if order == "dataloader":
        batches = _dataloader_batches(len(data.train_x), batch_size, seed)
    else:
        batches = _batches(len(data.train_x), batch_size, torch.Generator().manual_seed(seed))
    curve = Curve(name=name, reached={t: None for t in thresholds})

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc=name, unit="step", leave=True, mininterval=2.0)
        except ImportError:
            bar = None

    def record(step: int, loss: float) -> None:
        t0 = time.perf_counter()
        acc = evaluate(net, data.test_x, data.test_y, eval_batch_size)
        curve.eval_time += time.perf_counter() - t0
        curve.add(step, acc, loss)
        if bar is not None:
            bar.set_postfix(acc=f"{acc:.4f}", loss=f"{loss:.3f}", refresh=False)
        if on_eval is not None:
            on_eval(step, acc)
        if log is not None and (not log_every or step % log_every == 0 or step == steps):
            log(f"{name}: step {step:>6d}  test acc {acc:.4f}  train loss {loss:.4f}")

    def next_batch() -> Callable[[], torch.Tensor]:
        idx = next(batches).to(device, non_blocking=True)
        return lambda: F.cross_entropy(net(data.train_x[idx]), data.train_y[idx])

    def stop() -> bool:
        return stop_when_reached and bool(thresholds) and all(v is not None for v in curve.reached.values())

    record(0, float("nan"))
    run_steps(optimizer, steps, eval_every, curve, next_batch, record,
              after_step=(lambda: bar.update(1)) if bar is not None else None, stop=stop)
    if bar is not None:
        bar.close()
    curve.wall_time = time.perf_counter() - start
    return curve
