"""Meta-training loop for the NiNo GNN (``nino-optim metatrain``), resumable and seeded."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..nowcast.gnn import NiNoConfig, NiNoGNN
from ..nowcast.hub import load_nowcaster
from .windows import WindowSampler, collate, masked_l1

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Meta-training hyperparameters (official values where they exist: AdamW 3e-3, wd 1e-2, clip 5)."""

    iterations: int = 2000
    batch_size: int = 4  # windows (graphs) per step
    windows_per_trajectory: int = 1  # windows drawn together from one trajectory (official: 4, batch 16)
    lr: float = 3e-3
    weight_decay: float = 1e-2
    min_lr: float = 1e-6
    clip: float = 5.0
    eval_every: int = 100
    val_windows: int = 32
    seed: int = 0
    hid: int = 128
    mp_layers: int = 2
    init: str | None = None  # start from these NiNo weights (a nowcaster spec) instead of a random initialisation
    # the cosine schedule spans this many seconds of training (or `iterations`, whichever ends first): a run fits a
    # fixed time, with its learning rate annealed, however fast the machine is (not reproducible)
    seconds: float | None = None


def metatrain(train: WindowSampler, val: WindowSampler, out_dir: str | Path, cfg: TrainConfig,
              progress: bool = True, device: torch.device | str = "cpu", stop_after: float | None = None,
              more_data: Callable[[], list[Path]] | None = None) -> NiNoGNN:
    """Train (or resume training) a NiNo GNN; writes checkpoints, the curves and ``weights/`` to ``out_dir``.

    The GNN trains on ``device`` (windows are made where the samplers keep their states, from seeded generators
    on the CPU); the device is not part of the configuration, so a run may resume on another one. The returned
    model is on the CPU.

    ``stop_after``: seconds after which training stops at the next checkpoint (every ``eval_every``
    iterations), writing ``weights/`` from there; running again with the same configuration resumes it.

    ``more_data``: called at every checkpoint, returns trajectories to add to ``train`` (those a collection still
    running has finished since), so that meta-training need not wait for the whole collection. The windows then
    depend on when trajectories arrived, so such a run is not reproducible; ``history["trajectories"]`` records
    how many it trained on from which iteration.
    """
    if cfg.windows_per_trajectory < 1 or cfg.batch_size % cfg.windows_per_trajectory:
        raise ValueError(f"windows_per_trajectory ({cfg.windows_per_trajectory}) must divide batch_size "
                         f"({cfg.batch_size})")
    if cfg.seconds is not None and not cfg.seconds > 0:
        raise ValueError(f"seconds must be positive (the training time the schedule spans), got {cfg.seconds}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    config = NiNoConfig(hid=cfg.hid, mp_layers=cfg.mp_layers, ctx=train.context, seq_len=train.horizon,
                        max_feat_size=train.max_feat_size)
    model = (NiNoGNN(config) if cfg.init is None else initial_weights(cfg.init, config)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    val_gen = torch.Generator().manual_seed(cfg.seed + 1)
    val_batches = [collate([val.sample(val_gen, flip_lpe=False)]).to(device) for _ in range(cfg.val_windows)]
    history: dict[str, list] = {"train": [], "val": []}
    start, seconds_before = 0, 0.0  # iterations and training seconds before a resume
    ckpt_path = out_dir / CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
        if ckpt["config"] != asdict(cfg):
            raise ValueError(f"{ckpt_path} was written with another configuration; use a new --out directory")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"].cpu())
        history, start, seconds_before = json.loads(ckpt["history"]), ckpt["iteration"], ckpt["seconds"]

    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=start, desc="metatrain")
        except ImportError:
            pass
    model.train()
    t0 = time.perf_counter()

    def trained() -> float:  # seconds of training, those before a resume included
        return seconds_before + time.perf_counter() - t0

    pending: list[torch.Tensor] = []  # losses not read yet: reading each one would wait for the GPU every iteration
    groups = cfg.batch_size // cfg.windows_per_trajectory
    if more_data is not None:
        history.setdefault("trajectories", []).append([start, len(train.items)])
    last = start if "schedule_ended_at" in history else cfg.iterations  # a finished time schedule stays finished
    iteration_seconds = 0.0  # the last iteration's duration
    for it in range(start + 1, last + 1):
        began = trained()
        done = (it - 1) / cfg.iterations  # the fraction of the schedule behind us
        if cfg.seconds is not None:  # where this iteration will end, so the last one runs at the end of the decay
            done = max(done, min((began + iteration_seconds) / cfg.seconds, 1.0))
        for group in opt.param_groups:  # cosine decay from lr to min_lr over the schedule
            group["lr"] = cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * done)) / 2
        batch = collate([train.sample(generator, cfg.windows_per_trajectory) for _ in range(groups)]).to(device)
        loss = masked_l1(model(batch.edge_attr, batch.edge_index, batch.edge_type, batch.lpe), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        pending.append(loss.detach())
        if bar is not None:
            bar.update()
        ended = trained()
        iteration_seconds = ended - began
        out_of_time = cfg.seconds is not None and ended >= cfg.seconds
        if it % cfg.eval_every == 0 or it == cfg.iterations or out_of_time:
            losses = torch.stack(pending).tolist()
            first, pending = it - len(losses) + 1, []
            bad = [i for i, value in enumerate(losses) if not math.isfinite(value)]
            if bad:  # checked before this checkpoint is written, so the last one on disk is still good
                raise FloatingPointError(f"meta-training loss became {losses[bad[0]]} at iteration {first + bad[0]}; "
                                         f"resume from {ckpt_path} with a lower --lr")
            history["train"] += [[first + i, value] for i, value in enumerate(losses)]
            if bar is not None:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            history["val"].append([it, evaluate(model, val_batches)])
            if more_data is not None:
                train.add(more_data())
                history.setdefault("trajectories", []).append([it, len(train.items)])
            if out_of_time:
                history["schedule_ended_at"] = it  # the time schedule is complete: these are the final weights
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "seconds": trained(),
                        "generator": generator.get_state(), "iteration": it, "history": json.dumps(history),
                        "config": asdict(cfg)}, ckpt_path)
            if out_of_time:
                break
            if stop_after is not None and time.perf_counter() - t0 > stop_after and it < cfg.iterations:
                history["stopped_at"] = it  # not finished: the weights are those of this checkpoint
                break
    if bar is not None:
        bar.close()
    model.cpu().eval()
    model.save_pretrained(out_dir / "weights")
    (out_dir / "history.json").write_text(json.dumps({**history, "seconds_this_run":
                                                      round(time.perf_counter() - t0, 1)}) + "\n")
    plot_curves(history, out_dir / "curves.png")
    return model


def initial_weights(spec: str, config: NiNoConfig) -> NiNoGNN:
    """A trainable copy of the NiNo GNN ``spec`` names (``"default"``, a weights directory, an official ``.pt``),
    checked against the sizes meta-training needs (``config``); its other settings (edge types, LPE size, ...)
    are kept."""
    source = load_nowcaster(spec)
    if not isinstance(source, NiNoGNN):
        raise ValueError(f"--init {spec!r} is a {type(source).__name__}; fine-tuning needs NiNo GNN weights")
    fields = ("hid", "mp_layers", "ctx", "seq_len", "max_feat_size")
    wrong = [f"{f} {getattr(source.config, f)} (this run: {getattr(config, f)})"
             for f in fields if getattr(source.config, f) != getattr(config, f)]
    if wrong:
        raise ValueError(f"--init {spec!r} does not fit this run: " + ", ".join(wrong) +
                         "; pass the matching --hid, or weights of these sizes")
    return source.requires_grad_(True).train()


@torch.no_grad()
def evaluate(model: NiNoGNN, batches) -> float:
    """Mean masked L1 over fixed held-out windows."""
    was_training = model.training
    model.eval()
    losses = [masked_l1(model(b.edge_attr, b.edge_index, b.edge_type, b.lpe), b).item() for b in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def plot_curves(history: dict, path: Path) -> None:
    """Training (smoothed) and validation loss vs iteration, as a PNG (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    if history["train"]:
        its, losses = zip(*history["train"])
        window = max(1, len(losses) // 50)
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(its, smooth, label="train (smoothed)")
    if history["val"]:
        ax.plot(*zip(*history["val"]), "o-", label="held-out trajectories")
    ax.set_xlabel("iteration")
    ax.set_ylabel("masked L1 (scaled)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
