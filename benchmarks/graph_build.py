"""Neural-graph build time (LPE listed separately) and peak memory for GPT-2-style models.

Each model is a Hugging Face ``GPT2LMHeadModel`` built from a ``GPT2Config`` (GPT-2 vocabulary of 50257,
1024 positions; nothing is downloaded). Each size runs in a fresh subprocess, so its peak memory is its own:

* build s: wall time of ``nino_optim.build_neural_graph(model)`` (tracing, propagation, assembly);
* LPE s: wall time of the first ``graph.lpe`` (the Laplacian positional encoding is computed lazily);
* extra memory: the process's peak RSS (``resource.getrusage().ru_maxrss``, with the high-water mark reset
  through ``/proc/self/clear_refs`` just before the build where the kernel allows it) minus its RSS just
  before the build.

The child is bounded: its address space may grow by at most ``--max-gb`` beyond what it holds before the build
(``RLIMIT_AS``), and the parent kills it if its RSS passes ``--max-gb`` or it runs past ``--timeout``; either
is reported in the table rather than raised.

    python benchmarks/graph_build.py [--sizes 1M 3.4M 7M 30M] [--timeout 900] [--max-gb 16]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from _measure import GB, cap_address_space, reset_peak_rss, run_watched, status_bytes

# name: (n_embd, n_layer, n_head)
SIZES = {
    "1M": (24, 3, 3),
    "3.4M": (64, 3, 4),
    "7M": (128, 4, 4),
    "30M": (384, 6, 6),
}
# The official implementation measured on a 2-core CPU machine: total s, extra GB (None: not given).
OFFICIAL = {"3.4M": (2.7, None), "30M": (30.9, 6.6)}
# Targets: at most a third of the official figures.
TARGET = {"3.4M": (0.9, None), "30M": (10.0, 2.2)}

def child(size: str, max_gb: float, out: str) -> None:
    """Build one model's graph and write the measurements as JSON to ``out``."""
    import warnings

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from nino_optim import build_neural_graph

    d, layers, heads = SIZES[size]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=d, n_layer=layers,
                                       n_head=heads))
    params = sum(p.numel() for p in model.parameters())
    result = {"size": size, "params": params}
    cap_address_space(max_gb)
    reset = reset_peak_rss()
    before = status_bytes("VmRSS")
    if not reset:
        before = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    result.update(before_gb=before / GB, peak_reset=reset)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            graph = build_neural_graph(model)
            t1 = time.perf_counter()
            result.update(build_s=t1 - t0, nodes=graph.num_nodes, edges=graph.num_edges)
            peak_build = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            result["extra_build_gb"] = (peak_build - before) / GB
            t1 = time.perf_counter()
            lpe = graph.lpe
            t2 = time.perf_counter()
        result.update(lpe_s=t2 - t1, lpe_shape=list(lpe.shape),
                      warnings=[str(w.message)[:300] for w in caught])
    except MemoryError:
        result["error"] = f"out of memory (> {max_gb:g} GB address space)"
    except Exception as err:  # noqa: BLE001 - reported in the table
        result["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result.update(peak_gb=peak / GB, extra_gb=(peak - before) / GB)
    Path(out).write_text(json.dumps(result))


def run_size(size: str, timeout: float, max_gb: float) -> dict:
    """Run one size in a fresh interpreter; watch its RSS; return its measurements or the reason it has none."""
    out = Path(f"/tmp/graph_build_{os.getpid()}_{size}.json")
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", size, "--max-gb", str(max_gb), "--out", str(out)]
    log, wall, reason, peak_seen, returncode = run_watched(cmd, timeout, max_gb)
    if reason is None and out.exists():
        result = json.loads(out.read_text())
    else:
        tail = log.strip().splitlines()[-1][:200] if log.strip() else f"exit code {returncode}"
        result = {"size": size, "error": reason or f"child failed: {tail}"}
    out.unlink(missing_ok=True)
    result.update(wall_s=wall, watched_peak_gb=peak_seen / GB)
    return result


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: list[dict]) -> str:
    head = ("| model | params | nodes | edges | build s | LPE s | total s | extra memory GB "
            "| official total s | official extra GB | target total s | target extra GB |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in results:
        size = r["size"]
        d, layers, heads = SIZES[size]
        name = f"{size} (d={d}, L={layers}, H={heads})"
        official, target = OFFICIAL.get(size, (None, None)), TARGET.get(size, (None, None))
        ref = f"| {_fmt(official[0], '.1f')} | {_fmt(official[1], '.1f')} | " \
              f"{'≤ ' + _fmt(target[0], '.1f') if target[0] else '-'} | " \
              f"{'≤ ' + _fmt(target[1], '.1f') if target[1] else '-'} |"
        params = f"{r['params'] / 1e6:.2f}M" if "params" in r else "-"
        if "build_s" not in r or "lpe_s" not in r:
            build = _fmt(r.get("build_s"), ".2f")
            rows.append(f"| {name} | {params} | {r.get('nodes', '-')} | {r.get('edges', '-')} | {build} | "
                        f"FAILED: {r['error']} | - | {_fmt(r.get('extra_gb'), '.2f')} {ref}")
            continue
        rows.append(f"| {name} | {params} | {r['nodes']:,} | {r['edges']:,} | {r['build_s']:.2f} | "
                    f"{r['lpe_s']:.2f} | {r['build_s'] + r['lpe_s']:.2f} | {r['extra_gb']:.2f} {ref}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per size (whole subprocess)")
    parser.add_argument("--max-gb", type=float, default=16.0, help="memory cap per size, GB")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.max_gb, args.out)
        return
    results = []
    for size in args.sizes:
        r = run_size(size, args.timeout, args.max_gb)
        results.append(r)
        status = r.get("error") or f"{r['build_s'] + r['lpe_s']:.2f} s, {r['extra_gb']:.2f} GB extra"
        print(f"[{size}] {status} (subprocess wall {r['wall_s']:.1f} s)", file=sys.stderr, flush=True)
        for w in r.get("warnings", []):
            print(f"[{size}] warning: {w}", file=sys.stderr)
    print(f"GPT-2-style models (vocab 50257, 1024 positions), each in a fresh process; torch threads "
          f"{_torch_threads()}, {os.cpu_count()} CPUs. Official: the official implementation on a 2-core CPU; target: a third of it.\n")
    print(table(results))
    if any(not r.get("peak_reset", True) for r in results if "params" in r):
        print("\nNote: the RSS high-water mark could not be reset; extra memory is measured against the peak "
              "before the build.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _torch_threads() -> str:
    try:
        import torch
        return str(torch.get_num_threads())
    except ImportError:
        return "?"


if __name__ == "__main__":
    main()
