import pytest
import torch

from conftest import fm16
from gpt_models import GPT
from nino_optim import build_neural_graph
from nino_optim.nowcast import NiNoConfig, NiNoGNN
from nino_optim.nowcast.stream import stream_edge_forward


def _random_gnn(hid=32, std=0.2, seed=0) -> NiNoGNN:
    torch.manual_seed(seed)
    gnn = NiNoGNN(NiNoConfig(hid=hid))
    for p in gnn.parameters():  # larger than the official init, so every term of the message matters
        torch.nn.init.normal_(p, std=std)
    return gnn


def _llama_gqa():
    """A Hugging Face Llama with grouped-query attention: parallel edges where query heads share neurons."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module", params=["fm16", "gpt", "llama-gqa"])
def graph_and_attr(request):
    makers = {"fm16": fm16, "gpt": lambda: GPT(vocab=200, d=16, layers=2, heads=2), "llama-gqa": _llama_gqa}
    graph = build_neural_graph(makers[request.param]())
    torch.manual_seed(1)
    attr = graph.to_edges(torch.randn(graph.num_params, 5))
    return graph, attr


@pytest.mark.parametrize("chunk", [37, 1000, 10**7])
@pytest.mark.parametrize("edge_state", ["auto", "float32", "recompute"])
def test_streamed_inference_equals_the_differentiable_forward(graph_and_attr, chunk, edge_state):
    graph, attr = graph_and_attr
    gnn = _random_gnn()
    reference = gnn(attr, graph.edge_index, graph.edge_type, graph.lpe, graph.pos_w)  # [E, F, K]
    for k in (1, 17, 40):
        out = stream_edge_forward(gnn, attr, graph, k, chunk, edge_state)
        assert out.shape == (graph.num_edges, graph.feat_size)
        assert (out - reference[:, :, k - 1]).abs().max() < 1e-5
    assert (reference[:, :, 0] - attr.view(graph.num_edges, graph.feat_size, 5)[:, :, -1]).abs().max() > 0.1


def test_recompute_gives_bitwise_the_stored_result(graph_and_attr):
    graph, attr = graph_and_attr
    gnn = _random_gnn()
    stored = stream_edge_forward(gnn, attr, graph, 5, 500, "float32")
    assert torch.equal(stream_edge_forward(gnn, attr, graph, 5, 500, "recompute"), stored)


def test_bfloat16_edge_state_is_close(graph_and_attr):
    graph, attr = graph_and_attr
    gnn = _random_gnn()
    exact = stream_edge_forward(gnn, attr, graph, 5, 500, "float32")
    rounded = stream_edge_forward(gnn, attr, graph, 5, 500, "bfloat16")
    change = (exact - attr.view(graph.num_edges, graph.feat_size, 5)[:, :, -1]).abs().mean()
    assert (rounded - exact).abs().mean() < 0.05 * change
    assert not torch.equal(rounded, exact)


def test_a_graph_without_blocks_gives_the_same_result():
    graph = build_neural_graph(fm16(), lpe=False)
    torch.manual_seed(2)
    attr = graph.to_edges(torch.randn(graph.num_params, 5))
    gnn = _random_gnn()
    with_blocks = stream_edge_forward(gnn, attr, graph, 3, 1000)
    graph.layout.blocks.clear()  # everything through the sparse path
    graph.layout.sparse = torch.arange(graph.num_edges)
    assert (stream_edge_forward(gnn, attr, graph, 3, 1000) - with_blocks).abs().max() < 1e-5


def test_unknown_edge_state_is_refused():
    with pytest.raises(ValueError, match="edge_state"):
        NiNoGNN(NiNoConfig(hid=8), edge_state="float16")


def test_small_and_target_major_blocks_give_the_same_result():
    from nino_optim.graph.blocks import find_blocks

    graph = build_neural_graph(GPT(vocab=50, d=16, layers=1, heads=2))
    torch.manual_seed(3)
    attr = graph.to_edges(torch.randn(graph.num_params, 5))
    gnn = _random_gnn()
    reference = gnn(attr, graph.edge_index, graph.edge_type, graph.lpe, graph.pos_w)[:, :, 9]
    graph._layout = find_blocks(graph.edge_index, min_edges=8)  # attention keys become target-major blocks
    assert any(b.target_major for b in graph.layout.blocks)
    assert (stream_edge_forward(gnn, attr, graph, 10, 100) - reference).abs().max() < 1e-5
