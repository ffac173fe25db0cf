import pytest
import torch

from conftest import TwoLayer, fm16, golden_case, official_checkpoint
from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.nowcast import WNN


@pytest.fixture(scope="module")
def official():
    return load_nowcaster(official_checkpoint("nino_mlp.pt"))


@pytest.mark.parametrize("case, model", [("case4a_wnn_linear", TwoLayer), ("case4b_wnn_fm16", fm16)])
@pytest.mark.parametrize("k", [1, 10, 40])
def test_reproduces_official_predictions(official, case, model, k):
    golden = golden_case(case)
    pred = official.predict(build_neural_graph(model(), lpe=False), golden["states"], k)
    assert torch.allclose(pred, golden[f"pred_k{k}"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("edge_type, expected", [(1, [1.20110, 1.67525, 2.04529]), (2, [1.22814, 1.79294, 2.27951]),
                                                 (5, [1.24763, 1.82980, 2.25332])])
def test_single_edge_reference_values(official, edge_type, expected):
    history = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0]])
    got = [official.forward_scaled(history, torch.tensor([edge_type]), k).item() for k in (1, 5, 40)]
    assert got == pytest.approx(expected, abs=1e-5)


def test_is_a_wnn(official):
    assert isinstance(official, WNN) and official.config.hid == 128
    assert sum(p.numel() for p in official.parameters()) == 57384


def test_small_official_variant_loads():
    model = load_nowcaster(official_checkpoint("nino_mlp_h32.pt"))
    assert sum(p.numel() for p in model.parameters()) == 5160


def test_each_scalar_gets_its_own_edge_type():
    """A fused q/k/v weight is one tensor with three edge types: WNN+ must see each scalar's own type."""
    torch.manual_seed(0)
    model = WNN()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    graph = build_neural_graph(TwoLayer(), lpe=False)
    states = torch.randn(graph.num_params, 5)
    before = model.predict(graph, states, 3)
    first = graph.param_edge[0]
    graph.edge_type = graph.edge_type.clone()
    graph.edge_type[first] = 7  # only the edge of the first scalar changes type
    after = model.predict(graph, states, 3)
    assert after[0] != before[0] and torch.equal(after[1:], before[1:])
