"""The benchmark's learning-rate schedules: warmup + cosine values, and a scheduler stepped by every step()."""
import math

import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam
from nino_optim.bench.lr_schedule import attach_schedule, warmup_cosine


def test_warmup_cosine_values():
    f = warmup_cosine(1000, 0.05)  # 50 warmup steps
    assert [f(s) for s in (0, 25, 50)] == pytest.approx([0.0, 0.5, 1.0])
    assert f(525) == pytest.approx(0.5)  # half way through the decay
    assert f(1000) == pytest.approx(0.0, abs=1e-12)
    assert f(200) == pytest.approx(0.5 * (1 + math.cos(math.pi * 150 / 950)))
    assert warmup_cosine(100, 0.0)(0) == 1.0  # no warmup: the decay starts at the peak


@pytest.mark.parametrize("warmup", [-0.1, 1.0])
def test_warmup_cosine_rejects_a_warmup_outside_0_1(warmup):
    with pytest.raises(ValueError, match="warmup"):
        warmup_cosine(100, warmup)


@pytest.mark.parametrize("kind", ["adam", "nino"])
def test_attached_schedule_sets_the_rate_of_every_step_nowcasts_included(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1) if kind == "adam" else \
        NiNoAdam(model.parameters(), model=model, lr=0.1, nowcaster="linefit+", period=10, max_steps=40)
    assert attach_schedule(opt, "constant", 40, 0.05) is None
    attach_schedule(opt, "cosine", 40, 0.25)
    f = warmup_cosine(40, 0.25)
    x = torch.randn(8, 3)
    seen = []
    for _ in range(40):
        seen.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        if getattr(opt, "need_grads", True):
            model(x).square().mean().backward()
        opt.step()
    assert seen == pytest.approx([0.1 * f(s) for s in range(40)])
    if kind == "nino":
        assert opt.steps_done == 40


def test_unknown_schedule_is_refused():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        attach_schedule(opt, "linear", 10, 0.0)
