"""Run the zoo and record parameter trajectories (``nino-optim collect``)."""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..bench.data import load_fashion_mnist
from ..bench.lm import perplexity, windows
from ..bench.lr_schedule import attach_schedule
from ..bench.text import load_pydoc_topics
from .trajectories import is_complete, write_trajectory
from .zoo import RunSpec, build_model, gpt_task

EVAL_EXAMPLES = 2000  # test images used for the metrics stored beside each state
EVAL_WINDOWS = 128  # validation windows for the language models' perplexity
# test-set evaluations per run at most: with states stored every 40 steps, evaluating at each one made the
# collection 20-30% slower on a GPU; the training loss is still recorded with every state
METRIC_POINTS = 50
LOADERS = {"fashion-mnist": load_fashion_mnist, "pydoc-topics": load_pydoc_topics}


class EpochOrder:
    """Batches of indices into ``n`` examples, without replacement: a fresh permutation from ``generator`` each
    epoch (the last incomplete batch of an epoch is dropped)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.order, self.cursor = torch.randperm(n, generator=generator), 0

    def next(self, batch_size: int) -> torch.Tensor:
        """The next batch's indices [batch_size], on the CPU."""
        if self.cursor + batch_size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        self.cursor += batch_size
        return self.order[self.cursor - batch_size:self.cursor]


def evaluate_every(spec: RunSpec) -> int:
    """Steps between test-set evaluations: a multiple of the saving period, at most ``METRIC_POINTS`` a run."""
    return spec.save_every * max(1, spec.steps // METRIC_POINTS // spec.save_every)


def trajectory_meta(spec: RunSpec, steps: list[int], metrics: list[dict], params: list, seconds: float,
                    device: torch.device) -> dict:
    """The JSON metadata stored beside a run's states (``params``: [name, shape] in named_parameters() order)."""
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "steps": steps, "metrics": metrics, "params": params,
            "seconds": round(seconds, 1), "torch": torch.__version__, "device": str(device)}


def _flat(model: nn.Module) -> torch.Tensor:
    """All parameters, flat, in ``named_parameters()`` order, on the CPU: [P]."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(x), 1000))
    model.train()
    return correct / len(x)


def _objective(spec: RunSpec, model: nn.Module, data, generator: torch.Generator, device: torch.device
               ) -> tuple[Callable[[], torch.Tensor], Callable[[], dict]]:
    """(next batch's loss, metrics of the current model) for the spec's data set.

    Batches are drawn on the CPU from ``generator`` (the same run on every device): Fashion-MNIST without
    replacement, a fresh permutation each epoch; text as random windows.
    """
    if spec.dataset == "pydoc-topics":
        task = gpt_task(spec.arch)
        train, val = data.train.to(device), data.val.to(device)
        starts = torch.linspace(0, len(val) - task.context - 2, EVAL_WINDOWS).long()
        val_x, val_y = windows(val, starts, task.context)
        high = len(train) - task.context - 1

        def loss() -> torch.Tensor:
            x, y = windows(train, torch.randint(0, high, (spec.batch_size,), generator=generator), task.context)
            return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

        return loss, lambda: {"val_perplexity": perplexity(model, val_x, val_y)}
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x[:EVAL_EXAMPLES].to(device), data.test_y[:EVAL_EXAMPLES].to(device)
    order = EpochOrder(len(train_x), generator)

    def loss() -> torch.Tensor:
        idx = order.next(spec.batch_size).to(device)
        return F.cross_entropy(model(train_x[idx]), train_y[idx])

    return loss, lambda: {"test_acc": _accuracy(model, test_x, test_y)}


def run_one(spec: RunSpec, data, root: str | os.PathLike, progress: bool = False,
            device: torch.device | str = "cpu") -> Path:
    """Train one run and write its trajectory: states at step 0 and every ``save_every`` steps after, each with the
    training loss since the last one, and the test metrics at most ``METRIC_POINTS`` times (always at the end).

    ``data``: the spec's data set (``LOADERS[spec.dataset]()``). The model is initialised on the CPU from the
    spec's seed, then moved to ``device``.
    """
    device = torch.device(device)
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch).to(device)
    opt_cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    attach_schedule(opt, spec.schedule, spec.steps, spec.warmup)
    loss_of_next_batch, metrics_now = _objective(spec, model, data, torch.Generator().manual_seed(spec.seed), device)
    states, saved_steps, metrics = [_flat(model)], [0], [metrics_now()]
    every = evaluate_every(spec)
    running, start = torch.zeros((), device=device), time.perf_counter()  # summed where computed: no sync a step
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.steps, desc=spec.run_id[:48], leave=False)
    for step in range(1, spec.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = loss_of_next_batch()
        loss.backward()
        opt.step()
        running += loss.detach()
        if step % spec.save_every == 0:
            states.append(_flat(model))
            saved_steps.append(step)
            metrics.append({"train_loss": running.item() / spec.save_every})
            if step % every == 0 or step == spec.steps:
                metrics[-1].update(metrics_now())
            running.zero_()
            if not math.isfinite(metrics[-1]["train_loss"]):
                raise FloatingPointError(f"{spec.run_id}: training loss became {metrics[-1]['train_loss']} by step "
                                         f"{step}; not recorded")
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    meta = trajectory_meta(spec, saved_steps, metrics, [[name, list(p.shape)] for name, p in model.named_parameters()],
                           time.perf_counter() - start, device)
    return write_trajectory(root, meta, torch.stack(states))


def run_job(group: list[RunSpec], data, root: str | os.PathLike, device: torch.device | str = "cpu",
            progress: bool = False, log: Callable[[str], None] = print) -> list[str]:
    """One job of ``collect``: a single run, or a group that trains stacked (``stacked.py``); the run ids written.

    A run whose training loss stops being finite is reported through ``log`` and not written.
    """
    if len(group) > 1:
        from .stacked import run_stack  # stacked.py builds on this module

        return [path.name for path in run_stack(group, data, root, device, progress, log)]
    try:
        return [run_one(group[0], data, root, progress, device).name]
    except FloatingPointError as err:
        log(f"skipped: {err}")
        return []


def _worker(group: list[RunSpec], root: str, device: str) -> list[str]:
    torch.set_num_threads(1)  # one process per core
    return run_job(group, LOADERS[group[0].dataset](), root, device)


def collect(specs: list[RunSpec], root: str | os.PathLike, workers: int = 1, device: str = "cpu",
            stack: int = 1, log: Callable[[str], None] = print) -> list[str]:
    """Run every spec whose trajectory is not yet in ``root``; returns the run ids written now.

    ``workers`` > 1 runs that many fresh processes (one torch thread each; several may share one GPU).
    ``stack`` > 1 trains Fashion-MNIST runs of one architecture that many at a time as one stacked model
    (``stacked.py``: far fewer kernel launches on a GPU). A run that fails is reported and left out; the others
    go on.
    """
    from .stacked import stack_groups

    todo = [s for s in specs if not is_complete(root, s.run_id)]
    jobs = stack_groups(todo, stack)
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="runs") if tqdm else None
    done = []
    if workers <= 1:
        torch.set_num_threads(1)  # small models: one thread per process is fastest, more only contend
        loaded: dict[str, object] = {}
        for group in jobs:
            dataset = group[0].dataset
            if dataset not in loaded:
                loaded[dataset] = LOADERS[dataset]()
            done += run_job(group, loaded[dataset], root, device, progress=bar is not None, log=log)
            if bar:
                bar.update(len(group))
    else:
        # spawn: fresh interpreters, which CUDA needs (a forked child cannot use its parent's CUDA context)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_worker, group, str(root), device): group for group in jobs}
            for future in as_completed(futures):
                group = futures[future]
                try:
                    done += future.result()
                except Exception as err:  # one broken job must not stop the collection
                    log(f"failed: {', '.join(s.run_id for s in group)}: {type(err).__name__}: {err}")
                if bar:
                    bar.update(len(group))
    if bar:
        bar.close()
    return done
