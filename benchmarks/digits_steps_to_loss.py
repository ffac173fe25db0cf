"""Steps to a training-loss threshold on scikit-learn's bundled digits: Adam vs NiNoAdam nowcasters.

A small end-to-end check on real data that runs in about a minute on 2 CPU cores: an MLP (64-64-32-10) trained
with Adam, and with NiNoAdam using each nowcaster, from the same initialisation and batch order. Prints, per
method, the first step at which the full-training-set loss falls below each threshold, and the reduction vs
Adam.

    python benchmarks/digits_steps_to_loss.py [--steps 6000] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from sklearn.datasets import load_digits

from nino_optim import NiNoAdam

# The official checkpoints join the comparison when NINO_REFERENCE_DIR holds them (upstream-checkpoints/).
_REFERENCE = os.environ.get("NINO_REFERENCE_DIR")
CHECKPOINTS = Path(_REFERENCE) / "upstream-checkpoints" if _REFERENCE else None
THRESHOLDS = (0.1, 0.03, 0.01, 0.003)


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def run(method: str, seed: int, steps: int, x: torch.Tensor, y: torch.Tensor, eval_every: int = 10):
    """Train one model; return ({threshold: first step or None}, final loss, seconds, losses finite)."""
    torch.manual_seed(seed)
    model = make_model()
    lr = 1e-3
    if method == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = NiNoAdam(model.parameters(), model=model, lr=lr, nowcaster=method, max_steps=steps)
    batches = torch.Generator().manual_seed(seed)
    reached: dict[float, int | None] = {t: None for t in THRESHOLDS}
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    loss = float("nan")
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (64,), generator=batches)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
        if step % eval_every == 0:
            with torch.no_grad():
                loss = loss_fn(model(x), y).item()
            for t in THRESHOLDS:
                if reached[t] is None and loss <= t:
                    reached[t] = step
    return reached, loss, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    methods = ["adam", "linefit", "linefit+"]
    methods += [str(CHECKPOINTS / name) for name in ("nino_mlp.pt", "nino_no_posw.pt")
                if CHECKPOINTS and (CHECKPOINTS / name).exists()]

    print(f"digits MLP, {args.steps} steps, batch 64, lr 1e-3, seeds {args.seeds}; "
          f"steps until the training-set loss <= threshold (median over seeds; '-' = not reached)")
    header = f"{'method':<18}" + "".join(f"{'<= ' + str(t):>12}" for t in THRESHOLDS) + f"{'final loss':>12}{'s/run':>8}"
    print(header)
    adam_median: dict[float, float] = {}
    for method in methods:
        results = [run(method, seed, args.steps, x, y) for seed in args.seeds]
        cells = []
        for t in THRESHOLDS:
            hits = [r[0][t] for r in results]
            if any(h is None for h in hits):
                cells.append(f"{'-':>12}")
                continue
            median = statistics.median(hits)
            if method == "adam":
                adam_median[t] = median
                cells.append(f"{median:>12.0f}")
            else:
                cut = f"({100 * (1 - median / adam_median[t]):+.0f}%)" if t in adam_median else ""
                cells.append(f"{median:>6.0f}{cut:>6}")
        final = statistics.median(r[1] for r in results)
        secs = statistics.mean(r[2] for r in results)
        name = Path(method).name if "/" in method else method
        print(f"{name:<18}" + "".join(cells) + f"{final:>12.4f}{secs:>8.1f}")


if __name__ == "__main__":
    main()
