"""Accelerate with gradient accumulation and NiNoAdam: an MLP on scikit-learn's handwritten digits.

``accelerator.prepare(model, optimizer)`` wraps NiNoAdam in an ``AcceleratedOptimizer`` whose ``step()`` only
reaches NiNoAdam on the micro-batch that syncs gradients, so NiNoAdam counts optimizer steps, not
micro-batches: with ``--accum 4`` the nowcast comes every ``period`` optimizer steps = ``4 * period``
micro-batches. The same script runs on one process or under ``accelerate launch`` / ``torchrun`` (DDP):
NiNoAdam predicts on rank 0 and broadcasts, so every rank ends a nowcast with identical parameters.

    pip install accelerate scikit-learn
    python examples/accelerate_accum.py                         # 2000 steps x 4 micro-batches, ~30 s on a CPU
    python examples/accelerate_accum.py --adam                  # plain Adam, to compare
    accelerate launch --cpu --num_processes 2 examples/accelerate_accum.py
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from nino_optim import NiNoAdam


def digits(seed: int = 0):
    """scikit-learn's digits (1,797 real 8x8 images), scaled to [0, 1], split 1,500 / 297."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def main(argv=None) -> dict:
    from accelerate import Accelerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    ap.add_argument("--accum", type=int, default=4, help="gradient accumulation steps")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--period", type=int, default=250)
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (a model this small runs fastest on one; more thrash on a busy CPU)")
    ap.add_argument("--adam", action="store_true", help="plain Adam instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    accelerator = Accelerator(gradient_accumulation_steps=args.accum, cpu=not torch.cuda.is_available())
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits()
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, 10))
    if args.adam:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:  # model= the plain module, before prepare() wraps it
        opt = NiNoAdam(model.parameters(), model, lr=args.lr, period=args.period, context=args.context,
                       max_steps=args.steps)
    model, popt = accelerator.prepare(model, opt)

    g = torch.Generator().manual_seed(1 + accelerator.process_index)  # each process its own batches
    start, micro = time.time(), 0
    while (opt.steps_done if not args.adam else micro // args.accum) < args.steps:
        idx = torch.randint(len(xtr), (args.micro_batch,), generator=g)
        x, y = xtr[idx].to(accelerator.device), ytr[idx].to(accelerator.device)
        with accelerator.accumulate(model):
            loss = F.cross_entropy(model(x), y)
            accelerator.backward(loss)
            popt.step()
            popt.zero_grad()
        micro += 1
    model.eval()
    with torch.no_grad():
        logits = model(xte.to(accelerator.device))
        result = {"val_loss": F.cross_entropy(logits, yte.to(accelerator.device)).item(),
                  "val_acc": (logits.argmax(1).cpu() == yte).float().mean().item(), "micro_batches": micro,
                  "optimizer_steps": args.steps if args.adam else opt.steps_done}
    accelerator.print(f"{'Adam' if args.adam else 'NiNoAdam'}: val loss {result['val_loss']:.4f}, val acc "
                      f"{result['val_acc']:.4f} after {result['optimizer_steps']} optimizer steps "
                      f"({micro} micro-batches), {time.time() - start:.0f} s")
    return result


if __name__ == "__main__":
    main()
