"""``nino-optim`` command line: ``collect`` trajectories and ``metatrain`` a NiNo on them; ``bench`` steps to
target on Fashion-MNIST and ``report`` the results."""
from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path


def _collect(args: argparse.Namespace) -> None:
    from .metatrain.collect import collect
    from .metatrain.zoo import make_zoo

    specs = make_zoo(args.runs, steps=args.steps, save_every=args.save_every, zoo_seed=args.zoo_seed,
                     fm16_share=args.fm16_share, kinds=args.kinds.split(","), schedule=args.schedule,
                     warmup=args.warmup, lr_scale=args.lr_scale)
    done = collect(specs, args.out, workers=args.workers, device=args.device, stack=args.stack)
    print(f"{len(done)} new trajectories in {args.out} ({len(specs) - len(done)} were already there)")


def _metatrain(args: argparse.Namespace) -> None:
    started = time.perf_counter()  # --stop-after counts loading the trajectories too (tens of seconds on a GPU)
    from .metatrain.train import TrainConfig, metatrain
    from .metatrain.trajectories import list_trajectories
    from .metatrain.windows import WindowSampler

    if args.watch and args.max_train is not None:
        sys.exit("--watch trains on every trajectory that appears; it cannot be combined with --max-train")
    paths = list_trajectories(args.data)
    while args.watch and len(paths) < 2:  # a collection that has not finished two trajectories yet
        time.sleep(2)
        paths = list_trajectories(args.data)
    if len(paths) < 2:
        sys.exit(f"need at least 2 trajectories in {args.data} (one is held out); run `nino-optim collect` first")
    # Every val_every-th trajectory (by name) is held out for validation.
    val = [p for i, p in enumerate(paths) if i % args.val_every == args.val_every - 1] or paths[-1:]
    train = [p for p in paths if p not in val]
    if args.max_train is not None:  # a seeded subset; smaller subsets are contained in larger ones
        random.Random(args.seed).shuffle(train)
        train = sorted(train[:args.max_train])
    cfg = TrainConfig(iterations=args.iterations, batch_size=args.batch_size,
                      windows_per_trajectory=args.windows_per_trajectory, lr=args.lr, seed=args.seed,
                      hid=args.hid, eval_every=args.eval_every, init=args.init, seconds=args.seconds)
    print(f"meta-training on {len(train)} trajectories, validating on {len(val)}")
    more_data = None
    if args.watch:  # trajectories a running collection finishes later join the training set (not the held-out)
        known = set(paths)

        def more_data() -> list[Path]:
            new = [p for p in list_trajectories(args.data) if p not in known]
            known.update(new)
            if new:
                print(f"adding {len(new)} trajectories that appeared in {args.data}")
            return new

    metatrain(WindowSampler(train, spacing=args.spacing, stretch=args.stretch, device=args.device),
              WindowSampler(val, spacing=args.spacing, device=args.device), args.out, cfg,
              device=args.device, more_data=more_data,
              stop_after=None if args.stop_after is None else args.stop_after - (time.perf_counter() - started))
    print(f"weights written to {Path(args.out) / 'weights'}")


def _floats(text: str, percent: bool = True) -> list[float]:
    """Comma-separated thresholds: accuracies as fractions or percentages (89.5 -> 0.895) when ``percent``,
    else taken as they are (perplexities)."""
    values = [float(t) for t in text.split(",") if t.strip()]
    return [v / (100 if percent and v > 1 else 1) for v in values]


def _bench(args: argparse.Namespace) -> None:
    from .bench.runner import BenchConfig, parse_methods, run_benchmark

    try:
        methods = parse_methods(args.methods)
        cfgs = [BenchConfig(task=t, steps=args.steps, eval_every=args.eval_every, batch_size=args.batch_size,
                            lr=args.lr, period=args.period, context=args.context, order=args.order,
                            target=_floats(args.target, t != "lm")[0] if args.target else None,
                            ladder=_floats(args.ladder, t != "lm") if args.ladder is not None else None,
                            train_examples=args.train_examples, test_examples=args.test_examples,
                            schedule=args.schedule, warmup=args.warmup)
                for t in args.task]
    except ValueError as err:
        sys.exit(f"nino-optim bench: {err}")
    for m in methods:
        print(f"  {m.name}: {'the base optimizer (no nowcast)' if m.spec is None else m.spec}")
    try:
        res = run_benchmark(methods, args.seeds, cfgs, args.out, workers=args.workers,
                            progress=not args.no_progress, command=args.command_text, device=args.device)
    except ValueError as err:
        sys.exit(f"nino-optim bench: {err}")
    if res["failed"]:
        sys.exit(f"{len(res['failed'])} runs failed: " + ", ".join(res["failed"]))


def _report(args: argparse.Namespace) -> None:
    from .bench.report import write_report

    try:
        thresholds = {}
        for item in args.target or []:
            task, _, values = item.partition("=")
            levels = _floats(values.replace("/", ","), task != "lm")
            if not task or not levels:
                raise ValueError(f"--target {item!r}: expected TASK=TARGET or TASK=TARGET/LADDER1/LADDER2")
            thresholds[task] = (levels[0], levels[1:])
        md, png, text = write_report(args.runs, args.out, command=args.command_line or None,
                                     report_command=args.command_text, per_seed=not args.median_only,
                                     thresholds=thresholds or None)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"nino-optim report: {err}")
    print(text)
    print(f"written: {md}" + (f", {png}" if png else " (no PNG: matplotlib is not installed)"))


def _schedule_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """``--schedule`` and ``--warmup``, shared by ``collect`` and ``bench``."""
    parser.add_argument("--schedule", default="constant", choices=["constant", "cosine"], help=help)
    parser.add_argument("--warmup", type=float, default=0.05, help="cosine: warmup steps as a fraction of --steps")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nino-optim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("collect", help="record parameter trajectories of the zoo of small training runs")
    p.add_argument("--out", default="data/trajectories")
    p.add_argument("--runs", type=int, default=32)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--zoo-seed", type=int, default=0)
    p.add_argument("--fm16-share", type=float, default=0.0,
                   help="fraction of the convnets that train the FM-16 benchmark's own architecture (16, 32, 32), "
                        "as half of the official data does (default 0: the varied zoo)")
    _schedule_arguments(p, "every run's learning rate: constant, or linear warmup + cosine decay to zero (its "
                           "drawn rate the peak); scheduled runs never stack")
    p.add_argument("--lr-scale", type=float, default=1.0,
                   help="multiply every drawn learning rate (a schedule's tuned peak is 2-4x the tuned constant "
                        "rate)")
    p.add_argument("--kinds", default="convnet,mlp,gpt",
                   help="comma-separated architecture kinds to keep (--runs of them, the first of the zoo's "
                        "stream), e.g. convnet")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (1 thread each)")
    p.add_argument("--device", default="cpu", help="where the runs train: cpu, cuda, ...")
    p.add_argument("--stack", type=int, default=1,
                   help="train Fashion-MNIST runs of one architecture this many at a time as one stacked model "
                        "(torch.func.vmap; each keeps its own seed, batches and learning rate): far fewer kernel "
                        "launches on a GPU")
    p.set_defaults(func=_collect)
    p = sub.add_parser("metatrain", help="train a NiNo GNN on collected trajectories (resumes from --out)")
    p.add_argument("--data", default="data/trajectories")
    p.add_argument("--out", default="runs/metatrain")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4, help="windows per iteration")
    p.add_argument("--windows-per-trajectory", type=int, default=1,
                   help="windows drawn together from one trajectory (must divide --batch-size; the official "
                        "batches are 4 trajectories x 4 windows); they share their tensor operations")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hid", type=int, default=128)
    p.add_argument("--init", default=None,
                   help="fine-tune these NiNo weights ('default', a weights directory, an official .pt) instead of "
                        "starting from a seeded random initialisation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--spacing", type=int, default=200, help="optimizer steps between the states of a window")
    p.add_argument("--stretch", type=float, default=0.0,
                   help="training windows draw their spacing within --spacing * (1 +- stretch), standing in for "
                        "runs at other learning rates (validation windows keep --spacing)")
    p.add_argument("--val-every", type=int, default=5, help="hold out every n-th trajectory")
    p.add_argument("--max-train", type=int, default=None,
                   help="train on a seeded subset of this many trajectories (to see how quality grows with data)")
    p.add_argument("--device", default="cpu", help="where the GNN trains: cpu, cuda, ...")
    p.add_argument("--seconds", type=float, default=None,
                   help="the learning-rate schedule spans this many seconds of training instead of --iterations "
                        "(which then only caps it): a run that must fit a fixed time still ends annealed")
    p.add_argument("--watch", action="store_true",
                   help="at every checkpoint, also train on trajectories that have appeared in --data since (a "
                        "collection still running); the held-out ones stay those found at the start")
    p.add_argument("--stop-after", type=float, default=None,
                   help="seconds after the command starts (loading the data included): stop at the next "
                        "checkpoint after this long (weights written; rerun to resume)")
    p.set_defaults(func=_metatrain)
    p = sub.add_parser("bench", help="steps to target on Fashion-MNIST and KJV text: one JSON results file per "
                       "(task, method, seed), skipped when present (resumes)")
    p.add_argument("--task", nargs="+", default=["fm16"], help="fm16, fm32, vit and/or lm")
    p.add_argument("--methods", default="adam,linefit+",
                   help="comma-separated: adam (no nowcast), linefit, linefit+, default, nino (official "
                        "nino_no_posw.pt), wnn+ (official nino_mlp.pt), NAME=SPEC (any nowcaster spec) or a path; "
                        "NiNoAdam options in brackets: plain=default[schedule_aware=false]")
    p.add_argument("--seeds", type=int, nargs="+", default=[1000, 2000, 3000])
    p.add_argument("--steps", type=int, default=10_000, help="optimizer steps per run (also NiNoAdam max_steps)")
    p.add_argument("--eval-every", type=int, default=25, help="steps between full test-set evaluations")
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel processes, 1 torch thread each (a fresh process per run); 0: in this process")
    p.add_argument("--period", type=int, default=1000, help="steps between nowcasts")
    p.add_argument("--context", type=int, default=5)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam (AdamW for lm) learning rate (default: the task's: 6e-3, lm its tuned one)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the task's (128; lm 32 windows)")
    p.add_argument("--order", default="dataloader", choices=["dataloader", "randperm"],
                   help="batch order: the official loop's shuffled DataLoader re-seeded with seed + epoch")
    p.add_argument("--target", default=None,
                   help="target test accuracy (default: the task's, 89.5 / 90.5 / 87.0), or validation perplexity for lm")
    p.add_argument("--ladder", default=None,
                   help="comma-separated easier thresholds (default: FM-16 88.5,89.0; FM-32 89.5,90.0; ViT 85.5,86.5; lm: its own)")
    _schedule_arguments(p, "learning rate: constant (the paper's protocol) or linear warmup + cosine decay to zero")
    p.add_argument("--train-examples", type=int, default=None, help="first N training images (quick checks)")
    p.add_argument("--test-examples", type=int, default=None, help="first N test images (quick checks)")
    p.add_argument("--device", default="cpu", help="where models and data live: cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_bench)
    p = sub.add_parser("report", help="markdown tables and a PNG of the curves from `bench` results")
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--out", default="runs/report", help="directory for README.md and curves.png")
    p.add_argument("--median-only", action="store_true", help="plot only the median curve of each method")
    p.add_argument("--target", nargs="+", default=None, metavar="TASK=T/L1/L2",
                   help="thresholds read from the curves instead of the recorded ones: the target, then the ladder "
                        "(e.g. lm=3.3/3.6/3.45 fm16=89.5/88.5/89)")
    p.add_argument("--command-line", default=None,
                   help="the benchmark command to quote in the report (default: the commands stored in the "
                        "results files)")
    p.set_defaults(func=_report)
    args = parser.parse_args(argv)
    args.command_text = "nino-optim " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    args.func(args)


if __name__ == "__main__":
    main()
