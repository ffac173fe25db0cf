"""Neural-graph build time of small models (under 100k parameters) of each family, and how much of each the
graph places.

Each model builds in a fresh subprocess, twice: ``first`` is the first ``build_neural_graph(model)`` of the
process (imports done, tracing code cold), ``again`` a second build of a new instance of the same model. The
Hugging Face models are built from small configurations (nothing is downloaded) and get their default example
inputs; every model is built without inputs, as ``NiNoAdam(model=...)`` builds it.

    python benchmarks/graph_build_families.py [--repeat 3]

To compare with another version of the package, put its ``src`` first on ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

FAMILIES = ["fm16", "vit_bench", "gpt2", "hf_vit", "deit", "t5", "bart", "whisper"]


def make(name: str):
    import torch  # noqa: F401
    if name in ("fm16", "vit_bench"):
        from nino_optim.bench.tasks import build_model

        return build_model("fm16" if name == "fm16" else "vit", seed=0)
    import transformers as T

    if name == "gpt2":
        return T.GPT2LMHeadModel(T.GPT2Config(n_embd=32, n_layer=3, n_head=2, vocab_size=256, n_positions=64))
    if name == "hf_vit":
        return T.ViTForImageClassification(T.ViTConfig(image_size=28, patch_size=4, num_channels=1,
                                                       hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                       intermediate_size=64, num_labels=10))
    if name == "deit":
        return T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(
            image_size=28, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, num_labels=10))
    if name == "t5":
        return T.T5ForConditionalGeneration(T.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                       num_heads=4, decoder_start_token_id=0))
    if name == "bart":
        return T.BartForConditionalGeneration(T.BartConfig(
            vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32))
    return T.WhisperForConditionalGeneration(T.WhisperConfig(
        vocab_size=64, num_mel_bins=8, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16,
        max_target_positions=16, pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0))


def measure(name: str) -> dict:
    import time
    import warnings

    import torch

    from nino_optim import build_neural_graph

    torch.set_num_threads(1)
    times = []
    for _ in range(2):
        model = make(name)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graph = build_neural_graph(model, lpe=False)
        times.append(time.perf_counter() - start)
    placed = sum(p.numel for p in graph.params if p.placed)
    return {"family": name, "params": graph.num_params, "placed": placed, "first": times[0], "again": times[1],
            "warned": any(str(w.message).startswith("neural graph of") for w in caught)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per family (the median is shown)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    import nino_optim

    print(f"nino_optim {nino_optim.__version__} from {nino_optim.__file__}")
    print("| family | parameters | placed | first build s | again s | fallback warning |")
    print("|---|--:|--:|--:|--:|---|")
    for name in FAMILIES:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
            if out.returncode:
                print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1]} |")
                break
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if len(runs) == args.repeat:
            mid = sorted(runs, key=lambda r: r["first"])[len(runs) // 2]
            again = sorted(r["again"] for r in runs)[len(runs) // 2]
            print(f"| {name} | {mid['params']:,} | {mid['placed']:,} | {mid['first']:.2f} | {again:.2f} | "
                  f"{'yes' if mid['warned'] else 'no'} |")


if __name__ == "__main__":
    main()
