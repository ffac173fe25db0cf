"""A Llama-style model (RMSNorm, rotary embeddings, SwiGLU, separate q/k/v/o): traced with example inputs."""
import warnings

import torch

from llama_models import Llama
from nino_optim import build_neural_graph
from permutations import permuted_order
from test_attention import is_automorphism

X = torch.randint(0, 13, (1, 6), generator=torch.Generator().manual_seed(0))


def build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return build_neural_graph(model, lpe=False, example_inputs=(X,), **kwargs)


def test_llama_graph():
    graph = build(Llama())
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    # per layer: norm node, 8 query (= key), 2 head, 8 value, 8 attention-out, norm node, 12 gate, 12 up,
    # 8 block-out neurons; plus 13 tokens, 8 embedding neurons, the final norm node and 13 logits
    assert graph.num_nodes == 2 * (1 + 8 + 2 + 8 + 8 + 1 + 12 + 12 + 8) + 13 + 8 + 1 + 13
    hist = {t: n for t, n in enumerate(torch.bincount(graph.edge_type).tolist()) if n}
    assert hist == {1: 808, 4: 40, 5: 104, 7: 128, 8: 128, 9: 128, 10: 56, 11: 32, 13: 155}


def order_for(graph, qk, v, hidden):
    pre = "layers.0."
    perms = {pre + "self_attn.q_proj.weight": [(0, qk)], pre + "self_attn.k_proj.weight": [(0, qk)],
             pre + "self_attn.v_proj.weight": [(0, v)], pre + "self_attn.o_proj.weight": [(1, v)],
             pre + "mlp.gate_proj.weight": [(0, hidden)], pre + "mlp.up_proj.weight": [(0, hidden)],
             pre + "mlp.down_proj.weight": [(1, hidden)]}
    return permuted_order(graph, perms)


def outputs(model, order):
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    other = Llama()
    torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
    with torch.no_grad():
        return model(X), other(X)


# Rotary embeddings give every feature pair of a head its own frequency, so queries/keys have no within-head
# symmetry; the graph does not model the rotation (as the official graphs), so it has more symmetry than the model.
HEADS = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
V_WITHIN = torch.tensor([3, 0, 1, 2, 5, 7, 6, 4])
ACROSS = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])


def test_llama_symmetries(symmetry_gnn):
    torch.manual_seed(1)
    model = Llama()
    graph = build(model)
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    pred = gnn.predict(graph, states, 3)
    hidden = torch.randperm(12)
    for qk, v in ((torch.arange(8), V_WITHIN), (HEADS, HEADS)):
        order = order_for(graph, qk, v, hidden)
        out, out_perm = outputs(model, order)
        assert torch.allclose(out, out_perm, atol=1e-5)
        assert is_automorphism(graph, order)
        assert torch.allclose(gnn.predict(graph, states[order], 3), pred[order], atol=1e-5)
    order = order_for(graph, ACROSS, ACROSS, torch.arange(12))
    out, out_perm = outputs(model, order)
    assert not torch.allclose(out, out_perm, atol=1e-4) and not is_automorphism(graph, order)
