"""Run the zoo and record parameter trajectories (``nino-optim collect``)."""
from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from torch import nn

from ..bench.data import FashionMNIST, load_fashion_mnist
from .trajectories import is_complete, write_trajectory
from .zoo import RunSpec, build_model

EVAL_EXAMPLES = 2000  # test images used for the metrics stored beside each state


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum().item() for i in range(0, len(x), 1000))
    model.train()
    return correct / len(x)


def run_one(spec: RunSpec, data: FashionMNIST, root: str | os.PathLike, progress: bool = False) -> Path:
    """Train one run and write its trajectory: states at step 0 and every ``save_every`` steps after."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch)
    opt_cls = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    generator = torch.Generator().manual_seed(spec.seed)
    loss_fn = nn.CrossEntropyLoss()
    test_x, test_y = data.test_x[:EVAL_EXAMPLES], data.test_y[:EVAL_EXAMPLES]
    states, saved_steps, metrics = [_flat(model)], [0], [{"test_acc": _accuracy(model, test_x, test_y)}]
    order = torch.randperm(len(data.train_x), generator=generator)
    cursor, running, start = 0, 0.0, time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=spec.steps, desc=spec.run_id[:48], leave=False)
    for step in range(1, spec.steps + 1):
        if cursor + spec.batch_size > len(order):
            order, cursor = torch.randperm(len(data.train_x), generator=generator), 0
        idx = order[cursor:cursor + spec.batch_size]
        cursor += spec.batch_size
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(data.train_x[idx]), data.train_y[idx])
        loss.backward()
        opt.step()
        running += loss.item()
        if step % spec.save_every == 0:
            states.append(_flat(model))
            saved_steps.append(step)
            metrics.append({"train_loss": running / spec.save_every, "test_acc": _accuracy(model, test_x, test_y)})
            running = 0.0
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    meta = {"run_id": spec.run_id, "spec": spec.to_dict(), "steps": saved_steps, "metrics": metrics,
            "params": [[name, list(p.shape)] for name, p in model.named_parameters()],
            "seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__}
    return write_trajectory(root, meta, torch.stack(states))


def _worker(spec: RunSpec, root: str) -> str:
    torch.set_num_threads(1)  # one process per core
    run_one(spec, load_fashion_mnist(), root)
    return spec.run_id


def collect(specs: list[RunSpec], root: str | os.PathLike, workers: int = 1) -> list[str]:
    """Run every spec whose trajectory is not yet in ``root``; returns the run ids written now."""
    todo = [s for s in specs if not is_complete(root, s.run_id)]
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="runs") if tqdm else None
    done = []
    if workers <= 1:
        torch.set_num_threads(1)  # small models: one thread per process is fastest, more only contend
        data = load_fashion_mnist()
        for spec in todo:
            done.append(run_one(spec, data, root, progress=bar is not None).name)
            if bar:
                bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for future in as_completed([pool.submit(_worker, s, str(root)) for s in todo]):
                done.append(future.result())
                if bar:
                    bar.update()
    if bar:
        bar.close()
    return done
