"""Demo: Adam vs NiNoAdam on Fashion-MNIST (the paper's FM-16 task), on a CPU, in about 10 minutes.

Every method trains the same convnet from the same initialisation on the same batch order (same seed); NiNoAdam
is Adam plus one nowcast every 1000 steps. The table gives the steps each method needs to reach each test
accuracy threshold and the reduction vs Adam; the PNG shows test accuracy vs step.

    python examples/demo.py                      # Adam and NiNoAdam with the bundled weights ('default')
    python examples/demo.py --official DIR       # ... and the official NiNo checkpoint DIR/nino_no_posw.pt
    python examples/demo.py --steps 10000 --eval-every 50 --methods adam,linefit+,nino --official nino_no_posw.pt

The official checkpoints (nino_no_posw.pt, nino_mlp.pt) are not part of the package: ``--official`` takes their
directory (or the nino_no_posw.pt file); without it, ``$NINO_REFERENCE_DIR/upstream-checkpoints`` if that is set.

Needs Fashion-MNIST (`apt-get install dataset-fashion-mnist`, or NINO_FASHION_MNIST=<dir>) and matplotlib.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from nino_optim import NiNoAdam
from nino_optim.bench import TASKS, load_fashion_mnist, set_threads, train_steps_to_target
from nino_optim.bench.data import DatasetMissingError
from nino_optim.bench.steps_to_target import reduction

# The official checkpoints' file names (methods 'nino' and 'wnn').
OFFICIAL_NINO = "nino_no_posw.pt"
OFFICIAL_WNN = "nino_mlp.pt"

# Defaults measured on a 2-core CPU (torch 2.13 CPU wheel): on an idle machine ~20 ms per FM-16 step (2 threads)
# and ~1 s per 10k-image evaluation, so 5000 steps with an evaluation every 100 take ~2.5 minutes per method
# (~7.5 minutes for the three default methods). With other jobs on the machine it is 2-3x slower.
# Adam (seed 1000) reaches 85% at ~2100 steps and 87% at ~2900, but not 88% within 5000 steps.
DEFAULT_STEPS = 5000
DEFAULT_EVAL_EVERY = 100
DEFAULT_THRESHOLDS = (0.85, 0.86, 0.87)
LABELS = {"adam": "Adam", "default": "NiNoAdam (default)", "linefit": "NiNoAdam (Linefit)",
          "linefit+": "NiNoAdam (Linefit+)", "nino": "NiNoAdam (official NiNo)", "wnn": "NiNoAdam (official WNN+)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer steps per method (also max_steps "
                   "for the k-decay)")
    p.add_argument("--eval-every", type=int, default=DEFAULT_EVAL_EVERY, help="steps between test evaluations")
    p.add_argument("--seed", type=int, default=1000, help="seed of the initialisation and batch order (shared)")
    p.add_argument("--methods", default=None, help="comma-separated, from: " + ", ".join(LABELS) +
                   ". Default: adam,default, plus nino when an official checkpoint is given")
    p.add_argument("--official", default=None, metavar="PATH",
                   help=f"directory of the official checkpoints ({OFFICIAL_NINO} for 'nino', {OFFICIAL_WNN} for "
                   f"'wnn'), or the {OFFICIAL_NINO} file (default: $NINO_REFERENCE_DIR/upstream-checkpoints if set)")
    p.add_argument("--thresholds", default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
                   help="comma-separated test accuracies (fractions or percentages)")
    p.add_argument("--task", default="fm16", choices=sorted(TASKS))
    p.add_argument("--period", type=int, default=1000, help="steps between nowcasts")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPUs not kept busy by "
                   "other processes, at least 1)")
    p.add_argument("--out", default="runs/demo/curves.png", help="PNG of accuracy vs step (a .json is written beside it)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    return p.parse_args(argv)


def resolve_methods(args: argparse.Namespace) -> dict[str, object]:
    """Method name -> nowcaster spec (None for plain Adam)."""
    nino, wnn = official_checkpoints(args.official)
    if args.methods:
        names = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
    else:
        names = ["adam", "default"] + (["nino"] if nino else [])
    specs: dict[str, object] = {}
    for name in names:
        if name not in LABELS:
            sys.exit(f"unknown method {name!r}; choose from {', '.join(LABELS)}")
        if name == "nino" and not nino:
            sys.exit(f"method 'nino' needs the official checkpoint: pass --official DIR (holding {OFFICIAL_NINO})")
        if name == "wnn" and not wnn:
            sys.exit(f"method 'wnn' needs the official WNN+ checkpoint: pass --official DIR (holding {OFFICIAL_WNN})")
        specs[name] = {"adam": None, "nino": nino, "wnn": wnn}.get(name, name)
    return specs


def official_checkpoints(official: str | None) -> tuple[str | None, str | None]:
    """(NiNo, WNN+) official checkpoint paths that exist, from ``--official`` or ``$NINO_REFERENCE_DIR``."""
    reference = os.environ.get("NINO_REFERENCE_DIR")
    if official is None and not reference:
        return None, None
    path = Path(official) if official is not None else Path(reference) / "upstream-checkpoints"
    if path.is_file():
        nino, wnn = path, path.with_name(OFFICIAL_WNN)
    elif path.is_dir():
        nino, wnn = path / OFFICIAL_NINO, path / OFFICIAL_WNN
    elif official is not None:
        sys.exit(f"--official {official}: no such file or directory")
    else:
        return None, None
    return (str(nino) if nino.is_file() else None), (str(wnn) if wnn.is_file() else None)


def make_factory(spec, lr: float, steps: int, period: int):
    if spec is None:
        return lambda model: torch.optim.Adam(model.parameters(), lr=lr)
    return lambda model: NiNoAdam(model.parameters(), model=model, lr=lr, nowcaster=spec, period=period,
                                  context=5, max_steps=steps)


def format_table(curves: dict, thresholds: list[float]) -> str:
    base = curves.get("adam")
    head = ["method"] + [f"steps to {100 * t:g}%" for t in thresholds] + ["final acc", "best acc", "wall time"]
    rows = []
    for name, c in curves.items():
        row = [LABELS[name]]
        for t in thresholds:
            s = c.reached[t]
            if s is None:
                row.append("not reached")
                continue
            r = reduction(s, base.reached[t]) if base is not None and name != "adam" else None
            row.append(f"{s}" + (f" ({r:+.0f}%)" if r is not None else ""))
        row += [f"{100 * c.final_value:.2f}%", f"{100 * c.best_value:.2f}%", f"{c.wall_time:.0f} s"]
        rows.append(row)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    sep = "-" * len(line(head))
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def nowcast_effects(curves: dict) -> list[str]:
    """Test accuracy just before and right after each nowcast (the evaluations around it)."""
    out = []
    for name, c in curves.items():
        parts = []
        for s in c.nowcast_steps:
            before, after = c.value_around(s)
            if before is not None and after is not None:
                parts.append(f"@{s}: {100 * before:.2f}->{100 * after:.2f} ({100 * (after - before):+.2f})")
        if parts:
            out.append(f"{LABELS[name]}: " + ", ".join(parts))
    return out


def plot(curves: dict, thresholds: list[float], path: Path, title: str) -> None:
    """Two panels: the whole run, and a zoom on the thresholds (nowcasts dotted, thresholds dashed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    nowcasts = sorted({s for c in curves.values() for s in c.nowcast_steps})
    hi = max(c.best_value for c in curves.values())
    for ax, zoom in zip(axes, (False, True)):
        for name, c in curves.items():
            adam = name == "adam"
            ax.plot(c.steps, [100 * a for a in c.values], label=LABELS[name], lw=1.8 if adam else 1.3,
                    color="black" if adam else None, zorder=3 if adam else 2)
        for s in nowcasts:
            ax.axvline(s, color="grey", ls=":", lw=0.8)
        for t in thresholds:
            ax.axhline(100 * t, color="tab:red", ls="--", lw=0.7, alpha=0.6)
        if zoom:
            ax.set_ylim(100 * min(thresholds) - 5, 100 * hi + 0.8)
            ax.set_title("zoom (dips: the evaluation right after a nowcast)", fontsize=10)
        else:
            ax.set_ylim(0, 100)
            ax.set_title(title, fontsize=11)
        ax.set_xlabel("optimizer step (dotted: nowcasts)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    thresholds = sorted(float(t) / (100 if float(t) > 1 else 1) for t in args.thresholds.split(","))
    specs = resolve_methods(args)
    task = TASKS[args.task]
    threads = set_threads(args.threads)
    # Warnings from a skipped nowcast are part of the result: show each once, not once per nowcast.
    warnings.simplefilter("once")

    t0 = time.perf_counter()
    try:
        data = load_fashion_mnist()
    except DatasetMissingError as err:
        sys.exit(str(err))
    print(f"{task.name} on Fashion-MNIST: {len(data.train_x)} train / {len(data.test_x)} test images "
          f"(loaded in {time.perf_counter() - t0:.1f} s); {args.steps} steps, batch 128, Adam lr {task.lr:g}, "
          f"seed {args.seed}, eval every {args.eval_every} steps, torch threads: {threads}, torch {torch.__version__}")
    print("methods: " + ", ".join(f"{LABELS[n]}" + (f" [{s}]" if s not in (None, n) else "")
                                  for n, s in specs.items()), flush=True)

    curves = {}
    progress = not args.no_progress and sys.stderr.isatty()
    for name, spec in specs.items():
        c = train_steps_to_target(make_factory(spec, task.lr, args.steps, args.period), data, steps=args.steps,
                                  eval_every=args.eval_every, thresholds=thresholds, seed=args.seed,
                                  model=task, name=LABELS[name], progress=progress,
                                  log=None if progress else lambda msg: print("    " + msg, flush=True),
                                  log_every=max(args.eval_every, 1000 // args.eval_every * args.eval_every))
        curves[name] = c
        print(f"  {LABELS[name]}: final test acc {100 * c.final_value:.2f}%  wall {c.wall_time:.0f} s "
              f"(train {c.train_time:.0f} s = {1000 * c.train_time / args.steps:.1f} ms/step, "
              f"eval {c.eval_time:.0f} s)" + ("" if c.finite else "  NON-FINITE LOSS"), flush=True)

    print()
    print(format_table(curves, thresholds))
    print(f"(x%) = reduction in steps vs Adam (positive: fewer steps); steps are rounded up to the next "
          f"evaluation (every {args.eval_every} steps)")
    effects = nowcast_effects(curves)
    if effects:
        print("\ntest accuracy around each nowcast (previous evaluation -> evaluation right after):")
        print("\n".join("  " + e for e in effects))
    out = Path(args.out)
    plot(curves, thresholds, out, f"{task.name} on Fashion-MNIST, seed {args.seed}")
    out.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "threads": threads, "torch": torch.__version__,
         "curves": {n: c.to_dict() for n, c in curves.items()}}, indent=1))
    print(f"\ncurves: {out} (data: {out.with_suffix('.json')}); total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
