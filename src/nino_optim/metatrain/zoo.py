"""The zoo of small training runs whose trajectories NiNo learns from.

Each ``RunSpec`` fully describes one run (architecture, optimizer, learning rate, seed, length), so that the
model can be rebuilt from the trajectory's metadata to get its neural graph. Runs are drawn from a seeded
generator: the same ``--runs`` and ``--zoo-seed`` always give the same zoo.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from torch import nn

from ..bench.tasks import ConvNet


@dataclass(frozen=True)
class RunSpec:
    """One training run of the zoo."""

    arch: dict  # {"kind": "convnet", "hid": [h1, h2, h3]} or {"kind": "mlp", "hidden": [...]}
    optimizer: str  # "adam" or "adamw"
    lr: float
    weight_decay: float
    seed: int
    steps: int
    save_every: int
    batch_size: int = 128
    dataset: str = "fashion-mnist"
    extra: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        kind = self.arch["kind"]
        dims = "x".join(str(d) for d in self.arch.get("hid") or self.arch.get("hidden"))
        return f"{self.dataset}-{kind}{dims}-{self.optimizer}-lr{self.lr:.2e}-wd{self.weight_decay:g}-s{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


def build_model(arch: dict) -> nn.Module:
    """The model an architecture entry describes (Fashion-MNIST input: 1x28x28, 10 classes)."""
    if arch["kind"] == "convnet":
        return ConvNet(tuple(arch["hid"]))
    if arch["kind"] == "mlp":
        dims = [28 * 28, *arch["hidden"], 10]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(dims) - 2 else [])
        return nn.Sequential(*layers)
    raise ValueError(f"unknown architecture kind {arch['kind']!r}; expected 'convnet' or 'mlp'")


def make_zoo(runs: int, *, steps: int = 10_000, save_every: int = 200, zoo_seed: int = 0) -> list[RunSpec]:
    """``runs`` run specs: FM-16-family convnets (3 in 4) and MLPs, Adam/AdamW, lr around the tuned 6e-3."""
    rng = random.Random(zoo_seed)
    widths = [8, 12, 16, 24, 32]
    specs = []
    for i in range(runs):
        if i % 4 == 3:
            arch = {"kind": "mlp", "hidden": [rng.choice([16, 32, 64])] * rng.choice([1, 2])}
            lr = 2e-3 * math.exp(rng.uniform(-0.7, 0.7))
        else:
            h1 = rng.choice(widths)
            arch = {"kind": "convnet", "hid": [h1, rng.choice([w for w in widths if w >= h1]), rng.choice(widths)]}
            lr = 6e-3 * math.exp(rng.uniform(-0.7, 0.7))
        optimizer = rng.choice(["adam", "adamw"])
        specs.append(RunSpec(arch=arch, optimizer=optimizer, lr=float(f"{lr:.3g}"),
                             weight_decay=0.0 if optimizer == "adam" else 1e-2, seed=1 + i + 1000 * zoo_seed,
                             steps=steps, save_every=save_every))
    return specs
