"""Held-out meta-loss: how well nowcasters predict recorded trajectories they were not trained on.

For fixed random windows of held-out trajectories (5 past states, up to 40 future states 200 steps apart, scaled
with the inputs' statistics), the masked L1 between predicted and true future states, per horizon band and
overall, for: no change (the newest state), Linefit, Linefit+, any NiNo weights (the project's, or an official
``.pt``). The lower, the better; it is the quantity meta-training minimises.

    python experiments/heldout_metaloss.py --data data/trajectories runs/metatrain/weights \\
        $NINO_REFERENCE_DIR/upstream-checkpoints/nino_no_posw.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nino_optim import load_nowcaster
from nino_optim.metatrain.trajectories import list_trajectories
from nino_optim.metatrain.windows import WindowSampler, collate
from nino_optim.nowcast.linefit import linefit_coefficients

BANDS = ((1, 5), (6, 15), (16, 40))


def linefit_predictor(weighted: bool):
    def predict(batch, context: int, horizon: int) -> torch.Tensor:
        coef = torch.stack([linefit_coefficients(context, context + j, weighted) for j in range(1, horizon + 1)], 1)
        inputs = batch.edge_attr.view(batch.edge_attr.shape[0], -1, context).double()
        return (inputs @ coef.to(inputs.device)).float()  # [E, F, K]
    return predict


def model_predictor(models: list):
    """The mean prediction of ``models`` (one model: its own)."""
    @torch.no_grad()
    def predict(batch, context: int, horizon: int) -> torch.Tensor:
        return torch.stack([m(batch.edge_attr, batch.edge_index, batch.edge_type, batch.lpe) for m in models]).mean(0)
    return predict


def no_change(batch, context: int, horizon: int) -> torch.Tensor:
    inputs = batch.edge_attr.view(batch.edge_attr.shape[0], -1, context)
    return inputs[:, :, -1:].expand(-1, -1, horizon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/trajectories")
    parser.add_argument("--val-every", type=int, default=5, help="the held-out split of `nino-optim metatrain`")
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--spacing", type=int, default=200, help="optimizer steps between the states of a window")
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--device", default="cpu", help="where the GNNs run: cpu, cuda, ...")
    parser.add_argument("--per-trajectory", action="store_true",
                        help="one row per held-out trajectory (its own --windows windows) instead of horizon bands")
    parser.add_argument("weights", nargs="*", help="NiNo weights: a directory (config + safetensors) or an official "
                        ".pt; A+B averages the predictions of A and B")
    args = parser.parse_args()
    torch.set_num_threads(1)

    paths = list_trajectories(args.data)
    held_out = [p for i, p in enumerate(paths) if i % args.val_every == args.val_every - 1] or paths[-1:]
    methods = {"no change": no_change, "linefit": linefit_predictor(False), "linefit+": linefit_predictor(True)}
    for spec in args.weights:
        paths = [Path(part) for part in spec.split("+")]  # a run's weights/ directory is named after its run
        name = "+".join(path.parent.name if path.name == "weights" else path.name for path in paths)
        methods[name] = model_predictor([load_nowcaster(str(path)).to(args.device) for path in paths])

    if args.per_trajectory:  # one row per trajectory, overall error only: where does a nowcaster lead?
        print(f"{args.windows} windows per held-out trajectory of {args.data}; masked L1 (all horizons), scaled space")
        print(f"{'trajectory':<60}" + "".join(f"{name[:16]:>17}" for name in methods))
        for path in held_out:
            sampler, windows = sample_windows([path], args)
            cells = [band_errors(windows, predict, sampler)[-1] for predict in methods.values()]
            print(f"{path.name:<60}" + "".join(f"{c:>17.4f}" for c in cells))
        return

    sampler, windows = sample_windows(held_out, args)
    print(f"{len(windows)} windows from {len(held_out)} held-out trajectories of {args.data}; masked L1 in scaled space")
    print(f"{'method':<22}" + "".join(f"{f'k {a}-{b}':>11}" for a, b in BANDS) + f"{'all':>9}")
    for name, predict in methods.items():
        errors = band_errors(windows, predict, sampler)
        print(f"{name:<22}" + "".join(f"{e:>11.4f}" if e == e else f"{'-':>11}" for e in errors[:-1])
              + f"{errors[-1]:>9.4f}")


def sample_windows(paths: list[Path], args) -> tuple[WindowSampler, list]:
    """The fixed, seeded evaluation windows of ``paths`` (no LPE flips)."""
    sampler = WindowSampler(paths, spacing=args.spacing, device=args.device)
    gen = torch.Generator().manual_seed(args.seed)
    return sampler, [collate([sampler.sample(gen, flip_lpe=False)]).to(args.device) for _ in range(args.windows)]


def band_errors(windows: list, predict, sampler: WindowSampler) -> list[float]:
    """Masked L1 per horizon band of ``BANDS`` and over all horizons (NaN for a band without targets)."""
    err = torch.zeros(len(BANDS) + 1, dtype=torch.float64)
    count = torch.zeros(len(BANDS) + 1, dtype=torch.float64)
    for batch in windows:
        diff = (predict(batch, sampler.context, sampler.horizon).to(batch.target.dtype) - batch.target).abs()
        for i, (a, b) in enumerate(BANDS):
            m = batch.mask[:, :, a - 1: b]
            err[i] += diff[:, :, a - 1: b][m].sum().item()
            count[i] += m.sum().item()
        err[-1] += diff[batch.mask].sum().item()
        count[-1] += batch.mask.sum().item()
    return (err / count).tolist()


if __name__ == "__main__":
    main()
