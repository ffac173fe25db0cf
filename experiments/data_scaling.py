"""Held-out meta-loss against the number of training trajectories: how far more data would take our NiNo.

Reads the table that ``heldout_metaloss.py`` prints (one row per predictor; runs named ``metatrain_n<N>`` were
trained on N trajectories, ``metatrain`` on ``--full`` of them, or any run named with ``--run NAME=N``) and plots
the "all horizons" column against N, with the predictors that do not depend on N (no change, Linefit+, the
official checkpoint, the bundled weights a fine-tune starts from) as horizontal lines.

    python experiments/data_scaling.py docs/pretrained/heldout_metaloss.txt --full 76 --iterations 3000 \
        --out docs/pretrained/data_scaling.png
"""
from __future__ import annotations

import argparse
import re


def read_table(path: str) -> dict[str, float]:
    """{predictor: masked L1 over all horizons} from heldout_metaloss.py's output."""
    rows = {}
    for line in open(path):
        parts = line.split()
        if len(parts) >= 5 and re.fullmatch(r"[0-9.]+", parts[-1]) and not line.startswith("method"):
            rows[" ".join(parts[:-4])] = float(parts[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="saved output of experiments/heldout_metaloss.py")
    parser.add_argument("--full", type=int, help="trajectories the run named 'metatrain' used")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=N",
                        help="the table's row NAME was trained on N trajectories (instead of the metatrain_n names)")
    parser.add_argument("--iterations", type=int, required=True, help="meta-training iterations of every run")
    parser.add_argument("--label", default="our NiNo", help="what the runs are, for the legend")
    parser.add_argument("--lines", default="nino_no_posw.pt,default,no change,linefit+",
                        help="comma-separated rows of the table drawn as horizontal lines (those present)")
    parser.add_argument("--out", default="data_scaling.png")
    args = parser.parse_args()
    rows = read_table(args.table)
    if args.run:
        sizes = {name: int(n) for name, n in (run.split("=") for run in args.run)}
    else:
        sizes = {name: args.full if name == "metatrain" else int(name.split("_n")[1])
                 for name in rows if name == "metatrain" or name.startswith("metatrain_n")}
    missing = sorted(set(sizes) - set(rows))
    if missing or None in sizes.values():
        raise SystemExit(f"not in {args.table}: {missing}" if missing else "pass --full for the run 'metatrain'")
    points = sorted((n, rows[name]) for name, n in sizes.items())
    for n, value in points:
        print(f"{n:>4} trajectories: held-out masked L1 {value:.4f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*points), "o-", label=f"{args.label} ({args.iterations} iterations each)")
    styles = {"nino_no_posw.pt": "k--", "default": "b-.", "no change": "g:", "linefit+": "r:"}
    for name in args.lines.split(","):
        style = styles.get(name, "m-")
        if name in rows:
            ax.axhline(rows[name], linestyle=style[1:], color=style[0], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training trajectories")
    ax.set_ylabel("held-out masked L1 (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
