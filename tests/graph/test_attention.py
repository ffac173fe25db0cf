"""Attention graphs: head nodes, q/k/v edge types and keys on the query neurons (reference 2.5)."""
import json
import warnings

import pytest
import torch

from conftest import GOLDEN, golden_case, golden_index, official_checkpoint, reference_file
from gpt_models import GPT
from permutations import permuted_order, views
from nino_optim import build_neural_graph, load_nowcaster

VARIANTS = {"fused_sdpa": dict(), "fused_softmax": dict(sdpa=False), "separate_sdpa": dict(fused=False),
            "separate_softmax": dict(fused=False, sdpa=False)}
GOLDEN_TYPES = {1: 1152, 2: 184, 4: 40, 5: 88, 6: 40, 7: 128, 8: 128, 9: 128, 10: 32, 11: 32, 13: 178}


def build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_neural_graph(model, lpe=False, **kwargs)


def hf_to_ours(index):
    """Flat index map: ours[j] = hf[perm[j]] (HF Conv1D weights are (in, out); ours are (out, in))."""
    parts = []
    for p in index["parameters_in_order"]:
        idx = torch.arange(p["offset"], p["offset"] + p["numel"]).view(p["shape"])
        if len(p["shape"]) == 2 and not p["name"].endswith(("wte.weight", "wpe.weight")):
            idx = idx.t()
        parts.append(idx.reshape(-1))
    return torch.cat(parts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_graph_has_the_official_size_and_types(variant):
    graph = build(GPT(**VARIANTS[variant]))
    assert (graph.num_nodes, graph.num_edges) == (178, 2130)
    hist = torch.bincount(graph.edge_type).tolist()
    assert {t: n for t, n in enumerate(hist) if n} == GOLDEN_TYPES
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    assert graph.pos_w.tolist().count(0) == 178 - 11 and sorted(graph.pos_w.tolist())[-11:] == list(range(1, 12))


def test_gpt_graph_is_the_official_graph_up_to_node_numbering():
    """Map the golden graph's nodes onto ours through the parameters they carry; every edge must agree."""
    index = golden_index()["cases"]["case3_nino_gpt2"]
    path = reference_file(GOLDEN / "case3_gpt2_graph.json", "golden graph")
    gold = json.loads(path.read_text())
    g_edges = torch.tensor(gold["edges"])
    g_param_edge = torch.tensor([row[3] for row in gold["param_to_edge"]])
    graph = build(GPT())
    perm = hf_to_ours(index)
    ours_src, ours_dst = graph.edge_index[:, graph.param_edge]
    gold_src, gold_dst = g_edges[g_param_edge[perm], 0], g_edges[g_param_edge[perm], 1]
    assert torch.equal(graph.edge_type[graph.param_edge], g_edges[g_param_edge[perm], 2])
    node_map = {}
    for g, o in zip(torch.cat([gold_src, gold_dst]).tolist(), torch.cat([ours_src, ours_dst]).tolist()):
        assert node_map.setdefault(g, o) == o  # consistent: a golden node is always the same node of ours
    assert len(set(node_map.values())) == len(node_map)  # and a bijection
    # head nodes carry no parameter: match them by the neurons they connect to
    aux = (g_edges[:, 2] == 10) | (g_edges[:, 2] == 11)
    ours_aux = (graph.edge_type == 10) | (graph.edge_type == 11)
    heads = {}
    for s, d, t in g_edges[aux].tolist():
        heads.setdefault(s, set()).add((node_map[d], t))
    ours_heads = {}
    for (s, d), t in zip(graph.edge_index[:, ours_aux].t().tolist(), graph.edge_type[ours_aux].tolist()):
        ours_heads.setdefault(s, set()).add((d, t))
    for g, targets in heads.items():
        if g in node_map:
            assert ours_heads[node_map[g]] == targets
        else:
            matches = [o for o, t in ours_heads.items() if t == targets and o not in node_map.values()]
            assert len(matches) == 1
            node_map[g] = matches[0]
    assert len(node_map) == gold["num_nodes"] == graph.num_nodes


@pytest.mark.parametrize("variant", ["fused_sdpa", "fused_softmax"])  # the golden model has a fused c_attn
@pytest.mark.parametrize("k", [1, 40])
def test_official_prediction_on_gpt_matches_golden(variant, k):
    golden = golden_case("case3_nino_gpt2")
    official = load_nowcaster(official_checkpoint("nino_no_posw.pt"))
    perm = hf_to_ours(golden_index()["cases"]["case3_nino_gpt2"])
    graph = build(GPT(**VARIANTS[variant]))
    pred = official.predict(graph, golden["states"][perm], k)
    assert torch.allclose(pred, golden[f"pred_k{k}"][perm], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- symmetry
def gpt_order(graph, qk, v, hidden, fused):
    """Flat order for permuting block 0: ``qk`` the q/k features (together), ``v`` the value features,
    ``hidden`` the MLP neurons."""
    d = 8
    perms = {"h.0.mlp.c_fc.weight": [(0, hidden)], "h.0.mlp.c_fc.bias": [(0, hidden)],
             "h.0.mlp.c_proj.weight": [(1, hidden)], "h.0.attn.c_proj.weight": [(1, v)]}
    if fused:
        rows = torch.cat([qk, qk + d, v + 2 * d])
        perms.update({"h.0.attn.c_attn.weight": [(0, rows)], "h.0.attn.c_attn.bias": [(0, rows)]})
    else:
        for name, p in (("q", qk), ("k", qk), ("v", v)):
            perms.update({f"h.0.attn.{name}.weight": [(0, p)], f"h.0.attn.{name}.bias": [(0, p)]})
    return permuted_order(graph, perms)


def outputs(model, order, x):
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    torch.manual_seed(0)
    other = GPT(fused=model.h[0].attn.fused, sdpa=model.h[0].attn.sdpa)
    torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
    with torch.no_grad():
        return model(x), other(x)


WITHIN = (torch.tensor([1, 3, 2, 0, 6, 4, 7, 5]), torch.tensor([2, 0, 3, 1, 5, 7, 4, 6]))  # within heads of 4
HEAD_SWAP = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])  # heads swapped as a whole: also a symmetry
ACROSS = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])  # feature 0 of head 0 <-> feature 0 of head 1: not a symmetry


def test_key_bias_wiring():
    official, keys = build(GPT(), key_bias="official"), build(GPT(), key_bias="keys")
    kb = views(official)["h.0.attn.c_attn.bias"][8:16]  # the key part of the fused bias
    q_out = official.edge_index[1, official.param_edge[views(official)["h.0.attn.c_attn.weight"][:8, 0]]]
    r_in = official.edge_index[0, official.param_edge[views(official)["h.0.attn.c_attn.weight"][0, :]]]
    assert torch.equal(official.edge_index[1, official.param_edge[kb]], r_in)  # block input neuron j
    q_keys = keys.edge_index[1, keys.param_edge[views(keys)["h.0.attn.c_attn.weight"][:8, 0]]]
    assert torch.equal(keys.edge_index[1, keys.param_edge[kb]], q_keys)  # query (= key) neuron j
    assert len(q_out) == 8 and (official.num_nodes, official.num_edges) == (keys.num_nodes, keys.num_edges)


@pytest.mark.parametrize("variant", ["fused_sdpa", "separate_softmax"])
@pytest.mark.parametrize("key_bias", ["keys", "official"])
def test_within_head_permutation_permutes_the_prediction(variant, key_bias, symmetry_gnn):
    torch.manual_seed(1)
    model = GPT(**VARIANTS[variant])
    graph = build(model, key_bias=key_bias)
    x = torch.randint(0, 11, (2, 5))
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    pred = gnn.predict(graph, states, 3)
    fused = "fused" in variant
    cases = [(torch.arange(8), WITHIN[1])]  # values within their heads: a symmetry of the graph with any wiring
    if key_bias == "keys":  # queries/keys: the official key-bias wiring (block input neuron j) breaks this
        cases += [WITHIN, (HEAD_SWAP, HEAD_SWAP)]
    for qk, v in cases:
        order = gpt_order(graph, qk, v, torch.randperm(32), fused)
        out, out_perm = outputs(model, order, x)
        assert torch.allclose(out, out_perm, atol=1e-5)
        assert torch.allclose(gnn.predict(graph, states[order], 3), pred[order], atol=1e-5)
    assert not torch.allclose(pred, states[:, -1], atol=1e-3)


def is_automorphism(graph, order):
    """Whether moving every parameter element order[j] -> j is induced by a node permutation that maps the
    graph (edges with their types, auxiliary edges included) onto itself."""
    src, dst = graph.edge_index[:, graph.param_edge]
    sigma = {}
    for a, b in zip(torch.cat([src[order], dst[order]]).tolist(), torch.cat([src, dst]).tolist()):
        if sigma.setdefault(a, b) != b:
            return False
    if len(set(sigma.values())) != len(sigma):
        return False
    edges = set(zip(*graph.edge_index.tolist(), graph.edge_type.tolist()))
    # nodes that carry no parameter (head nodes): map each to the free node with the same mapped neighbours
    out = {}
    for a, b, t in edges:
        if a != b:
            out.setdefault(a, set()).add((b, t))
    free = [a for a in out if a not in sigma]
    for a in free:
        want = {(sigma.get(b, b), t) for b, t in out[a]}
        match = [c for c in free if out[c] == want and c not in sigma.values()]
        if not match:
            return False
        sigma[a] = match[0]
    return {(sigma.get(a, a), sigma.get(b, b), t) for a, b, t in edges} == edges


@pytest.mark.parametrize("variant", ["fused_sdpa", "separate_softmax"])
def test_across_head_permutation_changes_function_and_graph(variant, symmetry_gnn):
    torch.manual_seed(1)
    model = GPT(**VARIANTS[variant])
    graph = build(model, key_bias="keys")
    fused = "fused" in variant
    for qk, v in (WITHIN, (HEAD_SWAP, HEAD_SWAP)):
        assert is_automorphism(graph, gpt_order(graph, qk, v, torch.randperm(32), fused))
    order = gpt_order(graph, ACROSS, ACROSS, torch.arange(32), fused)
    out, out_perm = outputs(model, order, torch.randint(0, 11, (2, 5)))
    assert not torch.allclose(out, out_perm, atol=1e-4)
    assert not is_automorphism(graph, order)
    # With zero node features the GNN cannot see it: head nodes only send messages, so every head node keeps
    # the same state (the official model has the same limit). Laplacian features tell the heads apart.
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    graph_lpe = build_neural_graph(GPT(**VARIANTS[variant]), lpe=True, key_bias="keys")
    pred = gnn.predict(graph_lpe, states, 3)
    assert not torch.allclose(gnn.predict(graph_lpe, states[order], 3), pred[order], atol=1e-4)


class MHA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Linear(3, 8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x):
        h = self.emb(x)
        return self.head(h + self.attn(h, h, h, need_weights=False)[0])


def test_multihead_attention_module():
    torch.manual_seed(1)
    model = MHA().eval()
    graph = build(model, key_bias="keys")
    hist = {t: n for t, n in enumerate(torch.bincount(graph.edge_type).tolist()) if n}
    assert hist[7] == hist[8] == hist[9] == 64 and hist[11] == 16 and hist[10] == 8
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    x = torch.randn(2, 4, 3)

    def order_for(qk, v):
        rows = torch.cat([qk, qk + 8, v + 16])
        perms = {"attn.in_proj_weight": [(0, rows)], "attn.in_proj_bias": [(0, rows)],
                 "attn.out_proj.weight": [(1, v)]}
        return permuted_order(graph, perms)

    def same_function(order):
        flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        other = MHA().eval()
        torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
        with torch.no_grad():
            return torch.allclose(model(x), other(x), atol=1e-5)

    for qk, v in (WITHIN, (HEAD_SWAP, HEAD_SWAP)):
        order = order_for(qk, v)
        assert same_function(order) and is_automorphism(graph, order)
    order = order_for(ACROSS, ACROSS)
    assert not same_function(order) and not is_automorphism(graph, order)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer(norm_first, symmetry_gnn):
    torch.manual_seed(1)

    def make():
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.TransformerEncoderLayer(
            8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first), torch.nn.Linear(8, 3)).eval()

    model = make()
    graph = build(model, key_bias="keys")
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    x = torch.randn(2, 5, 4)
    hidden = torch.randperm(16)

    def order_for(qk, v):
        rows = torch.cat([qk, qk + 8, v + 16])
        perms = {"1.self_attn.in_proj_weight": [(0, rows)], "1.self_attn.in_proj_bias": [(0, rows)],
                 "1.self_attn.out_proj.weight": [(1, v)], "1.linear1.weight": [(0, hidden)],
                 "1.linear1.bias": [(0, hidden)], "1.linear2.weight": [(1, hidden)]}
        return permuted_order(graph, perms)

    def same_function(order):
        flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
        other = make()
        torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
        with torch.no_grad():
            return torch.allclose(model(x), other(x), atol=1e-5)

    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    pred = gnn.predict(graph, states, 3)
    for qk, v in (WITHIN, (HEAD_SWAP, HEAD_SWAP)):
        order = order_for(qk, v)
        assert same_function(order) and is_automorphism(graph, order)
        assert torch.allclose(gnn.predict(graph, states[order], 3), pred[order], atol=1e-5)
    order = order_for(ACROSS, ACROSS)
    assert not same_function(order) and not is_automorphism(graph, order)


def test_split_by_a_traced_feature_size_gives_the_same_graph():
    """``B, T, C = x.size(); qkv.split(C, 2)``: the size comes from the traced shape of known neurons."""
    plain = build(GPT(**VARIANTS["fused_sdpa"]))
    traced = build(GPT(**VARIANTS["fused_sdpa"], split_by_shape=True))
    assert torch.equal(plain.edge_index, traced.edge_index) and torch.equal(plain.edge_type, traced.edge_type)
