"""``nino-optim`` command line: ``collect`` trajectories and ``metatrain`` a NiNo on them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _collect(args: argparse.Namespace) -> None:
    from .metatrain.collect import collect
    from .metatrain.zoo import make_zoo

    specs = make_zoo(args.runs, steps=args.steps, save_every=args.save_every, zoo_seed=args.zoo_seed)
    done = collect(specs, args.out, workers=args.workers)
    print(f"{len(done)} new trajectories in {args.out} ({len(specs) - len(done)} were already there)")


def _metatrain(args: argparse.Namespace) -> None:
    from .metatrain.train import TrainConfig, metatrain
    from .metatrain.trajectories import list_trajectories
    from .metatrain.windows import WindowSampler

    paths = list_trajectories(args.data)
    if len(paths) < 2:
        sys.exit(f"need at least 2 trajectories in {args.data} (one is held out); run `nino-optim collect` first")
    # Every val_every-th trajectory (by name) is held out for validation.
    val = [p for i, p in enumerate(paths) if i % args.val_every == args.val_every - 1] or paths[-1:]
    train = [p for p in paths if p not in val]
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      hid=args.hid, eval_every=args.eval_every)
    print(f"meta-training on {len(train)} trajectories, validating on {len(val)}")
    metatrain(WindowSampler(train, spacing=args.spacing), WindowSampler(val, spacing=args.spacing), args.out, cfg)
    print(f"weights written to {Path(args.out) / 'weights'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nino-optim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect", help="record parameter trajectories of the zoo of small training runs")
    p.add_argument("--out", default="data/trajectories")
    p.add_argument("--runs", type=int, default=32)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--zoo-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="parallel processes (1 thread each)")
    p.set_defaults(func=_collect)
    p = sub.add_parser("metatrain", help="train a NiNo GNN on collected trajectories (resumes from --out)")
    p.add_argument("--data", default="data/trajectories")
    p.add_argument("--out", default="runs/metatrain")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hid", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--spacing", type=int, default=200, help="optimizer steps between the states of a window")
    p.add_argument("--val-every", type=int, default=5, help="hold out every n-th trajectory")
    p.set_defaults(func=_metatrain)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
