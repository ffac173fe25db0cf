"""Where do nowcasts land on runs trained under a learning-rate schedule: plain vs schedule-aware horizons.

For each recorded trajectory (``nino-optim collect --schedule cosine``, states every 200 steps) and each nowcast
of NiNoAdam's timeline (period 1000, context 5, the k-decay over the run's length), the nowcaster reads the 5
states up to the nowcast step and predicts k spacings ahead, as ``NiNoAdam(schedule_aware=False)`` does, or the
scaled horizon of ``NiNoAdam(schedule_aware=True)`` (``schedule.scaled_horizon``, with the rates the run's
schedule set at the captures). Each prediction is compared with the state the run actually reached k spacings
later: the error is mean |prediction - reached| over the parameters the graph places, relative to not moving
at all (mean |newest - reached|). Below 1: the jump brings the parameters closer to where training went.

    python experiments/schedule_horizon.py --data data/scheduled default nino_no_posw

``nino_no_posw`` downloads the official checkpoint once (or pass its path).
"""
from __future__ import annotations

import argparse
import json
import statistics
import warnings

import torch

from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.bench.lr_schedule import warmup_cosine
from nino_optim.metatrain.trajectories import list_trajectories, load_trajectory
from nino_optim.metatrain.zoo import build_model, example_inputs
from nino_optim.schedule import k_schedule, scaled_horizon

PERIOD, CONTEXT = 1000, 5


def nowcast_errors(traj, nowcaster, graph) -> list[dict]:
    """One row per nowcast whose target lies within the run: step, k, scaled horizon, both relative errors."""
    spec = traj.meta["spec"]
    steps, states = traj.meta["steps"], traj.states.float()
    interval = PERIOD // CONTEXT
    if spec["save_every"] != interval:
        raise ValueError(f"{traj.run_id}: states every {spec['save_every']} steps; this needs every {interval}")
    rate = warmup_cosine(spec["steps"], spec["warmup"]) if spec.get("schedule", "constant") == "cosine" \
        else (lambda s: 1.0)
    placed = graph.placed_mask
    rows = []
    for i, k in enumerate(k_schedule(spec["steps"], PERIOD)):
        t = (i + 1) * PERIOD
        if t + k * interval > steps[-1]:
            continue
        at = steps.index(t)
        window = states[at - CONTEXT + 1: at + 1].t().contiguous()  # [P, c]
        reached = states[steps.index(t + k * interval)]
        newest = window[:, -1]
        # The rate NiNoAdam reads at a capture call c (before its step) is the one the scheduler set for step c - 1.
        lrs = [spec["lr"] * rate(t - interval * j - 1) for j in reversed(range(CONTEXT))]
        k_asked, fraction = scaled_horizon(k, lrs, interval)
        with torch.no_grad():
            plain = nowcaster.predict(graph, window, k)
            aware = torch.lerp(newest, nowcaster.predict(graph, window, k_asked), fraction)
        still = (newest - reached)[placed].abs().mean()
        rows.append({"step": t, "k": k, "k_scaled": round(k_asked * fraction, 2),
                     "plain": float((plain - reached)[placed].abs().mean() / still),
                     "aware": float((aware - reached)[placed].abs().mean() / still)})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="directory of recorded trajectories")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("nowcasters", nargs="+", help="nowcaster specs (default, nino_no_posw, a path, ...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {}
    for spec in args.nowcasters:
        nowcaster = load_nowcaster(spec)
        for path in list_trajectories(args.data):
            traj = load_trajectory(path)
            arch = traj.meta["spec"]["arch"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = build_neural_graph(build_model(arch), example_inputs=example_inputs(arch))
            rows = nowcast_errors(traj, nowcaster, graph)
            results.setdefault(spec, {})[traj.run_id] = rows
            print(f"\n{spec} on {traj.run_id}")
            print("| step | k | k scaled | plain | schedule-aware |\n|--:|--:|--:|--:|--:|")
            for r in rows:
                print(f"| {r['step']} | {r['k']} | {r['k_scaled']} | {r['plain']:.3f} | {r['aware']:.3f} |")
        every = [r for rows in results[spec].values() for r in rows]
        print(f"\n{spec}, median over {len(results[spec])} trajectories\n| step | plain | schedule-aware |\n|--:|--:|--:|")
        for step in sorted({r["step"] for r in every}):
            at = [r for r in every if r["step"] == step]
            print(f"| {step} | {statistics.median(r['plain'] for r in at):.3f} | "
                  f"{statistics.median(r['aware'] for r in at):.3f} |")
        print(f"{spec}: median relative error over {len(every)} nowcasts: plain "
              f"{statistics.median(r['plain'] for r in every):.3f}, schedule-aware "
              f"{statistics.median(r['aware'] for r in every):.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
