import pytest
import torch
from torch import nn

from conftest import TwoLayer, fm16, golden_case, golden_index
from nino_optim import build_neural_graph
from nino_optim.graph.chain import build_chain_graph


@pytest.mark.parametrize("case, model", [("case1_nino_linear", TwoLayer), ("case2_nino_fm16", fm16)])
def test_graph_matches_official(case, model):
    golden = golden_case(case)
    graph = build_neural_graph(model(), lpe=False)
    assert torch.equal(graph.edge_index, golden["edge_index"])
    assert torch.equal(graph.edge_type, golden["edge_type"])
    assert torch.equal(graph.pos_w, golden["pos_w"])
    assert torch.equal(graph.param_edge, golden["param_edge"].long())
    assert torch.equal(graph.param_slot, golden["param_slot"].long())


def test_fm16_layout_and_sizes():
    graph = build_neural_graph(fm16(), lpe=False)
    assert (graph.num_nodes, graph.num_edges, graph.num_params, graph.feat_size) == (95, 2057, 14378, 9)
    assert torch.bincount(graph.edge_type, minlength=14).tolist() == [0, 320, 90, 1552] + [0] * 9 + [95]
    # conv1 edge 0 joins the input channel (node 0) to the first conv1 channel (node 2); node 1 is its bias node
    assert graph.edge_index[:, 0].tolist() == [0, 2]
    assert graph.edge_index[:, 1962].tolist() == [0, 0]  # self-loops come last


def test_edge_features_match_official_input():
    golden = golden_case("case2_nino_fm16")
    from nino_optim.nowcast.scaling import LayerwiseScaler

    graph = build_neural_graph(fm16(), lpe=False)
    scaled = LayerwiseScaler(golden["states"], graph.params).scale(golden["states"])
    assert torch.allclose(graph.to_edges(scaled), golden["edge_attr_in"], atol=1e-6)


def test_fm32_sizes_match_reference():
    model = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2), nn.ReLU(), nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(),
                          nn.Conv2d(64, 64, 3, padding="same"), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 10))
    graph = build_neural_graph(model, lpe=False)
    assert (graph.num_params, graph.num_nodes, graph.num_edges) == (56394, 175, 7161)


@pytest.mark.parametrize("model", [TwoLayer, fm16])
def test_to_edges_to_params_are_inverse(model):
    graph = build_neural_graph(model(), lpe=False)
    states = torch.randn(graph.num_params, 5)
    edges = graph.to_edges(states).view(graph.num_edges, graph.feat_size, 5)
    for t in range(5):
        assert torch.equal(graph.to_params(edges[:, :, t]), states[:, t])


def test_aux_values_and_padding():
    graph = build_neural_graph(TwoLayer(), lpe=False)
    edges = graph.to_edges(torch.zeros(graph.num_params, 3)).view(graph.num_edges, 1, 3)
    loops = graph.edge_type == 13
    assert torch.all(edges[loops, 0] == 2) and torch.all(edges[~loops] == 0)


def test_bias_and_norm_nodes_belong_to_their_layer():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    graph = build_neural_graph(model, lpe=False)
    # inputs 0-3; extra nodes 4 (bias), 5 (bn weight), 6 (bn bias); outputs 7-12; then layer 2
    types = [p.edge_type for p in graph.params]
    assert types == [1, 2, 4, 2, 1, 2]
    assert graph.num_nodes == 4 + 3 + 6 + 1 + 2
    bn_weight_edges = graph.param_edge[graph.params[2].offset: graph.params[2].offset + 6]
    assert graph.edge_index[0, bn_weight_edges].unique().tolist() == [5]
    assert graph.edge_index[1, bn_weight_edges].tolist() == list(range(7, 13))
    assert graph.fallback == {}


def test_mismatched_layers_get_own_inputs_and_a_warning():
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(7, 3))  # not a chain: the official code is silently wrong
    with pytest.warns(UserWarning, match="expects 7 inputs"):
        graph = build_neural_graph(model, lpe=False)
    second = graph.param_edge[graph.params[2].offset:graph.params[2].offset + 21]
    assert graph.edge_index[0, second].min() >= 4 + 1 + 5  # fresh input nodes after layer 1


def test_unplaceable_parameters_are_reported_not_crashing():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0))
            self.conv = nn.Conv2d(3, 4, 5)
            self.fc = nn.Linear(4, 2)

    with pytest.warns(UserWarning, match="scale left out"):
        graph = build_neural_graph(Odd(), lpe=False)
    assert set(graph.fallback) == {"scale", "conv.weight", "conv.bias"}
    assert not graph.placed_mask[:1 + 300 + 4].any() and graph.placed_mask[305:].all()
    states = torch.randn(graph.num_params, 5)
    edges = graph.to_edges(states).view(graph.num_edges, graph.feat_size, 5)
    back = graph.to_params(edges[:, :, -1], default=states[:, -1])
    assert torch.equal(back, states[:, -1])


def test_chain_from_names_and_shapes():
    graph, notes = build_chain_graph([("a.weight", (3, 2)), ("a.bias", (3,))])
    assert notes == [] and graph.num_nodes == 2 + 1 + 3


def test_rejects_non_modules_and_empty_models():
    with pytest.raises(TypeError):
        build_neural_graph([torch.zeros(2)])
    with pytest.raises(ValueError, match="no parameters"):
        build_neural_graph(nn.ReLU())


def test_summary_lists_counts():
    text = build_neural_graph(fm16(), lpe=False).summary()
    assert "95 nodes" in text and "2057 edges" in text and "14378 of 14378" in text


def test_golden_index_agrees_on_parameter_order():
    index = golden_index()["cases"]["case2_nino_fm16"]
    graph = build_neural_graph(fm16(), lpe=False)
    assert [p["offset"] for p in index["parameters_in_order"]] == [p.offset for p in graph.params]
