"""What subgraph mode (one graph per transformer block) costs in prediction quality, on recorded trajectories.

For windows of recorded GPT trajectories (``nino-optim collect``; 5 past states 200 steps apart), each nowcaster
predicts k = 1, 5, 10, 20, 40 state spacings ahead on the full neural graph and in subgraph mode
(``SubgraphNowcaster``). The error is the mean |prediction - recorded state| in the scaled space of the inputs
(per-tensor statistics, as in meta-training), so 0 is perfect and "no change" (the newest state) is the baseline.
Also printed: the largest subgraph's share of the edges, which is what subgraph mode saves in peak memory.

    python experiments/subgraph_quality.py --data data/cpu_traj --windows 16 default nino_no_posw.pt
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.metatrain.trajectories import list_trajectories, load_trajectory
from nino_optim.metatrain.zoo import build_model, example_inputs
from nino_optim.nowcast import SubgraphNowcaster
from nino_optim.nowcast.scaling import LayerwiseScaler

HORIZONS = (1, 5, 10, 20, 40)
CONTEXT = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/trajectories")
    parser.add_argument("--windows", type=int, default=16, help="windows per trajectory")
    parser.add_argument("--spacing", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("nowcasters", nargs="+", help="specs for load_nowcaster (default, a .pt, a directory)")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    models = {Path(spec).name: load_nowcaster(spec) for spec in args.nowcasters}
    results = []
    for path in list_trajectories(args.data):
        traj = load_trajectory(path)
        arch = traj.meta["spec"]["arch"]
        if arch["kind"] != "gpt":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = build_neural_graph(build_model(arch), example_inputs=example_inputs(arch))
        stride = args.spacing // traj.meta["spec"]["save_every"]
        states = traj.states.float()
        n = states.shape[0]
        split = {name: SubgraphNowcaster(model) for name, model in models.items()}  # subgraphs built once
        parts = next(iter(split.values())).parts(graph)
        largest = max(sub.num_edges for sub, _ in parts)
        err = {name: {k: [] for k in HORIZONS} for name in ["no change"] + [f"{m} {mode}" for m in models
                                                                           for mode in ("full", "subgraphs")]}
        for _ in range(args.windows):
            start = int(torch.randint(0, n - (CONTEXT - 1 + 1) * stride, (1,), generator=gen))
            inputs = states[start: start + CONTEXT * stride: stride].t()  # [P, c]
            scaler = LayerwiseScaler(inputs, graph.params)
            for k in HORIZONS:
                at = start + (CONTEXT - 1 + k) * stride
                if at >= n:
                    continue
                truth = scaler.scale(states[at][:, None])[:, 0]
                preds = {"no change": inputs[:, -1]}
                for name, model in models.items():
                    preds[f"{name} full"] = model.predict(graph, inputs, k)
                    preds[f"{name} subgraphs"] = split[name].predict(graph, inputs, k)
                for name, pred in preds.items():
                    err[name][k].append(float((scaler.scale(pred[:, None])[:, 0] - truth).abs().mean()))
        row = {"trajectory": path.name, "edges": graph.num_edges, "largest_subgraph_edges": largest,
               "groups": len(parts),
               "error": {name: {k: sum(v) / len(v) for k, v in ks.items() if v} for name, ks in err.items()}}
        results.append(row)
        print(f"\n{path.name}: {graph.num_edges:,} edges, {row['groups']} groups, largest subgraph "
              f"{largest:,} edges ({100 * largest / graph.num_edges:.0f}%); scaled mean abs error, "
              f"{args.windows} windows")
        print(f"{'predictor':<34}" + "".join(f"{f'k={k}':>9}" for k in HORIZONS))
        for name, ks in row["error"].items():
            print(f"{name:<34}" + "".join(f"{ks[k]:>9.4f}" if k in ks else f"{'-':>9}" for k in HORIZONS))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
