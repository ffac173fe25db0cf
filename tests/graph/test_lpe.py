import pytest
import numpy as np
import torch
from torch import nn

from conftest import fm16
from nino_optim import build_neural_graph
from nino_optim.graph.lpe import laplacian_positional_encoding, normalized_laplacian


def test_lpe_is_deterministic_and_cached():
    graph = build_neural_graph(fm16())
    first = graph.lpe
    assert first.shape == (95, 8) and first.dtype == torch.float32
    assert graph.lpe is first  # cached with the graph
    assert torch.equal(build_neural_graph(fm16()).lpe, first)  # same graph, same encoding


def test_lpe_columns_are_laplacian_eigenvectors():
    graph = build_neural_graph(fm16())
    lap = normalized_laplacian(graph.edge_index, graph.num_nodes).toarray()
    vals = np.linalg.eigvalsh(lap)
    vecs = graph.lpe.double().numpy()
    for j in range(8):
        v = vecs[:, j]
        rayleigh = v @ lap @ v / (v @ v)
        assert abs(rayleigh - vals[j + 1]) < 1e-5  # eigenvectors 2..9: the trivial first one is skipped
        assert np.abs(lap @ v - rayleigh * v).max() < 1e-5
        assert v[np.abs(v).argmax()] > 0  # fixed sign


def test_sparse_path_agrees_with_dense():
    # FM-32 has 175 nodes: the ARPACK path; compare its eigenvalues with dense eigh
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Conv2d(64, 64, 3), nn.Flatten(),
                          nn.Linear(64, 10))
    graph = build_neural_graph(model, lpe=True)
    lap = normalized_laplacian(graph.edge_index, graph.num_nodes).toarray()
    vals = np.linalg.eigvalsh(lap)[1:9]
    v = graph.lpe.double().numpy()
    rayleigh = np.einsum("ij,ik,kj->j", v, lap, v) / (v * v).sum(0)
    assert np.allclose(rayleigh, vals, atol=1e-5)
    assert torch.equal(laplacian_positional_encoding(graph.edge_index, graph.num_nodes, layout=graph.layout),
                       graph.lpe)


def test_small_graph_pads_missing_eigenvectors():
    edge_index = torch.tensor([[0, 1], [1, 2]])
    pe = laplacian_positional_encoding(edge_index, 3)
    assert pe.shape == (3, 8) and torch.all(pe[:, 2:] == 0) and pe[:, :2].abs().sum() > 0


def test_lpe_false_gives_zeros():
    assert torch.all(build_neural_graph(fm16(), lpe=False).lpe == 0)


def _assert_block_operator_matches(graph):
    from nino_optim.graph.lpe import block_laplacian

    op = block_laplacian(graph.edge_index, graph.num_nodes, graph.layout)
    assert op is not None
    lap = normalized_laplacian(graph.edge_index, graph.num_nodes)
    x = np.random.default_rng(0).standard_normal((graph.num_nodes, 3))
    for j in range(3):
        assert np.abs(op.matvec(x[:, j]) - lap @ x[:, j]).max() < 1e-12


def test_blockwise_laplacian_equals_the_explicit_one():
    from gpt_models import GPT

    # the GPT graph has k edges repeating q's node pairs: the unweighted adjacency must count them once
    for model in (GPT(vocab=300, d=16, layers=2, heads=2), nn.Sequential(nn.Linear(30, 40), nn.ReLU(),
                                                                           nn.Linear(40, 50))):
        graph = build_neural_graph(model)
        _assert_block_operator_matches(graph)
        # eigenvectors of repeated eigenvalues are not unique, so check what they are rather than their values
        lap = normalized_laplacian(graph.edge_index, graph.num_nodes).toarray()
        v = graph.lpe.double().numpy()
        rayleigh = np.einsum("ij,ik,kj->j", v, lap, v) / (v * v).sum(0)
        assert np.allclose(rayleigh, np.linalg.eigvalsh(lap)[1:9], atol=1e-5)
        assert np.abs(lap @ v - v * rayleigh).max() < 1e-5


def _grid(sources: range, targets: range) -> torch.Tensor:
    return torch.stack([torch.tensor(sources).repeat_interleave(len(targets)),
                        torch.tensor(targets).repeat(len(sources))])


def test_repeated_blocks_count_once_and_partial_overlaps_fall_back():
    from nino_optim.graph.blocks import find_blocks
    from nino_optim.graph.lpe import block_laplacian

    grid = _grid(range(20), range(100, 110))
    reversed_target_major = _grid(range(100, 110), range(20)).flip(0)  # the same pairs, reversed
    repeated = torch.cat([grid, reversed_target_major], dim=1)
    layout = find_blocks(repeated, min_edges=100)
    assert len(layout.blocks) == 2 and layout.blocks[1].target_major
    op = block_laplacian(repeated, 110, layout)
    lap = normalized_laplacian(repeated, 110)
    x = np.random.default_rng(1).standard_normal(110)
    assert np.abs(op.matvec(x) - lap @ x).max() < 1e-12

    partial = torch.cat([grid, _grid(range(10, 30), range(105, 115))], dim=1)
    layout = find_blocks(partial, min_edges=100)
    assert len(layout.blocks) == 2
    assert block_laplacian(partial, 115, layout) is None
    assert torch.equal(laplacian_positional_encoding(partial, 115, layout=layout),
                       laplacian_positional_encoding(partial, 115))


def test_blockwise_laplacian_with_grouped_query_attention():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8)
    torch.manual_seed(0)
    # query heads of a group share neurons: their weights are parallel edges, counted once like any repeat
    _assert_block_operator_matches(build_neural_graph(transformers.LlamaForCausalLM(cfg)))
