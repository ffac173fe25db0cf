import pytest
import torch

from conftest import TwoLayer, fm16, golden_case, official_checkpoint
from nino_optim import build_neural_graph, load_nowcaster
from nino_optim.nowcast import NiNoConfig, NiNoGNN
from nino_optim.nowcast.scaling import LayerwiseScaler

CASES = [("case1_nino_linear", TwoLayer), ("case2_nino_fm16", fm16)]


@pytest.fixture(scope="module")
def official():
    return load_nowcaster(official_checkpoint("nino_no_posw.pt"))


@pytest.mark.parametrize("case, model", CASES)
@pytest.mark.parametrize("k", [1, 10, 40])
def test_reproduces_official_predictions(official, case, model, k):
    golden = golden_case(case)
    graph = build_neural_graph(model(), lpe=False)
    pred = official.predict(graph, golden["states"], k)
    assert torch.allclose(pred, golden[f"pred_k{k}"], atol=1e-5, rtol=1e-5)
    assert (pred - golden[f"pred_k{k}"]).abs().max() < 1e-4


@pytest.mark.parametrize("case, model", CASES)
def test_edge_outputs_match_including_padding(official, case, model):
    golden = golden_case(case)
    graph = build_neural_graph(model(), lpe=False)
    out = official.edge_forward(golden["edge_attr_in"], graph, 10)
    assert torch.allclose(out, golden["edge_out_scaled_k10"], atol=1e-5)


def test_inference_never_changes_the_model(official):
    before = {k: v.clone() for k, v in official.state_dict().items()}
    golden = golden_case("case1_nino_linear")  # F = 1: the official code truncates its input layer here
    official.predict(build_neural_graph(TwoLayer(), lpe=False), golden["states"], 5)
    after = official.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    fm = golden_case("case2_nino_fm16")  # and an F = 9 graph still works afterwards
    pred = official.predict(build_neural_graph(fm16(), lpe=False), fm["states"], 10)
    assert torch.allclose(pred, fm["pred_k10"], atol=1e-5)


def test_chunking_does_not_change_the_result(official):
    golden = golden_case("case2_nino_fm16")
    graph = build_neural_graph(fm16(), lpe=False)
    whole = official.predict(graph, golden["states"], 40)
    previous = official.chunk_size  # the module-scoped model is shared: put back exactly what was there
    official.chunk_size = 100
    try:
        chunked = official.predict(graph, golden["states"], 40)
    finally:
        official.chunk_size = previous
    assert official.chunk_size == previous
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_random_model_is_equivariant_to_hidden_neuron_permutation():
    torch.manual_seed(0)
    model = TwoLayer()
    graph = build_neural_graph(model, lpe=False)
    nowcaster = NiNoGNN(NiNoConfig(hid=16))
    for p in nowcaster.parameters():  # larger weights than the official init so the test has signal
        torch.nn.init.normal_(p, std=0.3)
    states = torch.randn(graph.num_params, 5)
    perm = torch.tensor([2, 0, 1])  # permute the 3 hidden neurons: fc1 rows, fc1 bias, fc2 columns
    idx = torch.arange(graph.num_params)
    w1, b1, w2, b2 = idx[:6].view(3, 2), idx[6:9], idx[9:15].view(2, 3), idx[15:]
    order = torch.cat([w1[perm].reshape(-1), b1[perm], w2[:, perm].reshape(-1), b2])
    pred = nowcaster.predict(graph, states, 3)
    pred_perm = nowcaster.predict(graph, states[order], 3)
    assert torch.allclose(pred_perm, pred[order], atol=1e-5)
    assert not torch.allclose(pred, states[:, -1], atol=1e-3)  # it predicts something


class _Tempered(torch.nn.Module):
    """A linear layer with a learned scalar temperature: a parameter no neuron carries."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.temperature = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.fc(x) / self.temperature


def test_unplaced_parameters_keep_their_newest_value():
    with pytest.warns(UserWarning, match="temperature"):
        graph = build_neural_graph(_Tempered(), lpe=False)
    assert [p.name for p in graph.params if not p.placed] == ["temperature"]  # flat index 0: its own first
    states = torch.randn(graph.num_params, 5)
    pred = NiNoGNN().predict(graph, states, 1)
    assert torch.equal(pred[:1], states[:1, -1]) and not torch.equal(pred[1:], states[1:, -1])


def test_rejects_bad_horizon_and_context():
    graph = build_neural_graph(TwoLayer(), lpe=False)
    model = NiNoGNN()
    with pytest.raises(ValueError, match="horizon"):
        model.predict(graph, torch.randn(graph.num_params, 5), 41)
    with pytest.raises(ValueError, match="past states"):
        model.predict(graph, torch.randn(graph.num_params, 4), 1)


def test_scaling_statistics_match_official():
    golden = golden_case("case2_nino_fm16")
    graph = build_neural_graph(fm16(), lpe=False)
    scaler = LayerwiseScaler(golden["states"], graph.params)
    assert torch.allclose(scaler.mean, golden["scale_mean"], atol=1e-7)
    assert torch.allclose(scaler.std, golden["scale_std"], rtol=1e-6)
    pred_scaled = golden["pred_scaled_k10"]
    assert torch.allclose(scaler.unscale(pred_scaled), golden["pred_k10"], atol=1e-6)
