"""A plain PyTorch loop with NiNoAdam: the paper's FM-16 convnet on Fashion-MNIST.

NiNoAdam is a drop-in optimizer: the loop is an ordinary Adam loop. The one optional addition is
``opt.need_grads``: it is False when the next ``step()`` is a nowcast, which replaces the base step with a
prediction and ignores gradients, so the loop skips forward and backward there and just calls ``opt.step()``
(the call still counts as one optimizer step). Test loss and accuracy are printed just before and just after
each nowcast, so you can see what each jump did.

The data is the Debian package ``dataset-fashion-mnist`` (no download; ``NINO_FASHION_MNIST=<dir>`` points
elsewhere); the split and normalisation are the paper's (``nino_optim.bench.data``).

The default nowcaster is the project's bundled NiNo (``--nowcaster`` takes any spec). Measured (seed 0, 1300
steps, nowcast every 200, 1 thread): NiNoAdam test acc 0.833, Adam 0.815.

    sudo apt-get install dataset-fashion-mnist
    python examples/plain_loop.py              # 1300 steps, nowcast every 200: ~1.5 min (1 thread, busy 2-core Xeon)
    python examples/plain_loop.py --adam       # plain Adam, same init and batch order: ~45 s
    python examples/plain_loop.py --steps 3000 --period 1000 --threads 2
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nino_optim import NiNoAdam
from nino_optim.bench.data import load_fashion_mnist
from nino_optim.bench.tasks import TASKS, build_model


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


def batches(n: int, batch_size: int, seed: int):
    """Shuffled index batches forever: a fresh permutation each epoch from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=g).split(batch_size)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1300,
                    help="optimizer steps, nowcasts included (1300: the run ends on 100 Adam steps, not on a nowcast)")
    ap.add_argument("--period", type=int, default=200, help="steps between nowcasts")
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--nowcaster", default="default",
                    help="'default' (the bundled NiNo weights), 'linefit+', or a NiNo checkpoint file/directory")
    ap.add_argument("--lr", type=float, default=TASKS["fm16"].lr)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images (default all)")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    ap.add_argument("--log-every", type=int, default=100, help="print the mean training loss every N steps")
    ap.add_argument("--seed", type=int, default=0, help="model initialisation and batch order")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (FM-16 is small; more threads than free cores slow it down)")
    ap.add_argument("--adam", action="store_true", help="plain Adam instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_fashion_mnist().subset(args.train_size, args.test_size)
    model = build_model("fm16", seed=args.seed)
    if args.adam:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = NiNoAdam(model.parameters(), model=model, lr=args.lr, period=args.period, context=args.context,
                       nowcaster=args.nowcaster, max_steps=args.steps)
    name = "Adam" if args.adam else "NiNoAdam"
    print(f"{name}: FM-16 ({sum(p.numel() for p in model.parameters()):,} parameters) on Fashion-MNIST "
          f"({len(data.train_x):,} train / {len(data.test_x):,} test), {args.steps} steps of batch {args.batch}"
          + ("" if args.adam else f", nowcast every {args.period}"))

    order = batches(len(data.train_x), args.batch, args.seed)
    nowcasts, forward_steps = [], 0
    loss_sum, loss_n = 0.0, 0
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = next(order)  # drawn on every step, so Adam and NiNoAdam see the same batch order
        if getattr(opt, "need_grads", True):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            loss.backward()
            opt.step()
            loss_sum, loss_n, forward_steps = loss_sum + loss.item(), loss_n + 1, forward_steps + 1
        else:  # a nowcast: no forward/backward, the step writes the predicted parameters
            before = evaluate(model, data.test_x, data.test_y)
            opt.step()
            after = evaluate(model, data.test_x, data.test_y)
            nowcasts.append({"step": step, "loss_before": before[0], "acc_before": before[1],
                             "loss_after": after[0], "acc_after": after[1]})
            print(f"  nowcast at step {step:>5d}: test loss {before[0]:.4f} -> {after[0]:.4f}, "
                  f"test acc {before[1]:.4f} -> {after[1]:.4f}")
        if step % args.log_every == 0:
            print(f"step {step:>5d}  train loss {loss_sum / max(1, loss_n):.4f}  ({time.perf_counter() - start:.0f} s)")
            loss_sum, loss_n = 0.0, 0
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(model, data.test_x, data.test_y)
    print(f"{name}: test loss {test_loss:.4f}, test acc {test_acc:.4f} after {args.steps} steps "
          f"({len(nowcasts)} nowcasts), {seconds:.0f} s")
    return {"test_loss": test_loss, "test_acc": test_acc, "nowcasts": nowcasts, "forward_steps": forward_steps,
            "steps_done": getattr(opt, "steps_done", args.steps), "seconds": seconds}


if __name__ == "__main__":
    main()
