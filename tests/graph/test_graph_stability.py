"""The graphs of the families the builder already understood stay exactly what they were.

``graph_fingerprints.json`` holds a SHA-256 of every graph below (nodes, edges, edge types, the parameter <->
edge map, token ids, fallbacks). It was written by ``python tests/graph/test_graph_stability.py --write`` from
the builder before its modules were reorganised; rewrite it only for a change that is meant to alter graphs
(``unknown_parts`` changed once so: its free-standing weight, used as ``x @ w``, is now placed as a linear
layer instead of being left out).
"""
import hashlib
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parent.parent)]
from conftest import TwoLayer, fm16  # noqa: E402
from gpt_models import GPT  # noqa: E402
from llama_models import Llama  # noqa: E402
from nino_optim import build_neural_graph  # noqa: E402
from test_attention import MHA, VARIANTS  # noqa: E402
from test_export import ShapeDependent  # noqa: E402
from test_trace import ResNet, TwoBranch  # noqa: E402

FINGERPRINTS = Path(__file__).with_name("graph_fingerprints.json")


class Scaled(nn.Module):
    """A parameterised module of a kind the builder does not know, behind an op it does not know."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        self.w = nn.Parameter(torch.ones(4, 4))

    def forward(self, x):
        return self.fc2(torch.fft.fft(self.fc1(x)).real @ self.w)


def _encoder(norm_first):
    return nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                                                     norm_first=norm_first), nn.Linear(8, 3))


def _hf(kind, **config):
    transformers = pytest.importorskip("transformers")
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_embd=8, n_layer=2, n_head=2, vocab_size=11, n_positions=5, bos_token_id=0,
                                      eos_token_id=0)
    else:
        cfg = transformers.LlamaConfig(vocab_size=13, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                                       max_position_embeddings=8, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                       **config)
    return transformers.AutoModelForCausalLM.from_config(cfg)


TOKENS = torch.randint(0, 11, (1, 6), generator=torch.Generator().manual_seed(0))
MODELS = {
    "mlp": (TwoLayer, {}),
    "fm16": (fm16, {}),
    "resnet": (ResNet, {}),
    "two_branch": (TwoBranch, {}),
    **{f"gpt_{name}": (lambda kw=kw: GPT(**kw), {}) for name, kw in VARIANTS.items()},
    "gpt_keys": (GPT, {"key_bias": "keys"}),
    "llama": (Llama, {"example_inputs": (TOKENS,)}),
    "mha": (MHA, {"key_bias": "keys"}),
    "encoder_post_norm": (lambda: _encoder(False), {}),
    "encoder_pre_norm": (lambda: _encoder(True), {}),
    "embedding": (lambda: nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8), nn.Linear(8, 4)), {}),
    "grouped_conv": (lambda: nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.BatchNorm2d(6), nn.ReLU(),
                                           nn.Conv2d(6, 2, 1)), {}),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.GroupNorm(1, 3), nn.Flatten(), nn.Linear(12, 5),
                                     nn.LayerNorm(5)), {}),
    "shape_dependent": (ShapeDependent, {"example_inputs": (torch.randn(2, 2),)}),
    "unknown_parts": (Scaled, {}),
    "hf_gpt2": (lambda: _hf("gpt2"), {}),
    "hf_llama_gqa": (lambda: _hf("llama", num_attention_heads=4, num_key_value_heads=2), {}),
}


def fingerprint(graph) -> str:
    digest = hashlib.sha256()
    for t in (graph.edge_index, graph.edge_type, graph.param_edge, graph.param_slot, graph.pos_w):
        digest.update(t.contiguous().numpy().tobytes())
    digest.update(json.dumps([graph.num_nodes, graph.feat_size, sorted(graph.fallback),
                              [(p.name, p.placed, p.edge_type) for p in graph.params]]).encode())
    return digest.hexdigest()


def graph_of(name):
    make, options = MODELS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_neural_graph(make(), lpe=False, **options)


@pytest.mark.parametrize("name", MODELS)
def test_graph_is_unchanged(name):
    expected = json.loads(FINGERPRINTS.read_text())
    assert fingerprint(graph_of(name)) == expected[name]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    FINGERPRINTS.write_text(json.dumps({name: fingerprint(graph_of(name)) for name in MODELS}, indent=1) + "\n")
