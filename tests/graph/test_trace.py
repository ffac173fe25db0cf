"""The traced builder on non-chain models: residual blocks, branches joined by concatenation, splits."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TwoLayer, fm16
from nino_optim import build_neural_graph
from permutations import permuted_order, views

RESIDUAL = 10


class Block(nn.Module):
    """ResNet basic block; with ``stride`` or a width change, a 1x1 conv + BN downsample on the shortcut."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.down is None else self.down(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.b1 = Block(4, 4)
        self.b2 = Block(4, 6, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.b2(self.b1(torch.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class TwoBranch(nn.Module):
    """Two branches on the same input, concatenated along features; then a gated (GLU) layer split in halves."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(3, 5)
        self.glu = nn.Linear(9, 6)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], dim=1)
        u, v = self.glu(h).chunk(2, dim=-1)
        return self.out(u * torch.sigmoid(v))


def build(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these models must be understood completely
        return build_neural_graph(model, lpe=False)


def layer_nodes(graph, name):
    """(input nodes [n_in], output nodes [n_out]) of a weight, read from the edges of w[o, i, 0...]."""
    w = views(graph)[name]
    w = w.reshape(w.shape[0], w.shape[1], -1)[:, :, 0]
    src, dst = graph.edge_index[:, graph.param_edge[w]]
    return src[0], dst[:, 0]


def check_dense_blocks(graph):
    """Every weight w[o, i, k] sits on edge (in_i -> out_o), slot k, with its kernel in one edge, one edge per (o, i)."""
    for p in graph.params:
        if len(p.shape) < 2:
            continue
        ins, outs = layer_nodes(graph, p.name)
        w = views(graph)[p.name].reshape(p.shape[0], p.shape[1], -1)
        edges = graph.param_edge[w]
        assert torch.equal(graph.param_slot[w], torch.arange(w.shape[2]).expand_as(w))
        assert torch.all(edges == edges[:, :, :1])
        src, dst = graph.edge_index[:, edges[:, :, 0]]
        assert torch.equal(src, ins[None, :].expand_as(src)) and torch.equal(dst, outs[:, None].expand_as(dst))
        assert len(set(ins.tolist()) & set(outs.tolist())) == 0
        assert edges[:, :, 0].unique().numel() == p.shape[0] * p.shape[1]


def attached(graph, name):
    """(source node, target nodes) of a 1-D parameter."""
    src, dst = graph.edge_index[:, graph.param_edge[views(graph)[name]]]
    assert src.unique().numel() == 1
    return int(src[0]), dst


def test_chain_models_keep_the_official_graph():
    for model in (TwoLayer(), fm16()):
        traced = build(model)
        assert traced.fallback == {}
        check_dense_blocks(traced)


def test_resnet_edges_join_the_right_neurons():
    model = ResNet()
    graph = build(model)
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    check_dense_blocks(graph)
    nodes = {p.name.rsplit(".", 1)[0]: layer_nodes(graph, p.name) for p in graph.params if len(p.shape) > 1}
    x_in, stem = nodes["stem"]
    assert len(x_in) == 3 and torch.equal(nodes["b1.conv1"][0], stem)  # data flow: stem -> b1.conv1
    assert torch.equal(nodes["b1.conv2"][0], nodes["b1.conv1"][1])
    # b1: out + x, the residual stream continues on b1.conv2's neurons, with residual edges stem[i] -> conv2[i]
    b1_out = nodes["b1.conv2"][1]
    assert torch.equal(nodes["b2.conv1"][0], b1_out) and torch.equal(nodes["b2.down.0"][0], b1_out)
    # b2: both sides are new neurons; the later one (the downsample, computed after conv2) carries the sum
    b2_out = nodes["b2.down.0"][1]
    assert torch.equal(nodes["fc"][0], b2_out)  # flatten after the global pool keeps the channels
    res = graph.edge_index[:, graph.edge_type == RESIDUAL]
    expected = torch.cat([torch.stack([stem, b1_out]), torch.stack([nodes["b2.conv2"][1], b2_out])], 1)
    assert sorted(map(tuple, res.t().tolist())) == sorted(map(tuple, expected.t().tolist()))
    # norm and bias nodes attach to the neurons they act on
    assert torch.equal(attached(graph, "bn.weight")[1], stem) and torch.equal(attached(graph, "stem.bias")[1], stem)
    assert torch.equal(attached(graph, "b1.bn1.bias")[1], nodes["b1.conv1"][1])
    assert torch.equal(attached(graph, "b2.down.1.weight")[1], b2_out)
    extra = {attached(graph, p.name)[0] for p in graph.params if len(p.shape) == 1}
    assert len(extra) == sum(len(p.shape) == 1 for p in graph.params)  # one node per 1-D tensor
    n_neurons = 3 + 4 + 4 + 4 + 6 + 6 + 6 + 5
    assert graph.num_nodes == n_neurons + len(extra)
    assert graph.num_edges == sum(p.numel // max(1, p.numel // (p.shape[0] * p.shape[1])) if len(p.shape) > 1
                                  else p.numel for p in graph.params) + 4 + 6 + graph.num_nodes


def test_concatenated_branches_and_split_gate():
    graph = build(TwoBranch())
    check_dense_blocks(graph)
    a_in, a_out = layer_nodes(graph, "a.weight")
    b_in, b_out = layer_nodes(graph, "b.weight")
    glu_in, glu_out = layer_nodes(graph, "glu.weight")
    out_in, _ = layer_nodes(graph, "out.weight")
    assert torch.equal(a_in, b_in)  # both branches read the same input neurons
    assert torch.equal(glu_in, torch.cat([a_out, b_out]))  # concatenation joins the spaces in order
    assert torch.equal(out_in, glu_out[:3])  # u * sigmoid(v) lives on u's neurons ...
    res = graph.edge_index[:, graph.edge_type == RESIDUAL]
    assert torch.equal(res, torch.stack([glu_out[3:], glu_out[:3]]))  # ... joined to v's by residual edges
    assert graph.num_nodes == 3 + 4 + 5 + 6 + 2 + 4  # neurons + one node per bias


@pytest.mark.parametrize("model", [TwoLayer, fm16, ResNet, TwoBranch])
def test_to_edges_and_to_params_are_exact_inverses(model):
    graph = build(model())
    states = torch.randn(graph.num_params, 5)
    edges = graph.to_edges(states).view(graph.num_edges, graph.feat_size, 5)
    for t in range(5):
        assert torch.equal(graph.to_params(edges[:, :, t]), states[:, t])
    # every (edge, slot) holds at most one parameter, and only parameter edges hold parameters
    pairs = graph.param_edge * graph.feat_size + graph.param_slot
    assert pairs.unique().numel() == graph.num_params
    assert torch.all(graph.edge_type[graph.param_edge] < RESIDUAL)


# ---------------------------------------------------------------- symmetry
def model_output_under(model, graph, order, x):
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    permuted = type(model)()
    torch.nn.utils.vector_to_parameters(flat[order], permuted.parameters())
    model.eval(), permuted.eval()
    with torch.no_grad():
        return model(x), permuted(x)


def resnet_perms(hidden, stream, consistent=True):
    """``hidden`` permutes b1's inner channels; ``stream`` the residual stream stem -> b1 (both sides)."""
    perms = {"b1.conv1.weight": [(0, hidden)], "b1.bn1.weight": [(0, hidden)], "b1.bn1.bias": [(0, hidden)],
             "b1.conv2.weight": [(1, hidden), (0, stream)], "b1.bn2.weight": [(0, stream)],
             "b1.bn2.bias": [(0, stream)], "b2.conv1.weight": [(1, stream)], "b2.down.0.weight": [(1, stream)]}
    if consistent:
        perms.update({"stem.weight": [(0, stream)], "stem.bias": [(0, stream)], "bn.weight": [(0, stream)],
                      "bn.bias": [(0, stream)], "b1.conv1.weight": [(0, hidden), (1, stream)]})
    return perms


def two_branch_perms(pa, pb, pg):
    """pa, pb: branch neurons; pg: GLU neurons, the same permutation on both halves (u_i gates with v_i)."""
    glu = torch.cat([pg, pg + 3])
    return {"a.weight": [(0, pa)], "a.bias": [(0, pa)], "b.weight": [(0, pb)], "b.bias": [(0, pb)],
            "glu.weight": [(1, torch.cat([pa, pb + 4])), (0, glu)], "glu.bias": [(0, glu)],
            "out.weight": [(1, pg)]}


CASES = {
    "resnet": (ResNet, lambda: resnet_perms(torch.tensor([2, 0, 3, 1]), torch.tensor([1, 3, 0, 2])),
               lambda: torch.randn(2, 3, 8, 8)),
    "two_branch": (TwoBranch, lambda: two_branch_perms(torch.tensor([3, 1, 0, 2]), torch.tensor([4, 2, 0, 1, 3]),
                                                       torch.tensor([2, 0, 1])), lambda: torch.randn(4, 3)),
}


@pytest.mark.parametrize("case", CASES)
def test_function_preserving_permutation_permutes_the_prediction(case, symmetry_gnn):
    make, perms, inputs = CASES[case]
    torch.manual_seed(1)
    model = make()
    graph = build(model)
    order = permuted_order(graph, perms())
    assert not torch.equal(order, torch.arange(graph.num_params))
    out, out_perm = model_output_under(model, graph, order, inputs())
    assert torch.allclose(out, out_perm, atol=1e-5)  # the permutation preserves the function
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    pred = gnn.predict(graph, states, 3)
    pred_perm = gnn.predict(graph, states[order], 3)
    assert torch.allclose(pred_perm, pred[order], atol=1e-5)
    assert not torch.allclose(pred, states[:, -1], atol=1e-3)  # it predicts something


def test_permutation_breaking_the_residual_stream_changes_function_and_prediction(symmetry_gnn):
    torch.manual_seed(1)
    model = ResNet()
    graph = build(model)
    # permute b1's output side of the residual add but not the stem side: not a symmetry of the model
    order = permuted_order(graph, resnet_perms(torch.arange(4), torch.tensor([1, 3, 0, 2]), consistent=False))
    out, out_perm = model_output_under(model, graph, order, torch.randn(2, 3, 8, 8))
    assert not torch.allclose(out, out_perm, atol=1e-3)
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    pred = gnn.predict(graph, states, 3)
    pred_perm = gnn.predict(graph, states[order], 3)
    assert not torch.allclose(pred_perm, pred[order], atol=1e-4)  # the residual edges see the difference


# ---------------------------------------------------------------- more layers, and what is not understood
def test_grouped_conv_edges_follow_the_data_flow():
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 8, 3, groups=4, padding=1), nn.ReLU())
    graph = build(model)
    _, first_out = layer_nodes(graph, "0.weight")
    w = views(graph)["1.weight"]  # (8, 1, 3, 3): output o reads input channel o // 2 only
    src, dst = graph.edge_index[:, graph.param_edge[w[:, 0, 0, 0]]]
    assert torch.equal(src, first_out[torch.arange(8) // 2])
    # the truth, from autograd: output channel o depends on input channel i iff there is an edge i -> o
    conv = model[1]
    jac = torch.autograd.functional.jacobian(lambda x: conv(x).sum((0, 2, 3)), torch.randn(1, 4, 5, 5))
    depends = jac.abs().sum((1, 3, 4)) > 0  # [out, in]
    edges = {(int(s), int(d)) for s, d in zip(src, dst)}
    expected = {(int(first_out[i]), int(dst[o])) for o in range(8) for i in range(4) if depends[o, i]}
    assert edges == expected
    assert graph.feat_size == 9 and graph.params[2].edge_type == 3


def test_conv1d_flatten_over_positions_and_norms():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3)
            self.gn = nn.GroupNorm(1, 3)
            self.fc = nn.Linear(3 * 4, 5)
            self.ln = nn.LayerNorm(5)

        def forward(self, x):  # x: (B, 2, 6) -> (B, 3, 4) -> (B, 12)
            return self.ln(self.fc(self.gn(self.conv(x)).flatten(1)))

    graph = build(Net())
    check_dense_blocks(graph)
    _, conv_out = layer_nodes(graph, "conv.weight")
    fc_in, fc_out = layer_nodes(graph, "fc.weight")
    assert torch.equal(fc_in, conv_out.repeat_interleave(4))  # feature f of the flatten lives on channel f // 4
    assert torch.equal(attached(graph, "gn.weight")[1], conv_out)
    assert torch.equal(attached(graph, "ln.bias")[1], fc_out)
    assert [p.edge_type for p in graph.params] == [2, 2, 4, 2, 1, 2, 4, 2]  # Conv1d weights are type 2 (official)


def test_embedding_nodes_carry_token_ids():
    model = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    graph = build(model)
    src, dst = graph.edge_index[:, graph.param_edge[views(graph)["0.weight"]]]  # table (vocab, d): row v is token v
    tokens, emb = src[:, 0], dst[0]
    assert torch.all(src == tokens[:, None]) and torch.all(dst == emb[None, :])
    assert graph.params[0].edge_type == 5 and len(tokens) == 10
    assert graph.pos_w[tokens].tolist() == list(range(1, 11)) and int(graph.pos_w.sum()) == 55
    assert torch.equal(layer_nodes(graph, "2.weight")[0], emb)


def test_untraceable_model_uses_the_chain_rule_with_one_warning():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(2, 3), nn.Linear(3, 2)

        def forward(self, x):
            h = self.fc1(x)
            if h.sum() > 0:  # control flow on data: symbolic tracing fails
                h = torch.relu(h)
            return self.fc2(h)

    with pytest.warns(UserWarning, match="cannot trace") as record:
        graph = build_neural_graph(DataDependent(), lpe=False)
    assert len(record) == 1
    assert graph.num_nodes == 9 and bool(graph.placed_mask.all())


def test_unknown_op_and_unknown_module_fall_back_with_one_warning():
    class Scale(nn.Module):  # a custom module is traced through: its own weight is read as a linear layer
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 4))

        def forward(self, x):
            return x @ self.w

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.scale, self.fc2 = nn.Linear(3, 4), Scale(), nn.Linear(4, 4)
            self.pair, self.fc3 = nn.Bilinear(4, 4, 4), nn.Linear(4, 2)  # a torch.nn layer the builder does not know

        def forward(self, x):
            h = torch.fft.fft(self.fc1(x)).real  # not understood: scale.w gets its own input nodes
            h = self.fc2(self.scale(h))
            return self.fc3(self.pair(h, h))

    with pytest.warns(UserWarning) as record:
        graph = build_neural_graph(Net(), lpe=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert "fft" in message and "pair (Bilinear): not understood" in message and "scale" not in message
    assert bool(graph.placed_mask.all()) and graph.fallback == {}  # the chain rule placed pair's parameters
    _, fc1_out = layer_nodes(graph, "fc1.weight")
    src, dst = graph.edge_index[:, graph.param_edge[views(graph)["scale.w"]]]  # w[i, o]: x @ w
    w_in, w_out = src[:, 0], dst[0]
    assert not set(w_in.tolist()) & set(fc1_out.tolist())
    assert torch.equal(layer_nodes(graph, "fc2.weight")[0], w_out)  # understood again after the unknown part
    assert graph.params[2].edge_type == 1


class Mix(nn.Module):  # its weight is used in an op the propagation does not follow
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return torch.einsum("bi,ij->bj", x, self.w)


class Gate(nn.Module):  # control flow on its input: symbolic tracing cannot go into it, so it is kept whole
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.eye(4))

    def forward(self, x):
        return x @ self.w if x.sum() > 0 else x


@pytest.mark.parametrize("custom", [Mix, Gate])
def test_a_custom_module_the_propagation_cannot_follow_uses_the_chain_rule(custom):
    model = nn.Sequential(nn.Linear(3, 4), custom(), nn.Linear(4, 2))
    with pytest.warns(UserWarning) as record:
        graph = build_neural_graph(model, lpe=False)
    message = str(record[0].message)
    assert len(record) == 1 and f"1 ({custom.__name__}): not understood; its parameters use the chain rule" in message
    assert bool(graph.placed_mask.all()) and graph.fallback == {}


def test_dimension_mismatch_is_reported_not_silent():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(7, 3))  # 7 is not a multiple of 2
    with pytest.warns(UserWarning, match="expects 7 inputs"):
        graph = build_neural_graph(model, lpe=False)
    assert bool(graph.placed_mask.all())


def test_draw_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    graph = build(ResNet())
    text = graph.draw(tmp_path / "resnet.png")
    assert (tmp_path / "resnet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{graph.num_nodes} nodes" in text and "parameters placed" in text
    graph.draw(tmp_path / "binned.png", max_pixels=10)  # binned
    assert (tmp_path / "binned.png").exists()
