"""The zoo of small training runs whose trajectories NiNo learns from.

Each ``RunSpec`` fully describes one run (architecture, optimizer, learning rate, seed, length), so that the
model can be rebuilt from the trajectory's metadata to get its neural graph. Runs are drawn from a seeded
generator: the same ``--runs`` and ``--zoo-seed`` always give the same zoo.
"""
from __future__ import annotations

import math
import random
from collections.abc import Collection
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..bench.lm import LMTask, TinyGPT
from ..bench.lr_schedule import check_schedule
from ..bench.tasks import TASKS, ConvNet


@dataclass(frozen=True)
class RunSpec:
    """One training run of the zoo."""

    # {"kind": "convnet", "hid": [h1, h2, h3]}, {"kind": "mlp", "hidden": [...]} or
    # {"kind": "gpt", "layers": L, "width": W, "heads": H, "context": T}
    arch: dict
    optimizer: str  # "adam" or "adamw"
    lr: float
    weight_decay: float
    seed: int
    steps: int
    save_every: int
    batch_size: int = 128
    dataset: str = "fashion-mnist"
    extra: dict = field(default_factory=dict)
    schedule: str = "constant"  # or "cosine": linear warmup over ``warmup`` of the steps, then cosine decay to 0
    warmup: float = 0.05

    @property
    def run_id(self) -> str:
        kind = self.arch["kind"]
        if kind == "gpt":
            dims = f"{self.arch['layers']}x{self.arch['width']}h{self.arch['heads']}"
        else:
            dims = "x".join(str(d) for d in self.arch.get("hid") or self.arch.get("hidden"))
        scheduled = "" if self.schedule == "constant" else f"-{self.schedule}{self.warmup:g}"
        return (f"{self.dataset}-{kind}{dims}-{self.optimizer}-lr{self.lr:.2e}-wd{self.weight_decay:g}{scheduled}"
                f"-s{self.seed}")

    def to_dict(self) -> dict:
        return asdict(self)


def gpt_task(arch: dict) -> LMTask:
    """The byte-level ``TinyGPT`` settings of a "gpt" architecture entry."""
    return LMTask(context=arch["context"], width=arch["width"], layers=arch["layers"], heads=arch["heads"])


def build_model(arch: dict) -> nn.Module:
    """The model an architecture entry describes (Fashion-MNIST input 1x28x28 and 10 classes; bytes for "gpt")."""
    if arch["kind"] == "gpt":
        return TinyGPT(gpt_task(arch))
    if arch["kind"] == "convnet":
        return ConvNet(tuple(arch["hid"]))
    if arch["kind"] == "mlp":
        dims = [28 * 28, *arch["hidden"], 10]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(dims) - 2 else [])
        return nn.Sequential(*layers)
    raise ValueError(f"unknown architecture kind {arch['kind']!r}; expected 'convnet', 'mlp' or 'gpt'")


def example_inputs(arch: dict) -> tuple[torch.Tensor]:
    """One input batch for tracing the model (a batch of two)."""
    if arch["kind"] == "gpt":
        return (torch.zeros(2, arch["context"], dtype=torch.long),)
    return (torch.zeros(2, 1, 28, 28),)


KINDS = ("convnet", "mlp", "gpt")


def make_zoo(runs: int, *, steps: int = 10_000, save_every: int = 200, zoo_seed: int = 0,
             fm16_share: float = 0.0, kinds: Collection[str] = KINDS, schedule: str = "constant",
             warmup: float = 0.05, lr_scale: float = 1.0) -> list[RunSpec]:
    """``runs`` run specs, in a repeating pattern of 8: five FM-16/FM-32-family convnets (widths 8-64), one MLP
    and two byte-level GPTs (2-4 layers, 16-64 wide, 2-4 heads) on CPython's help texts; Adam or AdamW with
    the learning rate drawn log-uniformly within a factor 2 of the tuned one (6e-3 convnets, 2e-3 MLPs, 3e-3
    GPTs).

    ``fm16_share``: the fraction of convnet slots that train the FM-16 benchmark's own convnet (16, 32, 32),
    with the zoo's seeds and learning rates; half of the official meta-training windows come from that
    architecture. FM-16 is then in the training distribution, as it is for the official checkpoint; FM-32's
    (32, 64, 64) is not favoured (the varied draw gives it to about 1 convnet in 150). At 0 (the default) the
    zoo is the same as before the option existed.

    ``kinds``: keep only runs of these architecture kinds, ``runs`` of them: the first ones of the full zoo's
    stream (same seeds and learning rates); e.g. convnets alone, the family of FM-16 and FM-32.

    ``schedule``, ``warmup``: every run's learning rate follows this schedule (``bench.lr_schedule``), its drawn
    rate being the peak; a scheduled zoo has other run ids than the constant-rate one, so both can share a
    directory.

    ``lr_scale``: multiplies every drawn rate after the draw (the stream of draws is unchanged). A schedule's tuned
    peak is higher than the tuned constant rate (2x for the language task, 4x for FM-16), so a scheduled zoo that
    should look like users' tuned runs takes a scale of 2-4."""
    check_schedule(schedule, steps, warmup)
    if not lr_scale > 0:
        raise ValueError(f"lr_scale must be positive, got {lr_scale}")
    if not 0.0 <= fm16_share <= 1.0:
        raise ValueError(f"fm16_share must be in [0, 1], got {fm16_share}")
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}; got {sorted(kinds)}")
    if set(kinds) != set(KINDS):  # every 8 draws hold at least one run of each kind
        full = make_zoo(8 * runs, steps=steps, save_every=save_every, zoo_seed=zoo_seed, fm16_share=fm16_share,
                        schedule=schedule, warmup=warmup, lr_scale=lr_scale)
        return [s for s in full if s.arch["kind"] in kinds][:runs]
    rng = random.Random(zoo_seed)
    widths = [8, 12, 16, 24, 32, 48, 64]
    specs = []
    for i in range(runs):
        kind = {3: "mlp", 5: "gpt", 7: "gpt"}.get(i % 8, "convnet")
        dataset, batch_size = "fashion-mnist", 128
        if kind == "mlp":
            arch = {"kind": "mlp", "hidden": [rng.choice([16, 32, 64])] * rng.choice([1, 2])}
            lr = 2e-3
        elif kind == "gpt":
            width = rng.choice([16, 32, 48, 64])
            arch = {"kind": "gpt", "layers": rng.choice([2, 3, 4]), "width": width,
                    "heads": rng.choice([h for h in (2, 4) if width % h == 0]), "context": 64}
            lr, dataset, batch_size = 3e-3, "pydoc-topics", 32
        elif fm16_share and rng.random() < fm16_share:  # no draw at 0: the default zoo's stream is unchanged
            arch, lr = {"kind": "convnet", "hid": list(TASKS["fm16"].hid)}, TASKS["fm16"].lr
        else:
            h1 = rng.choice(widths)
            arch = {"kind": "convnet", "hid": [h1, rng.choice([w for w in widths if w >= h1]), rng.choice(widths)]}
            lr = 6e-3
        lr *= math.exp(rng.uniform(-0.7, 0.7)) * lr_scale
        optimizer = rng.choice(["adam", "adamw"])
        specs.append(RunSpec(arch=arch, optimizer=optimizer, lr=float(f"{lr:.3g}"),
                             weight_decay=0.0 if optimizer == "adam" else 1e-2, seed=1 + i + 1000 * zoo_seed,
                             steps=steps, save_every=save_every, batch_size=batch_size, dataset=dataset,
                             schedule=schedule, warmup=warmup))
    return specs
