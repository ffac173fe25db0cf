import torch

from conftest import fm16
from gpt_models import GPT
from nino_optim import build_neural_graph
from nino_optim.graph.blocks import Block, find_blocks


def _edges_of(block: Block) -> torch.Tensor:
    """[2, n] the (src, dst) pairs a block stands for, in edge order."""
    if block.target_major:
        j = torch.arange(block.n_dst).repeat_interleave(block.n_src)
        i = torch.arange(block.n_src).repeat(block.n_dst)
    else:
        i = torch.arange(block.n_src).repeat_interleave(block.n_dst)
        j = torch.arange(block.n_dst).repeat(block.n_src)
    return torch.stack([block.src + i, block.dst + j])


def _check_partition(edge_index: torch.Tensor, min_edges: int):
    layout = find_blocks(edge_index, min_edges)
    seen = torch.zeros(edge_index.shape[1], dtype=torch.long)
    for b in layout.blocks:
        assert b.num_edges >= min_edges
        span = slice(b.start, b.start + b.num_edges)
        assert torch.equal(edge_index[:, span], _edges_of(b))  # the block really is those edges
        seen[span] += 1
    seen[layout.sparse] += 1
    assert torch.equal(seen, torch.ones_like(seen))  # every edge exactly once
    return layout


def test_a_hand_made_edge_list_is_split_into_its_blocks():
    dense = _edges_of(Block(0, 10, 20, 3, 4))  # 12 edges: sources 10..12 x targets 20..23
    odd = torch.tensor([[5, 6, 5], [5, 6, 7]])  # self-loops and a stray edge
    other = _edges_of(Block(0, 0, 30, 2, 8))  # 16 edges
    keys = _edges_of(Block(0, 40, 50, 5, 3, target_major=True))  # 15 edges: 40..44 -> 50, then -> 51, -> 52
    edge_index = torch.cat([dense, odd, other, keys], dim=1)
    layout = _check_partition(edge_index, min_edges=10)
    assert layout.blocks == [Block(0, 10, 20, 3, 4), Block(15, 0, 30, 2, 8), Block(31, 40, 50, 5, 3, True)]
    assert layout.sparse.tolist() == [12, 13, 14]
    assert find_blocks(edge_index, min_edges=16).blocks == [Block(15, 0, 30, 2, 8)]


def test_shuffled_edges_have_no_blocks_but_stay_covered():
    graph = build_neural_graph(fm16(), lpe=False)
    perm = torch.randperm(graph.num_edges, generator=torch.Generator().manual_seed(0))
    layout = _check_partition(graph.edge_index[:, perm], min_edges=16)
    assert layout.block_edges < graph.num_edges // 100


def test_graphs_of_real_models_are_almost_all_blocks():
    for model in (fm16(), GPT(vocab=300, d=16, layers=2, heads=2)):
        graph = build_neural_graph(model, lpe=False)
        layout = _check_partition(graph.edge_index, min_edges=64)
        assert layout.block_edges > 0.8 * graph.num_edges
        assert graph.layout.block_edges == find_blocks(graph.edge_index).block_edges  # cached property


def test_split_keeps_whole_rows_and_covers_the_block():
    block = Block(100, 7, 50, 10, 6)
    parts = block.split(20)
    assert [p.n_src for p in parts] == [3, 3, 3, 1]
    assert torch.equal(torch.cat([_edges_of(p) for p in parts], dim=1), _edges_of(block))
    assert [p.start for p in parts] == [100, 118, 136, 154]
    assert block.split(2) == [Block(100 + 6 * r, 7 + r, 50, 1, 6) for r in range(10)]  # a row is never cut
    columns = Block(0, 7, 50, 10, 6, target_major=True)
    parts = columns.split(25)
    assert [(p.dst, p.n_dst) for p in parts] == [(50, 2), (52, 2), (54, 2)]
    assert torch.equal(torch.cat([_edges_of(p) for p in parts], dim=1), _edges_of(columns))
