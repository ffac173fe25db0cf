import pytest
import torch

from conftest import fm16
from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.bench.lm import LMTask, TinyGPT
from nino_optim.graph.subgraph import group_by_block, subgraph
from nino_optim.nowcast import Linefit, SubgraphNowcaster


@pytest.fixture(scope="module")
def gpt_graph():
    torch.manual_seed(0)
    model = TinyGPT(LMTask(width=16, layers=3, heads=2, context=8))
    return build_neural_graph(model, example_inputs=(torch.zeros(1, 8, dtype=torch.long),))


def _states(graph, seed=0):
    gen = torch.Generator().manual_seed(seed)
    walk = 0.01 * torch.randn(graph.num_params, 5, generator=gen).cumsum(1)
    return torch.randn(graph.num_params, 1, generator=gen) + walk


def test_groups_cover_every_parameter_once(gpt_graph):
    groups = group_by_block(gpt_graph)
    assert list(groups) == ["block 0", "block 1", "block 2", "other"]
    flat = sorted(i for g in groups.values() for i in g)
    assert flat == list(range(len(gpt_graph.params)))
    rows = torch.cat([subgraph(gpt_graph, g)[1] for g in groups.values()])
    assert torch.equal(rows.sort().values, torch.arange(gpt_graph.num_params))


def test_subgraph_keeps_each_parameter_on_an_equivalent_edge(gpt_graph):
    for tensors in group_by_block(gpt_graph).values():
        sub, rows = subgraph(gpt_graph, tensors)
        assert sub.num_edges < gpt_graph.num_edges and sub.num_nodes < gpt_graph.num_nodes
        newest = _states(gpt_graph)[rows, -1:]  # [P_sub, 1]
        placed = sub.param_edge >= 0
        assert torch.equal(sub.to_params(sub.to_edges(newest))[placed], newest[placed, 0])  # exact inverses
        assert torch.equal(placed, gpt_graph.param_edge[rows] >= 0)
        # the same edge type and slot as in the full graph, and edges that are valid node pairs
        full_edges = gpt_graph.param_edge[rows][placed]
        assert torch.equal(sub.edge_type[sub.param_edge[placed]], gpt_graph.edge_type[full_edges])
        assert torch.equal(sub.param_slot, gpt_graph.param_slot[rows])
        assert int(sub.edge_index.max()) < sub.num_nodes and int(sub.edge_index.min()) >= 0
        assert sub.lpe.shape == (sub.num_nodes, 8)


def test_per_parameter_nowcasters_are_unchanged(gpt_graph):
    states = _states(gpt_graph)
    full = Linefit(weighted=True).predict(gpt_graph, states, 7)
    assert torch.equal(SubgraphNowcaster(Linefit(weighted=True)).predict(gpt_graph, states, 7), full)


def test_one_group_gives_the_full_graph_prediction():
    graph = build_neural_graph(fm16())  # no transformer blocks: one group, the whole graph
    assert list(group_by_block(graph)) == ["other"]
    nino = load_nowcaster("default")
    states = _states(graph)
    assert torch.allclose(SubgraphNowcaster(nino).predict(graph, states, 10), nino.predict(graph, states, 10),
                          atol=1e-6)


def test_blocks_change_the_gnn_prediction_a_little(gpt_graph):
    nino = load_nowcaster("default")
    states = _states(gpt_graph)
    full, parts = nino.predict(gpt_graph, states, 10), SubgraphNowcaster(nino).predict(gpt_graph, states, 10)
    assert torch.isfinite(parts).all() and not torch.equal(full, parts)
    step = (full - states[:, -1]).abs().mean()
    assert (parts - full).abs().mean() < step  # messages across blocks matter, but less than the jump itself
