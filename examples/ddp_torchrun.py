"""DDP launched with torchrun, with NiNoAdam: an MLP on scikit-learn's handwritten digits.

Each process trains on its own batches; DDP averages the gradients. On a nowcast step rank 0 predicts and
broadcasts the new parameters, so every rank ends it with bitwise-identical parameters (checked at the end,
and printed); a prediction rank 0 rejects (NaN) is skipped by every rank together.

    pip install scikit-learn
    torchrun --nproc_per_node 2 examples/ddp_torchrun.py                # gloo on CPU, 1500 steps, ~20 s
    torchrun --nproc_per_node 2 examples/ddp_torchrun.py --adam         # plain Adam, to compare
    torchrun --nproc_per_node 4 examples/ddp_torchrun.py --backend nccl # one GPU per process

Pass ``model=`` the module DDP wraps, or the DDP module itself (it is unwrapped for the graph).
"""
from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--period", type=int, default=250)
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="per process")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--backend", default="gloo")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    ap.add_argument("--adam", action="store_true", help="plain Adam instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    dist.init_process_group(args.backend, timeout=timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if args.backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = digits()
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                          nn.Linear(args.hidden, 10)).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.adam:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = NiNoAdam(model.parameters(), model=ddp, lr=args.lr, period=args.period, context=args.context,
                       max_steps=args.steps)
    g = torch.Generator().manual_seed(1 + rank)
    start = time.time()
    for step in range(args.steps):
        idx = torch.randint(len(xtr), (args.batch,), generator=g)
        opt.zero_grad()
        if args.adam or opt.need_grads:  # the nowcast step ignores gradients: every rank skips backward alike
            F.cross_entropy(ddp(xtr[idx].to(device)), ytr[idx].to(device)).backward()
        opt.step()

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    identical = all(torch.equal(gathered[0], other) for other in gathered[1:])
    with torch.no_grad():
        logits = model(xte.to(device))
        loss = F.cross_entropy(logits, yte.to(device)).item()
        acc = (logits.argmax(1).cpu() == yte).float().mean().item()
    if rank == 0:
        print(f"{'Adam' if args.adam else 'NiNoAdam'}: val loss {loss:.4f}, val acc {acc:.4f} after {args.steps} "
              f"steps on {world} processes, {time.time() - start:.0f} s; ranks identical: {identical}")
    # Every rank reaches the barrier before any tears its connections down, and DDP's reducer (which holds
    # communication state) goes first: a rank that exits while its peer still talks aborts gloo's threads.
    dist.barrier()
    del ddp
    dist.destroy_process_group()
    if not identical:
        raise SystemExit(f"rank {rank}: parameters differ between ranks")


if __name__ == "__main__":
    main()
