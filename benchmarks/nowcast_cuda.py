"""One NiNo nowcast on a CUDA GPU: wall time and extra peak GPU memory for GPT-2-style models.

The GPU counterpart of ``nowcast_step.py`` (which measures the CPU and its RSS). For each size the Hugging Face
GPT-2 model's neural graph and LPE are built on the CPU (not timed), the official checkpoint is moved to the GPU
and ``predict(graph, states, k=40)`` runs on 5 random-walk states held on the GPU:

* nowcast ms: the median of 3 timed predictions after one warm-up (``torch.cuda.synchronize`` around each);
* extra GB: ``torch.cuda.max_memory_allocated`` during the prediction minus what was allocated before it
  (graph tensors, states and weights excluded);
* max |diff|: each row's prediction against the CPU's float32 prediction of the same states (sizes up to
  ``--cpu-check``), so the CUDA path is checked, not only timed;
* backend: the scatter backend (``--backends native triton``: ``triton`` computes the message sums with the fused
  kernel of ``nowcast/fused.py``); each non-native row also records its max |diff| against the native row of the
  same size, chunk and edge state;
* step ms and % of 1000 steps: one AdamW step of the model at 8 x 1024 tokens on the same GPU.

    python benchmarks/nowcast_cuda.py --sizes 3.4M 30M --chunks 65536 1048576 all \\
        --edge-states float32 bfloat16 recompute --backends native triton --checkpoint <dir>/nino_no_posw.pt \\
        --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from nino_optim.nowcast.scatter import BACKENDS, set_scatter_backend
from nowcast_step import K, SIZES, _random_walk_states


def _gpt2(size: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    d, layers, heads = SIZES[size]
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=d, n_layer=layers, n_head=heads))


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    torch.cuda.synchronize()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _train_step_ms(model) -> float:
    """Milliseconds of one AdamW step at 8 x 1024 tokens (median of 3 after one warm-up)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (8, 1024), device="cuda")

    def step():
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    return 1000 * _timed(step)[0]


def measure(size: str, chunks: list[str], edge_states: list[str], backends: list[str], checkpoint: str,
            cpu_check: bool) -> list[dict]:
    """Rows for one model size; ``backends`` lists "native" first when it is measured (the others compare to it)."""
    import nino_optim
    from nino_optim import build_neural_graph

    model = _gpt2(size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        graph = build_neural_graph(model)
        graph.lpe
        build_s = time.perf_counter() - t0
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach().float()
    if flat.numel() != graph.num_params:
        raise RuntimeError(f"flat parameters {flat.numel()} != graph parameters {graph.num_params}")
    states = _random_walk_states(flat, 5)
    nowcaster = nino_optim.load_nowcaster(checkpoint)
    reference = None
    set_scatter_backend("native")
    if cpu_check:
        nowcaster.chunk_size, nowcaster.edge_state = 65536, "float32"
        reference = nowcaster.predict(graph, states, K)
    nowcaster.cuda()
    states_gpu = states.cuda()
    rows = []
    for spec in chunks:
        for state in edge_states:
            nowcaster.chunk_size = graph.num_edges if spec == "all" else int(spec)
            nowcaster.edge_state = state
            native = None  # the native prediction of these settings, on the CPU, when others compare to it
            for backend in backends:
                set_scatter_backend(backend)
                row = {"size": size, "params": graph.num_params, "edges": graph.num_edges, "chunk": spec,
                       "edge_state": state, "backend": backend, "build_s": round(build_s, 2)}
                pred = None
                try:
                    nowcaster.predict(graph, states_gpu, K)  # warm-up: kernels (Triton compiles here), allocator
                    torch.cuda.synchronize()
                    before = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    took, pred = _timed(lambda: nowcaster.predict(graph, states_gpu, K))
                    row["nowcast_ms"] = round(1000 * took, 1)
                    row["extra_gb"] = round((torch.cuda.max_memory_allocated() - before) / 2**30, 3)
                    if reference is not None:
                        row["max_abs_diff_vs_cpu"] = float((pred.cpu() - reference).abs().max())
                    if backend == "native" and len(backends) > 1:
                        native = pred.cpu()
                    elif native is not None:
                        row["max_abs_diff_vs_native"] = float((pred.cpu() - native).abs().max())
                    row["finite"] = bool(torch.isfinite(pred).all())
                except torch.OutOfMemoryError as err:
                    row["error"] = f"out of memory: {str(err)[:120]}"
                except Exception as err:  # a kernel that fails to compile or launch spoils its rows, not the run
                    if backend == "native":
                        raise
                    row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                del pred
                torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
    set_scatter_backend("native")
    model.cuda()
    step_ms = _train_step_ms(model)
    for row in rows:
        row["train_step_ms"] = round(step_ms, 1)
        if "nowcast_ms" in row:
            row["pct_of_1000_steps"] = round(100 * row["nowcast_ms"] / (1000 * step_ms), 4)
    del model, nowcaster, states_gpu
    torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["3.4M", "30M"], choices=list(SIZES))
    parser.add_argument("--chunks", nargs="+", default=["65536", "1048576", "all"])
    parser.add_argument("--edge-states", nargs="+", default=["float32", "bfloat16", "recompute"])
    parser.add_argument("--backends", nargs="+", default=["native"], choices=list(BACKENDS),
                        help="scatter backends to measure; triton rows are compared to native ones")
    parser.add_argument("--checkpoint", required=True, help="the official nino_no_posw.pt")
    parser.add_argument("--cpu-check", nargs="*", default=["3.4M"], help="sizes whose CPU prediction is compared")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    backends = sorted(dict.fromkeys(args.backends), key=lambda b: b != "native")  # native first: the baseline
    for backend in backends:
        set_scatter_backend(backend)  # fails early, with what to install, if a backend's package is missing
    set_scatter_backend("native")
    if not torch.cuda.is_available():
        raise SystemExit("nowcast_cuda.py needs a CUDA GPU; on the CPU use nowcast_step.py")
    versions = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if "triton" in backends:
        import triton

        versions["triton"] = triton.__version__
    print(", ".join(f"{k}: {v}" for k, v in versions.items()), flush=True)
    rows = []
    for size in args.sizes:
        rows += measure(size, args.chunks, args.edge_states, backends, args.checkpoint, size in args.cpu_check)
    print(f"\n| model | params | edges | chunk | edge state | backend | nowcast ms | extra GPU GB | max diff vs CPU | "
          f"max diff vs native | % of 1000 steps |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['params']:,} | {r['edges']:,} | {r['chunk']} | {r['edge_state']} | {r['backend']} | "
              f"{r.get('nowcast_ms', r.get('error'))} | {r.get('extra_gb', '')} | "
              f"{r.get('max_abs_diff_vs_cpu', '')} | {r.get('max_abs_diff_vs_native', '')} | "
              f"{r.get('pct_of_1000_steps', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**versions, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
