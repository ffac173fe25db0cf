"""Training helper for tests/test_resume.py, importable and runnable as a script in a fresh Python process.

    python tests/_resume_worker.py NOWCASTER START STOP RESULT_OUT [MODEL_CKPT OPT_CKPT]

trains steps START..STOP-1 (after loading the two state dicts, when given) and writes the final parameters,
the k of every nowcast and the warnings raised to RESULT_OUT with torch.save.
"""
from __future__ import annotations

import functools
import sys
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from nino_optim import NiNoAdam, load_nowcaster

PERIOD, CONTEXT, MAX_STEPS, BATCH = 1000, 5, 2500, 32


class Counting:
    """Wraps a nowcaster and records the k of each prediction."""

    def __init__(self, inner):
        self.inner = inner
        self.max_horizon = getattr(inner, "max_horizon", 40)
        self.ks: list[int] = []

    def predict(self, graph, states, k):
        self.ks.append(int(k))
        return self.inner.predict(graph, states, k)


@functools.lru_cache(maxsize=None)
def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (torch.tensor(digits.data / 16.0, dtype=torch.float32),
            torch.tensor(digits.target, dtype=torch.long))


def build(nowcaster: str, period: int = PERIOD):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    counter = Counting(load_nowcaster(nowcaster))
    opt = NiNoAdam(model.parameters(), model, lr=1e-3, period=period, context=CONTEXT, max_steps=MAX_STEPS,
                   nowcaster=counter)
    return model, opt, counter


def train(model, opt, data, start: int, stop: int) -> None:
    """Steps start..stop-1; the batch of a step depends only on its index."""
    x, y = data
    for step in range(start, stop):
        idx = torch.randint(0, len(x), (BATCH,), generator=torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def run(nowcaster: str, start: int, stop: int, model_ckpt=None, opt_ckpt=None, save_to=None) -> dict:
    """Build fresh objects, optionally load checkpoints, train, optionally save checkpoints; return results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, opt, counter = build(nowcaster)
            if model_ckpt is not None:
                model.load_state_dict(torch.load(model_ckpt, weights_only=True))
                opt.load_state_dict(torch.load(opt_ckpt, weights_only=True))
            assert opt.steps_done == start, (opt.steps_done, start)
            train(model, opt, load_data(), start, stop)
            if save_to is not None:
                torch.save(model.state_dict(), save_to[0])
                torch.save(opt.state_dict(), save_to[1])
    finally:
        torch.set_num_threads(threads)
    return {"params": {k: v.detach().clone() for k, v in model.state_dict().items()}, "ks": counter.ks,
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught], "steps_done": opt.steps_done}


if __name__ == "__main__":
    spec, first, last, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ckpts = sys.argv[5:7] if len(sys.argv) > 5 else (None, None)
    torch.save(run(spec, first, last, *ckpts), out)
