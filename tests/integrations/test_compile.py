"""``torch.compile``: ``model=`` may be a compiled module; the graph is built from the original module and the
nowcast's in-place writes are what the compiled module computes with afterwards.

Uses the ``aot_eager`` backend (Dynamo + AOTAutograd, parameters as graph inputs, ~5 s); the default inductor
backend behaves the same but compiling C++ takes ~45 s on a 2-core CPU."""

import pytest
import torch
from torch import nn

from nino_optim import NiNoAdam, build_neural_graph

PERIOD, CONTEXT = 10, 5


def _compile_or_skip(model):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile not available in this PyTorch")
    compiled = torch.compile(model, backend="aot_eager")  # dynamo + AOTAutograd, no C++ toolchain: fast
    try:
        compiled(torch.zeros(2, 4))
    except Exception as err:  # e.g. dynamo unsupported on this Python/platform
        pytest.skip(f"torch.compile does not work on this platform: {type(err).__name__}: {err}")
    return compiled


class Shift:
    def predict(self, graph, states, k):
        return states[:, -1].float() + 0.5


def test_compiled_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    compiled = _compile_or_skip(model)
    opt = NiNoAdam(model.parameters(), model=compiled, nowcaster=Shift(), period=PERIOD, context=CONTEXT,
                   max_steps=100)
    # the graph is the original module's: same size, same parameter names (no "_orig_mod." prefix)
    ref = build_neural_graph(model)
    assert opt.graph.num_params == ref.num_params == sum(p.numel() for p in model.parameters())
    assert [p.name for p in opt.graph.params] == [p.name for p in ref.params]
    assert all(a is b for a, b in zip(opt._flat_params, model.parameters()))

    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for step in range(1, PERIOD + 1):
        opt.zero_grad()
        loss = ((compiled(x) - y) ** 2).mean()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
    assert opt.steps_done == PERIOD
    for p, b in zip(model.parameters(), before):  # step 10 was the nowcast
        assert torch.equal(p, b + 0.5)
    # the compiled module sees the nowcast's writes (parameters changed in place, no recompile needed)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-6)
