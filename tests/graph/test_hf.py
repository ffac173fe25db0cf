"""Hugging Face models, traced with example inputs (torch.export); skipped without ``transformers``."""
import warnings

import pytest
import torch

from conftest import golden_case, official_checkpoint
from nino_optim import build_neural_graph, load_nowcaster
from permutations import permuted_order
from recording import train_across_nowcast

transformers = pytest.importorskip("transformers")

GOLDEN_TYPES = {1: 1152, 2: 184, 4: 40, 5: 88, 6: 40, 7: 128, 8: 128, 9: 128, 10: 32, 11: 32, 13: 178}


def tiny_gpt2():
    cfg = transformers.GPT2Config(n_embd=8, n_layer=2, n_head=2, vocab_size=11, n_positions=5,
                                  bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg)


def build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return build_neural_graph(model, lpe=False, **kwargs)


def test_hf_gpt2_graph_has_the_official_size_and_types():
    graph = build(tiny_gpt2())
    assert (graph.num_nodes, graph.num_edges) == (178, 2130)
    assert {t: n for t, n in enumerate(torch.bincount(graph.edge_type).tolist()) if n} == GOLDEN_TYPES
    assert graph.fallback == {} and bool(graph.placed_mask.all())


@pytest.mark.parametrize("k", [1, 10, 40])
def test_hf_gpt2_reproduces_golden_case3(k):
    golden = golden_case("case3_nino_gpt2")
    official = load_nowcaster(official_checkpoint("nino_no_posw.pt"))
    graph = build(tiny_gpt2())
    pred = official.predict(graph, golden["states"], k)
    assert torch.allclose(pred, golden[f"pred_k{k}"], atol=1e-5, rtol=1e-5)
    assert (pred - golden[f"pred_k{k}"]).abs().max() < 1e-4


def test_explicit_example_inputs():
    graph = build(tiny_gpt2(), example_inputs={"input_ids": torch.tensor([[1, 2, 3]])})
    assert (graph.num_nodes, graph.num_edges) == (178, 2130)


def hf_order(graph, qk, v, hidden):
    """Block-0 permutation for HF GPT-2 (Conv1D weights are (in, out))."""
    d = 8
    rows = torch.cat([qk, qk + d, v + 2 * d])
    pre = "transformer.h.0."
    perms = {pre + "attn.c_attn.weight": [(1, rows)], pre + "attn.c_attn.bias": [(0, rows)],
             pre + "attn.c_proj.weight": [(0, v)], pre + "mlp.c_fc.weight": [(1, hidden)],
             pre + "mlp.c_fc.bias": [(0, hidden)], pre + "mlp.c_proj.weight": [(0, hidden)]}
    return permuted_order(graph, perms)


def test_hf_gpt2_within_head_symmetry(symmetry_gnn):
    model = tiny_gpt2().eval()
    graph = build(model, key_bias="keys")
    order = hf_order(graph, torch.tensor([1, 3, 2, 0, 6, 4, 7, 5]), torch.tensor([2, 0, 3, 1, 5, 7, 4, 6]),
                     torch.randperm(32, generator=torch.Generator().manual_seed(0)))
    x = torch.tensor([[1, 2, 3, 4]])
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    permuted = tiny_gpt2().eval()
    torch.nn.utils.vector_to_parameters(flat[order], permuted.parameters())
    with torch.no_grad():
        assert torch.allclose(model(x).logits, permuted(x).logits, atol=1e-5)
    gnn = symmetry_gnn
    states = torch.randn(graph.num_params, 5)
    assert torch.allclose(gnn.predict(graph, states[order], 3), gnn.predict(graph, states, 3)[order], atol=1e-5)


def test_nino_adam_on_hf_gpt2():
    from nino_optim import NiNoAdam

    model = tiny_gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        opt = NiNoAdam(model.parameters(), model=model, lr=1e-3, period=10, context=5, max_steps=30,
                       nowcaster=official_checkpoint("nino_no_posw.pt"))
    assert (opt.graph.num_nodes, opt.graph.num_edges) == (178, 2130)
    x = torch.randint(0, 11, (4, 5), generator=torch.Generator().manual_seed(0))
    losses = train_across_nowcast(opt, model, lambda: model(input_ids=x, labels=x).loss, steps=12, nowcast_call=10)
    assert all(torch.isfinite(torch.tensor(losses)))


def tiny_llama(kv_heads=2, heads=2):
    cfg = transformers.LlamaConfig(vocab_size=13, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                                   num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=8,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg)


def test_hf_llama_matches_the_hand_written_llama_graph():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from llama_models import Llama

    graph = build(tiny_llama())
    ours = build_neural_graph(Llama(), lpe=False, example_inputs=(torch.zeros(1, 6, dtype=torch.long),))
    assert graph.fallback == {} and bool(graph.placed_mask.all())  # RMSNorm weights: weight * x, attached
    assert (graph.num_nodes, graph.num_edges) == (ours.num_nodes, ours.num_edges)
    assert torch.equal(torch.bincount(graph.edge_type), torch.bincount(ours.edge_type))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_hf_llama_grouped_query_attention(kv_heads):
    graph = build(tiny_llama(kv_heads=kv_heads, heads=4))  # no warning: understood
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    states = torch.randn(graph.num_params, 1)
    assert torch.equal(graph.to_params(graph.to_edges(states)), states[:, 0])
    hist = torch.bincount(graph.edge_type, minlength=14)
    kv_params = 2 * 8 * 2 * kv_heads  # 2 layers x k_proj [kv_heads * 2, 8]
    assert int(hist[8]) == int(hist[9]) == kv_params and int(hist[7]) == 2 * 8 * 8
    assert int(hist[11]) == 2 * 2 * 4 * 2  # head edges: 4 heads x 2 neurons, to queries and to values


def _llama_gqa_order(graph, q_heads, kv_heads, v_within):
    """Flat order for permuted query heads, key/value heads and value neurons within heads (hd = 2)."""
    def rows(head_perm):
        return torch.stack([2 * head_perm, 2 * head_perm + 1], 1).reshape(-1)

    pre = "model.layers.0.self_attn."
    o_cols = torch.stack([2 * q_heads + v_within[0], 2 * q_heads + v_within[1]], 1).reshape(-1)
    v_rows = torch.stack([2 * kv_heads + v_within[0], 2 * kv_heads + v_within[1]], 1).reshape(-1)
    return permuted_order(graph, {pre + "q_proj.weight": [(0, rows(q_heads))],
                                  pre + "k_proj.weight": [(0, rows(kv_heads))], pre + "v_proj.weight": [(0, v_rows)],
                                  pre + "o_proj.weight": [(1, o_cols)]})


def test_hf_llama_grouped_query_symmetries(symmetry_gnn):
    model = tiny_llama(kv_heads=2, heads=4).eval()
    graph = build(model)
    x = torch.tensor([[1, 2, 3, 4, 5]])
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    states = torch.randn(graph.num_params, 5)
    pred = symmetry_gnn.predict(graph, states, 3)

    def logits(order):
        other = tiny_llama(kv_heads=2, heads=4).eval()
        torch.nn.utils.vector_to_parameters(flat[order], other.parameters())
        with torch.no_grad():
            return other(x).logits

    same = torch.arange(2)
    # groups swapped (each key/value head with its query heads), query heads swapped within their group, and
    # value neurons swapped within every head: the same function, and the same permutation of the prediction
    for q_heads, kv_heads, v_within in (([2, 3, 0, 1], [1, 0], same), ([1, 0, 3, 2], [0, 1], same),
                                        ([0, 1, 2, 3], [0, 1], torch.tensor([1, 0]))):
        order = _llama_gqa_order(graph, torch.tensor(q_heads), torch.tensor(kv_heads), v_within)
        assert torch.allclose(logits(order), model(x).logits, atol=1e-5)
        assert torch.allclose(symmetry_gnn.predict(graph, states[order], 3), pred[order], atol=1e-5)
    # query heads swapped across groups: another function, and another prediction
    order = _llama_gqa_order(graph, torch.tensor([2, 1, 0, 3]), torch.tensor([0, 1]), same)
    assert not torch.allclose(logits(order), model(x).logits, atol=1e-4)
    assert not torch.allclose(symmetry_gnn.predict(graph, states[order], 3), pred[order], atol=1e-4)



def test_nino_adam_on_hf_llama_with_grouped_query_attention():
    from nino_optim import NiNoAdam

    model = tiny_llama(kv_heads=2, heads=4)
    x = torch.randint(0, 13, (4, 6), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        opt = NiNoAdam(model.parameters(), model=model, lr=1e-3, period=10, context=5, max_steps=30)
        # across the nowcast at step 10 (the bundled weights), which builds the graph from the first batch
        losses = train_across_nowcast(opt, model, lambda: model(input_ids=x, labels=x).loss, steps=12,
                                      nowcast_call=10)
    assert opt.graph.fallback == {} and bool(opt.graph.placed_mask.all())
    assert all(torch.isfinite(torch.tensor(losses)))
