"""Encoder-decoders and cross-attention: Hugging Face T5, BART and Whisper, vision transformers, and torch.nn's
Transformer, placed whole without fallbacks, and symmetric under their permutations."""
import time
import warnings

import pytest
import torch
from torch import nn

from nino_optim import build_neural_graph
from nino_optim.graph.export_trace import default_example_inputs
from nino_optim.graph.neural_graph import ATTN_K, ATTN_Q, ATTN_V
from permutations import assert_symmetry, views

transformers = pytest.importorskip("transformers")
GEN = torch.Generator().manual_seed(0)


def t5():
    return transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0))


def bart():
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32))


def whisper():
    return transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
        max_target_positions=16, pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0))


def vit():
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10))


def deit():
    return transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
        image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=10))


INPUTS = {
    "t5": {"input_ids": torch.randint(0, 64, (2, 5), generator=GEN),
           "decoder_input_ids": torch.randint(0, 64, (2, 3), generator=GEN)},
    "bart": {"input_ids": torch.randint(3, 64, (2, 5), generator=GEN),
             "decoder_input_ids": torch.randint(3, 64, (2, 3), generator=GEN)},
    "whisper": {"input_features": torch.randn(2, 8, 32, generator=GEN),
                "decoder_input_ids": torch.randint(0, 64, (2, 3), generator=GEN)},
    "vit": {"pixel_values": torch.randn(2, 1, 28, 28, generator=GEN)},
    "deit": {"pixel_values": torch.randn(2, 1, 28, 28, generator=GEN)},
}
MODELS = {"t5": t5, "bart": bart, "whisper": whisper, "vit": vit, "deit": deit}


def build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return build_neural_graph(model, lpe=False, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_builds_whole_from_the_default_example_inputs(name):
    model = MODELS[name]()
    assert default_example_inputs(model) is not None
    start = time.perf_counter()
    graph = build(model)  # no warning: no op left unknown, no parameter left out
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    assert time.perf_counter() - start < 30  # a sanity bound; build times are measured by benchmarks/


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_cross_attention_keys_and_values_read_the_encoder(name):
    model = MODELS[name]()
    graph = build(model)
    names = {"t5": ("encoder.final_layer_norm.weight", "decoder.block.0.layer.1.EncDecAttention.{}.weight"),
             "bart": ("model.encoder.layers.1.final_layer_norm.weight", "model.decoder.layers.0.encoder_attn.{}_proj.weight"),
             "whisper": ("model.encoder.layer_norm.weight", "model.decoder.layers.0.encoder_attn.{}_proj.weight")}
    norm, cross = names[name]
    v = views(graph)
    encoder_out = graph.edge_index[1, graph.param_edge[v[norm]]]  # the neurons the encoder's last norm acts on
    src_k, dst_k = graph.edge_index[:, graph.param_edge[v[cross.format("k")]]]
    src_v, _ = graph.edge_index[:, graph.param_edge[v[cross.format("v")]]]
    src_q, dst_q = graph.edge_index[:, graph.param_edge[v[cross.format("q")]]]
    types = {part: graph.edge_type[graph.param_edge[v[cross.format(part)]]].unique().tolist() for part in "qkv"}
    assert types == {"q": [ATTN_Q], "k": [ATTN_K], "v": [ATTN_V]}
    assert set(src_v.flatten().tolist()) == set(encoder_out.tolist())  # values from the encoder's neurons
    assert set(dst_k.flatten().tolist()) == set(encoder_out.tolist())  # keys run back to them ...
    assert set(src_k.flatten().tolist()) == set(dst_q.flatten().tolist())  # ... from the query neurons
    assert not set(src_q.flatten().tolist()) & set(encoder_out.tolist())  # queries from the decoder's stream


def _perms(name: str) -> dict:
    """An FFN hidden permutation in the first decoder layer (the encoder layer for vision), and a swap of the two
    first heads plus a within-head permutation in its cross-attention (its attention for vision)."""
    g = torch.Generator().manual_seed(1)
    h = torch.randperm(64, generator=g)
    heads, width = (4, 8) if name == "t5" else (2, 16)
    swap = torch.cat([torch.arange(width, 2 * width), torch.arange(width)] + [torch.arange(2 * width, heads * width)])
    within = torch.cat([torch.randperm(width, generator=g) + i * width for i in range(heads)])
    qk, vo = swap[within], swap
    if name == "t5":
        pre = "decoder.block.0.layer."
        ffn = {pre + "2.DenseReluDense.wi.weight": [(0, h)], pre + "2.DenseReluDense.wo.weight": [(1, h)]}
        att = pre + "1.EncDecAttention.{}.weight"
        return ffn | {att.format("q"): [(0, qk)], att.format("k"): [(0, qk)], att.format("v"): [(0, vo)],
                      att.format("o"): [(1, vo)]}
    if name in ("vit", "deit"):
        pre = f"{name}.layers.0."
        ffn = {pre + "mlp.fc1.weight": [(0, h)], pre + "mlp.fc1.bias": [(0, h)], pre + "mlp.fc2.weight": [(1, h)]}
        att = pre + "attention.{}_proj.{}"
        out = "o"
    else:
        pre = "model.decoder.layers.0."
        ffn = {pre + "fc1.weight": [(0, h)], pre + "fc1.bias": [(0, h)], pre + "fc2.weight": [(1, h)]}
        att = pre + "encoder_attn.{}_proj.{}"
        out = "out"
    perms = ffn | {att.format(out, "weight"): [(1, vo)]}
    for part, perm in (("q", qk), ("k", qk), ("v", vo)):
        perms[att.format(part, "weight")] = [(0, perm)]
        perms[att.format(part, "bias")] = [(0, perm)]
    return perms


@pytest.mark.parametrize("name", ["t5", "bart", "whisper", "vit"])
def test_permutations_permute_the_prediction(name, symmetry_gnn):
    torch.manual_seed(0)
    graph = build(MODELS[name](), key_bias="keys")  # the official key-bias wiring is not symmetric
    perms = {k: v for k, v in _perms(name).items() if k in views(graph)}  # Whisper's keys have no bias
    assert_symmetry(MODELS[name], graph, perms, lambda m: m(**INPUTS[name]).logits, symmetry_gnn, atol=1e-4)


class Seq2Seq(nn.Module):
    """torch.nn's Transformer between two linear embeddings, and a cross-attention with other key/value widths."""

    def __init__(self):
        super().__init__()
        self.src, self.tgt = nn.Linear(4, 8), nn.Linear(3, 8)
        self.transformer = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True)
        self.keys, self.values = nn.Linear(4, 6), nn.Linear(4, 5)
        self.cross = nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=5)
        self.head = nn.Linear(8, 2)

    def forward(self, x, y):
        h = self.transformer(self.src(x), self.tgt(y))
        return self.head(h + self.cross(h, self.keys(x), self.values(x), need_weights=False)[0])


def test_torch_transformer_and_cross_attention(symmetry_gnn):
    graph = build(Seq2Seq(), key_bias="keys")
    assert graph.fallback == {} and bool(graph.placed_mask.all())
    x, y = torch.randn(2, 5, 4, generator=GEN), torch.randn(2, 3, 3, generator=GEN)
    g = torch.Generator().manual_seed(2)
    hidden, swap = torch.randperm(16, generator=g), torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    pre = "transformer.decoder.layers.0."
    rows = torch.cat([swap, swap + 8, swap + 16])
    perms = {pre + "linear1.weight": [(0, hidden)], pre + "linear1.bias": [(0, hidden)],
             pre + "linear2.weight": [(1, hidden)], pre + "multihead_attn.in_proj_weight": [(0, rows)],
             pre + "multihead_attn.in_proj_bias": [(0, rows)], pre + "multihead_attn.out_proj.weight": [(1, swap)],
             "cross.q_proj_weight": [(0, swap)], "cross.k_proj_weight": [(0, swap)],
             "cross.v_proj_weight": [(0, swap)], "cross.in_proj_bias": [(0, rows)],
             "cross.out_proj.weight": [(1, swap)]}
    assert_symmetry(Seq2Seq, graph, perms, lambda m: m(x, y), symmetry_gnn)
