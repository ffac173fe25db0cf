"""Mixed precision and an LR schedule with NiNoAdam: FM-16 on Fashion-MNIST, ``torch.autocast`` + warmup/cosine.

NiNoAdam's ``param_groups`` *are* its base Adam's, so any ``torch.optim.lr_scheduler`` drives the base
learning rate as usual (a nowcast does not use the lr; it counts as one optimizer step, so the scheduler is
stepped after it like after any other step and the schedule stays aligned with ``opt.steps_done``).

Precision. On a CPU the autocast dtype is **bfloat16**: it has float32's exponent range, so gradients do not
underflow and no loss scaling is needed; the ``GradScaler`` is then built with ``enabled=False`` and is a
pass-through. (CPUs with AVX512-BF16/AMX run it faster than float32; on others it may be slower. CPU float16
autocast exists but has no fast kernels: a FM-16 step took 17 s, against 0.03 s in bfloat16, on our Xeon, so
the example refuses it on a CPU.) On CUDA the default is **float16** with an enabled ``GradScaler``, the classic
recipe. Two rules for NiNoAdam with a scaler, both in the loop below:

* on a nowcast step (``opt.need_grads`` is False) there is no backward, so there is nothing to unscale or
  check for inf: call ``opt.step()`` directly, not ``scaler.step(opt)``, and skip ``scaler.update()``;
* ``scaler.step(opt)`` skips ``opt.step()`` when a gradient overflowed; NiNoAdam does not count a skipped
  step (``opt.steps_done`` is unchanged), so step the scheduler only when ``opt.steps_done`` advanced.

``--grad-scaler on`` forces the scaler on (with bfloat16 too), to exercise that path on a CPU.
Measured (seed 0, defaults, one thread of a 2-core Xeon with AMX): NiNoAdam (default nowcaster, the bundled
NiNo) test acc 0.845, Adam with the same schedule 0.798.

    sudo apt-get install dataset-fashion-mnist
    python examples/amp_lr_schedule.py                       # 1300 steps, bf16, warmup+cosine: ~45 s
    python examples/amp_lr_schedule.py --schedule onecycle   # OneCycleLR instead
    python examples/amp_lr_schedule.py --adam                # plain Adam, same schedule, to compare
    python examples/amp_lr_schedule.py --device cuda         # float16 + GradScaler on a GPU
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from nino_optim import NiNoAdam
from nino_optim.bench.data import load_fashion_mnist
from nino_optim.bench.tasks import TASKS, build_model


@torch.no_grad()
def evaluate(model, x, y, amp_dtype, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, under the same autocast as training."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits = model(x[i:i + batch_size])
        loss += F.cross_entropy(logits.float(), y[i:i + batch_size], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    model.train()
    return loss / len(x), correct / len(x)


def batches(n: int, batch_size: int, seed: int):
    """Shuffled index batches forever: a fresh permutation each epoch from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=g).split(batch_size)


def make_scheduler(opt, kind: str, steps: int, warmup: int, max_lr: float):
    """Linear warmup then cosine decay to 0 (a ``LambdaLR``), or ``OneCycleLR``; both over ``steps`` steps."""
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps,
                                                   pct_start=max(warmup, 1) / steps)

    def factor(s: int) -> float:  # s = optimizer steps done so far
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1300,
                    help="optimizer steps, nowcasts included (1300: the run ends on 100 Adam steps, not on a nowcast)")
    ap.add_argument("--period", type=int, default=200, help="steps between nowcasts")
    ap.add_argument("--context", type=int, default=5)
    ap.add_argument("--nowcaster", default="default",
                    help="'default' (the bundled NiNo weights), 'linefit+', or a NiNo checkpoint file/directory")
    ap.add_argument("--lr", type=float, default=TASKS["fm16"].lr, help="peak learning rate")
    ap.add_argument("--schedule", choices=["cosine", "onecycle"], default="cosine")
    ap.add_argument("--warmup", type=int, default=100, help="warmup steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto",
                    help="autocast dtype: auto = bfloat16 on CPU, float16 on CUDA; float32 = no autocast")
    ap.add_argument("--grad-scaler", choices=["auto", "on", "off"], default="auto",
                    help="auto = on for float16 only (bfloat16 needs no loss scaling)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images (default all)")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images (default all)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (FM-16 is small; more threads than free cores slow it down)")
    ap.add_argument("--adam", action="store_true", help="plain Adam instead of NiNoAdam")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("float16" if device.type == "cuda" else "bfloat16")
    if device.type == "cpu" and dtype == "float16":
        ap.error("float16 autocast on a CPU has no fast kernels (minutes per step); use bfloat16 on a CPU")
    amp_dtype = None if dtype == "float32" else getattr(torch, dtype)
    use_scaler = args.grad_scaler == "on" or (args.grad_scaler == "auto" and amp_dtype == torch.float16)

    data = load_fashion_mnist().subset(args.train_size, args.test_size)
    xtr, ytr = data.train_x.to(device), data.train_y.to(device)
    xte, yte = data.test_x.to(device), data.test_y.to(device)
    model = build_model("fm16", seed=args.seed).to(device)  # parameters stay float32; autocast casts per op
    if args.adam:
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = NiNoAdam(model.parameters(), model=model, lr=args.lr, period=args.period, context=args.context,
                       nowcaster=args.nowcaster, max_steps=args.steps)
    sched = make_scheduler(opt, args.schedule, args.steps, args.warmup, args.lr)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    name = "Adam" if args.adam else "NiNoAdam"
    print(f"{name}: FM-16 on Fashion-MNIST, {args.steps} steps, {device.type} autocast {dtype}, GradScaler "
          f"{'on' if use_scaler else 'off'}, {args.schedule} schedule (peak lr {args.lr:g})"
          + ("" if args.adam else f", nowcast every {args.period}"))

    order = batches(len(xtr), args.batch, args.seed)
    lrs, nowcasts, overflow_skips, logits_dtype = [], [], 0, None
    loss_sum, loss_n, done = 0.0, 0, 0
    start = time.perf_counter()
    while done < args.steps:
        idx = next(order).to(device)
        lr = opt.param_groups[0]["lr"]  # the lr this step uses, set by the scheduler
        if getattr(opt, "need_grads", True):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                logits = model(xtr[idx])
                loss = F.cross_entropy(logits, ytr[idx])  # autocast runs cross_entropy in float32
            logits_dtype = logits.dtype
            scaler.scale(loss).backward()
            scaler.step(opt)  # unscales; skips opt.step() if a gradient is inf/NaN
            scaler.update()
            stepped = args.adam or opt.steps_done > done  # False: the scaler skipped it (NiNoAdam did not count it)
            if not stepped:
                overflow_skips += 1
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        else:  # nowcast: no gradients, so no scaler.step / scaler.update
            before = evaluate(model, xte, yte, amp_dtype)
            opt.step()
            after = evaluate(model, xte, yte, amp_dtype)
            stepped = True
            nowcasts.append({"step": done + 1, "lr": lr, "loss_before": before[0], "acc_before": before[1],
                             "loss_after": after[0], "acc_after": after[1]})
            print(f"  nowcast at step {done + 1:>5d} (lr {lr:.2e}): test loss {before[0]:.4f} -> {after[0]:.4f}, "
                  f"test acc {before[1]:.4f} -> {after[1]:.4f}")
        if stepped:
            sched.step()  # once per optimizer step that happened, nowcasts included
            lrs.append(lr)
            done += 1
            if done % args.log_every == 0:
                print(f"step {done:>5d}  lr {lr:.2e}  train loss {loss_sum / max(1, loss_n):.4f}  "
                      f"({time.perf_counter() - start:.0f} s)")
                loss_sum, loss_n = 0.0, 0
    seconds = time.perf_counter() - start
    test_loss, test_acc = evaluate(model, xte, yte, amp_dtype)
    print(f"{name}: test loss {test_loss:.4f}, test acc {test_acc:.4f} after {done} steps ({len(nowcasts)} "
          f"nowcasts, {overflow_skips} overflow skips), {seconds:.0f} s")
    return {"test_loss": test_loss, "test_acc": test_acc, "lrs": lrs, "final_group_lr": opt.param_groups[0]["lr"],
            "scheduler_last_lr": sched.get_last_lr()[0], "nowcasts": nowcasts, "overflow_skips": overflow_skips,
            "logits_dtype": logits_dtype, "grad_scaler": scaler.is_enabled(), "scale": scaler.get_scale(),
            "steps_done": getattr(opt, "steps_done", done), "seconds": seconds}


if __name__ == "__main__":
    main()
