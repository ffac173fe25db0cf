"""Vision models: patch embeddings, large kernels and free-standing parameters (class tokens, position
embeddings, layer scales) placed on the neurons they act on, symmetric under the models' permutations."""
import warnings

import pytest
import torch
from torch import nn

from nino_optim import build_neural_graph
from nino_optim.bench.vit import ViT
from nino_optim.graph.neural_graph import BIAS, CONV, FC, NORM, POS_EMBED, TOKEN_EMBED
from permutations import assert_symmetry, views

IMAGES = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_neural_graph(model, lpe=False, **kwargs)


def edges_of(graph, name):
    """(source nodes, target nodes, edge types) of every element of parameter ``name``, shaped like it."""
    idx = views(graph)[name]
    edges = graph.param_edge[idx]
    return graph.edge_index[0, edges], graph.edge_index[1, edges], graph.edge_type[edges]


def test_vit_places_every_parameter_with_the_documented_edge_types():
    graph = build(ViT())
    assert graph.fallback == {} and bool(graph.placed_mask.all()) and graph.feat_size == 1
    patch_src, patch_dst, patch_type = edges_of(graph, "patch_embed.weight")  # [32, 1, 4, 4]
    assert bool((patch_type == FC).all())
    assert patch_src[0].unique().numel() == 16  # every pixel of a patch its own input neuron
    assert torch.equal(patch_src[0], patch_src[5]) and not set(patch_src[0].flatten().tolist()) & set(
        patch_dst.flatten().tolist())
    neurons = patch_dst[:, 0, 0, 0]  # the 32 embedding neurons
    cls_src, cls_dst, cls_type = edges_of(graph, "cls_token")  # [1, 1, 32]
    assert bool((cls_type == TOKEN_EMBED).all()) and torch.equal(cls_dst[0, 0], neurons)
    assert cls_src.unique().numel() == 1
    pos_src, pos_dst, pos_type = edges_of(graph, "pos_embed")  # [1, 50, 32]: one node per position
    assert bool((pos_type == POS_EMBED).all()) and bool((pos_dst[0] == neurons).all())
    assert pos_src[0, :, 0].unique().numel() == 50 and bool((pos_src[0] == pos_src[0, :, :1]).all())
    norm_src, norm_dst, norm_type = edges_of(graph, "encoder.layers.0.norm1.weight")
    assert torch.equal(norm_dst, neurons) and bool((norm_type == NORM).all())  # the first norm reads them


def vit_residual_perms(width=32, hidden=64, depth=2, seed=0):
    """A permutation of the residual stream's features (and of each MLP's hidden units): the ViT's symmetry."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randperm(width, generator=g)
    perms = {"patch_embed.weight": [(0, p)], "patch_embed.bias": [(0, p)], "cls_token": [(2, p)],
             "pos_embed": [(2, p)], "norm.weight": [(0, p)], "norm.bias": [(0, p)], "head.weight": [(1, p)]}
    for i in range(depth):
        h = torch.randperm(hidden, generator=g)
        pre = f"encoder.layers.{i}."
        perms |= {pre + "self_attn.in_proj_weight": [(1, p)], pre + "self_attn.out_proj.weight": [(0, p)],
                  pre + "self_attn.out_proj.bias": [(0, p)], pre + "linear1.weight": [(0, h), (1, p)],
                  pre + "linear1.bias": [(0, h)], pre + "linear2.weight": [(0, p), (1, h)],
                  pre + "linear2.bias": [(0, p)]}
        for norm in ("norm1", "norm2"):
            perms |= {pre + f"{norm}.weight": [(0, p)], pre + f"{norm}.bias": [(0, p)]}
    return perms


def test_vit_residual_stream_permutation_permutes_the_prediction(symmetry_gnn):
    graph = build(ViT(), key_bias="keys")  # the official key-bias wiring is not symmetric (graph/attention.py)
    assert_symmetry(ViT, graph, vit_residual_perms(), lambda m: m(IMAGES), symmetry_gnn)


class LayerScaled(nn.Module):
    """A hand-written transformer block with its own free-standing parameters: a position table sliced to the
    sequence, a layer scale (a custom module, traced through), and a learned query token appended."""

    class Scale(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.gamma = nn.Parameter(torch.full((width,), 0.5))

        def forward(self, x):
            return x * self.gamma

    def __init__(self, vocab=11, width=8, max_len=12, broadcast="expand"):
        super().__init__()
        self.broadcast = broadcast
        self.tokens = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.1)
        self.query = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.scale = self.Scale(width)
        self.shift = nn.Parameter(torch.zeros(width))
        self.head = nn.Linear(width, 3)

    def forward(self, idx):
        x = self.tokens(idx) + self.pos[: idx.shape[1]]
        query = {"expand": lambda: self.query.expand(idx.shape[0], -1, -1),
                 "repeat": lambda: self.query.repeat(idx.shape[0], 1, 1),
                 "expand_as": lambda: self.query.expand_as(x[:, :1])}[self.broadcast]()
        x = torch.cat([x, query], dim=1)
        x = x + self.scale(self.fc(self.norm(x))) + self.shift
        return self.head(x[:, -1])


@pytest.mark.parametrize("broadcast", ["expand", "repeat", "expand_as"])
def test_free_standing_parameters_are_placed_where_they_meet_the_features(broadcast):
    graph = build(LayerScaled(broadcast=broadcast))  # symbolic tracing, no example inputs
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    _, tok_dst, _ = edges_of(graph, "tokens.weight")
    neurons = tok_dst[0]
    pos_src, pos_dst, pos_type = edges_of(graph, "pos")  # all 12 positions, though a forward uses fewer
    assert bool((pos_type == POS_EMBED).all()) and bool((pos_dst == neurons).all())
    assert pos_src[:, 0].unique().numel() == 12
    q_src, q_dst, q_type = edges_of(graph, "query")
    assert bool((q_type == TOKEN_EMBED).all()) and torch.equal(q_dst[0, 0], neurons)
    _, fc_dst, _ = edges_of(graph, "fc.weight")
    _, scale_dst, scale_type = edges_of(graph, "scale.gamma")
    assert torch.equal(scale_dst, fc_dst[:, 0]) and bool((scale_type == NORM).all())  # multiplied: a scale
    _, shift_dst, shift_type = edges_of(graph, "shift")
    assert bool((shift_type == BIAS).all()) and shift_dst.numel() == 8  # added: a bias


def test_free_standing_parameter_symmetry(symmetry_gnn):
    graph = build(LayerScaled())
    p = torch.randperm(8, generator=torch.Generator().manual_seed(1))  # fc's outputs join the stream: same p
    perms = {"tokens.weight": [(1, p)], "pos": [(1, p)], "query": [(2, p)], "norm.weight": [(0, p)],
             "norm.bias": [(0, p)], "fc.weight": [(0, p), (1, p)], "fc.bias": [(0, p)], "scale.gamma": [(0, p)],
             "shift": [(0, p)], "head.weight": [(1, p)]}
    idx = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    assert_symmetry(LayerScaled, graph, perms, lambda m: m(idx), symmetry_gnn)


@pytest.mark.parametrize("kernel,stride,groups", [(7, 2, 1), (5, 1, 4), (4, 4, 1)])
def test_large_kernels_are_split_over_parallel_edges(kernel, stride, groups):
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, kernel, stride, groups=groups),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    graph = build(model)
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    src, dst, etype = edges_of(graph, "2.weight")  # [8, 8 / groups, k, k]
    _, first_out, _ = edges_of(graph, "0.weight")
    channels = first_out[:, 0, 0, 0]
    flat = graph.param_edge[views(graph)["2.weight"]].reshape(8, 8 // groups, -1)
    assert set(src.flatten().tolist()) <= set(channels.tolist())  # reads the first conv's channel neurons
    if stride == kernel:  # a patch embedding: one FC edge per (input element of a patch, output channel)
        assert bool((etype == FC).all()) and flat.unique().numel() == flat.numel()
    else:  # ceil(k*k / 9) parallel conv edges per channel pair, 9 kernel elements each
        assert bool((etype == CONV).all())
        assert flat[0, 0].unique().numel() == -(-kernel * kernel // 9)
        assert torch.equal(graph.param_slot[views(graph)["2.weight"]].reshape(8, 8 // groups, -1)[0, 0],
                           torch.arange(kernel * kernel) % 9)
    x = torch.randn(2, 4, 12, 12)
    p = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    perms = {"0.weight": [(0, p)], "0.bias": [(0, p)], "2.weight": [(1, p)] if groups == 1 else []}
    if groups == 1:
        from permutations import permuted_order
        from test_attention import is_automorphism

        assert is_automorphism(graph, permuted_order(graph, perms))
    assert model(x).shape == (2, 2)
