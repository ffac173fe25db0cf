"""The paper's Fashion-MNIST convnets, exactly as the official ``Net`` (reference section 5.1).

``Net(conv=True, pool=False, gap=True, stride=1, kernel_size=3, bias=True, activ=ReLU)`` with hid (h1, h2, h3)
is one ``nn.Sequential`` named ``fc`` (so parameter names are ``fc.0.weight`` ... ``fc.8.bias``, as in the
official code and its checkpoints' training data):

    fc.0 Conv2d(in, h1, 3, stride 2, padding 0)   fc.1 ReLU
    fc.2 Conv2d(h1, h2, 3, padding 'same')        fc.3 ReLU
    fc.4 Conv2d(h2, h3, 3, padding 'same')        fc.5 ReLU
    fc.6 AdaptiveAvgPool2d(1)  fc.7 Flatten  fc.8 Linear(h3, classes)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ConvNet(nn.Module):
    """The official vision ``Net``: three 3x3 convs, global average pooling, a linear classifier."""

    def __init__(self, hid: tuple[int, int, int] = (16, 32, 32), in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        h1, h2, h3 = hid
        self.fc = nn.Sequential(
            nn.Conv2d(in_channels, h1, kernel_size=3, stride=2, padding=0), nn.ReLU(),
            nn.Conv2d(h1, h2, kernel_size=3, stride=1, padding="same"), nn.ReLU(),
            nn.Conv2d(h2, h3, kernel_size=3, stride=1, padding="same"), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(h3, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, H, W] images -> [B, num_classes] logits."""
        return self.fc(x)


@dataclass(frozen=True)
class Task:
    """A Fashion-MNIST benchmark task: model, Adam learning rate and target test accuracy (in [0, 1]): the
    paper's for the convnets, what tuned Adam reaches late in its run for the ViT."""

    name: str
    hid: tuple[int, ...]  # the convnet's widths (empty for the ViT: ``bench/vit.py``'s defaults)
    lr: float
    target: float
    num_params: int
    arch: str = "convnet"  # or "vit"


TASKS = {
    "fm16": Task("FM-16", (16, 32, 32), 6e-3, 0.895, 14_378),
    "fm32": Task("FM-32", (32, 64, 64), 6e-3, 0.905, 56_394),
    "vit": Task("ViT-FM", (), 1e-3, 0.870, 19_658, arch="vit"),
}


def build_model(task: str | Task = "fm16", seed: int | None = None) -> nn.Module:
    """The task's model, initialised from ``torch.manual_seed(seed)`` when a seed is given."""
    task = TASKS[task.lower().replace("-", "")] if isinstance(task, str) else task
    if seed is not None:
        torch.manual_seed(seed)
    if task.arch == "vit":
        from .vit import ViT

        return ViT()
    return ConvNet(task.hid)
