"""Hugging Face models, traced with example inputs (torch.export); skipped without ``transformers``."""
import warnings

import pytest
import torch

from conftest import golden_case, official_checkpoint
from nino_optim import build_neural_graph, load_nowcaster

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
