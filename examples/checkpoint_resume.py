"""Checkpoint and resume with NiNoAdam: an interrupted run continues exactly, bit for bit.

FM-16 on Fashion-MNIST with NiNoAdam and a warmup+cosine LR schedule. Every ``--save-every`` steps (and at
the end, or at ``--stop-at`` to simulate an interruption) the model, optimizer and scheduler state dicts go
into one file with ``torch.save``. ``NiNoAdam.state_dict()`` holds, besides Adam's moments, NiNo's step
counter and the parameter states captured so far for the next nowcast (the ``"nino"`` entry), so a run
resumed with ``--resume`` in a fresh process captures and nowcasts at the same steps as an uninterrupted one.

For a bitwise-identical continuation everything else must be replayable too: the batch of step ``s`` is
derived from ``(seed, s)`` alone (a permutation per epoch from a generator seeded with ``seed`` and the epoch,
see ``batch_indices``), nothing else draws random numbers, and the same number of CPU threads is used (the
default, one). The final line prints a SHA-256 of the parameters to compare runs by eye.

    sudo apt-get install dataset-fashion-mnist
    python examples/checkpoint_resume.py --stop-at 500            # "interrupted" after step 500 (~30 s)
    python examples/checkpoint_resume.py --resume                 # continues to step 1300 in a new process (~35 s)
    python examples/checkpoint_resume.py --ckpt runs/straight.pt  # uninterrupted run (~1-1.5 min): the same SHA-256

With ``--resume`` the training settings (steps, period, lr, batch, seed, ...) are taken from the checkpoint;
the command line only chooses ``--ckpt``, ``--stop-at``, ``--save-every``, ``--log-every``, ``--test-size``
and ``--threads``.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nino_optim import NiNoAdam
from nino_optim.bench.data import load_fashion_mnist
from nino_optim.bench.tasks import TASKS, build_model

# What defines a run: saved in the checkpoint and restored from it on --resume.
RUN_SETTINGS = ("steps", "period", "context", "lr", "warmup", "batch", "train_size", "seed")


@torch.no_grad()
def evaluate(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``x``, ``y``."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    model.train()
    return loss / len(x), correct / len(x)


_perm_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def batch_indices(step: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """The training examples of optimizer step ``step`` (1-based): a function of its arguments only.

    Epoch ``e`` is a permutation of the ``n`` examples from a generator seeded with ``(seed, e)``, cut into
    ``n // batch`` full batches (the remainder is dropped), so any step's batch can be found without replaying
    the steps before it.
    """
    per_epoch = n // batch
    if per_epoch == 0:
        raise ValueError(f"batch {batch} is larger than the {n} training examples")
    epoch, j = divmod(step - 1, per_epoch)
    key = (n, seed, epoch)
    if key not in _perm_cache:
        _perm_cache.clear()
        _perm_cache[key] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return _perm_cache[key][j * batch:(j + 1) * batch]


def warmup_cosine(opt, steps: int, warmup: int):
    """Linear warmup for ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def params_sha256(model) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, model, opt, sched, settings: dict, nowcasts: list[int]) -> None:
    """Model, optimizer (with NiNo's timeline) and scheduler in one file, written atomically."""
    state = {"step": opt.steps_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "settings": settings, "nowcasts": list(nowcasts)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interruption while saving never leaves a half-written checkpoint


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1300, help="optimizer steps of the whole run")
    ap.add_argument("--period", type=int, default=200, help="steps between nowcasts")
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--lr", type=float, default=TASKS["fm16"].lr, help="peak learning rate")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images (default all)")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    ap.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    ap.add_argument("--ckpt", type=Path, default=Path("runs/checkpoint_resume/ckpt.pt"))
    ap.add_argument("--save-every", type=int, default=100, help="save a checkpoint every N steps (0: only at the end)")
    ap.add_argument("--stop-at", type=int, default=None, help="save and stop after this step (an 'interruption')")
    ap.add_argument("--resume", action="store_true", help="continue from --ckpt with the checkpoint's settings")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; keep it the same across a resume for bitwise-identical results")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    ckpt = None
    if args.resume:
        ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)
        for key, value in ckpt["settings"].items():
            setattr(args, key, value)
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}

    data = load_fashion_mnist().subset(args.train_size, args.test_size)
    model = build_model("fm16", seed=args.seed)
    opt = NiNoAdam(model.parameters(), model=model, lr=args.lr, period=args.period, context=args.context,
                   max_steps=args.steps)
    sched = warmup_cosine(opt, args.steps, args.warmup)
    nowcasts: list[int] = []
    if ckpt is not None:  # build everything as for a fresh run, then overwrite its state
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])  # Adam's moments and lr, NiNo's step and captured states
        sched.load_state_dict(ckpt["scheduler"])
        nowcasts = list(ckpt["nowcasts"])
        print(f"resumed from {args.ckpt} at step {opt.steps_done} (settings from the checkpoint: {settings})")
    else:
        print(f"NiNoAdam: FM-16 on Fashion-MNIST, {args.steps} steps, nowcast every {args.period}, "
              f"warmup+cosine lr (peak {args.lr:g})")

    stop = min(args.steps, args.stop_at or args.steps)
    loss_sum, loss_n = 0.0, 0
    start = time.perf_counter()
    while opt.steps_done < stop:
        step = opt.steps_done + 1
        idx = batch_indices(step, len(data.train_x), args.batch, args.seed)
        if opt.need_grads:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            loss.backward()
            opt.step()
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        else:  # nowcast: gradients are not used
            opt.step()
            nowcasts.append(step)
            print(f"  nowcast at step {step}")
        sched.step()
        if step % args.log_every == 0:
            test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
            print(f"step {step:>5d}  lr {sched.get_last_lr()[0]:.2e}  train loss {loss_sum / max(1, loss_n):.4f}  "
                  f"test acc {test_acc:.4f}  ({time.perf_counter() - start:.0f} s)")
            loss_sum, loss_n = 0.0, 0
        if step == stop or (args.save_every and step % args.save_every == 0):
            save_checkpoint(args.ckpt, model, opt, sched, settings, nowcasts)
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    sha = params_sha256(model)
    state = "finished" if opt.steps_done == args.steps else "stopped"
    print(f"{state} at step {opt.steps_done}/{args.steps}: test loss {test_loss:.4f}, test acc {test_acc:.4f}, "
          f"nowcasts at {nowcasts}, {seconds:.0f} s; checkpoint {args.ckpt}")
    print(f"parameters sha256 {sha}")
    return {"steps_done": opt.steps_done, "test_loss": test_loss, "test_acc": test_acc, "nowcasts": nowcasts,
            "sha256": sha, "ckpt": args.ckpt, "seconds": seconds}


if __name__ == "__main__":
    main()
