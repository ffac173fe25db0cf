"""NiNoAdam runs unchanged on the traced families: graph traced completely, and a few steps across a nowcast that
writes the official checkpoint's prediction, with finite losses."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from conftest import official_checkpoint
from gpt_models import GPT
from nino_optim.bench.vit import ViT
from nino_optim import NiNoAdam
from recording import train_across_nowcast
from test_trace import ResNet, TwoBranch

FAMILIES = {
    "resnet": (ResNet, lambda: torch.randn(8, 3, 8, 8), lambda out: out.pow(2).mean()),
    "two_branch": (TwoBranch, lambda: torch.randn(8, 3), lambda out: out.pow(2).mean()),
    "gpt": (GPT, lambda: torch.randint(0, 11, (4, 5)),
            lambda out: F.cross_entropy(out.reshape(-1, out.shape[-1]), torch.zeros(20, dtype=torch.long))),
    "vit": (lambda: ViT(depth=1), lambda: torch.randn(4, 1, 28, 28),
            lambda out: F.cross_entropy(out, torch.arange(4))),
}


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("family", FAMILIES)
def test_nino_adam_runs_on_family(family, compiled):
    make, inputs, loss_of = FAMILIES[family]
    torch.manual_seed(0)
    model = make()
    x = inputs()
    wrapped = torch.compile(model, backend="eager") if compiled else model
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # traced completely: no fallback warning
        opt = NiNoAdam(wrapped.parameters(), model=wrapped, lr=1e-3, period=10, context=5, max_steps=30,
                       nowcaster=official_checkpoint("nino_no_posw.pt"))
    assert opt.graph.fallback == {} and bool(opt.graph.placed_mask.all())
    losses = train_across_nowcast(opt, model, lambda: loss_of(wrapped(x)), steps=12, nowcast_call=10)
    assert all(torch.isfinite(torch.tensor(losses)))
