"""Tracing with example inputs (torch.export): the same graphs as symbolic tracing, and models only it can follow."""
import warnings

import pytest
import torch
from torch import nn

from conftest import TwoLayer, fm16
from gpt_models import GPT
from nino_optim import build_neural_graph
from nino_optim.graph.builder import build_traced_graph, graph_parameters
from nino_optim.graph import export_trace
from nino_optim.graph.aten import ExportPropagator
from nino_optim.graph.export_trace import export_graph
from test_hf import tiny_gpt2, tiny_llama
from test_trace import ResNet, TwoBranch

MODELS = {
    "mlp": (TwoLayer, lambda: torch.randn(2, 2)),
    "fm16": (fm16, lambda: torch.randn(2, 1, 28, 28)),
    "resnet": (ResNet, lambda: torch.randn(2, 3, 8, 8)),
    "two_branch": (TwoBranch, lambda: torch.randn(2, 3)),
    "gpt_fused_sdpa": (GPT, lambda: torch.randint(0, 11, (1, 4))),
    "gpt_separate_softmax": (lambda: GPT(fused=False, sdpa=False), lambda: torch.randint(0, 11, (1, 4))),
}


@pytest.mark.parametrize("name", MODELS)
def test_export_route_gives_the_symbolic_graph(name):
    make, inputs = MODELS[name]
    torch.manual_seed(0)
    model = make()
    symbolic, notes = build_traced_graph(model, graph_parameters(model), lpe=False)
    assert notes == []
    gm, placeholders = export_graph(model, (inputs(),), {})
    prop = ExportPropagator(gm, model, placeholders, graph_parameters(model))
    prop.run()
    assert prop.notes == [] and prop.fallback == {}
    exported = prop.graph.assembly.finish(fallback=prop.fallback, lpe=False)
    for attr in ("edge_index", "edge_type", "param_edge", "param_slot", "pos_w"):
        assert torch.equal(getattr(exported, attr), getattr(symbolic, attr)), attr
    assert [p.edge_type for p in exported.params] == [p.edge_type for p in symbolic.params]


TRACED = {
    "gpt_fused_sdpa": (GPT, lambda: ((torch.randint(0, 11, (1, 4)),), {})),
    "hf_gpt2": (tiny_gpt2, lambda: ((), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})),
    "hf_llama_gqa": (lambda: tiny_llama(kv_heads=1), lambda: ((), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})),
}


def _graph_through(tracer: str, model, args, kwargs, monkeypatch):
    """The neural graph from one of export_graph's tracers: make_fx on real or fake tensors, or torch.export."""
    original, traced_by = export_trace._make_fx_graph, []

    def only_the_chosen(wrapper, a, k, real):
        if tracer == "export" or real != (tracer == "real"):
            raise RuntimeError("not the tracer under test")
        out = original(wrapper, a, k, real)
        traced_by.append(tracer)
        return out

    monkeypatch.setattr(export_trace, "_make_fx_graph", only_the_chosen)
    gm, placeholders = export_graph(model, args, kwargs)
    monkeypatch.undo()
    assert traced_by == ([] if tracer == "export" else [tracer])  # the chosen tracer worked, no fallback hid it
    prop = ExportPropagator(gm, model, placeholders, graph_parameters(model))
    prop.run()
    assert prop.notes == [] and prop.fallback == {}
    return prop.graph.assembly.finish(fallback=prop.fallback, lpe=False)


@pytest.mark.parametrize("name", TRACED)
def test_the_three_tracers_give_one_graph(name, monkeypatch):
    make, inputs = TRACED[name]
    torch.manual_seed(0)
    model = make()
    graphs = {tracer: _graph_through(tracer, model, *inputs(), monkeypatch) for tracer in ("real", "fake", "export")}
    for tracer in ("fake", "export"):
        for attr in ("edge_index", "edge_type", "param_edge", "param_slot", "pos_w"):
            assert torch.equal(getattr(graphs[tracer], attr), getattr(graphs["real"], attr)), (tracer, attr)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # the real trace left no trace


class ShapeDependent(nn.Module):
    """Python control flow on a shape: symbolic tracing fails, tracing with example inputs does not."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(2, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if x.shape[0] > 1:
            h = h * 2
        return self.fc2(h)


def test_example_inputs_trace_what_symbolic_tracing_cannot():
    with pytest.warns(UserWarning, match="no example inputs"):
        build_neural_graph(ShapeDependent(), lpe=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = build_neural_graph(ShapeDependent(), lpe=False, example_inputs=(torch.randn(4, 2),))
    reference = build_neural_graph(TwoLayer(), lpe=False)
    assert torch.equal(graph.edge_index, reference.edge_index) and torch.equal(graph.param_edge, reference.param_edge)
    for form in ({"x": torch.randn(4, 2)}, ((torch.randn(4, 2),), {}), torch.randn(4, 2)):
        assert torch.equal(build_neural_graph(ShapeDependent(), lpe=False, example_inputs=form).edge_index,
                           reference.edge_index)


def test_export_failure_falls_back_to_the_chain_rule():
    with pytest.warns(UserWarning, match="nor torch.export"):
        graph = build_neural_graph(ShapeDependent(), lpe=False, example_inputs=(torch.randn(4, 5),))  # bad input
    assert graph.num_nodes == 9
