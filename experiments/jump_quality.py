"""Jump quality: the test accuracy after one nowcast, for each horizon k, on recorded trajectories.

The held-out meta-loss says how close a nowcast lands to the recorded future in scaled parameter space; what
training gains is the accuracy of the parameters it jumps to. For each trajectory (states every 200 steps), at
each nowcast step t of the benchmark's schedule (1000, 2000, ...), each nowcaster predicts from the 5 states
t-800..t the parameters k spacings ahead, for several k (0: the horizon the default schedule, k-decay 2 from 40
over 10 nowcasts, asks for at t); the table gives the Fashion-MNIST test accuracy of those parameters minus that
of the recorded parameters at t (the gain of jumping instead of not), averaged over trajectories, and the k with
the largest gain per nowcaster and step.

Right after a jump the accuracy drops far (tens of points at k = 40, for the official checkpoint too) and
recovers within about 25 Adam steps, so the immediate gain says little about what a nowcast leaves behind.
``--recover N`` trains both (jumped and not) N Adam steps on the same batches before measuring; Adam's moments
are not recorded with a trajectory, so both start from moments gathered over 20 steps at learning rate 0.

    python experiments/jump_quality.py --data .gpu/unseen --ks 0 --recover 100 default \
        $NINO_REFERENCE_DIR/upstream-checkpoints/nino_no_posw.pt
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from nino_optim import load_nowcaster
from nino_optim.bench.steps_to_target import evaluate
from nino_optim.graph import build_neural_graph
from nino_optim.metatrain.collect import LOADERS
from nino_optim.metatrain.trajectories import list_trajectories, load_trajectory
from nino_optim.metatrain.zoo import build_model, example_inputs
from nino_optim.schedule import k_schedule

CONTEXT, SPACING, PERIOD = 5, 200, 1000


def accuracy(model: torch.nn.Module, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of ``model`` with its parameters set to ``flat`` [P] (named_parameters order)."""
    torch.nn.utils.vector_to_parameters(flat.float(), model.parameters())
    return evaluate(model, x, y)


def recovered(model: torch.nn.Module, flat: torch.Tensor, spec: dict, data, steps: int, seed: int) -> torch.Tensor:
    """``flat`` [P] after ``steps`` Adam steps of the run's optimizer and learning rate (moments from 20 steps at
    learning rate 0 first), on batches drawn from ``seed``: the same batches for every starting point."""
    if steps == 0:
        return flat
    torch.nn.utils.vector_to_parameters(flat.float(), model.parameters())
    model.train()
    opt_cls = torch.optim.AdamW if spec["optimizer"] == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=0.0, weight_decay=spec["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    for step in range(20 + steps):
        if step == 20:
            opt.param_groups[0]["lr"] = spec["lr"]
        idx = torch.randint(len(data.train_x), (spec["batch_size"],), generator=generator)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
        opt.step()
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=".gpu/unseen")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 10, 20, 30, 40])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000, 3000, 5000, 7000, 9000],
                        help="nowcast steps t (multiples of the nowcast period)")
    parser.add_argument("--recover", type=int, default=0, help="Adam steps after the jump before measuring")
    parser.add_argument("--arch", default="16x32x32", help="only trajectories of this convnet ('' for all)")
    parser.add_argument("weights", nargs="+", help="nowcaster specs: 'default', a weights directory, an official .pt")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = LOADERS["fashion-mnist"]()
    nowcasters = {Path(spec).stem if spec.endswith(".pt") else spec: load_nowcaster(spec) for spec in args.weights}
    schedule = k_schedule(10_000, PERIOD)

    def scheduled_k(t: int) -> int:  # the horizon NiNoAdam's default schedule uses at step t
        return schedule[min(len(schedule) - 1, t // PERIOD - 1)]

    paths = [p for p in list_trajectories(args.data) if f"convnet{args.arch}-" in p.name]
    gains: dict[tuple[str, int, int], list[float]] = {}  # (nowcaster, t, k) -> gain per trajectory
    for path in paths:
        traj = load_trajectory(path)
        every = traj.meta["spec"]["save_every"]
        arch = traj.meta["spec"]["arch"]
        model = build_model(arch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = build_neural_graph(model, example_inputs=example_inputs(arch))
        for t in args.steps:
            idx = [(t - SPACING * (CONTEXT - 1 - i)) // every for i in range(CONTEXT)]
            states = traj.states[idx].T.float()  # [P, c], oldest to newest

            def after(flat: torch.Tensor) -> float:
                return accuracy(model, recovered(model, flat, traj.meta["spec"], data, args.recover, t), data.test_x,
                                data.test_y)

            base = after(states[:, -1])
            for name, nowcaster in nowcasters.items():
                for k in args.ks:
                    jumped = nowcaster.predict(graph, states, k or scheduled_k(t))
                    gains.setdefault((name, t, k), []).append(after(jumped) - base)
        print(f"done {path.name}", flush=True)

    print(f"\nTest-accuracy gain of one nowcast (points) after {args.recover} Adam steps, mean over {len(paths)} "
          f"trajectories of {args.data}; k=0: the schedule's k")
    print(f"{'nowcaster':<16}{'t':>6}{'sched k':>8}" + "".join(f"{f'k={k}':>8}" for k in args.ks) + f"{'best k':>8}")
    for name in nowcasters:
        for t in args.steps:
            means = [100 * sum(gains[name, t, k]) / len(paths) for k in args.ks]
            best = args.ks[max(range(len(means)), key=means.__getitem__)]
            print(f"{name[:15]:<16}{t:>6}{scheduled_k(t):>8}"
                  + "".join(f"{m:>8.2f}" for m in means) + f"{best:>8}")


if __name__ == "__main__":
    main()
